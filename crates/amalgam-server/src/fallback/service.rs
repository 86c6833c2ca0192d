//! The fallback rounds behind one async lock: every state change runs on the blocking pool,
//! its events are appended (one transaction) before the response leaves, and a round that
//! ends is crypto-shredded (its ciphertexts and releases; digests, statement and signatures
//! stay). If an append fails the service refuses everything until restarted (the log is the
//! truth), as the masking service does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use amalgam_net::fallback_api::FallbackResult;
use amalgam_net::{Problem, ProblemCode};
use amalgam_proto::SiteId;
use tokio::sync::{Mutex, watch};

use super::keys::CommitteeKeys;
use super::replay::replay;
use super::setup::FallbackSetups;
use super::state::{Accepted, FallbackRound};
use crate::consortium::ConsortiumView;
use crate::events::{EventStore, NewEvent, StoreFailure};
use crate::fault::fault_point;
use crate::round::Window;
use crate::service::{ServiceConfig, StartError, now_ms};

/// The fallback's event log: any [`EventStore`] (every event store can crypto-shred a round,
/// [`EventStore::shred_round`]); kept as its own name so the fallback's signatures say which
/// log they expect.
pub trait FallbackLog: EventStore {}

impl<T: EventStore + ?Sized> FallbackLog for T {}

type Rounds = BTreeMap<u64, FallbackRound>;

/// Everything behind the service's one lock: the rounds and the committee's certificates.
pub struct Locked {
    /// The fallback rounds.
    pub rounds: Rounds,
    /// The committee's key-period certificates.
    pub keys: CommitteeKeys,
    /// The fallback round ids whose re-run the campaign gave up: they never open.
    pub given_up: BTreeSet<u64>,
}

fn storage_failed() -> Problem {
    Problem::new(ProblemCode::ServerBusy, "storage failed; restart pending").retry_after(30)
}

struct Inner {
    consortium: Arc<dyn ConsortiumView>,
    setups: Arc<dyn FallbackSetups>,
    store: Arc<dyn FallbackLog>,
    rounds: Arc<Mutex<Locked>>,
    changed: watch::Sender<u64>,
    config: ServiceConfig,
    failed: Arc<AtomicBool>,
    accepted: std::sync::atomic::AtomicU64,
}

/// The aggregator's fallback service (cheap to clone).
#[derive(Clone)]
pub struct FallbackService(Arc<Inner>);

impl core::fmt::Debug for FallbackService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FallbackService").finish_non_exhaustive()
    }
}

fn internal() -> Problem {
    Problem::new(ProblemCode::Internal, "internal error")
}

fn given_up(round: u64) -> Problem {
    Problem::new(
        ProblemCode::RoundWrongPhase,
        format!("the campaign gave up fallback round {round} before it opened; it never opens"),
    )
}

fn unknown(round: u64) -> Problem {
    Problem::new(
        ProblemCode::RoundUnknown,
        format!("no fallback round {round}"),
    )
}

impl FallbackService {
    /// Replays the fallback log (refusing a tampered one), finishes the shredding of ended
    /// rounds, gives open rounds the restart grace and starts their deadline timers. Must run
    /// inside a tokio runtime.
    pub fn start(
        consortium: Arc<dyn ConsortiumView>,
        setups: Arc<dyn FallbackSetups>,
        store: Arc<dyn FallbackLog>,
        config: ServiceConfig,
    ) -> Result<Self, StartError> {
        let events = store.replay()?;
        let bounds = consortium.deadline_bounds();
        let digest = consortium.consortium_digest();
        let keys = CommitteeKeys::replay(consortium.verified(), &events)?;
        let replayed = replay(setups.as_ref(), &keys, bounds, &digest, &events)?;
        let (mut rounds, given_up) = (replayed.rounds, replayed.given_up);
        let grace = now_ms().saturating_add(config.restart_grace_seconds.saturating_mul(1000));
        for (r, st) in &mut rounds {
            if st.end().is_some() {
                store.shred_round(*r).map_err(StartError::Store)?;
            } else {
                st.extend_deadline(grace);
            }
        }
        let open: Vec<u64> = rounds
            .iter()
            .filter(|(_, s)| s.end().is_none())
            .map(|(r, _)| *r)
            .collect();
        let svc = Self(Arc::new(Inner {
            consortium,
            setups,
            store,
            rounds: Arc::new(Mutex::new(Locked {
                rounds,
                keys,
                given_up,
            })),
            changed: watch::channel(0).0,
            config,
            failed: Arc::new(AtomicBool::new(false)),
            accepted: std::sync::atomic::AtomicU64::new(0),
        }));
        for r in open {
            svc.spawn_timer(r);
        }
        Ok(svc)
    }

