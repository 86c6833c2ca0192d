//! Every way an independent review bypassed the privacy budget, written as the attacker's
//! strategy against the public API; each now fails to bypass. (A mutable or cloned permit, a
//! caller-built noise stream and a caller-declared sampler distance no longer compile: see the
//! `compile_fail` examples in the crate docs.)

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::marker::PhantomData;
use std::path::Path;

use amalgam_dp::encoding::{DdgCodec, DrawnNoise, EncodedUpdate, EncodingParams};
use amalgam_dp::ledger::audit::{Event, Finding, audit_bytes, audit_file};
use amalgam_dp::ledger::entry::{
    Accountant, Budget, BudgetPolicy, EntryBody, EntryKind, PolicyError, PrivacyUnit,
};
use amalgam_dp::ledger::store::{StoreError, parse};
use amalgam_dp::ledger::{Ledger, LedgerError, PolicyKind, RoundPermit, RoundRequest};
use amalgam_dp::params::{
    Adjacency, BitWidth, ClipNorm, Delta, Dimension, Distance, Epsilon, Gamma, RoundingBias, Sigma,
    SiteCount,
};
use amalgam_dp::rotation::RotationSeed;
use amalgam_dp::sampler::{FastSampler, SamplerKind, distance_bound};
use ed25519_dalek::SigningKey;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[21; 32])
}

fn policy(cap: f64, delta: f64) -> BudgetPolicy {
    BudgetPolicy::site_level(Epsilon::new(cap).unwrap(), Delta::new(delta).unwrap()).unwrap()
}

/// The review's round: cap ε = 2 at δ = 10⁻⁶ stops after a few dozen rounds.
fn request(round_id: u64) -> RoundRequest {
    RoundRequest {
        round_id,
        manifest_digest: [0x11; 32],
        round_context: [round_id as u8; 32],
        min_cohort: SiteCount::new(4).unwrap(),
        colluders: 0,
        n_cohort: SiteCount::new(5).unwrap(),
        clip: ClipNorm::new(1.0).unwrap(),
        gamma: Gamma::new(1000.0).unwrap(),
        bits: BitWidth::new(24).unwrap(),
        local_sigma: Sigma::new(5.0).unwrap(),
        dim: Dimension::new(16).unwrap(),
        beta: RoundingBias::recommended(),
        sampler: SamplerKind::Fast,
    }
}

/// Authorizes rounds from `from` until the cap refuses one; returns how many were accepted.
fn spend_all(ledger: &mut Ledger, from: u64) -> u64 {
    let mut accepted = 0;
    while common::authorize_in_epoch(ledger, request(from + accepted)).is_ok() {
        accepted += 1;
        assert!(accepted < 10_000, "the cap never refused");
    }
    accepted
}

fn payloads(path: &Path) -> Vec<Vec<u8>> {
    parse(&std::fs::read(path).unwrap()).unwrap().payloads
}

