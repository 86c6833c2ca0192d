//! The second review's attacks on the privacy budget, each written as the attacker's strategy
//! against the public API; each now fails to attack.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use amalgam_dp::ledger::audit::{
    Event, Finding, PublishedRound, audit_bytes, audit_published, entry_hash,
};
use amalgam_dp::ledger::entry::BudgetPolicy;
use amalgam_dp::ledger::store::parse;
use amalgam_dp::ledger::{Ledger, LedgerError, RoundRequest};
use amalgam_dp::params::{
    BitWidth, ClipNorm, Delta, Dimension, Epsilon, Gamma, RoundingBias, Sigma, SiteCount,
};
use amalgam_dp::sampler::SamplerKind;
use ed25519_dalek::SigningKey;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[21; 32])
}

fn policy(cap: f64, delta: f64) -> BudgetPolicy {
    BudgetPolicy::site_level(Epsilon::new(cap).unwrap(), Delta::new(delta).unwrap()).unwrap()
}

/// The review's round: m plants minimum, n contributing, local σ in update units.
fn req(round_id: u64, m: u32, n: u32, local_sigma: f64) -> RoundRequest {
    RoundRequest {
        round_id,
        manifest_digest: [0x11; 32],
        round_context: [round_id as u8; 32],
        min_cohort: SiteCount::new(m).unwrap(),
        colluders: 0,
        n_cohort: SiteCount::new(n).unwrap(),
        clip: ClipNorm::new(1.0).unwrap(),
        gamma: Gamma::new(1000.0).unwrap(),
        bits: BitWidth::new(24).unwrap(),
        local_sigma: Sigma::new(local_sigma).unwrap(),
        dim: Dimension::new(16).unwrap(),
        beta: RoundingBias::recommended(),
        sampler: SamplerKind::Fast,
    }
}

/// The consortium's epoch: m = 4, five plants, local σ = 5.
fn honest() -> RoundRequest {
    req(0, 4, 5, 5.0)
}

