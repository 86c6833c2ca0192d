//! The campaign and the fallback re-runs of aborted rounds: a re-run that never opens (the
//! committee never certifies) is given up after the open wait and the model carries over; one
//! that opened is waited for however long it takes and its sum gives the next model; a restart
//! recomputes both chains, and refuses a log where a later round opened beside an open re-run;
//! a give-up survives a restart that came before the next round opened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amalgam_consortium::global_model::model_digest;
use amalgam_proto::{AggregateOutput, SiteId};
use amalgam_server::Service;
use amalgam_server::campaign::{
    self, CampaignError, CampaignRules, GiveUpFuture, ReRunEnd, ReRunFuture, ReRuns,
};
use amalgam_server::events::MemoryStore;
use common::Fixture;

const INITIAL: [f32; 2] = [1.0, -2.0];

/// model_{r+1} = model_r + sum[0] (elementwise): each result leaves its trace in the chain.
struct Rules;

impl CampaignRules for Rules {
    fn initial_digest(&self) -> [u8; 32] {
        model_digest(&INITIAL)
    }
    fn model_len(&self) -> usize {
        INITIAL.len()
    }
    fn rounds(&self) -> u64 {
        3
    }
    fn max_round(&self) -> u64 {
        20
    }
    fn next_model(
        &self,
        _round: u64,
        model: &[f32],
        result: &AggregateOutput,
    ) -> Result<Vec<f32>, String> {
        let step = result.sum.first().copied().unwrap_or(0) as f32;
        Ok(model.iter().map(|v| v + step).collect())
    }
}

/// Re-runs the test opens and ends by hand; `give_up` is atomic under one lock, as the
/// aggregator's opener is.
struct Manual {
    state: Mutex<ManualState>,
    open_wait: Duration,
}

#[derive(Default)]
struct ManualState {
    opened: BTreeSet<u64>,
    ended: BTreeMap<u64, ReRunEnd>,
    given_up: BTreeSet<u64>,
    /// The re-runs' storage failed: every call errs.
    failed: bool,
}

impl Manual {
    fn new(open_wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            open_wait,
        })
    }
    fn open(&self, round: u64) {
        let mut s = self.state.lock().unwrap();
        assert!(!s.given_up.contains(&round), "opened a re-run given up");
        s.opened.insert(round);
    }
    fn end(&self, round: u64, end: ReRunEnd) {
        self.state.lock().unwrap().ended.insert(round, end);
    }
    fn given_up(&self) -> BTreeSet<u64> {
        self.state.lock().unwrap().given_up.clone()
    }
}

impl ReRuns for Manual {
    fn wait_end(&self, round: u64, wait: Duration) -> ReRunFuture<'_> {
        Box::pin(async move {
            let known = {
                let s = self.state.lock().unwrap();
                if s.failed {
                    return Err("storage failed".to_string());
                }
                // The give-up is durable, as the fallback log keeps it.
                s.ended
                    .get(&round)
                    .cloned()
                    .or_else(|| s.given_up.contains(&round).then_some(ReRunEnd::GivenUp))
            };
            if known.is_some() {
                return Ok(known);
            }
            tokio::time::sleep(wait.min(Duration::from_millis(20))).await;
            Ok(None)
        })
    }
    fn give_up(&self, round: u64) -> GiveUpFuture<'_> {
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            if s.failed {
                return Err("storage failed".to_string());
            }
            if s.opened.contains(&round) {
                return Ok(false);
            }
            s.given_up.insert(round);
            Ok(true)
        })
    }
    fn open_wait(&self) -> Duration {
        self.open_wait
    }
}

fn published(step: u64) -> ReRunEnd {
    ReRunEnd::Published {
        round: (1 << 32) + 1,
        output: AggregateOutput {
            sum: vec![step, 0],
            contributors: vec![SiteId(0), SiteId(1), SiteId(2), SiteId(3)],
            dropped: Vec::new(),
            blamed: Vec::new(),
        },
    }
}

fn service(fx: &Fixture, log: &MemoryStore) -> Service {
    Service::start(
        fx.consortium.clone(),
        Arc::new(log.clone()),
        Fixture::config(),
    )
    .unwrap()
}

/// Waits (at most 20 s) until `round` is in the service's log.
async fn opened(svc: &Service, round: u64) -> Instant {
    let start = Instant::now();
    while !svc.round_ids().contains(&round) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "round {round} never opened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Instant::now()
}

/// A fresh service running the campaign, which follows `reruns`, once round 0 is open.
async fn campaign_on(
    fx: &Fixture,
    reruns: &Arc<Manual>,
) -> (
    Service,
    tokio::task::JoinHandle<Result<campaign::Position, CampaignError>>,
) {
    let svc = service(fx, &MemoryStore::new());
    let rr: Arc<dyn ReRuns> = reruns.clone();
    let task = campaign::start_with(svc.clone(), Arc::new(Rules), INITIAL.to_vec(), Some(rr))
        .await
        .unwrap();
    opened(&svc, 0).await;
    (svc, task)
}

async fn bound(svc: &Service, round: u64) -> [u8; 32] {
    svc.with_round(round, |st| st.model_digest()).await.unwrap()
}

