//! The log's small key-value meta table and its nonce table.

use rusqlite::{OptionalExtension, params};

use super::EventLog;
use super::chain::to_i64;
use super::types::{MAX_META_KEY, MAX_META_VALUE, MAX_NONCE};
use crate::error::{Result, StoreError};

impl EventLog {
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
