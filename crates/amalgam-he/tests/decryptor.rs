//! The decryptor: exact sums once per round, the minimum cohort, attestation checks, the audit
//! chain, and what a malicious aggregator can and cannot obtain.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use amalgam_he::audit::{Outcome, result_digest, verify_chain};
use amalgam_he::{Closing, DecryptionKey, Decryptor, HeAggregator, HeError, HeSite};
use amalgam_proto::{DecryptorRole, SiteId};
use common::{D, ROUND, attest, drive, sum_from_words, world};

#[test]
fn honest_round_decrypts_the_exact_sum_once_and_logs_it() {
    let mut w = world(6, 3, 1);
    let (cs, expected) = w.contributions(&[0, 2, 3, 5]);
    let claim = w.aggregate(&cs);
    assert_eq!(
        claim.contributors,
        vec![SiteId(0), SiteId(2), SiteId(3), SiteId(5)]
    );
    let digest = claim.sum_digest();
    let req = w.request(&attest(&cs), claim.clone()).unwrap();
    let out = w.decryptor.decrypt(req).unwrap();
    assert_eq!(out.values, expected);
    assert_eq!(out.contributors, claim.contributors);

    let log = w.decryptor.audit_log();
    assert_eq!(log.entries().len(), 1);
    let e = &log.entries()[0];
    assert_eq!(
        (e.round, &e.contributors, e.aggregate_digest),
        (ROUND, &claim.contributors, digest)
    );
    assert_eq!(
        e.outcome,
        Outcome::Released {
            result_digest: result_digest(&expected)
        }
    );
    assert!(verify_chain(log.entries(), &log.head()));

    // At most once per round, whoever asks.
    assert!(matches!(
        w.decryptor.open(ROUND),
        Err(HeError::AlreadyDecrypted { round: ROUND })
    ));
}

#[test]
fn audit_chain_detects_removed_and_altered_entries() {
    let mut w = world(4, 2, 2);
    for round in [ROUND, ROUND + 1, ROUND + 2] {
        let mut sites: Vec<HeSite> = (0..2).map(|i| w.site_for(round, i)).collect();
        let inputs: Vec<Vec<u64>> = (0..2).map(|_| w.input()).collect();
        let mut agg = HeAggregator::new(w.consortium.clone(), round, Closing::OnDeadline).unwrap();
        let (claim, uploads) = drive(&mut sites, inputs, &mut agg, &mut w.rng);
        let req = w.request(&attest(&uploads), claim).unwrap();
        w.decryptor.decrypt(req).unwrap();
    }
    let log = w.decryptor.audit_log();
    let head = log.head();
    assert_eq!(log.entries().len(), 3);
    assert!(verify_chain(log.entries(), &head));
    assert!(
        !verify_chain(&log.entries()[1..], &head),
        "dropping the first entry went unnoticed"
    );
    assert!(
        !verify_chain(&log.entries()[..2], &head),
        "dropping the last entry went unnoticed"
    );
    let mut altered = log.entries().to_vec();
    altered[1].contributors.pop();
    assert!(
        !verify_chain(&altered, &head),
        "altering an entry went unnoticed"
    );
    let mut swapped = log.entries().to_vec();
    swapped.swap(0, 1);
    assert!(!verify_chain(&swapped, &head), "reordering went unnoticed");
}

#[test]
fn decryptor_refuses_claims_below_the_minimum_cohort() {
    let mut w = world(5, 3, 6);
    let (cs, _) = w.contributions(&[0, 1, 2]);
    let claim = w.aggregate(&cs);
    // Only two attestations reach the decryptor.
    let req = w.request(&attest(&cs[..2]), claim.clone()).unwrap();
    assert!(matches!(
        w.decryptor.decrypt(req),
        Err(HeError::CohortTooSmall { have: 2, need: 3 })
    ));
    // Nothing was decrypted, so the round is still available.
    assert!(w.decryptor.audit_log().entries().is_empty());
    let req = w.request(&attest(&cs), claim).unwrap();
    assert!(w.decryptor.decrypt(req).is_ok());
}

#[test]
fn decryptor_refuses_attestations_that_do_not_verify() {
    let mut w = world(4, 2, 7);
    let (cs, _) = w.contributions(&[0, 1]);
    let mut intake = w.decryptor.open(ROUND).unwrap();
    let mut bad = cs[0].mask_attestation();
    bad.masks[5] ^= 1;
    assert!(matches!(
        w.decryptor.admit(&mut intake, &bad),
        Err(HeError::BadSignature { site: 0 })
    ));
    let mut bad = cs[0].mask_attestation();
    bad.bodies_digest[0] ^= 1;
    assert!(matches!(
        w.decryptor.admit(&mut intake, &bad),
        Err(HeError::BadSignature { site: 0 })
    ));
    assert!(intake.attested().is_empty());
    w.decryptor
        .admit(&mut intake, &cs[0].mask_attestation())
        .unwrap();
    assert!(matches!(
        w.decryptor.admit(&mut intake, &cs[0].mask_attestation()),
        Err(HeError::DuplicateContribution { site: 0 })
    ));
    assert_eq!(intake.attested(), vec![SiteId(0)]);
}