/// Bypass 1: reopen with a looser policy (the review: δ = 0.05, same cap → 159 more rounds
/// and a clean audit).
#[test]
fn bypass_1_a_looser_policy_at_open_is_refused_and_a_signed_change_is_a_finding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let (mut ledger, _) = Ledger::open(&path, key(), policy(2.0, 1e-6)).unwrap();
    let accepted = spend_all(&mut ledger, 0);
    assert!(accepted > 5);
    drop(ledger);
    let before = std::fs::read(&path).unwrap();

    // δ = 0.05 cannot even be stated at site level, whether built checked or by hand.
    assert_eq!(
        BudgetPolicy::site_level(Epsilon::new(2.0).unwrap(), Delta::new(0.05).unwrap()),
        Err(PolicyError::DeltaAboveCeiling(0.05))
    );
    let hand_built = BudgetPolicy {
        unit: PrivacyUnit::SiteUpdatePerRound,
        adjacency: Adjacency::ZeroOut,
        accountant: Accountant::DdgZcdpOpendp,
        budget: Budget::Capped {
            epsilon_cap: Epsilon::new(2.0).unwrap(),
            delta: Delta::new(0.05).unwrap(),
        },
    };
    assert!(matches!(
        Ledger::open(&path, key(), hand_built),
        Err(LedgerError::Policy(PolicyError::DeltaAboveCeiling(_)))
    ));
    // Any other policy, looser or not, is refused at open: the genesis entry commits it.
    for other in [
        policy(2.0, 1e-5),
        policy(3.0, 1e-6),
        policy(1.0, 1e-7),
        BudgetPolicy::no_privacy(),
    ] {
        assert!(
            matches!(
                Ledger::open(&path, key(), other),
                Err(LedgerError::PolicyMismatch { .. })
            ),
            "{other:?}"
        );
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "refusals changed the file"
    );

    // The only way on: a signed policy change, which every audit reports.
    let (mut ledger, _) = Ledger::open(&path, key(), policy(2.0, 1e-6)).unwrap();
    assert!(common::authorize_in_epoch(&mut ledger, request(accepted)).is_err());
    ledger.change_policy(policy(2.0, 1e-5)).unwrap();
    let more = spend_all(&mut ledger, accepted + 1);
    let anchor = ledger.anchor();
    drop(ledger);
    let report = audit_file(&path, &key().verifying_key(), &[anchor]).unwrap();
    let loosened: Vec<_> = report
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::PolicyLoosened { .. }))
        .collect();
    assert_eq!(loosened.len(), 1, "{:?}", report.findings);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert!(more < accepted, "δ 1e-6 → 1e-5 bought {more} more rounds");
    // Tightening is not a loosening; tightening below what was already spent is its own
    // finding (the cap in force would otherwise read as if it had held).
    let (mut ledger, report) = Ledger::open(&path, key(), policy(2.0, 1e-5)).unwrap();
    assert_eq!(report.findings.len(), 1);
    ledger.change_policy(policy(1.0, 1e-7)).unwrap();
    let anchor = ledger.anchor();
    drop(ledger);
    let report = audit_file(&path, &key().verifying_key(), &[anchor]).unwrap();
    assert_eq!(report.findings.len(), 2, "{:?}", report.findings);
    assert!(
        matches!(report.findings[1], Finding::SpentAboveCap { cap, .. } if cap == 1.0),
        "{:?}",
        report.findings
    );
}

/// Bypass 1 (forged): a policy change written by someone without the key, or a genesis
/// rewritten with another policy, does not verify.
#[test]
fn bypass_1_a_forged_policy_change_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let (mut ledger, _) = Ledger::open(&path, key(), policy(2.0, 1e-6)).unwrap();
    common::authorize_in_epoch(&mut ledger, request(0)).unwrap();
    drop(ledger);
    let mut p = payloads(&path);
    let genesis = EntryBody::from_bytes(&p[0][..p[0].len() - 64]).unwrap();
    let EntryKind::Genesis { nonce, .. } = genesis.kind else {
        panic!("not a genesis entry")
    };
    let mut looser = genesis.clone();
    looser.kind = EntryKind::Genesis {
        key: key().verifying_key().to_bytes(),
        policy: policy(100.0, 1e-5),
        nonce,
    };
    // The old signature on the edited genesis.
    p[0] = [looser.to_bytes(), p[0][p[0].len() - 64..].to_vec()].concat();
    let f = audit_bytes(&common::reframe(&p), &key().verifying_key(), &[])
        .unwrap()
        .findings;
    assert!(f.contains(&Finding::BadSignature { index: 0 }), "{f:?}");
    std::fs::write(&path, common::reframe(&p)).unwrap();
    assert!(matches!(
        Ledger::open(&path, key(), policy(100.0, 1e-5)),
        Err(LedgerError::Tampered(_))
    ));
}

/// Inherent-method probe: `Probe::<T>::is_clone()` is true exactly when `T: Clone`.
struct Probe<T>(PhantomData<T>);
trait NotClone {
    fn is_clone(&self) -> bool {
        false
    }
}
impl<T> NotClone for Probe<T> {}
impl<T: Clone> Probe<T> {
    fn is_clone(&self) -> bool {
        true
    }
}

