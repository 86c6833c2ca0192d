//! Sealed site state, state keys and high-water marks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use amalgam_store::{HighWater, SealedStore, StateAad, StateKey, StoreError};
use common::flip;

fn aad(round: u64, phase: u8) -> StateAad {
    StateAad {
        consortium_digest: [7; 32],
        site: 3,
        round,
        phase,
        version: 1,
    }
}

fn store(dir: &tempfile::TempDir) -> SealedStore {
    let key = StateKey::load_or_generate(&dir.path().join("state.key")).unwrap();
    SealedStore::open(&dir.path().join("state"), key).unwrap()
}

#[test]
fn state_key_is_private_and_refuses_wider_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.key");
    let key = StateKey::generate(&path).unwrap();
    assert_eq!(format!("{key:?}"), "StateKey([redacted])");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read(&path).unwrap().len(), 32);
    assert!(
        StateKey::generate(&path).is_err(),
        "an existing key is never overwritten"
    );
    StateKey::load(&path).unwrap();
    for wide in [0o640, 0o604, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wide)).unwrap();
        match StateKey::load(&path) {
            Err(StoreError::Permissions { mode, .. }) => assert_eq!(mode, wide),
            other => panic!("mode {wide:o} accepted: {other:?}"),
        }
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, [0u8; 31]).unwrap();
    assert!(matches!(
        StateKey::load(&path),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(StateKey::load(&dir.path().join("absent.key")).is_err());
}

#[test]
fn two_generated_keys_differ() {
    let dir = tempfile::tempdir().unwrap();
    StateKey::generate(&dir.path().join("a")).unwrap();
    StateKey::generate(&dir.path().join("b")).unwrap();
    assert_ne!(
        std::fs::read(dir.path().join("a")).unwrap(),
        std::fs::read(dir.path().join("b")).unwrap()
    );
}

#[test]
fn put_get_round_trip_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    assert!(s.get("site", &aad(1, 2)).unwrap().is_none());
    s.put("site", &aad(1, 2), b"phase two secrets").unwrap();
    assert_eq!(
        s.get("site", &aad(1, 2)).unwrap().unwrap().as_slice(),
        b"phase two secrets"
    );
    assert_eq!(s.stored_aad("site", 1).unwrap(), Some(aad(1, 2)));
    s.put("site", &aad(1, 3), b"phase three").unwrap();
    assert_eq!(
        s.get("site", &aad(1, 3)).unwrap().unwrap().as_slice(),
        b"phase three"
    );
    // The earlier phase's state is gone: the file holds only the latest.
    assert!(matches!(
        s.get("site", &aad(1, 2)),
        Err(StoreError::SealedMismatch { .. })
    ));
    let file = dir.path().join("state/round-1/site.sealed");
    let raw = std::fs::read(&file).unwrap();
    assert!(
        common::find(&raw, b"phase three").is_none(),
        "sealed file holds plaintext"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn same_bytes_sealed_twice_use_fresh_nonces() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let file = dir.path().join("state/round-1/site.sealed");
    s.put("site", &aad(1, 1), b"same").unwrap();
    let a = std::fs::read(&file).unwrap();
    s.put("site", &aad(1, 1), b"same").unwrap();
    let b = std::fs::read(&file).unwrap();
    assert_ne!(a, b);
}

#[test]
fn moved_file_fails_to_open_under_another_name_round_or_phase() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.put("alpha", &aad(5, 2), b"secret of alpha").unwrap();
    s.put("beta", &aad(6, 2), b"secret of beta").unwrap();
    let root = dir.path().join("state");
    // Another name, same round: the header matches, the AEAD binding does not.
    std::fs::copy(
        root.join("round-5/alpha.sealed"),
        root.join("round-5/gamma.sealed"),
    )
    .unwrap();
    assert!(matches!(
        s.get("gamma", &aad(5, 2)),
        Err(StoreError::Corrupt { .. })
    ));
    // Another round: the header names round 5.
    std::fs::copy(
        root.join("round-5/alpha.sealed"),
        root.join("round-6/beta.sealed"),
    )
    .unwrap();
    assert!(matches!(
        s.get("beta", &aad(6, 2)),
        Err(StoreError::SealedMismatch { .. })
    ));
    // Another phase, site or consortium.
    assert!(matches!(
        s.get("alpha", &aad(5, 3)),
        Err(StoreError::SealedMismatch { .. })
    ));
    let mut other_site = aad(5, 2);
    other_site.site = 4;
    assert!(matches!(
        s.get("alpha", &other_site),
        Err(StoreError::SealedMismatch { .. })
    ));
    let mut other = aad(5, 2);
    other.consortium_digest[0] ^= 1;
    assert!(matches!(
        s.get("alpha", &other),
        Err(StoreError::SealedMismatch { .. })
    ));
}

