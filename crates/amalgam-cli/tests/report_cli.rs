//! `amalgam report privacy` through the binary: the numbers come from the audited ledger and
//! the verified summaries (another ledger, another report), a tampered ledger is refused and
//! not reported, `--consortium` adds every site's latest signed summary.
//! `report simulation` re-renders a report directory from its report.json and refuses another
//! schema (exit 1, the page left as it was).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use amalgam_site::statements::LedgerSummary;
use common::{amalgam, charged, consortium, text, write_anchors, write_site_anchors};

fn report(dir: &Path, extra: &[&str]) -> (std::process::Output, serde_json::Value) {
    let mut args = vec![
        "report",
        "privacy",
        "--manifest",
        "consortium.manifest",
        "--site",
        "0",
        "--state",
        "state",
        "--anchors",
        "anchors.json",
    ];
    args.extend_from_slice(extra);
    let out = amalgam(dir, &args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

#[test]
fn the_numbers_come_from_the_ledger() {
    let mut spent = Vec::new();
    for rounds in [&[1u64][..], &[1, 2, 3][..]] {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let c = consortium(d);
        let (_, summaries) = charged(d, &c, rounds);
        write_anchors(d, &c, &summaries);
        let (out, v) = report(d, &["--format", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let s = &v["sites"][0];
        assert_eq!(s["source"], "ledger");
        let e = s["epsilon_spent"].as_f64().unwrap();
        let ledger_eps = summaries.last().unwrap().1.epsilon;
        assert!((e - ledger_eps).abs() < 1e-12, "{e} vs {ledger_eps}");
        let cap = s["epsilon_cap"].as_f64().unwrap();
        assert!(
            (s["epsilon_remaining"].as_f64().unwrap() - (cap - e).max(0.0)).abs() < 1e-12,
            "{s}"
        );
        assert_eq!(v["mechanism_matches_manifest"], true);
        assert_eq!(
            v["mechanism"]["min_cohort"],
            serde_json::json!(c.verified.dp_round_params().min_cohort.get())
        );
        assert_eq!(s["as_of_round"], serde_json::json!(rounds.last().unwrap()));
        spent.push(e);
    }
    assert!(spent[1] > spent[0], "{spent:?}");
}

#[test]
fn the_text_page_says_what_is_not_protected_and_html_is_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, summaries) = charged(d, &c, &[1]);
    write_anchors(d, &c, &summaries);
    let (out, _) = report(d, &["--html", "report.html"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "privacy unit:",
        "accountant:",
        "n_min = m - c",
        "NOT protected",
        "participation",
        "timing",
        "global model's integrity",
        "Who holds which key",
    ] {
        assert!(t.contains(needle), "{needle} missing:\n{t}");
    }
    let html = std::fs::read_to_string(d.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("NOT protected"));
    // The page's text holds '<'-free names here, so check escaping on the page's own
    // characters: every '&' of the text is escaped, and no raw '<' but the markup's.
    assert!(!html.contains("<script"));
    let body = html
        .split("<pre>")
        .nth(1)
        .unwrap()
        .split("</pre>")
        .next()
        .unwrap();
    assert!(!body.contains('<') && !body.contains('>'), "{body}");
    assert_eq!(body.matches("&amp;").count(), t.matches('&').count());
}

#[test]
fn a_tampered_ledger_is_refused_not_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (path, summaries) = charged(d, &c, &[1, 2]);
    write_anchors(d, &c, &summaries);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let (out, _) = report(d, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused, nothing reported"),
        "{}",
        text(&out)
    );
}

#[test]
fn consortium_combines_every_sites_verified_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, summaries) = charged(d, &c, &[1]);
    write_anchors(d, &c, &summaries);
    let theirs = LedgerSummary {
        consortium_digest: c.verified.consortium_digest(),
        round: 1,
        site: 1,
        entries: 3,
        head: [9; 32],
        epsilon: 0.25,
        record: None,
    };
    write_site_anchors(&d.join("site1.json"), &c, 1, &[(1, theirs)]);
    // A summary of site 2 signed by site 3 is not site 2's: refused, listed as a caveat.
    let forged = LedgerSummary { site: 2, ..theirs };
    let mut file: amalgam_net::api::Anchors = amalgam_net::api::Anchors {
        site: 2,
        summaries: vec![(1, hex::encode(forged.sign(&c.sites[3].to_ledger_key())))],
    };
    file.summaries.sort();
    std::fs::write(d.join("site2.json"), serde_json::to_vec(&file).unwrap()).unwrap();
    let (out, v) = report(
        d,
        &[
            "--consortium",
            "--anchors",
            "site1.json",
            "--anchors",
            "site2.json",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let sites = v["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 5);
    assert_eq!(sites[0]["source"], "ledger");
    assert_eq!(sites[1]["source"], "summary");
    assert_eq!(sites[1]["epsilon_spent"], 0.25);
    assert_eq!(sites[2]["epsilon_spent"], serde_json::Value::Null);
    assert_eq!(sites[4]["epsilon_spent"], serde_json::Value::Null);
    assert!(
        v["caveats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["code"] == "SummaryUnverifiable"),
        "{v}"
    );
}

/// A one-round, two-plant simulation report without differential privacy.
fn simulation_report() -> serde_json::Value {
    serde_json::json!({
        "schema": amalgam_report::SCHEMA,
        "campaign": {
            "config_digest": "ab".repeat(32), "consortium_digest": "cd".repeat(32),
            "model": "builtin:logistic-ai4i", "parameters": 12, "plants": 2, "split": "type",
            "split_seed": 1, "init_seed": 2, "rounds": 1, "dropout_rate": 0.0, "bits": 16,
            "single_operator": true, "wall_seconds": 1.25
        },
        "privacy": { "kind": "none" },
        "protocol": { "threshold": 2, "colluders": 0, "dropouts": 0, "min_cohort": 2 },
        "rounds": [{ "round": 1, "survivors": 2, "epsilon": [null, null], "loss": 0.5,
                     "val_f1": 0.625, "seconds": 0.5 }],
        "models": [{ "kind": "federated", "plant": null, "test_set": "global", "rows": 100,
                     "failures": 4, "threshold": 0.5, "f1": 0.6667, "auprc": 0.7125,
                     "auroc": 0.9, "precision": 0.75, "recall": 0.6,
                     "modes": [{ "mode": "HDF", "rows": 2, "recall": 0.5, "auroc": 0.8 }] }],
        "epsilon": [{ "plant": 0, "unit": "site-update-per-round", "spent": null, "cap": null,
                      "delta": null, "entries": 1, "ledger_head": "ef".repeat(32) }],
        "time_share": null,
        "curve": [],
        "exports": []
    })
}

#[test]
fn report_simulation_renders_the_directory_and_refuses_a_bad_report() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("run")).unwrap();
    let mut report = simulation_report();
    std::fs::write(d.join("run/report.json"), report.to_string()).unwrap();
    let out = amalgam(d, &["report", "simulation", "--dir", "run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        printed,
        [
            "run/plots/rounds.svg",
            "run/plots/epsilon.svg",
            "run/plots/recall.svg",
            "run/index.html"
        ]
    );
    let html = std::fs::read_to_string(d.join("run/index.html")).unwrap();
    let lines = amalgam_report::page_lines(&html);
    assert_eq!(
        lines,
        [
            "no differential privacy (ε = ∞)",
            "single-operator simulation: no separation of duties"
        ]
    );
    assert!(html.contains(">0.6667<"));

    // Re-rendered from the changed JSON alone.
    report["models"][0]["f1"] = serde_json::json!(0.5123);
    std::fs::write(d.join("run/report.json"), report.to_string()).unwrap();
    let out = amalgam(d, &["report", "simulation", "--dir", "run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = std::fs::read_to_string(d.join("run/index.html")).unwrap();
    assert!(html.contains(">0.5123<") && !html.contains(">0.6667<"));

    // Another schema: exit 1, the error names it, the page is left as it was.
    report["schema"] = serde_json::json!("amalgam-simulate-report/9");
    std::fs::write(d.join("run/report.json"), report.to_string()).unwrap();
    let out = amalgam(d, &["report", "simulation", "--dir", "run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("amalgam-simulate-report/9"));
    assert!(out.stdout.is_empty());
    assert_eq!(
        std::fs::read_to_string(d.join("run/index.html")).unwrap(),
        html
    );

    // No report at all: exit 1, nothing written.
    std::fs::create_dir(d.join("empty")).unwrap();
    let out = amalgam(d, &["report", "simulation", "--dir", "empty"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(std::fs::read_dir(d.join("empty")).unwrap().count(), 0);
}
