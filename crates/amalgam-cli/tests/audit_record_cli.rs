//! `amalgam audit` of record ledgers through the binary, offline: each record ledger under
//! the state directory (or `--record-ledger FILE`) against the record anchors in the site's
//! signed summaries. A clean ledger passes; an older copy restored behind a published anchor,
//! a tampered entry and a deleted ledger are each a finding and exit 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use amalgam_dp::ledger::record::{
    RecordLedger, RecordMechanism, RecordPolicy, RecordRunRequest, dataset_id, record_ledger_path,
};
use amalgam_dp::params::{Delta, Epsilon};
use amalgam_dp::sampler::SamplerKind;
use amalgam_site::statements::{LedgerSummary, RecordAnchor};
use common::{amalgam, charged, consortium, text, write_anchors};

fn policy() -> RecordPolicy {
    RecordPolicy {
        dataset: dataset_id(&amalgam_dp::ledger::record::DatasetName::new("plant-0").unwrap()),
        max_records: 1000,
        epsilon_cap: Epsilon::new(10.0).unwrap(),
        delta: Delta::new(1e-5).unwrap(),
    }
}

fn ledger_path(d: &Path) -> PathBuf {
    let p = record_ledger_path(&d.join("state/records"), &policy().dataset);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    p
}

/// Site ledger charged for rounds 1..=3, a record run per round, each round's summary with
/// the record anchor after its run; returns the record ledger's bytes after round 1.
fn setup(d: &Path) -> (Vec<(u64, LedgerSummary)>, Vec<u8>) {
    setup_publishing(d, |_, a, _| a)
}

/// [`setup`], with `published(round, honest anchor, earlier published anchors)` the record
/// anchor the site signs into round's summary.
fn setup_publishing(
    d: &Path,
    published: impl Fn(u64, RecordAnchor, &[RecordAnchor]) -> RecordAnchor,
) -> (Vec<(u64, LedgerSummary)>, Vec<u8>) {
    let mut earlier: Vec<RecordAnchor> = Vec::new();
    let c = consortium(d);
    let (_, mut summaries) = charged(d, &c, &[1, 2, 3]);
    let path = ledger_path(d);
    let mut ledger = RecordLedger::open(&path, c.sites[0].to_ledger_key(), policy()).unwrap();
    let mut after_first = Vec::new();
    for (r, s) in summaries.iter_mut() {
        let _grant = ledger
            .authorize(RecordRunRequest {
                run_id: [*r as u8; 32],
                data: amalgam_dp::ledger::record::data_version(b"plant 0 rows", 1000),
                q: 0.05,
                noise_multiplier: 1.2,
                steps: 10,
                mechanism: RecordMechanism::with_multiplier(1.0, 1e-4, 8, SamplerKind::Fast, 1.2),
            })
            .unwrap()
            .consume();
        let a = ledger.anchor();
        let honest = RecordAnchor {
            dataset: policy().dataset,
            ledger_id: ledger.ledger_id(),
            entries: a.entries as u64,
            head: a.head,
            epsilon: ledger.spent(),
        };
        let signed = published(*r, honest, &earlier);
        earlier.push(signed);
        s.record = Some(signed);
        if *r == 1 {
            after_first = std::fs::read(&path).unwrap();
        }
    }
    drop(ledger);
    write_anchors(d, &c, &summaries);
    (summaries, after_first)
}

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
fn a_clean_record_ledger_audits_clean_against_its_published_anchors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (summaries, _) = setup(d);
    let (out, v) = audit(d, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(codes(&v), Vec::<String>::new());
    let rec = &v["records"][0]["report"];
    assert_eq!(rec["runs"].as_array().unwrap().len(), 3);
    // Three distinct (entries, head) anchors and the one ledger id.
    assert_eq!(rec["anchors_checked"], 4);
    let eps = rec["epsilon_total"].as_f64().unwrap();
    // The audit recomputes the total from the entries in another process; the published
    // figure is the ledger's own, so the two agree to rounding, not necessarily to the bit.
    let published = summaries[2].1.record.unwrap().epsilon;
    assert!(
        (eps - published).abs() <= 1e-12 * published,
        "{eps} vs {published}"
    );
    // The same ledger named explicitly.
    let file = ledger_path(d);
    let (out, v) = audit(d, &["--record-ledger", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(v["records"].as_array().unwrap().len(), 1);
}

/// The operator's rollback: the record ledger as it was after round 1. The file on its own
/// is a valid ledger; only the published anchors show it is behind.
#[test]
fn a_record_ledger_restored_behind_a_published_anchor_is_a_finding() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (_, after_first) = setup(d);
    std::fs::write(ledger_path(d), &after_first).unwrap();
    let (out, v) = audit(d, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        codes(&v).iter().any(|c| c == "RecordAnchor"),
        "{:?}",
        codes(&v)
    );
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "RecordAnchor" && f["severity"] == "critical")
    );
}

