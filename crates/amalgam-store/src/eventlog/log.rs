//! The writer-owned side of the event log: the SQLite connection, the round vault, the
//! public blob directory and the chain head. Only the writer thread touches it.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::anchor::Anchor;
use super::chain::{RowMeta, Storage, row_meta, tampered, to_i64};
use super::types::{Durability, Event, EventKind, EventLogOptions, NewEvent, StoredUpload};
use crate::crypto::sha256;
use crate::error::{Result, StoreError};
use crate::fs::{parent_of, private_dir, read_bounded, refuse_network_fs};
use crate::lock::LockFile;
use crate::sqlite::{check_schema, configure, durability, integrity_check, sibling};
use crate::vault::BlobVault;

/// Schema version written to `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events(
    seq INTEGER PRIMARY KEY,
    round INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    sender INTEGER,
    storage INTEGER NOT NULL,
    body_len INTEGER NOT NULL,
    body_sha256 BLOB NOT NULL,
    body BLOB,
    response BLOB,
    row_hash BLOB NOT NULL
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS events_upload_key ON events(round, phase, sender) WHERE kind = 1;
CREATE UNIQUE INDEX IF NOT EXISTS events_download_key ON events(round, phase, sender) WHERE kind = 3;
CREATE INDEX IF NOT EXISTS events_round ON events(round);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS nonces(nonce BLOB PRIMARY KEY, expires INTEGER NOT NULL) STRICT;
";

pub(super) const ROW_COLUMNS: &str =
    "seq, round, kind, phase, sender, storage, body_len, body_sha256, response, row_hash";

/// The writer side of an open event log (see [`super::EventLogHandle`] for the API).
pub struct EventLog {
    pub(super) conn: Connection,
    pub(super) vault: BlobVault,
    pub(super) public_dir: PathBuf,
    pub(super) opts: EventLogOptions,
    pub(super) head_seq: u64,
    pub(super) head_hash: [u8; 32],
    /// Row hash and round of every committed row (index `seq - 1`), verified at open or
    /// computed by this writer: reads are checked against it, not against the file's own
    /// (rewritable) predecessor hashes.
    pub(super) chain: Vec<([u8; 32], u64)>,
    pub(super) anchor: Anchor,
    /// The last commit's settled anchor entry is not written yet (see `settle_anchor`).
    pub(super) unsettled: bool,
    /// Why appends are refused: a chained append was lost (see `group.rs`).
    pub(super) poisoned: Option<String>,
    _lock: LockFile,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("head_seq", &self.head_seq)
            .field("vault", &self.vault)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// Opens (creating) the log at `path`: takes `<path>.lock`, applies the pragmas, checks
    /// the schema and verifies the whole hash chain (not the bodies; [`Self::replay`] does).
    pub(crate) fn open_local(path: &Path, opts: EventLogOptions) -> Result<Self> {
        let dir = parent_of(path);
        if !opts.allow_network_fs {
            refuse_network_fs(dir)?;
        }
        let lock = LockFile::acquire(path)?;
        let conn = Connection::open(path)?;
        configure(&conn, path)?;
        check_schema(&conn, path, SCHEMA, SCHEMA_VERSION)?;
        integrity_check(&conn, path)?;
        let vault = BlobVault::open(&sibling(path, ".vault"), opts.max_body as u64)?;
        let public_dir = sibling(path, ".blobs");
        private_dir(&public_dir)?;
        crate::fs::remove_stale_temps(&public_dir)?;
        let mut log = Self {
            conn,
            vault,
            public_dir,
            opts,
            head_seq: 0,
            head_hash: [0; 32],
            chain: Vec::new(),
            anchor: Anchor::new(sibling(path, ".anchor")),
            unsettled: false,
            poisoned: None,
            _lock: lock,
        };
        let (seq, hash, chain) = log.verify_chain()?;
        log.anchor.check_at_open((seq, hash))?;
        log.head_seq = seq;
        log.head_hash = hash;
        log.chain = chain;
        Ok(log)
    }

