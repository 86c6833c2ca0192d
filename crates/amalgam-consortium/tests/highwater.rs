//! Attacks on a party's epoch high-water mark: an epoch the party did not sign, concurrent
//! writers, planted temp-file links and marks that cannot be read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_consortium::testing::{self, consortium, seeded_key};
use amalgam_consortium::{EpochHighWater, IdentityKey, ManifestError, SignedManifest, draft};

/// The aggregator's best move: epoch H+1 chained to H's digest whose members are the
/// aggregator and Sybils it controls. Every member it lists signs, so it is valid on its own.
fn sybil_successor(c: &testing::TestConsortium) -> SignedManifest {
    let sybils: Vec<IdentityKey> = (0..4).map(|i| seeded_key(900, i)).collect();
    let mut body = testing::body(&sybils, &c.aggregator, &[], 32);
    for m in &mut body.members {
        m.name = format!("sybil-{}", m.name);
    }
    // Keep the aggregator's own name and key so the rotation rule does not trip.
    let agg = c.verified.aggregator().clone();
    for m in &mut body.members {
        if m.key == agg.key {
            m.name = agg.name.clone();
        }
    }
    body.consortium = c.verified.consortium().to_string();
    body.epoch = 2;
    body.prev_digest = Some(c.verified.consortium_digest());
    let mut s = SignedManifest::from_body(body).unwrap();
    for k in sybils.iter().chain([&c.aggregator]) {
        s.sign_as(k).unwrap();
    }
    s
}

fn real_successor(c: &testing::TestConsortium) -> SignedManifest {
    let mut body = draft::next_epoch(&c.verified);
    body.max_aborted_rounds = 3;
    let mut s = SignedManifest::from_body(body).unwrap();
    for k in c.sites.iter().chain([&c.aggregator]) {
        s.sign_as(k).unwrap();
    }
    s
}

#[test]
fn an_epoch_without_my_key_never_moves_my_mark() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("epoch.json");
    let c = consortium(40, 4, 0, 32);
    let me = c.sites[1].verifying_key();
    EpochHighWater::accept(&path, &c.verified, &me).unwrap();
    let hw = EpochHighWater::load(&path).unwrap().unwrap();

    let fake = sybil_successor(&c);
    // Valid on its own: every member it lists signed, and it chains to epoch 1.
    let fake_v = fake.verify().unwrap();
    assert_eq!(fake_v.epoch(), 2);
    // But not for me: I am not in it, so I did not sign it.
    assert!(matches!(
        fake.verify_for(&me, Some(&hw)),
        Err(ManifestError::NotListed { .. })
    ));
    assert!(matches!(
        hw.check_successor(fake_v.body(), &fake_v.consortium_digest(), &me),
        Err(ManifestError::NotListed { .. })
    ));
    let e = EpochHighWater::accept(&path, &fake_v, &me).unwrap_err();
    assert!(matches!(e, ManifestError::NotListed { .. }), "{e}");
    assert!(e.is_auth());
    assert_eq!(EpochHighWater::load(&path).unwrap().unwrap(), hw);

    // The real epoch 2, which I signed, is still accepted: no fork was recorded.
    let real = real_successor(&c).verify_for(&me, Some(&hw)).unwrap();
    EpochHighWater::accept(&path, &real, &me).unwrap();
    let hw2 = EpochHighWater::load(&path).unwrap().unwrap();
    assert_eq!(hw2.digest, real.consortium_digest());
}

#[test]
fn first_contact_still_needs_my_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("epoch.json");
    let c = consortium(41, 4, 0, 32);
    let outsider = seeded_key(41, 9999).verifying_key();
    assert!(matches!(
        c.signed.verify_for(&outsider, None),
        Err(ManifestError::NotListed { .. })
    ));
    assert!(matches!(
        EpochHighWater::accept(&path, &c.verified, &outsider),
        Err(ManifestError::NotListed { .. })
    ));
    assert_eq!(EpochHighWater::load(&path).unwrap(), None);
}

