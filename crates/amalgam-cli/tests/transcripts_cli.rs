//! `amalgam audit --transcripts` and `amalgam report privacy` against a live aggregator after
//! a real `amalgam site run`: clean while the ledger holds the round's charge; once the charge
//! is cut off, the ended (shredded) round holds no upload to confront, and the site's own
//! signed summary catches the cut (`Truncated`) and the report refuses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::server::{amalgam_env as amalgam, member_args, serve, setup_zero, text_of as text};

fn codes(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn audit_transcripts_after_the_round_is_shredded_still_catch_a_cut_charge_by_its_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup_zero(d);
    let server = serve(d, "5");
    // One site joins round 1: it charges its ledger, advertises keys; the round aborts at the
    // 5 s deadline (one site of the 4 needed) and the site uploads its signed summary.
    let run = amalgam(
        d,
        &[
            "site",
            "run",
            "--manifest",
            "consortium.manifest",
            "--key",
            "site0/identity.key",
            "--state",
            "state",
            "--aggregator",
            &server.url,
            "--synthetic-trainer",
            "01",
            "--wait-for-round",
            "30",
        ],
        &[],
    );
    let audit = |extra: &[&str]| {
        let mut args = vec!["audit"];
        args.extend(member_args(&server.url));
        args.extend(["--state", "state", "--format", "json"]);
        args.extend_from_slice(extra);
        let out = amalgam(d, &args, &[]);
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, v)
    };
    let (out, v) = audit(&["--transcripts"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nsite run: {}",
        text(&out),
        text(&run)
    );
    // The round ended, so the aggregator crypto-shredded it: it no longer holds the site's
    // upload (`mine/latest` answers 204) and the aggregator-side check has nothing to read
    // (operations.md §4: it covers rounds still open at audit time).
    assert_eq!(v["transcripts_checked"], serde_json::json!([]), "{v}");
    assert_eq!(v["report"]["accepted"], 1);
    assert!(!v["summaries"].as_array().unwrap().is_empty(), "{v}");

    // The privacy report over the same live material.
    let mut args = vec!["report", "privacy"];
    args.extend(member_args(&server.url));
    args.extend(["--state", "state", "--consortium", "--format", "json"]);
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Our key's site (the manifest orders members by key) is reported from its ledger, the
    // four others, who never ran, with no spend.
    let rows = r["sites"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    let ours: Vec<_> = rows.iter().filter(|s| s["site"] == v["site"]).collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["source"], "ledger");
    assert_eq!(ours[0]["epsilon_spent"], v["report"]["epsilon_total"]);
    assert!(
        rows.iter()
            .filter(|s| s["site"] != v["site"])
            .all(|s| s["source"] == "summary" && s["epsilon_spent"].is_null()),
        "{r}"
    );

    // Cut the charge off the ledger: the upload the aggregator holds has no charge.
    let ledger = PathBuf::from(v["ledger"].as_str().unwrap());
    let ledger = if ledger.is_absolute() {
        ledger
    } else {
        d.join(ledger)
    };
    let bytes = amalgam_dp::ledger::store::read_file(&ledger).unwrap();
    let parsed = amalgam_dp::ledger::store::parse(&bytes).unwrap();
    std::fs::remove_file(&ledger).unwrap();
    let (mut store, fresh) = amalgam_dp::ledger::store::Store::open(&ledger).unwrap();
    store.repair(&fresh, &ledger).unwrap();
    let n = parsed.payloads.len();
    for p in &parsed.payloads[..n - 1] {
        store.append(p).unwrap();
    }
    drop(store);
    let (out, v) = audit(&["--transcripts"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let c = codes(&v);
    // The charge is gone but the shredded round left no upload to confront it with; the
    // summary the site signed after the charge still catches the cut.
    assert!(!c.contains(&"UploadWithoutCharge".to_string()), "{c:?}");
    assert!(c.contains(&"Truncated".to_string()), "{c:?}");
    // A tampered ledger is refused by the report.
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty());
}
