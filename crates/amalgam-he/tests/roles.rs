//! HE round through the role traits: sites, aggregator and decryptor, honest and malicious.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_he::audit::{Outcome, result_digest, verify_chain};
use amalgam_he::params::he_params;
use amalgam_he::{
    AggregateClaim, Closing, DecryptionKey, DecryptionRequest, Decryptor, HeAggregator,
    HeConsortium, HeError, HeSite, MaskAttestation, PublicKey, SignedContribution, SiteDirectory,
};
use amalgam_proto::{AggregatorRole, AggregatorStep, DecryptorRole, MinCohort, SiteId, SiteRole};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

const ROUND: u64 = 7;
const D: u32 = 3000;

struct World {
    rng: ChaCha20Rng,
    identities: Vec<SigningKey>,
    consortium: HeConsortium,
    public: PublicKey,
    decryptor: Decryptor,
}

fn world(sites: usize, min_cohort: u16, seed: u64) -> World {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let identities: Vec<SigningKey> = (0..sites).map(|_| SigningKey::generate(&mut rng)).collect();
    let directory =
        SiteDirectory::new(identities.iter().map(|k| k.verifying_key()).collect()).unwrap();
    let key = DecryptionKey::generate(&mut rng);
    let public = key.public_key().clone();
    let params = he_params(16, 64, D).unwrap();
    let consortium = HeConsortium::new(
        params,
        public.fingerprint(),
        MinCohort::new(min_cohort).unwrap(),
        directory,
    )
    .unwrap();
    let decryptor = Decryptor::new(key, consortium.clone()).unwrap();
    World {
        rng,
        identities,
        consortium,
        public,
        decryptor,
    }
}

impl World {
    fn site(&self, i: usize) -> HeSite {
        self.site_for(ROUND, i)
    }

    fn site_for(&self, round: u64, i: usize) -> HeSite {
        let id = SigningKey::from_bytes(&self.identities[i].to_bytes());
        HeSite::new(
            self.consortium.clone(),
            round,
            SiteId(i as u16),
            id,
            self.public.clone(),
        )
        .unwrap()
    }

    fn input(&mut self) -> Vec<u64> {
        (0..D).map(|_| self.rng.next_u64() >> 48).collect()
    }

    /// Sites `which` contribute; returns their contributions and the plaintext sum.
    fn contributions(&mut self, which: &[usize]) -> (Vec<SignedContribution>, Vec<u64>) {
        let mut sum = vec![0u64; D as usize];
        let mut out = Vec::new();
        for &i in which {
            let x = self.input();
            sum.iter_mut().zip(&x).for_each(|(s, v)| *s += v);
            let mut site = self.site(i);
            out.push(site.start(x, &mut self.rng).unwrap());
            assert!(site.is_done());
        }
        (out, sum)
    }

    fn aggregate(&self, contributions: &[SignedContribution]) -> AggregateClaim {
        let mut agg =
            HeAggregator::new(self.consortium.clone(), ROUND, Closing::OnDeadline).unwrap();
        for c in contributions {
            agg.receive(c.clone()).unwrap();
        }
        match agg.close_phase().unwrap() {
            AggregatorStep::Finished(claim) => claim,
            AggregatorStep::Send(_) => panic!("HE rounds send nothing"),
        }
    }

    fn request(
        &self,
        attestations: &[MaskAttestation],
        claim: AggregateClaim,
    ) -> Result<DecryptionRequest, HeError> {
        let mut intake = self.decryptor.open(claim.round)?;
        for a in attestations {
            self.decryptor.admit(&mut intake, a)?;
        }
        Ok(DecryptionRequest { intake, claim })
    }
}

fn attest(cs: &[SignedContribution]) -> Vec<MaskAttestation> {
    cs.iter()
        .map(SignedContribution::mask_attestation)
        .collect()
}

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
            code: "he.decrypt.noise_exceeded"
        }
    );
    assert!(matches!(
        w.decryptor.open(ROUND),
        Err(HeError::AlreadyDecrypted { .. })
    ));
}

/// Builds a sum with arbitrary words through the public codec, as a malicious aggregator would.
fn sum_from_words(w: &World, words: &[u64], sites: u32) -> amalgam_he::CiphertextSum {
    use amalgam_proto::codec::{Decode, Writer};
    let mut wr = Writer::new();
    wr.u32(D);
    wr.u32(sites);
    words.iter().for_each(|x| wr.u64(*x));
    amalgam_he::CiphertextSum::from_bytes(wr.as_slice(), w.consortium.params()).unwrap()
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

/// One driver for any scheme implementing the protocol roles: every site uploads once, the
/// aggregator closes. Returns the output and the uploads (a service stores them).
fn drive<S, A>(
    sites: &mut [S],
    inputs: Vec<S::Input>,
    agg: &mut A,
    rng: &mut ChaCha20Rng,
) -> (A::Output, Vec<S::Upload>)
where
    S: SiteRole,
    S::Upload: Clone,
    A: AggregatorRole<Upload = S::Upload>,
    S::Error: std::fmt::Debug,
    A::Error: std::fmt::Debug,
{
    let mut uploads = Vec::new();
    for (site, input) in sites.iter_mut().zip(inputs) {
        let upload = site.start(input, rng).unwrap();
        uploads.push(upload.clone());
        agg.receive(upload).unwrap();
    }
    match agg.close_phase().unwrap() {
        AggregatorStep::Finished(out) => (out, uploads),
        AggregatorStep::Send(_) => panic!("one-shot scheme asked for another phase"),
    }
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
