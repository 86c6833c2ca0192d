//! The event log the server persists through: `amalgam-store`'s SQLite [`EventLogHandle`]
//! (hash-chained, single writer, lock file) behind the small [`EventStore`] trait, or
//! [`MemoryStore`], an in-process log for tests of the server's own logic.
//!
//! The server owns the meaning of events (spec `service.md` §7): a response leaves only after
//! the batch holding its message was appended.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

pub use amalgam_store::{Event, EventKind, NewEvent};

/// `Other` kind of a signed decline.
pub const KIND_DECLINE: u16 = 1;

/// The event as it was appended (for comparing a replayed decision with the log).
pub fn as_new(e: &Event) -> NewEvent {
    NewEvent {
        round: e.round,
        kind: e.kind,
        phase: e.phase,
        sender: e.sender,
        body: e.body.clone(),
        response: e.response.clone(),
    }
}

/// A storage failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreFailure {
    /// Another aggregator holds the log.
    #[error("event log is locked by another aggregator: {0}")]
    Locked(String),
    /// A stored row does not match its digest (or the chain).
    #[error("event log tampered at sequence {seq}: {reason}")]
    Tampered {
        /// The first bad row.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier chained append was lost: the log refuses every append until it is
    /// reopened (a restart).
    #[error("event log poisoned: {0}")]
    Poisoned(String),
    /// I/O or database failure.
    #[error("event log failure: {0}")]
    Io(String),
}

/// An append queued in the log's order, resolving once the transaction holding it committed
/// (to its sequence numbers) or was lost (to the failure).
pub type PendingAppend =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u64>, StoreFailure>> + Send>>;

