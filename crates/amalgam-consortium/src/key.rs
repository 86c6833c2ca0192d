//! A plant's Ed25519 identity key: generated locally, stored in a private directory, never sent.
//!
//! File format (`identity.key`, spec consortium.md §2): exactly three lines,
//!
//! ```text
//! -----BEGIN AMALGAM ED25519 IDENTITY KEY-----
//! <64 lowercase hex digits: the 32-byte Ed25519 seed>
//! -----END AMALGAM ED25519 IDENTITY KEY-----
//! ```
//!
//! next to `identity.pub` (`amalgam-ed25519 <64 hex digits>`), which may be shared. The
//! directory must be mode 0700 and the key file 0600 (no group or other bits); loading refuses
//! anything wider, a symbolic link, or a file larger than a key file.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::KeyError;

/// Name of the private key file inside a key directory.
pub const KEY_FILE: &str = "identity.key";
/// Name of the public key file inside a key directory.
pub const PUB_FILE: &str = "identity.pub";

const BEGIN: &str = "-----BEGIN AMALGAM ED25519 IDENTITY KEY-----";
const END: &str = "-----END AMALGAM ED25519 IDENTITY KEY-----";
/// Largest key file accepted (the format is 141 bytes; a little slack for a CRLF file).
const MAX_KEY_FILE: u64 = 256;

/// RFC 8410 / RFC 5958 OneAsymmetricKey prefix for an Ed25519 private key (version 0,
/// algorithm id-Ed25519 1.3.101.112, OCTET STRING of the 32-byte CurvePrivateKey).
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A member's long-term Ed25519 signing key. Wiped on drop (ed25519-dalek's `zeroize`
/// feature); `Debug` shows only the fingerprint.
pub struct IdentityKey {
    key: SigningKey,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKey")
            .field("fingerprint", &fingerprint(&self.verifying_key()))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl IdentityKey {
    /// A fresh key from `rng` (pass the OS generator; seeded generators only in tests).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            key: SigningKey::generate(rng),
        }
    }

    /// A fresh key from the operating system's generator.
    pub fn generate_os() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| KeyError::Entropy)?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Generates a key with the OS generator and writes it into `dir` (created 0700 if absent;
    /// refused if it exists with wider permissions or already holds a key). Returns the path
    /// of the private key file. The file is created 0600 with `O_EXCL` and synced.
    pub fn save_new(dir: &Path) -> Result<PathBuf, KeyError> {
        let key = Self::generate_os()?;
        key.save(dir)?;
        Ok(dir.join(KEY_FILE))
    }

    /// Writes this key into `dir` as [`IdentityKey::save_new`] does.
    pub fn save(&self, dir: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: dir.to_path_buf(),
            source,
        };
        match fs::symlink_metadata(dir) {
            Ok(_) => check_dir(dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(dir)
                    .map_err(io)?;
                // The umask may have narrowed it further, never widened it; set it exactly.
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        }
        let path = dir.join(KEY_FILE);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyError::Exists(path.clone())
                } else {
                    KeyError::Io {
                        path: path.clone(),
                        source: e,
                    }
                }
            })?;
        let text = Zeroizing::new(format!(
            "{BEGIN}\n{}\n{END}\n",
            Zeroizing::new(hex::encode(self.key.to_bytes())).as_str()
        ));
        let file_io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        file.write_all(text.as_bytes()).map_err(file_io)?;
        file.sync_all().map_err(file_io)?;
        let pub_path = dir.join(PUB_FILE);
        let public = format!(
            "amalgam-ed25519 {}\n",
            hex::encode(self.verifying_key().as_bytes())
        );
        fs::write(&pub_path, public).map_err(|source| KeyError::Io {
            path: pub_path,
            source,
        })?;
        Ok(())
    }

    /// Loads a key file, or the key file inside a key directory. Refuses a directory that is
    /// not 0700-or-narrower, a file that is not 0600-or-narrower, a symbolic link, and any
    /// content that is not exactly the documented format.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| KeyError::Io { path: p, source }
        };
        let meta = fs::symlink_metadata(path).map_err(io(path))?;
        let file_path = if meta.is_dir() {
            check_dir(path)?;
            path.join(KEY_FILE)
        } else {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            check_dir(parent)?;
            path.to_path_buf()
        };
        // Look at the name once without following links, open it once, then check the opened
        // file itself (fstat): same inode as the name we looked at, a regular file, mode and
        // size. A link or file swapped in between the look and the open is refused.
        let named = fs::symlink_metadata(&file_path).map_err(io(&file_path))?;
        if named.file_type().is_symlink() {
            return Err(KeyError::Symlink(file_path));
        }
        if !named.is_file() {
            return Err(KeyError::Format {
                path: file_path,
                reason: "not a regular file",
            });
        }
        let file = fs::File::open(&file_path).map_err(io(&file_path))?;
        let meta = file.metadata().map_err(io(&file_path))?;
        check_opened(&file_path, &named, &meta)?;
        let format = |reason| KeyError::Format {
            path: file_path.clone(),
            reason,
        };
        let mut text = Zeroizing::new(String::new());
        file.take(MAX_KEY_FILE)
            .read_to_string(&mut text)
            .map_err(io(&file_path))?;
        let mut lines = text.lines();
        if lines.next() != Some(BEGIN) {
            return Err(format("first line is not the BEGIN line"));
        }
        let body = lines.next().ok_or_else(|| format("no key line"))?;
        if lines.next() != Some(END) || lines.next().is_some() {
            return Err(format("the key line must be followed by the END line only"));
        }
        if body.len() != 64
            || body
                .bytes()
                .any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(format("the key line must be 64 lowercase hex digits"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(body, seed.as_mut())
            .map_err(|_| format("the key line must be 64 lowercase hex digits"))?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The public identity, as listed in the manifest.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Ed25519 signature over `msg` (callers domain-separate their messages).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        self.key.sign(msg)
    }

    /// The key as PKCS#8 v1 DER (RFC 8410), for TLS certificates (rcgen). Wiped on drop.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PKCS8_ED25519_PREFIX);
        der.extend_from_slice(&Zeroizing::new(self.key.to_bytes())[..]);
        der
    }

    /// A copy of the signing key for amalgam-dp's ledger (which owns and wipes its key).
    pub fn to_ledger_key(&self) -> SigningKey {
        self.key.clone()
    }
}

