//! A high-water mark in a file that never goes backwards (the highest round or epoch a site
//! or server has accepted), so that a restart cannot be talked into an older round.
//!
//! File: `MAGIC ‖ value (u64 BE) ‖ SHA-256(MAGIC ‖ value)[..8]`, replaced atomically. The
//! checksum catches a torn or bit-flipped file; it is not a signature (whoever can write the
//! file can set any value).
//!
//! `advance` takes an exclusive lock on `<path>.lock`, re-reads the file under it and only
//! then writes, so a second instance on the same path (another process, a stale handle)
//! cannot lower the mark from its out-of-date in-memory value.

use std::path::{Path, PathBuf};

use crate::crypto::sha256;
use crate::error::{Result, StoreError};
use crate::fs::{atomic_write, read_bounded};
use crate::lock::LockFile;

const MAGIC: &[u8; 8] = b"AMHWM\x00\x00\x01";
const LEN: usize = 8 + 8 + 8;

/// A monotone counter persisted at a path.
#[derive(Debug)]
pub struct HighWater {
    path: PathBuf,
    value: u64,
}

fn encode(value: u64) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&value.to_be_bytes());
    let check = sha256(&out[..16]);
    out[16..].copy_from_slice(&check[..8]);
    out
}

/// The stored value (0 when there is no file).
fn read(path: &Path) -> Result<u64> {
    let Some(bytes) = read_bounded(path, LEN as u64, "high-water file")? else {
        return Ok(0);
    };
    let corrupt = |what| StoreError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    if bytes.len() != LEN || !bytes.starts_with(MAGIC) {
        return Err(corrupt("not a high-water file"));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&bytes[8..16]);
    let value = u64::from_be_bytes(v);
    if encode(value).as_slice() != bytes.as_slice() {
        return Err(corrupt("high-water checksum mismatch"));
    }
    Ok(value)
}

impl HighWater {
    /// Loads the mark at `path` (0 when there is no file yet). A file of the wrong length,
    /// header or checksum is [`StoreError::Corrupt`].
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            value: read(path)?,
        })
    }

    /// The current mark.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// Raises the mark to `value` durably before returning; the same value is a no-op, a
    /// value below the *stored* mark (re-read under the lock, so another instance's advance
    /// counts) is [`StoreError::Backwards`] and changes nothing.
    pub fn advance(&mut self, value: u64) -> Result<()> {
        let _lock = LockFile::acquire_blocking(&self.path)?;
        let stored = read(&self.path)?.max(self.value);
        self.value = stored;
        if value < stored {
            return Err(StoreError::Backwards {
                path: self.path.clone(),
                current: stored,
                requested: value,
            });
        }
        if value > stored {
            atomic_write(&self.path, &encode(value), 0o600)?;
            self.value = value;
        }
        Ok(())
    }
}
