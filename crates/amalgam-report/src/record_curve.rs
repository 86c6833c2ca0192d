//! The record-level ε-versus-F1 curve as `amalgam sweep --record-epsilons` writes it
//! (`configs/record-dp-curve.json`), read for the report: bounded size, strict values, a
//! specific error naming the problem. Only the fields the page shows are kept; the sweep's
//! gates and per-run figures stay in the sweep's own file.
//!
//! An absent ε (`null`) is the non-private point (ε = ∞), drawn at the right end and labelled,
//! never at 0.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::svg::{Frame, colour, extent, legend_entry, open};
use crate::text::{cell, esc, fig, num};

/// Largest curve file read (the measured one is about 20 KB).
pub const MAX_CURVE_BYTES: u64 = 1 << 20;

/// Most points a curve may carry.
pub const MAX_POINTS: usize = 64;

/// The record-level curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordCurve {
    /// The built-in model swept.
    #[serde(default)]
    pub model: String,
    /// Plants of each campaign.
    #[serde(default)]
    pub plants: u32,
    /// The split.
    #[serde(default)]
    pub split: String,
    /// Record-level δ of every point.
    pub delta: f64,
    /// When and how it was measured (free text, shown escaped).
    #[serde(default)]
    pub measured: String,
    /// One point per target ε.
    pub points: Vec<RecordCurvePoint>,
}

/// One target ε, mean over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordCurvePoint {
    /// Target record-level ε (`null` = ∞, no DP-SGD).
    pub target_epsilon: Option<f64>,
    /// ε the ledgers recorded (`null` = ∞).
    #[serde(default)]
    pub epsilon_spent: Option<f64>,
    /// z of the point (`null` without DP-SGD).
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    /// Mean F1 of the federated model.
    pub f1: f64,
    /// 95 % half-width of the F1.
    pub f1_ci95: f64,
    /// Mean AUPRC.
    #[serde(default)]
    pub auprc: Option<f64>,
    /// Seeds.
    pub seeds: u32,
}

/// Why a curve file was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CurveError {
    /// Over [`MAX_CURVE_BYTES`].
    #[error("{0} bytes, over the 1 MiB limit of a curve file")]
    TooLarge(u64),
    /// Not the sweep's JSON.
    #[error("not a record-level curve: {0}")]
    Malformed(String),
    /// A value out of range.
    #[error("point {point}: {what}")]
    Value {
        /// Index of the point.
        point: usize,
        /// What is wrong.
        what: String,
    },
    /// No point, too many, or a bad δ.
    #[error("{0}")]
    Shape(String),
}

impl RecordCurve {
    /// Decodes and checks `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, CurveError> {
        if bytes.len() as u64 > MAX_CURVE_BYTES {
            return Err(CurveError::TooLarge(bytes.len() as u64));
        }
        let c: RecordCurve =
            serde_json::from_slice(bytes).map_err(|e| CurveError::Malformed(e.to_string()))?;
        c.check()?;
        Ok(c)
    }

    /// Reads `path`, refusing it by its length before reading it.
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        let name = path.display();
        let len = std::fs::metadata(path)
            .map_err(|e| format!("{name}: {e}"))?
            .len();
        if len > MAX_CURVE_BYTES {
            return Err(format!("{name}: {}", CurveError::TooLarge(len)));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
        Self::parse(&bytes).map_err(|e| format!("{name}: {e}"))
    }

    /// Every value the page draws is finite and in range.
    pub fn check(&self) -> Result<(), CurveError> {
        if self.points.is_empty() || self.points.len() > MAX_POINTS {
            return Err(CurveError::Shape(format!(
                "{} points, expected 1..={MAX_POINTS}",
                self.points.len()
            )));
        }
        if !(self.delta.is_finite() && self.delta > 0.0 && self.delta < 1.0) {
            return Err(CurveError::Shape(format!(
                "delta {} not in (0, 1)",
                self.delta
            )));
        }
        for (i, p) in self.points.iter().enumerate() {
            let bad = |what: String| CurveError::Value { point: i, what };
            let positive = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0);
            if !positive(p.target_epsilon) || !positive(p.noise_multiplier) {
                return Err(bad("ε and z must be positive and finite (null: ∞)".into()));
            }
            if !p.epsilon_spent.is_none_or(|v| v.is_finite() && v >= 0.0) {
                return Err(bad("ε spent must be finite and ≥ 0".into()));
            }
            if !(p.f1.is_finite() && (0.0..=1.0).contains(&p.f1)) {
                return Err(bad(format!("F1 {} not in [0, 1]", p.f1)));
            }
            if !(p.f1_ci95.is_finite() && p.f1_ci95 >= 0.0) {
                return Err(bad(format!("F1 interval {} not finite ≥ 0", p.f1_ci95)));
            }
            if !p
                .auprc
                .is_none_or(|v| v.is_finite() && (0.0..=1.0).contains(&v))
            {
                return Err(bad("AUPRC not in [0, 1]".into()));
            }
        }
        Ok(())
    }
}

