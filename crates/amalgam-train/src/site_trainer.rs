//! The trainer a site agent runs each round on its plant's rows: [`PlantTrainer`].
//!
//! One round of local work is exactly `local_steps` optimizer steps, each on a mini-batch of
//! `batch_size` rows taken in turn from a shuffle of the plant's rows (reshuffled after every
//! pass). The count comes from the manifest, never from the data: a count that grew with the
//! plant's row count would reveal it through the site's timing. The loss weight and momentum
//! come from the built-in model ([`crate::builtin`]), the optimizer, learning rate, batch size
//! and FedProx μ from the manifest's training configuration. The optimizer is fresh each round
//! (its state would be local information carried outside the aggregate).
//!
//! Without differential privacy the batch order is derived from the trainer's seed and the
//! round, so a run is reproducible; with it (a finite ε in the permits) the order is drawn from
//! the OS generator each round.
//!
//! With a record-level configuration ([`PlantTrainer::with_record_dp`]) every round is one
//! DP-SGD run ([`crate::dpsgd::dp_sgd_train`]: Poisson sampling from OS coins, per-example
//! clipping, the grid, discrete Gaussian noise) of exactly the run the record permit in the
//! permits covers, and the trainer reports it as its `record_charge`; the shuffle and
//! fixed-size batch path is not reachable then, and a round without a record permit, or with
//! one for other parameters, is refused before the first step.

use amalgam_site::model::model_digest;
use amalgam_site::{
    GlobalModel, Permits, RecordCharge, RoundInfo, TrainError, TrainOutput, Trainer,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tch::{Kind, Reduction, Tensor, nn::OptimizerConfig};

use crate::builtin::Builtin;
use crate::data::Row;
use crate::dpsgd::{MechanismParams, PoissonCoins, RecordDpConfig, dp_sgd_train};
use crate::model::{Model, ModelError};
use crate::train::{Batch, OptimizerKind};

/// Most local steps a round may ask for (a bound on a site's work per round).
pub const MAX_LOCAL_STEPS: u32 = 1_000_000;

/// The local recipe of a campaign, as the site trainer runs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiteRecipe {
    /// Optimizer (fresh each round).
    pub optimizer: OptimizerKind,
    /// Local learning rate.
    pub lr: f64,
    /// SGD momentum (ignored by Adam).
    pub momentum: f64,
    /// Rows per step.
    pub batch_size: usize,
    /// FedProx μ (0 = FedAvg).
    pub prox_mu: f64,
    /// `pos_weight` of the BCE loss (fixed by the built-in model).
    pub pos_weight: f64,
}

impl SiteRecipe {
    /// Range checks (the same ranges as a recipe file, `crate::train::LocalConfig`).
    pub fn validate(&self) -> Result<(), String> {
        crate::train::LocalConfig {
            optimizer: self.optimizer,
            lr: self.lr,
            momentum: self.momentum,
            epochs: 1,
            batch_size: self.batch_size,
            prox_mu: self.prox_mu,
            pos_weight: self.pos_weight,
        }
        .validate()
    }
}

/// The aggregation weight a site reports with its update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// Every site counts once (the only mode under differential privacy).
    Uniform,
    /// The plant's row count (revealed to the aggregator; refused under differential privacy).
    Rows,
    /// The plant's row count as the private example count n_i of the noised weight mode
    /// (DP-FedAvg): allowed under differential privacy because the site agent only encodes
    /// w_i = min(n_i / n_cap, 1) inside the clipped, noised vector, never the count itself.
    Examples,
}

impl Weighting {
    /// Whether the reported weight may leave under site-level differential privacy.
    fn private(self) -> bool {
        matches!(self, Weighting::Uniform | Weighting::Examples)
    }
}

/// Why a plant trainer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SiteTrainerError {
    /// The plant has no row to train on.
    #[error("the plant's data has no row")]
    NoRows,
    /// The recipe is out of range.
    #[error("recipe: {0}")]
    Recipe(String),
    /// The model could not be built.
    #[error("model: {0}")]
    Model(#[from] ModelError),
}

/// A plant trainer's record-level DP-SGD settings (the steps come from the campaign, the
/// learning rate, momentum and `pos_weight` from the recipe).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordDpRecipe {
    /// Poisson sampling rate q.
    pub q: f64,
    /// Per-example clip norm C_rec.
    pub clip: f64,
    /// Noise σ per coordinate (gradient-sum units).
    pub sigma: f64,
    /// Rounding grid γ.
    pub gamma: f64,
    /// The public expected batch the noisy sum is divided by (the plant's declared q·N: its
    /// record count is treated as public, record-dp.md §1), fixed before training.
    pub expected_batch: f64,
}

/// Local training of a built-in model on one plant's rows, for the site agent.
pub struct PlantTrainer {
    model: Model,
    data: Batch,
    recipe: SiteRecipe,
    weighting: Weighting,
    seed: u64,
    record: Option<RecordDpRecipe>,
}

impl std::fmt::Debug for PlantTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlantTrainer")
            .field("parameters", &self.model.numel())
            .field("rows", &self.data.len())
            .field("recipe", &self.recipe)
            .field("weighting", &self.weighting)
            .finish_non_exhaustive()
    }
}

