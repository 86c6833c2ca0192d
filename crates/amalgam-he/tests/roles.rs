//! HE round through the protocol role traits: sites and the aggregator, honest and
//! misbehaving, synchronous and asynchronous, with snapshots.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use amalgam_he::{Closing, DecryptionKey, HeAggregator, HeError, HeSite, SignedContribution};
use amalgam_proto::{AggregatorRole, AggregatorStep, DecryptorRole, SiteId, SiteRole};
use common::{D, ROUND, attest, drive, world};
use ed25519_dalek::SigningKey;

#[test]
fn sites_refuse_a_key_that_is_not_pinned_and_a_foreign_identity() {
    let mut w = world(3, 2, 3);
    let rogue = DecryptionKey::generate(&mut w.rng);
    let id = SigningKey::from_bytes(&w.identities[0].to_bytes());
    let r = HeSite::new(
        w.consortium.clone(),
        ROUND,
        SiteId(0),
        id,
        rogue.public_key().clone(),
    );
    assert!(matches!(r, Err(HeError::KeyMismatch { .. })));
    let id = SigningKey::from_bytes(&w.identities[1].to_bytes());
    let r = HeSite::new(w.consortium.clone(), ROUND, SiteId(0), id, w.public.clone());
    assert!(matches!(r, Err(HeError::BadIdentity { index: 0, .. })));
    let mut site = w.site(2);
    let x = w.input();
    site.start(x.clone(), &mut w.rng).unwrap();
    assert!(matches!(
        site.start(x, &mut w.rng),
        Err(HeError::DuplicateContribution { site: 2 })
    ));
}

#[test]
fn aggregator_refuses_bad_contributions_without_changing_state() {
    let mut w = world(4, 2, 4);
    let (cs, _) = w.contributions(&[0, 1, 2]);
    let mut agg = HeAggregator::new(w.consortium.clone(), ROUND, Closing::OnDeadline).unwrap();
    agg.receive(cs[0].clone()).unwrap();
    let before = agg.responded();

    let mut wrong_round = cs[1].clone();
    wrong_round.round = ROUND + 1;
    let mut unknown = cs[1].clone();
    unknown.site = SiteId(9);
    let mut other_key = cs[1].clone();
    other_key.key.0[0] ^= 1;
    let mut forged = cs[1].clone();
    forged.site = SiteId(3); // signed by site 1, claimed by site 3
    let mut tampered = cs[1].clone();
    tampered.ciphertext = cs[2].ciphertext.clone();

    let cases: Vec<(SignedContribution, &str)> = vec![
        (cs[0].clone(), "he.peer.duplicate"),
        (wrong_round, "he.peer.wrong_round"),
        (unknown, "he.peer.unknown_site"),
        (other_key, "he.key_mismatch"),
        (forged, "he.peer.bad_signature"),
        (tampered, "he.peer.bad_signature"),
    ];
    for (c, code) in cases {
        assert_eq!(agg.receive(c).unwrap_err().code(), code);
        assert_eq!(agg.responded(), before);
    }
    // Below the minimum cohort the round cannot close, and stays open.
    assert!(matches!(
        agg.close_phase(),
        Err(HeError::CohortTooSmall { have: 1, need: 2 })
    ));
    assert!(!agg.is_done());
    agg.receive(cs[1].clone()).unwrap();
    assert!(matches!(agg.close_phase(), Ok(AggregatorStep::Finished(_))));
    assert!(agg.is_done());
    assert!(matches!(
        agg.receive(cs[2].clone()),
        Err(HeError::RoundClosed { .. })
    ));
}

#[test]
fn asynchronous_round_closes_at_its_target() {
    let mut w = world(5, 2, 5);
    assert!(matches!(
        HeAggregator::new(w.consortium.clone(), ROUND, Closing::OnTargetOrDeadline(1)),
        Err(HeError::TargetOutOfRange { .. })
    ));
    let (cs, _) = w.contributions(&[4, 1, 3]);
    let mut agg =
        HeAggregator::new(w.consortium.clone(), ROUND, Closing::OnTargetOrDeadline(2)).unwrap();
    agg.receive(cs[0].clone()).unwrap();
    assert!(!agg.target_reached());
    agg.receive(cs[1].clone()).unwrap();
    assert!(agg.target_reached());
    assert!(matches!(
        agg.receive(cs[2].clone()),
        Err(HeError::RoundClosed { round: ROUND })
    ));
    let Ok(AggregatorStep::Finished(claim)) = agg.close_phase() else {
        panic!("round did not finish")
    };
    assert_eq!(claim.contributors, vec![SiteId(1), SiteId(4)]);
}

