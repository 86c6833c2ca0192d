//! The crate's only I/O: writing and reading the decryptor's key files. Files are created new
//! (never overwritten) with mode 0600, and a secret key file readable by group or others is
//! refused on reading.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use amalgam_proto::codec::{Decode, Encode};
use zeroize::Zeroizing;

use crate::error::HeError;
use crate::keys::{DecryptionKey, PUBLIC_KEY_BYTES, PublicKey, SECRET_KEY_BYTES};

fn io_error(path: &Path, e: impl std::fmt::Display) -> HeError {
    HeError::KeyFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn write_new_owner_only(path: &Path, bytes: &[u8]) -> Result<(), HeError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_error(path, e))
}

fn read_exact_size(path: &Path, size: usize, secret: bool) -> Result<Zeroizing<Vec<u8>>, HeError> {
    let mut f = OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    let meta = f.metadata().map_err(|e| io_error(path, e))?;
    if secret && meta.permissions().mode() & 0o077 != 0 {
        return Err(io_error(
            path,
            "secret key file is accessible to group or others (want 0600)",
        ));
    }
    if meta.len() != size as u64 {
        return Err(io_error(
            path,
            format_args!("{} bytes, expected {size}", meta.len()),
        ));
    }
    let mut buf = Zeroizing::new(vec![0u8; size]);
    f.read_exact(&mut buf).map_err(|e| io_error(path, e))?;
    Ok(buf)
}

/// Writes the decryptor's secret key file (0600, must not exist yet).
pub fn write_secret_key(path: &Path, key: &DecryptionKey) -> Result<(), HeError> {
    write_new_owner_only(path, &key.to_secret_bytes())
}

/// Reads and validates a secret key file.
pub fn read_secret_key(path: &Path) -> Result<DecryptionKey, HeError> {
    DecryptionKey::from_secret_bytes(&read_exact_size(path, SECRET_KEY_BYTES, true)?)
}

/// Writes the public key file (0600 like every key file; publish it deliberately).
pub fn write_public_key(path: &Path, key: &PublicKey) -> Result<(), HeError> {
    write_new_owner_only(path, &key.to_bytes())
}

/// Reads a public key file and checks it against the pinned fingerprint.
pub fn read_public_key(
    path: &Path,
    pinned: &crate::keys::KeyFingerprint,
) -> Result<PublicKey, HeError> {
    let bytes = read_exact_size(path, PUBLIC_KEY_BYTES, false)?;
    PublicKey::from_bytes(&bytes, &())?.pinned(pinned)
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn key_files_are_owner_only_round_trip_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(31);
        let key = DecryptionKey::generate(&mut rng);
        let sk = dir.path().join("decryptor.key");
        let pk = dir.path().join("decryptor.pub");
        write_secret_key(&sk, &key).unwrap();
        write_public_key(&pk, key.public_key()).unwrap();
        for p in [&sk, &pk] {
            assert_eq!(
                std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let back = read_secret_key(&sk).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        let fp = key.public_key().fingerprint();
        assert_eq!(&read_public_key(&pk, &fp).unwrap(), key.public_key());
        let other = DecryptionKey::generate(&mut rng).public_key().fingerprint();
        assert!(matches!(
            read_public_key(&pk, &other),
            Err(HeError::KeyMismatch { .. })
        ));
        assert!(matches!(
            write_secret_key(&sk, &key),
            Err(HeError::KeyFile { .. })
        ));
    }

    #[test]
    fn loose_permissions_and_wrong_sizes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(32);
        let key = DecryptionKey::generate(&mut rng);
        let sk = dir.path().join("decryptor.key");
        write_secret_key(&sk, &key).unwrap();
        std::fs::set_permissions(&sk, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(read_secret_key(&sk), Err(HeError::KeyFile { .. })));
        let short = dir.path().join("short.key");
        write_new_owner_only(&short, &key.to_secret_bytes()[..100]).unwrap();
        assert!(matches!(
            read_secret_key(&short),
            Err(HeError::KeyFile { .. })
        ));
    }
}
