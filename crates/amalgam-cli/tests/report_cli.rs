//! `amalgam report privacy` through the binary: the numbers come from the audited ledger and
//! the verified summaries (another ledger, another report), a tampered ledger is refused and
//! not reported, `--consortium` adds every site's latest signed summary.
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
