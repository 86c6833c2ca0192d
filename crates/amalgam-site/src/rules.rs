//! Everything a round's parameters come from: the verified consortium manifest and the round
//! id, never the aggregator. [`ConsortiumRules`] is the agent's view of the manifest, built
//! by [`ConsortiumRules::from_manifest`] from the consortium crate's `VerifiedManifest` (or
//! directly in tests); its derived values (context digest, rotation seed) are the manifest's.

use amalgam_consortium::global_model::AggregationWeights;
use amalgam_consortium::labels;
use amalgam_consortium::{ManifestError, VerifiedManifest};
use amalgam_dp::encoding::EncodingParams;
use amalgam_dp::ledger::{BudgetPolicy, RoundParams as DpRoundParams};
use amalgam_dp::rotation::RotationSeed;
use amalgam_proto::{Manifest, RoundParams, SumMode};
use sha2::{Digest, Sha256};

/// What a manifest fixes for every round of a campaign.
#[derive(Debug, Clone)]
pub struct ConsortiumRules {
    /// Digest of the signed manifest.
    pub consortium_digest: [u8; 32],
    /// Its epoch.
    pub epoch: u64,
    /// The sites' identity keys, in manifest order (index = protocol site id).
    pub manifest: Manifest,
    /// The masking protocol's parameters (modular sums, d = the DP padded length, b = DP bits).
    pub params: RoundParams,
    /// The DP parameters an epoch entry records.
    pub dp: DpRoundParams,
    /// The site-level budget policy of the site's ledger.
    pub policy: BudgetPolicy,
    /// Per-phase wait, in milliseconds, within the manifest's deadline bounds.
    pub phase_timeout_ms: u64,
    /// Largest round id of the campaign (`VerifiedManifest::max_round`): a site refuses any
    /// round above it, whatever the aggregator lists.
    pub max_round: u64,
    /// Aborted rounds a site takes part in per campaign before it declines every further round.
    pub max_aborted_rounds: u32,
    /// The manifest's fallback policy: whether an aborted masking round may be re-run through
    /// the homomorphic fallback (a trust model with a decryptor committee the consortium
    /// accepted; never a silent switch).
    pub fallback_allowed: bool,
    /// Digest of the campaign.
    pub campaign_digest: [u8; 32],
    /// Local steps per round.
    pub local_steps: u32,
    /// Server learning rate of the FedAvg step.
    pub server_lr: f64,
    /// The campaign's aggregation weights: the factor this site scales its clipped update by
    /// and the FedAvg divisor of each round's contributors.
    pub weights: AggregationWeights,
    /// Model length (the update's length before the weight coordinate and padding).
    pub model_len: usize,
    /// The campaign's initial weights digest ([`crate::model::model_digest`] of the values),
    /// checked when a site starts from its initial model; `None` skips the check.
    pub initial_weights_digest: Option<[u8; 32]>,
    /// The verified manifest the rules come from: a fallback round's setup is derived from it
    /// and the committee's certificates (`None`: rules built by hand, no fallback setup).
    pub verified: Option<VerifiedManifest>,
}

/// Domain of [`ConsortiumRules::campaign_digest`] as derived from a manifest.
const CAMPAIGN_DOMAIN: &[u8] = b"amalgam/site/campaign/v1";

/// Why the rules are inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The masking and DP parameters disagree.
    #[error("masking and DP parameters disagree on {0}")]
    Mismatch(&'static str),
}

impl ConsortiumRules {
    /// The rules of a verified manifest. The site waits at most the manifest's longest phase
    /// (`deadline_bounds().max_secs`) for each download; the campaign digest is
    /// SHA-256(domain ‖ consortium digest ‖ campaign id) (the manifest commits to the rest).
    pub fn from_manifest(m: &VerifiedManifest) -> Result<Self, ManifestError> {
        let campaign = m.campaign();
        let mut h = Sha256::new();
        h.update(CAMPAIGN_DOMAIN);
        h.update(m.consortium_digest());
        h.update(campaign.id.as_bytes());
        let rules = Self {
            consortium_digest: m.consortium_digest(),
            epoch: m.epoch(),
            manifest: m.proto_manifest(),
            params: m.round_params(0)?,
            dp: m.dp_round_params(),
            policy: m.budget_policy()?,
            phase_timeout_ms: u64::from(m.deadline_bounds().max_secs.max(1)) * 1000,
            max_round: m.max_round(),
            max_aborted_rounds: m.max_aborted_rounds(),
            fallback_allowed: m.fallback().allowed,
            campaign_digest: h.finalize().into(),
            local_steps: campaign.training.local_epochs,
            server_lr: campaign.training.server_lr,
            weights: m.aggregation_weights()?,
            model_len: usize::try_from(campaign.parameter_count.get())
                .map_err(|_| ManifestError::Invalid("parameter count".to_string()))?,
            initial_weights_digest: Some(campaign.initial_weights_digest),
            verified: Some(m.clone()),
        };
        rules
            .check()
            .map_err(|e| ManifestError::Invalid(e.to_string()))?;
        Ok(rules)
    }

    /// The per-round public rotation seed: SHA-256(label ‖ consortium digest ‖ round), the
    /// manifest's `hadamard_seed`.
    pub fn rotation_seed(&self, round: u64) -> RotationSeed {
        let mut h = Sha256::new();
        h.update(labels::ROTATION_SEED);
        h.update(self.consortium_digest);
        h.update(round.to_be_bytes());
        RotationSeed(h.finalize().into())
    }

    /// The DDG encoding parameters of `round`.
    pub fn encoding(&self, round: u64) -> EncodingParams {
        EncodingParams {
            clip: self.dp.clip,
            gamma: self.dp.gamma,
            bits: self.dp.bits,
            dim: self.dp.dim,
            beta: self.dp.beta,
            rotation_seed: self.rotation_seed(round),
        }
    }

    /// The model-bound context digest: SHA-256(domain ‖ consortium digest ‖ model digest) (the
    /// consortium crate's `VerifiedManifest::context_digest`).
    pub fn context_digest(&self, model_digest: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(labels::CONTEXT);
        h.update(self.consortium_digest);
        h.update(model_digest);
        h.finalize().into()
    }

    /// Checks that masking and DP agree: modular sums of b bits over the padded dimension.
    pub fn check(&self) -> Result<(), RulesError> {
        if self.params.sum_mode() != SumMode::Modular {
            return Err(RulesError::Mismatch("sum mode (DDG needs modular sums)"));
        }
        if u32::from(self.params.input_bits().get()) != self.dp.bits.get()
            || u32::from(self.params.sum_bits().get()) != self.dp.bits.get()
        {
            return Err(RulesError::Mismatch("bit width"));
        }
        if self.params.d() as u64 != self.dp.dim.padded() {
            return Err(RulesError::Mismatch(
                "vector length (d = padded DP dimension)",
            ));
        }
        // The DP dimension is the model's, plus the weight coordinate under noised weights.
        if (self.model_len + self.weights.extra_coordinates()) as u64 != self.dp.dim.get() {
            return Err(RulesError::Mismatch("model length"));
        }
        if self.params.n() != self.manifest.len() {
            return Err(RulesError::Mismatch("site count"));
        }
        Ok(())
    }
}
