//! The manifest's content: members and every policy value all sites must agree on.
//!
//! The same types are the TOML draft (serde, keys and digests as hex) and the input of the
//! canonical encoding ([`crate::canonical`]), which is what members sign.

use std::collections::BTreeMap;

use amalgam_dp::params::{
    BitWidth, ClipNorm, Delta, Dimension, Epsilon, Gamma, RoundingBias, Sigma,
};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::rotation::RotationStatement;

/// What a member does in the consortium. A member may hold several roles, except that the
/// aggregator is never also a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Contributes a model update; counts toward t and the cohort.
    Site,
    /// Routes messages and adds masked updates; pinned by its identity key.
    Aggregator,
    /// Member of the homomorphic fallback's decryptor committee.
    Decryptor,
}

impl Role {
    pub(crate) fn code(self) -> u8 {
        match self {
            Role::Site => 0,
            Role::Aggregator => 1,
            Role::Decryptor => 2,
        }
    }
    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Role::Site),
            1 => Some(Role::Aggregator),
            2 => Some(Role::Decryptor),
            _ => None,
        }
    }
    /// Parses `site`, `aggregator` or `decryptor`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "site" => Some(Role::Site),
            "aggregator" => Some(Role::Aggregator),
            "decryptor" => Some(Role::Decryptor),
            _ => None,
        }
    }
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Site => "site",
            Role::Aggregator => "aggregator",
            Role::Decryptor => "decryptor",
        }
    }
}

/// One identity of the consortium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Unique name within the consortium (e.g. "plant-lyon").
    pub name: String,
    /// The legal organisation running it (flags compare organisations).
    pub organisation: String,
    /// Its roles, ascending, no duplicate.
    pub roles: Vec<Role>,
    /// Its Ed25519 identity.
    #[serde(with = "hex_key")]
    pub key: VerifyingKey,
}

impl Member {
    /// Whether it holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Which pairs of sites share masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Graph {
    /// Every pair.
    Complete,
    /// SecAgg+ Harary graph of even degree k (curious aggregator only).
    Harary {
        /// Degree.
        k: u16,
    },
}

/// The aggregator trust model (fixed here, never a driver flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// Honest but curious.
    Curious,
    /// May deviate arbitrarily with c colluding sites.
    Malicious,
}

/// The masking protocol's thresholds (validated by amalgam-proto's `RoundParams::new`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolPolicy {
    /// Shamir threshold t.
    pub threshold: u16,
    /// Colluding sites tolerated c (unverified identities count against it).
    pub colluders: u16,
    /// Dropouts tolerated f.
    pub dropouts: u16,
    /// Minimum cohort m.
    pub min_cohort: u16,
    /// Neighbour graph.
    pub graph: Graph,
    /// Aggregator trust model.
    pub trust: Trust,
}

/// The decryptor committee's numbers; its members are the members with role `decryptor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteePolicy {
    /// Piece threshold t_c.
    pub threshold: u16,
    /// Signature quorum Q.
    pub quorum: u16,
    /// Corrupt decryptors tolerated c_d.
    pub corrupt: u16,
    /// Rounds per key period P (1..=2^20): member j's box key of period p = round / P is
    /// valid for rounds [p·P, (p+1)·P) only, so a box secret is destroyed after at most P
    /// rounds and a later compromise opens no older transcript.
    #[serde(default = "default_key_period_rounds")]
    pub key_period_rounds: u32,
}

/// Default rounds per key period.
pub const DEFAULT_KEY_PERIOD_ROUNDS: u32 = 16;
/// Longest key period, rounds.
pub const MAX_KEY_PERIOD_ROUNDS: u32 = 1 << 20;

fn default_key_period_rounds() -> u32 {
    DEFAULT_KEY_PERIOD_ROUNDS
}

/// The DP budget of each site's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DpBudget {
    /// Site-level cap ε at δ.
    Capped {
        /// Largest cumulative ε.
        epsilon_cap: Epsilon,
        /// δ.
        delta: Delta,
    },
    /// No differential privacy (reports say so).
    None,
}

