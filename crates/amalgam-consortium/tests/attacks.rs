//! The attacker's best moves against the manifest, each refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_consortium::testing::{self, consortium, seeded_key};
use amalgam_consortium::{
    EpochHighWater, IdentityKey, ManifestBody, ManifestError, RotationStatement, SignedManifest,
    canonical, draft, signed,
};
use ed25519_dalek::Signature;

fn keys(seed: u64, n: u64) -> (IdentityKey, Vec<IdentityKey>) {
    (
        seeded_key(seed, 0),
        (1..=n).map(|i| seeded_key(seed, i)).collect(),
    )
}

fn sign_everyone(body: ManifestBody, keys: &[&IdentityKey]) -> SignedManifest {
    let mut s = SignedManifest::from_body(body).unwrap();
    for k in keys {
        s.sign_as(k).unwrap();
    }
    s
}

/// Rebuilds the file encoding with other canonical bytes and the given slots.
fn file_with(bytes: &[u8], slots: &[Option<[u8; 64]>]) -> Vec<u8> {
    let mut out = b"AMALGAM SIGNED MANIFEST v1\n".to_vec();
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(&(slots.len() as u32).to_be_bytes());
    for s in slots {
        match s {
            Some(sig) => {
                out.push(1);
                out.extend_from_slice(sig);
            }
            None => out.push(0),
        }
    }
    out
}

fn slots_of(s: &SignedManifest) -> Vec<Option<[u8; 64]>> {
    let file = s.to_bytes();
    let n = s.body().members.len();
    let mut at = 27 + 4 + s.canonical_bytes().len() + 4;
    (0..n)
        .map(|_| {
            let flag = file[at];
            at += 1;
            (flag == 1).then(|| {
                let mut sig = [0u8; 64];
                sig.copy_from_slice(&file[at..at + 64]);
                at += 64;
                sig
            })
        })
        .collect()
}

#[test]
fn signature_by_a_non_member_is_refused() {
    let c = consortium(11, 4, 0, 32);
    let outsider = seeded_key(99, 0);
    // The outsider cannot add its signature.
    let mut s = SignedManifest::from_body(c.verified.body().clone()).unwrap();
    assert!(matches!(
        s.sign_as(&outsider),
        Err(ManifestError::NotAMember { .. })
    ));
    // Nor substitute it for a member's slot.
    let bytes = c.signed.canonical_bytes();
    let forged = outsider.sign(&signed::signing_message(bytes)).to_bytes();
    let mut slots = slots_of(&c.signed);
    slots[0] = Some(forged);
    let bad = SignedManifest::from_bytes(&file_with(bytes, &slots)).unwrap();
    assert!(matches!(
        bad.verify(),
        Err(ManifestError::BadSignature { .. })
    ));
    // Nor append it as an extra slot.
    let mut slots = slots_of(&c.signed);
    slots.push(Some(forged));
    assert!(matches!(
        SignedManifest::from_bytes(&file_with(bytes, &slots)),
        Err(ManifestError::SignatureCount { .. })
    ));
    // And a member's signature over another manifest does not count here.
    let other = consortium(12, 4, 0, 32);
    let mut slots = slots_of(&c.signed);
    slots[1] = slots_of(&other.signed)[1];
    let bad = SignedManifest::from_bytes(&file_with(bytes, &slots)).unwrap();
    assert!(bad.verify().is_err());
}

#[test]
fn reordered_or_duplicated_members_are_refused() {
    let (agg, sites) = keys(13, 4);
    let mut body = testing::body(&sites, &agg, &[], 32);
    body.normalise();
    // Swap two members: a different encoding that the decoder refuses as non-canonical order,
    // even though it would re-encode to itself.
    let mut swapped = body.clone();
    swapped.members.swap(0, 1);
    let bytes = canonical::encode(&swapped);
    let s = SignedManifest::from_bytes(&file_with(&bytes, &vec![None; 5])).unwrap();
    let e = s.verify().unwrap_err();
    assert!(e.to_string().contains("ascending key order"), "{e}");
    // The original signatures do not transfer to the re-ordered bytes either.
    let all: Vec<&IdentityKey> = sites.iter().chain([&agg]).collect();
    let good = sign_everyone(body.clone(), &all);
    let mut slots = slots_of(&good);
    slots.swap(0, 1);
    let s = SignedManifest::from_bytes(&file_with(&bytes, &slots)).unwrap();
    assert!(s.verify().is_err());
    // A duplicated member (same key twice).
    let mut dup = body.clone();
    let first = dup.members[0].clone();
    dup.members.insert(1, first);
    let s =
        SignedManifest::from_bytes(&file_with(&canonical::encode(&dup), &vec![None; 6])).unwrap();
    assert!(
        s.verify()
            .unwrap_err()
            .to_string()
            .contains("ascending key order")
    );
    assert!(SignedManifest::from_body(dup).is_err());
    // The same name under two keys.
    let mut twin = body;
    twin.members[1].name = twin.members[0].name.clone();
    assert!(
        SignedManifest::from_body(twin)
            .unwrap_err()
            .to_string()
            .contains("appears twice")
    );
}

