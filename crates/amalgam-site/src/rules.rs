//! Everything a round's parameters come from: the verified consortium manifest and the round
//! id, never the aggregator. [`ConsortiumRules`] is the agent's view of the manifest (built
//! from the consortium crate's `VerifiedManifest`, or directly in tests).

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
    /// Aborted rounds a site takes part in per campaign before it declines every further round.
    pub max_aborted_rounds: u32,
    /// Digest of the campaign.
    pub campaign_digest: [u8; 32],
    /// Local steps per round.
    pub local_steps: u32,
    /// Server learning rate of the FedAvg step.
    pub server_lr: f64,
    /// Model length (the update's length before padding).
    pub model_len: usize,
}

/// Domain of the per-round rotation seed.
const ROTATION_DOMAIN: &[u8] = b"amalgam/v1/site/rotation-seed\0";

/// Why the rules are inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The masking and DP parameters disagree.
    #[error("masking and DP parameters disagree on {0}")]
    Mismatch(&'static str),
}

impl ConsortiumRules {
    /// The per-round public rotation seed: SHA-256(domain ‖ consortium digest ‖ round).
    pub fn rotation_seed(&self, round: u64) -> RotationSeed {
        let mut h = Sha256::new();
        h.update(ROTATION_DOMAIN);
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
        h.update(b"amalgam/v1/consortium/context\0");
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
        if self.model_len as u64 != self.dp.dim.get() {
            return Err(RulesError::Mismatch("model length"));
        }
        if self.params.n() != self.manifest.len() {
            return Err(RulesError::Mismatch("site count"));
        }
        Ok(())
    }
}