/// The privacy unit (only one is offered: the site-level unit the brief states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrivacyUnit {
    /// One plant's whole update per round, zero-out adjacency.
    SiteUpdatePerRound,
}

/// The DP policy. γ and σ are resolved numbers (chosen at `init`, signed), so every site uses
/// bit-identical values; σ_local = σ/√n_min is derived with IEEE-exact operations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpPolicy {
    /// Privacy unit.
    pub unit: PrivacyUnit,
    /// Cap and δ, or none.
    pub budget: DpBudget,
    /// L2 clip norm C.
    pub clip: ClipNorm,
    /// Central noise standard deviation σ, in update units.
    pub sigma: Sigma,
    /// The ε σ was calibrated for over the campaign's rounds, if it was (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_epsilon: Option<Epsilon>,
    /// Bit width b of the wrapped encoding (also the protocol's input and sum bits).
    pub bits: BitWidth,
    /// Scale factor γ.
    pub gamma: Gamma,
    /// Conditional rounding bias β.
    pub beta: RoundingBias,
}

/// Whether the homomorphic fallback may run when masking cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackPolicy {
    /// Allowed (needs a committee).
    pub allowed: bool,
}

/// Bounds on every phase deadline the aggregator may announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineBounds {
    /// Shortest phase, seconds.
    pub min_secs: u32,
    /// Longest phase, seconds.
    pub max_secs: u32,
}

impl DeadlineBounds {
    /// Whether a phase of `secs` seconds is within the bounds.
    pub fn allows(&self, secs: u64) -> bool {
        (u64::from(self.min_secs)..=u64::from(self.max_secs)).contains(&secs)
    }
}

/// The model a campaign trains: a built-in name or a TorchScript file's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ModelRef {
    /// A model compiled into the site agent.
    Builtin {
        /// Its name.
        name: String,
    },
    /// A TorchScript file, by SHA-256.
    Torchscript {
        /// SHA-256 of the file.
        #[serde(with = "hex32")]
        digest: [u8; 32],
    },
}

/// Local optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD.
    Sgd,
    /// Adam.
    Adam,
}

/// How the aggregate weights each site's update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightMode {
    /// Every site counts once.
    Uniform,
    /// A public weight per site, fixed in the manifest (`Campaign::declared_weights`): site i
    /// scales its clipped update by w_i / max w, and the step divides by the contributors'
    /// Σ w_i / max w. The weights (usually dataset sizes) are public to every member.
    Declared,
    /// DP-FedAvg (McMahan et al. 2018): site i weighs its update by w_i = min(n_i / n_cap, 1)
    /// from its private example count n_i, and sends (w_i·Δ_i, κ·w_i) clipped jointly to C,
    /// so the weight sum is masked and noised with the update (`Campaign::noised_weights`
    /// fixes n_cap, κ and the divisor's public floor).
    Noised,
}

/// The public numbers of the noised weight mode ([`WeightMode::Noised`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoisedWeightPolicy {
    /// Example count at which a site's weight reaches 1 (w_i = min(n_i / n_cap, 1)).
    pub n_cap: u32,
    /// Scale of the weight coordinate (κ·w_i, in update units, 0 < κ ≤ C): larger κ makes
    /// the noisy weight sum more accurate and leaves less of the clip norm to the update.
    pub kappa: f64,
    /// The divisor's public floor: the step divides by max(noisy Σ w_i, floor), so noise can
    /// never make it tiny or negative.
    pub floor: f64,
}

/// Training configuration: numbers only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Local epochs per round.
    pub local_epochs: u32,
    /// Batch size.
    pub batch_size: u32,
    /// Optimiser.
    pub optimizer: Optimizer,
    /// Local learning rate.
    pub learning_rate: f64,
    /// FedProx proximal term μ (0 = FedAvg).
    pub mu: f64,
    /// Server learning rate.
    pub server_lr: f64,
    /// Server momentum.
    pub server_momentum: f64,
    /// Rounds in the campaign.
    pub rounds: u32,
}