#[test]
fn the_generic_role_driver_runs_an_he_round_end_to_end() {
    let mut w = world(3, 2, 10);
    let mut sites: Vec<HeSite> = (0..3).map(|i| w.site(i)).collect();
    let inputs: Vec<Vec<u64>> = (0..3).map(|_| w.input()).collect();
    let expected: Vec<u64> = (0..D as usize)
        .map(|j| inputs.iter().map(|x| x[j]).sum())
        .collect();
    let mut agg = HeAggregator::new(w.consortium.clone(), ROUND, Closing::OnDeadline).unwrap();
    let (claim, uploads) = drive(&mut sites, inputs, &mut agg, &mut w.rng);
    assert!(sites.iter().all(SiteRole::is_done));
    assert!(agg.is_done());
    let req = w.request(&attest(&uploads), claim).unwrap();
    assert_eq!(w.decryptor.decrypt(req).unwrap().values, expected);
}

#[test]
fn aggregator_snapshot_restores_the_round() {
    use amalgam_proto::Snapshot;
    let mut w = world(4, 2, 12);
    let (cs, expected) = w.contributions(&[1, 2]);
    let mut agg =
        HeAggregator::new(w.consortium.clone(), ROUND, Closing::OnTargetOrDeadline(3)).unwrap();
    agg.receive(cs[0].clone()).unwrap();
    let bytes = agg.snapshot();
    let mut restored = HeAggregator::restore(&bytes, &w.consortium).unwrap();
    assert_eq!(restored.responded(), vec![SiteId(1)]);
    assert!(matches!(
        restored.receive(cs[0].clone()),
        Err(HeError::DuplicateContribution { site: 1 })
    ));
    restored.receive(cs[1].clone()).unwrap();
    let Ok(AggregatorStep::Finished(claim)) = restored.close_phase() else {
        panic!("did not close")
    };
    let req = w.request(&attest(&cs), claim).unwrap();
    assert_eq!(w.decryptor.decrypt(req).unwrap().values, expected);
    assert!(HeAggregator::restore(&bytes[..bytes.len() - 1], &w.consortium).is_err());
    let mut bad = bytes.clone();
    bad[4 + 8] = 7; // closing tag
    assert!(matches!(
        HeAggregator::restore(&bad, &w.consortium),
        Err(HeError::Decode(_))
    ));
}

#[test]
fn masking_abort_is_rerun_as_he_among_the_remaining_sites_and_charged_twice() {
    use amalgam_he::fallback::{Reason, after_masking_abort};
    use amalgam_proto::Snapshot;
    use amalgam_proto::{Error as MaskingError, Phase};
    let mut w = world(6, 3, 13);
    let too_few = MaskingError::Aborted(Box::new(MaskingError::NotEnoughSites {
        phase: Phase::Unmasking,
        needed: 4,
        got: 3,
    }));
    let remaining = [SiteId(1), SiteId(3), SiteId(4)];
    let plan = after_masking_abort(&too_few, 10, 11, &remaining, &w.consortium).unwrap();
    assert_eq!(plan.reason, Reason::MaskingAborted { masking_round: 10 });
    assert_eq!(plan.charged_attempts, 2);
    assert_eq!(plan.closing, Closing::OnTargetOrDeadline(3));

    // Not curable by HE, too few remaining, same round number: refused.
    let misuse = MaskingError::Misuse(amalgam_proto::Misuse::Other("x"));
    assert!(matches!(
        after_masking_abort(&misuse, 10, 11, &remaining, &w.consortium),
        Err(HeError::NoFallback { .. })
    ));
    assert!(matches!(
        after_masking_abort(&too_few, 10, 11, &remaining[..2], &w.consortium),
        Err(HeError::CohortTooSmall { have: 2, need: 3 })
    ));
    assert!(after_masking_abort(&too_few, 10, 10, &remaining, &w.consortium).is_err());

    // The HE round accepts only the remaining sites, also after a restart.
    let mut agg = HeAggregator::for_plan(w.consortium.clone(), &plan).unwrap();
    let contribute = |w: &mut common::World, i: usize| {
        let id = SigningKey::from_bytes(&w.identities[i].to_bytes());
        let mut s = HeSite::new(
            w.consortium.clone(),
            11,
            SiteId(i as u16),
            id,
            w.public.clone(),
        )
        .unwrap();
        let x: Vec<u64> = vec![i as u64; D as usize];
        s.start(x, &mut w.rng).unwrap()
    };
    let outsider = contribute(&mut w, 0);
    assert!(matches!(
        agg.receive(outsider.clone()),
        Err(HeError::NotInvited { site: 0 })
    ));
    agg.receive(contribute(&mut w, 1)).unwrap();
    let mut agg = HeAggregator::restore(&agg.snapshot(), &w.consortium).unwrap();
    assert!(matches!(
        agg.receive(outsider),
        Err(HeError::NotInvited { site: 0 })
    ));
    agg.receive(contribute(&mut w, 3)).unwrap();
    agg.receive(contribute(&mut w, 4)).unwrap();
    assert!(agg.target_reached());
    let Ok(AggregatorStep::Finished(claim)) = agg.close_phase() else {
        panic!("did not close")
    };
    assert_eq!(claim.contributors, remaining.to_vec());
}
