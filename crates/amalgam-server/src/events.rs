//! The event log the server persists through. Names follow `amalgam-store`'s API (`NewEvent`,
//! `Event`, `EventKind`, `append_batch`, `replay`) so that its `EventLogHandle` plugs in behind
//! [`EventStore`]; [`MemoryStore`] is the in-process implementation used by tests.
//!
//! The server owns the meaning of events (spec `service.md` §7): a response leaves only after
//! the batch holding its message was appended.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An accepted upload with its response.
    Upload,
    /// A phase-close decision (body: next deadline).
    PhaseClose,
    /// The exact bytes of a download for one recipient.
    Download,
    /// A round opened (body: model digest, first deadline).
    RoundOpen,
    /// A round finished or aborted.
    RoundEnd,
    /// A site's signed ledger summary.
    Summary,
    /// Other kinds ([`KIND_DECLINE`]).
    Other(u16),
}

/// `Other` kind of a signed decline.
pub const KIND_DECLINE: u16 = 1;

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Round id.
    pub round: u64,
    /// Kind.
    pub kind: EventKind,
    /// Phase code (amalgam_proto::Phase::code).
    pub phase: u8,
    /// Sender (uploads) or recipient (downloads).
    pub sender: Option<u32>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Response bytes of an upload.
    pub response: Option<Vec<u8>>,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Sequence number, from 1.
    pub seq: u64,
    /// Round id.
    pub round: u64,
    /// Kind.
    pub kind: EventKind,
    /// Phase code.
    pub phase: u8,
    /// Sender or recipient.
    pub sender: Option<u32>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// SHA-256 of the body.
    pub body_sha256: [u8; 32],
    /// Response bytes of an upload.
    pub response: Option<Vec<u8>>,
}

impl Event {
    /// The event as it was appended.
    pub fn as_new(&self) -> NewEvent {
        NewEvent {
            round: self.round,
            kind: self.kind,
            phase: self.phase,
            sender: self.sender,
            body: self.body.clone(),
            response: self.response.clone(),
        }
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
    /// Every event, verified, in order.
    fn replay(&self) -> Result<Vec<Event>, StoreFailure>;
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
            if <[u8; 32]>::from(Sha256::digest(&e.body)) != e.body_sha256 {
                return Err(StoreFailure::Tampered {
                    seq: e.seq,
                    reason: "body digest mismatch".into(),
                });
            }
        }
        Ok(g.events.clone())
    }
}
