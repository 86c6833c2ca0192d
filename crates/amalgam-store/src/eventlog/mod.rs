//! The aggregator's append-only event log.
//!
//! One SQLite database (`journal_mode=WAL`, `synchronous=FULL`, `foreign_keys=ON`) holds one
//! row per event: each accepted upload (once, unique per round, phase and sender, with the
//! response sent for it), each phase-close decision, and the exact bytes of every download
//! served (unique per round, phase and recipient, so a re-delivery is byte-identical). Bodies
//! longer than [`EventLogOptions::inline_max`] live in files named by their SHA-256, so
//! megabyte uploads stay out of the write-ahead log. Secret bodies (uploads, downloads) are
//! sealed under a per-round key and erased by [`EventLogHandle::shred_round`]; digests and
//! the hash chain stay. Every row carries its body's SHA-256 and the chained hash
//! `H(prev_row_hash ‖ row)`; readers recompute both and refuse a changed, deleted or moved
//! row with [`StoreError::Tampered`] naming the sequence number. Triggers refuse UPDATE and
//! DELETE on the events table.
//!
//! One writer thread owns the connection; [`EventLogHandle`] is a cloneable channel to it
//! with a blocking API and a `tokio::sync::oneshot`-based async one (no runtime needed here).
//! An append is answered only after its transaction committed; appends queued together
//! share one commit (`group.rs`), and a lost *chained* append poisons the log (every later
//! append refused until it is reopened). `<db>.lock` keeps a second process off the database.
//!
//! `<db>.anchor` records the committed head (see `anchor.rs`): at open a log behind it
//! (cut tail, deleted `<db>-wal`) or different from it (rows rewritten with their hashes
//! recomputed, rows appended) is refused; while open, every read is checked against the
//! chain this process verified or committed, not against the file's own hashes.
//!
//! Files: `<db>`, `<db>-wal`, `<db>-shm` (SQLite), `<db>.lock`, `<db>.anchor`, `<db>.vault/` (round keys and
//! sealed blobs, see [`crate::BlobVault`]), `<db>.blobs/` (public blobs).

mod anchor;
mod chain;
mod group;
mod log;
mod meta;
mod types;
mod verify;

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use group::QueuedBatch;
pub use log::EventLog;
pub use types::{
    Durability, Event, EventKind, EventLogOptions, MAX_META_KEY, MAX_META_VALUE, MAX_NONCE,
    NewEvent, StoredUpload,
};

use crate::error::{Result, StoreError};

/// Most batches one group commit takes from the queue (the rest wait for the next one).
const MAX_GROUP: usize = 64;

type Reply = Box<dyn FnOnce(Result<Vec<u64>>) + Send>;

/// What the writer thread is asked to do.
enum Job {
    /// An append (chained or not), answered after the commit holding it; appends queued
    /// together are committed together (group commit, `group.rs`).
    Append(QueuedBatch, Reply),
    /// Anything else, run alone in queue order.
    Call(Box<dyn FnOnce(&mut EventLog) + Send>),
}

/// The writer thread's loop: runs jobs in queue order; an append takes every append queued
/// right behind it (up to [`MAX_GROUP`], stopping at the first other job) into one commit.
/// When the queue is empty, and before the thread ends, a settled anchor entry whose write
/// failed after its commit is retried.
fn writer(mut log: EventLog, rx: mpsc::Receiver<Job>) {
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rx.try_recv() {
                Ok(job) => job,
                Err(mpsc::TryRecvError::Empty) => {
                    log.settle_anchor();
                    match rx.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    log.settle_anchor();
                    return;
                }
            },
        };
        match job {
            Job::Call(f) => f(&mut log),
            Job::Append(batch, reply) => {
                let mut batches = vec![batch];
                let mut replies = vec![reply];
                while batches.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Job::Append(batch, reply)) => {
                            batches.push(batch);
                            replies.push(reply);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                for (result, reply) in log.append_group(batches).into_iter().zip(replies) {
                    reply(result);
                }
            }
        }
    }
}

