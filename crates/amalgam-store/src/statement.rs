//! The decryptor's once-per-round statement store.
//!
//! A decryptor signs at most one statement per round (what it will help decrypt). Before it
//! releases a signature it calls [`StatementStore::record_once`], which commits the statement
//! (SQLite, `synchronous=FULL`) and answers [`Recorded::New`]; the same bytes again are
//! [`Recorded::Same`] (a re-send after a crash may re-release the same signature); different
//! bytes for that round are [`StoreError::SecondStatement`]. A crash after the commit and
//! before the signature left therefore never lets a second statement through.
//!
//! `<db>.anchor` (a [`HighWater`]) holds how many statements were recorded, raised after
//! each commit; a database holding fewer is refused at open with [`StoreError::Truncated`]
//! (restored from an older backup, write-ahead log deleted), because it would have
//! forgotten a statement and let a second one through. A count rather than the highest
//! round, since rounds need not be recorded in order. Restoring the database *and* its
//! anchor from backups defeats this; the operations rules forbid restoring either.
//!
//! Seeds and per-piece sums go in the store's [`BlobVault`] (`<db>.vault/`), shredded at the
//! round's deadline with [`BlobVault::shred_round`].

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::crypto::sha256;
use crate::error::{Result, StoreError};
use crate::eventlog::Durability;
use crate::fault::fault_point;
use crate::fs::{parent_of, refuse_network_fs};
use crate::highwater::HighWater;
use crate::lock::LockFile;
use crate::sqlite::{check_schema, configure, durability, integrity_check, sibling};
use crate::vault::BlobVault;

const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS statements(
    round INTEGER PRIMARY KEY,
    sha256 BLOB NOT NULL,
    statement BLOB NOT NULL
) STRICT;
CREATE TRIGGER IF NOT EXISTS statements_no_update BEFORE UPDATE ON statements
    BEGIN SELECT RAISE(ABORT, 'statements are recorded once'); END;
CREATE TRIGGER IF NOT EXISTS statements_no_delete BEFORE DELETE ON statements
    BEGIN SELECT RAISE(ABORT, 'statements are recorded once'); END;
";

/// Default largest statement: 1 MiB.
pub const DEFAULT_MAX_STATEMENT: usize = 1024 * 1024;
/// Default largest vault blob (seeds, per-piece sums): 64 MiB.
pub const DEFAULT_MAX_VAULT_BLOB: u64 = 64 * 1024 * 1024;

/// Whether [`StatementStore::record_once`] recorded a new statement or found the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First statement for the round, now committed.
    New,
    /// The identical statement was already committed.
    Same,
}

/// The decryptor's statement database and its round vault.
#[derive(Debug)]
pub struct StatementStore {
    conn: Connection,
    path: PathBuf,
    vault: BlobVault,
    max_statement: usize,
    /// Statements recorded, as this store and its anchor know.
    recorded: u64,
    anchor: HighWater,
    _lock: LockFile,
}

fn round_i64(round: u64) -> Result<i64> {
    i64::try_from(round).map_err(|_| StoreError::InvalidInput {
        what: "round",
        why: "above i64::MAX",
    })
}

fn check_row(path: &Path, max: usize, digest: &[u8], statement: &[u8]) -> Result<()> {
    if statement.len() > max || sha256(statement).as_slice() != digest {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            what: "a recorded statement does not match its digest",
        });
    }
    Ok(())
}

impl StatementStore {
    /// Opens (creating) the statement database at `path`, taking `<path>.lock`.
    pub fn open(path: &Path) -> Result<Self> {
        refuse_network_fs(parent_of(path))?;
        let lock = LockFile::acquire(path)?;
        let conn = Connection::open(path)?;
        configure(&conn, path)?;
        check_schema(&conn, path, SCHEMA, SCHEMA_VERSION)?;
        integrity_check(&conn, path)?;
        let anchor_path = sibling(path, ".anchor");
        let mut anchor = HighWater::load(&anchor_path)?;
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM statements", [], |r| r.get(0))?;
        let recorded = u64::try_from(count).unwrap_or(0);
        if recorded < anchor.value() {
            return Err(StoreError::Truncated {
                path: anchor_path,
                found: recorded,
                anchored: anchor.value(),
            });
        }
        // More rows than anchored: a crash between a commit and its anchor update.
        anchor.advance(recorded)?;
        let vault = BlobVault::open(&sibling(path, ".vault"), DEFAULT_MAX_VAULT_BLOB)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            vault,
            max_statement: DEFAULT_MAX_STATEMENT,
            recorded,
            anchor,
            _lock: lock,
        })
    }

    /// Sets the largest statement accepted (default 1 MiB).
    pub fn with_max_statement(mut self, max: usize) -> Self {
        self.max_statement = max;
        self
    }

    /// Records `statement` as the round's only statement; see the module docs.
    pub fn record_once(&mut self, round: u64, statement: &[u8]) -> Result<Recorded> {
        if statement.len() > self.max_statement {
            return Err(StoreError::TooLarge {
                what: "statement",
                len: statement.len() as u64,
                max: self.max_statement as u64,
            });
        }
        let r = round_i64(round)?;
        let digest = sha256(statement);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<(Vec<u8>, Vec<u8>)> = tx
            .query_row(
                "SELECT sha256, statement FROM statements WHERE round = ?1",
                [r],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if let Some((stored_digest, stored)) = existing {
            check_row(&self.path, self.max_statement, &stored_digest, &stored)?;
            return if stored == statement {
                Ok(Recorded::Same)
            } else {
                Err(StoreError::SecondStatement { round })
            };
        }
        tx.execute(
            "INSERT INTO statements(round, sha256, statement) VALUES (?1, ?2, ?3)",
            params![r, digest.as_slice(), statement],
        )?;
        fault_point("statement-before-commit", round);
        tx.commit()?;
        fault_point("statement-after-commit", round);
        // Before the caller may release its signature: the anchor now remembers this row.
        self.recorded += 1;
        self.anchor.advance(self.recorded)?;
        Ok(Recorded::New)
    }

    /// The statement recorded for `round`, checked against its digest.
    pub fn statement(&self, round: u64) -> Result<Option<Vec<u8>>> {
        let found: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT sha256, statement FROM statements WHERE round = ?1",
                [round_i64(round)?],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        match found {
            None => Ok(None),
            Some((digest, statement)) => {
                check_row(&self.path, self.max_statement, &digest, &statement)?;
                Ok(Some(statement))
            }
        }
    }

    /// The round vault for seeds and per-piece sums.
    pub fn vault(&mut self) -> &mut BlobVault {
        &mut self.vault
    }

    /// The durability pragmas this store's connection runs with.
    pub fn durability(&self) -> Result<Durability> {
        durability(&self.conn)
    }
}