/// Checks the metadata of the opened key file (`opened`, from fstat) against what the name
/// pointed at before the open (`named`, from lstat) and against the key-file rules.
fn check_opened(path: &Path, named: &fs::Metadata, opened: &fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::MetadataExt;
    if named.dev() != opened.dev() || named.ino() != opened.ino() {
        return Err(KeyError::Swapped(path.to_path_buf()));
    }
    if !opened.is_file() {
        return Err(KeyError::Format {
            path: path.to_path_buf(),
            reason: "not a regular file",
        });
    }
    let mode = opened.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            what: "key file",
            path: path.to_path_buf(),
            mode,
            fix: 0o600,
        });
    }
    if opened.len() > MAX_KEY_FILE {
        return Err(KeyError::Format {
            path: path.to_path_buf(),
            reason: "larger than a key file",
        });
    }
    Ok(())
}

fn check_dir(dir: &Path) -> Result<(), KeyError> {
    let meta = fs::symlink_metadata(dir).map_err(|source| KeyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(KeyError::Symlink(dir.to_path_buf()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            what: "key directory",
            path: dir.to_path_buf(),
            mode,
            fix: 0o700,
        });
    }
    Ok(())
}

/// Number of fingerprint bytes shown (160 bits: 10 groups of 4 hex digits).
const FINGERPRINT_BYTES: usize = 20;

/// Human-comparable fingerprint of an identity: the first 160 bits of
/// SHA-256("amalgam/consortium/fingerprint/v1" ‖ key), as 10 groups of 4 lowercase hex digits
/// separated by spaces (spec consortium.md §2). Read aloud over a telephone, it lets two plants
/// check that a manifest lists the key the other generated.
pub fn fingerprint(key: &VerifyingKey) -> String {
    let mut h = Sha256::new();
    h.update(crate::labels::FINGERPRINT);
    h.update(key.as_bytes());
    let digest: [u8; 32] = h.finalize().into();
    let hex = hex::encode(&digest[..FINGERPRINT_BYTES]);
    let groups: Vec<&str> = (0..hex.len())
        .step_by(4)
        .filter_map(|i| hex.get(i..i + 4))
        .collect();
    groups.join(" ")
}

/// Normalises a fingerprint as typed by a person: hex digits only, lowercase. `None` unless
/// exactly the fingerprint length remains.
pub fn normalise_fingerprint(text: &str) -> Option<String> {
    let cleaned: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | ':' | '-' | '\t'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (cleaned.len() == FINGERPRINT_BYTES * 2 && cleaned.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(cleaned)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The name was looked at (lstat), then another file was swapped in before the open: the
    /// opened file's inode differs and the key is refused, whatever its mode.
    #[test]
    fn a_file_swapped_in_between_look_and_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, b"x").unwrap();
        fs::write(&b, b"y").unwrap();
        fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&b, fs::Permissions::from_mode(0o600)).unwrap();
        let named = fs::symlink_metadata(&a).unwrap();
        let opened = fs::File::open(&b).unwrap().metadata().unwrap();
        assert!(matches!(
            check_opened(&a, &named, &opened),
            Err(KeyError::Swapped(_))
        ));
        // The mode is judged on the opened file, not on the name looked at.
        fs::set_permissions(&b, fs::Permissions::from_mode(0o644)).unwrap();
        let named_b = fs::symlink_metadata(&b).unwrap();
        let opened_b = fs::File::open(&b).unwrap().metadata().unwrap();
        assert!(matches!(
            check_opened(&b, &named_b, &opened_b),
            Err(KeyError::Permissions { .. })
        ));
        let opened_a = fs::File::open(&a).unwrap().metadata().unwrap();
        check_opened(&a, &named, &opened_a).unwrap();
    }
}