/// Attack A: the site declares its own minimum cohort (10⁶) and a local σ of 0.01 and records
/// the honest ε. Now the epoch entry fixes the round parameters: a charge that differs, or any
/// charge before an epoch, is refused without an entry; a cohort above the bound is refused
/// before the accountant's τ sum can run for minutes; and the audit finds a re-signed charge
/// that differs from its epoch, or one with no epoch at all.
#[test]
fn review_a_self_declared_min_cohort_is_refused_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let (mut ledger, _) = Ledger::open(&path, key(), policy(2.0, 1e-6)).unwrap();
    // No epoch yet: nothing is charged, nothing written.
    assert!(matches!(
        ledger.authorize(honest()),
        Err(LedgerError::NoEpoch)
    ));
    assert_eq!(ledger.anchor().entries, 1);
    // The inflated cohort cannot be put in force either, and is refused at once.
    let started = Instant::now();
    assert!(matches!(
        ledger.record_epoch(
            [0x11; 32],
            0,
            common::params_of(&req(0, 1_000_000, 1_000_000, 0.01))
        ),
        Err(LedgerError::Param(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(1));
    ledger
        .record_epoch([0x11; 32], 0, common::params_of(&honest()))
        .unwrap();
    let entries = ledger.anchor().entries;
    for (inflated, field) in [
        (req(0, 1_000_000, 1_000_000, 0.01), "min_cohort"),
        (req(0, 4, 5, 0.01), "local_sigma"),
        (
            RoundRequest {
                colluders: 1,
                ..honest()
            },
            "colluders",
        ),
        (req(0, 4, 4, 5.0), "n_cohort"),
        (
            RoundRequest {
                gamma: Gamma::new(10.0).unwrap(),
                ..honest()
            },
            "gamma",
        ),
    ] {
        match ledger.authorize(inflated) {
            Err(LedgerError::RoundParamsMismatch { field: got }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(ledger.anchor().entries, entries, "a refusal writes nothing");
    let permit = ledger.authorize(honest()).unwrap();
    assert_eq!(permit.n_min().get(), 4);
    drop((permit, ledger));

    let payloads = parse(&std::fs::read(&path).unwrap()).unwrap().payloads;
    let vk = key().verifying_key();
    let clean = audit_bytes(&common::reframe(&payloads), &vk, &[]).unwrap();
    assert_eq!(clean.findings, vec![Finding::Unanchored]);
    // The epoch's parameters are in the report, for comparison with the published manifest.
    assert!(clean.events.iter().any(|e| matches!(
        e,
        Event::Epoch { params, .. } if *params == common::params_of(&honest())
    )));

    // The site re-signs its charge with the inflated cohort: the audit finds it.
    let mut forged = payloads.clone();
    let mut b = common::body(&forged[2]);
    common::charge_mut(&mut b).request.min_cohort = SiteCount::new(1_000_000).unwrap();
    forged[2] = common::sign(&b, &key());
    let f = audit_bytes(&common::reframe(&forged), &vk, &[])
        .unwrap()
        .findings;
    assert!(
        f.contains(&Finding::RoundParamsMismatch {
            index: 2,
            field: "min_cohort"
        }),
        "{f:?}"
    );
    // ... and a cohort of 4·10⁹ is refused by the audit at once instead of summing τ.
    let mut b = common::body(&forged[2]);
    common::charge_mut(&mut b).request.min_cohort = SiteCount::new(4_000_000_000).unwrap();
    forged[2] = common::sign(&b, &key());
    let started = Instant::now();
    let f = audit_bytes(&common::reframe(&forged), &vk, &[])
        .unwrap()
        .findings;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        f.iter()
            .any(|x| matches!(x, Finding::Unaccountable { index: 2, .. })),
        "{f:?}"
    );

    // The epoch entry removed and the charge re-chained and re-signed: no epoch, a finding.
    let mut b = common::body(&payloads[2]);
    b.seq = 1;
    b.prev_hash = entry_hash(&payloads[0]);
    let no_epoch = vec![payloads[0].clone(), common::sign(&b, &key())];
    let f = audit_bytes(&common::reframe(&no_epoch), &vk, &[])
        .unwrap()
        .findings;
    assert!(
        f.contains(&Finding::ChargeBeforeEpoch { index: 1 }),
        "{f:?}"
    );
}

/// Attack E: a loose genesis policy, a large spend, then a tightening change: the policy in
/// force shows a cap below what was spent, and the audit used to be clean. Now the change is
/// the finding `SpentAboveCap`, and the report lists the genesis policy and every change with
/// the ε spent before it.
#[test]
fn review_e_spent_above_the_cap_in_force_is_a_finding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let (mut ledger, _) = Ledger::open(&path, key(), policy(50.0, 1e-5)).unwrap();
    common::enter_epoch_of(&mut ledger, &honest());
    let mut n = 0;
    while n < 300 && ledger.authorize(req(n, 4, 5, 5.0)).is_ok() {
        n += 1;
    }
    let spent = ledger.spent().unwrap().get();
    assert!(spent > 1.0, "{spent}");
    ledger.change_policy(policy(1.0, 1e-6)).unwrap();
    // Nothing more is accepted under the tightened cap.
    assert!(matches!(
        ledger.authorize(req(n, 4, 5, 5.0)),
        Err(LedgerError::BudgetExceeded { .. })
    ));
    drop(ledger);
    let report = amalgam_dp::ledger::audit::audit_file(&path, &key().verifying_key(), &[]).unwrap();
    let index = 2 + n as usize;
    assert!(
        report.findings.iter().any(|f| matches!(
            f,
            Finding::SpentAboveCap { index: i, epsilon, cap }
                if *i == index && *epsilon > spent && *cap == 1.0
        )),
        "{:?}",
        report.findings
    );
    let indices: Vec<usize> = report.policies.iter().map(|p| p.index).collect();
    assert_eq!(indices, vec![0, index]);
    assert_eq!(report.policies[0].policy, policy(50.0, 1e-5));
    assert_eq!(report.policies[1].policy, policy(1.0, 1e-6));
    // A tightening that stays above the spend is not a finding.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let (mut ledger, _) = Ledger::open(&path, key(), policy(50.0, 1e-6)).unwrap();
    common::enter_epoch_of(&mut ledger, &honest());
    ledger.authorize(honest()).unwrap();
    ledger.change_policy(policy(40.0, 1e-6)).unwrap();
    drop(ledger);
    let report = amalgam_dp::ledger::audit::audit_file(&path, &key().verifying_key(), &[]).unwrap();
    assert_eq!(report.findings, vec![Finding::Unanchored]);
}

fn codec() -> amalgam_dp::encoding::DdgCodec {
    amalgam_dp::encoding::DdgCodec::new(amalgam_dp::encoding::EncodingParams {
        clip: ClipNorm::new(1.0).unwrap(),
        gamma: Gamma::new(1000.0).unwrap(),
        bits: BitWidth::new(24).unwrap(),
        dim: Dimension::new(16).unwrap(),
        beta: RoundingBias::recommended(),
        rotation_seed: amalgam_dp::rotation::RotationSeed([3; 32]),
    })
    .unwrap()
}

/// Attack F: a second ledger under policy `none` hands out a permit whose draw is noiseless,
/// while the capped ledger's audit stays clean. Now the draw states the kind of round it
/// expects and refuses a `none` permit where a private round is due, and the update carries
/// the charging ledger's identity and policy kind, which the consumer checks.
#[test]
fn review_f_a_side_ledger_under_policy_none_gives_no_private_update() {
    use amalgam_dp::error::EncodeError;
    use amalgam_dp::ledger::PolicyKind;

    let dir = tempfile::tempdir().unwrap();
    let (mut capped, _) =
        Ledger::open(&dir.path().join("capped"), key(), policy(2.0, 1e-6)).unwrap();
    let (mut side, _) =
        Ledger::open(&dir.path().join("side"), key(), BudgetPolicy::no_privacy()).unwrap();
    common::enter_epoch_of(&mut capped, &honest());
    common::enter_epoch_of(&mut side, &honest());
    let permit = side.authorize(req(5, 4, 5, 5.0)).unwrap();
    assert_eq!(permit.policy_kind(), PolicyKind::NoPrivacy);
    assert_eq!(
        codec().draw_noise(permit, PolicyKind::Private).err(),
        Some(EncodeError::PolicyKindMismatch {
            expected: PolicyKind::Private,
            found: PolicyKind::NoPrivacy
        })
    );
    // Drawn as what it is, the noiseless update says so, and names the side ledger: the
    // consumer that expects the capped ledger's private update refuses it.
    let permit = side.authorize(req(6, 4, 5, 5.0)).unwrap();
    let noiseless = codec()
        .encode(
            codec().draw_noise(permit, PolicyKind::NoPrivacy).unwrap(),
            &[0.0; 16],
        )
        .unwrap();
    assert!(noiseless.values().iter().all(|&v| v == 0));
    assert_eq!(noiseless.policy_kind(), PolicyKind::NoPrivacy);
    assert_eq!(noiseless.ledger_id(), &side.ledger_id());
    assert!(matches!(
        noiseless.check_origin(&capped.ledger_id(), PolicyKind::Private),
        Err(EncodeError::PolicyKindMismatch { .. })
    ));
    assert_ne!(capped.ledger_id(), side.ledger_id());
    // The capped ledger's own update passes the same check.
    let permit = capped.authorize(req(5, 4, 5, 5.0)).unwrap();
    let private = codec()
        .encode(
            codec().draw_noise(permit, PolicyKind::Private).unwrap(),
            &[0.0; 16],
        )
        .unwrap();
    assert_eq!(
        private.check_origin(&capped.ledger_id(), PolicyKind::Private),
        Ok(())
    );
    assert_eq!(
        private.check_origin(&side.ledger_id(), PolicyKind::Private),
        Err(EncodeError::OtherLedger)
    );
}

/// Attack D: persisted update bytes made up by hand — no permit, no noise, any round id —
/// parsed back into an update. Now the parser is private; bytes come back only through the
/// ledger, which checks its own seal, its identity and an accepted charge with the same
/// round context, so forged, relabelled, foreign and uncharged bytes are all refused.
#[test]
fn review_d_forged_or_relabelled_persisted_updates_are_refused() {
    use amalgam_dp::ledger::PolicyKind;

    let dir = tempfile::tempdir().unwrap();
    let (mut ledger, _) = Ledger::open(&dir.path().join("l"), key(), policy(2.0, 1e-6)).unwrap();
    common::enter_epoch_of(&mut ledger, &honest());
    let permit = ledger.authorize(req(9, 4, 5, 5.0)).unwrap();
    let update = codec()
        .encode(
            codec().draw_noise(permit, PolicyKind::Private).unwrap(),
            &[0.1; 16],
        )
        .unwrap();
    let sealed = ledger.seal_update(&update).unwrap();
    assert_eq!(
        ledger.reload_update(&sealed).unwrap().values(),
        update.values()
    );

    // The review's forgery: the old unsealed layout with noiseless values.
    let mut forged = b"AMDPUPD1".to_vec();
    forged.extend_from_slice(&9u64.to_le_bytes());
    forged.extend_from_slice(&[0; 32]);
    forged.extend_from_slice(&24u32.to_le_bytes());
    forged.extend_from_slice(&16u32.to_le_bytes());
    for i in 0..16u64 {
        forged.extend_from_slice(&(i * 100).to_le_bytes());
    }
    assert!(matches!(
        ledger.reload_update(&forged),
        Err(LedgerError::BadUpdateSeal)
    ));
    // The same forgery in today's layout, naming this ledger, with a made-up seal.
    let mut today = sealed[..sealed.len() - 64].to_vec();
    for v in today[89..].iter_mut() {
        *v = 0;
    }
    today.extend_from_slice(&[7; 64]);
    assert!(matches!(
        ledger.reload_update(&today),
        Err(LedgerError::BadUpdateSeal)
    ));
    // Relabelled to another round id: the seal breaks.
    let mut relabelled = sealed.to_vec();
    relabelled[41..49].copy_from_slice(&10u64.to_le_bytes());
    assert!(matches!(
        ledger.reload_update(&relabelled),
        Err(LedgerError::BadUpdateSeal)
    ));
    // Sealed by another ledger of the same site (same key): refused as foreign.
    let (mut other, _) = Ledger::open(&dir.path().join("other"), key(), policy(2.0, 1e-6)).unwrap();
    common::enter_epoch_of(&mut other, &honest());
    let permit = other.authorize(req(9, 4, 5, 5.0)).unwrap();
    let foreign = codec()
        .encode(
            codec().draw_noise(permit, PolicyKind::Private).unwrap(),
            &[0.1; 16],
        )
        .unwrap();
    let foreign = other.seal_update(&foreign).unwrap();
    assert!(matches!(
        ledger.reload_update(&foreign),
        Err(LedgerError::UpdateFromOtherLedger)
    ));
    assert!(matches!(
        ledger.seal_update(&other.reload_update(&foreign).unwrap()),
        Err(LedgerError::UpdateFromOtherLedger)
    ));
    // Sealed for a round this ledger never accepted (the key holder's own forgery, with the
    // ledger's identity): refused for want of a charge.
    drop(update);
    let key_holder = ledger;
    let mut uncharged = sealed[..sealed.len() - 64].to_vec();
    uncharged[41..49].copy_from_slice(&77u64.to_le_bytes());
    let sig = ed25519_dalek::Signer::sign(
        &key(),
        &[
            b"amalgam-dp sealed encoded update v1\0".as_slice(),
            &uncharged,
        ]
        .concat(),
    );
    uncharged.extend_from_slice(&sig.to_bytes());
    assert!(matches!(
        key_holder.reload_update(&uncharged),
        Err(LedgerError::UpdateNotCharged(77))
    ));
}

/// The review's attacks B and C, seen from the published rounds: the post-charge anchor each
/// permit (and so each upload) carries, as the aggregator publishes it.
fn published(round_id: u64, permit: &amalgam_dp::ledger::RoundPermit) -> PublishedRound {
    PublishedRound {
        round_id,
        anchor: permit.anchor(),
    }
}

fn audit_against(path: &std::path::Path, rounds: &[PublishedRound]) -> Vec<Finding> {
    let bytes = std::fs::read(path).unwrap();
    audit_published(&bytes, &key().verifying_key(), &[], rounds)
        .unwrap()
        .findings
}

/// Attack B: cut the ledger back past a charge (at a record boundary, or mid-record so that it
/// looks like a crash) and spend the budget again. The file alone cannot tell; the round
/// published with the upload has no charge at its anchored position any more.
#[test]
fn review_b_a_ledger_cut_back_after_an_upload_is_behind_its_published_round() {
    for cut_mid in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let (mut l, _) = Ledger::open(&p, key(), policy(2.0, 1e-6)).unwrap();
        common::enter_epoch_of(&mut l, &honest());
        let before = std::fs::metadata(&p).unwrap().len();
        let permit = l.authorize(req(7, 4, 5, 5.0)).unwrap();
        let round_7 = published(7, &permit);
        assert_eq!(round_7.anchor, l.anchor());
        drop((permit, l));
        assert_eq!(audit_against(&p, &[round_7]), vec![]);
        let after = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(if cut_mid { after - 10 } else { before })
            .unwrap();
        drop(f);
        // The site spends the recovered budget on another round.
        let (mut l, _) = Ledger::open(&p, key(), policy(2.0, 1e-6)).unwrap();
        l.authorize(req(8, 4, 5, 5.0)).unwrap();
        drop(l);
        let f = audit_against(&p, &[round_7]);
        assert!(
            f.contains(&Finding::PublishedRoundNotCharged { round_id: 7 }),
            "cut_mid={cut_mid}: {f:?}"
        );
        assert!(
            f.iter()
                .any(|x| matches!(x, Finding::AnchorMismatch { .. })),
            "cut_mid={cut_mid}: {f:?}"
        );
    }
}

/// Attack C: rename the locked ledger away and copy it back, so two handles each spend the
/// whole remaining budget. Each fork alone audits clean; against the rounds the aggregator
/// published from both forks' uploads, each fork is missing the other's charges.
#[test]
fn review_c_a_forked_ledger_is_caught_by_the_rounds_the_other_fork_published() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l");
    let (mut l1, _) = Ledger::open(&p, key(), policy(2.0, 1e-6)).unwrap();
    common::enter_epoch_of(&mut l1, &honest());
    let mut rounds = vec![published(0, &l1.authorize(req(0, 4, 5, 5.0)).unwrap())];
    let moved = dir.path().join("moved");
    std::fs::rename(&p, &moved).unwrap();
    std::fs::copy(&moved, &p).unwrap();
    let (mut l2, _) = Ledger::open(&p, key(), policy(2.0, 1e-6)).unwrap();
    for i in 0..3 {
        rounds.push(published(
            100 + i,
            &l1.authorize(req(100 + i, 4, 5, 5.0)).unwrap(),
        ));
        rounds.push(published(
            200 + i,
            &l2.authorize(req(200 + i, 4, 5, 5.0)).unwrap(),
        ));
    }
    drop((l1, l2));
    let (own_1, own_2): (Vec<_>, Vec<_>) = rounds
        .iter()
        .partition(|r| r.round_id == 0 || r.round_id < 200);
    let own_2: Vec<_> = std::iter::once(rounds[0]).chain(own_2).collect();
    // Each fork is clean against its own uploads alone...
    assert_eq!(audit_against(&moved, &own_1), vec![]);
    assert_eq!(audit_against(&p, &own_2), vec![]);
    // ... and caught against everything the aggregator published.
    for (path, other) in [(&moved, 200), (&p, 100)] {
        let f = audit_against(path, &rounds);
        for i in 0..3 {
            assert!(
                f.contains(&Finding::PublishedRoundNotCharged {
                    round_id: other + i
                }),
                "{f:?}"
            );
        }
    }
}