/// Bypass 2: one permit, many releases.
#[test]
fn bypass_2_a_permit_is_single_use_and_the_only_way_to_an_encoding() {
    // The probe works (a Clone type reads true) …
    assert!(Probe::<RoundRequest>(PhantomData).is_clone());
    // … and neither the permit nor the drawn noise nor the encoding can be duplicated.
    assert!(!Probe::<RoundPermit>(PhantomData).is_clone());
    assert!(!Probe::<DrawnNoise>(PhantomData).is_clone());
    assert!(!Probe::<EncodedUpdate>(PhantomData).is_clone());

    let dir = tempfile::tempdir().unwrap();
    let (mut ledger, _) = Ledger::open(&dir.path().join("l"), key(), policy(100.0, 1e-6)).unwrap();
    let r = request(1);
    let codec = DdgCodec::new(EncodingParams {
        clip: r.clip,
        gamma: r.gamma,
        bits: r.bits,
        dim: r.dim,
        beta: r.beta,
        rotation_seed: RotationSeed([3; 32]),
    })
    .unwrap();
    let permit = common::authorize_in_epoch(&mut ledger, r).unwrap();
    // The draw takes the permit by value: after it, the permit is gone (using it again does
    // not compile). The round cannot be authorized a second time either.
    let noise = codec.draw_noise(permit, PolicyKind::Private).unwrap();
    assert!(matches!(
        common::authorize_in_epoch(&mut ledger, r),
        Err(LedgerError::RoundAlreadyAccepted(1))
    ));
    let update = codec.encode(noise, &[0.1; 16]).unwrap();
    assert_eq!(update.values().len(), 16);
    // Policy `none` still goes through a permit, and says so.
    let (mut none, _) =
        Ledger::open(&dir.path().join("none"), key(), BudgetPolicy::no_privacy()).unwrap();
    let permit = common::authorize_in_epoch(&mut none, request(1)).unwrap();
    assert!(permit.epsilon_total().get().is_infinite());
    assert_eq!(permit.scaled_local_sigma(), None);
    let y = codec
        .encode(
            codec.draw_noise(permit, PolicyKind::NoPrivacy).unwrap(),
            &[0.1; 16],
        )
        .unwrap();
    assert_eq!(y.values().len(), 16);
    assert_eq!(y.policy_kind(), PolicyKind::NoPrivacy);
}

/// Bypass 3: two handles on one ledger file each spending the whole budget.
#[test]
fn bypass_3_a_second_handle_is_locked_out_and_writes_underneath_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let (mut first, _) = Ledger::open(&path, key(), policy(2.0, 1e-6)).unwrap();
    assert!(matches!(
        Ledger::open(&path, key(), policy(2.0, 1e-6)),
        Err(LedgerError::Store(StoreError::Locked))
    ));
    let accepted = spend_all(&mut first, 0);
    drop(first);
    // Once the first handle is gone the next one sees the whole spend.
    let (mut second, _) = Ledger::open(&path, key(), policy(2.0, 1e-6)).unwrap();
    assert_eq!(spend_all(&mut second, accepted), 0);
    drop(second);

    // A writer that ignores the lock and rewinds the file under an open handle: the handle
    // re-reads the tail before appending and refuses.
    let path = dir.path().join("underneath");
    let (mut ledger, _) = Ledger::open(&path, key(), policy(100.0, 1e-6)).unwrap();
    common::authorize_in_epoch(&mut ledger, request(10_000)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let p = parse(&bytes).unwrap();
    let last = 4 + p.payloads.last().unwrap().len() + 32;
    std::fs::write(&path, &bytes[..bytes.len() - last]).unwrap();
    assert!(matches!(
        common::authorize_in_epoch(&mut ledger, request(10_001)),
        Err(LedgerError::Store(StoreError::ChangedUnderneath))
    ));
    // Same length, different last record.
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 40] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    assert!(matches!(
        common::authorize_in_epoch(&mut ledger, request(10_001)),
        Err(LedgerError::Store(StoreError::ChangedUnderneath))
    ));
    std::fs::write(&path, &bytes).unwrap();
    common::authorize_in_epoch(&mut ledger, request(10_001)).unwrap();
}

