//! Site state at rest: files sealed with ChaCha20-Poly1305 under a state key kept in its own
//! 0600 file, written atomically (temp, fsync, rename, fsync directory).
//!
//! The associated data binds every sealed file to the file name, the consortium, the site,
//! the round, the phase and the format version: a file copied to another name, round or phase
//! does not open. This module has the API of `amalgam-store`'s sealed state (`StateKey`,
//! `SealedStore`, `StateAad`, `HighWater`, `atomic_write`) so that it can be swapped for that
//! crate without touching the agent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use zeroize::Zeroizing;

/// Magic of a sealed file.
const MAGIC: &[u8; 8] = b"AMSEAL01";
/// Domain separation of the associated data.
const AAD_DOMAIN: &[u8] = b"amalgam/v1/site/sealed-state\0";
/// Largest sealed file accepted (a site snapshot of a 1M-element round is about 8 MiB).
pub const MAX_SEALED_BYTES: u64 = 256 << 20;
/// Name of the state key file inside a state directory.
pub const STATE_KEY_FILE: &str = "state.key";

/// Failures of the sealed state.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A key file or state directory is readable by others.
    #[error(
        "{path} has mode {mode:o}; run `chmod {want:o} {path}` (state files hold round secrets)"
    )]
    Permissions {
        /// The path.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
        /// The mode required.
        want: u32,
    },
    /// The key file is not 32 bytes.
    #[error("{0} is not a 32-byte state key")]
    BadKey(PathBuf),
    /// A file name outside `[A-Za-z0-9._-]`.
    #[error("invalid sealed file name {0:?}")]
    BadName(String),
    /// The file is larger than [`MAX_SEALED_BYTES`].
    #[error("{path} holds {len} bytes, more than the {max} a sealed state file may hold")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Wrong magic, too short, or the tag does not verify for this name, site, round, phase
    /// and version (tampered, or moved from another place).
    #[error("{0} does not open: tampered, or sealed for another name, round or phase")]
    Unsealable(PathBuf),
    /// The high-water mark would go backwards.
    #[error("high-water mark at {path} is {current}; refusing to move it back to {requested}")]
    Backwards {
        /// The file.
        path: PathBuf,
        /// The recorded mark.
        current: u64,
        /// The requested mark.
        requested: u64,
    },
    /// No randomness from the operating system.
    #[error("no randomness from the operating system")]
    Entropy,
    /// File system failure.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SealError + '_ {
    move |source| SealError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically with permissions `mode`: a temporary file in the same
/// directory, fsync, rename over `path`, fsync of the directory. A crash leaves either the old
/// or the new content.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Refuses `path` when its mode grants anything beyond `want`.
fn check_mode(path: &Path, want: u32) -> Result<(), SealError> {
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & !want != 0 {
        return Err(SealError::Permissions {
            path: path.to_owned(),
            mode,
            want,
        });
    }
    Ok(())
}

/// The 32-byte key that seals a site's state, in its own 0600 file; wiped on drop.
pub struct StateKey(Zeroizing<[u8; 32]>);

impl core::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("StateKey(<redacted>)")
    }
}

impl StateKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Result<Self, SealError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).map_err(|_| SealError::Entropy)?;
        Ok(Self(key))
    }

    /// Loads the key at `path`, refusing a file readable by group or others.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        check_mode(path, 0o600)?;
        let bytes = Zeroizing::new(fs::read(path).map_err(io_err(path))?);
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SealError::BadKey(path.to_owned()))?;
        Ok(Self(Zeroizing::new(key)))
    }

    /// Loads the key at `path`, or creates it (0600) when absent.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        if path.exists() {
            return Self::load(path);
        }
        let key = Self::generate()?;
        atomic_write(path, key.0.as_ref(), 0o600).map_err(io_err(path))?;
        Ok(key)
    }
}

