//! Record-level DP-SGD in the in-process campaign (protocol-spec/record-dp.md): every plant
//! trains with DP-SGD and charges each local run to its own record ledger, exactly as
//! `amalgam site run --record-dp` does. σ is calibrated once for the whole campaign
//! (rounds × local steps) so that a plant reaches at most the target ε; the campaign is
//! refused before any training when the whole campaign would pass a ledger's cap, so it never
//! runs part-way and stops on a declined round.

use std::path::Path;

use amalgam_dp::ledger::record::{
    DatasetName, RecordLedger, RecordLedgerError, RecordPolicy, data_version, dataset_id,
    record_ledger_path, validate_policy,
};
use amalgam_dp::params::{Delta, Epsilon};
use amalgam_dp::record::{calibrate_noise_multiplier, record_epsilon};
use amalgam_site::record::RecordDp;

use super::CampaignError;
use crate::site_trainer::{PlantTrainer, RecordDpRecipe};

/// γ/C_rec: the rounding grid of the per-example sums, as `amalgam site run --record-dp`.
pub const GRID_OVER_CLIP: f64 = 1e-4;

/// The record-level setting of a campaign.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordCampaign {
    /// Target (and ledger cap) ε per plant over the whole campaign; finite.
    pub epsilon: f64,
    /// δ of the record-level accounting; at most 1/(10·N) for every plant.
    pub delta: f64,
    /// Poisson sampling rate q of every step.
    pub q: f64,
    /// Per-example clip norm C_rec.
    pub clip: f64,
    /// A fixed z = σ/Δ instead of the calibrated one (`None`: calibrated so that rounds ×
    /// local steps reach at most `epsilon`). A fixed z lets a caller ask for a campaign the
    /// cap cannot cover, which must be refused.
    pub noise_multiplier: Option<f64>,
}

/// What the record-level setting spent.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RecordSpent {
    /// Largest ε any plant's record ledger spent.
    pub epsilon_spent: f64,
    /// The z every run was charged at (σ/Δ, a hair above the calibrated one).
    pub noise_multiplier: f64,
    /// The z the calibration returned (or the fixed one).
    pub calibrated: f64,
    /// σ per coordinate, gradient-sum units.
    pub sigma: f64,
}

/// σ of the campaign, calibrated once: z does not depend on N, only Δ on the model's size.
#[derive(Debug, Clone, Copy)]
pub(super) struct Calibrated {
    pub z: f64,
    pub sigma: f64,
    pub gamma: f64,
}

fn rec(what: impl std::fmt::Display) -> CampaignError {
    CampaignError::Config(format!("record-level DP: {what}"))
}

/// z and σ for `steps` noisy steps of a `dim`-parameter model.
pub(super) fn calibrate(
    r: &RecordCampaign,
    steps: u64,
    dim: usize,
) -> Result<Calibrated, CampaignError> {
    if !(r.epsilon.is_finite() && r.epsilon > 0.0) {
        return Err(rec("the target epsilon must be finite and > 0"));
    }
    let epsilon = Epsilon::new(r.epsilon).map_err(rec)?;
    let delta = Delta::new(r.delta).map_err(rec)?;
    let z = match r.noise_multiplier {
        Some(z) if z.is_finite() && z > 0.0 => z,
        Some(z) => return Err(rec(format!("noise multiplier {z} must be finite and > 0"))),
        None => {
            calibrate_noise_multiplier(epsilon, delta, steps, r.q)
                .map_err(rec)?
                .noise_multiplier
        }
    };
    let gamma = r.clip * GRID_OVER_CLIP;
    let sensitivity = crate::dpsgd::noise::sensitivity(r.clip, gamma, dim);
    // A hair above: the z the trainer recomputes (σ/Δ) is never below the calibrated one.
    let sigma = z * sensitivity * (1.0 + 1e-12);
    Ok(Calibrated { z, sigma, gamma })
}

/// Puts plant `plant`'s trainer under DP-SGD and opens its record ledger in `dir` (with
/// `open`, which holds the plant's signing key), after
/// checking that the whole campaign (`rounds` runs of `local_steps` steps) fits the cap.
#[allow(clippy::too_many_arguments)]
pub(super) fn enable(
    r: &RecordCampaign,
    cal: &Calibrated,
    trainer: PlantTrainer,
    open: impl FnOnce(&Path, RecordPolicy) -> Result<RecordLedger, RecordLedgerError>,
    dir: &Path,
    plant: usize,
    seed: u64,
    rounds: u32,
    local_steps: u32,
) -> Result<(PlantTrainer, RecordDp), CampaignError> {
    let records = trainer.rows();
    let trainer = trainer
        .with_record_dp(RecordDpRecipe {
            q: r.q,
            clip: r.clip,
            sigma: cal.sigma,
            gamma: cal.gamma,
            // The harness declares each plant's E|B| = q·N before training, as an operator
            // does with `site run --record-expected-batch`; the bound on one record's
            // influence, and so the charge, does not depend on the value.
            expected_batch: (r.q * records as f64).max(1.0),
        })
        .map_err(rec)?;
    let m = trainer
        .record_mechanism(local_steps)
        .ok_or_else(|| rec("the trainer has no record mechanism"))?;
    let delta = Delta::new(r.delta).map_err(rec)?;
    let steps = u64::from(rounds) * u64::from(local_steps);
    // The whole campaign's ε, composed as the ledger composes its runs (RDP adds up).
    let total = match record_epsilon(m.q, m.noise_multiplier, steps, delta) {
        Ok(e) => e.epsilon,
        Err(amalgam_dp::error::RecordAccountError::Unbounded { .. }) => f64::INFINITY,
        Err(e) => return Err(rec(e)),
    };
    if total > r.epsilon {
        return Err(rec(format!(
            "plant {plant}: {rounds} rounds of {local_steps} steps at q = {}, z = {} spend \
             epsilon {total} over the cap {}; refused before training (run fewer rounds or \
             calibrate z)",
            m.q, m.noise_multiplier, r.epsilon
        )));
    }
    // One dataset per plant and campaign: the ledger lives only as long as the campaign, and
    // the plant's rows are one fixed version (no file: the tag stands for its bytes).
    let name = format!("in-process-campaign.seed-{seed}.plant-{plant}");
    let data = data_version(name.as_bytes(), records as u64);
    let policy = RecordPolicy {
        dataset: dataset_id(&DatasetName::new(&name).map_err(rec)?),
        max_records: records as u64,
        epsilon_cap: Epsilon::new(r.epsilon).map_err(rec)?,
        delta,
    };
    validate_policy(&policy).map_err(|e| rec(format!("plant {plant}: {e}")))?;
    let path = record_ledger_path(dir, &policy.dataset);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| rec(format!("{}: {e}", parent.display())))?;
    }
    let ledger = open(&path, policy).map_err(rec)?;
    Ok((
        trainer,
        RecordDp {
            ledger,
            q: m.q,
            noise_multiplier: m.noise_multiplier,
            mechanism: m.record_mechanism(),
            data,
        },
    ))
}
