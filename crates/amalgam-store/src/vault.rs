//! Per-round encrypted blob vault with crypto-shredding.
//!
//! Upload bodies (masked inputs, and above all homomorphic-fallback ciphertexts, which a
//! decryptor quorum could open) are as sensitive as plaintexts, so they are stored encrypted
//! under a random key per round, and deleting that key erases the round's bodies — including
//! copies of the blobs that file-system journals or a replaced disk still hold. Not copies of
//! the key: the key file lies in the same directory, so a backup or snapshot of the vault
//! directory taken before the shred keeps both and stays readable. Vault directories must be
//! excluded from backups.
//!
//! Layout of a vault directory (mode 0700):
//! - `round-<r>.key`: the round's 32-byte key, mode 0600, minted from OS randomness on the
//!   round's first secret write;
//! - `round-<r>/<sha256 hex>.blob`: `MAGIC ‖ nonce ‖ ChaCha20-Poly1305(body)`, named by the
//!   SHA-256 of the plaintext body, AAD = `"amalgam-store/vault/v1" ‖ round ‖ digest`, so a
//!   blob moved to another round or name fails to open;
//! - `round-<r>.shredded`: the tombstone. `shred_round` writes it first (durably), then deletes
//!   the key (fsync of the directory) and the blobs. An interrupted shred is finished at the
//!   next open. A read of a shredded round is [`StoreError::Shredded`], and a write to it is
//!   refused the same way: a shredded round never gets a new key.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::crypto::{self, sha256};
use crate::error::{Result, StoreError};
use crate::fs::{
    atomic_write, private_dir, random_key, read_bounded, read_key_file, remove_if_present,
    remove_stale_temps, sync_dir, write_temp,
};

/// Header of a blob file.
const MAGIC: &[u8; 8] = b"AMVLT\x00\x00\x01";
/// Domain separation for the blob AAD.
const AAD_DOMAIN: &[u8] = b"amalgam-store/vault/v1";

/// A directory of per-round encrypted blobs. Not shared between threads: the event log's
/// writer thread, or the decryptor's statement store, owns it, under that store's exclusive
/// lock — so the set of shredded rounds read at open stays exact.
pub struct BlobVault {
    dir: PathBuf,
    max_blob: u64,
    keys: HashMap<u64, Zeroizing<[u8; 32]>>,
    shredded: HashSet<u64>,
}

impl std::fmt::Debug for BlobVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobVault")
            .field("dir", &self.dir)
            .field("max_blob", &self.max_blob)
            .field(
                "keys",
                &format_args!("[{} cached, redacted]", self.keys.len()),
            )
            .finish()
    }
}

/// The AEAD associated data binding a sealed body to its round and plaintext digest.
pub(crate) fn body_aad(round: u64, digest: &[u8; 32]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 40);
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(&round.to_be_bytes());
    aad.extend_from_slice(digest);
    aad
}

impl BlobVault {
    /// Opens (creating, mode 0700) the vault at `dir`; blobs longer than `max_blob` bytes are
    /// refused on write and on read. Finishes any shred that a crash interrupted.
    pub fn open(dir: &Path, max_blob: u64) -> Result<Self> {
        private_dir(dir)?;
        let mut vault = Self {
            dir: dir.to_path_buf(),
            max_blob,
            keys: HashMap::new(),
            shredded: HashSet::new(),
        };
        remove_stale_temps(dir)?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with("round-") && entry.file_type()?.is_dir() {
                remove_stale_temps(&entry.path())?;
            }
            if let Some(r) = name
                .strip_prefix("round-")
                .and_then(|s| s.strip_suffix(".shredded"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                vault.erase_round_files(r)?;
                vault.shredded.insert(r);
            }
        }
        Ok(vault)
    }

    fn key_path(&self, round: u64) -> PathBuf {
        self.dir.join(format!("round-{round}.key"))
    }

    fn tombstone_path(&self, round: u64) -> PathBuf {
        self.dir.join(format!("round-{round}.shredded"))
    }

    fn round_dir(&self, round: u64) -> PathBuf {
        self.dir.join(format!("round-{round}"))
    }

    fn blob_path(&self, round: u64, digest: &[u8; 32]) -> PathBuf {
        self.round_dir(round)
            .join(format!("{}.blob", hex::encode(digest)))
    }