#[test]
fn a_mark_that_cannot_be_read_is_an_error_not_first_contact() {
    let dir = tempfile::tempdir().unwrap();
    let c = consortium(42, 4, 0, 32);
    let me = c.sites[0].verifying_key();

    // A dangling symbolic link (the mark's target removed or redirected).
    let dangling = dir.path().join("dangling.json");
    std::os::unix::fs::symlink(dir.path().join("missing"), &dangling).unwrap();
    assert!(matches!(
        EpochHighWater::load(&dangling),
        Err(ManifestError::Io { .. })
    ));
    assert!(EpochHighWater::accept(&dangling, &c.verified, &me).is_err());

    // A path through a regular file (ENOTDIR).
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let through = file.join("epoch.json");
    assert!(matches!(
        EpochHighWater::load(&through),
        Err(ManifestError::Io { .. })
    ));

    // A mark that is a directory (EISDIR on read).
    let as_dir = dir.path().join("as-dir.json");
    std::fs::create_dir(&as_dir).unwrap();
    assert!(EpochHighWater::load(&as_dir).is_err());

    // Nothing at all: first contact.
    assert_eq!(
        EpochHighWater::load(&dir.path().join("absent.json")).unwrap(),
        None
    );
}

#[test]
fn a_planted_temp_link_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("epoch.json");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // The name the writer used to use for its temp file, pointing at the victim.
    std::os::unix::fs::symlink(&victim, dir.path().join(".epoch.json.tmp")).unwrap();
    let c = consortium(43, 4, 0, 32);
    let me = c.sites[0].verifying_key();
    EpochHighWater::accept(&path, &c.verified, &me).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(
        !std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(EpochHighWater::load(&path).unwrap().unwrap().epoch, 1);
    // No temp file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".tmp") && n != ".epoch.json.tmp"
        })
        .collect();
    assert!(leftovers.is_empty());
}

/// Two writers from the same old mark: one holds the lock and records a fork of epoch 2
/// while the other is inside `accept`. Under the lock the second re-reads the mark and
/// refuses; without the lock it would overwrite the first writer's epoch.
#[test]
fn concurrent_accepts_are_serialised_and_recheck_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("epoch.json");
    let c = consortium(44, 4, 0, 32);
    let me = c.sites[0].verifying_key();
    EpochHighWater::accept(&path, &c.verified, &me).unwrap();
    let hw = EpochHighWater::load(&path).unwrap().unwrap();
    let a = real_successor(&c).verify_for(&me, Some(&hw)).unwrap();
    let mut body_b = draft::next_epoch(&c.verified);
    body_b.max_aborted_rounds = 4;
    let mut b = SignedManifest::from_body(body_b).unwrap();
    for k in c.sites.iter().chain([&c.aggregator]) {
        b.sign_as(k).unwrap();
    }
    let b = b.verify_for(&me, Some(&hw)).unwrap();

    // The first writer takes the lock the way `accept` does.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.path().join(".epoch.json.lock"))
        .unwrap();
    lock.lock().unwrap();
    let p2 = path.clone();
    let second = std::thread::spawn(move || EpochHighWater::accept(&p2, &a, &me));
    // Give the second writer every chance to run (it must be blocked on the lock, so this
    // wait changes nothing when the lock works; it only makes a missing lock show).
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!second.is_finished(), "accept did not wait for the lock");
    // The first writer records its epoch 2 (as `accept` would, under the lock).
    std::fs::write(&path, serde_json::to_vec(&EpochHighWater::of(&b)).unwrap()).unwrap();
    lock.unlock().unwrap();
    let result = second.join().unwrap();
    assert!(
        matches!(result, Err(ManifestError::EpochForked { epoch: 2 })),
        "{result:?}"
    );
    assert_eq!(
        EpochHighWater::load(&path).unwrap().unwrap().digest,
        b.consortium_digest()
    );
}