    /// Rows matching `filter` (a WHERE clause over `params`), each checked against the known
    /// chain, with bodies loaded and verified.
    fn select_events(&mut self, filter: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Event>> {
        let metas: Vec<(RowMeta, [u8; 32], Option<Vec<u8>>)> = {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT {ROW_COLUMNS}, body FROM events {filter} ORDER BY seq"
            ))?;
            let mut rows = stmt.query(args)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let (meta, hash) = row_meta(row)?;
                out.push((meta, hash, row.get(10)?));
            }
            out
        };
        let mut events = Vec::with_capacity(metas.len());
        for (meta, hash, inline) in metas {
            self.check_known(&meta, &hash)?;
            events.push(self.load_body(meta, inline)?);
        }
        Ok(events)
    }

    /// Loads and verifies one row's body.
    fn load_body(&mut self, meta: RowMeta, inline: Option<Vec<u8>>) -> Result<Event> {
        let seq = meta.seq;
        let mut shredded = false;
        let body: Vec<u8> = match meta.storage {
            Storage::InlinePlain => inline.ok_or_else(|| tampered(seq, "inline body missing"))?,
            Storage::InlineSealed => {
                let sealed = inline.ok_or_else(|| tampered(seq, "inline body missing"))?;
                match self.vault.unseal(meta.round, &meta.body_sha256, &sealed) {
                    Ok(Some(b)) => b.to_vec(),
                    Ok(None) => return Err(tampered(seq, "sealed body does not authenticate")),
                    Err(StoreError::Shredded { .. }) => {
                        shredded = true;
                        Vec::new()
                    }
                    Err(e) => return Err(e),
                }
            }
            Storage::BlobPlain => {
                // The row says how long the file must be: read no more than that.
                let path = self.public_blob_path(&meta.body_sha256);
                let limit = meta.body_len.min(self.opts.max_body as u64);
                match read_bounded(&path, limit, "blob file") {
                    Ok(Some(b)) => b,
                    Ok(None) => return Err(tampered(seq, "blob file missing")),
                    Err(StoreError::TooLarge { .. }) => {
                        return Err(tampered(seq, "blob file longer than its row says"));
                    }
                    Err(e) => return Err(e),
                }
            }
            Storage::BlobSealed => match self.vault.get(meta.round, &meta.body_sha256) {
                Ok(b) => b.to_vec(),
                Err(StoreError::Shredded { .. }) => {
                    shredded = true;
                    Vec::new()
                }
                Err(StoreError::Corrupt { what, .. }) => return Err(tampered(seq, what)),
                Err(e) => return Err(e),
            },
        };
        if !shredded && (body.len() as u64 != meta.body_len || sha256(&body) != meta.body_sha256) {
            return Err(tampered(seq, "body does not match its digest"));
        }
        Ok(Event {
            seq,
            round: meta.round,
            kind: meta.kind,
            phase: meta.phase,
            sender: meta.sender,
            body,
            body_sha256: meta.body_sha256,
            response: meta.response,
            shredded,
        })
    }

    pub(super) fn public_blob_path(&self, digest: &[u8; 32]) -> PathBuf {
        self.public_dir
            .join(format!("{}.blob", hex::encode(digest)))
    }

    pub(super) fn validate(&self, ev: &NewEvent) -> Result<()> {
        to_i64(ev.round, "round")?;
        if ev.body.len() > self.opts.max_body {
            return Err(StoreError::TooLarge {
                what: "event body",
                len: ev.body.len() as u64,
                max: self.opts.max_body as u64,
            });
        }
        if let Some(r) = &ev.response
            && r.len() > self.opts.max_response
        {
            return Err(StoreError::TooLarge {
                what: "stored response",
                len: r.len() as u64,
                max: self.opts.max_response as u64,
            });
        }
        if matches!(ev.kind, EventKind::Upload | EventKind::Download) && ev.sender.is_none() {
            return Err(StoreError::InvalidInput {
                what: "event sender",
                why: "uploads and downloads name their site",
            });
        }
        if ev.kind.is_secret() && self.vault.is_shredded(ev.round) {
            return Err(StoreError::Shredded { round: ev.round });
        }
        Ok(())
    }

    pub(super) fn round_has_secrets(&self, round: u64) -> Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM events WHERE round = ?1 AND storage IN (1, 3)",
            [to_i64(round, "round")?],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    pub(super) fn refuse_duplicate(tx: &Connection, meta: &RowMeta) -> Result<()> {
        let kind = match meta.kind {
            EventKind::Upload => "upload",
            EventKind::Download => "download",
            _ => return Ok(()),
        };
        let exists: Option<i64> = tx
            .prepare_cached(
                "SELECT seq FROM events WHERE kind = ?1 AND round = ?2 AND phase = ?3 AND sender = ?4",
            )?
            .query_row(
                params![meta.kind.code(), to_i64(meta.round, "round")?, meta.phase, meta.sender],
                |r| r.get(0),
            )
            .optional()?;
        match (exists, meta.sender) {
            (Some(_), Some(site)) => Err(StoreError::Duplicate {
                kind,
                round: meta.round,
                phase: meta.phase,
                site,
            }),
            _ => Ok(()),
        }
    }

    /// Every event, verified (chain and bodies), in order.
    pub(crate) fn replay(&mut self) -> Result<Vec<Event>> {
        let (seq, hash, _) = self.verify_chain()?;
        if (seq, hash) != (self.head_seq, self.head_hash) {
            return Err(tampered(
                seq,
                "log head differs from the one this writer committed",
            ));
        }
        let events = self.select_events("", &[])?;
        match Self::first_missing(1..=self.head_seq, &events) {
            Some(seq) => Err(tampered(seq, "row missing (gap in sequence numbers)")),
            None => Ok(events),
        }
    }

    /// The events of one round, verified, in order.
    pub(crate) fn events_for_round(&mut self, round: u64) -> Result<Vec<Event>> {
        let r = to_i64(round, "round")?;
        let events = self.select_events("WHERE round = ?1", &[&r])?;
        let expected = (1..=self.head_seq).filter(|s| self.chain[(s - 1) as usize].1 == round);
        match Self::first_missing(expected, &events) {
            Some(seq) => Err(tampered(seq, "row of this round missing")),
            None => Ok(events),
        }
    }

    /// The stored upload for a key, its row hash checked.
    pub(crate) fn lookup_upload(
        &mut self,
        round: u64,
        phase: u8,
        sender: u32,
    ) -> Result<Option<StoredUpload>> {
        let Some(ev) = self.keyed(EventKind::Upload, round, phase, sender, false)? else {
            return Ok(None);
        };
        Ok(Some(StoredUpload {
            seq: ev.0.seq,
            body_sha256: ev.0.body_sha256,
            response: ev.0.response,
        }))
    }

    /// The stored download body for a recipient, verified.
    pub(crate) fn download(
        &mut self,
        round: u64,
        phase: u8,
        recipient: u32,
    ) -> Result<Option<Vec<u8>>> {
        let Some((meta, inline)) =
            self.keyed(EventKind::Download, round, phase, recipient, true)?
        else {
            return Ok(None);
        };
        let ev = self.load_body(meta, inline)?;
        if ev.shredded {
            return Err(StoreError::Shredded { round });
        }
        Ok(Some(ev.body))
    }

    fn keyed(
        &mut self,
        kind: EventKind,
        round: u64,
        phase: u8,
        site: u32,
        with_body: bool,
    ) -> Result<Option<(RowMeta, Option<Vec<u8>>)>> {
        let found = self
            .conn
            .query_row(
                &format!(
                    "SELECT {ROW_COLUMNS}, {} FROM events
                     WHERE kind = ?1 AND round = ?2 AND phase = ?3 AND sender = ?4",
                    if with_body { "body" } else { "NULL" }
                ),
                params![kind.code(), to_i64(round, "round")?, phase, site],
                |row| Ok((row_meta(row), row.get::<_, Option<Vec<u8>>>(10)?)),
            )
            .optional()?;
        let Some((meta, inline)) = found else {
            return Ok(None);
        };
        let (meta, hash) = meta?;
        self.check_known(&meta, &hash)?;
        Ok(Some((meta, inline)))
    }

    /// Crypto-shreds a round's secret bodies (see [`crate::BlobVault::shred_round`]).
    pub(crate) fn shred_round(&mut self, round: u64) -> Result<()> {
        self.vault.shred_round(round)
    }

    pub(crate) fn head(&self) -> (u64, [u8; 32]) {
        (self.head_seq, self.head_hash)
    }

    pub(crate) fn durability(&self) -> Result<Durability> {
        durability(&self.conn)
    }
}