/// Bypass 4: rolling the ledger back by flipping one bit of a complete last record.
#[test]
fn bypass_4_a_bit_flip_in_the_last_record_fails_closed_and_a_cut_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let (mut ledger, _) = Ledger::open(&path, key(), policy(2.0, 1e-6)).unwrap();
    let accepted = spend_all(&mut ledger, 0);
    let published = ledger.anchor();
    drop(ledger);
    let bytes = std::fs::read(&path).unwrap();
    let last_len = 4 + payloads(&path).last().unwrap().len() + 32;
    // Every single-bit flip in the last complete record (sampled: length, payload, checksum).
    for offset in (bytes.len() - last_len..bytes.len())
        .step_by(29)
        .chain([bytes.len() - 1])
    {
        let mut flipped = bytes.clone();
        flipped[offset] ^= 0x08;
        std::fs::write(&path, &flipped).unwrap();
        let opened = Ledger::open(&path, key(), policy(2.0, 1e-6));
        assert!(
            matches!(
                opened,
                Err(LedgerError::Store(StoreError::Corrupt { .. })) | Err(LedgerError::Tampered(_))
            ),
            "offset {offset}: {:?}",
            opened.err()
        );
        assert_eq!(std::fs::read(&path).unwrap(), flipped, "offset {offset}");
        let report = audit_file(&path, &key().verifying_key(), &[published]).unwrap();
        assert!(!report.is_clean(), "offset {offset}");
    }
    // A flip in a checksum reads as corruption in the audit, with the record's offset.
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 1] ^= 1;
    let report = audit_bytes(&flipped, &key().verifying_key(), &[published]).unwrap();
    assert!(matches!(
        report.findings[0],
        Finding::CorruptRecord { offset, .. } if offset as usize == n - last_len
    ));

    // Cutting the complete last record mid-way looks like a crash to the file alone: it is
    // recovered, but recorded, and the site's own anchor check refuses to charge.
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let (mut ledger, report) = Ledger::open(&path, key(), policy(2.0, 1e-6)).unwrap();
    assert_eq!(report.torn_bytes, Some(last_len as u64 - 10));
    assert!(matches!(
        ledger.check_anchor(&published),
        Err(LedgerError::BehindAnchor(Finding::AnchorMismatch { .. }))
    ));
    // (Had it charged anyway, the rolled-back round would be accepted again …)
    let _ = common::authorize_in_epoch(&mut ledger, request(accepted - 1));
    let anchor = ledger.anchor();
    drop(ledger);
    // … and the audit against the published anchor lists both the cut and the recovery.
    let report = audit_file(&path, &key().verifying_key(), &[published, anchor]).unwrap();
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f, Finding::AnchorMismatch { .. })),
        "{:?}",
        report.findings
    );
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e, Event::Recovered { dropped_bytes, .. } if *dropped_bytes == last_len as u64 - 10))
    );
}

fn is_zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}

