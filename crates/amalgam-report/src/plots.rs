//! The report's plots, each computed from the report alone: loss and validation F1 per round,
//! cumulative ε per round per plant, per-mode recall per model kind, and ε versus F1.
//!
//! An absent ε means ∞ (no differential privacy): it is drawn on a separate "∞" band above
//! the finite axis, never as 0. RNF recall is shown as n/a (random failures, not judged).

use std::fmt::Write;

use crate::schema::{ModelKind, RoundRow, SimulationReport};
use crate::svg::{Frame, colour, extent, legend_entry, note, open, series};
use crate::text::esc;

/// One rendered plot.
#[derive(Debug, Clone)]
pub struct Plot {
    /// File name under `plots/`.
    pub file: &'static str,
    /// Caption on the page.
    pub title: String,
    /// The SVG document.
    pub svg: String,
}

/// Every plot file name this renderer can write (stale ones are removed on re-render).
pub const PLOT_FILES: [&str; 5] = [
    "rounds.svg",
    "epsilon.svg",
    "recall.svg",
    "curve.svg",
    "record-curve.svg",
];

/// The failure modes in page order; the last (RNF) is never judged.
pub const MODES: [&str; 5] = ["TWF", "HDF", "PWF", "OSF", "RNF"];

/// The plots of `r`: `curve.svg` only when the report has a curve.
pub fn plots(r: &SimulationReport) -> Vec<Plot> {
    let mut out = vec![rounds(r), epsilon(r), recall(r)];
    if !r.curve.is_empty() {
        out.push(curve(r));
    }
    if let Some(c) = &r.record_curve {
        out.push(Plot {
            file: "record-curve.svg",
            title: "Record-level ε versus federated F1 (mean over seeds, 95 % interval)".into(),
            svg: crate::record_curve::plot(c),
        });
    }
    out
}

/// Kebab-case name of a model kind (as in the JSON).
pub fn kind_name(k: ModelKind) -> &'static str {
    match k {
        ModelKind::Federated => "federated",
        ModelKind::FineTuned => "fine-tuned",
        ModelKind::LocalOnly => "local-only",
        ModelKind::Centralized => "centralized",
    }
}

/// Most rounds drawn per series: a longer campaign is thinned to every k-th round (the last
/// always kept), so that 10^4 rounds × 255 plants stay a plot of a few MiB, not 160.
pub const MAX_PLOTTED_ROUNDS: usize = 1000;

/// The rounds drawn, and the stride k when thinned.
fn shown(r: &SimulationReport) -> (Vec<&RoundRow>, Option<usize>) {
    let n = r.rounds.len();
    if n <= MAX_PLOTTED_ROUNDS {
        return (r.rounds.iter().collect(), None);
    }
    let k = n.div_ceil(MAX_PLOTTED_ROUNDS - 1);
    let rows = r
        .rounds
        .iter()
        .enumerate()
        .filter(|(i, _)| i % k == 0 || *i == n - 1)
        .map(|(_, row)| row)
        .collect();
    (rows, Some(k))
}

/// Says so on the plot when rounds were thinned.
fn thinned_note(s: &mut String, r: &SimulationReport, k: Option<usize>, y: f64) {
    if let Some(k) = k {
        note(
            s,
            320.0,
            y,
            &format!(
                "one round in {k} drawn, and the last, of {} rounds",
                r.rounds.len()
            ),
        );
    }
}

fn round_range(r: &SimulationReport) -> (f64, f64) {
    extent(r.rounds.iter().map(|row| row.round as f64)).unwrap_or((0.0, 1.0))
}

/// Loss (top panel) and validation F1 (bottom panel) per round.
fn rounds(r: &SimulationReport) -> Plot {
    let title = "Loss and validation F1 of the global model per round";
    let mut s = String::new();
    open(&mut s, 720, 500, title);
    let xr = round_range(r);
    let (rows, k) = shown(r);
    let loss: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|row| row.loss.map(|v| (row.round as f64, v)))
        .collect();
    let f1: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|row| row.val_f1.map(|v| (row.round as f64, v)))
        .collect();
    let (lo, hi) = extent(loss.iter().map(|p| p.1)).unwrap_or((0.0, 1.0));
    let top = Frame::new(70.0, 40.0, 500.0, 170.0, xr, (lo.min(0.0), hi));
    let bottom = Frame::new(70.0, 280.0, 500.0, 170.0, xr, (0.0, 1.0));
    top.axes(&mut s, "round", "loss", None);
    bottom.axes(&mut s, "round", "validation F1", None);
    let lp: Vec<(f64, f64)> = loss.iter().map(|&(x, y)| (top.px(x), top.py(y))).collect();
    let fp: Vec<(f64, f64)> = f1
        .iter()
        .map(|&(x, y)| (bottom.px(x), bottom.py(y)))
        .collect();
    series(&mut s, "loss", 0, &lp, &[], (590.0, 60.0));
    series(&mut s, "validation F1", 1, &fp, &[], (590.0, 300.0));
    if r.rounds.is_empty() {
        note(&mut s, 320.0, 130.0, "no rounds recorded");
    }
    thinned_note(&mut s, r, k, 495.0);
    s.push_str("</svg>\n");
    Plot {
        file: "rounds.svg",
        title: title.into(),
        svg: s,
    }
}