/// A cloneable handle to the event log's writer thread. The thread ends (closing the
/// database and releasing the lock) when every handle is dropped.
///
/// The plain methods block the calling thread until the writer answers (an append: until its
/// transaction committed); from an async task use the `_async` variants (or
/// `spawn_blocking`), which wait on a `tokio::sync::oneshot` instead.
#[derive(Clone, Debug)]
pub struct EventLogHandle {
    tx: mpsc::Sender<Job>,
}

impl EventLog {
    /// Opens (creating) the log at `path`, verifies its hash chain, and starts the writer
    /// thread. [`StoreError::Locked`] when another process or handle has it open.
    pub fn open(path: &Path, opts: EventLogOptions) -> Result<(EventLogHandle, JoinHandle<()>)> {
        let log = EventLog::open_local(path, opts)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("amalgam-eventlog".into())
            .spawn(move || writer(log, rx))?;
        Ok((EventLogHandle { tx }, thread))
    }
}

impl EventLogHandle {
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut EventLog) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send(Job::Call(Box::new(move |log| {
                let _ = reply.send(f(log));
            })))
            .map_err(|_| StoreError::Closed)?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    async fn call_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut EventLog) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job::Call(Box::new(move |log| {
                let _ = reply.send(f(log));
            })))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn send_append(&self, events: Vec<NewEvent>, chained: bool, reply: Reply) -> Result<()> {
        self.tx
            .send(Job::Append(QueuedBatch { events, chained }, reply))
            .map_err(|_| StoreError::Closed)
    }

    /// Appends `events` and returns their sequence numbers after the commit that holds them.
    /// All or nothing: one refused event refuses the batch (and only this batch). Batches
    /// queued while the writer is busy share one transaction, one blob-directory sync and
    /// one anchor write (group commit); they are chained in the order they were queued.
    pub fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<u64>> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send_append(
            events,
            false,
            Box::new(move |r| {
                let _ = reply.send(r);
            }),
        )?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// Queues `events` for the next group commit and returns at once; the receiver answers
    /// after the commit, as [`Self::append_batch`] does. A caller holding a lock can queue
    /// under it (fixing its place in the chain) and release the lock before the commit.
    pub fn queue_append(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Vec<u64>>>> {
        self.queue(events, false)
    }

    /// [`Self::queue_append`] for a caller that acts on the batch before it commits (its
    /// state already includes it, and what it queues next may depend on it). If this batch
    /// is lost — refused, or its group commit fails — the log is poisoned: this and every
    /// later append is refused ([`StoreError::Poisoned`] for the later ones) until the log is
    /// reopened, so nothing that depends on the lost batch can commit without it.
    pub fn queue_chained(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Vec<u64>>>> {
        self.queue(events, true)
    }

    fn queue(
        &self,
        events: Vec<NewEvent>,
        chained: bool,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Vec<u64>>>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send_append(
            events,
            chained,
            Box::new(move |r| {
                let _ = reply.send(r);
            }),
        )?;
        Ok(answer)
    }

    /// [`Self::append_batch`] for async callers (the caller's task waits, no thread blocks).
    pub async fn append_batch_async(&self, events: Vec<NewEvent>) -> Result<Vec<u64>> {
        self.queue_append(events)?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Appends one event; its sequence number after commit.
    pub fn append(&self, event: NewEvent) -> Result<u64> {
        let seqs = self.append_batch(vec![event])?;
        seqs.first().copied().ok_or(StoreError::Closed)
    }

    /// Every event in order, the whole chain and every readable body verified. Secret bodies
    /// of shredded rounds come back empty with `shredded: true`.
    pub fn replay(&self) -> Result<Vec<Event>> {
        self.call(|log| log.replay())
    }

    /// The events of `round`, in order, each row checked against its predecessor's hash and
    /// its body against its digest.
    pub fn events_for_round(&self, round: u64) -> Result<Vec<Event>> {
        self.call(move |log| log.events_for_round(round))
    }

    /// The upload stored for (round, phase, sender), if any.
    pub fn lookup_upload(
        &self,
        round: u64,
        phase: u8,
        sender: u32,
    ) -> Result<Option<StoredUpload>> {
        self.call(move |log| log.lookup_upload(round, phase, sender))
    }

    /// [`Self::lookup_upload`] for async callers.
    pub async fn lookup_upload_async(
        &self,
        round: u64,
        phase: u8,
        sender: u32,
    ) -> Result<Option<StoredUpload>> {
        self.call_async(move |log| log.lookup_upload(round, phase, sender))
            .await
    }

    /// The exact bytes served to `recipient` for (round, phase), if any;
    /// [`StoreError::Shredded`] after the round was shredded.
    pub fn download(&self, round: u64, phase: u8, recipient: u32) -> Result<Option<Vec<u8>>> {
        self.call(move |log| log.download(round, phase, recipient))
    }

    /// [`Self::download`] for async callers.
    pub async fn download_async(
        &self,
        round: u64,
        phase: u8,
        recipient: u32,
    ) -> Result<Option<Vec<u8>>> {
        self.call_async(move |log| log.download(round, phase, recipient))
            .await
    }

    /// Crypto-shreds `round`: its key and sealed blob files are deleted; its rows, digests
    /// and hash chain stay. Later reads of its secret bodies are [`StoreError::Shredded`].
    pub fn shred_round(&self, round: u64) -> Result<()> {
        self.call(move |log| log.shred_round(round))
    }

    /// Sets a meta value (committed before returning).
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.call(move |log| log.put_meta(&key, &value))
    }

    /// [`Self::put_meta`] for async callers.
    pub async fn put_meta_async(&self, key: &str, value: &[u8]) -> Result<()> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.call_async(move |log| log.put_meta(&key, &value)).await
    }

    /// A meta value, if set.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_owned();
        self.call(move |log| log.get_meta(&key))
    }

    /// [`Self::get_meta`] for async callers.
    pub async fn get_meta_async(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_owned();
        self.call_async(move |log| log.get_meta(&key)).await
    }

    /// Records `nonce` with its expiry (the caller's clock); `false` if it was already
    /// recorded (a replay), whether or not it has expired since — only
    /// [`Self::purge_nonces`] forgets nonces.
    pub fn insert_nonce(&self, nonce: &[u8], expires: u64) -> Result<bool> {
        let nonce = nonce.to_vec();
        self.call(move |log| log.insert_nonce(&nonce, expires))
    }

    /// [`Self::insert_nonce`] for async callers.
    pub async fn insert_nonce_async(&self, nonce: &[u8], expires: u64) -> Result<bool> {
        let nonce = nonce.to_vec();
        self.call_async(move |log| log.insert_nonce(&nonce, expires))
            .await
    }

    /// Forgets nonces whose expiry is before `expired_before`; how many were removed. The
    /// caller must refuse requests whose expiry is already past, or a purged nonce replays.
    pub fn purge_nonces(&self, expired_before: u64) -> Result<usize> {
        self.call(move |log| log.purge_nonces(expired_before))
    }

    /// The last committed sequence number and its row hash (the chain head), for anchoring in
    /// a signed record: a truncated log is only detectable against such an anchor.
    pub fn head(&self) -> Result<(u64, [u8; 32])> {
        self.call(|log| Ok(log.head()))
    }

    /// Checks the log against an anchor `(seq, row hash)` taken from [`Self::head`] earlier
    /// and kept outside the log (a signed round record, another host): a log truncated below
    /// `seq`, or rewritten up to it, is [`StoreError::Tampered`]. The chain alone cannot see a
    /// truncated tail; this can, as far as the anchor reaches.
    pub fn verify_anchor(&self, seq: u64, hash: [u8; 32]) -> Result<()> {
        self.call(move |log| log.verify_anchor(seq, &hash))
    }

    /// The durability pragmas the writer's connection runs with.
    pub fn durability(&self) -> Result<Durability> {
        self.call(|log| log.durability())
    }
}