/// The table of the curve, each figure tied to its pointer under `/record_curve`.
pub fn table(c: &RecordCurve, out: &mut String) {
    let _ = writeln!(
        out,
        "<h2>Record-level ε versus F1</h2>\n<p>Each point: whole campaigns of {} on {} plants \
         ({} split) under record-level DP-SGD at δ = {}, mean over seeds with 95 % interval. \
         {}</p>",
        esc(&c.model),
        c.plants,
        esc(&c.split),
        fig("/record_curve/delta", &num(c.delta)),
        esc(&c.measured)
    );
    out.push_str("<table class=\"record-curve\"><thead><tr><th>target ε</th><th>ε spent</th><th>z</th><th>F1</th><th>± 95 %</th><th>AUPRC</th><th>seeds</th></tr></thead><tbody>\n");
    let opt = |v: Option<f64>, none: &str| v.map_or(none.to_owned(), num);
    for (i, p) in c.points.iter().enumerate() {
        let q = |f: &str| format!("/record_curve/points/{i}/{f}");
        let _ = writeln!(
            out,
            "<tr>{}{}{}{}{}{}{}</tr>",
            cell(&q("target_epsilon"), &opt(p.target_epsilon, "∞")),
            cell(&q("epsilon_spent"), &opt(p.epsilon_spent, "∞")),
            cell(&q("noise_multiplier"), &opt(p.noise_multiplier, "n/a")),
            cell(&q("f1"), &num(p.f1)),
            cell(&q("f1_ci95"), &num(p.f1_ci95)),
            cell(&q("auprc"), &opt(p.auprc, "n/a")),
            cell(&q("seeds"), &p.seeds.to_string()),
        );
    }
    out.push_str("</tbody></table>\n");
}

