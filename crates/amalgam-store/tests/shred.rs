//! Crypto-shredding: after `shred_round` a round's secret bodies are gone, its record stays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use amalgam_store::{
    BlobVault, EventKind, EventLog, EventLogHandle, EventLogOptions, StoreError, sha256,
};
use common::{bytes, download, public, upload};

type Open = (EventLogHandle, std::thread::JoinHandle<()>);

fn open(path: &Path) -> Open {
    EventLog::open(path, EventLogOptions::default()).unwrap()
}

fn close(h: Open) {
    drop(h.0);
    h.1.join().unwrap();
}

#[test]
fn round_key_file_is_private_and_shredding_removes_key_and_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let h = open(&path);
    let big = bytes(4, 200_000);
    h.0.append_batch(vec![
        public(1, EventKind::RoundOpen, 0, b"open 1".to_vec()),
        upload(1, 1, 1, b"small".to_vec()),
        upload(1, 1, 2, big.clone()),
        download(1, 2, 1, b"for 1".to_vec()),
        public(1, EventKind::Summary, 3, bytes(5, 100_000)),
        upload(2, 1, 1, b"round two".to_vec()),
    ])
    .unwrap();
    let key = dir.path().join("events.db.vault/round-1.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);

    h.0.shred_round(1).unwrap();
    h.0.shred_round(1).unwrap(); // idempotent
    assert!(!key.exists());
    assert!(!dir.path().join("events.db.vault/round-1").exists());
    assert!(matches!(
        h.0.download(1, 2, 1),
        Err(StoreError::Shredded { round: 1 })
    ));
    // A shredded round never gets a new key: secret appends to it are refused.
    assert!(matches!(
        h.0.append(upload(1, 1, 3, vec![1])),
        Err(StoreError::Shredded { round: 1 })
    ));
    assert!(!key.exists());
    // The idempotency record (digest and response) stays.
    let stored = h.0.lookup_upload(1, 1, 2).unwrap().unwrap();
    assert_eq!(stored.body_sha256, sha256(&big));
    close(h);

    // After a restart: the chain verifies, public bodies and digests remain, secrets do not.
    let h = open(&path);
    let events = h.0.replay().unwrap();
    assert_eq!(events.len(), 6);
    for ev in &events[..5] {
        assert_eq!(ev.shredded, ev.kind.is_secret(), "seq {}", ev.seq);
        if ev.shredded {
            assert!(ev.body.is_empty());
        }
    }
    assert_eq!(events[2].body_sha256, sha256(&big));
    assert_eq!(events[0].body, b"open 1");
    assert_eq!(events[4].body, bytes(5, 100_000));
    assert_eq!(events[5].body, b"round two", "other rounds are untouched");
    assert!(matches!(
        h.0.download(1, 2, 1),
        Err(StoreError::Shredded { round: 1 })
    ));
    // Public events can still be appended to a shredded round.
    h.0.append(public(1, EventKind::RoundEnd, 4, b"end".to_vec()))
        .unwrap();
    close(h);
}

#[test]
fn vault_get_after_shred_is_shredded_and_aad_binds_round() {
    let dir = tempfile::tempdir().unwrap();
    let vdir = dir.path().join("vault");
    let mut v = BlobVault::open(&vdir, 1 << 20).unwrap();
    let d1 = v.put(1, b"round one blob").unwrap();
    let d2 = v.put(2, b"round two blob").unwrap();
    assert_eq!(v.get(1, &d1).unwrap().as_slice(), b"round one blob");
    // Moving round 1's blob and key into round 2's place does not open under round 2.
    std::fs::copy(vdir.join("round-1.key"), vdir.join("round-2.key")).unwrap();
    std::fs::create_dir_all(vdir.join("round-2")).unwrap();
    std::fs::copy(
        vdir.join(format!("round-1/{}.blob", hex(&d1))),
        vdir.join(format!("round-2/{}.blob", hex(&d1))),
    )
    .unwrap();
    let mut v = BlobVault::open(&vdir, 1 << 20).unwrap();
    assert!(matches!(v.get(2, &d1), Err(StoreError::Corrupt { .. })));
    let _ = d2;
    v.shred_round(1).unwrap();
    assert!(matches!(
        v.get(1, &d1),
        Err(StoreError::Shredded { round: 1 })
    ));
    assert!(matches!(
        v.put(1, b"again"),
        Err(StoreError::Shredded { round: 1 })
    ));
    assert!(matches!(
        v.put(3, &vec![0; (1 << 20) + 1]),
        Err(StoreError::TooLarge { .. })
    ));
}

fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn interrupted_shred_is_finished_at_open() {
    // A crash after the tombstone was written but before the key was deleted.
    let dir = tempfile::tempdir().unwrap();
    let vdir = dir.path().join("vault");
    let mut v = BlobVault::open(&vdir, 1 << 20).unwrap();
    let d = v.put(1, b"secret").unwrap();
    drop(v);
    std::fs::write(vdir.join("round-1.shredded"), 1u64.to_be_bytes()).unwrap();
    assert!(vdir.join("round-1.key").exists());
    let mut v = BlobVault::open(&vdir, 1 << 20).unwrap();
    assert!(!vdir.join("round-1.key").exists());
    assert!(!vdir.join("round-1").exists());
    assert!(matches!(
        v.get(1, &d),
        Err(StoreError::Shredded { round: 1 })
    ));
}

#[test]
fn lost_key_is_not_replaced_by_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let h = open(&path);
    h.0.append(upload(1, 1, 1, b"x".to_vec())).unwrap();
    close(h);
    std::fs::remove_file(dir.path().join("events.db.vault/round-1.key")).unwrap();
    let h = open(&path);
    assert!(matches!(
        h.0.append(upload(1, 1, 2, b"y".to_vec())),
        Err(StoreError::KeyMissing { round: 1 })
    ));
    assert!(matches!(
        h.0.replay(),
        Err(StoreError::KeyMissing { round: 1 })
    ));
    assert!(!dir.path().join("events.db.vault/round-1.key").exists());
    close(h);
}

#[test]
fn round_key_with_wide_permissions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let h = open(&path);
    h.0.append(upload(1, 1, 1, b"x".to_vec())).unwrap();
    close(h);
    let key = dir.path().join("events.db.vault/round-1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let h = open(&path);
    assert!(matches!(
        h.0.replay(),
        Err(StoreError::Permissions { mode: 0o644, .. })
    ));
    close(h);
}

#[test]
fn vault_refuses_a_fresh_key_over_existing_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let vdir = dir.path().join("vault");
    let mut v = BlobVault::open(&vdir, 1 << 20).unwrap();
    v.put(1, b"first").unwrap();
    drop(v);
    std::fs::remove_file(vdir.join("round-1.key")).unwrap();
    let mut v = BlobVault::open(&vdir, 1 << 20).unwrap();
    assert!(matches!(
        v.put(1, b"second"),
        Err(StoreError::KeyMissing { round: 1 })
    ));
    assert!(!vdir.join("round-1.key").exists());
}
