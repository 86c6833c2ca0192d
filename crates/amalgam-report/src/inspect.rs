//! Reading a rendered page back: its figures with the JSON pointers they name, and its top
//! lines. Auditors and tests use these to check a page against its `report.json`.

use crate::text::unesc;

/// One figure of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    /// JSON pointer of the value in `report.json`.
    pub json: String,
    /// For a ratio: the pointer of the denominator.
    pub over: Option<String>,
    /// The text shown.
    pub text: String,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(unesc(&tag[start..start + len]))
}

/// Every element of `html` carrying `data-json`, in page order.
pub fn page_figures(html: &str) -> Vec<Figure> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(" data-json=\"") {
        let tag_start = rest[..at].rfind('<').unwrap_or(0);
        let Some(tag_len) = rest[at..].find('>') else {
            break;
        };
        let tag = &rest[tag_start..at + tag_len];
        let body = &rest[at + tag_len + 1..];
        let text = body.find('<').map_or(body, |e| &body[..e]);
        if let Some(json) = attr(tag, "data-json") {
            out.push(Figure {
                json,
                over: attr(tag, "data-over"),
                text: unesc(text),
            });
        }
        rest = &rest[at + tag_len..];
    }
    out
}

/// The texts of the page's top lines (`<p class="line">`), tags removed, in order.
pub fn page_lines(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("<p class=\"line\">") {
        let body = &rest[at + "<p class=\"line\">".len()..];
        let end = body.find("</p>").unwrap_or(body.len());
        let mut text = String::new();
        let mut in_tag = false;
        for c in body[..end].chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => text.push(c),
                _ => {}
            }
        }
        out.push(unesc(&text));
        rest = &body[end..];
    }
    out
}