/// The training campaign: digests and numbers; the model code lives elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// Campaign identifier.
    pub id: String,
    /// The model.
    pub model: ModelRef,
    /// SHA-256 of the parameter list (name, shape, dtype, in order).
    #[serde(with = "hex32")]
    pub parameter_list_digest: [u8; 32],
    /// Number of trainable values d (the update length).
    pub parameter_count: Dimension,
    /// SHA-256 of the initial weights.
    #[serde(with = "hex32")]
    pub initial_weights_digest: [u8; 32],
    /// Training configuration.
    pub training: TrainingConfig,
    /// Aggregation weights.
    pub weight_mode: WeightMode,
    /// The public weight of each site under [`WeightMode::Declared`], by member name (every
    /// site exactly once, each 1..=[`crate::validate::MAX_DECLARED_WEIGHT`]); empty under the
    /// other modes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub declared_weights: BTreeMap<String, u32>,
    /// n_cap, κ and the floor under [`WeightMode::Noised`]; absent under the other modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noised_weights: Option<NoisedWeightPolicy>,
}

/// The whole manifest of one epoch, before signatures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestBody {
    /// Consortium identifier (never changes across epochs).
    pub consortium: String,
    /// Epoch number, from 1, strictly increasing.
    pub epoch: u64,
    /// Digest of the previous epoch (absent only in epoch 1).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex32")]
    pub prev_digest: Option<[u8; 32]>,
    /// Masking thresholds.
    pub protocol: ProtocolPolicy,
    /// Decryptor committee numbers (needed when there are decryptors or the fallback is allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committee: Option<CommitteePolicy>,
    /// DP policy.
    pub dp: DpPolicy,
    /// Fallback policy.
    pub fallback: FallbackPolicy,
    /// Phase deadline bounds.
    pub deadlines: DeadlineBounds,
    /// Rounds a campaign may abort before it stops.
    pub max_aborted_rounds: u32,
    /// The campaign.
    pub campaign: Campaign,
    /// Members (canonical order: ascending public key bytes).
    #[serde(default, rename = "member")]
    pub members: Vec<Member>,
    /// Key rotations taking effect in this epoch.
    #[serde(default, rename = "rotation", skip_serializing_if = "Vec::is_empty")]
    pub rotations: Vec<RotationStatement>,
}

impl ManifestBody {
    /// Puts members and their roles in canonical order (ascending key bytes; roles ascending,
    /// deduplicated). The canonical encoding refuses any other order.
    pub fn normalise(&mut self) {
        for m in &mut self.members {
            m.roles.sort();
            m.roles.dedup();
        }
        self.members
            .sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        self.rotations
            .sort_by(|a, b| a.new_key.as_bytes().cmp(b.new_key.as_bytes()));
    }
}

pub(crate) mod hex_key {
    use ed25519_dalek::VerifyingKey;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(k: &VerifyingKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(k.as_bytes()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VerifyingKey, D::Error> {
        let text = String::deserialize(d)?;
        let mut b = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut b)
            .map_err(|_| D::Error::custom("key must be 64 hex digits"))?;
        VerifyingKey::from_bytes(&b).map_err(|_| D::Error::custom("not an Ed25519 public key"))
    }
}

pub(crate) mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut b = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut b)
            .map_err(|_| D::Error::custom("digest must be 64 hex digits"))?;
        Ok(b)
    }
}

pub(crate) mod hex64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let text = String::deserialize(d)?;
        let mut b = [0u8; 64];
        hex::decode_to_slice(text.trim(), &mut b)
            .map_err(|_| D::Error::custom("signature must be 128 hex digits"))?;
        Ok(b)
    }
}

pub(crate) mod opt_hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::hex32::serialize(v, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::hex32")] [u8; 32]);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}