#[test]
fn one_byte_changed_anywhere_changes_the_digest_and_breaks_every_signature() {
    let c = consortium(14, 4, 3, 32);
    let bytes = c.signed.canonical_bytes().to_vec();
    let digest = c.verified.consortium_digest();
    let slots = slots_of(&c.signed);
    let members = c.verified.members().to_vec();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert_ne!(signed::digest_of(&b), digest, "byte {i}");
        let msg = signed::signing_message(&b);
        for (m, s) in members.iter().zip(&slots) {
            let sig = Signature::from_bytes(&s.unwrap());
            assert!(m.key.verify_strict(&msg, &sig).is_err(), "byte {i}");
        }
        let file = file_with(&b, &slots);
        assert!(
            SignedManifest::from_bytes(&file)
                .and_then(|s| s.verify())
                .is_err(),
            "byte {i} accepted"
        );
    }
    // And the untouched file verifies.
    assert!(SignedManifest::from_bytes(&file_with(&bytes, &slots)).is_ok());
}

#[test]
fn trailing_or_truncated_bytes_are_refused() {
    let c = consortium(15, 3, 0, 8);
    let file = c.signed.to_bytes();
    let mut long = file.clone();
    long.push(0);
    assert!(SignedManifest::from_bytes(&long).is_err());
    for cut in [1, 10, 65, file.len() / 2] {
        assert!(SignedManifest::from_bytes(&file[..file.len() - cut]).is_err());
    }
    let mut body_trailing = c.signed.canonical_bytes().to_vec();
    body_trailing.push(0);
    assert!(canonical::decode(&body_trailing).is_err());
}

fn next(c: &testing::TestConsortium, edit: impl FnOnce(&mut ManifestBody)) -> SignedManifest {
    let mut body = draft::next_epoch(&c.verified);
    edit(&mut body);
    let mut keys: Vec<&IdentityKey> = c.sites.iter().collect();
    keys.push(&c.aggregator);
    keys.extend(c.decryptors.iter());
    let mut s = SignedManifest::from_body(body).unwrap();
    for k in keys {
        let _ = s.sign_as(k);
    }
    s
}

#[test]
fn epochs_chain_and_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let hw_path = dir.path().join("epoch.json");
    let c = consortium(16, 4, 0, 32);
    let me = c.sites[0].verifying_key();
    assert_eq!(EpochHighWater::load(&hw_path).unwrap(), None);
    EpochHighWater::accept(&hw_path, &c.verified, &me).unwrap();
    let hw = EpochHighWater::load(&hw_path).unwrap().unwrap();
    assert_eq!(hw.epoch, 1);
    // The same epoch again (a restart) is fine.
    c.signed.verify_for(&me, Some(&hw)).unwrap();

    // Epoch 2: a policy change.
    let e2 = next(&c, |b| b.max_aborted_rounds = 3);
    let v2 = e2.verify_for(&me, Some(&hw)).unwrap();
    assert_eq!(v2.epoch(), 2);
    EpochHighWater::accept(&hw_path, &v2, &me).unwrap();
    let hw2 = EpochHighWater::load(&hw_path).unwrap().unwrap();
    assert_eq!(hw2.epoch, 2);

    // The older epoch is refused now, and accept never lowers the mark.
    assert!(matches!(
        c.signed.verify_for(&me, Some(&hw2)),
        Err(ManifestError::EpochRegressed {
            accepted: 2,
            got: 1
        })
    ));
    assert!(EpochHighWater::accept(&hw_path, &c.verified, &me).is_err());
    assert_eq!(EpochHighWater::load(&hw_path).unwrap().unwrap().epoch, 2);

    // A second, different epoch 2 (a fork) is refused.
    let fork = next(&c, |b| b.max_aborted_rounds = 4);
    assert!(matches!(
        fork.verify_for(&me, Some(&hw2)),
        Err(ManifestError::EpochForked { epoch: 2 })
    ));

    // An epoch 2 whose previous digest is not epoch 1's: broken chain.
    let broken = next(&c, |b| b.prev_digest = Some([9; 32]));
    assert!(matches!(
        broken.verify_for(&me, Some(&hw)),
        Err(ManifestError::ChainBroken { epoch: 2 })
    ));
    // Skipping an epoch cannot be checked: refused.
    let gap = next(&c, |b| b.epoch = 3);
    assert!(matches!(
        gap.verify_for(&me, Some(&hw)),
        Err(ManifestError::EpochGap { .. })
    ));
    // Another consortium's manifest is refused.
    let other = next(&c, |b| b.consortium = "other".into());
    assert!(matches!(
        other.verify_for(&me, Some(&hw)),
        Err(ManifestError::WrongConsortium { .. })
    ));
}