/// Bypass 5: caller-chosen noise entropy (a 64-bit seed, a fixed seed, the rounding stream).
#[test]
fn bypass_5_noise_and_rounding_streams_are_the_crates_own_and_wiped() {
    // The release constructors take no stream at all; each draws a fresh OS key.
    let sigma = Sigma::new(1000.0).unwrap();
    let mut a = vec![0i64; 64];
    let mut b = vec![0i64; 64];
    use amalgam_dp::sampler::NoiseSampler;
    FastSampler::new(sigma).unwrap().fill(&mut a).unwrap();
    FastSampler::new(sigma).unwrap().fill(&mut b).unwrap();
    assert_ne!(a, b);
    // The same update and round under two permits gives two different encodings (fresh noise
    // and fresh rounding coins): no caller can make a draw repeat.
    let dir = tempfile::tempdir().unwrap();
    let r = request(1);
    let codec = DdgCodec::new(EncodingParams {
        clip: r.clip,
        gamma: r.gamma,
        bits: r.bits,
        dim: r.dim,
        beta: r.beta,
        rotation_seed: RotationSeed([3; 32]),
    })
    .unwrap();
    let mut out = Vec::new();
    for site in 0..2 {
        let (mut l, _) = Ledger::open(
            &dir.path().join(format!("{site}")),
            key(),
            policy(100.0, 1e-6),
        )
        .unwrap();
        let permit = common::authorize_in_epoch(&mut l, r).unwrap();
        out.push(
            codec
                .encode(
                    codec.draw_noise(permit, PolicyKind::Private).unwrap(),
                    &[0.1; 16],
                )
                .unwrap()
                .values()
                .to_vec(),
        );
    }
    assert_ne!(out[0], out[1]);
    // Sampler state, drawn noise and the encoded update are wiped on drop.
    is_zeroize_on_drop::<FastSampler>();
    is_zeroize_on_drop::<DrawnNoise>();
    is_zeroize_on_drop::<EncodedUpdate>();
}

/// Bypass 6: a caller-declared sampler distance (and a self-declared n_min).
#[test]
fn bypass_6_the_sampler_distance_and_n_min_are_computed_and_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let (mut ledger, _) = Ledger::open(&path, key(), policy(100.0, 1e-6)).unwrap();
    let r = RoundRequest {
        colluders: 1,
        ..request(0)
    };
    common::authorize_in_epoch(&mut ledger, r).unwrap();
    drop(ledger);
    let mut p = payloads(&path);
    let body = EntryBody::from_bytes(&p[2][..p[2].len() - 64]).unwrap();
    let EntryKind::Charge(charge) = &body.kind else {
        panic!("not a charge")
    };
    let scaled = Sigma::new(r.gamma.get() * r.local_sigma.get()).unwrap();
    assert_eq!(
        charge.sampler_distance,
        distance_bound(SamplerKind::Fast, scaled).unwrap()
    );
    assert_eq!(charge.n_min.get(), 3);
    // The site re-signs the charge claiming a far worse sampler is negligible (distance 0
    // for the fast sampler) and more honest plants than the protocol guarantees.
    for (field, edit) in [
        (
            "sampler_distance",
            Box::new(|c: &mut amalgam_dp::ledger::entry::Charge| {
                c.sampler_distance = Distance::ZERO
            }) as Box<dyn Fn(&mut amalgam_dp::ledger::entry::Charge)>,
        ),
        (
            "n_min",
            Box::new(|c: &mut amalgam_dp::ledger::entry::Charge| {
                c.n_min = SiteCount::new(4).unwrap()
            }),
        ),
    ] {
        let mut forged = body.clone();
        if let EntryKind::Charge(c) = &mut forged.kind {
            edit(c);
        }
        p[2] = common::sign(&forged, &key());
        let f = audit_bytes(&common::reframe(&p), &key().verifying_key(), &[])
            .unwrap()
            .findings;
        assert!(
            f.iter()
                .any(|x| matches!(x, Finding::ValueMismatch { field: got, .. } if *got == field)),
            "{field}: {f:?}"
        );
    }
}