#[test]
fn a_tampered_record_entry_is_a_finding() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let path = ledger_path(d);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (out, v) = audit(d, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let c = codes(&v);
    assert!(c.iter().any(|c| c.starts_with("Record")), "{c:?}");
}

/// The delete attack offline: the summaries anchor a record ledger the state no longer has.
#[test]
fn a_deleted_record_ledger_is_a_finding() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    std::fs::remove_file(ledger_path(d)).unwrap();
    let (out, v) = audit(d, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        codes(&v).contains(&"RecordLedgerMissing".to_string()),
        "{:?}",
        codes(&v)
    );
}

/// A site that signs a smaller record-level spend into a summary than its chain holds at the
/// very anchor that summary publishes (the chain itself clean, every anchor held): the audit
/// recomputes ε at that anchor and names the round.
#[test]
fn a_summary_understating_the_record_spend_is_a_finding() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup_publishing(d, |r, a, _| {
        if r == 2 {
            RecordAnchor {
                epsilon: a.epsilon / 2.0,
                ..a
            }
        } else {
            a
        }
    });
    let (out, v) = audit(d, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let found: Vec<_> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "RecordEpsilonMisstated")
        .collect();
    assert_eq!(found.len(), 1, "{:?}", codes(&v));
    assert_eq!(found[0]["severity"], "critical");
    assert!(
        found[0]["detail"].as_str().unwrap().contains("round 2"),
        "{}",
        found[0]["detail"]
    );
}

/// A stale anchor the site signs itself: round 3's summary republishes round 1's anchor, every
/// field true of the ledger's prefix, so the per-summary checks pass; the audit sees the anchor
/// go back across rounds.
#[test]
fn a_summary_republishing_an_older_record_anchor_is_a_finding() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup_publishing(d, |r, a, earlier| if r == 3 { earlier[0] } else { a });
    let (out, v) = audit(d, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(codes(&v), vec!["RecordAnchorRegressed".to_string()]);
}

/// The same records declared under a second dataset name in a later round: the summaries
/// anchor two record datasets. Flagged whether or not the second ledger is handed over, and a
/// dataset the summaries anchor that an audit of one named ledger did not cover is reported.
#[test]
fn summaries_anchoring_a_second_record_dataset_are_a_finding() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let renamed = dataset_id(&amalgam_dp::ledger::record::DatasetName::new("plant-0-b").unwrap());
    setup_publishing(d, |r, a, _| {
        if r == 3 {
            RecordAnchor {
                dataset: renamed,
                ..a
            }
        } else {
            a
        }
    });
    let file = ledger_path(d);
    let (out, v) = audit(d, &["--record-ledger", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let c = codes(&v);
    assert!(c.contains(&"RecordDatasetChanged".to_string()), "{c:?}");
    assert!(c.contains(&"RecordLedgerNotAudited".to_string()), "{c:?}");
}