/// ε (x) versus mean F1 (y) with 95 % bars; the ∞ point sits in a labelled column at the
/// right end.
pub fn plot(c: &RecordCurve) -> String {
    let title = "Record-level ε versus federated F1 (mean over seeds, 95 % interval)";
    let mut s = String::new();
    open(&mut s, 760, 380, title);
    let (_, hi) = extent(c.points.iter().filter_map(|p| p.target_epsilon)).unwrap_or((0.0, 1.0));
    let f = Frame::new(70.0, 50.0, 460.0, 260.0, (0.0, hi), (0.0, 1.0));
    f.axes(&mut s, "record-level ε", "F1", None);
    let inf_x = f.left + f.width + 35.0;
    let _ = write!(
        s,
        r#"<text class="inf-column" x="{inf_x:.1}" y="{:.1}" text-anchor="middle">∞ (no DP-SGD)</text>"#,
        f.bottom() + 15.0
    );
    let col = colour(1);
    let _ = write!(
        s,
        r#"<g class="series" data-series="record-level F1" stroke="{col}" fill="{col}">"#
    );
    let mut pts: Vec<(f64, f64, f64, f64)> = c
        .points
        .iter()
        .map(|p| {
            let x = p.target_epsilon.map_or(inf_x, |e| f.px(e));
            let lo = f.py((p.f1 - p.f1_ci95).clamp(0.0, 1.0));
            let hi = f.py((p.f1 + p.f1_ci95).clamp(0.0, 1.0));
            (x, f.py(p.f1), lo, hi)
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let line: Vec<String> = pts
        .iter()
        .map(|p| format!("{:.2},{:.2}", p.0, p.1))
        .collect();
    let _ = write!(
        s,
        r#"<polyline fill="none" stroke-width="1.5" points="{}"/>"#,
        line.join(" ")
    );
    for (x, y, lo, hi) in &pts {
        let _ = write!(
            s,
            r#"<line class="ci" x1="{x:.2}" y1="{lo:.2}" x2="{x:.2}" y2="{hi:.2}"/><circle class="point" cx="{x:.2}" cy="{y:.2}" r="3"/>"#
        );
    }
    legend_entry(&mut s, "record-level F1", (600.0, 70.0));
    s.push_str("</g></svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../configs/record-dp-curve.json");

    #[test]
    fn the_shipped_curve_parses_with_its_infinite_point() {
        let c = RecordCurve::parse(SHIPPED.as_bytes()).unwrap();
        assert_eq!(c.points.len(), 4);
        assert_eq!(c.points[3].target_epsilon, None);
        assert_eq!(c.delta, 1e-6);
        let svg = plot(&c);
        assert!(svg.contains("∞ (no DP-SGD)"));
        assert_eq!(svg.matches("class=\"point\"").count(), 4);
    }

    #[test]
    fn the_shipped_mlp_curve_parses_in_order() {
        let c = RecordCurve::parse(
            include_str!("../../../configs/record-dp-curve-mlp.json").as_bytes(),
        )
        .unwrap();
        let eps: Vec<Option<f64>> = c.points.iter().map(|p| p.target_epsilon).collect();
        assert_eq!(eps, [Some(1.0), Some(3.0), Some(8.0), None]);
        assert_eq!(c.delta, 1e-6);
        assert_eq!(plot(&c).matches("class=\"point\"").count(), 4);
    }

    #[test]
    fn oversize_malformed_and_incomplete_files_are_refused_by_name() {
        let big = vec![b' '; (MAX_CURVE_BYTES + 1) as usize];
        assert!(matches!(
            RecordCurve::parse(&big),
            Err(CurveError::TooLarge(_))
        ));
        assert!(matches!(
            RecordCurve::parse(b"{\"delta\": 1e-6, \"points\": ["),
            Err(CurveError::Malformed(_))
        ));
        // f1 is required; a point without it is refused, not read as 0.
        let e = RecordCurve::parse(
            br#"{"delta":1e-6,"points":[{"target_epsilon":1,"f1_ci95":0.1,"seeds":5}]}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&e, CurveError::Malformed(m) if m.contains("f1")),
            "{e}"
        );
        assert!(matches!(
            RecordCurve::parse(br#"{"delta":1e-6,"points":[]}"#),
            Err(CurveError::Shape(_))
        ));
        for bad in [
            r#"{"target_epsilon":-1,"f1":0.3,"f1_ci95":0.1,"seeds":5}"#,
            r#"{"target_epsilon":1,"f1":1.3,"f1_ci95":0.1,"seeds":5}"#,
            r#"{"target_epsilon":1,"f1":0.3,"f1_ci95":-0.1,"seeds":5}"#,
            r#"{"target_epsilon":1,"f1":0.3,"f1_ci95":0.1,"auprc":2,"seeds":5}"#,
        ] {
            let j = format!(r#"{{"delta":1e-6,"points":[{bad}]}}"#);
            assert!(
                matches!(
                    RecordCurve::parse(j.as_bytes()),
                    Err(CurveError::Value { point: 0, .. })
                ),
                "{bad}"
            );
        }
        let j =
            r#"{"delta":0.5e1,"points":[{"target_epsilon":1,"f1":0.3,"f1_ci95":0.1,"seeds":5}]}"#;
        assert!(matches!(
            RecordCurve::parse(j.as_bytes()),
            Err(CurveError::Shape(_))
        ));
    }

    #[test]
    fn the_tables_numbers_are_the_jsons() {
        let c = RecordCurve::parse(SHIPPED.as_bytes()).unwrap();
        let mut html = String::new();
        table(&c, &mut html);
        for (i, p) in c.points.iter().enumerate() {
            let f1 = format!(
                r#"data-json="/record_curve/points/{i}/f1">{}</td>"#,
                num(p.f1)
            );
            assert!(html.contains(&f1), "{f1}");
            let e = format!(
                r#"data-json="/record_curve/points/{i}/target_epsilon">{}</td>"#,
                p.target_epsilon.map_or("∞".into(), num)
            );
            assert!(html.contains(&e), "{e}");
        }
    }
}
