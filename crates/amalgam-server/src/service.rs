//! The aggregator service: rounds behind async locks, protocol work on a bounded blocking
//! pool, persistence before every response, long-poll notifications and deadline timers.
//!
//! Every state change runs in one closure on the blocking pool while the round's lock is
//! held: mutate, queue the produced events in the log (fixing their place in its order) and
//! take the round's next commit ticket; the lock is released before the commit is awaited,
//! so the concurrent uploads of a phase share one group commit instead of queueing one
//! behind the other. The answer leaves once the ticket is committed. Every read (a download,
//! a status, the result, an identical re-send's stored response, even a refusal) first waits
//! until the tickets of the state it observed are committed, so nothing uncommitted is ever
//! shown. If an append is lost the service stops answering anything (fail-stop, 503): the
//! in-memory state is ahead of the log, the log refuses every later append (poisoned), and a
//! restart rebuilds the state from the log, which is the truth.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amalgam_net::api::{RoundResult, RoundStatus, ServiceStatus};
use amalgam_net::{Problem, ProblemCode};
use amalgam_proto::{Phase, SiteId};
use tokio::sync::{Mutex, Semaphore, watch};

use crate::consortium::ConsortiumView;
use crate::events::{EventStore, NewEvent};
use crate::fault::fault_point;
use crate::metrics::Metrics;
use crate::model::ModelChain;
use crate::replay::{ReplayError, replay};
use crate::round::{Accepted, DownloadView, RoundEnd, RoundState, Window};