    fn phase_ms(&self) -> u64 {
        let b = self.0.consortium.deadline_bounds();
        self.0
            .config
            .phase_seconds
            .clamp(b.min_s, b.max_s.max(b.min_s))
            * 1000
    }

    fn next_window(&self) -> Window {
        let opened_ms = now_ms();
        Window {
            opened_ms,
            deadline_ms: opened_ms.saturating_add(self.phase_ms()),
        }
    }

    /// Opens fallback round `round` (refused unless the manifest's policy allows it and the id
    /// is a fallback id; a second open of the same id is refused). Private: the only way to
    /// open a fallback round is [`Self::open_rerun`], which first checks that the masking round
    /// aborted.
    async fn open_round(&self, round: u64) -> Result<(), Problem> {
        let window = self.next_window();
        let bounds = self.0.consortium.deadline_bounds();
        let setups = self.0.setups.clone();
        self.mutate_map(move |locked| {
            if locked.given_up.contains(&round) {
                return Err(given_up(round));
            }
            let rounds = &mut locked.rounds;
            if rounds.contains_key(&round) {
                return Err(Problem::new(
                    ProblemCode::PeerDuplicate,
                    format!("fallback round {round} exists"),
                ));
            }
            let (st, ev) =
                FallbackRound::open(setups.as_ref(), &locked.keys, bounds, round, window)
                    .map_err(|e| Problem::new(ProblemCode::BadRequest, e))?;
            rounds.insert(round, st);
            Ok(((), vec![ev]))
        })
        .await?;
        self.spawn_timer(round);
        Ok(())
    }

    /// Opens the fallback re-run of masking round `masking_round`, only once that round
    /// aborted (a masking round that finished, or is still running, is never re-run: two sums
    /// of one round would differ by their noise). The new round id is
    /// `FALLBACK_ROUND_BASE + masking_round`; the manifest's policy and the id range are checked
    /// again when the round opens. Refused once a later masking round exists: that round
    /// opened on model_r, and a re-run would then give a second model_{r+1}; refused as well
    /// once the campaign gave it up ([`Self::give_up_rerun`]), restarts included.
    pub async fn open_rerun(
        &self,
        masking: &crate::Service,
        masking_round: u64,
    ) -> Result<u64, Problem> {
        let round = amalgam_net::fallback_api::fallback_round_of(masking_round)
            .ok_or_else(|| Problem::new(ProblemCode::RoundWrongScheme, "not a masking round id"))?;
        let status = masking.round_status(masking_round).await?;
        if status.aborted.is_none() {
            return Err(Problem::new(
                ProblemCode::RoundWrongPhase,
                format!("masking round {masking_round} did not abort; it is not re-run"),
            ));
        }
        // A later masking round opened on model_r (the campaign gave this re-run up): a
        // re-run now would give a second model_{r+1} and fork the chain.
        if let Some(later) = masking
            .round_ids()
            .into_iter()
            .find(|&id| id > masking_round)
        {
            return Err(Problem::new(
                ProblemCode::RoundWrongPhase,
                format!(
                    "masking round {later} opened after round {masking_round} aborted; \
                     round {masking_round} is not re-run"
                ),
            ));
        }
        self.open_round(round).await?;
        Ok(round)
    }