/// Cumulative ε per round, one series per plant; ∞ on its own band.
fn epsilon(r: &SimulationReport) -> Plot {
    let title = "Cumulative ε per plant after each round (site-level)";
    let plants = r
        .rounds
        .iter()
        .map(|row| row.epsilon.len())
        .max()
        .unwrap_or(0);
    let height = (380.0_f64).max(70.0 + 16.0 * plants as f64);
    let mut s = String::new();
    open(&mut s, 760, height as u32, title);
    let finite = r
        .rounds
        .iter()
        .flat_map(|row| row.epsilon.iter().flatten().copied());
    let cap = match &r.privacy {
        crate::schema::PrivacySetting::SiteLevel { epsilon_cap, .. } => Some(*epsilon_cap),
        crate::schema::PrivacySetting::None => None,
    };
    let (_, hi) = extent(finite.chain(cap)).unwrap_or((0.0, 1.0));
    let f = Frame::new(70.0, 60.0, 500.0, 260.0, round_range(r), (0.0, hi));
    f.axes(&mut s, "round", "cumulative ε", None);
    let band = f.top - 22.0;
    let _ = write!(
        s,
        r##"<g class="inf-band"><line x1="{:.1}" y1="{band:.1}" x2="{:.1}" y2="{band:.1}" stroke="#999" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" text-anchor="end">∞</text></g>"##,
        f.left,
        f.left + f.width,
        f.left - 6.0,
        band + 4.0
    );
    if let Some(c) = cap {
        let y = f.py(c);
        let _ = write!(
            s,
            r##"<g class="cap"><line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#b00" stroke-dasharray="6 3"/><text x="{:.1}" y="{:.1}" fill="#b00">cap {}</text></g>"##,
            f.left,
            f.left + f.width,
            f.left + 4.0,
            y - 4.0,
            esc(&crate::text::num(c))
        );
    }
    let (rows, k) = shown(r);
    thinned_note(&mut s, r, k, f.bottom() + 50.0);
    for p in 0..plants {
        let mut pts = Vec::new();
        let mut inf = Vec::new();
        for row in &rows {
            match row.epsilon.get(p) {
                Some(Some(e)) => pts.push((f.px(row.round as f64), f.py(*e))),
                Some(None) => inf.push((f.px(row.round as f64), band)),
                None => {}
            }
        }
        let legend = (600.0, 70.0 + 16.0 * p as f64);
        series(&mut s, &format!("plant {p}"), p, &pts, &inf, legend);
    }
    if plants == 0 {
        note(&mut s, 320.0, 190.0, "no rounds recorded");
    }
    s.push_str("</svg>\n");
    Plot {
        file: "epsilon.svg",
        title: title.into(),
        svg: s,
    }
}