#[test]
fn a_member_that_does_not_sign_is_not_in_the_epoch() {
    let c = consortium(17, 5, 0, 32);
    let leaver = c.sites[4].verifying_key();
    // Epoch 2 still lists the leaver, who refuses to sign: not valid.
    let mut body = draft::next_epoch(&c.verified);
    body.max_aborted_rounds = 2;
    let mut s = SignedManifest::from_body(body.clone()).unwrap();
    for k in c.sites[..4].iter().chain([&c.aggregator]) {
        s.sign_as(k).unwrap();
    }
    assert!(matches!(
        s.verify(),
        Err(ManifestError::MissingSignature { .. })
    ));
    // Re-issued without it: valid, and the leaver's key is no site any more.
    body.members.retain(|m| m.key != leaver);
    body.protocol.threshold = 3;
    body.protocol.min_cohort = 3;
    body.protocol.dropouts = 1;
    let mut s = SignedManifest::from_body(body).unwrap();
    for k in c.sites[..4].iter().chain([&c.aggregator]) {
        s.sign_as(k).unwrap();
    }
    let hw = EpochHighWater::of(&c.verified);
    let me = c.sites[0].verifying_key();
    let v = s.verify_for(&me, Some(&hw)).unwrap();
    assert_eq!(v.site_index(&leaver), None);
    assert_eq!(v.sites().len(), 4);
}

#[test]
fn key_rotation_needs_the_old_keys_signature() {
    let c = consortium(18, 4, 0, 32);
    let hw = EpochHighWater::of(&c.verified);
    let me = c.sites[0].verifying_key();
    let old = &c.sites[2];
    let new = seeded_key(18, 500);
    let name = c
        .verified
        .member(&old.verifying_key())
        .unwrap()
        .name
        .clone();
    let rotate = |statement: Option<RotationStatement>| {
        let mut body = draft::next_epoch(&c.verified);
        for m in &mut body.members {
            if m.key == old.verifying_key() {
                m.key = new.verifying_key();
            }
        }
        body.rotations.extend(statement);
        let mut keys: Vec<&IdentityKey> = c
            .sites
            .iter()
            .filter(|k| k.verifying_key() != old.verifying_key())
            .collect();
        keys.push(&c.aggregator);
        keys.push(&new);
        SignedManifest::from_body(body).map(|mut s| {
            for k in keys {
                s.sign_as(k).unwrap();
            }
            s
        })
    };
    // No statement: every current member (the new key included) signed, still refused.
    let e = rotate(None)
        .unwrap()
        .verify_for(&me, Some(&hw))
        .unwrap_err();
    assert!(matches!(e, ManifestError::Rotation { .. }), "{e}");
    // A statement signed by the new key itself instead of the old one.
    let forged = RotationStatement::sign(&new, "test-consortium", &name, 2, new.verifying_key());
    let forged = RotationStatement {
        old_key: old.verifying_key(),
        ..forged
    };
    assert!(matches!(
        rotate(Some(forged)),
        Err(ManifestError::Rotation { .. })
    ));
    // A statement by an unrelated key claiming to be the old one.
    let stranger = seeded_key(18, 777);
    let wrong_old =
        RotationStatement::sign(&stranger, "test-consortium", &name, 2, new.verifying_key());
    let s = rotate(Some(wrong_old)).unwrap();
    assert!(matches!(
        s.verify_for(&me, Some(&hw)),
        Err(ManifestError::Rotation { .. })
    ));
    // A genuine statement for another epoch.
    let stale = RotationStatement::sign(old, "test-consortium", &name, 5, new.verifying_key());
    assert!(matches!(
        rotate(Some(stale)),
        Err(ManifestError::Rotation { .. })
    ));
    // The genuine statement: accepted, and the new key holds the same site index's role.
    let good = RotationStatement::sign(old, "test-consortium", &name, 2, new.verifying_key());
    assert!(good.verify("test-consortium"));
    let v = rotate(Some(good))
        .unwrap()
        .verify_for(&me, Some(&hw))
        .unwrap();
    assert!(v.site_index(&new.verifying_key()).is_some());
    assert!(v.site_index(&old.verifying_key()).is_none());
}