impl PlantTrainer {
    /// A trainer of `builtin` on `rows` (features computed with the model's public bounds).
    /// `seed` orders the batches of runs without differential privacy. Sets libtorch to one
    /// thread.
    pub fn new(
        builtin: &Builtin,
        rows: &[Row],
        recipe: SiteRecipe,
        weighting: Weighting,
        seed: u64,
    ) -> Result<PlantTrainer, SiteTrainerError> {
        if rows.is_empty() {
            return Err(SiteTrainerError::NoRows);
        }
        recipe.validate().map_err(SiteTrainerError::Recipe)?;
        tch::set_num_threads(1);
        let model = Model::new(&builtin.spec)?;
        let features = builtin.spec.features;
        let refs: Vec<&Row> = rows.iter().collect();
        let labels: Vec<bool> = rows.iter().map(|r| r.failure).collect();
        let data = Batch::new(&features.matrix(&refs), &labels, features.dim());
        Ok(PlantTrainer {
            model,
            data,
            recipe,
            weighting,
            seed,
            record: None,
        })
    }

    /// Runs every round as record-level DP-SGD under `record` (module docs). Refused unless
    /// the recipe is SGD without a FedProx term (what DP-SGD runs), the weights are uniform
    /// and the configuration is in range.
    pub fn with_record_dp(mut self, record: RecordDpRecipe) -> Result<Self, SiteTrainerError> {
        if self.recipe.optimizer != OptimizerKind::Sgd || self.recipe.prox_mu != 0.0 {
            return Err(SiteTrainerError::Recipe(
                "record-level DP-SGD runs SGD (momentum allowed) without a FedProx term".into(),
            ));
        }
        if self.weighting != Weighting::Uniform {
            return Err(SiteTrainerError::Recipe(
                "record-level DP-SGD divides by its public expected batch: only uniform or declared weights".into(),
            ));
        }
        self.record_config(&record, 1)
            .validate()
            .map_err(|e| SiteTrainerError::Recipe(e.to_string()))?;
        self.record = Some(record);
        Ok(self)
    }

    fn record_config(&self, r: &RecordDpRecipe, steps: u32) -> RecordDpConfig {
        RecordDpConfig {
            q: r.q,
            clip: r.clip,
            sigma: r.sigma,
            gamma: r.gamma,
            steps,
            expected_batch: r.expected_batch,
            lr: self.recipe.lr,
            momentum: self.recipe.momentum,
            pos_weight: self.recipe.pos_weight,
        }
    }

    /// The mechanism of a record-level run of `steps` steps (`None` without record-level DP):
    /// the q and z = σ/Δ the record permit must be taken for.
    pub fn record_mechanism(&self, steps: u32) -> Option<MechanismParams> {
        self.record
            .map(|r| self.record_config(&r, steps).mechanism(self.model.numel()))
    }

    /// One record-level run under the permits' grant; the update and the charge it reports.
    fn train_record(
        &mut self,
        r: RecordDpRecipe,
        global: &[f32],
        round: &RoundInfo,
        permits: &Permits,
    ) -> Result<TrainOutput, TrainError> {
        let grant = permits.record.ok_or_else(|| {
            failed("record-level DP-SGD needs the record permit, taken before the first step")
        })?;
        let config = self.record_config(&r, round.local_steps);
        let m = config.mechanism(self.model.numel());
        if grant.request.steps != m.steps
            || grant.request.q != m.q
            || grant.request.noise_multiplier != m.noise_multiplier
            || grant.request.mechanism != m.record_mechanism()
        {
            return Err(failed(format!(
                "the record permit covers {} steps at q = {}, z = {}, {:?}; this trainer would \
                 run {} at q = {}, z = {}, {:?}",
                grant.request.steps,
                grant.request.q,
                grant.request.noise_multiplier,
                grant.request.mechanism,
                m.steps,
                m.q,
                m.noise_multiplier,
                m.record_mechanism()
            )));
        }
        self.model.set_from_flat(global).map_err(failed)?;
        let mut coins = PoissonCoins::from_os()
            .map_err(|_| failed("no OS randomness for the Poisson sampling"))?;
        let run = dp_sgd_train(&mut self.model, &self.data, &config, &mut coins).map_err(failed)?;
        Ok(TrainOutput {
            update: run.update,
            weight: 1.0,
            record_charge: Some(RecordCharge {
                steps: run.mechanism.steps,
                sample_rate: run.mechanism.q,
                noise_multiplier: run.mechanism.noise_multiplier,
                mechanism: run.mechanism.record_mechanism(),
            }),
        })
    }

    /// Parameters of the model (the update's length).
    pub fn numel(&self) -> usize {
        self.model.numel()
    }

    /// Rows the plant trains on.
    pub fn rows(&self) -> usize {
        self.data.len()
    }

    /// Mean weighted BCE loss of the flat model `weights` on the plant's rows.
    pub fn loss_of(&mut self, weights: &[f32]) -> Result<f64, ModelError> {
        self.model.set_from_flat(weights)?;
        crate::train::loss(&self.model, &self.data, self.recipe.pos_weight)
    }

