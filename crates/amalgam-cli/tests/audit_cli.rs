//! `amalgam audit` through the binary, offline: a site's ledger against its signed summaries
//! (a saved `GET /v1/anchors/{site}` answer) and its state directory. A clean ledger passes;
//! a deleted entry, an anchor ahead of the ledger, a summary that is not the site's and a
//! persisted round without a charge are each a specific finding and exit 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;

use amalgam_dp::ledger::store::{Store, parse, read_file};
use amalgam_net::api::Anchors;
use common::{amalgam, charged, consortium, text, write_anchors};

fn audit(dir: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let mut args = vec![
        "audit",
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
    ];
    args.extend_from_slice(extra);
    let out = amalgam(dir, &args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

fn codes(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_clean_ledger_passes_with_its_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, summaries) = charged(d, &c, &[1, 2]);
    write_anchors(d, &c, &summaries);
    let (out, v) = audit(d, &["--transcripts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(codes(&v), Vec::<String>::new());
    assert_eq!(v["report"]["accepted"], 2);
    assert_eq!(v["report"]["anchors_checked"], 2);
    let eps = v["report"]["epsilon_total"].as_f64().unwrap();
    assert!(
        (eps - summaries[1].1.epsilon).abs() < 1e-12 && eps > 0.0,
        "{eps}"
    );
    // Text rows.
    let out = amalgam(
        d,
        &[
            "audit",
            "--manifest",
            "consortium.manifest",
            "--site",
            "0",
            "--state",
            "state",
            "--anchors",
            "anchors.json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no findings"));
}

#[test]
fn a_deleted_entry_is_a_critical_finding() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (path, summaries) = charged(d, &c, &[1, 2, 3]);
    write_anchors(d, &c, &summaries);
    // Rewrite the file without the first charge (entry 2), framing intact.
    let parsed = parse(&read_file(&path).unwrap()).unwrap();
    std::fs::remove_file(&path).unwrap();
    let (mut store, fresh) = Store::open(&path).unwrap();
    store.repair(&fresh, &path).unwrap();
    for (i, p) in parsed.payloads.iter().enumerate() {
        if i != 2 {
            store.append(p).unwrap();
        }
    }
    drop(store);
    let (out, v) = audit(d, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let codes = codes(&v);
    assert!(codes.contains(&"BrokenChain".to_string()), "{codes:?}");
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "BrokenChain" && f["severity"] == "critical")
    );
    let t = amalgam(
        d,
        &[
            "audit",
            "--manifest",
            "consortium.manifest",
            "--site",
            "0",
            "--state",
            "state",
            "--anchors",
            "anchors.json",
        ],
    );
    let t = String::from_utf8_lossy(&t.stdout);
    assert!(t.contains("critical") && t.contains("BrokenChain"), "{t}");
}

#[test]
fn an_anchor_ahead_of_the_ledger_is_truncation() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, mut summaries) = charged(d, &c, &[1, 2]);
    // The site published a summary of a longer ledger (a charge since cut off).
    let mut ahead = summaries[1].1;
    ahead.round = 3;
    ahead.entries += 1;
    ahead.head = [7; 32];
    summaries.push((3, ahead));
    write_anchors(d, &c, &summaries);
    let (out, v) = audit(d, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(codes(&v), vec!["Truncated".to_string()]);
    assert!(
        v["findings"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("anchored: 5")
    );
}

#[test]
fn a_summary_that_is_not_the_sites_is_refused_as_an_anchor() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, summaries) = charged(d, &c, &[1]);
    write_anchors(d, &c, &summaries);
    let mut file: Anchors =
        serde_json::from_slice(&std::fs::read(d.join("anchors.json")).unwrap()).unwrap();
    // Signed by another site's key: does not verify under site 0's manifest key.
    let forged = summaries[0].1.sign(&c.sites[1].to_ledger_key());
    file.summaries.push((2, hex::encode(forged)));
    std::fs::write(d.join("anchors.json"), serde_json::to_vec(&file).unwrap()).unwrap();
    let (out, v) = audit(d, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(codes(&v), vec!["SummaryUnverifiable".to_string()]);
    assert_eq!(v["report"]["anchors_checked"], 1);
}

#[test]
fn a_persisted_round_without_a_charge_is_an_upload_without_charge() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, summaries) = charged(d, &c, &[1]);
    write_anchors(d, &c, &summaries);
    // Round 1 was charged: its persisted state is accounted for.
    std::fs::create_dir_all(d.join("state/agent/sealed/round-1")).unwrap();
    let (out, _) = audit(d, &["--transcripts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Round 2 holds signed state the ledger never charged.
    std::fs::create_dir_all(d.join("state/agent/sealed/round-2")).unwrap();
    let (out, v) = audit(d, &["--transcripts"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(codes(&v), vec!["PersistedRoundWithoutCharge".to_string()]);
    assert_eq!(v["transcripts_checked"], serde_json::json!([1, 2]));
    // Without --transcripts the same directory is not cross-checked.
    let (out, _) = audit(d, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn no_anchor_at_all_is_a_finding() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    charged(d, &c, &[1]);
    write_anchors(d, &c, &[]);
    let (out, v) = audit(d, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(codes(&v), vec!["Unanchored".to_string()]);
    assert_eq!(v["findings"][0]["severity"], "compliance");
}
