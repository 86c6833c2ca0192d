//! Group commit: the batches queued while the writer was busy are committed in one SQLite
//! transaction, with their blob files written in parallel, one sync per blob directory and
//! one anchor write before the commit for all of them.
//!
//! Each caller's batch keeps its own all-or-nothing rule: it is inserted under its own
//! savepoint, and a refused batch (an invalid event, a duplicate key, also one that repeats a
//! key of an earlier batch of the same group) is rolled back alone and answered with its
//! error, while the others commit. Batches are chained in the order they were queued, so the
//! log is exactly what committing them one after another would have written. Every caller is
//! answered only after the commit that holds its rows (or with the error that refused them);
//! a failure of the commit itself, its blob writes or its anchor write fails every batch of
//! the group.
//!
//! A *chained* batch (see [`super::EventLogHandle::queue_chained`]) is one its caller has
//! already acted on, so later batches may depend on it: when one is lost — refused, or in a
//! failed group — the log is poisoned and refuses every later append, in this group and
//! after it, with [`StoreError::Poisoned`], until it is reopened.

use std::fs;
use std::path::PathBuf;

use rusqlite::params;

use super::anchor::AnchorState;
use super::chain::{RowMeta, Storage, to_i64};
use super::log::EventLog;
use super::types::NewEvent;
use crate::crypto::sha256;
use crate::error::{Result, StoreError};
use crate::fault::fault_point;
use crate::fs::{sync_dir, write_temp};
use crate::vault::RoundWriter;

/// Most threads that write one group's blob files.
const MAX_BLOB_WRITERS: usize = 8;

/// One caller's batch as queued: its events and whether it is chained.
pub(crate) struct QueuedBatch {
    pub events: Vec<NewEvent>,
    pub chained: bool,
}

/// A body that goes to a blob file, written only once its batch's rows were inserted.
enum BlobBody {
    /// Sealed under its round's key (index into the group's round writers).
    Sealed(usize, [u8; 32], Vec<u8>),
    /// Public, plain, at this path.
    Public(PathBuf, Vec<u8>),
}

/// A batch's rows before sequence numbers are assigned: metadata (seq 0), the body stored in
/// the row, and the blob files it needs.
struct Prepared {
    rows: Vec<(RowMeta, Option<Vec<u8>>)>,
    blobs: Vec<BlobBody>,
    chained: bool,
}

/// The round writers a group needs, one per round with sealed blobs.
#[derive(Default)]
struct Writers {
    rounds: Vec<(u64, RoundWriter)>,
}

impl Writers {
    fn index(&mut self, log: &mut EventLog, round: u64) -> Result<usize> {
        if let Some(i) = self.rounds.iter().position(|(r, _)| *r == round) {
            return Ok(i);
        }
        self.rounds.push((round, log.vault.round_writer(round)?));
        Ok(self.rounds.len() - 1)
    }
}

/// What a group-level failure (commit, sync, anchor) tells the callers after the first, who
/// gets the original error: the errors themselves are not `Clone`.
fn shared_failure(e: &str) -> StoreError {
    StoreError::Io(std::io::Error::other(format!(
        "the group commit holding this batch failed: {e}"
    )))
}

impl EventLog {
    fn poisoned_error(&self) -> Option<StoreError> {
        self.poisoned
            .as_ref()
            .map(|why| StoreError::Poisoned { why: why.clone() })
    }

    /// Commits `batches` (in this order) in one transaction: one result per batch, each an
    /// all-or-nothing append (validated, blob files written and fsynced before the
    /// commit, so a committed row never names a blob that is not durable).
    pub(crate) fn append_group(&mut self, batches: Vec<QueuedBatch>) -> Vec<Result<Vec<u64>>> {
        let mut results: Vec<Result<Vec<u64>>> = Vec::with_capacity(batches.len());
        let mut prepared: Vec<Option<Prepared>> = Vec::with_capacity(batches.len());
        let mut writers = Writers::default();
        for batch in batches {
            if let Some(e) = self.poisoned_error() {
                prepared.push(None);
                results.push(Err(e));
                continue;
            }
            let chained = batch.chained;
            match self.prepare(batch, &mut writers) {
                Ok(p) => {
                    prepared.push(Some(p));
                    results.push(Ok(Vec::new()));
                }
                Err(e) => {
                    if chained {
                        self.poisoned = Some(e.to_string());
                    }
                    prepared.push(None);
                    results.push(Err(e));
                }
            }
        }
        if prepared.iter().all(Option::is_none) {
            return results;
        }
        let any_chained = prepared.iter().flatten().any(|p| p.chained);
        if let Err(e) = self.commit_group(&mut prepared, &mut results, writers) {
            let text = e.to_string();
            if any_chained {
                self.poisoned = Some(text.clone());
            }
            let mut first = Some(e);
            for (r, p) in results.iter_mut().zip(&prepared) {
                if p.is_some() {
                    *r = Err(first.take().unwrap_or_else(|| shared_failure(&text)));
                }
            }
        }
        results
    }

