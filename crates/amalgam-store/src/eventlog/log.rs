//! The writer-owned side of the event log: the SQLite connection, the round vault, the
//! public blob directory and the chain head. Only the writer thread touches it.

use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::chain::{RowMeta, Storage};
use super::types::{Durability, Event, EventKind, EventLogOptions, NewEvent, StoredUpload};
use super::types::{MAX_META_KEY, MAX_META_VALUE, MAX_NONCE};
use crate::crypto::sha256;
use crate::error::{Result, StoreError};
use crate::fault::fault_point;
use crate::fs::{parent_of, private_dir, read_bounded, refuse_network_fs, sync_dir, write_temp};
use crate::lock::LockFile;
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

const ROW_COLUMNS: &str =
    "seq, round, kind, phase, sender, storage, body_len, body_sha256, response, row_hash";

/// Applies the durability pragmas every Amalgam database runs with and checks they took.
pub(crate) fn configure(conn: &Connection, path: &Path) -> Result<()> {
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            what: "SQLite refused journal_mode=WAL on this file system",
        });
    }
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    conn.busy_timeout(std::time::Duration::from_secs(0))?;
    Ok(())
}

/// Reads the durability pragmas back.
pub(crate) fn durability(conn: &Connection) -> Result<Durability> {
    Ok(Durability {
        journal_mode: conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
        synchronous: conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
        foreign_keys: conn.query_row("PRAGMA foreign_keys", [], |r| r.get::<_, i64>(0))? == 1,
    })
}

/// Checks (or, on a fresh file, sets) the schema version.
pub(crate) fn check_schema(
    conn: &Connection,
    path: &Path,
    schema: &str,
    version: i64,
) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found == 0 {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {schema} PRAGMA user_version={version}; COMMIT;"
        ))?;
    } else if found != version {
        return Err(StoreError::SchemaVersion {
            path: path.to_path_buf(),
            found,
            expected: version,
        });
    }
    Ok(())
}

/// The sibling path `<db><suffix>`.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The writer side of an open event log (see [`super::EventLogHandle`] for the API).
pub struct EventLog {
    conn: Connection,
    vault: BlobVault,
    public_dir: PathBuf,
    opts: EventLogOptions,
    head_seq: u64,
    head_hash: [u8; 32],
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

fn tampered(seq: u64, what: &'static str) -> StoreError {
    StoreError::Tampered { seq, what }
}

/// Decodes a row's chained fields, naming the row in every refusal.
fn row_meta(row: &Row<'_>) -> Result<(RowMeta, [u8; 32])> {
    let raw_seq: i64 = row.get(0)?;
    let seq = u64::try_from(raw_seq)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| tampered(0, "sequence number below 1"))?;
    let bad = |what| tampered(seq, what);
    let round = u64::try_from(row.get::<_, i64>(1)?).map_err(|_| bad("negative round"))?;
    let kind = u32::try_from(row.get::<_, i64>(2)?)
        .ok()
        .and_then(EventKind::from_code)
        .ok_or_else(|| bad("unknown event kind"))?;
    let phase = u8::try_from(row.get::<_, i64>(3)?).map_err(|_| bad("phase out of range"))?;
    let sender = match row.get::<_, Option<i64>>(4)? {
        None => None,
        Some(s) => Some(u32::try_from(s).map_err(|_| bad("sender out of range"))?),
    };
    let storage = Storage::from_code(row.get(5)?).ok_or_else(|| bad("unknown storage"))?;
    let body_len = u64::try_from(row.get::<_, i64>(6)?).map_err(|_| bad("negative length"))?;
    let body_sha256: [u8; 32] = row
        .get::<_, Vec<u8>>(7)?
        .try_into()
        .map_err(|_| bad("body digest is not 32 bytes"))?;
    let response: Option<Vec<u8>> = row.get(8)?;
    let row_hash: [u8; 32] = row
        .get::<_, Vec<u8>>(9)?
        .try_into()
        .map_err(|_| bad("row hash is not 32 bytes"))?;
    let meta = RowMeta {
        seq,
        round,
        kind,
        phase,
        sender,
        storage,
        body_len,
        body_sha256,
        response,
    };
    Ok((meta, row_hash))
}

