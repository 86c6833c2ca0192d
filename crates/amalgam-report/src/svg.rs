//! Hand-written SVG primitives: a plot frame with linear axes, ticks and labels.
//!
//! No font file and no system font is named: text uses the generic `sans-serif` family, so a
//! plot renders the same way on any viewer without fetching anything. Every label is escaped.

use std::fmt::Write;

use crate::text::{esc, tick};

/// Colours of successive series (colour-blind-safe Okabe-Ito order, then repeated).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
];

/// The colour of series `i`.
pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// A rectangular plot area mapping data coordinates to pixels.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// Left edge of the plot area (pixels).
    pub left: f64,
    /// Top edge of the plot area.
    pub top: f64,
    /// Width of the plot area.
    pub width: f64,
    /// Height of the plot area.
    pub height: f64,
    /// Data range on x.
    pub x: (f64, f64),
    /// Data range on y.
    pub y: (f64, f64),
}

impl Frame {
    /// A frame; an empty or inverted range is widened so that the mapping stays finite.
    pub fn new(left: f64, top: f64, width: f64, height: f64, x: (f64, f64), y: (f64, f64)) -> Self {
        Frame {
            left,
            top,
            width,
            height,
            x: widen(x),
            y: widen(y),
        }
    }

    /// Pixel column of data `x` (always a finite number, however extreme the report).
    pub fn px(&self, x: f64) -> f64 {
        finite(self.left + (x - self.x.0) / (self.x.1 - self.x.0) * self.width)
    }

    /// Pixel row of data `y` (up is larger; always finite).
    pub fn py(&self, y: f64) -> f64 {
        finite(self.top + self.height - (y - self.y.0) / (self.y.1 - self.y.0) * self.height)
    }

    /// Bottom edge.
    pub fn bottom(&self) -> f64 {
        self.top + self.height
    }

    /// Draws the axes, five ticks on each (or `x_ticks` when given) and the axis labels.
    pub fn axes(&self, out: &mut String, x_label: &str, y_label: &str, x_ticks: Option<&[f64]>) {
        let (l, b, r) = (self.left, self.bottom(), self.left + self.width);
        let _ = write!(
            out,
            r##"<g class="axes" stroke="#444" fill="none"><line x1="{l:.1}" y1="{b:.1}" x2="{r:.1}" y2="{b:.1}"/><line x1="{l:.1}" y1="{:.1}" x2="{l:.1}" y2="{b:.1}"/></g>"##,
            self.top
        );
        let xs: Vec<f64> = match x_ticks {
            Some(t) => t.to_vec(),
            None => even(self.x, 5),
        };
        out.push_str(r##"<g class="ticks" fill="#222" font-size="10">"##);
        for x in xs {
            let p = self.px(x);
            let _ = write!(
                out,
                r##"<line x1="{p:.1}" y1="{b:.1}" x2="{p:.1}" y2="{:.1}" stroke="#444"/><text x="{p:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                b + 4.0,
                b + 15.0,
                esc(&tick(x))
            );
        }
        for y in even(self.y, 5) {
            let p = self.py(y);
            let _ = write!(
                out,
                r##"<line x1="{:.1}" y1="{p:.1}" x2="{l:.1}" y2="{p:.1}" stroke="#444"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                l - 4.0,
                l - 6.0,
                p + 3.5,
                esc(&tick(y))
            );
        }
        out.push_str("</g>");
        let _ = write!(
            out,
            r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            l + self.width / 2.0,
            b + 32.0,
            esc(x_label)
        );
        let (yx, yy) = (l - 42.0, self.top + self.height / 2.0);
        let _ = write!(
            out,
            r#"<text class="label" x="{yx:.1}" y="{yy:.1}" text-anchor="middle" transform="rotate(-90 {yx:.1} {yy:.1})">{}</text>"#,
            esc(y_label)
        );
    }
}

/// `n` evenly spaced values from `r.0` to `r.1`.
pub fn even(r: (f64, f64), n: usize) -> Vec<f64> {
    let n = n.max(2);
    (0..n)
        .map(|i| r.0 + (r.1 - r.0) * i as f64 / (n - 1) as f64)
        .collect()
}

/// Keeps a pixel coordinate printable: NaN becomes 0, anything else is clamped to ±10^6.
fn finite(v: f64) -> f64 {
    if v.is_nan() { 0.0 } else { v.clamp(-1e6, 1e6) }
}

/// Makes a range usable: equal ends are pulled apart, a non-finite one (or one whose width
/// overflows) becomes [0, 1].
pub fn widen(r: (f64, f64)) -> (f64, f64) {
    let (a, b) = r;
    if !(a.is_finite() && b.is_finite() && (b - a).is_finite()) {
        return (0.0, 1.0);
    }
    if b > a {
        (a, b)
    } else {
        let pad = if a == 0.0 { 1.0 } else { a.abs() * 0.1 };
        (a - pad, a + pad)
    }
}

/// The smallest and largest of `values` (None when empty).
pub fn extent(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values.into_iter().fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The opening of an SVG document of the given size with its title.
pub fn open(out: &mut String, width: u32, height: u32, title: &str) {
    let _ = write!(
        out,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12"><title>{t}</title><rect width="100%" height="100%" fill="#fff"/><text class="title" x="{:.1}" y="18" text-anchor="middle" font-size="14">{t}</text>"##,
        f64::from(width) / 2.0,
        t = esc(title)
    );
}

/// One series: a group holding one polyline through the finite `points` (pixels), a marker
/// per point, a hollow marker per point in `inf` (values that are ∞, drawn on the ∞ band, never
/// at 0), and its legend entry at `legend` (pixels).
pub fn series(
    out: &mut String,
    name: &str,
    i: usize,
    points: &[(f64, f64)],
    inf: &[(f64, f64)],
    legend: (f64, f64),
) {
    let c = colour(i);
    let _ = write!(
        out,
        r#"<g class="series" data-series="{}" stroke="{c}" fill="{c}">"#,
        esc(name)
    );
    let pts: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.2},{y:.2}"))
        .collect();
    let _ = write!(
        out,
        r#"<polyline fill="none" stroke-width="1.5" points="{}"/>"#,
        pts.join(" ")
    );
    for (x, y) in points {
        let _ = write!(
            out,
            r#"<circle class="point" cx="{x:.2}" cy="{y:.2}" r="2"/>"#
        );
    }
    for (x, y) in inf {
        let _ = write!(
            out,
            r#"<circle class="point inf" cx="{x:.2}" cy="{y:.2}" r="3" fill="none"/>"#
        );
    }
    legend_entry(out, name, legend);
    out.push_str("</g>");
}

/// A legend swatch and its escaped label (inside the series group, so it takes its colour).
pub fn legend_entry(out: &mut String, name: &str, (x, y): (f64, f64)) {
    let _ = write!(
        out,
        r##"<rect class="swatch" x="{x:.1}" y="{:.1}" width="10" height="10"/><text class="legend" x="{:.1}" y="{y:.1}" stroke="none" fill="#222">{}</text>"##,
        y - 9.0,
        x + 14.0,
        esc(name)
    );
}

/// A centred note (e.g. "no rounds recorded").
pub fn note(out: &mut String, x: f64, y: f64, text: &str) {
    let _ = write!(
        out,
        r##"<text class="note" x="{x:.1}" y="{y:.1}" text-anchor="middle" fill="#555">{}</text>"##,
        esc(text)
    );
}