    /// Validates one batch and decides where each body goes; inline sealed bodies are
    /// sealed now, blob bodies are kept for the group's parallel write. Nothing is written
    /// when a check refuses the batch (a round's key, minted durably on its first secret
    /// body, excepted).
    fn prepare(&mut self, batch: QueuedBatch, writers: &mut Writers) -> Result<Prepared> {
        let QueuedBatch { events, chained } = batch;
        if events.len() > self.opts.max_batch {
            return Err(StoreError::TooLarge {
                what: "event batch",
                len: events.len() as u64,
                max: self.opts.max_batch as u64,
            });
        }
        for ev in &events {
            self.validate(ev)?;
        }
        // Keys must exist (durably) before sealed rows commit; a round with sealed rows but
        // no key file is refused rather than given a fresh key.
        for ev in events.iter().filter(|e| e.kind.is_secret()) {
            if !self.vault.has_key(ev.round) && self.round_has_secrets(ev.round)? {
                return Err(StoreError::KeyMissing { round: ev.round });
            }
        }
        let mut rows = Vec::with_capacity(events.len());
        let mut blobs = Vec::new();
        for ev in events {
            let secret = ev.kind.is_secret();
            let inline = ev.body.len() <= self.opts.inline_max;
            let storage = Storage::choose(secret, inline);
            let digest = sha256(&ev.body);
            let body_len = ev.body.len() as u64;
            let stored_body = match storage {
                Storage::InlinePlain => Some(ev.body),
                Storage::InlineSealed => Some(self.vault.seal(ev.round, &digest, &ev.body)?),
                Storage::BlobPlain => {
                    blobs.push(BlobBody::Public(self.public_blob_path(&digest), ev.body));
                    None
                }
                Storage::BlobSealed => {
                    let w = writers.index(self, ev.round)?;
                    blobs.push(BlobBody::Sealed(w, digest, ev.body));
                    None
                }
            };
            let meta = RowMeta {
                seq: 0,
                round: ev.round,
                kind: ev.kind,
                phase: ev.phase,
                sender: ev.sender,
                storage,
                body_len,
                body_sha256: digest,
                response: ev.response,
            };
            rows.push((meta, stored_body));
        }
        Ok(Prepared {
            rows,
            blobs,
            chained,
        })
    }

    /// Inserts every prepared batch under its own savepoint (a refused one is rolled back,
    /// its entry in `prepared` cleared and its error put in `results`; a refused chained one
    /// poisons the log and refuses the rest), then writes the kept batches' blob files and
    /// the anchor's pending entry in parallel (§2.6 of persistence.md: before the commit
    /// `committed = old head, pending = new head`), syncs the blob directories, commits and
    /// settles the anchor (`committed = new head`). `Err` only for a failure that refuses the
    /// whole group.
    fn commit_group(
        &mut self,
        prepared: &mut [Option<Prepared>],
        results: &mut [Result<Vec<u64>>],
        writers: Writers,
    ) -> Result<()> {
        let old_head = (self.head_seq, self.head_hash);
        let mut head = old_head;
        let mut committed_rows: Vec<([u8; 32], u64)> = Vec::new();
        let mut tx = self.conn.transaction()?;
        for (slot, result) in prepared.iter_mut().zip(results.iter_mut()) {
            let Some(batch) = slot.as_mut() else { continue };
            if let Some(why) = &self.poisoned {
                *slot = None;
                *result = Err(StoreError::Poisoned { why: why.clone() });
                continue;
            }
            let sp = tx.savepoint()?;
            let mut prev = head;
            let mut seqs = Vec::with_capacity(batch.rows.len());
            let mut hashes = Vec::with_capacity(batch.rows.len());
            let mut refused = None;
            for (meta, body) in batch.rows.iter_mut() {
                meta.seq = prev.0 + 1;
                let hash = meta.chain_hash(&prev.1);
                if let Err(e) = Self::insert_row(&sp, meta, body.as_deref(), &hash) {
                    refused = Some(e);
                    break;
                }
                prev = (meta.seq, hash);
                seqs.push(meta.seq);
                hashes.push((hash, meta.round));
            }
            match refused {
                Some(e) => {
                    // Rolls back this batch's rows only (and releases the savepoint).
                    sp.finish()?;
                    if batch.chained {
                        self.poisoned = Some(e.to_string());
                    }
                    *slot = None;
                    *result = Err(e);
                }
                None => {
                    sp.commit()?;
                    head = prev;
                    committed_rows.extend(hashes);
                    *result = Ok(seqs);
                }
            }
        }
        if committed_rows.is_empty() {
            return Ok(());
        }
        let blobs: Vec<BlobBody> = prepared
            .iter_mut()
            .flatten()
            .flat_map(|p| std::mem::take(&mut p.blobs))
            .collect();
        let public_written = blobs.iter().any(|b| matches!(b, BlobBody::Public(..)));
        let pending = AnchorState {
            committed: old_head,
            pending: Some(head),
        };
        write_in_parallel(&writers, &blobs, || self.anchor.store(&pending))?;
        for (r, _) in &writers.rounds {
            let has_blob = blobs
                .iter()
                .any(|b| matches!(b, BlobBody::Sealed(i, ..) if writers.rounds[*i].0 == *r));
            if has_blob {
                self.vault.sync_round(*r)?;
            }
        }
        if public_written {
            sync_dir(&self.public_dir)?;
        }
        let first = old_head.0 + 1;
        fault_point("eventlog-before-commit", first);
        tx.commit()?;
        fault_point("eventlog-after-commit", first);
        self.head_seq = head.0;
        self.head_hash = head.1;
        self.chain.extend(committed_rows);
        self.unsettled = true;
        self.settle_anchor();
        Ok(())
    }