/// Current UTC time, Unix milliseconds (deadlines are absolute UTC instants; waiting on them
/// uses tokio's monotonic timers).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Operator settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Length of every phase, seconds (clamped into the manifest's bounds).
    pub phase_seconds: u64,
    /// Extra time an open phase gets after a restart, seconds.
    pub restart_grace_seconds: u64,
    /// Protocol workers (default: the core count).
    pub workers: usize,
    /// Requests allowed to wait for a worker before 503 `server.busy`.
    pub queue: usize,
    /// Per-site metric labels.
    pub metrics_site_labels: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            phase_seconds: 300,
            restart_grace_seconds: 60,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue: 256,
            metrics_site_labels: false,
        }
    }
}

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The log could not be read or is tampered.
    #[error(transparent)]
    Store(#[from] crate::events::StoreFailure),
    /// The log does not replay.
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// An append a mutation queued: its commit, whether it ended the round, and the fault points'
/// counter before it.
struct Queued {
    pending: crate::events::PendingAppend,
    ended: bool,
    k: u64,
}

/// A mutation's value, the append it queued, and the phase it closed with its survivors.
type Mutated<T> = (T, Option<Queued>, Option<(Phase, u32)>);

/// What the locked part of a mutation gives back: its outcome (a refusal changed nothing)
/// and the round's commit ticket the answer must wait for.
type Mutation<T> = (Result<Mutated<T>, Problem>, u64);

struct Slot {
    state: Arc<Mutex<RoundState>>,
    changed: watch::Sender<u64>,
    opened_at: std::time::Instant,
    /// Commit tickets: the number of appends queued for this round, moved only under the
    /// state's lock together with the change the append records, so a reader holding the
    /// lock learns which ticket the state it sees needs.
    queued: AtomicU64,
    /// The highest ticket whose commit is confirmed (appends of one round commit in queue
    /// order, and a lost one fails the service, so every lower ticket is committed too).
    committed: watch::Sender<u64>,
}

impl Slot {
    /// The ticket the current state needs; call with the state's lock held.
    fn observed(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }
}

struct Inner {
    consortium: Arc<dyn ConsortiumView>,
    store: Arc<dyn EventStore>,
    rounds: RwLock<BTreeMap<u64, Arc<Slot>>>,
    workers: Arc<Semaphore>,
    admission: Arc<Semaphore>,
    metrics: Metrics,
    config: ServiceConfig,
    failed: AtomicBool,
    accepted_uploads: AtomicU64,
    timers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    chain: RwLock<ModelChain>,
    /// Each site's ledger entry count in its latest accepted summary (summaries may not
    /// regress).
    summary_entries: std::sync::Mutex<BTreeMap<u16, u64>>,
}

/// The aggregator service (cheap to clone).
#[derive(Clone)]
pub struct Service(Arc<Inner>);

impl core::fmt::Debug for Service {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

fn busy() -> Problem {
    Problem::new(ProblemCode::ServerBusy, "too many requests in flight").retry_after(1)
}

impl Service {
    /// Replays the log into fresh rounds (refusing a tampered one), gives open phases the
    /// restart grace and starts their deadline timers. Must run inside a tokio runtime.
    pub fn start(
        consortium: Arc<dyn ConsortiumView>,
        store: Arc<dyn EventStore>,
        config: ServiceConfig,
    ) -> Result<Self, StartError> {
        let events = store.replay()?;
        let mut rounds = replay(consortium.as_ref(), &events)?;
        let mut summary_entries = BTreeMap::new();
        for e in events
            .iter()
            .filter(|e| e.kind == crate::events::EventKind::Summary)
        {
            if let Some(site) = e.sender.and_then(|s| u16::try_from(s).ok())
                && let Some(n) = rounds
                    .get(&e.round)
                    .and_then(|st| st.summary_entries(SiteId(site)))
            {
                summary_entries.insert(site, n);
            }
        }
        let grace = now_ms().saturating_add(config.restart_grace_seconds.saturating_mul(1000));
        let mut slots = BTreeMap::new();
        let mut chain = ModelChain::new();
        for (r, mut st) in std::mem::take(&mut rounds) {
            if st.end().is_none() {
                st.extend_deadline(grace);
            } else if !st.is_shredded() {
                // Ended before a crash let it be shredded: the result is in the log.
                shred(store.as_ref(), &mut st);
            }
            let _ = chain.set(r, st.model_digest());
            slots.insert(r, Arc::new(Self::slot(st)));
        }
        let inner = Inner {
            consortium,
            store,
            rounds: RwLock::new(slots),
            workers: Arc::new(Semaphore::new(config.workers.max(1))),
            admission: Arc::new(Semaphore::new(config.workers.max(1) + config.queue)),
            metrics: Metrics::new(config.metrics_site_labels),
            config,
            failed: AtomicBool::new(false),
            accepted_uploads: AtomicU64::new(0),
            timers: std::sync::Mutex::new(Vec::new()),
            chain: RwLock::new(chain),
            summary_entries: std::sync::Mutex::new(summary_entries),
        };
        let svc = Service(Arc::new(inner));
        for slot in svc.slots() {
            svc.spawn_timer(slot);
        }
        Ok(svc)
    }

    fn slot(st: RoundState) -> Slot {
        Slot {
            state: Arc::new(Mutex::new(st)),
            changed: watch::channel(0).0,
            opened_at: std::time::Instant::now(),
            queued: AtomicU64::new(0),
            committed: watch::channel(0).0,
        }
    }

    /// The refusal of every request once an append was lost.
    fn storage_failed() -> Problem {
        Problem::new(ProblemCode::ServerBusy, "storage failed; restart pending").retry_after(30)
    }

    /// Waits until `ticket` of `slot` is committed: what a reader observed at that ticket
    /// may then leave. 503 once the service failed (an append was lost), whatever was
    /// observed: the state in memory may be ahead of the log.
    async fn committed(&self, slot: &Slot, ticket: u64) -> Result<(), Problem> {
        let mut rx = slot.committed.subscribe();
        loop {
            if self.0.failed.load(Ordering::SeqCst) {
                return Err(Self::storage_failed());
            }
            if *rx.borrow_and_update() >= ticket {
                return Ok(());
            }
            if rx.changed().await.is_err() {
                return Err(internal());
            }
        }
    }

    fn slots(&self) -> Vec<Arc<Slot>> {
        self.0
            .rounds
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn get(&self, round: u64) -> Result<Arc<Slot>, Problem> {
        self.0
            .rounds
            .read()
            .ok()
            .and_then(|m| m.get(&round).cloned())
            .ok_or_else(|| Problem::new(ProblemCode::RoundUnknown, format!("no round {round}")))
    }

    /// Uploads this process accepted (fresh ones, not identical re-sends): the fault
    /// points' counter.
    pub fn accepted_uploads(&self) -> u64 {
        self.0.accepted_uploads.load(Ordering::SeqCst)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The consortium.
    pub fn consortium(&self) -> &dyn ConsortiumView {
        self.0.consortium.as_ref()
    }

    fn phase_ms(&self) -> u64 {
        let b = self.0.consortium.deadline_bounds();
        self.0
            .config
            .phase_seconds
            .clamp(b.min_s, b.max_s.max(b.min_s))
            * 1000
    }

    /// A phase opening now: its window, the phase length clamped into the bounds.
    fn next_window(&self) -> Window {
        let opened_ms = now_ms();
        Window {
            opened_ms,
            deadline_ms: opened_ms.saturating_add(self.phase_ms()),
        }
    }

    /// Opens `round` for `model_digest` (from the `ModelChain`).
    /// Ids at or above `FALLBACK_ROUND_BASE` are refused: they belong to the fallback scheme,
    /// and a masking round and a fallback round must never share an id (two sums under one
    /// round id would share noise).
    pub async fn open_round(&self, round: u64, model_digest: [u8; 32]) -> Result<(), Problem> {
        if amalgam_net::fallback_api::is_fallback_round(round) {
            return Err(Problem::new(
                ProblemCode::RoundWrongScheme,
                format!(
                    "round {round} is a fallback round id (at or above 2^32); masking rounds use ids below"
                ),
            ));
        }
        let deadline = self.next_window();
        let (state, event) =
            RoundState::open(self.0.consortium.as_ref(), round, model_digest, deadline)
                .map_err(|e| Problem::new(ProblemCode::BadRequest, e))?;
        {
            let m = self.0.rounds.read().map_err(|_| internal())?;
            if m.contains_key(&round) {
                return Err(Problem::new(
                    ProblemCode::PeerDuplicate,
                    format!("round {round} exists"),
                ));
            }
        }
        self.0
            .chain
            .read()
            .map_err(|_| internal())?
            .check(round, &model_digest)
            .map_err(|e| Problem::new(ProblemCode::BadRequest, e))?;
        if self.0.failed.load(Ordering::SeqCst) {
            return Err(Self::storage_failed());
        }
        self.0
            .store
            .queue_append(vec![event])
            .await
            .map_err(|e| self.fail(&e.to_string()))?;
        // Only once the open is in the log: a failed append leaves no digest fixed in memory.
        self.0
            .chain
            .write()
            .map_err(|_| internal())?
            .set(round, model_digest)
            .map_err(|e| Problem::new(ProblemCode::BadRequest, e))?;
        let slot = Arc::new(Self::slot(state));
        self.0
            .rounds
            .write()
            .map_err(|_| internal())?
            .insert(round, slot.clone());
        self.spawn_timer(slot);
        Ok(())
    }

    fn fail(&self, why: &str) -> Problem {
        self.0.failed.store(true, Ordering::SeqCst);
        // Wake every reader waiting for a commit: it answers 503 now.
        for slot in self.slots() {
            slot.committed.send_modify(|_| {});
        }
        tracing::error!(
            error = why,
            "event log append failed; refusing all requests until restart"
        );
        Problem::new(
            ProblemCode::Internal,
            "storage failure: nothing was accepted",
        )
    }

    /// Runs `f` on the round under its lock on the worker pool, persists the events it
    /// returns, then notifies waiters. Refusals are counted in the metrics.
    async fn mutate<T: Send + 'static>(
        &self,
        round: u64,
        f: impl FnOnce(&mut RoundState, Window) -> Result<(T, Vec<NewEvent>), Problem> + Send + 'static,
    ) -> Result<T, Problem> {
        let r = self.mutate_inner(round, f).await;
        if let Err(p) = &r {
            self.0.metrics.reject(p.code);
        }
        r
    }

    async fn mutate_inner<T: Send + 'static>(
        &self,
        round: u64,
        f: impl FnOnce(&mut RoundState, Window) -> Result<(T, Vec<NewEvent>), Problem> + Send + 'static,
    ) -> Result<T, Problem> {
        if self.0.failed.load(Ordering::SeqCst) {
            return Err(Self::storage_failed());
        }
        let slot = self.get(round)?;
        let _queued = self
            .0
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy())?;
        let worker = self
            .0
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| busy())?;
        let guard = slot.state.clone().lock_owned().await;
        let store = self.0.store.clone();
        let next_deadline = self.next_window();
        let k = self.0.accepted_uploads.load(Ordering::SeqCst);
        let under_lock = slot.clone();
        // Runs under the round's lock (released when the closure returns): the mutation, and
        // for one that produced events, their place in the log and the round's next ticket.
        let out: Mutation<T> = tokio::task::spawn_blocking(move || {
            let mut g = guard;
            let before = g.phase();
            let (value, events) = match f(&mut g, next_deadline) {
                Ok(v) => v,
                Err(p) => return (Err(p), under_lock.observed()),
            };
            // A close happened: the closed phase's survivors are the next phase's expected.
            let closed = (g.phase() != before).then(|| (before, g.status().expected));
            if events.is_empty() {
                return (Ok((value, None, closed)), under_lock.observed());
            }
            let ended = g.end().is_some() && !g.is_shredded();
            fault_point("before-commit", k + 1);
            let pending = store.queue_append(events);
            let ticket = under_lock.queued.fetch_add(1, Ordering::SeqCst) + 1;
            (
                Ok((value, Some(Queued { pending, ended, k }), closed)),
                ticket,
            )
        })
        .await
        .map_err(|_| internal())?;
        // Waiting for a commit takes no protocol worker.
        drop(worker);
        let (result, ticket) = out;
        let (value, queued, closed) = match result {
            Ok(v) => v,
            Err(p) => {
                self.committed(&slot, ticket).await?;
                return Err(p);
            }
        };
        match queued {
            // Awaited on its own task: a caller that goes away (a dropped connection) cannot
            // leave the ticket unconfirmed or a lost append unnoticed.
            Some(q) => tokio::spawn(self.clone().confirm(slot.clone(), ticket, q))
                .await
                .map_err(|_| internal())??,
            None => self.committed(&slot, ticket).await?,
        }
        if let Some((phase, survivors)) = closed
            && let Some(seg) = amalgam_net::api::phase_segment(phase)
        {
            self.0
                .metrics
                .survivors
                .get_or_create(&crate::metrics::PhaseLabel {
                    phase: seg.to_owned(),
                })
                .set(i64::from(survivors));
        }
        Ok(value)
    }

    /// Awaits the commit of a queued append: then confirms its ticket, notifies the round's
    /// waiters and, for the append that ended the round, crypto-shreds it; if it was lost,
    /// fails the service.
    async fn confirm(self, slot: Arc<Slot>, ticket: u64, q: Queued) -> Result<(), Problem> {
        if let Err(e) = q.pending.await {
            return Err(self.fail(&e.to_string()));
        }
        crate::fault::after_commit(q.k + 1).await;
        slot.committed.send_modify(|c| *c = (*c).max(ticket));
        slot.changed.send_modify(|v| *v += 1);
        if q.ended {
            // The result is persisted: the round's secret bodies are not needed any more,
            // and are erased for good.
            let guard = slot.state.clone().lock_owned().await;
            let store = self.0.store.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let mut g = guard;
                if !g.is_shredded() {
                    shred(store.as_ref(), &mut g);
                }
            })
            .await;
        }
        Ok(())
    }

    /// An upload; closes the phase at once when every expected site has answered.
    pub async fn upload(
        &self,
        round: u64,
        site: SiteId,
        phase: Phase,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Problem> {
        Ok(self.upload_counted(round, site, phase, body).await?.0)
    }

    /// [`Service::upload`], also returning the fault points' counter for it: this upload's
    /// number among those this process accepted (or, for an identical re-send, the count so
    /// far). The count moves under the round's lock, together with the upload, so that the
    /// k of `before-commit`, `after-commit` and `after-response` name one upload each
    /// whatever the concurrency (a count taken after the lock was released could skip a k).
    pub async fn upload_counted(
        &self,
        round: u64,
        site: SiteId,
        phase: Phase,
        body: Vec<u8>,
    ) -> Result<(Vec<u8>, u64), Problem> {
        let len = body.len() as u64;
        let inner = self.0.clone();
        let r = self
            .mutate(round, move |st, next| {
                let Accepted {
                    response,
                    mut events,
                } = st.upload(site, phase, &body)?;
                if !events.is_empty() && st.all_answered() {
                    // Not enough valid sites yet is impossible when all answered; any other
                    // failure waits for the deadline (nothing changed).
                    if let Ok(close) = st.close(next, false) {
                        events.extend(close);
                    }
                }
                let fresh = !events.is_empty();
                let k = if fresh {
                    inner.accepted_uploads.fetch_add(1, Ordering::SeqCst) + 1
                } else {
                    inner.accepted_uploads.load(Ordering::SeqCst)
                };
                Ok(((response, fresh, k), events))
            })
            .await;
        let (response, fresh, k) = r?;
        if fresh {
            self.0.metrics.bytes_in.inc_by(len);
            if let Some(f) = &self.0.metrics.uploads_by_site {
                f.get_or_create(&crate::metrics::SiteLabel {
                    site: site.0.to_string(),
                })
                .inc();
            }
        }
        Ok((response, k))
    }

    /// A signed decline.
    pub async fn decline(
        &self,
        round: u64,
        site: SiteId,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Problem> {
        self.mutate(round, move |st, next| {
            let Accepted {
                response,
                mut events,
            } = st.decline(site, &body)?;
            if !events.is_empty()
                && st.all_answered()
                && let Ok(close) = st.close(next, false)
            {
                events.extend(close);
            }
            Ok((response, events))
        })
        .await
    }

    /// A signed ledger summary.
    pub async fn summary(
        &self,
        round: u64,
        site: SiteId,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Problem> {
        let digest = self.0.consortium.consortium_digest();
        let min = self
            .0
            .summary_entries
            .lock()
            .map_err(|_| internal())?
            .get(&site.0)
            .copied()
            .unwrap_or(0);
        let (response, entries) = self
            .mutate(round, move |st, _| {
                let a = st.summary(site, &body, &digest, min)?;
                let entries = (!a.events.is_empty())
                    .then(|| st.summary_entries(site))
                    .flatten();
                Ok(((a.response, entries), a.events))
            })
            .await?;
        if let Some(n) = entries
            && let Ok(mut m) = self.0.summary_entries.lock()
        {
            let e = m.entry(site.0).or_insert(0);
            *e = (*e).max(n);
        }
        Ok(response)
    }

    /// Closes the open phase of `round` as its deadline does (operator action, and the
    /// timer's): with whoever answered, aborting the round if it cannot continue.
    pub async fn close_phase_now(&self, round: u64) -> Result<(), Problem> {
        self.mutate(round, |st, next| {
            let events = st
                .close(next, true)
                .map_err(|e| Problem::new(ProblemCode::ProtocolRefused, e.to_string()))?;
            Ok(((), events))
        })
        .await?;
        self.record_end(round).await;
        Ok(())
    }

    async fn record_end(&self, round: u64) {
        if let Ok(slot) = self.get(round) {
            let st = slot.state.lock().await;
            if st.end().is_some() {
                self.0
                    .metrics
                    .round_seconds
                    .observe(slot.opened_at.elapsed().as_secs_f64());
            }
        }
    }

    fn spawn_timer(&self, slot: Arc<Slot>) {
        let svc = self.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = handle.spawn(async move {
            let mut rx = slot.changed.subscribe();
            loop {
                let (generation, deadline, round, ended) = {
                    let st = slot.state.lock().await;
                    (st.generation(), st.deadline_ms(), st.round(), st.end().is_some())
                };
                if ended {
                    return;
                }
                let wait = Duration::from_millis(deadline.saturating_sub(now_ms()));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {
                        let same = slot.state.lock().await.generation() == generation;
                        if same {
                            tracing::info!(round, "phase deadline reached; closing with the sites that answered");
                            let _ = svc.close_phase_now(round).await;
                        }
                    }
                    r = rx.changed() => if r.is_err() { return; },
                }
            }
        });
        if let Ok(mut t) = self.0.timers.lock() {
            t.retain(|h| !h.is_finished());
            t.push(task);
        }
    }

    /// Stops the deadline timers and waits until they are gone, so that dropping the last
    /// handle of the service releases the event log (and its lock).
    pub async fn shutdown(&self) {
        let timers = self
            .0
            .timers
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in timers {
            t.abort();
            let _ = t.await;
        }
    }

    /// Waits up to `wait` for a change of `round` that `ready` accepts.
    async fn wait_for<T>(
        &self,
        round: u64,
        wait: Duration,
        ready: impl Fn(&RoundState) -> Option<T>,
    ) -> Result<Option<T>, Problem> {
        let slot = self.get(round)?;
        let mut rx = slot.changed.subscribe();
        let until = tokio::time::Instant::now() + wait;
        loop {
            let found = {
                let st = slot.state.lock().await;
                ready(&st).map(|v| (v, slot.observed()))
            };
            if let Some((v, ticket)) = found {
                self.committed(&slot, ticket).await?;
                return Ok(Some(v));
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => return Ok(None),
                r = rx.changed() => if r.is_err() { return Ok(None); },
            }
        }
    }

    /// The download of `phase` for `site`, waiting up to `wait` for the phase to close.
    /// Returns the view and the deadline of the phase now open.
    pub async fn download(
        &self,
        round: u64,
        site: SiteId,
        phase: Phase,
        wait: Duration,
    ) -> Result<(DownloadView, u64), Problem> {
        let r = self
            .wait_for(round, wait, |st| match st.download(site, phase) {
                DownloadView::NotYet => None,
                v => Some((v, st.deadline_ms())),
            })
            .await?;
        match r {
            Some(v) => Ok(v),
            None => {
                let d = self.with_round(round, RoundState::deadline_ms).await?;
                Ok((DownloadView::NotYet, d))
            }
        }
    }

    /// The result of `round`, waiting up to `wait`.
    pub async fn result(&self, round: u64, wait: Duration) -> Result<Option<RoundResult>, Problem> {
        self.wait_for(round, wait, |st| match st.end() {
            Some(RoundEnd::Finished(_)) => st.result(),
            Some(RoundEnd::Aborted(r)) => {
                tracing::debug!(
                    round = st.round(),
                    reason = r.as_str(),
                    "result of an aborted round"
                );
                None
            }
            None => None,
        })
        .await
    }

    /// Runs `f` on `round`'s state under its lock; the value is returned once the state it
    /// saw is committed.
    pub async fn with_round<T>(
        &self,
        round: u64,
        f: impl FnOnce(&RoundState) -> T,
    ) -> Result<T, Problem> {
        let slot = self.get(round)?;
        let (v, ticket) = {
            let st = slot.state.lock().await;
            (f(&st), slot.observed())
        };
        self.committed(&slot, ticket).await?;
        Ok(v)
    }

    /// The largest upload body of `phase` in `round`: a bound from the round's parameters,
    /// fixed (and committed) when the round opened, so it needs no commit wait. Read before
    /// an upload's body, it must not make the upload wait for other sites' commits.
    pub async fn max_upload(&self, round: u64, phase: Phase) -> Result<usize, Problem> {
        let slot = self.get(round)?;
        let st = slot.state.lock().await;
        Ok(st.max_upload(phase))
    }

    /// Status of one round.
    pub async fn round_status(&self, round: u64) -> Result<RoundStatus, Problem> {
        self.with_round(round, RoundState::status).await
    }

    /// Service status (each round's as committed; 503 once an append was lost).
    pub async fn status(&self) -> Result<ServiceStatus, Problem> {
        let mut rounds = Vec::new();
        for slot in self.slots() {
            let (status, ticket) = {
                let st = slot.state.lock().await;
                (st.status(), slot.observed())
            };
            self.committed(&slot, ticket).await?;
            rounds.push(status);
        }
        Ok(ServiceStatus {
            consortium_digest: hex::encode(self.0.consortium.consortium_digest()),
            epoch: self.0.consortium.epoch(),
            server_time_ms: now_ms(),
            rounds,
        })
    }

    /// Summaries of `site` across rounds (its anchors).
    pub async fn anchors(&self, site: SiteId) -> Result<Vec<(u64, Vec<u8>)>, Problem> {
        let mut out = Vec::new();
        for slot in self.slots() {
            let (found, ticket) = {
                let st = slot.state.lock().await;
                let found = st.summary_of(site).map(|s| (st.round(), s.to_vec()));
                (found, slot.observed())
            };
            self.committed(&slot, ticket).await?;
            out.extend(found);
        }
        Ok(out)
    }
}

/// Crypto-shreds an ended round in the log, then drops its secret bodies from memory. A
/// failure is logged and retried at the next start (the round stays readable meanwhile).
fn shred(store: &dyn EventStore, st: &mut RoundState) {
    match store.shred_round(st.round()) {
        Ok(()) => st.mark_shredded(),
        Err(e) => tracing::error!(round = st.round(), error = %e, "could not shred the round"),
    }
}

impl Service {
    /// Records round `round`'s model values (model_r) for the model route; the digest must
    /// be the one the round is (or will be) opened with.
    pub fn publish_model(&self, round: u64, values: &[f32]) -> Result<(), String> {
        self.0
            .chain
            .write()
            .map_err(|_| "model chain poisoned".to_string())?
            .set_model(round, values)
    }

    /// The canonical bytes of round `round`'s model, while held.
    pub fn model_bytes(&self, round: u64) -> Option<Arc<Vec<u8>>> {
        self.0.chain.read().ok()?.model_bytes(round)
    }

    /// The ids of every round the service knows, ascending. A poisoned lock still yields
    /// the map (a panicking writer leaves it whole): an empty answer would let "is there a
    /// later round?" checks fail open.
    pub fn round_ids(&self) -> Vec<u64> {
        self.0
            .rounds
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// Waits up to `wait` for `round` to end; its end once it has.
    pub async fn wait_end(&self, round: u64, wait: Duration) -> Result<Option<RoundEnd>, Problem> {
        self.wait_for(round, wait, |st| st.end().cloned()).await
    }
}

fn internal() -> Problem {
    Problem::new(ProblemCode::Internal, "internal error")
}
