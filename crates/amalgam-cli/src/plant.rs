//! The plant trainer of `amalgam site run --data`: a built-in model trained on the plant's
//! CSV with the recipe the verified manifest pins (`protocol-spec/training.md` §11).
//!
//! Every value comes from the manifest or the built-in model's definition; the command line
//! only names the data file (and may name the model, which must then be the one pinned). The
//! built-in's parameter count and parameter-list digest must equal the manifest's, so every
//! site flattens the same model the same way.

use std::path::Path;

use amalgam_consortium::VerifiedManifest;
#[cfg(feature = "train")]
use amalgam_consortium::{ModelRef, WeightMode, model::Optimizer};
use amalgam_site::Trainer;

use crate::Failure;

/// What `--record-dp` asks of the plant trainer: the flags, the state directory (the default
/// ledger directory is under it) and the campaign's noisy steps (rounds × local steps).
pub struct RecordRequest<'a> {
    /// The flags.
    pub args: &'a crate::record_dp::RecordArgs,
    /// The state directory.
    pub state: &'a Path,
    /// Noisy steps the campaign runs at this site.
    pub steps: u64,
}

/// The trainer and, under `--record-dp`, the record ledger's policy and path and the q and z
/// every run is charged with (the trainer's own mechanism).
pub type PlantBuild = (
    Box<dyn Trainer>,
    Option<(crate::record_dp::Charged, f64, f64)>,
);

/// A trainer for `data` under `manifest`: the pinned built-in model (`flag` must agree when
/// given), the campaign's local recipe, its weight mode, batch order seeded by `seed` when the
/// campaign has no differential privacy; record-level DP-SGD under `record`.
#[cfg(feature = "train")]
pub fn plant_trainer(
    manifest: &VerifiedManifest,
    data: &Path,
    flag: Option<&str>,
    seed: u64,
    record: Option<RecordRequest<'_>>,
) -> Result<PlantBuild, Failure> {
    use amalgam_train::builtin::{builtin, parameter_list_digest};
    use amalgam_train::site_trainer::{PlantTrainer, SiteRecipe, Weighting};
    use amalgam_train::train::OptimizerKind;

    let campaign = manifest.campaign();
    let name = match (&campaign.model, flag) {
        (ModelRef::Builtin { name }, Some(f)) if name != f => {
            return Err(Failure::usage(format!(
                "--model-builtin {f} differs from the model the manifest pins (builtin:{name})"
            )));
        }
        (ModelRef::Builtin { name }, _) => name.clone(),
        (ModelRef::Torchscript { .. }, _) => {
            return Err(Failure::failed(
                "the campaign pins a TorchScript model; site run trains built-in models only",
            ));
        }
    };
    let b = builtin(&name).map_err(|e| Failure::failed(format!("the manifest's model: {e}")))?;
    let (model, _) = b.init(0).map_err(|e| Failure::failed(e.to_string()))?;
    let count = model.numel() as u64;
    if count != campaign.parameter_count.get() {
        return Err(Failure::failed(format!(
            "builtin:{name} has {count} parameters, the manifest pins {}",
            campaign.parameter_count.get()
        )));
    }
    let list = parameter_list_digest(&model).map_err(|e| Failure::failed(e.to_string()))?;
    if list != campaign.parameter_list_digest {
        return Err(Failure::failed(format!(
            "builtin:{name}'s parameter-list digest {} is not the manifest's {}",
            hex::encode(list),
            hex::encode(campaign.parameter_list_digest)
        )));
    }
    // Declared weights are the manifest's, applied by the agent (it scales the clipped update
    // by w_site / max w) and by the shared decoder (it divides by the contributors' Σ w / max
    // w): the trainer reports weight 1 and never reads the plant's row count. Under noised
    // weights it reports the row count, which the agent turns into w = min(n / n_cap, 1)
    // inside the clipped, noised vector (the count itself never leaves).
    let weighting = match campaign.weight_mode {
        WeightMode::Uniform | WeightMode::Declared => Weighting::Uniform,
        WeightMode::Noised => Weighting::Examples,
    };
    let t = &campaign.training;
    let recipe = SiteRecipe {
        optimizer: match t.optimizer {
            Optimizer::Sgd => OptimizerKind::Sgd,
            Optimizer::Adam => OptimizerKind::Adam,
        },
        lr: t.learning_rate,
        momentum: b.momentum,
        batch_size: t.batch_size as usize,
        prox_mu: t.mu,
        pos_weight: b.pos_weight,
    };
    let (rows, bytes) = amalgam_train::data::read_csv_with_bytes(data)
        .map_err(|e| Failure::failed(format!("{}: {e}", data.display())))?;
    let trainer = PlantTrainer::new(&b, &rows, recipe, weighting, seed)
        .map_err(|e| Failure::failed(format!("{}: {e}", data.display())))?;
    let Some(r) = record else {
        return Ok((Box::new(trainer), None));
    };
    let setup = crate::record_dp::setup(
        r.args,
        r.state,
        data,
        &bytes,
        trainer.rows(),
        trainer.numel(),
        r.steps,
    )?;
    let trainer = trainer
        .with_record_dp(setup.recipe)
        .map_err(|e| Failure::failed(format!("--record-dp: {e}")))?;
    let m = trainer
        .record_mechanism(campaign.training.local_epochs)
        .ok_or_else(|| Failure::failed("--record-dp: no record mechanism"))?;
    let charged = crate::record_dp::Charged {
        policy: setup.policy,
        path: setup.path,
        clip: m.clip,
        sigma: m.sigma,
        calibrated: setup.noise_multiplier,
        mechanism: m.record_mechanism(),
        data: setup.data,
    };
    Ok((Box::new(trainer), Some((charged, m.q, m.noise_multiplier))))
}

/// Without the `train` feature there is no plant trainer.
#[cfg(not(feature = "train"))]
pub fn plant_trainer(
    _manifest: &VerifiedManifest,
    _data: &Path,
    _flag: Option<&str>,
    _seed: u64,
    _record: Option<RecordRequest<'_>>,
) -> Result<PlantBuild, Failure> {
    Err(Failure::failed(
        "this build has no training crate (feature `train`): rebuild with it, or pass \
         --synthetic-trainer for a dry run",
    ))
}