/// What a sealed file is bound to (the AEAD associated data, with the file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateAad {
    /// The consortium the state belongs to.
    pub consortium_digest: [u8; 32],
    /// The site's index in the manifest.
    pub site: u16,
    /// The round (0 for state that is not a round's).
    pub round: u64,
    /// The phase or state step (0 when not a round's).
    pub phase: u8,
    /// The format version of the plaintext.
    pub version: u8,
}

impl StateAad {
    fn bytes(&self, name: &str) -> Vec<u8> {
        let mut b = Vec::with_capacity(AAD_DOMAIN.len() + name.len() + 52);
        b.extend_from_slice(AAD_DOMAIN);
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&self.consortium_digest);
        b.extend_from_slice(&self.site.to_be_bytes());
        b.extend_from_slice(&self.round.to_be_bytes());
        b.push(self.phase);
        b.push(self.version);
        b
    }
}

/// A directory of sealed state files (0700), one key.
pub struct SealedStore {
    dir: PathBuf,
    cipher: ChaCha20Poly1305,
}

impl core::fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SealedStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn check_name(name: &str) -> Result<(), SealError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SealError::BadName(name.to_owned()))
    }
}

/// The file-name prefix of round `round`'s files (removed by [`SealedStore::delete_round`]).
pub fn round_prefix(round: u64) -> String {
    format!("round-{round}.")
}

impl SealedStore {
    /// Opens `dir` (created 0700 if absent; refused if group or others may read it).
    pub fn open(dir: &Path, key: &StateKey) -> Result<Self, SealError> {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        }
        check_mode(dir, 0o700)?;
        Ok(Self {
            dir: dir.to_owned(),
            cipher: ChaCha20Poly1305::new(&Key::from(*key.0)),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Seals `bytes` under a fresh random nonce and writes them atomically to `name`.
    pub fn put(&self, name: &str, aad: &StateAad, bytes: &[u8]) -> Result<(), SealError> {
        check_name(name)?;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|_| SealError::Entropy)?;
        let path = self.dir.join(name);
        let ad = aad.bytes(name);
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: bytes,
                    aad: &ad,
                },
            )
            .map_err(|_| SealError::Unsealable(path.clone()))?;
        let mut file = Vec::with_capacity(MAGIC.len() + 12 + ct.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&nonce);
        file.extend_from_slice(&ct);
        atomic_write(&path, &file, 0o600).map_err(io_err(&path))
    }

    /// Opens `name` sealed for `aad`; `None` when there is no such file.
    pub fn get(&self, name: &str, aad: &StateAad) -> Result<Option<Zeroizing<Vec<u8>>>, SealError> {
        check_name(name)?;
        let path = self.dir.join(name);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        if meta.len() > MAX_SEALED_BYTES {
            return Err(SealError::TooLarge {
                path,
                len: meta.len(),
                max: MAX_SEALED_BYTES,
            });
        }
        let file = fs::read(&path).map_err(io_err(&path))?;
        let header = MAGIC.len() + 12;
        if file.len() < header + 16 || &file[..MAGIC.len()] != MAGIC {
            return Err(SealError::Unsealable(path));
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&file[MAGIC.len()..header]);
        let ad = aad.bytes(name);
        let pt = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &file[header..],
                    aad: &ad,
                },
            )
            .map_err(|_| SealError::Unsealable(path))?;
        Ok(Some(Zeroizing::new(pt)))
    }

    /// Removes `name` (no error when absent), then syncs the directory.
    pub fn delete(&self, name: &str) -> Result<(), SealError> {
        check_name(name)?;
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&path)(e)),
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }

    /// Removes every file of round `round` (names starting with [`round_prefix`]): the round's
    /// secrets are gone once it ends.
    pub fn delete_round(&self, round: u64) -> Result<(), SealError> {
        let prefix = round_prefix(round);
        let entries = fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&self.dir))?;
            if let Some(name) = entry.file_name().to_str()
                && name.starts_with(&prefix)
            {
                self.delete(name)?;
            }
        }
        Ok(())
    }
}

/// A persisted mark that only moves forward (the highest round id this site ever claimed).
#[derive(Debug)]
pub struct HighWater;

