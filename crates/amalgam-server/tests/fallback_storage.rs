//! A fallback commit that fails: nothing is ever answered from the state the log does not
//! hold, neither to the request that failed nor to a later read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::needless_range_loop)]

mod fb;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use amalgam_net::ProblemCode;
use amalgam_net::fallback_api::fallback_path;
use amalgam_server::events::{Event, EventStore, MemoryStore, NewEvent, StoreFailure};
use fb::*;

/// The memory log, whose appends fail once `broken` is set.
#[derive(Default)]
struct BreakingLog {
    inner: MemoryStore,
    broken: AtomicBool,
}

impl EventStore for BreakingLog {
    fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, StoreFailure> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreFailure::Io("disk full".into()));
        }
        self.inner.append_batch(events)
    }
    fn replay(&self) -> Result<Vec<Event>, StoreFailure> {
        self.inner.replay()
    }
    fn shred_round(&self, round: u64) -> Result<(), StoreFailure> {
        self.inner.shred_round(round)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_commit_no_read_is_answered_from_uncommitted_state() {
    let fx = Fixture::new(true);
    let log = Arc::new(BreakingLog::default());
    let run = start(&fx, log.clone()).await.unwrap();
    run.open_fallback().await.unwrap();
    let xs = inputs();
    for i in 0..2 {
        let r = run
            .client_for(&fx.sites[i])
            .post(
                &fallback_path(ROUND, "upload"),
                site_upload(&fx, ROUND, i, &xs[i]),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.problem());
    }
    log.broken.store(true, Ordering::SeqCst);
    let r = run
        .client_for(&fx.sites[2])
        .post(
            &fallback_path(ROUND, "upload"),
            site_upload(&fx, ROUND, 2, &xs[2]),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 500, "{:?}", r.problem());
    // The third upload was applied in memory but never committed: no read may show it.
    let e = run.fallback.with_round(ROUND, |_| ()).await.unwrap_err();
    assert_eq!(e.code, ProblemCode::ServerBusy);
    let r = run
        .client_for(&fx.sites[0])
        .get(&fallback_path(ROUND, "result"))
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{:?}", r.problem());
    run.stop().await;
}
