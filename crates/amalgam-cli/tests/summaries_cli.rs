//! A site's signed summaries against its ledger, through `amalgam audit` and `amalgam report
//! privacy`: a summary stating another ε than the ledger recomputes at the prefix it names,
//! or a later summary signed over an earlier prefix (lower ε passed off as the latest), is a
//! critical finding; the report refuses the same material.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{amalgam, charged, consortium, text, write_anchors};

fn run(dir: &Path, cmd: &[&str]) -> (Output, serde_json::Value) {
    let mut args = cmd.to_vec();
    args.extend([
        "--manifest",
        "consortium.manifest",
        "--site",
        "0",
        "--state",
        "state",
        "--anchors",
        "anchors.json",
        "--format",
        "json",
    ]);
    let out = amalgam(dir, &args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

fn codes(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["code"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_earlier_summary_with_a_lower_epsilon_is_a_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, mut summaries) = charged(d, &c, &[1, 2, 3]);
    // Round 1's summary (not the ledger's present length) states half its ε.
    summaries[0].1.epsilon /= 2.0;
    write_anchors(d, &c, &summaries);
    let (out, v) = run(d, &["audit"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        codes(&v).contains(&"SummaryEpsilonMismatch".to_string()),
        "{:?}",
        codes(&v)
    );
    let (out, _) = run(d, &["report", "privacy"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out).contains("SummaryEpsilonMismatch"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_unbounded_epsilon_claimed_for_a_private_ledger_is_a_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, mut summaries) = charged(d, &c, &[1, 2]);
    summaries[1].1.epsilon = f64::INFINITY;
    write_anchors(d, &c, &summaries);
    let (out, v) = run(d, &["audit"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(codes(&v).contains(&"SummaryEpsilonMismatch".to_string()));
}

#[test]
fn a_later_summary_over_an_earlier_prefix_is_a_regression() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, summaries) = charged(d, &c, &[1, 2, 3]);
    // The site signs round 3's summary over round 1's ledger prefix: its ε is right for that
    // prefix, and lower than round 2's.
    let mut stale = summaries[0].1;
    stale.round = 3;
    let served = vec![summaries[0], summaries[1], (3, stale)];
    write_anchors(d, &c, &served);
    let (out, v) = run(d, &["audit"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let c = codes(&v);
    assert!(c.contains(&"SummaryRegressed".to_string()), "{c:?}");
    assert!(!c.contains(&"SummaryEpsilonMismatch".to_string()), "{c:?}");
    let (out, _) = run(d, &["report", "privacy"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("SummaryRegressed"), "{}", text(&out));
}

#[test]
fn summaries_that_agree_with_every_prefix_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, summaries) = charged(d, &c, &[1, 2, 3]);
    write_anchors(d, &c, &summaries);
    let (out, v) = run(d, &["audit"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(v["summaries"].as_array().unwrap().len(), 3);
}

#[test]
fn a_junk_summary_from_the_aggregator_does_not_block_the_sites_report() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, summaries) = charged(d, &c, &[1, 2]);
    write_anchors(d, &c, &summaries);
    // The aggregator's copy adds bytes that are no summary of anyone's.
    let path = d.join("anchors.json");
    let mut a: amalgam_net::api::Anchors =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    a.summaries
        .push((3, "00".repeat(amalgam_site::statements::LedgerSummary::LEN)));
    std::fs::write(&path, serde_json::to_vec(&a).unwrap()).unwrap();
    let (out, v) = run(d, &["report", "privacy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        v["caveats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["code"] == "SummaryUnverifiable"),
        "{v}"
    );
    // The audit still lists it (exit 1): the auditor sees every row.
    let (out, v) = run(d, &["audit"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(codes(&v).contains(&"SummaryUnverifiable".to_string()));
}