#[test]
fn join_requests_prove_possession_and_bind_their_consortium() {
    let c = consortium(19, 4, 0, 32);
    let mut draft_body = draft::next_epoch(&c.verified);
    let newcomer = seeded_key(19, 300);
    let req = draft::JoinRequest::new(
        &newcomer,
        "test-consortium",
        "plant-new",
        "New Plant AG",
        vec![amalgam_consortium::Role::Site],
    );
    // Round trip through its text form.
    let req = draft::JoinRequest::from_text(&req.to_text().unwrap()).unwrap();
    // Tampered organisation or roles: the key's signature no longer covers it.
    let mut forged = req.clone();
    forged.organisation = "Aggregation Services Ltd".into();
    assert!(matches!(
        draft::approve(&mut draft_body.clone(), &forged),
        Err(ManifestError::BadJoinRequest { .. })
    ));
    let mut forged = req.clone();
    forged.roles.push(amalgam_consortium::Role::Decryptor);
    assert!(draft::approve(&mut draft_body.clone(), &forged).is_err());
    // Someone else's key with this request's signature (no proof of possession).
    let mut forged = req.clone();
    forged.key = seeded_key(19, 301).verifying_key();
    assert!(draft::approve(&mut draft_body.clone(), &forged).is_err());
    // A request made for another consortium.
    let other = draft::JoinRequest::new(
        &newcomer,
        "other",
        "plant-new",
        "New Plant AG",
        vec![amalgam_consortium::Role::Site],
    );
    assert!(matches!(
        draft::approve(&mut draft_body.clone(), &other),
        Err(ManifestError::WrongConsortium { .. })
    ));
    // An existing member's key or name.
    let existing = &c.sites[0];
    let dup = draft::JoinRequest::new(
        existing,
        "test-consortium",
        "again",
        "X",
        vec![amalgam_consortium::Role::Site],
    );
    assert!(draft::approve(&mut draft_body.clone(), &dup).is_err());
    // The genuine request is added, and confers nothing until everyone signs.
    draft::approve(&mut draft_body, &req).unwrap();
    assert_eq!(draft_body.members.len(), 6);
    // Five sites need t = 4 against one colluder: the draft is refused until it says so.
    assert!(SignedManifest::from_body(draft_body.clone()).is_err());
    draft_body.protocol.threshold = 4;
    draft_body.protocol.min_cohort = 4;
    draft_body.protocol.dropouts = 1;
    let mut s = SignedManifest::from_body(draft_body).unwrap();
    s.sign_as(&newcomer).unwrap();
    assert!(matches!(
        s.verify(),
        Err(ManifestError::MissingSignature { .. })
    ));
}

