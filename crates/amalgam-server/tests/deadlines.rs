//! Deadlines after a restart: the grace never stretches a phase beyond the manifest's
//! maximum, and a log whose deadlines are outside the manifest's bounds is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use amalgam_proto::Phase;
use amalgam_server::events::{EventKind, EventStore, MemoryStore, as_new};
use amalgam_server::service::StartError;
use amalgam_server::{Service, ServiceConfig};
use common::*;

/// A generous restart grace (far beyond the fixture's 3600 s maximum phase).
fn huge_grace() -> ServiceConfig {
    ServiceConfig {
        restart_grace_seconds: 1_000_000,
        ..Fixture::config()
    }
}

fn copy(s: &MemoryStore) -> MemoryStore {
    let c = MemoryStore::new();
    c.append_batch(s.events().iter().map(as_new).collect())
        .unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_grace_never_exceeds_the_manifest_maximum() {
    let fx = Fixture::new();
    let store = MemoryStore::new();
    // Phases of the manifest's maximum length: the deadline is already the latest allowed.
    let svc = Service::start(
        fx.consortium.clone(),
        Arc::new(store.clone()),
        Fixture::config(),
    )
    .unwrap();
    svc.open_round(ROUND, MODEL).await.unwrap();
    let first = svc.round_status(ROUND).await.unwrap().deadline_ms.unwrap();
    svc.shutdown().await;
    drop(svc);
    // Restart after restart: the grace may not move the deadline past opened + max.
    for _ in 0..3 {
        let svc =
            Service::start(fx.consortium.clone(), Arc::new(store.clone()), huge_grace()).unwrap();
        let d = svc.round_status(ROUND).await.unwrap().deadline_ms.unwrap();
        assert_eq!(
            d, first,
            "grace stretched the phase beyond the manifest's maximum"
        );
        svc.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_with_out_of_bounds_deadlines_is_refused() {
    let fx = Fixture::new();
    let store = MemoryStore::new();
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let mut sites: Vec<TestSite> = (0..5).map(|i| TestSite::new(&fx, &run, i)).collect();
    for s in sites.iter_mut() {
        let b = s.begin(&fx);
        assert_eq!(s.post(Phase::AdvertiseKeys, b).await.status, 200);
    }
    run.stop().await;
    // Untouched, it restores.
    Service::start(
        fx.consortium.clone(),
        Arc::new(store.clone()),
        Fixture::config(),
    )
    .unwrap()
    .shutdown()
    .await;

    let events = store.events();
    let open = events
        .iter()
        .find(|e| e.kind == EventKind::RoundOpen)
        .unwrap();
    let close = events
        .iter()
        .find(|e| e.kind == EventKind::PhaseClose)
        .unwrap();
    // Body tails: opened ‖ deadline (u64 big-endian each). The attacker with write access
    // to the database fixes the digests; the manifest's bounds (1..=3600 s) still refuse.
    for (seq, delta_ms) in [
        (open.seq, 10_000_000_000i64),
        (open.seq, -1),
        (close.seq, 10_000_000_000),
        (close.seq, -1),
    ] {
        let edited = copy(&store);
        edited.tamper(seq, false, |e| {
            let n = e.body.len();
            let opened = u64::from_be_bytes(e.body[n - 16..n - 8].try_into().unwrap());
            let deadline = opened.checked_add_signed(delta_ms).unwrap();
            e.body[n - 8..].copy_from_slice(&deadline.to_be_bytes());
        });
        match Service::start(fx.consortium.clone(), Arc::new(edited), Fixture::config()) {
            Err(StartError::Replay(e)) => {
                assert_eq!(e.seq, seq, "{e}");
                assert!(e.reason.contains("bounds"), "{e}");
            }
            Err(other) => panic!("unexpected refusal {other}"),
            Ok(_) => panic!("out-of-bounds deadline in row {seq} accepted"),
        }
    }
}
