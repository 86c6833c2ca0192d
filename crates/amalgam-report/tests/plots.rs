//! The plots: well-formed SVG, one point set per series, ∞ drawn as ∞ (never at 0), RNF as
//! n/a, and the ε-versus-F1 plot only when the report has a curve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{no_dp, render, sample, write};
use roxmltree::{Document, Node};

fn svg(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("plots").join(name)).unwrap()
}

fn series<'a>(doc: &'a Document<'a>) -> Vec<Node<'a, 'a>> {
    doc.descendants()
        .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("series"))
        .collect()
}

fn polyline_points(g: &Node) -> Vec<(f64, f64)> {
    let lines: Vec<_> = g
        .children()
        .filter(|c| c.has_tag_name("polyline"))
        .collect();
    assert_eq!(lines.len(), 1, "one polyline per series");
    lines[0]
        .attribute("points")
        .unwrap()
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

fn circles<'a>(g: &Node<'a, 'a>, class: &str) -> Vec<Node<'a, 'a>> {
    g.children()
        .filter(|c| c.has_tag_name("circle") && c.attribute("class") == Some(class))
        .collect()
}

fn no_fonts_or_scripts(text: &str, doc: &Document) {
    assert!(!text.contains("@font-face") && !text.contains("url("));
    let root = doc.root_element();
    assert_eq!(root.attribute("font-family"), Some("sans-serif"));
    assert!(doc.descendants().all(|n| !n.has_tag_name("script")));
}

#[test]
fn round_and_epsilon_plots_have_one_point_set_per_series() {
    let r = sample();
    let (dir, _) = render(&r);
    let text = svg(dir.path(), "rounds.svg");
    let doc = Document::parse(&text).unwrap();
    no_fonts_or_scripts(&text, &doc);
    let s = series(&doc);
    let names: Vec<_> = s
        .iter()
        .map(|g| g.attribute("data-series").unwrap())
        .collect();
    assert_eq!(names, ["loss", "validation F1"]);
    // Round 2 has no loss: three loss points, four F1 points, in round order.
    let loss = polyline_points(&s[0]);
    assert_eq!(loss.len(), 3);
    assert!(loss.windows(2).all(|w| w[0].0 < w[1].0));
    // Loss falls: later points sit lower on the page (larger y).
    assert!(loss.windows(2).all(|w| w[0].1 < w[1].1));
    assert_eq!(polyline_points(&s[1]).len(), 4);
    assert_eq!(circles(&s[1], "point").len(), 4);

    let text = svg(dir.path(), "epsilon.svg");
    let doc = Document::parse(&text).unwrap();
    let s = series(&doc);
    assert_eq!(s.len(), 3, "one series per plant");
    for (p, g) in s.iter().enumerate() {
        assert_eq!(
            g.attribute("data-series"),
            Some(format!("plant {p}").as_str())
        );
        let pts = polyline_points(g);
        assert_eq!(pts.len(), 4);
        assert!(circles(g, "point inf").is_empty());
        // Cumulative ε grows: each point is higher on the page.
        assert!(pts.windows(2).all(|w| w[1].1 < w[0].1));
    }
}

#[test]
fn infinite_epsilon_is_drawn_on_the_infinity_band_not_at_zero() {
    let (dir, _) = render(&no_dp());
    let text = svg(dir.path(), "epsilon.svg");
    let doc = Document::parse(&text).unwrap();
    let band: f64 = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("inf-band"))
        .and_then(|g| g.children().find(|c| c.has_tag_name("line")))
        .and_then(|l| l.attribute("y1"))
        .unwrap()
        .parse()
        .unwrap();
    let axis_bottom: f64 = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("axes"))
        .and_then(|g| g.children().find(|c| c.has_tag_name("line")))
        .and_then(|l| l.attribute("y1"))
        .unwrap()
        .parse()
        .unwrap();
    let s = series(&doc);
    assert_eq!(s.len(), 3);
    for g in &s {
        assert!(polyline_points(g).is_empty(), "no finite ε to join");
        let inf = circles(g, "point inf");
        assert_eq!(inf.len(), 4, "one ∞ marker per round");
        for c in inf {
            let y: f64 = c.attribute("cy").unwrap().parse().unwrap();
            assert_eq!(y, band);
            assert!(y < axis_bottom - 100.0, "∞ drawn near ε = 0");
        }
    }
    assert!(text.contains(">∞</text>"));
    assert!(
        !dir.path().join("plots/curve.svg").exists(),
        "no curve, no plot"
    );
}

#[test]
fn recall_plot_has_a_bar_set_per_model_kind_and_rnf_is_na() {
    let (dir, _) = render(&sample());
    let text = svg(dir.path(), "recall.svg");
    let doc = Document::parse(&text).unwrap();
    no_fonts_or_scripts(&text, &doc);
    let s = series(&doc);
    let names: Vec<_> = s
        .iter()
        .map(|g| g.attribute("data-series").unwrap())
        .collect();
    // Fine-tuned has only per-plant models (their mean); centralized has a global one.
    assert_eq!(
        names,
        [
            "federated",
            "fine-tuned (mean of 2)",
            "local-only",
            "centralized"
        ]
    );
    for g in &s {
        let bars: Vec<_> = g
            .children()
            .filter(|c| c.has_tag_name("rect") && c.attribute("class") == Some("bar"))
            .map(|c| c.attribute("data-mode").unwrap())
            .collect();
        assert_eq!(bars, ["TWF", "HDF", "PWF", "OSF"]);
        let na: Vec<_> = g
            .children()
            .filter(|c| c.attribute("class") == Some("na"))
            .map(|c| (c.attribute("data-mode").unwrap(), c.text().unwrap()))
            .collect();
        assert_eq!(na, [("RNF", "n/a")]);
    }
    // The federated TWF bar is 0.8123 of the axis height (260 px).
    let bar = s[0]
        .children()
        .find(|c| c.attribute("data-mode") == Some("TWF"))
        .unwrap();
    let h: f64 = bar.attribute("height").unwrap().parse().unwrap();
    assert!((h - 0.8123 * 260.0).abs() < 0.01, "{h}");
}

