//! Group commit: the batches queued while the writer was busy are committed in one SQLite
//! transaction, with one blob-directory sync and one anchor bracket for all of them.
//!
//! Each caller's batch keeps its own all-or-nothing rule: it is inserted under its own
//! savepoint, and a refused batch (an invalid event, a duplicate key, also one that repeats a
//! key of an earlier batch of the same group) is rolled back alone and answered with its
//! error, while the others commit. Batches are chained in the order they were queued, so the
//! log is exactly what committing them one after another would have written. Every caller is
//! answered only after the commit that holds its rows (or with the error that refused them);
//! a failure of the commit itself, its blob syncs or its anchor write fails every batch of
//! the group.

use std::fs;

use rusqlite::params;

use super::anchor::AnchorState;
use super::chain::{RowMeta, Storage, to_i64};
use super::log::EventLog;
use super::types::NewEvent;
use crate::crypto::sha256;
use crate::error::{Result, StoreError};
use crate::fault::fault_point;
use crate::fs::{sync_dir, write_temp};

/// A batch's rows before sequence numbers are assigned: metadata (seq 0) and the stored body.
type Prepared = Vec<(RowMeta, Option<Vec<u8>>)>;

/// What a group-level failure (commit, sync, anchor) tells the callers after the first, who
/// gets the original error: the errors themselves are not `Clone`.
fn shared_failure(e: &str) -> StoreError {
    StoreError::Io(std::io::Error::other(format!(
        "the group commit holding this batch failed: {e}"
    )))
}

impl EventLog {
    /// Commits `batches` (in this order) in one transaction: one result per batch, each an
    /// all-or-nothing append (validated, blob files written and fsynced before the
    /// transaction, so a committed row never names a blob that is not durable).
    pub(crate) fn append_group(&mut self, batches: Vec<Vec<NewEvent>>) -> Vec<Result<Vec<u64>>> {
        let mut results: Vec<Result<Vec<u64>>> = Vec::with_capacity(batches.len());
        let mut prepared: Vec<Option<Prepared>> = Vec::with_capacity(batches.len());
        let mut synced_rounds = Vec::new();
        let mut public_written = false;
        for events in batches {
            match self.prepare(events, &mut synced_rounds, &mut public_written) {
                Ok(rows) => {
                    prepared.push(Some(rows));
                    results.push(Ok(Vec::new()));
                }
                Err(e) => {
                    prepared.push(None);
                    results.push(Err(e));
                }
            }
        }
        if prepared.iter().all(Option::is_none) {
            return results;
        }
        if let Err(e) =
            self.commit_group(&mut prepared, &mut results, synced_rounds, public_written)
        {
            let text = e.to_string();
            let mut first = Some(e);
            for (r, p) in results.iter_mut().zip(&prepared) {
                if p.is_some() {
                    *r = Err(first.take().unwrap_or_else(|| shared_failure(&text)));
                }
            }
        }
        results
    }

    /// Validates one batch and writes its blob files (unsynced for sealed ones; the rounds to
    /// sync are collected). Nothing is written when a check refuses the batch.
    fn prepare(
        &mut self,
        events: Vec<NewEvent>,
        synced_rounds: &mut Vec<u64>,
        public_written: &mut bool,
    ) -> Result<Prepared> {
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
                    let path = self.public_blob_path(&digest);
                    let tmp = write_temp(&path, &[&ev.body], 0o600)?;
                    fs::rename(&tmp, &path)?;
                    *public_written = true;
                    None
                }
                Storage::BlobSealed => {
                    self.vault.write_unsynced(ev.round, &digest, &ev.body)?;
                    if !synced_rounds.contains(&ev.round) {
                        synced_rounds.push(ev.round);
                    }
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
        Ok(rows)
    }

    /// Syncs the group's blob files, inserts every prepared batch under its own savepoint
    /// (a refused one is rolled back, its entry in `prepared` cleared and its error put in
    /// `results`), brackets the commit with the anchor (§2.6 of persistence.md: before it
    /// `committed = old head, pending = new head`, after it `committed = new head`) and
    /// commits. `Err` only for a failure that refuses the whole group.
    fn commit_group(
        &mut self,
        prepared: &mut [Option<Prepared>],
        results: &mut [Result<Vec<u64>>],
        synced_rounds: Vec<u64>,
        public_written: bool,
    ) -> Result<()> {
        for r in synced_rounds {
            self.vault.sync_round(r)?;
        }
        if public_written {
            sync_dir(&self.public_dir)?;
        }
        let old_head = (self.head_seq, self.head_hash);
        let mut head = old_head;
        let mut committed_rows: Vec<([u8; 32], u64)> = Vec::new();
        let mut tx = self.conn.transaction()?;
        for (slot, result) in prepared.iter_mut().zip(results.iter_mut()) {
            let Some(rows) = slot.as_mut() else { continue };
            let sp = tx.savepoint()?;
            let mut prev = head;
            let mut seqs = Vec::with_capacity(rows.len());
            let mut hashes = Vec::with_capacity(rows.len());
            let mut refused = None;
            for (meta, body) in rows.iter_mut() {
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
        self.anchor.store(&AnchorState {
            committed: old_head,
            pending: Some(head),
        })?;
        let first = old_head.0 + 1;
        fault_point("eventlog-before-commit", first);
        tx.commit()?;
        fault_point("eventlog-after-commit", first);
        self.head_seq = head.0;
        self.head_hash = head.1;
        self.chain.extend(committed_rows);
        // After it, only the new head: from now on a log without this commit (a deleted
        // write-ahead log) is behind the anchor. If this write fails the commit still
        // stands and the pending entry above already admits it; the next commit rewrites it.
        let _ = self.anchor.store(&AnchorState {
            committed: head,
            pending: None,
        });
        Ok(())
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