    fn round_has_blobs(&self, round: u64) -> Result<bool> {
        match fs::read_dir(self.round_dir(round)) {
            Ok(mut entries) => Ok(entries.next().is_some()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `round` was shredded.
    pub fn is_shredded(&self, round: u64) -> bool {
        self.shredded.contains(&round)
    }

    /// Whether a key exists for `round` (cached or as a file).
    pub fn has_key(&self, round: u64) -> bool {
        self.keys.contains_key(&round) || self.key_path(round).exists()
    }

    /// The round's key: cached, else read from its file, else (when `create`) minted and
    /// written durably. [`StoreError::Shredded`] for a shredded round, and
    /// [`StoreError::KeyMissing`] when absent and `create` is false.
    pub(crate) fn key(&mut self, round: u64, create: bool) -> Result<&[u8; 32]> {
        if self.is_shredded(round) {
            self.keys.remove(&round);
            return Err(StoreError::Shredded { round });
        }
        if !self.keys.contains_key(&round) {
            let path = self.key_path(round);
            let key = match read_key_file(&path)? {
                Some(k) => k,
                // A round that already has blob files keeps its key or nothing: a fresh key
                // would silently orphan them.
                None if create && !self.round_has_blobs(round)? => {
                    let k = random_key()?;
                    atomic_write(&path, k.as_ref(), 0o600)?;
                    k
                }
                None => return Err(StoreError::KeyMissing { round }),
            };
            self.keys.insert(round, key);
        }
        match self.keys.get(&round) {
            Some(k) => Ok(k),
            None => Err(StoreError::KeyMissing { round }),
        }
    }

    /// Encrypts `body` (whose SHA-256 is `digest`) for `round`: `nonce ‖ ciphertext ‖ tag`.
    pub(crate) fn seal(&mut self, round: u64, digest: &[u8; 32], body: &[u8]) -> Result<Vec<u8>> {
        let key = *self.key(round, true)?;
        let key = Zeroizing::new(key);
        crypto::seal(&key, &body_aad(round, digest), body)
    }

    /// Decrypts what [`Self::seal`] produced and checks the plaintext digest; `None` when the
    /// bytes do not authenticate or do not hash to `digest`.
    pub(crate) fn unseal(
        &mut self,
        round: u64,
        digest: &[u8; 32],
        sealed: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let key = Zeroizing::new(*self.key(round, false)?);
        Ok(crypto::open(&key, &body_aad(round, digest), sealed).filter(|p| sha256(p) == *digest))
    }

    /// Writes the blob file for `body` (renamed into place, file fsynced) without the
    /// directory fsync; call [`Self::sync_round`] before acknowledging.
    pub(crate) fn write_unsynced(
        &mut self,
        round: u64,
        digest: &[u8; 32],
        body: &[u8],
    ) -> Result<()> {
        if body.len() as u64 > self.max_blob {
            return Err(StoreError::TooLarge {
                what: "blob",
                len: body.len() as u64,
                max: self.max_blob,
            });
        }
        self.round_writer(round)?.write(digest, body)
    }

    /// A writer of `round`'s blob files that needs no access to the vault: its key (minted
    /// now if the round has none) and its directory (created now). Several blobs of a group
    /// commit are sealed and fsynced by such writers on parallel threads.
    pub(crate) fn round_writer(&mut self, round: u64) -> Result<RoundWriter> {
        let key = Zeroizing::new(*self.key(round, true)?);
        let dir = self.round_dir(round);
        if !dir.exists() {
            private_dir(&dir)?;
        }
        Ok(RoundWriter {
            round,
            key,
            dir,
            max_blob: self.max_blob,
        })
    }

    /// Fsyncs the round's blob directory (its renames become durable).
    pub(crate) fn sync_round(&self, round: u64) -> Result<()> {
        Ok(sync_dir(&self.round_dir(round))?)
    }

    /// Stores `body` for `round` durably and returns its SHA-256 (the blob's name).
    pub fn put(&mut self, round: u64, body: &[u8]) -> Result<[u8; 32]> {
        let digest = sha256(body);
        self.write_unsynced(round, &digest, body)?;
        self.sync_round(round)?;
        Ok(digest)
    }

    /// Reads and decrypts the blob `digest` of `round`, checking it hashes to `digest`.
    /// [`StoreError::Shredded`] after a shred; [`StoreError::Corrupt`] for a missing, altered
    /// or moved blob file.
    pub fn get(&mut self, round: u64, digest: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>> {
        if self.is_shredded(round) {
            return Err(StoreError::Shredded { round });
        }
        let path = self.blob_path(round, digest);
        let limit = self.max_blob + (MAGIC.len() + crypto::NONCE_LEN + crypto::TAG_LEN) as u64;
        let Some(bytes) = read_bounded(&path, limit, "blob file")? else {
            return Err(StoreError::Corrupt {
                path,
                what: "blob file missing",
            });
        };
        let Some(sealed) = bytes.strip_prefix(MAGIC.as_slice()) else {
            return Err(StoreError::Corrupt {
                path,
                what: "not a vault blob (bad header)",
            });
        };
        match self.unseal(round, digest, sealed)? {
            Some(body) => Ok(body),
            None => Err(StoreError::Corrupt {
                path,
                what: "blob does not authenticate under its round key and name",
            }),
        }
    }

    /// Crypto-shreds `round`: writes the tombstone durably, deletes the key file (and fsyncs
    /// the directory), then deletes the blob files. Idempotent.
    pub fn shred_round(&mut self, round: u64) -> Result<()> {
        atomic_write(&self.tombstone_path(round), &round.to_be_bytes(), 0o600)?;
        self.shredded.insert(round);
        self.keys.remove(&round);
        crate::fault::fault_point("vault-shred-after-tombstone", round);
        self.erase_round_files(round)
    }

    fn erase_round_files(&self, round: u64) -> Result<()> {
        remove_if_present(&self.key_path(round))?;
        sync_dir(&self.dir)?;
        let dir = self.round_dir(round);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        sync_dir(&self.dir)?;
        Ok(())
    }
}

/// Seals and writes blob files of one round (see [`BlobVault::round_writer`]); the key is
/// zeroized when the writer is dropped.
pub(crate) struct RoundWriter {
    round: u64,
    key: Zeroizing<[u8; 32]>,
    dir: PathBuf,
    max_blob: u64,
}

impl RoundWriter {
    /// Encrypts `body` (whose SHA-256 is `digest`) and writes it as its blob file: written to
    /// a temporary file, fsynced, renamed into place. The directory is not fsynced
    /// ([`BlobVault::sync_round`] does that once for the group).
    pub(crate) fn write(&self, digest: &[u8; 32], body: &[u8]) -> Result<()> {
        if body.len() as u64 > self.max_blob {
            return Err(StoreError::TooLarge {
                what: "blob",
                len: body.len() as u64,
                max: self.max_blob,
            });
        }
        let sealed = crypto::seal(&self.key, &body_aad(self.round, digest), body)?;
        let path = self.dir.join(format!("{}.blob", hex::encode(digest)));
        let tmp = write_temp(&path, &[MAGIC.as_slice(), &sealed], 0o600)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        Ok(())
    }
}
