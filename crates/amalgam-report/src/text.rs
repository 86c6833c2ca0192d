//! Escaping and number formatting shared by the page and the plots.
//!
//! Every string that reaches a page or a plot comes from `report.json`, which is untrusted: it
//! is escaped for XML and HTML text and attribute values alike. Numbers are printed so that the
//! printed text reads back to the JSON value (see [`crate::inspect`]).

/// Escapes `&`, `<`, `>`, `"` and `'` (valid in HTML and XML text and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline, and U+FFFE/U+FFFF, are not XML 1.0.
            c if ((c as u32) < 0x20 && c != '\t' && c != '\n')
                || c == '\u{fffe}'
                || c == '\u{ffff}' =>
            {
                out.push('\u{fffd}')
            }
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`esc`] for the five entities it writes.
pub fn unesc(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// A figure: `text` shown in an element that names the JSON pointer it comes from (the page's
/// figures are read back from those pointers, `crate::inspect`).
pub(crate) fn fig(pointer: &str, text: &str) -> String {
    format!(
        r#"<span class="fig" data-json="{}">{}</span>"#,
        esc(pointer),
        esc(text)
    )
}

/// A table cell holding a figure, tied to its JSON pointer like [`fig`].
pub(crate) fn cell(pointer: &str, text: &str) -> String {
    format!(
        r#"<td class="fig" data-json="{}">{}</td>"#,
        esc(pointer),
        esc(text)
    )
}

/// A figure: an integral value exactly, otherwise four decimals (scientific notation outside
/// [1e-4, 1e6)), so the text is within 5e-5 × max(1, |v|) of `v`. JSON carries no NaN or ∞.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "∞".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let a = v.abs();
    if !(1e-4..1e6).contains(&a) {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

/// An optional figure; `none` says what an absent value means here (`∞`, `n/a`, `none`).
pub fn opt(v: Option<f64>, none: &str) -> String {
    v.map_or_else(|| none.to_string(), num)
}

/// A short axis-tick label (three significant digits, trailing zeros dropped).
pub fn tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    let s = if !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    };
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_round_trips() {
        let hostile = "<script>alert('x')</script> & \"q\"";
        let e = esc(hostile);
        assert!(!e.contains('<') && !e.contains('"') && !e.contains('\''));
        assert_eq!(unesc(&e), hostile);
    }

    #[test]
    fn numbers_read_back_within_the_stated_tolerance() {
        for v in [
            0.0,
            3.0,
            -2.0,
            0.81234567,
            12.5,
            1e-7,
            123456789.25,
            -0.00001234,
        ] {
            let back: f64 = num(v).parse().unwrap();
            assert!(
                (back - v).abs() <= 5e-5 * v.abs().max(1.0),
                "{v} -> {}",
                num(v)
            );
        }
        assert_eq!(opt(None, "∞"), "∞");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(1500.0), "1500");
    }
}