/// Per-mode recall, one bar series per model kind (mean over that kind's models; those scored
/// on the global test set when there are any).
fn recall(r: &SimulationReport) -> Plot {
    let title = "Per-mode recall on the test set by model kind";
    let mut s = String::new();
    open(&mut s, 760, 380, title);
    let f = Frame::new(
        70.0,
        50.0,
        500.0,
        260.0,
        (0.0, MODES.len() as f64),
        (0.0, 1.0),
    );
    let centres: Vec<f64> = (0..MODES.len()).map(|i| i as f64 + 0.5).collect();
    f.axes(&mut s, "failure mode", "recall", Some(&[][..]));
    for (i, m) in MODES.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text class="mode" x="{:.1}" y="{:.1}" text-anchor="middle">{m}</text>"#,
            f.px(centres[i]),
            f.bottom() + 15.0
        );
    }
    let kinds = [
        ModelKind::Federated,
        ModelKind::FineTuned,
        ModelKind::LocalOnly,
        ModelKind::Centralized,
    ];
    let present: Vec<ModelKind> = kinds
        .into_iter()
        .filter(|k| r.models.iter().any(|m| m.kind == *k))
        .collect();
    let slot = 0.8 / present.len().max(1) as f64;
    for (si, kind) in present.iter().enumerate() {
        let all: Vec<_> = r.models.iter().filter(|m| m.kind == *kind).collect();
        let global: Vec<_> = all.iter().filter(|m| m.test_set == "global").collect();
        let chosen: Vec<_> = if global.is_empty() {
            all.iter().collect()
        } else {
            global
        };
        let name = if chosen.len() > 1 {
            format!("{} (mean of {})", kind_name(*kind), chosen.len())
        } else {
            kind_name(*kind).to_string()
        };
        let c = colour(si);
        let _ = write!(
            s,
            r#"<g class="series" data-series="{}" fill="{c}" stroke="{c}">"#,
            esc(&name)
        );
        for (mi, mode) in MODES.iter().enumerate() {
            let x0 = mi as f64 + 0.1 + slot * si as f64;
            let values: Vec<f64> = chosen
                .iter()
                .filter_map(|m| m.modes.iter().find(|fig| fig.mode == *mode))
                .filter_map(|fig| fig.recall)
                .collect();
            let x = f.px(x0 + slot / 2.0);
            if *mode == "RNF" || values.is_empty() {
                let _ = write!(
                    s,
                    r#"<text class="na" data-mode="{mode}" x="{x:.1}" y="{:.1}" text-anchor="middle" stroke="none" font-size="9">n/a</text>"#,
                    f.bottom() - 4.0
                );
                continue;
            }
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let (px0, px1) = (f.px(x0), f.px(x0 + slot));
            let top = f.py(mean.clamp(0.0, 1.0));
            let _ = write!(
                s,
                r#"<rect class="bar" data-mode="{mode}" x="{px0:.2}" y="{top:.2}" width="{:.2}" height="{:.2}"/>"#,
                (px1 - px0).max(0.5),
                f.bottom() - top
            );
        }
        legend_entry(&mut s, &name, (600.0, 70.0 + 16.0 * si as f64));
        s.push_str("</g>");
    }
    if present.is_empty() {
        note(&mut s, 320.0, 180.0, "no models scored");
    }
    s.push_str("</svg>\n");
    Plot {
        file: "recall.svg",
        title: title.into(),
        svg: s,
    }
}

/// ε (x) versus mean F1 (y) with 95 % bars; a point with ε = ∞ sits in the "∞" column.
fn curve(r: &SimulationReport) -> Plot {
    let title = "Site-level ε versus federated F1 (mean over seeds, 95 % interval)";
    let mut s = String::new();
    open(&mut s, 760, 380, title);
    let (_, hi) = extent(r.curve.iter().filter_map(|p| p.epsilon)).unwrap_or((0.0, 1.0));
    let f = Frame::new(70.0, 50.0, 460.0, 260.0, (0.0, hi), (0.0, 1.0));
    f.axes(&mut s, "ε", "F1", None);
    let inf_x = f.left + f.width + 35.0;
    let _ = write!(
        s,
        r#"<text class="inf-column" x="{inf_x:.1}" y="{:.1}" text-anchor="middle">∞</text>"#,
        f.bottom() + 15.0
    );
    let c = colour(0);
    let _ = write!(
        s,
        r#"<g class="series" data-series="federated F1" stroke="{c}" fill="{c}">"#
    );
    let mut pts: Vec<(f64, f64, f64, f64, bool)> = r
        .curve
        .iter()
        .map(|p| {
            let x = p.epsilon.map_or(inf_x, |e| f.px(e));
            let lo = f.py((p.f1 - p.f1_ci95).clamp(0.0, 1.0));
            let hi = f.py((p.f1 + p.f1_ci95).clamp(0.0, 1.0));
            (x, f.py(p.f1.clamp(0.0, 1.0)), lo, hi, p.real_processes)
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
    for (x, y, lo, hi, real) in &pts {
        let _ = write!(
            s,
            r#"<line class="ci" x1="{x:.2}" y1="{lo:.2}" x2="{x:.2}" y2="{hi:.2}"/><circle class="point" data-real="{real}" cx="{x:.2}" cy="{y:.2}" r="3"/>"#
        );
    }
    legend_entry(&mut s, "federated F1", (600.0, 70.0));
    s.push_str("</g></svg>\n");
    Plot {
        file: "curve.svg",
        title: title.into(),
        svg: s,
    }
}