/// Rotations out of canonical order (descending new key) give a second encoding of the same
/// epoch; every member signing those bytes does not make them valid.
#[test]
fn rotations_out_of_canonical_order_are_refused() {
    let c = consortium(20, 4, 0, 32);
    let mut body = draft::next_epoch(&c.verified);
    let mut new_keys = Vec::new();
    for (i, old) in c.sites[..2].iter().enumerate() {
        let new = seeded_key(20, 600 + i as u64);
        let name = c
            .verified
            .member(&old.verifying_key())
            .unwrap()
            .name
            .clone();
        for m in &mut body.members {
            if m.key == old.verifying_key() {
                m.key = new.verifying_key();
            }
        }
        body.rotations.push(RotationStatement::sign(
            old,
            "test-consortium",
            &name,
            2,
            new.verifying_key(),
        ));
        new_keys.push(new);
    }
    body.normalise();
    amalgam_consortium::validate::validate(&body).unwrap();
    let mut reversed = body.clone();
    reversed.rotations.reverse();
    let e = amalgam_consortium::validate::validate(&reversed).unwrap_err();
    assert!(matches!(e, ManifestError::Rotation { .. }), "{e}");

    // The same, as bytes every member of epoch 2 signed.
    let bytes = canonical::encode(&reversed);
    let message = signed::signing_message(&bytes);
    let mut signers: Vec<&IdentityKey> = c.sites[2..].iter().collect();
    signers.push(&c.aggregator);
    signers.extend(new_keys.iter());
    let slots: Vec<Option<[u8; 64]>> = reversed
        .members
        .iter()
        .map(|m| {
            let k = signers.iter().find(|k| k.verifying_key() == m.key).unwrap();
            Some(k.sign(&message).to_bytes())
        })
        .collect();
    let file = file_with(&bytes, &slots);
    let result = SignedManifest::from_bytes(&file).and_then(|s| s.verify());
    assert!(
        matches!(result, Err(ManifestError::Rotation { .. })),
        "{result:?}"
    );
}

/// Bidirectional overrides and zero-width characters would make the line a member reads
/// before signing lie about who is listed; labels are printable ASCII only.
#[test]
fn names_with_bidi_overrides_or_invisible_characters_are_refused() {
    let c = consortium(21, 4, 0, 32);
    type Edit = fn(&mut ManifestBody);
    let cases: [(&str, Edit); 5] = [
        ("RLO in organisation", |b| {
            b.members[0].organisation = "Plant \u{202E}HbmG".into()
        }),
        ("zero-width space in name", |b| {
            b.members[0].name = "site\u{200B}-0".into()
        }),
        ("word joiner in name", |b| {
            b.members[1].name = "a\u{2060}b".into()
        }),
        ("line separator in organisation", |b| {
            b.members[1].organisation = "A\u{2028}B".into()
        }),
        ("Cyrillic look-alike in name", |b| {
            b.members[2].name = "sit\u{0435}-2".into()
        }),
    ];
    for (what, edit) in cases {
        let mut body = draft::next_epoch(&c.verified);
        edit(&mut body);
        assert!(
            matches!(
                SignedManifest::from_body(body.clone()),
                Err(ManifestError::Invalid(_))
            ),
            "{what} accepted"
        );
        // Also refused when it arrives as signed canonical bytes.
        let bytes = canonical::encode(&body);
        let decoded = canonical::decode(&bytes);
        if let Ok(d) = decoded {
            assert!(
                amalgam_consortium::validate::validate(&d).is_err(),
                "{what}"
            );
        }
    }
    // Plain ASCII with inner spaces and punctuation stays fine.
    let mut body = draft::next_epoch(&c.verified);
    body.members[0].organisation = "Acier & Fils S.A. (Lyon)".into();
    SignedManifest::from_body(body).unwrap();
}

/// A join draft that also loosens t, m, the trust model, the fallback and the DP budget:
/// every one of those fields is listed, as well as the join itself.
#[test]
fn a_join_draft_cannot_hide_policy_changes() {
    use amalgam_consortium::diff::changes_since;
    let c = consortium(22, 5, 0, 32);
    let me = c.sites[0].verifying_key();
    let mut body = draft::next_epoch(&c.verified);
    let newcomer = seeded_key(22, 400);
    body.members.push(amalgam_consortium::Member {
        name: "newcomer".into(),
        organisation: "New Plant".into(),
        roles: vec![amalgam_consortium::Role::Site],
        key: newcomer.verifying_key(),
    });
    body.protocol.threshold -= 1;
    body.protocol.min_cohort -= 1;
    body.protocol.trust = amalgam_consortium::Trust::Curious;
    body.dp.budget = amalgam_consortium::DpBudget::None;
    body.normalise();
    let fields: Vec<String> = changes_since(&c.verified, &body, &me)
        .unwrap()
        .into_iter()
        .map(|c| c.field)
        .collect();
    for f in [
        "protocol.threshold",
        "protocol.min_cohort",
        "protocol.trust",
        "dp.budget.kind",
        "member.newcomer",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} not listed: {fields:?}");
    }
    // A draft that does not chain to the previous epoch is refused before any diff.
    let mut unchained = body.clone();
    unchained.prev_digest = Some([7; 32]);
    assert!(matches!(
        changes_since(&c.verified, &unchained, &me),
        Err(ManifestError::ChainBroken { .. })
    ));
}