    /// Records the committed head alone in the anchor (`committed = head`, no pending
    /// entry), right after each commit and before its callers are answered: from then on a
    /// log without this commit (a deleted write-ahead log) is behind the anchor. If the write
    /// fails the commit still stands (its pending entry admits it) and the next commit
    /// rewrites the file; the writer retries it before it stops.
    pub(crate) fn settle_anchor(&mut self) {
        if !self.unsettled {
            return;
        }
        let settled = self.anchor.store(&AnchorState {
            committed: (self.head_seq, self.head_hash),
            pending: None,
        });
        self.unsettled = settled.is_err();
    }

    fn insert_row(
        tx: &rusqlite::Connection,
        meta: &RowMeta,
        body: Option<&[u8]>,
        hash: &[u8; 32],
    ) -> Result<()> {
        Self::refuse_duplicate(tx, meta)?;
        tx.prepare_cached(
            "INSERT INTO events(seq, round, kind, phase, sender, storage, body_len,
                body_sha256, body, response, row_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            to_i64(meta.seq, "seq")?,
            to_i64(meta.round, "round")?,
            meta.kind.code(),
            meta.phase,
            meta.sender,
            meta.storage as u8,
            to_i64(meta.body_len, "body length")?,
            meta.body_sha256.as_slice(),
            body,
            meta.response,
            hash.as_slice(),
        ])?;
        Ok(())
    }
}

fn write_blob(writers: &Writers, blob: &BlobBody) -> Result<()> {
    match blob {
        BlobBody::Sealed(i, digest, body) => match writers.rounds.get(*i) {
            Some((_, w)) => w.write(digest, body),
            None => Err(StoreError::Io(std::io::Error::other(
                "blob names a round writer the group does not have",
            ))),
        },
        BlobBody::Public(path, body) => {
            let tmp = write_temp(path, &[body], 0o600)?;
            if let Err(e) = fs::rename(&tmp, path) {
                let _ = fs::remove_file(&tmp);
                return Err(e.into());
            }
            Ok(())
        }
    }
}

/// Writes (seals, fsyncs, renames) every blob of the group and runs `anchor` at the same
/// time: each file's fsync is independent of the others, so they overlap instead of
/// queueing one behind the other. The first error, if any.
fn write_in_parallel(
    writers: &Writers,
    blobs: &[BlobBody],
    anchor: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let threads = blobs.len().clamp(1, MAX_BLOB_WRITERS);
    let per_thread = blobs.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = blobs
            .chunks(per_thread)
            .map(|chunk| s.spawn(move || chunk.iter().try_for_each(|b| write_blob(writers, b))))
            .collect();
        let mut result = anchor();
        for w in workers {
            let r = w.join().unwrap_or_else(|_| {
                Err(StoreError::Io(std::io::Error::other(
                    "a blob writer thread panicked",
                )))
            });
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}