/// Key rotation and epochs: a rotation signed by both keys is clean, a lost old key is a
/// finding, an epoch is not, and a charge under another manifest is refused.
#[test]
fn key_rotation_epochs_and_manifest_binding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let (mut ledger, _) = Ledger::open(&path, key(), policy(100.0, 1e-6)).unwrap();
    ledger
        .record_epoch([0x11; 32], 1, common::params_of(&request(0)))
        .unwrap();
    ledger.authorize(request(0)).unwrap();
    assert!(matches!(
        ledger.authorize(RoundRequest {
            manifest_digest: [0x22; 32],
            ..request(1)
        }),
        Err(LedgerError::ManifestMismatch)
    ));
    assert!(matches!(
        ledger.record_epoch([0x22; 32], 0, common::params_of(&request(0))),
        Err(LedgerError::EpochRegressed { .. })
    ));
    let second = SigningKey::from_bytes(&[22; 32]);
    ledger.rotate_key(second.clone()).unwrap();
    common::authorize_in_epoch(&mut ledger, request(1)).unwrap();
    let anchor = ledger.anchor();
    drop(ledger);
    for trusted in [key(), second.clone()] {
        let report = audit_file(&path, &trusted.verifying_key(), &[anchor]).unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
    }
    let stranger = SigningKey::from_bytes(&[23; 32]);
    let report = audit_file(&path, &stranger.verifying_key(), &[anchor]).unwrap();
    assert_eq!(report.findings, vec![Finding::UntrustedKey]);
    // The old key no longer opens the ledger; the new one does.
    assert!(matches!(
        Ledger::open(&path, key(), policy(100.0, 1e-6)),
        Err(LedgerError::WrongKey)
    ));
    drop(Ledger::open(&path, second, policy(100.0, 1e-6)).unwrap());
    // The second key is lost too: a third takes over, and every audit says so.
    let third = SigningKey::from_bytes(&[24; 32]);
    let (ledger, _) =
        Ledger::open_after_lost_key(&path, third.clone(), policy(100.0, 1e-6)).unwrap();
    let anchor = ledger.anchor();
    drop(ledger);
    let report = audit_file(&path, &third.verifying_key(), &[anchor]).unwrap();
    assert!(
        matches!(report.findings[..], [Finding::OldKeyLost { .. }]),
        "{:?}",
        report.findings
    );
}

/// Bypass 4, bluntly: delete the ledger and start a fresh one. The file alone is clean; the
/// site's own anchor check and the audit against the published anchor are not.
#[test]
fn bypass_4_a_recreated_ledger_is_behind_its_published_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let (mut ledger, _) = Ledger::open(&path, key(), policy(2.0, 1e-6)).unwrap();
    spend_all(&mut ledger, 0);
    let published = ledger.anchor();
    drop(ledger);
    std::fs::remove_file(&path).unwrap();
    let (mut fresh, _) = Ledger::open(&path, key(), policy(2.0, 1e-6)).unwrap();
    assert!(matches!(
        fresh.check_anchor(&published),
        Err(LedgerError::BehindAnchor(_))
    ));
    common::authorize_in_epoch(&mut fresh, request(0)).unwrap();
    let anchor = fresh.anchor();
    drop(fresh);
    let report = audit_file(&path, &key().verifying_key(), &[published, anchor]).unwrap();
    assert!(
        report.findings.iter().all(|f| matches!(
            f,
            Finding::Truncated { .. } | Finding::AnchorMismatch { .. }
        )),
        "{:?}",
        report.findings
    );
    assert!(!report.is_clean());
}

/// Opening is refused without a change to the file even when a torn tail is waiting to be cut.
#[test]
fn a_refused_open_does_not_cut_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let (mut ledger, _) = Ledger::open(&path, key(), policy(2.0, 1e-6)).unwrap();
    common::authorize_in_epoch(&mut ledger, request(0)).unwrap();
    drop(ledger);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    let torn = std::fs::read(&path).unwrap();
    assert!(matches!(
        Ledger::open(&path, key(), policy(1.0, 1e-6)),
        Err(LedgerError::PolicyMismatch { .. })
    ));
    assert!(matches!(
        Ledger::open(&path, SigningKey::from_bytes(&[99; 32]), policy(2.0, 1e-6)),
        Err(LedgerError::WrongKey)
    ));
    assert_eq!(std::fs::read(&path).unwrap(), torn);
    let last = 4 + parse(&bytes).unwrap().payloads.last().unwrap().len() + 32;
    let (_, report) = Ledger::open(&path, key(), policy(2.0, 1e-6)).unwrap();
    assert_eq!(report.torn_bytes, Some(last as u64 - 7));
}
