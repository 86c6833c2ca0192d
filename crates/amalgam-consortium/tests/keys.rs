//! Identity key files: private, strict, and usable for TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use amalgam_consortium::key::{KEY_FILE, normalise_fingerprint};
use amalgam_consortium::{IdentityKey, KeyError, fingerprint};

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn save_new_writes_private_files_and_loads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let path = IdentityKey::save_new(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&path), 0o600);
    let key = IdentityKey::load(&path).unwrap();
    let same = IdentityKey::load(&dir).unwrap();
    assert_eq!(key.verifying_key(), same.verifying_key());
    let public = fs::read_to_string(dir.join("identity.pub")).unwrap();
    assert_eq!(
        public,
        format!(
            "amalgam-ed25519 {}\n",
            hex::encode(key.verifying_key().as_bytes())
        )
    );
    // Never overwritten.
    assert!(matches!(
        IdentityKey::save_new(&dir),
        Err(KeyError::Exists(_))
    ));
    // Debug shows the fingerprint, never the secret.
    let text = fs::read_to_string(&path).unwrap();
    let secret_hex = text.lines().nth(1).unwrap();
    let debug = format!("{key:?}");
    assert!(!debug.contains(secret_hex), "{debug}");
    assert!(debug.contains(&fingerprint(&key.verifying_key())));
}

#[test]
fn wider_permissions_are_refused_with_path_mode_and_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let path = IdentityKey::save_new(&dir).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let e = IdentityKey::load(&path).unwrap_err();
    assert!(
        matches!(e, KeyError::Permissions { mode: 0o644, .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("0644") && msg.contains("chmod 600") && msg.contains(KEY_FILE),
        "{msg}"
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let e = IdentityKey::load(&path).unwrap_err();
    assert!(
        matches!(
            e,
            KeyError::Permissions {
                what: "key directory",
                mode: 0o755,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("chmod 700"), "{e}");
    assert!(IdentityKey::load(&dir).is_err());
    // Generating into a world-readable directory is refused too.
    assert!(matches!(
        IdentityKey::save_new(&dir),
        Err(KeyError::Permissions { .. })
    ));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(IdentityKey::load(&path).is_ok());
    // A symbolic link to the key is refused.
    let link = dir.join("link.key");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(matches!(
        IdentityKey::load(&link),
        Err(KeyError::Symlink(_))
    ));
}

#[test]
fn malformed_key_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let path = IdentityKey::save_new(&dir).unwrap();
    let good = fs::read_to_string(&path).unwrap();
    let cases = [
        good.replace("BEGIN", "START"),
        good.replace("-----END AMALGAM ED25519 IDENTITY KEY-----\n", ""),
        format!("{good}extra\n"),
        good.to_uppercase(),
        good.replacen(&good.lines().nth(1).unwrap()[..2], "zz", 1),
        good.replace(
            good.lines().nth(1).unwrap(),
            &good.lines().nth(1).unwrap()[..62],
        ),
        "x".repeat(1000),
    ];
    for (i, bad) in cases.iter().enumerate() {
        fs::write(&path, bad).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            matches!(IdentityKey::load(&path), Err(KeyError::Format { .. })),
            "case {i} accepted"
        );
    }
}

#[test]
fn pkcs8_export_is_accepted_for_tls_and_matches_the_identity() {
    let key = IdentityKey::generate_os().unwrap();
    let der = key.to_pkcs8_der();
    assert_eq!(der.len(), 48);
    let pair = rcgen::KeyPair::try_from(&der[..]).unwrap();
    // rcgen's public key for Ed25519 is the raw 32-byte key.
    assert_eq!(pair.public_key_raw(), key.verifying_key().as_bytes());
}

#[test]
fn fingerprints_are_ten_groups_and_distinguish_keys() {
    let a = IdentityKey::generate_os().unwrap().verifying_key();
    let b = IdentityKey::generate_os().unwrap().verifying_key();
    let fa = fingerprint(&a);
    assert_eq!(fa.split(' ').count(), 10);
    assert!(fa.split(' ').all(|g| g.len() == 4));
    assert_ne!(fa, fingerprint(&b));
    assert_eq!(
        normalise_fingerprint(&fa.to_uppercase().replace(' ', ":")),
        normalise_fingerprint(&fa)
    );
    assert_eq!(normalise_fingerprint("abcd"), None);
}
