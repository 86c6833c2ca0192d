//! A high-water mark in a file that never goes backwards (the highest round or epoch a site
//! or server has accepted), so that a restart cannot be talked into an older round.
//!
//! File: `MAGIC ‖ value (u64 BE) ‖ SHA-256(MAGIC ‖ value)[..8]`, replaced atomically. The
//! checksum catches a torn or bit-flipped file; it is not a signature (whoever can write the
//! file can set any value).

use std::path::{Path, PathBuf};

use crate::crypto::sha256;
use crate::error::{Result, StoreError};
use crate::fs::{atomic_write, read_bounded};

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

impl HighWater {
    /// Loads the mark at `path` (0 when there is no file yet). A file of the wrong length,
    /// header or checksum is [`StoreError::Corrupt`].
    pub fn load(path: &Path) -> Result<Self> {
        let value = match read_bounded(path, LEN as u64, "high-water file")? {
            None => 0,
            Some(bytes) => {
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
                value
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            value,
        })
    }

    /// The current mark.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// Raises the mark to `value` durably before returning; the same value is a no-op, a
    /// lower one is [`StoreError::Backwards`] and changes nothing.
    pub fn advance(&mut self, value: u64) -> Result<()> {
        if value < self.value {
            return Err(StoreError::Backwards {
                path: self.path.clone(),
                current: self.value,
                requested: value,
            });
        }
        if value > self.value {
            atomic_write(&self.path, &encode(value), 0o600)?;
            self.value = value;
        }
        Ok(())
    }
}
