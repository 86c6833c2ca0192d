//! Shared fixture of the HE round tests: sites, a committee, an aggregator, all deterministic
//! from a seed (seeded constructors are for tests only).

// Each test binary uses a different subset of the fixture.
#![allow(dead_code)]
// Fixture helpers unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_he::decryptor::member_secrets_from_bytes;
use amalgam_he::{
    Closing, CohortStatement, Committee, Decryptor, HeAggregator, HeError, KaheParams, MemberKeys,
    MemberRoundRecord, MemberSecrets, PieceSumRelease, RoundSetup, SignedUpload, SiteDirectory,
    SiteRound, SiteRoundLog, StatementSignature,
};
use amalgam_proto::SiteId;
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use std::cell::RefCell;
use x25519_dalek::StaticSecret;

pub const ROUND: u64 = 7;
/// The model the sites train on: (round it was published in, digest).
pub const MODEL: (u64, [u8; 32]) = (ROUND - 1, [0x3d; 32]);

pub struct World {
    pub rng: ChaCha20Rng,
    pub identities: Vec<SigningKey>,
    pub member_bytes: Vec<([u8; 32], [u8; 32])>,
    pub setup: RoundSetup,
    /// Each member's persisted round record.
    pub records: RefCell<Vec<MemberRoundRecord>>,
}

pub struct Shape {
    pub sites: usize,
    pub min_cohort: usize,
    pub c: usize,
    pub t: usize,
    pub q: usize,
    pub corrupt: usize,
    pub d: u32,
}

pub const SMALL: Shape = Shape {
    sites: 4,
    min_cohort: 2,
    c: 5,
    t: 3,
    q: 4,
    corrupt: 2,
    d: 300,
};

pub fn world(shape: &Shape, seed: u64) -> World {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let identities: Vec<SigningKey> = (0..shape.sites)
        .map(|_| SigningKey::generate(&mut rng))
        .collect();
    let member_bytes: Vec<([u8; 32], [u8; 32])> = (0..shape.c)
        .map(|_| {
            let mut a = [0u8; 32];
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut a);
            rng.fill_bytes(&mut b);
            (a, b)
        })
        .collect();
    let members: Vec<MemberKeys> = member_bytes
        .iter()
        .map(|(a, b)| MemberKeys::certify(&SigningKey::from_bytes(a), 1, &StaticSecret::from(*b)))
        .collect();
    let committee = Committee::new(members, shape.t, shape.q, shape.corrupt).unwrap();
    let sites = SiteDirectory::new(identities.iter().map(|k| k.verifying_key()).collect()).unwrap();
    let params = KaheParams::new(16, shape.sites.max(2) as u32, shape.d).unwrap();
    let setup = RoundSetup::new(
        params,
        sites,
        committee,
        shape.min_cohort,
        ROUND,
        vec![MODEL],
    )
    .unwrap();
    let records = RefCell::new((0..shape.c).map(|_| MemberRoundRecord::new()).collect());
    World {
        rng,
        identities,
        member_bytes,
        setup,
        records,
    }
}

impl World {
    pub fn secrets(&self, member: usize) -> MemberSecrets {
        let (a, b) = self.member_bytes[member];
        member_secrets_from_bytes(a, b)
    }

    /// The honest members of the round, claiming it in the world's persisted records: a
    /// second call for the same round fails, as a second instance of a real member does.
    pub fn decryptors(&self) -> Vec<Decryptor> {
        self.decryptors_with(&mut self.records.borrow_mut())
            .unwrap()
    }

    /// Instances with records of their own, not the world's: what a corrupt or rolled-back
    /// member runs (it ignores its record), or an independent trial of a search.
    pub fn fresh_decryptors(&self) -> Vec<Decryptor> {
        let mut records: Vec<MemberRoundRecord> = (0..self.member_bytes.len())
            .map(|_| MemberRoundRecord::new())
            .collect();
        self.decryptors_with(&mut records).unwrap()
    }

    /// Members that claim the round in the given persisted records.
    pub fn decryptors_with(
        &self,
        records: &mut [MemberRoundRecord],
    ) -> Result<Vec<Decryptor>, HeError> {
        records
            .iter_mut()
            .enumerate()
            .map(|(m, r)| Decryptor::new(self.setup.clone(), m, self.secrets(m), r))
            .collect()
    }

    pub fn input(&self, site: usize) -> Vec<u64> {
        (0..self.setup.params().vector_len() as u64)
            .map(|i| (i * 2654435761 + site as u64 * 40503) % 65536)
            .collect()
    }

    pub fn site_round(&mut self, site: usize) -> SiteRound {
        let input = self.input(site);
        SiteRound::draw(
            &self.setup,
            &mut SiteRoundLog::new(),
            MODEL,
            input,
            &mut self.rng,
        )
        .unwrap()
    }

    pub fn upload(&mut self, site: usize) -> SignedUpload {
        let r = self.site_round(site);
        r.upload(&self.setup, SiteId(site as u16), &self.identities[site])
            .unwrap()
    }

    pub fn expected_sum(&self, sites: &[usize]) -> Vec<u64> {
        let mut want = vec![0u64; self.setup.params().vector_len()];
        for &s in sites {
            for (w, x) in want.iter_mut().zip(self.input(s)) {
                *w += x;
            }
        }
        want
    }
}

/// Every member admits every view the aggregator forwards.
pub fn forward(agg: &HeAggregator, decs: &mut [Decryptor]) {
    for d in decs.iter_mut() {
        for v in agg.views_for(d.member()) {
            d.admit(&v).unwrap();
        }
    }
}

/// Signatures of the listed members on `statement`.
pub fn sign_all(
    decs: &mut [Decryptor],
    who: &[usize],
    statement: &CohortStatement,
) -> Vec<StatementSignature> {
    who.iter()
        .map(|&m| decs[m].sign(statement).unwrap().persisted())
        .collect()
}

/// An honest round over `sites`, with members `online` answering; returns the published sum.
pub fn honest_round(w: &mut World, sites: &[usize], online: &[usize]) -> Result<Vec<u64>, HeError> {
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    for &s in sites {
        let u = w.upload(s);
        agg.receive(&u)?;
    }
    let statement = agg.close()?;
    let mut decs = w.decryptors();
    forward(&agg, &mut decs);
    let sigs = sign_all(&mut decs, online, &statement);
    let releases: Vec<PieceSumRelease> = online
        .iter()
        .map(|&m| decs[m].release(&statement, &sigs))
        .collect::<Result<_, _>>()?;
    for r in &releases {
        agg.accept_release(r)?;
    }
    agg.finish()
}
