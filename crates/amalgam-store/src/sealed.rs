//! A site's secrets sealed at rest.
//!
//! [`StateKey`] is a 32-byte key in its own file (mode 0600, from OS randomness); loading
//! refuses a file that group or others can access. [`SealedStore`] keeps one file per
//! (round, name): `<dir>/round-<r>/<name>.sealed` =
//! `MAGIC ‖ StateAad ‖ nonce ‖ ChaCha20-Poly1305(bytes)`, the nonce fresh from the OS on
//! every write, the AEAD associated data `DOMAIN ‖ len(name) ‖ name ‖ StateAad`, the file
//! replaced atomically. A file copied to another name, round or phase, or from another
//! consortium or site, does not open: its header differs from what the caller expects
//! ([`StoreError::SealedMismatch`]) or, if the header was edited to match, the tag fails
//! ([`StoreError::Corrupt`]).
//!
//! What this does not stop: someone holding the key file and an old copy of a state file can
//! put the old file back. The site's [`crate::HighWater`] marks and the protocol's rule that a
//! site restores only its latest state (and resumes only before the phase deadline) cover that.

use std::fs;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::crypto;
use crate::error::{Result, StoreError};
use crate::fs::{
    atomic_write, parent_of, private_dir, random_key, read_bounded, read_key_file,
    remove_if_present, sync_dir, write_temp,
};

const MAGIC: &[u8; 8] = b"AMSEAL\x00\x01";
const AAD_DOMAIN: &[u8] = b"amalgam-store/sealed/v1";
const AAD_LEN: usize = 32 + 2 + 8 + 1 + 1;
/// Default largest sealed plaintext: 256 MiB.
pub const DEFAULT_MAX_SEALED: u64 = 256 * 1024 * 1024;

/// The site's state key: 32 bytes, wiped on drop, never printed.
pub struct StateKey {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey([redacted])")
    }
}

impl StateKey {
    /// Mints a key from OS randomness and writes it to `path` (mode 0600). Refuses to
    /// overwrite an existing key file, which would orphan every sealed file: the key is
    /// written and fsynced under a temporary name and then hard-linked to `path`, which
    /// fails if `path` exists — also when another process creates it at the same moment.
    pub fn generate(path: &Path) -> Result<Self> {
        let key = random_key()?;
        let tmp = write_temp(path, &[key.as_ref()], 0o600)?;
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::InvalidInput {
                    what: "state key path",
                    why: "a key file already exists there",
                });
            }
            Err(e) => return Err(e.into()),
        }
        sync_dir(parent_of(path))?;
        Ok(Self { key })
    }

    /// Loads the key at `path`: exactly 32 bytes, not accessible to group or others.
    pub fn load(path: &Path) -> Result<Self> {
        match read_key_file(path)? {
            Some(key) => Ok(Self { key }),
            None => Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no state key at {}", path.display()),
            ))),
        }
    }

    /// Loads the key at `path`, generating it first if there is none.
    pub fn load_or_generate(path: &Path) -> Result<Self> {
        if path.exists() {
            return Self::load(path);
        }
        match Self::generate(path) {
            // Another process minted it between the check and the link: use that one.
            Err(StoreError::InvalidInput { .. }) if path.exists() => Self::load(path),
            other => other,
        }
    }
}

/// What a sealed file is bound to (the AEAD associated data, also stored in its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateAad {
    /// Digest of the consortium manifest the state belongs to.
    pub consortium_digest: [u8; 32],
    /// The site.
    pub site: u16,
    /// The round.
    pub round: u64,
    /// The protocol phase the state was saved at.
    pub phase: u8,
    /// The state format version.
    pub version: u8,
}

impl StateAad {
    fn encode(&self) -> [u8; AAD_LEN] {
        let mut out = [0u8; AAD_LEN];
        out[..32].copy_from_slice(&self.consortium_digest);
        out[32..34].copy_from_slice(&self.site.to_be_bytes());
        out[34..42].copy_from_slice(&self.round.to_be_bytes());
        out[42] = self.phase;
        out[43] = self.version;
        out
    }

    fn decode(b: &[u8; AAD_LEN]) -> Self {
        let mut consortium_digest = [0u8; 32];
        consortium_digest.copy_from_slice(&b[..32]);
        let mut site = [0u8; 2];
        site.copy_from_slice(&b[32..34]);
        let mut round = [0u8; 8];
        round.copy_from_slice(&b[34..42]);
        Self {
            consortium_digest,
            site: u16::from_be_bytes(site),
            round: u64::from_be_bytes(round),
            phase: b[42],
            version: b[43],
        }
    }
}

/// Sealed state files under one directory and one [`StateKey`].
#[derive(Debug)]
pub struct SealedStore {
    dir: PathBuf,
    key: StateKey,
    max_len: u64,
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput {
            what: "sealed state name",
            why: "1 to 64 of [A-Za-z0-9._-], not starting with '.'",
        })
    }
}

