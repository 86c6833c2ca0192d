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
    /// I/O or database failure.
    #[error("event log failure: {0}")]
    Io(String),
}

/// The durable, append-only event log.
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` in one transaction; returns after it committed.
    fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, StoreFailure>;
    /// Every event, verified, in order (a shredded round's secret bodies come back empty,
    /// `shredded: true`).
    fn replay(&self) -> Result<Vec<Event>, StoreFailure>;
    /// Crypto-shreds `round`'s secret bodies (uploads, downloads, declines): their key is
    /// deleted, digests and the public record stay. Idempotent.
    fn shred_round(&self, round: u64) -> Result<(), StoreFailure>;
}

#[derive(Debug, Default)]
struct MemoryInner {
    events: Vec<Event>,
    claimed: bool,
    fail_appends: bool,
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
        let mut ids = Vec::with_capacity(events.len());
        for e in events {
            let seq = g.events.len() as u64 + 1;
            g.events.push(Event {
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
        Ok(ids)
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
        other => StoreFailure::Io(other.to_string()),
    }
}

impl EventStore for EventLogHandle {
    fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, StoreFailure> {
        EventLogHandle::append_batch(self, events).map_err(store_failure)
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