/// The durable, append-only event log.
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` in one transaction; returns after it committed.
    fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, StoreFailure>;
    /// Queues `events` behind every append queued before (their place in the log is fixed
    /// when this returns) and resolves after their transaction committed. The caller acts on
    /// them before that, so the log must refuse every later append once a queued one is lost
    /// (the SQLite log poisons itself). This default appends at once, blocking.
    fn queue_append(&self, events: Vec<NewEvent>) -> PendingAppend {
        let r = self.append_batch(events);
        Box::pin(std::future::ready(r))
    }
    /// Every event, verified, in order (a shredded round's secret bodies come back empty,
    /// `shredded: true`).
    fn replay(&self) -> Result<Vec<Event>, StoreFailure>;
    /// Crypto-shreds `round`'s secret bodies (uploads, downloads, declines): their key is
    /// deleted, digests and the public record stay. Idempotent.
    fn shred_round(&self, round: u64) -> Result<(), StoreFailure>;
}

type Answer = tokio::sync::oneshot::Sender<Result<Vec<u64>, StoreFailure>>;

#[derive(Debug, Default)]
struct MemoryInner {
    events: Vec<Event>,
    claimed: bool,
    fail_appends: bool,
    /// Queued appends are held (not committed) until released: the commit latch.
    hold: bool,
    /// Held appends in queue order, with their callers' answers.
    held: Vec<(Vec<NewEvent>, Answer)>,
    /// Held appends were lost: queued appends are refused until the next claim (a reopen),
    /// as the SQLite log refuses them.
    poisoned: bool,
}

impl MemoryInner {
    fn commit(&mut self, events: Vec<NewEvent>) -> Vec<u64> {
        let mut ids = Vec::with_capacity(events.len());
        for e in events {
            let seq = self.events.len() as u64 + 1;
            self.events.push(Event {
                seq,
                round: e.round,
                kind: e.kind,
                phase: e.phase,
                sender: e.sender,
                body_sha256: Sha256::digest(&e.body).into(),
                body: e.body,
                response: e.response,
                shredded: false,
            });
            ids.push(seq);
        }
        ids
    }
}

/// An in-memory event log shared by the "processes" of a test: it survives a server being
/// dropped and restarted, refuses a second concurrent writer ([`MemoryStore::claim`]) and
/// checks each body against its digest on replay, like the SQLite log.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
}

/// The writer claim on a [`MemoryStore`], released on drop (like the lock file).
#[derive(Debug)]
pub struct MemoryClaim {
    store: MemoryStore,
}

impl Drop for MemoryClaim {
    fn drop(&mut self) {
        if let Ok(mut g) = self.store.inner.lock() {
            g.claimed = false;
        }
    }
}

impl MemoryStore {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Claims the single-writer lock.
    pub fn claim(&self) -> Result<MemoryClaim, StoreFailure> {
        let mut g = self.lock()?;
        if g.claimed {
            return Err(StoreFailure::Locked("memory log".into()));
        }
        g.claimed = true;
        g.poisoned = false;
        Ok(MemoryClaim {
            store: self.clone(),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryInner>, StoreFailure> {
        self.inner
            .lock()
            .map_err(|_| StoreFailure::Io("memory log poisoned".into()))
    }

    /// Test hook: edits stored event `seq` in place (without updating its digest when
    /// `keep_digest`), as an attacker with write access to the database would.
    pub fn tamper(&self, seq: u64, keep_digest: bool, f: impl FnOnce(&mut Event)) {
        if let Ok(mut g) = self.inner.lock()
            && let Some(e) = g.events.iter_mut().find(|e| e.seq == seq)
        {
            f(e);
            if !keep_digest {
                e.body_sha256 = Sha256::digest(&e.body).into();
            }
        }
    }

    /// Test hook: makes every later append fail (a full disk).
    pub fn fail_appends(&self, fail: bool) {
        if let Ok(mut g) = self.inner.lock() {
            g.fail_appends = fail;
        }
    }

    /// Test hook, the commit latch: while held, [`EventStore::queue_append`] queues appends
    /// without committing them (a slow disk); releasing commits them in queue order and
    /// answers their callers. Direct [`EventStore::append_batch`] calls are not held.
    pub fn hold_commits(&self, hold: bool) {
        let Ok(mut g) = self.inner.lock() else { return };
        g.hold = hold;
        if !hold {
            for (events, answer) in std::mem::take(&mut g.held) {
                let ids = g.commit(events);
                let _ = answer.send(Ok(ids));
            }
        }
    }

    /// Test hook: the held appends are lost (an I/O error at their commit): each caller is
    /// answered with a failure and nothing of them is stored. How many were held.
    pub fn lose_held_commits(&self) -> usize {
        let Ok(mut g) = self.inner.lock() else {
            return 0;
        };
        let held = std::mem::take(&mut g.held);
        let n = held.len();
        g.poisoned |= n > 0;
        for (_, answer) in held {
            let _ = answer.send(Err(StoreFailure::Io("commit lost (injected)".into())));
        }
        n
    }

    /// How many queued appends the latch holds.
    pub fn held_commits(&self) -> usize {
        self.inner.lock().map(|g| g.held.len()).unwrap_or(0)
    }

    /// Every stored event (unverified), for tests.
    pub fn events(&self) -> Vec<Event> {
        self.inner
            .lock()
            .map(|g| g.events.clone())
            .unwrap_or_default()
    }
}

impl EventStore for MemoryStore {
    fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, StoreFailure> {
        let mut g = self.lock()?;
        if g.fail_appends {
            return Err(StoreFailure::Io("append refused (injected)".into()));
        }
        Ok(g.commit(events))
    }

    fn queue_append(&self, events: Vec<NewEvent>) -> PendingAppend {
        let mut g = match self.lock() {
            Ok(g) => g,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        if g.poisoned {
            return Box::pin(std::future::ready(Err(StoreFailure::Poisoned(
                "a held commit was lost".into(),
            ))));
        }
        if g.fail_appends {
            return Box::pin(std::future::ready(Err(StoreFailure::Io(
                "append refused (injected)".into(),
            ))));
        }
        if !g.hold {
            let ids = g.commit(events);
            return Box::pin(std::future::ready(Ok(ids)));
        }
        let (answer, rx) = tokio::sync::oneshot::channel();
        g.held.push((events, answer));
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(StoreFailure::Io("memory log dropped".into())))
        })
    }

    fn replay(&self) -> Result<Vec<Event>, StoreFailure> {
        let g = self.lock()?;
        for (i, e) in g.events.iter().enumerate() {
            if e.seq != i as u64 + 1 {
                return Err(StoreFailure::Tampered {
                    seq: e.seq,
                    reason: "sequence gap".into(),
                });
            }
            if !e.shredded && <[u8; 32]>::from(Sha256::digest(&e.body)) != e.body_sha256 {
                return Err(StoreFailure::Tampered {
                    seq: e.seq,
                    reason: "body digest mismatch".into(),
                });
            }
        }
        Ok(g.events.clone())
    }

    fn shred_round(&self, round: u64) -> Result<(), StoreFailure> {
        let mut g = self.lock()?;
        for e in g.events.iter_mut().filter(|e| e.round == round) {
            if e.kind.is_secret() {
                e.body.clear();
                e.shredded = true;
            }
        }
        Ok(())
    }
}

/// The SQLite event log.
pub use amalgam_store::EventLogHandle;

fn store_failure(e: amalgam_store::StoreError) -> StoreFailure {
    match e {
        amalgam_store::StoreError::Locked { .. } => StoreFailure::Locked(e.to_string()),
        amalgam_store::StoreError::Tampered { seq, .. } => StoreFailure::Tampered {
            seq,
            reason: e.to_string(),
        },
        amalgam_store::StoreError::Poisoned { .. } => StoreFailure::Poisoned(e.to_string()),
        other => StoreFailure::Io(other.to_string()),
    }
}

impl EventStore for EventLogHandle {
    fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, StoreFailure> {
        EventLogHandle::append_batch(self, events).map_err(store_failure)
    }

    /// A chained append ([`EventLogHandle::queue_chained`]): once one is lost the log refuses
    /// every later append until it is reopened.
    fn queue_append(&self, events: Vec<NewEvent>) -> PendingAppend {
        let queued = self.queue_chained(events).map_err(store_failure);
        Box::pin(async move {
            match queued {
                Ok(rx) => rx
                    .await
                    .map_err(|_| StoreFailure::Io("the event log writer has stopped".into()))?
                    .map_err(store_failure),
                Err(e) => Err(e),
            }
        })
    }

    fn replay(&self) -> Result<Vec<Event>, StoreFailure> {
        EventLogHandle::replay(self).map_err(store_failure)
    }

    fn shred_round(&self, round: u64) -> Result<(), StoreFailure> {
        EventLogHandle::shred_round(self, round).map_err(store_failure)
    }
}

/// Opens the SQLite event log at `path` (refused with [`StoreFailure::Locked`] while another
/// aggregator holds it). The returned join handle is the writer thread.
pub fn open_sqlite(
    path: &std::path::Path,
) -> Result<(EventLogHandle, std::thread::JoinHandle<()>), StoreFailure> {
    amalgam_store::EventLog::open(path, amalgam_store::EventLogOptions::default())
        .map_err(store_failure)
}