#[test]
fn curve_plot_has_one_point_and_bar_per_campaign() {
    let r = sample();
    let (dir, _) = render(&r);
    let text = svg(dir.path(), "curve.svg");
    let doc = Document::parse(&text).unwrap();
    let s = series(&doc);
    assert_eq!(s.len(), 1);
    assert_eq!(polyline_points(&s[0]).len(), 3);
    let points = circles(&s[0], "point");
    assert_eq!(points.len(), 3);
    let bars: Vec<_> = s[0]
        .children()
        .filter(|c| c.attribute("class") == Some("ci"))
        .collect();
    assert_eq!(bars.len(), 3);
    // Each 95 % bar's length is 2 × half-width × 260 px.
    let mut lengths: Vec<f64> = bars
        .iter()
        .map(|b| {
            let y = |a| b.attribute(a).unwrap().parse::<f64>().unwrap();
            y("y1") - y("y2")
        })
        .collect();
    lengths.sort_by(f64::total_cmp);
    let mut want: Vec<f64> = r.curve.iter().map(|p| 2.0 * p.f1_ci95 * 260.0).collect();
    want.sort_by(f64::total_cmp);
    for (a, b) in lengths.iter().zip(&want) {
        assert!((a - b).abs() < 0.02, "{a} vs {b}");
    }
    // The ε = ∞ point sits in the ∞ column, right of the finite axis.
    let xs: Vec<f64> = points
        .iter()
        .map(|c| c.attribute("cx").unwrap().parse().unwrap())
        .collect();
    assert!(xs.iter().any(|x| *x > 530.0));
    assert_eq!(
        points
            .iter()
            .filter(|c| c.attribute("data-real") == Some("true"))
            .count(),
        1
    );

    // Re-rendered without a curve, the stale curve plot is removed.
    let mut r2 = r.clone();
    r2.curve.clear();
    write(dir.path(), &r2);
    let written = amalgam_report::render_dir(dir.path()).unwrap();
    assert!(!dir.path().join("plots/curve.svg").exists());
    assert_eq!(written.len(), 4);
}

#[test]
fn a_long_campaign_is_thinned_but_keeps_its_last_round() {
    let mut r = sample();
    let template = r.rounds[0].clone();
    r.rounds = (1..=2500u64)
        .map(|i| {
            let mut row = template.clone();
            row.round = i;
            row.epsilon = vec![Some(i as f64 * 0.001), None, Some(0.5)];
            row.loss = Some(1.0 / i as f64);
            row
        })
        .collect();
    let (dir, _) = render(&r);
    let text = svg(dir.path(), "rounds.svg");
    let doc = Document::parse(&text).unwrap();
    for g in series(&doc) {
        let pts = polyline_points(&g);
        assert!(
            pts.len() <= amalgam_report::plots::MAX_PLOTTED_ROUNDS,
            "{}",
            pts.len()
        );
        assert!(pts.len() > 500);
        // The last round is drawn, at the right end of the axis.
        assert!((pts.last().unwrap().0 - 570.0).abs() < 0.01);
    }
    assert!(text.contains("one round in 3 drawn, and the last, of 2500 rounds"));
    let text = svg(dir.path(), "epsilon.svg");
    let doc = Document::parse(&text).unwrap();
    let s = series(&doc);
    assert_eq!(s.len(), 3);
    let finite = polyline_points(&s[0]).len();
    assert!(finite <= amalgam_report::plots::MAX_PLOTTED_ROUNDS && finite > 500);
    assert_eq!(circles(&s[1], "point inf").len(), finite, "∞ thinned alike");
    assert!(text.len() < 1 << 20, "{} bytes", text.len());
}

#[test]
fn extreme_values_still_give_finite_coordinates() {
    let mut r = sample();
    r.rounds[0].loss = Some(-1.7e308);
    r.rounds[1].loss = Some(1.7e308);
    r.rounds[2].epsilon[0] = Some(1.7e308);
    r.rounds[3].round = u64::MAX;
    r.curve[1].epsilon = Some(1e300);
    r.curve[2].f1_ci95 = 1e300;
    let (dir, _) = render(&r);
    for name in ["rounds.svg", "epsilon.svg", "recall.svg", "curve.svg"] {
        let text = svg(dir.path(), name);
        let doc = Document::parse(&text).unwrap();
        for n in doc.descendants() {
            for a in n.attributes() {
                if a.name() == "points" {
                    for v in a.value().split([' ', ',']).filter(|v| !v.is_empty()) {
                        let v: f64 = v.parse().unwrap_or(f64::NAN);
                        assert!(v.is_finite() && v.abs() <= 1e6, "{name}: points {v}");
                    }
                }
                let coordinate = [
                    "x", "y", "cx", "cy", "x1", "x2", "y1", "y2", "width", "height",
                ]
                .contains(&a.name());
                if coordinate && !a.value().ends_with('%') {
                    let v: f64 = a.value().parse().unwrap_or(f64::NAN);
                    assert!(
                        v.is_finite() && v.abs() <= 1e6,
                        "{name}: {}={}",
                        a.name(),
                        a.value()
                    );
                }
            }
        }
        assert!(!text.contains("NaN") && !text.contains("inf,"), "{name}");
    }
}