    /// The batch-order seed of `round`: SHA-256 of the trainer seed and the round without DP,
    /// the OS generator with it.
    fn order_seed(&self, round: u64, dp: bool) -> Result<u64, TrainError> {
        if dp {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b)
                .map_err(|_| TrainError::Failed("no OS randomness for the batch order".into()))?;
            return Ok(u64::from_le_bytes(b));
        }
        let mut h = Sha256::new();
        h.update(b"amalgam/v1/train/site-batch-order");
        h.update(self.seed.to_le_bytes());
        h.update(round.to_le_bytes());
        let d: [u8; 32] = h.finalize().into();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        Ok(u64::from_le_bytes(b))
    }

    /// Runs exactly `steps` optimizer steps from the model's current weights, the FedProx
    /// term pulling toward `global`.
    fn run_steps(&mut self, global: &[f32], steps: u32, seed: u64) -> Result<(), ModelError> {
        let r = self.recipe;
        let mut opt = match r.optimizer {
            OptimizerKind::Sgd => tch::nn::Sgd {
                momentum: r.momentum,
                ..Default::default()
            }
            .build(&self.model.vs, r.lr)?,
            OptimizerKind::Adam => tch::nn::Adam::default().build(&self.model.vs, r.lr)?,
        };
        let anchor = if r.prox_mu > 0.0 {
            Some(self.model.unflatten(global)?)
        } else {
            None
        };
        let pw = Tensor::from_slice(&[r.pos_weight as f32]);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = self.data.len();
        let mut idx: Vec<i64> = (0..n as i64).collect();
        let mut at = n; // forces a shuffle before the first step
        let b = r.batch_size.min(n);
        self.model.set_train(true);
        for _ in 0..steps {
            if at + b > n {
                for i in (1..n).rev() {
                    idx.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
                }
                at = 0;
            }
            let sel = Tensor::from_slice(&idx[at..at + b]);
            at += b;
            let x = self.data.x.index_select(0, &sel);
            let y = self.data.y.index_select(0, &sel);
            let logits = self.model.forward(&x)?;
            let mut l = logits.binary_cross_entropy_with_logits::<Tensor>(
                &y,
                None,
                Some(pw.shallow_clone()),
                Reduction::Mean,
            );
            if let Some(a) = &anchor {
                let mut prox = Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
                for (p, g) in self.model.params().iter().zip(a) {
                    prox += (p - g).square().sum(Kind::Float);
                }
                l += prox * (r.prox_mu / 2.0);
            }
            opt.backward_step(&l);
        }
        self.model.set_train(false);
        Ok(())
    }
}

fn failed(e: impl std::fmt::Display) -> TrainError {
    TrainError::Failed(e.to_string())
}

impl Trainer for PlantTrainer {
    fn train(
        &mut self,
        global: GlobalModel<'_>,
        round: &RoundInfo,
        permits: &Permits,
    ) -> Result<TrainOutput, TrainError> {
        let want = self.model.numel();
        if global.values.len() != want {
            return Err(TrainError::Shape {
                expected: want,
                got: global.values.len(),
            });
        }
        if model_digest(global.values) != global.digest {
            return Err(failed("the global model does not match its digest"));
        }
        if permits.round != round.round || permits.local_steps != round.local_steps {
            return Err(failed(
                "the permits were taken for another round or step count",
            ));
        }
        let steps = round.local_steps;
        if steps == 0 || steps > MAX_LOCAL_STEPS {
            return Err(failed(format!(
                "local steps {steps} outside 1..={MAX_LOCAL_STEPS}"
            )));
        }
        let dp = permits.epsilon_total.is_finite();
        if dp && !self.weighting.private() {
            return Err(failed(
                "row-count weights reveal the plant's size: only uniform weights under DP",
            ));
        }
        let out = match (self.record, permits.record.is_some()) {
            (Some(r), _) => Some(self.train_record(r, global.values, round, permits)?),
            (None, true) => {
                return Err(failed(
                    "a record permit was taken but this trainer has no record-level DP-SGD",
                ));
            }
            (None, false) => None,
        };
        if let Some(out) = out {
            if let Some(i) = out.update.iter().position(|v| !v.is_finite()) {
                return Err(failed(format!(
                    "local training diverged (update value {i} is not finite)"
                )));
            }
            return Ok(out);
        }
        self.model.set_from_flat(global.values).map_err(failed)?;
        let seed = self.order_seed(round.round, dp)?;
        self.run_steps(global.values, steps, seed).map_err(failed)?;
        let local = self.model.flat();
        let update: Vec<f32> = local
            .iter()
            .zip(global.values)
            .map(|(l, g)| l - g)
            .collect();
        if let Some(i) = update.iter().position(|v| !v.is_finite()) {
            return Err(failed(format!(
                "local training diverged (update value {i} is not finite)"
            )));
        }
        let weight = match self.weighting {
            Weighting::Uniform => 1.0,
            Weighting::Rows | Weighting::Examples => self.data.len() as f64,
        };
        Ok(TrainOutput {
            update,
            weight,
            record_charge: None,
        })
    }
}
