//! The page: every figure reads back from report.json (and follows it when it changes), the
//! first-line rules, and hostile strings from the JSON stay text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use amalgam_report::{PrivacySetting, page_figures, page_lines};
use common::{no_dp, render, sample};

/// The page as XML (its only DTD is `<!DOCTYPE html>`).
fn parse_page(html: &str) -> roxmltree::Document<'_> {
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(html, opt).unwrap()
}

/// Checks every figure of `html` against the JSON of the report it was rendered from.
fn check_figures(html: &str, json: &serde_json::Value) -> usize {
    let figures = page_figures(html);
    for f in &figures {
        let v = json
            .pointer(&f.json)
            .unwrap_or_else(|| panic!("{} names nothing in the JSON", f.json));
        let want = match (&f.over, v) {
            (_, serde_json::Value::Null) => {
                assert!(f.text == "∞" || f.text == "n/a", "{f:?}");
                continue;
            }
            (None, serde_json::Value::Number(n)) if n.is_u64() => {
                assert_eq!(f.text, n.to_string(), "{f:?}");
                continue;
            }
            (None, v) => v.as_f64().unwrap(),
            (Some(over), v) => v.as_f64().unwrap() / json.pointer(over).unwrap().as_f64().unwrap(),
        };
        let shown: f64 = f
            .text
            .parse()
            .unwrap_or_else(|_| panic!("{f:?} is not a number"));
        assert!(
            (shown - want).abs() <= 5e-5 * want.abs().max(1.0),
            "{f:?}: JSON says {want}"
        );
    }
    figures.len()
}

/// Every table cell whose text is a number names its JSON source.
fn numeric_cells_are_figures(html: &str) {
    for seg in html.split("<td").skip(1) {
        let Some(gt) = seg.find('>') else { continue };
        let text = &seg[gt + 1..seg[gt..].find('<').map_or(seg.len(), |e| gt + e)];
        if text.trim().parse::<f64>().is_ok() {
            assert!(
                seg[..gt].contains("data-json="),
                "unsourced number {text:?}"
            );
        }
    }
}

/// Renders `r`, checks every figure against the JSON written beside the page, that every
/// numeric cell is sourced and that the page parses; returns the page and its figures by
/// JSON pointer.
fn rendered_and_checked(
    r: &amalgam_report::SimulationReport,
) -> (tempfile::TempDir, String, Vec<amalgam_report::Figure>) {
    let (dir, html) = render(r);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    check_figures(&html, &json);
    numeric_cells_are_figures(&html);
    parse_page(&html);
    let figs = page_figures(&html);
    (dir, html, figs)
}

