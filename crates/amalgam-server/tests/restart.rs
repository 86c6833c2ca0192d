//! Persistence through the SQLite event log: a restarted aggregator replays the log into a
//! fresh Aggregator (re-verifying every message), serves byte-identical downloads and
//! finishes the round; a tampered log and a second aggregator on the same log are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use amalgam_proto::Phase;
use amalgam_server::events::{EventKind, MemoryStore, StoreFailure, open_sqlite};
use amalgam_server::service::StartError;
use amalgam_server::{Service, ServiceConfig};
use common::*;

/// Runs AdvertiseKeys and ShareKeys with every site; returns the RoutedShares downloads.
async fn first_two_phases(fx: &Fixture, sites: &mut [TestSite]) -> Vec<Vec<u8>> {
    let mut routed = Vec::new();
    for phase in [Phase::AdvertiseKeys, Phase::ShareKeys] {
        for s in sites.iter_mut() {
            let b = match s.pending.take() {
                Some(b) => b,
                None => s.begin(fx),
            };
            assert_eq!(s.post(phase, b).await.status, 200);
        }
        for s in sites.iter_mut() {
            let r = s.fetch(phase).await;
            assert_eq!(r.status, 200);
            s.handle(&r.body, phase);
            if phase == Phase::ShareKeys {
                routed.push(r.body);
            }
        }
    }
    routed
}

async fn join_writer(w: std::thread::JoinHandle<()>) {
    tokio::task::spawn_blocking(move || w.join().unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replays_the_log_and_redelivers_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let fx = Fixture::new();
    let (log, writer) = open_sqlite(&db).unwrap();
    let run = start(&fx, Arc::new(log)).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let mut sites: Vec<TestSite> = (0..5).map(|i| TestSite::new(&fx, &run, i)).collect();
    let routed = first_two_phases(&fx, &mut sites).await;
    // Two masked inputs arrive, then the aggregator dies.
    for s in sites.iter_mut().take(2) {
        let b = s.pending.clone().unwrap();
        assert_eq!(s.post(Phase::MaskedInput, b).await.status, 200);
    }
    let receipt0 = sites[0]
        .post(Phase::MaskedInput, sites[0].pending.clone().unwrap())
        .await
        .body;
    run.stop().await;
    join_writer(writer).await;

    let (log, writer) = open_sqlite(&db).unwrap();
    let run = start(&fx, Arc::new(log)).await.unwrap();
    for s in sites.iter_mut() {
        s.client = run.client_for(&fx.sites[s.index]);
    }
    // Byte-identical re-delivery and the same response to a re-sent upload.
    for (s, before) in sites.iter().zip(&routed) {
        let r = s.fetch(Phase::ShareKeys).await;
        assert_eq!(
            &r.body, before,
            "site {} RoutedShares differ after restart",
            s.index
        );
    }
    let again = sites[0]
        .post(Phase::MaskedInput, sites[0].pending.clone().unwrap())
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, receipt0);
    let st = run.service.round_status(ROUND).await.unwrap();
    assert_eq!((st.phase.as_str(), st.responded), ("masked-input", 2));
    // Finish the round: sites 0 and 1 re-send (idempotent), the others send for the first time.
    let (result, _) = drive(&fx, &run, &mut sites, &[None; 5], Phase::MaskedInput).await;
    assert_eq!(result.contributors, vec![0, 1, 2, 3, 4]);
    assert_eq!(result.sum, plaintext(&fx, &result.contributors));
    run.stop().await;
    join_writer(writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_aggregator_on_the_same_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let (_log, _writer) = open_sqlite(&db).unwrap();
    match open_sqlite(&db) {
        Err(StoreFailure::Locked(_)) => {}
        other => panic!("second open: {:?}", other.map(|_| ())),
    }
}

/// An attacker who rewrites a stored upload and fixes its digest: the fresh Aggregator's
/// signature check refuses the restore, naming the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_log_is_refused_on_restore() {
    let fx = Fixture::new();
    let store = MemoryStore::new();
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let mut sites: Vec<TestSite> = (0..5).map(|i| TestSite::new(&fx, &run, i)).collect();
    first_two_phases(&fx, &mut sites).await;
    run.stop().await;

    let cfg = || ServiceConfig {
        phase_seconds: 3600,
        ..ServiceConfig::default()
    };
    // Untouched, it restores.
    Service::start(fx.consortium.clone(), Arc::new(store.clone()), cfg())
        .unwrap()
        .shutdown()
        .await;

    let events = store.events();
    let upload = events
        .iter()
        .find(|e| e.kind == EventKind::Upload && e.phase == 1)
        .unwrap();
    let download = events
        .iter()
        .find(|e| e.kind == EventKind::Download)
        .unwrap();

    // Each case works on its own copy of the log.
    let edited = store.clone();
    for (seq, digest_fixed) in [
        (upload.seq, true),
        (upload.seq, false),
        (download.seq, true),
    ] {
        let tampered = clone_store(&edited);
        tampered.tamper(seq, !digest_fixed, |e| {
            let i = e.body.len() / 2;
            e.body[i] ^= 0x01;
        });
        match Service::start(fx.consortium.clone(), Arc::new(tampered), cfg()) {
            Err(StartError::Replay(e)) => {
                assert!(digest_fixed);
                assert_eq!(e.seq, seq, "{e}");
            }
            Err(StartError::Store(StoreFailure::Tampered { seq: s, .. })) => {
                assert!(!digest_fixed);
                assert_eq!(s, seq);
            }
            Err(other) => panic!("unexpected refusal {other}"),
            Ok(_) => panic!("tampered row {seq} accepted"),
        }
    }
    // A deleted row (a dropped upload) is refused too.
    let cut = clone_store(&edited);
    cut.tamper(upload.seq, false, |e| e.body.clear());
    assert!(Service::start(fx.consortium.clone(), Arc::new(cut), cfg()).is_err());
}

fn clone_store(s: &MemoryStore) -> MemoryStore {
    use amalgam_server::events::{EventStore, as_new};
    let c = MemoryStore::new();
    c.append_batch(s.events().iter().map(as_new).collect())
        .unwrap();
    c
}

/// A byte flipped in the SQLite files is refused by the store's digests and chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_the_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let fx = Fixture::new();
    let (log, writer) = open_sqlite(&db).unwrap();
    let run = start(&fx, Arc::new(log)).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let mut s0 = TestSite::new(&fx, &run, 0);
    let adv = s0.begin(&fx);
    assert_eq!(s0.post(Phase::AdvertiseKeys, adv.clone()).await.status, 200);
    run.stop().await;
    join_writer(writer).await;
    // Secret bodies are sealed by the store; the row's body digest is in the clear: flip one
    // bit of it wherever it is stored.
    let digest = amalgam_store::sha256(&adv);
    let needle = &digest[..];
    let mut flipped = false;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() || p.extension().is_some_and(|e| e == "lock") {
            continue;
        }
        let mut bytes = std::fs::read(&p).unwrap();
        if let Some(i) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[i + 3] ^= 0x10;
            std::fs::write(&p, bytes).unwrap();
            flipped = true;
        }
    }
    assert!(flipped, "upload digest not found in the database files");
    let refused = match open_sqlite(&db) {
        Err(_) => true,
        Ok((log, _w)) => {
            Service::start(fx.consortium.clone(), Arc::new(log), Fixture::config()).is_err()
        }
    };
    assert!(refused, "a flipped byte was accepted");
}
