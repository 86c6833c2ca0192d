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

/// The fallback's appends take the log's chained path, as the masking service's do: the
/// answer waits for the commit, and a lost commit leaves nothing behind and fails the service
/// (503 until a restart, which rebuilds from the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_upload_is_answered_only_after_its_commit_and_a_lost_one_is_gone() {
    let fx = Fixture::new(true);
    let log = MemoryStore::new();
    let run = start(&fx, Arc::new(log.clone())).await.unwrap();
    run.open_fallback().await.unwrap();
    let xs = inputs();
    log.hold_commits(true);
    let client = run.client_for(&fx.sites[0]);
    let body = site_upload(&fx, ROUND, 0, &xs[0]);
    let pending =
        tokio::spawn(async move { client.post(&fallback_path(ROUND, "upload"), body).await });
    // The upload is queued in the log and not answered while its commit is held.
    for _ in 0..500 {
        if log.held_commits() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        log.held_commits(),
        1,
        "the upload bypassed the commit queue"
    );
    assert!(!pending.is_finished());
    // Its commit is lost: the upload is refused, and nothing is answered any more.
    assert_eq!(log.lose_held_commits(), 1);
    let r = pending.await.unwrap().unwrap();
    assert_eq!(r.status, 500, "{:?}", r.problem());
    let r = run
        .client_for(&fx.sites[1])
        .post(
            &fallback_path(ROUND, "upload"),
            site_upload(&fx, ROUND, 1, &xs[1]),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{:?}", r.problem());
    assert_eq!(r.problem().unwrap().code, ProblemCode::ServerBusy);
    run.stop().await;
    // The log never held the upload: a restart knows no upload of site 0.
    log.hold_commits(false);
    assert!(log.events().iter().all(|e| e.sender != Some(0)));
    let _claim = log.claim().unwrap();
    let run = start(&fx, Arc::new(log.clone())).await.unwrap();
    let held = run
        .fallback
        .with_round(ROUND, |s| s.upload_digest(amalgam_proto::SiteId(0)))
        .await
        .unwrap();
    assert_eq!(held, None);
    run.stop().await;
}

/// A log poisoned by a lost append of its other writer (the masking service, same log)
/// refuses the fallback's append: 503 `server.busy`, nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_log_refuses_fallback_appends_with_503() {
    let fx = Fixture::new(true);
    let log = MemoryStore::new();
    let run = start(&fx, Arc::new(log.clone())).await.unwrap();
    run.open_fallback().await.unwrap();
    let before = log.events().len();
    // Another writer's queued append is lost: the log is poisoned.
    log.hold_commits(true);
    let lost = log.queue_append(vec![NewEvent {
        round: 7,
        kind: amalgam_server::events::EventKind::RoundOpen,
        phase: 0,
        sender: None,
        body: vec![0; 20],
        response: None,
    }]);
    assert_eq!(log.lose_held_commits(), 1);
    assert!(lost.await.is_err());
    log.hold_commits(false);
    let xs = inputs();
    let r = run
        .client_for(&fx.sites[0])
        .post(
            &fallback_path(ROUND, "upload"),
            site_upload(&fx, ROUND, 0, &xs[0]),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{:?}", r.problem());
    assert_eq!(r.problem().unwrap().code, ProblemCode::ServerBusy);
    assert_eq!(log.events().len(), before);
    run.stop().await;
}
