//! The training interface the agent calls once per round, before it joins the round.
//!
//! Training happens before AdvertiseKeys, so its duration never counts against a phase
//! deadline. The privacy charge (the ledger's permit) is taken before the first step and the
//! number of local steps comes from the campaign, never from the data: a trainer that ran a
//! data-dependent number of steps would leak through its timing and its charge.

use sha2::{Digest, Sha256};

/// The global model of the round: its digest (over the canonical little-endian f32 bytes,
/// [`crate::model::model_digest`]) and its values in the campaign's parameter order.
#[derive(Debug, Clone, Copy)]
pub struct GlobalModel<'a> {
    /// Digest of `values`.
    pub digest: [u8; 32],
    /// The parameters, flattened in the campaign's order.
    pub values: &'a [f32],
}

/// What the trainer knows of the round (all public, all from the manifest and the round id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundInfo {
    /// The round id.
    pub round: u64,
    /// Digest of the campaign the round belongs to.
    pub campaign_digest: [u8; 32],
    /// Local steps of this round, fixed in advance by the campaign.
    pub local_steps: u32,
}

/// A record-level privacy charge a trainer reports (DP-SGD inside the plant): the number of
/// noisy steps it ran, which must equal the steps the permit covered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordCharge {
    /// Noisy steps run.
    pub steps: u32,
    /// Sampling rate of each step.
    pub sample_rate: f64,
    /// Noise multiplier of each step.
    pub noise_multiplier: f64,
    /// The mechanism the steps ran (C, γ, σ, d, sampler): the agent refuses an update whose
    /// mechanism is not the one the permit charged.
    pub mechanism: amalgam_dp::ledger::record::RecordMechanism,
}

/// The permits the agent holds for this round when training starts: proof that the round's
/// charge is on disk. Read-only for the trainer.
#[derive(Debug, Clone, PartialEq)]
pub struct Permits {
    /// The round the site-level permit was charged for.
    pub round: u64,
    /// Noisy steps the site-level permit covers (1: the one noised update).
    pub site_steps: u32,
    /// Cumulative ε of the site-level ledger including this round (+∞ without privacy).
    pub epsilon_total: f64,
    /// Local steps the trainer must run (from the campaign).
    pub local_steps: u32,
    /// The record-level run the record ledger charged before training (consumed whole:
    /// exactly these steps, q and z), `None` without record-level DP.
    pub record: Option<amalgam_dp::ledger::record::RecordGrant>,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model does not have the shape the trainer expects.
    #[error("model has {got} parameters, the trainer expects {expected}")]
    Shape {
        /// Expected length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// Any other failure, described.
    #[error("training failed: {0}")]
    Failed(String),
}

/// One round's result: the update (same length as the model), its aggregation weight, and a
/// record-level charge if the trainer ran DP-SGD.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutput {
    /// The model delta (new local model minus the global model).
    pub update: Vec<f32>,
    /// The site's private example count n_i, read under the `noised` weight mode only (the
    /// agent encodes w_i = min(n_i / n_cap, 1) inside the clipped, noised vector); the
    /// `uniform` and `declared` modes ignore it (declared weights come from the manifest).
    pub weight: f64,
    /// Record-level charge, if any.
    pub record_charge: Option<RecordCharge>,
}

/// Local training: implemented by the training crate; the agent calls it once per round.
pub trait Trainer: Send {
    /// Trains `round.local_steps` steps from `global` under `permits` and returns the update.
    fn train(
        &mut self,
        global: GlobalModel<'_>,
        round: &RoundInfo,
        permits: &Permits,
    ) -> Result<TrainOutput, TrainError>;
}

/// A deterministic trainer for tests: its update is a fixed vector.
#[derive(Debug, Clone)]
pub struct FixedUpdateTrainer {
    /// The update returned every round.
    pub update: Vec<f32>,
}

impl Trainer for FixedUpdateTrainer {
    fn train(
        &mut self,
        global: GlobalModel<'_>,
        _round: &RoundInfo,
        _permits: &Permits,
    ) -> Result<TrainOutput, TrainError> {
        if global.values.len() != self.update.len() {
            return Err(TrainError::Shape {
                expected: self.update.len(),
                got: global.values.len(),
            });
        }
        Ok(TrainOutput {
            update: self.update.clone(),
            weight: 1.0,
            record_charge: None,
        })
    }
}

/// A deterministic synthetic trainer: its update depends on (seed, round, global digest) and
/// has L2 norm `norm`, so tests see different updates per round and per site.
#[derive(Debug, Clone)]
pub struct SyntheticTrainer {
    /// Per-site seed.
    pub seed: [u8; 32],
    /// L2 norm of every update.
    pub norm: f32,
}

impl Trainer for SyntheticTrainer {
    fn train(
        &mut self,
        global: GlobalModel<'_>,
        round: &RoundInfo,
        _permits: &Permits,
    ) -> Result<TrainOutput, TrainError> {
        let d = global.values.len();
        let mut update = Vec::with_capacity(d);
        let mut block = [0u8; 32];
        for i in 0..d {
            if i % 8 == 0 {
                let mut h = Sha256::new();
                h.update(b"amalgam/v1/site/synthetic-trainer");
                h.update(self.seed);
                h.update(round.round.to_be_bytes());
                h.update(global.digest);
                h.update((i as u64).to_be_bytes());
                block = h.finalize().into();
            }
            let j = (i % 8) * 4;
            let word = u32::from_be_bytes([block[j], block[j + 1], block[j + 2], block[j + 3]]);
            update.push(word as f32 / u32::MAX as f32 - 0.5);
        }
        let n = update.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n > 0.0 {
            update.iter_mut().for_each(|v| *v *= self.norm / n);
        }
        Ok(TrainOutput {
            update,
            weight: 1.0,
            record_charge: None,
        })
    }
}