fn aead_aad(name: &str, aad: &StateAad) -> Vec<u8> {
    let mut out = Vec::with_capacity(AAD_DOMAIN.len() + 1 + name.len() + AAD_LEN);
    out.extend_from_slice(AAD_DOMAIN);
    // check_name bounds names to 64 bytes.
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&aad.encode());
    out
}

impl SealedStore {
    /// Opens (creating, mode 0700) the store at `dir`; plaintexts above 256 MiB are refused.
    pub fn open(dir: &Path, key: StateKey) -> Result<Self> {
        private_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
            max_len: DEFAULT_MAX_SEALED,
        })
    }

    /// Sets the largest plaintext accepted on write and on read.
    pub fn with_max_len(mut self, max_len: u64) -> Self {
        self.max_len = max_len;
        self
    }

    fn round_dir(&self, round: u64) -> PathBuf {
        self.dir.join(format!("round-{round}"))
    }

    fn path(&self, name: &str, round: u64) -> PathBuf {
        self.round_dir(round).join(format!("{name}.sealed"))
    }

    /// Seals `bytes` as `name` for `aad.round`, replacing any earlier file atomically.
    pub fn put(&self, name: &str, aad: &StateAad, bytes: &[u8]) -> Result<()> {
        check_name(name)?;
        if bytes.len() as u64 > self.max_len {
            return Err(StoreError::TooLarge {
                what: "sealed state",
                len: bytes.len() as u64,
                max: self.max_len,
            });
        }
        let sealed = crypto::seal(&self.key.key, &aead_aad(name, aad), bytes)?;
        let mut file = Vec::with_capacity(MAGIC.len() + AAD_LEN + sealed.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&aad.encode());
        file.extend_from_slice(&sealed);
        let path = self.path(name, aad.round);
        private_dir(parent_of(&path))?;
        Ok(atomic_write(&path, &file, 0o600)?)
    }

    fn read(&self, name: &str, round: u64) -> Result<Option<(PathBuf, Vec<u8>)>> {
        check_name(name)?;
        let path = self.path(name, round);
        let limit =
            self.max_len + (MAGIC.len() + AAD_LEN + crypto::NONCE_LEN + crypto::TAG_LEN) as u64;
        let Some(bytes) = read_bounded(&path, limit, "sealed state file")? else {
            return Ok(None);
        };
        if bytes.len() < MAGIC.len() + AAD_LEN || !bytes.starts_with(MAGIC) {
            return Err(StoreError::Corrupt {
                path,
                what: "not a sealed state file (bad header)",
            });
        }
        Ok(Some((path, bytes)))
    }

    /// The header of `name` in `round` — where and when it claims to belong — read without
    /// authenticating it (so a restarting site can learn the phase to ask [`Self::get`] for).
    pub fn stored_aad(&self, name: &str, round: u64) -> Result<Option<StateAad>> {
        let Some((_, bytes)) = self.read(name, round)? else {
            return Ok(None);
        };
        let mut header = [0u8; AAD_LEN];
        header.copy_from_slice(&bytes[MAGIC.len()..MAGIC.len() + AAD_LEN]);
        Ok(Some(StateAad::decode(&header)))
    }

    /// Opens `name` for `aad` (its round selects the file). `Ok(None)` when absent;
    /// [`StoreError::SealedMismatch`] when it was sealed for something else;
    /// [`StoreError::Corrupt`] when it does not authenticate.
    pub fn get(&self, name: &str, aad: &StateAad) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let Some((path, bytes)) = self.read(name, aad.round)? else {
            return Ok(None);
        };
        let (header, sealed) = bytes[MAGIC.len()..].split_at(AAD_LEN);
        if header != aad.encode().as_slice() {
            return Err(StoreError::SealedMismatch { path });
        }
        match crypto::open(&self.key.key, &aead_aad(name, aad), sealed) {
            Some(plain) => Ok(Some(plain)),
            None => Err(StoreError::Corrupt {
                path,
                what: "sealed state does not authenticate under this key, name and binding",
            }),
        }
    }

    /// Deletes `name` in `round` (durably); absent is fine.
    pub fn delete(&self, name: &str, round: u64) -> Result<()> {
        check_name(name)?;
        let path = self.path(name, round);
        remove_if_present(&path)?;
        match sync_dir(parent_of(&path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Deletes every sealed file of `round` (durably).
    pub fn delete_round(&self, round: u64) -> Result<()> {
        match fs::remove_dir_all(self.round_dir(round)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        Ok(sync_dir(&self.dir)?)
    }

    /// The names of `round`'s sealed files, sorted (none when the round has no directory);
    /// files that are not sealed state (a temporary file of an interrupted write) are left
    /// out.
    pub fn names(&self, round: u64) -> Result<Vec<String>> {
        let entries = match fs::read_dir(self.round_dir(round)) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            if let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".sealed"))
                && check_name(n).is_ok()
            {
                out.push(n.to_owned());
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The rounds that have a directory of sealed files, ascending.
    pub fn rounds(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(r) = name
                .to_str()
                .and_then(|n| n.strip_prefix("round-"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                out.push(r);
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}
