//! SQLite settings shared by the event log and the statement store.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{Result, StoreError};
use crate::eventlog::Durability;

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

/// Runs SQLite's full `integrity_check` (b-tree structure, and index entries against their
/// rows): a flipped byte in an index would otherwise let a uniqueness check miss a row.
pub(crate) fn integrity_check(conn: &Connection, path: &Path) -> Result<()> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let mut rows = stmt.query([])?;
    let first: Option<String> = match rows.next()? {
        Some(row) => Some(row.get(0)?),
        None => None,
    };
    if first.as_deref() != Some("ok") {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            what: "SQLite integrity check failed",
        });
    }
    Ok(())
}