#[test]
fn every_figure_on_the_page_reads_back_from_the_json() {
    let r = sample();
    let (dir, html) = render(&r);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    let n = check_figures(&html, &json);
    // 6 models × (≥ 14 figures), 3 ε rows × 5, protocol, time, campaign, curve.
    assert!(n > 6 * 14 + 15 + 4 + 4 + 8, "only {n} figures");
    numeric_cells_are_figures(&html);
    let figs = page_figures(&html);
    // Each model's F1 and AUPRC ratios are to the centralized model on its own test set.
    let ratio = |i: usize, f: &str| {
        figs.iter()
            .find(|x| x.json == format!("/models/{i}/{f}") && x.over.is_some())
            .and_then(|x| x.over.clone())
    };
    assert_eq!(ratio(0, "f1").as_deref(), Some("/models/4/f1"));
    assert_eq!(ratio(1, "auprc").as_deref(), Some("/models/5/auprc"));
    assert_eq!(
        ratio(2, "f1").as_deref(),
        Some("/models/4/f1"),
        "no plant-1 centralized: global"
    );
    for head in r.epsilon.iter().map(|e| &e.ledger_head) {
        assert!(html.contains(head.as_str()), "ledger head {head} missing");
    }
    assert!(html.contains(&r.campaign.config_digest));
    assert!(html.contains(r#"<a href="model.pt">model.pt</a>"#));
    for p in ["rounds", "epsilon", "recall", "curve"] {
        assert!(html.contains(&format!(r#"src="plots/{p}.svg""#)), "{p}");
    }
    // The page is well-formed XML with no script, no event handler and no remote resource.
    let doc = parse_page(&html);
    for node in doc.descendants().filter(|n| n.is_element()) {
        assert_ne!(node.tag_name().name(), "script");
        for a in node.attributes() {
            assert!(!a.name().starts_with("on"), "{}", a.name());
            assert!(!a.value().contains("://"), "{}={}", a.name(), a.value());
        }
    }
}

#[test]
fn the_page_follows_the_json_when_a_value_changes() {
    let mut r = sample();
    let (_d, before) = render(&r);
    assert!(before.contains(">0.8123<") && before.contains(">4.5000<"));
    r.models[0].f1 = 0.6789;
    r.epsilon[1].spent = Some(7.3125);
    r.protocol.threshold = 3;
    r.campaign.config_digest = "e9".repeat(32);
    let (dir, after) = render(&r);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    check_figures(&after, &json);
    let fig = |html: &str, p: &str| {
        page_figures(html)
            .into_iter()
            .find(|f| f.json == p && f.over.is_none())
            .map(|f| f.text)
    };
    assert_eq!(fig(&after, "/models/0/f1").as_deref(), Some("0.6789"));
    assert_eq!(fig(&before, "/models/0/f1").as_deref(), Some("0.8123"));
    assert_eq!(fig(&after, "/epsilon/1/spent").as_deref(), Some("7.3125"));
    assert_eq!(fig(&after, "/protocol/threshold").as_deref(), Some("3"));
    assert!(after.contains(&"e9".repeat(32)) && !after.contains(&"c0".repeat(32)));
    // The ratio follows too: 0.6789 / 0.8641.
    let ratio = page_figures(&after)
        .into_iter()
        .find(|f| f.json == "/models/0/f1" && f.over.is_some())
        .unwrap();
    assert_eq!(ratio.text, format!("{:.4}", 0.6789 / 0.8641));
    // ε 7.3125 is now the largest: the first line names it.
    assert!(
        page_lines(&after)[0].contains("ε ≤ 7.3125"),
        "{:?}",
        page_lines(&after)
    );
}

#[test]
fn first_line_follows_the_privacy_setting() {
    // privacy = none.
    let (_d, html) = render(&no_dp());
    let lines = page_lines(&html);
    assert_eq!(lines[0], "no differential privacy (ε = ∞)");
    assert_eq!(
        lines[1],
        "single-operator simulation: no separation of duties"
    );
    assert!(html.find("no differential privacy").unwrap() < html.find("<h1>").unwrap());

    // Site-level, every plant at most 10: private, with the largest ε and δ.
    let (_d, html) = render(&sample());
    let lines = page_lines(&html);
    assert!(
        lines[0]
            .starts_with("site-level differential privacy: ε ≤ 4.6000 per plant at δ = 1.0000e-6"),
        "{lines:?}"
    );
    assert!(!lines[0].contains("not private"));

    // Exactly 10 is still private; one plant above 10 is not.
    for (eps, private) in [(10.0, true), (12.5, false)] {
        let mut r = sample();
        r.epsilon[2].spent = Some(eps);
        let (_d, html) = render(&r);
        let first = &page_lines(&html)[0];
        if private {
            assert!(first.contains("ε ≤ 10 per plant"), "{first}");
        } else {
            assert_eq!(first, "site-level: not private (ε = 12.5000)");
        }
    }

    // A plant's last round above 10 counts even when its ledger row is lower.
    let mut r = sample();
    r.rounds[3].epsilon[0] = Some(10.5);
    let (_d, html) = render(&r);
    assert_eq!(
        page_lines(&html)[0],
        "site-level: not private (ε = 10.5000)"
    );

    // Site-level with an unbounded plant (a round without DP): ∞, not private.
    let mut r = sample();
    r.epsilon[0].spent = None;
    let (_d, html) = render(&r);
    assert_eq!(page_lines(&html)[0], "site-level: not private (ε = ∞)");

    // No single operator: no such line.
    let mut r = sample();
    r.campaign.single_operator = false;
    let (_d, html) = render(&r);
    let lines = page_lines(&html);
    assert_eq!(lines.len(), 1);
    assert!(!html.contains("single-operator"));

    // A site-level report without any ε figure does not claim privacy.
    let mut r = sample();
    r.epsilon.clear();
    r.rounds.clear();
    let (_d, html) = render(&r);
    assert!(page_lines(&html)[0].contains("not private"));
    assert!(matches!(r.privacy, PrivacySetting::SiteLevel { .. }));
}

#[test]
fn hostile_strings_in_the_json_stay_text() {
    let mut r = sample();
    let script = "<script>alert('x')</script>";
    r.campaign.model = script.into();
    // Quotes, ampersands, and characters XML 1.0 cannot carry at all.
    r.campaign.split = "a&b \"q\" 'p'\u{1}\u{ffff}".into();
    r.campaign.config_digest = "\"><img src=x onerror=alert(1)>".into();
    r.epsilon[0].ledger_head = "</code></td><script>bad()</script>".into();
    r.epsilon[1].unit = "<b onmouseover=x>".into();
    r.models[0].test_set = "</table><script>1</script>".into();
    r.models[0].modes[0].mode = "<svg onload=x>".into();
    if let PrivacySetting::SiteLevel { accountant, .. } = &mut r.privacy {
        *accountant = "&amp; already escaped".into();
    }
    r.exports = vec![
        "javascript:alert(1)".into(),
        "../../etc/passwd".into(),
        "/abs.pt".into(),
        "ok/model.pt".into(),
    ];
    let (dir, html) = render(&r);
    assert!(!html.contains("<script"), "raw script tag on the page");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("a&amp;b &quot;q&quot; &#39;p&#39;"));
    assert!(html.contains("&amp;amp; already escaped"));
    assert!(!html.contains("<img src=x"));
    assert!(!html.contains("href=\"javascript") && !html.contains("href=\"../"));
    assert!(!html.contains("href=\"/abs.pt\""));
    assert!(html.contains(r#"<a href="ok/model.pt">ok/model.pt</a>"#));
    let doc = parse_page(&html);
    assert!(doc.descendants().all(|n| !n.is_element()
        || (n.tag_name().name() != "script"
            && n.attributes().all(|a| !a.name().starts_with("on")))));
    // The text reads back exactly.
    let text: String = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(text.contains(script) && text.contains("</code></td><script>bad()</script>"));
    for f in std::fs::read_dir(dir.path().join("plots")).unwrap() {
        let svg = std::fs::read_to_string(f.unwrap().path()).unwrap();
        roxmltree::Document::parse(&svg).unwrap();
        assert!(!svg.contains("<script"));
    }
}

/// The record-level rows and curve: every number on the page reads back from the JSON, the
/// two units sit in separate tables, and the ∞ point of the curve is labelled, not 0.
#[test]
fn record_level_rows_and_curve_read_back_from_the_json() {
    let mut r = sample();
    r.record_level = vec![amalgam_report::RecordRow {
        plant: 0,
        dataset: "ab".repeat(32),
        records: 1234,
        delta: 1e-6,
        epsilon_cap: 8.0,
        epsilon_spent: 3.25,
        q: 0.05,
        clip: 1.0,
        noise_multipliers: vec![1.75],
        runs: 2,
        steps: 14,
        ledger_head: "cd".repeat(32),
    }];
    r.record_curve = Some(
        amalgam_report::record_curve::RecordCurve::parse(include_bytes!(
            "../../../configs/record-dp-curve.json"
        ))
        .unwrap(),
    );
    let (dir, html, figs) = rendered_and_checked(&r);
    let shown = |p: &str| figs.iter().find(|f| f.json == p).map(|f| f.text.clone());
    assert_eq!(
        shown("/record_level/0/epsilon_spent").as_deref(),
        Some("3.2500")
    );
    assert_eq!(
        shown("/record_level/0/noise_multipliers/0").as_deref(),
        Some("1.7500")
    );
    assert_eq!(
        shown("/record_curve/points/3/target_epsilon").as_deref(),
        Some("∞")
    );
    // Site-level and record-level rows are different tables.
    let site = html.find("<table class=\"epsilon\"").unwrap();
    let record = html.find("<table class=\"record\"").unwrap();
    assert!(site < record);
    assert!(html[site..record].find("/record_level/").is_none());
    assert!(dir.path().join("plots/record-curve.svg").is_file());
    let lines = page_lines(&html);
    assert!(
        lines[1].starts_with("record-level differential privacy: ε ≤ 3.2500 per plant"),
        "{lines:?}"
    );
    // Record-level DP alone: the top line says the site level is ∞, not "no DP" at all.
    r.privacy = PrivacySetting::None;
    let (_d, html) = render(&r);
    let lines = page_lines(&html);
    assert_eq!(
        lines[0],
        "no site-level differential privacy (site-level ε = ∞)"
    );
    assert!(lines[1].starts_with("record-level differential privacy"));
}

/// The never-seen-modes table: every number reads back from the JSON, and without rows the
/// section is absent.
#[test]
fn unseen_mode_rows_read_back_from_the_json() {
    let mut r = sample();
    let (_, html) = render(&r);
    assert!(!html.contains("class=\"unseen\""));
    r.unseen_modes = vec![amalgam_report::unseen::UnseenModes {
        plant: 3,
        modes: vec!["PWF".into(), "OSF".into()],
        federated: 0.625,
        fine_tuned: 0.5,
        local_only: 0.0625,
        centralized: 0.75,
    }];
    let (_dir, html, figs) = rendered_and_checked(&r);
    let shown = |p: &str| figs.iter().find(|f| f.json == p).map(|f| f.text.clone());
    assert_eq!(
        shown("/unseen_modes/0/federated").as_deref(),
        Some("0.6250")
    );
    assert_eq!(
        shown("/unseen_modes/0/local_only").as_deref(),
        Some("0.0625")
    );
    assert!(html.contains("<td>PWF, OSF</td>"));
}