#[test]
fn malicious_aggregator_cannot_isolate_one_site() {
    let mut w = world(5, 3, 8);
    let (cs, _) = w.contributions(&[0, 1, 2]);
    let honest = w.aggregate(&cs);
    let attestations = attest(&cs);

    // (a) Names a contributor that was not attested.
    let mut claim = honest.clone();
    claim.contributors[2] = SiteId(4);
    let req = w.request(&attestations, claim).unwrap();
    assert!(matches!(
        w.decryptor.decrypt(req),
        Err(HeError::ContributorMismatch { .. })
    ));

    // (b) Substitutes site 0's ciphertext alone for the sum.
    let mut claim = honest.clone();
    let mut lone = amalgam_he::CiphertextSum::zero(w.consortium.params());
    for _ in 0..3 {
        // three copies keep the site count consistent, but the masks cannot match
        lone.add(&cs[0].ciphertext, w.consortium.params()).unwrap();
    }
    claim.sum = lone;
    let req = w.request(&attestations, claim).unwrap();
    assert!(matches!(
        w.decryptor.decrypt(req),
        Err(HeError::MaskSumMismatch { .. })
    ));
    assert!(
        w.decryptor.audit_log().entries().is_empty(),
        "refused claims are not decryptions"
    );

    // (c) Keeps the honest masks but puts site 0's bodies in place of the summed bodies: the
    // decryption is noise, refused by the residual check; the round is consumed and logged.
    let mut words = honest.sum.words().to_vec();
    let body_start = words.len() - D as usize;
    words[body_start..].copy_from_slice(cs[0].ciphertext.bodies());
    let mut claim = honest.clone();
    claim.sum = sum_from_words(&w, &words, 3);
    let req = w.request(&attestations, claim).unwrap();
    assert!(matches!(
        w.decryptor.decrypt(req),
        Err(HeError::NoiseBudgetExceeded { .. })
    ));
    let log = w.decryptor.audit_log();
    assert_eq!(log.entries().len(), 1);
    assert_eq!(
        log.entries()[0].outcome,
        Outcome::Refused {
            code: "he.decrypt.noise_exceeded".into()
        }
    );
    assert!(matches!(
        w.decryptor.open(ROUND),
        Err(HeError::AlreadyDecrypted { .. })
    ));
}

#[test]
fn decryptor_refuses_a_key_other_than_the_pinned_one() {
    let mut w = world(3, 2, 9);
    let other = DecryptionKey::generate(&mut w.rng);
    assert!(matches!(
        Decryptor::new(other, w.consortium.clone()),
        Err(HeError::KeyMismatch { .. })
    ));
}

#[test]
fn a_resumed_decryptor_still_decrypts_each_round_once() {
    let mut w = world(4, 2, 14);
    let (cs, _) = w.contributions(&[0, 1]);
    let claim = w.aggregate(&cs);
    let req = w.request(&attest(&cs), claim.clone()).unwrap();
    w.decryptor.decrypt(req).unwrap();
    let state = w.decryptor.state_bytes();
    let head = w.decryptor.audit_log().head();
    // After a restart the key comes back from its key file.
    let fresh = || DecryptionKey::from_secret_bytes(&w.secret_bytes).unwrap();
    let resumed = Decryptor::resume(fresh(), w.consortium.clone(), &state, Some(&head)).unwrap();
    assert!(matches!(
        resumed.open(ROUND),
        Err(HeError::AlreadyDecrypted { round: ROUND })
    ));
    assert_eq!(
        resumed.audit_log().entries(),
        w.decryptor.audit_log().entries()
    );

    // Rolled back to before the decryption: refused against the published head.
    let empty = Decryptor::new(fresh(), w.consortium.clone())
        .unwrap()
        .state_bytes();
    assert!(matches!(
        Decryptor::resume(fresh(), w.consortium.clone(), &empty, Some(&head)),
        Err(HeError::AuditRollback)
    ));
    // Truncated, or an entry altered so the chain breaks: refused.
    assert!(matches!(
        Decryptor::resume(
            fresh(),
            w.consortium.clone(),
            &state[..state.len() - 1],
            None
        ),
        Err(HeError::Decode(_))
    ));
    let mut altered = state.clone();
    let last = altered.len() - 40; // inside the last entry's digests
    altered[last] ^= 1;
    assert!(Decryptor::resume(fresh(), w.consortium.clone(), &altered, Some(&head)).is_err());
}
