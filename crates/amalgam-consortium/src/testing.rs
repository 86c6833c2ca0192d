//! Complete, valid signed manifests from seeded keys, for end-to-end tests of the server and
//! the site agent. Seeded keys are for tests only: this module exists only with the
//! `test-support` feature.

use amalgam_dp::params::{
    BitWidth, ClipNorm, Delta, Dimension, Epsilon, Gamma, RoundingBias, Sigma,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::key::IdentityKey;
use crate::model::*;
use crate::signed::SignedManifest;
use crate::verified::VerifiedManifest;

/// A test consortium: the signed manifest, its verified form, and every member's key.
#[derive(Debug)]
pub struct TestConsortium {
    /// Signed by every member.
    pub signed: SignedManifest,
    /// Its verified form.
    pub verified: VerifiedManifest,
    /// Site keys, in `SiteId` order.
    pub sites: Vec<IdentityKey>,
    /// The aggregator's key.
    pub aggregator: IdentityKey,
    /// Decryptor keys, in committee order.
    pub decryptors: Vec<IdentityKey>,
}

/// A key derived from `seed` and `index` (tests only).
pub fn seeded_key(seed: u64, index: u64) -> IdentityKey {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_be_bytes());
    s[8..16].copy_from_slice(&index.to_be_bytes());
    IdentityKey::generate(&mut ChaCha20Rng::from_seed(s))
}

/// The draft body of a consortium of `sites` sites (t = the default threshold for c = 1 and
/// complete graph, m = t, f = n − t), one aggregator and `decryptors` decryptors (committee
/// t_c = ⌊k/2⌋ + 1, Q = k, c_d = 1 when k ≥ 3, else c_d = 0 and t_c = Q = k), parameter count `dim`.
/// Members are not yet in canonical order.
pub fn body(
    sites: &[IdentityKey],
    aggregator: &IdentityKey,
    decryptors: &[IdentityKey],
    dim: u64,
) -> ManifestBody {
    let n = sites.len() as u16;
    let t = amalgam_proto::params::default_threshold(n, 1).min(n);
    let mut members: Vec<Member> = sites
        .iter()
        .enumerate()
        .map(|(i, k)| Member {
            name: format!("site-{i}"),
            organisation: format!("Plant {i} GmbH"),
            roles: vec![Role::Site],
            key: k.verifying_key(),
        })
        .collect();
    members.push(Member {
        name: "aggregator".into(),
        organisation: "Aggregation Services Ltd".into(),
        roles: vec![Role::Aggregator],
        key: aggregator.verifying_key(),
    });
    for (i, k) in decryptors.iter().enumerate() {
        members.push(Member {
            name: format!("decryptor-{i}"),
            organisation: format!("Audit Firm {i}"),
            roles: vec![Role::Decryptor],
            key: k.verifying_key(),
        });
    }
    let k = decryptors.len() as u16;
    let committee = (k > 0).then(|| {
        if k >= 3 {
            CommitteePolicy {
                threshold: k / 2 + 1,
                quorum: k,
                corrupt: 1,
                key_period_rounds: DEFAULT_KEY_PERIOD_ROUNDS,
            }
        } else {
            CommitteePolicy {
                threshold: k,
                quorum: k,
                corrupt: 0,
                key_period_rounds: DEFAULT_KEY_PERIOD_ROUNDS,
            }
        }
    });
    #[allow(clippy::unwrap_used)]
    ManifestBody {
        consortium: "test-consortium".into(),
        epoch: 1,
        prev_digest: None,
        max_aborted_rounds: 10,
        protocol: ProtocolPolicy {
            threshold: t,
            colluders: 1,
            dropouts: n - t,
            min_cohort: t.max(3),
            graph: Graph::Complete,
            trust: Trust::Malicious,
        },
        committee,
        dp: DpPolicy {
            unit: PrivacyUnit::SiteUpdatePerRound,
            budget: DpBudget::Capped {
                epsilon_cap: Epsilon::new(10.0).unwrap(),
                delta: Delta::new(1e-6).unwrap(),
            },
            clip: ClipNorm::new(1.0).unwrap(),
            sigma: Sigma::new(5.7).unwrap(),
            target_epsilon: None,
            bits: BitWidth::new(20).unwrap(),
            gamma: Gamma::new(64.0).unwrap(),
            beta: RoundingBias::NONE,
        },
        fallback: FallbackPolicy { allowed: k > 0 },
        deadlines: DeadlineBounds {
            min_secs: 5,
            max_secs: 600,
        },
        campaign: Campaign {
            id: "test-campaign".into(),
            model: ModelRef::Builtin {
                name: "mlp-ai4i".into(),
            },
            parameter_list_digest: [1; 32],
            parameter_count: Dimension::new(dim).unwrap(),
            initial_weights_digest: [2; 32],
            training: TrainingConfig {
                local_epochs: 1,
                batch_size: 32,
                optimizer: Optimizer::Adam,
                learning_rate: 1e-3,
                mu: 0.0,
                server_lr: 1.0,
                server_momentum: 0.0,
                rounds: 100,
            },
            weight_mode: WeightMode::Uniform,
            declared_weights: Default::default(),
            noised_weights: None,
        },
        members,
        rotations: Vec::new(),
    }
}

/// Signs `body` with every key in `keys` (each must be a member) and verifies it.
#[allow(clippy::expect_used)]
pub fn sign_all(body: ManifestBody, keys: &[&IdentityKey]) -> (SignedManifest, VerifiedManifest) {
    let mut signed = SignedManifest::from_body(body).expect("test manifest is valid");
    for k in keys {
        signed.sign_as(k).expect("test key is a member");
    }
    let verified = signed.verify().expect("every member signed");
    (signed, verified)
}

/// A complete consortium of `n_sites` sites, an aggregator and `n_decryptors` decryptors,
/// keys derived from `seed`, parameter count `dim`, epoch 1, signed by everyone.
pub fn consortium(seed: u64, n_sites: usize, n_decryptors: usize, dim: u64) -> TestConsortium {
    let aggregator = seeded_key(seed, 0);
    let mut sites: Vec<IdentityKey> = (0..n_sites as u64)
        .map(|i| seeded_key(seed, 1 + i))
        .collect();
    let decryptors: Vec<IdentityKey> = (0..n_decryptors as u64)
        .map(|i| seeded_key(seed, 1000 + i))
        .collect();
    let body = body(&sites, &aggregator, &decryptors, dim);
    let mut all: Vec<&IdentityKey> = sites.iter().collect();
    all.push(&aggregator);
    all.extend(decryptors.iter());
    let (signed, verified) = sign_all(body, &all);
    // Site keys in SiteId order (canonical order is by key bytes).
    sites.sort_by(|a, b| {
        a.verifying_key()
            .as_bytes()
            .cmp(b.verifying_key().as_bytes())
    });
    let mut decryptors = decryptors;
    decryptors.sort_by(|a, b| {
        a.verifying_key()
            .as_bytes()
            .cmp(b.verifying_key().as_bytes())
    });
    TestConsortium {
        signed,
        verified,
        sites,
        aggregator,
        decryptors,
    }
}
