//! Shared fixture of the HE role tests: a consortium, its sites, an aggregator and a decryptor,
//! all deterministic from a seed.

// Each test binary uses a different subset of the fixture.
#![allow(dead_code)]

use amalgam_he::params::he_params;
use amalgam_he::{
    AggregateClaim, Closing, DecryptionKey, DecryptionRequest, Decryptor, HeAggregator,
    HeConsortium, HeError, HeSite, MaskAttestation, PublicKey, SignedContribution, SiteDirectory,
};
use amalgam_proto::{AggregatorRole, AggregatorStep, MinCohort, SiteId, SiteRole};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

pub const ROUND: u64 = 7;
pub const D: u32 = 3000;

pub struct World {
    pub rng: ChaCha20Rng,
    pub identities: Vec<SigningKey>,
    pub consortium: HeConsortium,
    pub public: PublicKey,
    pub decryptor: Decryptor,
    /// The decryptor's key file contents, to restart a decryptor in tests.
    pub secret_bytes: Vec<u8>,
}

pub fn world(sites: usize, min_cohort: u16, seed: u64) -> World {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let identities: Vec<SigningKey> = (0..sites).map(|_| SigningKey::generate(&mut rng)).collect();
    let directory =
        SiteDirectory::new(identities.iter().map(|k| k.verifying_key()).collect()).unwrap();
    let key = DecryptionKey::generate(&mut rng);
    let public = key.public_key().clone();
    let secret_bytes = key.to_secret_bytes().to_vec();
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
        secret_bytes,
    }
}

impl World {
    pub fn site(&self, i: usize) -> HeSite {
        self.site_for(ROUND, i)
    }

    pub fn site_for(&self, round: u64, i: usize) -> HeSite {
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

    pub fn input(&mut self) -> Vec<u64> {
        (0..D).map(|_| self.rng.next_u64() >> 48).collect()
    }

    /// Sites `which` contribute; returns their contributions and the plaintext sum.
    pub fn contributions(&mut self, which: &[usize]) -> (Vec<SignedContribution>, Vec<u64>) {
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

    pub fn aggregate(&self, contributions: &[SignedContribution]) -> AggregateClaim {
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

    pub fn request(
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

pub fn attest(cs: &[SignedContribution]) -> Vec<MaskAttestation> {
    cs.iter()
        .map(SignedContribution::mask_attestation)
        .collect()
}

/// Builds a sum with arbitrary words through the public codec, as a malicious aggregator would.
pub fn sum_from_words(w: &World, words: &[u64], sites: u32) -> amalgam_he::CiphertextSum {
    use amalgam_proto::codec::{Decode, Writer};
    let mut wr = Writer::new();
    wr.u32(D);
    wr.u32(sites);
    words.iter().for_each(|x| wr.u64(*x));
    amalgam_he::CiphertextSum::from_bytes(wr.as_slice(), w.consortium.params()).unwrap()
}

/// One driver for any scheme implementing the protocol roles: every site uploads once, the
/// aggregator closes. Returns the output and the uploads (a service stores them).
pub fn drive<S, A>(
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