    /// Gives up the re-run of aborted masking round `masking_round` unless it opened, under
    /// the lock every open takes: `Ok(true)`, the give-up is committed to the log before this
    /// returns (a restart reads it) and the re-run never opens; `Ok(false)`, the re-run
    /// opened and its end decides model_{r+1}. A second give-up logs nothing.
    pub async fn give_up_rerun(&self, masking_round: u64) -> Result<bool, Problem> {
        let round = amalgam_net::fallback_api::fallback_round_of(masking_round)
            .ok_or_else(|| Problem::new(ProblemCode::RoundWrongScheme, "not a masking round id"))?;
        self.mutate_map(move |locked| {
            if locked.rounds.contains_key(&round) {
                return Ok((false, Vec::new()));
            }
            if !locked.given_up.insert(round) {
                return Ok((true, Vec::new()));
            }
            Ok((true, vec![super::give_up::event(round)]))
        })
        .await
    }

    /// Whether the campaign gave up the re-run of masking round `masking_round`.
    pub async fn rerun_given_up(&self, masking_round: u64) -> Result<bool, Problem> {
        let Some(round) = amalgam_net::fallback_api::fallback_round_of(masking_round) else {
            return Ok(false);
        };
        self.with_locked(move |l| l.given_up.contains(&round)).await
    }

    /// Whether an append to the fallback log failed: the service refuses everything until
    /// the process restarts and replays the log.
    pub fn storage_failed(&self) -> bool {
        self.0.failed.load(Ordering::SeqCst)
    }

    /// Fresh (non-repeat) requests this process accepted: the fault points' counter.
    pub fn accepted(&self) -> u64 {
        self.0.accepted.load(Ordering::SeqCst)
    }