#[test]
fn edited_header_or_body_fails_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.put("alpha", &aad(5, 2), b"secret").unwrap();
    let file = dir.path().join("state/round-5/alpha.sealed");
    let original = std::fs::read(&file).unwrap();
    // The attacker's best move against the header check: rewrite the header to the phase
    // the site asks for. The tag still binds the original phase.
    let mut forged = original.clone();
    forged[8 + 42] = 3;
    std::fs::write(&file, &forged).unwrap();
    assert!(matches!(
        s.get("alpha", &aad(5, 3)),
        Err(StoreError::Corrupt { .. })
    ));
    for offset in [0, 8, original.len() - 1, original.len() - 20] {
        std::fs::write(&file, &original).unwrap();
        flip(&file, offset);
        assert!(
            s.get("alpha", &aad(5, 2)).is_err(),
            "flip at {offset} accepted"
        );
    }
    std::fs::write(&file, &original[..20]).unwrap();
    assert!(matches!(
        s.get("alpha", &aad(5, 2)),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn another_key_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.put("alpha", &aad(1, 1), b"secret").unwrap();
    let other = StateKey::generate(&dir.path().join("other.key")).unwrap();
    let s2 = SealedStore::open(&dir.path().join("state"), other).unwrap();
    assert!(matches!(
        s2.get("alpha", &aad(1, 1)),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn delete_round_removes_only_that_round() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.put("a", &aad(1, 1), b"r1").unwrap();
    s.put("b", &aad(1, 1), b"r1b").unwrap();
    s.put("a", &aad(2, 1), b"r2").unwrap();
    assert_eq!(s.rounds().unwrap(), vec![1, 2]);
    s.delete_round(1).unwrap();
    assert!(s.get("a", &aad(1, 1)).unwrap().is_none());
    assert!(s.get("b", &aad(1, 1)).unwrap().is_none());
    assert_eq!(s.get("a", &aad(2, 1)).unwrap().unwrap().as_slice(), b"r2");
    assert_eq!(s.rounds().unwrap(), vec![2]);
    s.delete("a", 2).unwrap();
    assert!(s.get("a", &aad(2, 1)).unwrap().is_none());
    s.delete_round(9).unwrap();
}

#[test]
fn names_and_sizes_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).with_max_len(100);
    for bad in ["", "../x", ".hidden", "a/b", &"x".repeat(65), "sp ace"] {
        assert!(
            matches!(
                s.put(bad, &aad(1, 1), b"x"),
                Err(StoreError::InvalidInput { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        s.put("a", &aad(1, 1), &[0; 101]),
        Err(StoreError::TooLarge { .. })
    ));
    s.put("a", &aad(1, 1), &[0; 100]).unwrap();
    // A file grown beyond the bound is refused before it is read into memory.
    let file = dir.path().join("state/round-1/a.sealed");
    let mut raw = std::fs::read(&file).unwrap();
    raw.extend([0u8; 200]);
    std::fs::write(&file, raw).unwrap();
    assert!(matches!(
        s.get("a", &aad(1, 1)),
        Err(StoreError::TooLarge { .. })
    ));
}

#[test]
fn high_water_never_goes_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("round.hw");
    let mut hw = HighWater::load(&path).unwrap();
    assert_eq!(hw.value(), 0);
    hw.advance(5).unwrap();
    hw.advance(5).unwrap();
    match hw.advance(4) {
        Err(StoreError::Backwards {
            current: 5,
            requested: 4,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(hw.value(), 5);
    let mut again = HighWater::load(&path).unwrap();
    assert_eq!(again.value(), 5);
    assert!(again.advance(3).is_err());
    again.advance(u64::MAX).unwrap();
    assert_eq!(HighWater::load(&path).unwrap().value(), u64::MAX);
    for offset in [0, 9, 23] {
        let good = std::fs::read(&path).unwrap();
        flip(&path, offset);
        assert!(
            matches!(HighWater::load(&path), Err(StoreError::Corrupt { .. })),
            "flip at {offset}"
        );
        std::fs::write(&path, good).unwrap();
    }
    std::fs::write(&path, [0u8; 25]).unwrap();
    assert!(HighWater::load(&path).is_err());
}

#[test]
fn second_high_water_instance_cannot_lower_the_mark() {
    // Two instances loaded at 0 on one path (two processes, or a stale handle): the second
    // must see the first's advance, not its own stale in-memory value.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("round.hw");
    let mut a = HighWater::load(&path).unwrap();
    let mut b = HighWater::load(&path).unwrap();
    a.advance(10).unwrap();
    match b.advance(5) {
        Err(StoreError::Backwards {
            current: 10,
            requested: 5,
            ..
        }) => {}
        other => panic!("stale instance lowered the mark: {other:?}"),
    }
    assert_eq!(HighWater::load(&path).unwrap().value(), 10);
    assert_eq!(b.value(), 10, "the refusal taught b the stored mark");
    b.advance(12).unwrap();
    assert!(a.advance(11).is_err());
    assert_eq!(HighWater::load(&path).unwrap().value(), 12);
}

#[test]
fn racing_key_generations_leave_exactly_one_key() {
    // Many threads generate the same key path at once: exactly one may succeed, and the file
    // must hold that winner's key (a loser overwriting it would orphan the winner's files).
    for attempt in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.key");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    StateKey::generate(&path).ok()
                })
            })
            .collect();
        let winners: Vec<StateKey> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "attempt {attempt}: keys minted over each other"
        );
        let sealed = dir.path().join("sealed");
        let w = winners.into_iter().next().unwrap();
        SealedStore::open(&sealed, w)
            .unwrap()
            .put("s", &aad(1, 1), b"x")
            .unwrap();
        let on_disk = SealedStore::open(&sealed, StateKey::load(&path).unwrap()).unwrap();
        assert_eq!(
            on_disk.get("s", &aad(1, 1)).unwrap().unwrap().as_slice(),
            b"x"
        );
    }
}

/// `names` lists a round's sealed files by name, sorted, leaving out other files (a
/// temporary file of an interrupted write) and rounds that have no directory.
#[test]
fn names_lists_only_the_sealed_files_of_a_round() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    assert!(s.names(4).unwrap().is_empty());
    s.put("b.model-1", &aad(4, 0), b"x").unwrap();
    s.put("a.record", &aad(4, 0), b"y").unwrap();
    s.put("other", &aad(5, 0), b"z").unwrap();
    let round = dir.path().join("state").join("round-4");
    std::fs::write(round.join(".tmp-b.model-2.sealed"), b"partial").unwrap();
    std::fs::write(round.join("notes.txt"), b"n").unwrap();
    assert_eq!(s.names(4).unwrap(), vec!["a.record", "b.model-1"]);
    s.delete("b.model-1", 4).unwrap();
    assert_eq!(s.names(4).unwrap(), vec!["a.record"]);
}