impl HighWater {
    /// The mark at `path` (`None` when absent). Strict: 8 big-endian bytes.
    pub fn load(path: &Path) -> Result<Option<u64>, SealError> {
        match fs::read(path) {
            Ok(b) => {
                let arr: [u8; 8] = b
                    .as_slice()
                    .try_into()
                    .map_err(|_| SealError::Unsealable(path.to_owned()))?;
                Ok(Some(u64::from_be_bytes(arr)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Raises the mark to `value`; refuses to lower it (equal is a no-op).
    pub fn advance(path: &Path, value: u64) -> Result<(), SealError> {
        if let Some(current) = Self::load(path)? {
            if value < current {
                return Err(SealError::Backwards {
                    path: path.to_owned(),
                    current,
                    requested: value,
                });
            }
            if value == current {
                return Ok(());
            }
        }
        atomic_write(path, &value.to_be_bytes(), 0o600).map_err(io_err(path))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn aad(round: u64, phase: u8) -> StateAad {
        StateAad {
            consortium_digest: [7; 32],
            site: 2,
            round,
            phase,
            version: 1,
        }
    }

    #[test]
    fn sealed_file_opens_only_where_it_was_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let sdir = dir.path().join("state");
        let key = StateKey::load_or_create(&dir.path().join("k")).unwrap();
        let store = SealedStore::open(&sdir, &key).unwrap();
        store.put("round-3.state-1", &aad(3, 1), b"secret").unwrap();
        assert_eq!(
            store
                .get("round-3.state-1", &aad(3, 1))
                .unwrap()
                .unwrap()
                .as_slice(),
            b"secret"
        );
        // Moved to another round's or phase's name, or opened for another round/phase/site.
        fs::copy(sdir.join("round-3.state-1"), sdir.join("round-4.state-1")).unwrap();
        fs::copy(sdir.join("round-3.state-1"), sdir.join("round-3.state-2")).unwrap();
        assert!(store.get("round-4.state-1", &aad(4, 1)).is_err());
        assert!(store.get("round-3.state-2", &aad(3, 2)).is_err());
        assert!(store.get("round-3.state-1", &aad(3, 2)).is_err());
        let mut other_site = aad(3, 1);
        other_site.site = 1;
        assert!(store.get("round-3.state-1", &other_site).is_err());
        // A flipped byte.
        let mut bytes = fs::read(sdir.join("round-3.state-1")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(sdir.join("round-3.state-1"), bytes).unwrap();
        assert!(store.get("round-3.state-1", &aad(3, 1)).is_err());
        // Another key.
        store.put("round-3.state-1", &aad(3, 1), b"secret").unwrap();
        let other = SealedStore::open(&sdir, &StateKey::generate().unwrap()).unwrap();
        assert!(other.get("round-3.state-1", &aad(3, 1)).is_err());
        store.delete_round(3).unwrap();
        assert!(store.get("round-3.state-1", &aad(3, 1)).unwrap().is_none());
        assert!(store.get("../x", &aad(3, 1)).is_err());
    }

    #[test]
    fn wide_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let kp = dir.path().join("k");
        StateKey::load_or_create(&kp).unwrap();
        fs::set_permissions(&kp, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            StateKey::load(&kp),
            Err(SealError::Permissions { mode: 0o644, .. })
        ));
        let sdir = dir.path().join("s");
        fs::create_dir(&sdir).unwrap();
        fs::set_permissions(&sdir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            SealedStore::open(&sdir, &StateKey::generate().unwrap()),
            Err(SealError::Permissions { .. })
        ));
    }

    #[test]
    fn high_water_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hw");
        assert_eq!(HighWater::load(&p).unwrap(), None);
        HighWater::advance(&p, 5).unwrap();
        HighWater::advance(&p, 5).unwrap();
        assert!(HighWater::advance(&p, 4).is_err());
        HighWater::advance(&p, 9).unwrap();
        assert_eq!(HighWater::load(&p).unwrap(), Some(9));
    }
}
