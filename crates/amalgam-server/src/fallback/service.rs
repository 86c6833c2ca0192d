//! The fallback rounds behind one async lock: every state change runs on the blocking pool,
//! its events are appended (one transaction) before the response leaves, and a round that
//! ends is crypto-shredded (its ciphertexts and releases; digests, statement and signatures
//! stay). If an append fails the service refuses everything until restarted (the log is the
//! truth), as the masking service does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use amalgam_net::fallback_api::FallbackResult;
use amalgam_net::{Problem, ProblemCode};
use amalgam_proto::SiteId;
use tokio::sync::{Mutex, watch};

use super::replay::replay;
use super::setup::FallbackSetups;
use super::state::{Accepted, FallbackRound};
use crate::consortium::ConsortiumView;
use crate::events::{EventStore, NewEvent};
use crate::fault::fault_point;
use crate::round::Window;
use crate::service::{ServiceConfig, StartError, now_ms};

/// The fallback's event log: any [`EventStore`] (every event store can crypto-shred a round,
/// [`EventStore::shred_round`]); kept as its own name so the fallback's signatures say which
/// log they expect.
pub trait FallbackLog: EventStore {}

impl<T: EventStore + ?Sized> FallbackLog for T {}

type Rounds = BTreeMap<u64, FallbackRound>;

struct Inner {
    consortium: Arc<dyn ConsortiumView>,
    setups: Arc<dyn FallbackSetups>,
    store: Arc<dyn FallbackLog>,
    rounds: Arc<Mutex<Rounds>>,
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
        let mut rounds = replay(setups.as_ref(), bounds, &events)?;
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
            rounds: Arc::new(Mutex::new(rounds)),
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
        self.mutate_map(move |rounds| {
            if rounds.contains_key(&round) {
                return Err(Problem::new(
                    ProblemCode::PeerDuplicate,
                    format!("fallback round {round} exists"),
                ));
            }
            let (st, ev) = FallbackRound::open(setups.as_ref(), bounds, round, window)
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
    /// `FALLBACK_ROUND_BASE + masking_round`; the manifest's policy and the id range are checked again when the round opens.
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
        self.open_round(round).await?;
        Ok(round)
    }

    /// Fresh (non-repeat) requests this process accepted: the fault points' counter.
    pub fn accepted(&self) -> u64 {
        self.0.accepted.load(Ordering::SeqCst)
    }

    async fn mutate_map<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Rounds) -> Result<(T, Vec<NewEvent>), Problem> + Send + 'static,
    ) -> Result<T, Problem> {
        if self.0.failed.load(Ordering::SeqCst) {
            return Err(
                Problem::new(ProblemCode::ServerBusy, "storage failed; restart pending")
                    .retry_after(30),
            );
        }
        let guard = self.0.rounds.clone().lock_owned().await;
        let store = self.0.store.clone();
        let k = self.accepted() + 1;
        let failed = self.0.failed.clone();
        let out: Result<Result<(T, Vec<u64>), Problem>, String> =
            tokio::task::spawn_blocking(move || {
                let mut g = guard;
                let (value, events) = match f(&mut g) {
                    Ok(v) => v,
                    Err(p) => return Ok(Err(p)),
                };
                if events.is_empty() {
                    return Ok(Ok((value, Vec::new())));
                }
                let ended: Vec<u64> = events
                    .iter()
                    .filter(|e| e.kind == crate::events::EventKind::RoundEnd)
                    .map(|e| e.round)
                    .collect();
                fault_point("fallback-before-commit", k);
                // `f` mutated the rounds in place. If the commit fails they hold state the log
                // does not: the flag is raised before the lock is released, so no request (read
                // or write) is ever answered from it; the restart rebuilds from the log.
                if let Err(e) = store.append_batch(events) {
                    failed.store(true, Ordering::SeqCst);
                    return Err(e.to_string());
                }
                fault_point("fallback-after-commit", k);
                // The end is committed: shred the round's ciphertexts and releases now. A
                // failure here is finished at the next start (ended rounds are shredded).
                for r in &ended {
                    if let Err(e) = store.shred_round(*r) {
                        tracing::error!(round = r, error = %e, "shredding failed; retried at the next start");
                    }
                }
                Ok(Ok((value, ended)))
            })
            .await
            .map_err(|_| internal())?;
        match out {
            Ok(Ok((v, _))) => {
                self.0.changed.send_modify(|g| *g += 1);
                Ok(v)
            }
            Ok(Err(p)) => Err(p),
            Err(e) => {
                self.0.failed.store(true, Ordering::SeqCst);
                tracing::error!(
                    error = e,
                    "fallback log append failed; refusing all requests"
                );
                Err(Problem::new(
                    ProblemCode::Internal,
                    "storage failure: nothing was accepted",
                ))
            }
        }
    }

    async fn mutate<T: Send + 'static>(
        &self,
        round: u64,
        f: impl FnOnce(&mut FallbackRound, Window) -> Result<(T, Vec<NewEvent>), Problem>
        + Send
        + 'static,
    ) -> Result<T, Problem> {
        let next = self.next_window();
        self.mutate_map(move |rounds| {
            let st = rounds.get_mut(&round).ok_or_else(|| unknown(round))?;
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
            return Err(
                Problem::new(ProblemCode::ServerBusy, "storage failed; restart pending")
                    .retry_after(30),
            );
        }
        g.get(&round).map(f).ok_or_else(|| unknown(round))
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