/// Round 1 is bound to model_0: aborted round 0's model carried over.
async fn assert_carried_over(svc: &Service) {
    assert_eq!(
        bound(svc, 1).await,
        model_digest(&INITIAL),
        "model_0 carried over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_that_never_opens_is_given_up_and_the_model_carries_over() {
    let fx = Fixture::new();
    let reruns = Manual::new(Duration::from_millis(300));
    let (svc, task) = campaign_on(&fx, &reruns).await;
    let aborted = Instant::now();
    svc.close_phase_now(0).await.unwrap();
    assert!(svc.round_status(0).await.unwrap().aborted.is_some());
    let next = opened(&svc, 1).await;
    assert!(
        next.duration_since(aborted) >= Duration::from_millis(300),
        "round 1 opened before the open wait ran out"
    );
    assert_eq!(reruns.given_up(), BTreeSet::from([0]));
    assert_carried_over(&svc).await;
    task.abort();
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_that_opened_is_waited_for_past_the_open_wait_and_gives_the_next_model() {
    let fx = Fixture::new();
    let reruns = Manual::new(Duration::from_millis(50));
    let (svc, task) = campaign_on(&fx, &reruns).await;
    reruns.open(0);
    svc.close_phase_now(0).await.unwrap();
    // Far past the open wait: an opened re-run is never given up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !svc.round_ids().contains(&1),
        "round 1 opened beside an open re-run"
    );
    assert!(reruns.given_up().is_empty());
    reruns.end(0, published(5));
    opened(&svc, 1).await;
    assert_eq!(
        bound(&svc, 1).await,
        model_digest(&[6.0, 3.0]),
        "model_1 from the re-run"
    );
    task.abort();
    svc.shutdown().await;
}

/// Round 0 aborted, round 1 opened on model_0 (the campaign gave the re-run up before it
/// opened): a restart recomputes that chain, and gives the re-run up so it never opens. Had
/// the re-run opened, round 1 forked the chain and the log is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_given_up_rerun_recomputes_the_carried_over_chain() {
    let fx = Fixture::new();
    let log = MemoryStore::new();
    let svc = service(&fx, &log);
    svc.open_round(0, model_digest(&INITIAL)).await.unwrap();
    svc.close_phase_now(0).await.unwrap();
    svc.open_round(1, model_digest(&INITIAL)).await.unwrap();
    svc.shutdown().await;
    drop(svc);

    let svc = service(&fx, &log);
    let never = Manual::new(Duration::from_secs(3600));
    let pos = campaign::resume_with(&svc, &Rules, INITIAL.to_vec(), Some(never.as_ref()))
        .await
        .unwrap();
    assert_eq!((pos.round, pos.opened, pos.rerun_pending), (1, true, None));
    assert_eq!(pos.model, INITIAL.to_vec());
    assert_eq!(never.given_up(), BTreeSet::from([0]));

    let open = Manual::new(Duration::from_secs(3600));
    open.open(0);
    let e = campaign::resume_with(&svc, &Rules, INITIAL.to_vec(), Some(open.as_ref()))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CampaignError::Chain(m) if m.contains("re-run of round 0 had not ended")),
        "{e}"
    );
    assert!(open.given_up().is_empty());
    svc.shutdown().await;
}

/// Round 0 aborted and the campaign gave its re-run up, then the aggregator crashed before
/// round 1 was logged. The give-up is durable: the restarted campaign does not wait for the
/// re-run again (the open wait here is an hour) and opens round 1 on model_0 at once; the
/// re-run stays given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_give_up_before_a_crash_is_kept_and_the_next_round_opens_at_once() {
    let fx = Fixture::new();
    let log = MemoryStore::new();
    let svc = service(&fx, &log);
    svc.open_round(0, model_digest(&INITIAL)).await.unwrap();
    svc.close_phase_now(0).await.unwrap();
    svc.shutdown().await;
    drop(svc);
    let reruns = Manual::new(Duration::from_secs(3600));
    assert!(reruns.give_up(0).await.unwrap());

    let svc = service(&fx, &log);
    let pos = campaign::resume_with(&svc, &Rules, INITIAL.to_vec(), Some(reruns.as_ref()))
        .await
        .unwrap();
    assert_eq!((pos.round, pos.opened, pos.rerun_pending), (1, false, None));
    assert_eq!(
        pos.completed, 0,
        "a given-up re-run is not a completed round"
    );
    let rr: Arc<dyn ReRuns> = reruns.clone();
    let task = tokio::spawn(campaign::run_with(
        svc.clone(),
        Arc::new(Rules),
        pos,
        Some(rr),
    ));
    opened(&svc, 1).await;
    assert_carried_over(&svc).await;
    task.abort();
    svc.shutdown().await;
}

/// The re-runs' storage fails while the campaign waits for the re-run of aborted round 0:
/// the campaign stops with an error (the aggregator exits and its restart replays the logs)
/// instead of waiting forever on a log that refuses everything, and opens no round 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_whose_reruns_storage_failed_stops_instead_of_waiting() {
    let fx = Fixture::new();
    let reruns = Manual::new(Duration::from_secs(3600));
    let (svc, task) = campaign_on(&fx, &reruns).await;
    svc.close_phase_now(0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    reruns.state.lock().unwrap().failed = true;
    let end = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the campaign kept waiting")
        .unwrap();
    assert!(
        matches!(&end, Err(CampaignError::Service(m)) if m.contains("storage failed")),
        "{end:?}"
    );
    assert!(!svc.round_ids().contains(&1), "round 1 opened");
    svc.shutdown().await;
}