fn to_i64(v: u64, what: &'static str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::InvalidInput {
        what,
        why: "above i64::MAX",
    })
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
        let vault = BlobVault::open(&sibling(path, ".vault"), opts.max_body as u64)?;
        let public_dir = sibling(path, ".blobs");
        private_dir(&public_dir)?;
        let mut log = Self {
            conn,
            vault,
            public_dir,
            opts,
            head_seq: 0,
            head_hash: [0; 32],
            _lock: lock,
        };
        let (seq, hash) = log.verify_chain()?;
        log.head_seq = seq;
        log.head_hash = hash;
        Ok(log)
    }

    /// Walks every row in order: sequence numbers 1.. without gaps and each row hash equal
    /// to the recomputed chain. Returns the head.
    fn verify_chain(&self) -> Result<(u64, [u8; 32])> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {ROW_COLUMNS} FROM events ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        let (mut seq, mut prev) = (0u64, [0u8; 32]);
        while let Some(row) = rows.next()? {
            let (meta, stored) = row_meta(row)?;
            Self::check_link(seq, &prev, &meta, &stored)?;
            seq = meta.seq;
            prev = stored;
        }
        Ok((seq, prev))
    }

    fn check_link(prev_seq: u64, prev: &[u8; 32], meta: &RowMeta, stored: &[u8; 32]) -> Result<()> {
        if meta.seq != prev_seq + 1 {
            return Err(tampered(
                prev_seq + 1,
                "row missing (gap in sequence numbers)",
            ));
        }
        if meta.chain_hash(prev) != *stored {
            return Err(tampered(meta.seq, "row hash does not match the chain"));
        }
        Ok(())
    }

    /// The stored hash of row `seq` (zeros for 0).
    fn hash_of(&self, seq: u64) -> Result<[u8; 32]> {
        if seq == 0 {
            return Ok([0; 32]);
        }
        let h: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT row_hash FROM events WHERE seq = ?1",
                [to_i64(seq, "seq")?],
                |r| r.get(0),
            )
            .optional()?;
        h.and_then(|h| h.try_into().ok())
            .ok_or_else(|| tampered(seq, "row missing (gap in sequence numbers)"))
    }

    /// Rows matching `filter` (a WHERE clause over `params`), each checked against its
    /// predecessor's stored hash, with bodies loaded and verified.
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
        let mut prev: Option<(u64, [u8; 32])> = None;
        for (meta, hash, inline) in metas {
            let prev_hash = match prev {
                Some((s, h)) if s + 1 == meta.seq => h,
                _ => self.hash_of(meta.seq - 1)?,
            };
            Self::check_link(meta.seq - 1, &prev_hash, &meta, &hash)?;
            prev = Some((meta.seq, hash));
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
                let path = self.public_blob_path(&meta.body_sha256);
                read_bounded(&path, self.opts.max_body as u64, "blob file")?
                    .ok_or_else(|| tampered(seq, "blob file missing"))?
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

    fn public_blob_path(&self, digest: &[u8; 32]) -> PathBuf {
        self.public_dir
            .join(format!("{}.blob", hex::encode(digest)))
    }

    fn validate(&self, ev: &NewEvent) -> Result<()> {
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

    /// Appends `events` in one transaction; returns their sequence numbers once committed.
    /// Blob files are written and fsynced before the transaction, so a committed row never
    /// names a blob that is not durable. Nothing is appended if any event is refused.
    pub(crate) fn append_batch(&mut self, events: Vec<NewEvent>) -> Result<Vec<u64>> {
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
        let mut synced_rounds = Vec::new();
        let mut public_written = false;
        for (i, ev) in events.into_iter().enumerate() {
            let secret = ev.kind.is_secret();
            let inline = ev.body.len() <= self.opts.inline_max;
            let storage = Storage::choose(secret, inline);
            let digest = sha256(&ev.body);
            let stored_body = match storage {
                Storage::InlinePlain => Some(ev.body.clone()),
                Storage::InlineSealed => Some(self.vault.seal(ev.round, &digest, &ev.body)?),
                Storage::BlobPlain => {
                    let path = self.public_blob_path(&digest);
                    let tmp = write_temp(&path, &ev.body, 0o600)?;
                    fs::rename(&tmp, &path)?;
                    public_written = true;
                    None
                }
                Storage::BlobSealed => {
                    self.vault.write_unsynced(ev.round, &ev.body)?;
                    if !synced_rounds.contains(&ev.round) {
                        synced_rounds.push(ev.round);
                    }
                    None
                }
            };
            let meta = RowMeta {
                seq: self.head_seq + 1 + i as u64,
                round: ev.round,
                kind: ev.kind,
                phase: ev.phase,
                sender: ev.sender,
                storage,
                body_len: ev.body.len() as u64,
                body_sha256: digest,
                response: ev.response,
            };
            rows.push((meta, stored_body));
        }
        for r in synced_rounds {
            self.vault.sync_round(r)?;
        }
        if public_written {
            sync_dir(&self.public_dir)?;
        }
        let first = self.head_seq + 1;
        let tx = self.conn.transaction()?;
        let mut prev = self.head_hash;
        let mut seqs = Vec::with_capacity(rows.len());
        for (meta, body) in &rows {
            Self::refuse_duplicate(&tx, meta)?;
            let hash = meta.chain_hash(&prev);
            tx.execute(
                "INSERT INTO events(seq, round, kind, phase, sender, storage, body_len,
                    body_sha256, body, response, row_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
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
                ],
            )?;
            prev = hash;
            seqs.push(meta.seq);
        }
        fault_point("eventlog-before-commit", first);
        tx.commit()?;
        fault_point("eventlog-after-commit", first);
        self.head_seq += seqs.len() as u64;
        self.head_hash = prev;
        Ok(seqs)
    }

    fn round_has_secrets(&self, round: u64) -> Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM events WHERE round = ?1 AND storage IN (1, 3)",
            [to_i64(round, "round")?],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn refuse_duplicate(tx: &rusqlite::Transaction<'_>, meta: &RowMeta) -> Result<()> {
        let kind = match meta.kind {
            EventKind::Upload => "upload",
            EventKind::Download => "download",
            _ => return Ok(()),
        };
        let exists: Option<i64> = tx
            .query_row(
                "SELECT seq FROM events WHERE kind = ?1 AND round = ?2 AND phase = ?3 AND sender = ?4",
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
        let (seq, hash) = self.verify_chain()?;
        if (seq, hash) != (self.head_seq, self.head_hash) {
            return Err(tampered(
                seq,
                "log head differs from the one this writer committed",
            ));
        }
        self.select_events("", &[])
    }

    /// The events of one round, verified, in order.
    pub(crate) fn events_for_round(&mut self, round: u64) -> Result<Vec<Event>> {
        let r = to_i64(round, "round")?;
        self.select_events("WHERE round = ?1", &[&r])
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
        let prev = self.hash_of(meta.seq - 1)?;
        Self::check_link(meta.seq - 1, &prev, &meta, &hash)?;
        Ok(Some((meta, inline)))
    }

    /// Crypto-shreds a round's secret bodies (see [`crate::BlobVault::shred_round`]).
    pub(crate) fn shred_round(&mut self, round: u64) -> Result<()> {
        self.vault.shred_round(round)
    }

    pub(crate) fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        check_meta(key, value.len())?;
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    pub(crate) fn get_meta(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        check_meta(key, 0)?;
        let v: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        if let Some(v) = &v
            && v.len() > MAX_META_VALUE
        {
            return Err(StoreError::TooLarge {
                what: "stored meta value",
                len: v.len() as u64,
                max: MAX_META_VALUE as u64,
            });
        }
        Ok(v)
    }

    pub(crate) fn insert_nonce(&mut self, nonce: &[u8], expires: u64) -> Result<bool> {
        if nonce.is_empty() || nonce.len() > MAX_NONCE {
            return Err(StoreError::InvalidInput {
                what: "nonce",
                why: "must be 1 to 64 bytes",
            });
        }
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO nonces(nonce, expires) VALUES (?1, ?2)",
            params![nonce, to_i64(expires, "nonce expiry")?],
        )?;
        Ok(n == 1)
    }

    pub(crate) fn purge_nonces(&mut self, expired_before: u64) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM nonces WHERE expires < ?1",
            [to_i64(expired_before, "time")?],
        )?)
    }

    pub(crate) fn head(&self) -> (u64, [u8; 32]) {
        (self.head_seq, self.head_hash)
    }

    pub(crate) fn durability(&self) -> Result<Durability> {
        durability(&self.conn)
    }
}

fn check_meta(key: &str, value_len: usize) -> Result<()> {
    if key.is_empty() || key.len() > MAX_META_KEY {
        return Err(StoreError::InvalidInput {
            what: "meta key",
            why: "must be 1 to 128 bytes",
        });
    }
    if value_len > MAX_META_VALUE {
        return Err(StoreError::TooLarge {
            what: "meta value",
            len: value_len as u64,
            max: MAX_META_VALUE as u64,
        });
    }
    Ok(())
}