    /// Runs `f` under the lock on the blocking pool and queues its events on the log's
    /// chained path (`EventStore::queue_append`: a lost append poisons the log, so nothing
    /// that depends on it commits after it); the lock is held until the commit, so no request
    /// sees state the log may not hold. Runs on its own task: a caller that goes away cannot
    /// leave a lost append unnoticed.
    async fn mutate_map<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Locked) -> Result<(T, Vec<NewEvent>), Problem> + Send + 'static,
    ) -> Result<T, Problem> {
        if self.0.failed.load(Ordering::SeqCst) {
            return Err(storage_failed());
        }
        let svc = self.clone();
        tokio::spawn(async move { svc.mutate_task(f).await })
            .await
            .map_err(|_| internal())?
    }

    async fn mutate_task<T: Send + 'static>(
        self,
        f: impl FnOnce(&mut Locked) -> Result<(T, Vec<NewEvent>), Problem> + Send + 'static,
    ) -> Result<T, Problem> {
        let guard = self.0.rounds.clone().lock_owned().await;
        // Checked under the lock: a failed commit raises the flag before releasing it.
        if self.0.failed.load(Ordering::SeqCst) {
            return Err(storage_failed());
        }
        let store = self.0.store.clone();
        let k = self.accepted() + 1;
        let (guard, out) = tokio::task::spawn_blocking(move || {
            let mut g = guard;
            let out = f(&mut g).map(|(value, events)| {
                if events.is_empty() {
                    return (value, None, Vec::new());
                }
                let ended: Vec<u64> = events
                    .iter()
                    .filter(|e| e.kind == crate::events::EventKind::RoundEnd)
                    .map(|e| e.round)
                    .collect();
                fault_point("fallback-before-commit", k);
                (value, Some(store.queue_append(events)), ended)
            });
            (g, out)
        })
        .await
        .map_err(|_| internal())?;
        let (value, pending, ended) = out?;
        if let Some(pending) = pending {
            if let Err(e) = pending.await {
                // `f` mutated the state in place and the log does not hold it: the flag is
                // raised before the lock is released, so no request is ever answered from it;
                // the restart rebuilds from the log.
                self.0.failed.store(true, Ordering::SeqCst);
                drop(guard);
                tracing::error!(
                    error = %e,
                    "fallback log append failed; refusing all requests"
                );
                return Err(match e {
                    // An earlier append (of this log's other writer) was lost: this one
                    // never reached the disk, and a restart serves again.
                    StoreFailure::Poisoned(_) => storage_failed(),
                    _ => Problem::new(
                        ProblemCode::Internal,
                        "storage failure: nothing was accepted",
                    ),
                });
            }
            fault_point("fallback-after-commit", k);
            // The end is committed: shred the round's ciphertexts and releases now. A failure
            // here is finished at the next start (ended rounds are shredded).
            if !ended.is_empty() {
                let store = self.0.store.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for r in &ended {
                        if let Err(e) = store.shred_round(*r) {
                            tracing::error!(round = r, error = %e, "shredding failed; retried at the next start");
                        }
                    }
                })
                .await;
            }
        }
        drop(guard);
        self.0.changed.send_modify(|g| *g += 1);
        Ok(value)
    }

    async fn mutate<T: Send + 'static>(
        &self,
        round: u64,
        f: impl FnOnce(&mut FallbackRound, Window) -> Result<(T, Vec<NewEvent>), Problem>
        + Send
        + 'static,
    ) -> Result<T, Problem> {
        let next = self.next_window();
        self.mutate_map(move |locked| {
            let st = locked
                .rounds
                .get_mut(&round)
                .ok_or_else(|| unknown(round))?;
            f(st, next)
        })
        .await
    }

    fn count(&self, a: &Accepted) {
        if !a.events.is_empty() {
            self.0.accepted.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A site's signed upload; closes the cohort when an asynchronous round reaches its
    /// target.
    pub async fn upload(
        &self,
        round: u64,
        site: SiteId,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Problem> {
        let svc = self.clone();
        self.mutate(round, move |st, next| {
            let mut a = st.upload(site, &body)?;
            if !a.events.is_empty()
                && st.target_reached()
                && let Ok(close) = st.close(next, false)
            {
                a.events.extend(close);
            }
            svc.count(&a);
            Ok((a.response, a.events))
        })
        .await
    }

    /// A decryptor's statement signature.
    pub async fn signature(
        &self,
        round: u64,
        member: usize,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Problem> {
        let svc = self.clone();
        self.mutate(round, move |st, _| {
            let a = st.signature(member, &body)?;
            svc.count(&a);
            Ok((a.response, a.events))
        })
        .await
    }

    /// A decryptor's piece-sum release.
    pub async fn release(
        &self,
        round: u64,
        member: usize,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Problem> {
        let svc = self.clone();
        self.mutate(round, move |st, _| {
            let a = st.release(member, &body)?;
            svc.count(&a);
            Ok((a.response, a.events))
        })
        .await
    }

    /// Closes the cohort (or aborts the round) as its deadline does: operator action and the
    /// timer's.
    pub async fn close_now(&self, round: u64) -> Result<(), Problem> {
        self.mutate(round, |st, next| {
            let ev = st
                .close(next, true)
                .map_err(|e| Problem::new(ProblemCode::RoundWrongPhase, e))?;
            Ok(((), ev))
        })
        .await
    }

    /// Runs `f` on `round` under the lock.
    pub async fn with_round<T>(
        &self,
        round: u64,
        f: impl FnOnce(&FallbackRound) -> T,
    ) -> Result<T, Problem> {
        let g = self.0.rounds.lock().await;
        // Checked under the lock: a failed commit raises the flag before releasing it.
        if self.0.failed.load(Ordering::SeqCst) {
            return Err(storage_failed());
        }
        g.rounds.get(&round).map(f).ok_or_else(|| unknown(round))
    }

    /// Runs `f` on everything behind the lock (reads only).
    async fn with_locked<T>(&self, f: impl FnOnce(&Locked) -> T) -> Result<T, Problem> {
        let g = self.0.rounds.lock().await;
        if self.0.failed.load(Ordering::SeqCst) {
            return Err(storage_failed());
        }
        Ok(f(&g))
    }

    /// A decryptor's key-period certificate (`poster`: its authenticated identity key),
    /// checked against the manifest and committed before the answer.
    pub async fn post_committee_key(
        &self,
        poster: [u8; 32],
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Problem> {
        let consortium = self.0.consortium.clone();
        self.mutate_map(move |locked| {
            let a = locked.keys.post(consortium.verified(), &poster, &body)?;
            Ok((a.response, a.events))
        })
        .await
    }

    /// Every stored certificate of key period `period`, framed, in member order.
    pub async fn committee_keys(&self, period: u64) -> Result<Vec<u8>, Problem> {
        self.with_locked(|l| l.keys.period(period)).await
    }

    /// The stored certificates of key period `period`, decoded.
    pub async fn committee_certificates(
        &self,
        period: u64,
    ) -> Result<Vec<amalgam_consortium::period_key::PeriodCertificate>, Problem> {
        self.with_locked(|l| l.keys.certificates(period)).await
    }

    /// A site's signed ledger summary after fallback round `round` (accepted also after the
    /// round ended), its entry count not below the site's previous fallback summary.
    pub async fn site_summary(
        &self,
        round: u64,
        site: SiteId,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Problem> {
        let digest = self.0.consortium.consortium_digest();
        self.mutate_map(move |locked| {
            let min = locked
                .rounds
                .values()
                .filter_map(|st| st.summary_entries(site))
                .max()
                .unwrap_or(0);
            let st = locked
                .rounds
                .get_mut(&round)
                .ok_or_else(|| unknown(round))?;
            let a = st.site_summary(site, &body, &digest, min)?;
            Ok((a.response, a.events))
        })
        .await
    }

    /// `site`'s stored summaries of fallback rounds, by round.
    pub async fn anchors(&self, site: SiteId) -> Result<Vec<(u64, Vec<u8>)>, Problem> {
        self.with_locked(|l| {
            l.rounds
                .iter()
                .filter_map(|(r, st)| st.summary_of(site).map(|b| (*r, b.to_vec())))
                .collect()
        })
        .await
    }

    /// Waits up to `wait` for `ready` to accept the round.
    pub async fn wait_for<T>(
        &self,
        round: u64,
        wait: Duration,
        ready: impl Fn(&FallbackRound) -> Option<T>,
    ) -> Result<Option<T>, Problem> {
        let mut rx = self.0.changed.subscribe();
        let until = tokio::time::Instant::now() + wait;
        loop {
            if let Some(v) = self.with_round(round, &ready).await? {
                return Ok(Some(v));
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => return Ok(None),
                r = rx.changed() => if r.is_err() { return Ok(None); },
            }
        }
    }

    /// The result, waiting up to `wait`.
    pub async fn result(
        &self,
        round: u64,
        wait: Duration,
    ) -> Result<Option<FallbackResult>, Problem> {
        self.wait_for(round, wait, |st| st.result().cloned()).await
    }

    fn spawn_timer(&self, round: u64) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.0);
        handle.spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let svc = FallbackService(inner);
                let mut rx = svc.0.changed.subscribe();
                let Ok((generation, deadline, ended)) = svc
                    .with_round(round, |s| (s.generation(), s.window().deadline_ms, s.end().is_some()))
                    .await
                else {
                    return;
                };
                if ended {
                    return;
                }
                let wait = Duration::from_millis(deadline.saturating_sub(now_ms()));
                drop(svc);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {
                        let Some(inner) = weak.upgrade() else { return };
                        let svc = FallbackService(inner);
                        let same = svc.with_round(round, |s| s.generation()).await.ok() == Some(generation);
                        if same {
                            tracing::info!(round, "fallback deadline reached");
                            let _ = svc.close_now(round).await;
                        }
                    }
                    r = rx.changed() => if r.is_err() { return; },
                }
            }
        });
    }
}
