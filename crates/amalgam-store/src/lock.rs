//! The exclusive lock that keeps a second process off a store.
//!
//! `<db>.lock` is opened and locked with `File::try_lock` (an `flock` on Linux, held by the
//! open file description): a second open, from this process or another, fails at once with
//! [`StoreError::Locked`] instead of interleaving writes. The lock dies with the process, so a
//! crashed aggregator never leaves a stale lock behind. The lock file's content is unused.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

/// A held exclusive lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct LockFile {
    _file: File,
    path: PathBuf,
}

impl LockFile {
    /// Locks `<path>.lock`, creating it (mode 0600) if needed.
    pub fn acquire(path: &Path) -> Result<Self> {
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let lock_path = PathBuf::from(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)?;
        match file.try_lock() {
            Ok(()) => Ok(Self {
                _file: file,
                path: lock_path,
            }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked { path: lock_path }),
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }

    /// Locks `<path>.lock` like [`Self::acquire`], but waits for another holder instead of
    /// refusing: for short read-check-write sections (a high-water mark's advance).
    pub fn acquire_blocking(path: &Path) -> Result<Self> {
        let lock_path = crate::sqlite::sibling(path, ".lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)?;
        file.lock()?;
        Ok(Self {
            _file: file,
            path: lock_path,
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
