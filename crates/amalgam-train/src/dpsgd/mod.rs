//! Record-level DP-SGD at one plant: the privacy unit is one record (add/remove adjacency).
//!
//! Each step ([`dp_sgd_train`]):
//! 1. every record is in the step's sample independently with probability q, the coins from an
//!    OS-keyed ChaCha20 stream ([`sampling`]); there is no shuffle and no fixed-size batch, and
//!    a step whose sample is empty still adds its noise;
//! 2. each sampled record's gradient of its own weighted BCE-with-logits loss (the built-in's
//!    fixed `pos_weight` inside the loss) is computed ([`per_example`]: batched for the
//!    built-ins, one example at a time for any other module);
//! 3. it is clipped to L2 norm C, rounded to the grid γ (norm ≤ Δ = C + γ·√d/2), and the
//!    integers are summed; each coordinate of the sum gets N_Z(0, (σ/γ)²) from amalgam-dp's
//!    table sampler, its distance charged to δ (the exact sampler where σ/γ is outside the
//!    table's range; [`noise`]);
//! 4. the noisy sum times γ, divided by the public expected batch (fixed in advance, never the
//!    plant's q·N), is the gradient
//!    that SGD (optionally with momentum) applies: post-processing.
//!
//! The accountant (amalgam-dp) composes `steps` Poisson-subsampled Gaussian mechanisms of
//! sampling rate q and noise multiplier σ/Δ: [`MechanismParams`] carries those numbers. This
//! module charges nothing itself. A model that may hold a batch-norm layer is refused: its
//! rows interact, and its running statistics are buffers outside the accounting.

pub mod noise;
pub mod per_example;
pub mod sampling;

use serde::Serialize;
use tch::Tensor;

use crate::model::{Model, ModelError};
use crate::site_trainer::MAX_LOCAL_STEPS;
use crate::train::Batch;
pub use sampling::{EntropyError, PoissonCoins};

/// Most records one plant may train on under record-level DP (keeps the integer sums exact).
pub const MAX_RECORDS: usize = 1 << 24;
/// Largest C/γ: a rounded coordinate stays within 2^28 in magnitude, so a sum of up to
/// [`MAX_RECORDS`] of them stays below 2^53 and is exact in f64 as well as in i64.
pub const MAX_CLIP_OVER_GAMMA: f64 = 268_435_456.0;
/// Smallest grid γ (2^-900): far below any useful grid, and far enough above the subnormals
/// that 1/γ, and so each example's scale to the grid, stays finite.
pub const MIN_GAMMA: f64 = f64::from_bits((1023 - 900) << 52);
/// Largest σ/γ: the noise stays far inside i64.
pub const MAX_SIGMA_OVER_GAMMA: f64 = 1_099_511_627_776.0;

/// A plant's record-level DP-SGD configuration (the same at every plant of a campaign).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RecordDpConfig {
    /// Poisson sampling rate q in (0, 1].
    pub q: f64,
    /// Per-example L2 clip norm C.
    pub clip: f64,
    /// Noise standard deviation σ per coordinate, in gradient-sum units.
    pub sigma: f64,
    /// Rounding grid γ.
    pub gamma: f64,
    /// Optimizer steps (each one sampled, clipped and noised).
    pub steps: u32,
    /// The expected sample size q·N the noisy sum is divided by, fixed before the data is
    /// seen (public: the manifest's or the operator's figure). Never computed from the
    /// plant's record count here: under add/remove adjacency N differs between neighbours,
    /// so a scale of q·N would itself release N.
    pub expected_batch: f64,
    /// Learning rate.
    pub lr: f64,
    /// SGD momentum (0 = plain SGD).
    pub momentum: f64,
    /// `pos_weight` of each example's BCE loss (fixed by the built-in, never from local data).
    pub pos_weight: f64,
}

/// Why a record-level DP-SGD run was refused or stopped. Nothing is returned on error: the
/// model may have moved, and the caller discards it.
#[derive(Debug, thiserror::Error)]
pub enum RecordDpError {
    /// q outside (0, 1].
    #[error("sampling rate q = {0} outside (0, 1]")]
    SamplingRate(f64),
    /// C not finite and positive.
    #[error("clip norm C = {0} must be finite and > 0")]
    ClipNorm(f64),
    /// σ not finite and positive.
    #[error("noise sigma = {0} must be finite and > 0")]
    Sigma(f64),
    /// γ not finite or below [`MIN_GAMMA`].
    #[error("grid gamma = {0} must be finite and at least 2^-900")]
    Gamma(f64),
    /// The grid is too fine for the clip norm or the noise (integer range).
    #[error("grid gamma = {gamma} too fine: {what}/gamma = {ratio} exceeds {max}")]
    GridTooFine {
        /// γ.
        gamma: f64,
        /// `C` or `sigma`.
        what: &'static str,
        /// C/γ or σ/γ.
        ratio: f64,
        /// Its largest accepted value.
        max: f64,
    },
    /// Steps outside 1..=MAX_LOCAL_STEPS.
    #[error("steps {0} outside 1..={MAX_LOCAL_STEPS}")]
    Steps(u32),
    /// Expected sample size not finite or outside [1, 2^24].
    #[error("expected batch {0} outside [1, 2^24]")]
    ExpectedBatch(f64),
    /// Learning rate outside [1e-8, 10].
    #[error("learning rate {0} outside [1e-8, 10]")]
    LearningRate(f64),
    /// Momentum outside [0, 0.999].
    #[error("momentum {0} outside [0, 0.999]")]
    Momentum(f64),
    /// pos_weight outside [0.01, 1000].
    #[error("pos_weight {0} outside [0.01, 1000]")]
    PosWeight(f64),
    /// The plant has no record, or more than [`MAX_RECORDS`].
    #[error("the plant has {0} records: record-level DP-SGD needs 1..=2^24")]
    Records(usize),
    /// Per-example gradients whose value count is not rows × dim.
    #[error("{values} gradient values for {rows} examples of {dim} parameters")]
    GradientShape {
        /// Examples.
        rows: usize,
        /// Parameters.
        dim: usize,
        /// Values given.
        values: usize,
    },
    /// An integer sum left i64.
    #[error("the integer gradient sum overflowed")]
    Overflow,
    /// The noise sampler failed.
    #[error("discrete Gaussian noise: {0}")]
    Noise(String),
    /// No OS entropy for the coins.
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    /// The model was refused or failed.
    #[error("model: {0}")]
    Model(#[from] ModelError),
}

impl RecordDpConfig {
    /// Checks every range, naming the first value out of it.
    pub fn validate(&self) -> Result<(), RecordDpError> {
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if !(pos(self.q) && self.q <= 1.0) {
            return Err(RecordDpError::SamplingRate(self.q));
        }
        if !pos(self.clip) {
            return Err(RecordDpError::ClipNorm(self.clip));
        }
        if !pos(self.sigma) {
            return Err(RecordDpError::Sigma(self.sigma));
        }
        gamma_check(self.gamma)?;
        grid_check(self.gamma, "C", self.clip, MAX_CLIP_OVER_GAMMA)?;
        grid_check(self.gamma, "sigma", self.sigma, MAX_SIGMA_OVER_GAMMA)?;
        if !(1..=MAX_LOCAL_STEPS).contains(&self.steps) {
            return Err(RecordDpError::Steps(self.steps));
        }
        if !(self.expected_batch.is_finite()
            && (1.0..=MAX_RECORDS as f64).contains(&self.expected_batch))
        {
            return Err(RecordDpError::ExpectedBatch(self.expected_batch));
        }
        let within = |v: f64, lo: f64, hi: f64| v.is_finite() && v >= lo && v <= hi;
        if !within(self.lr, 1e-8, 10.0) {
            return Err(RecordDpError::LearningRate(self.lr));
        }
        if !within(self.momentum, 0.0, 0.999) {
            return Err(RecordDpError::Momentum(self.momentum));
        }
        if !within(self.pos_weight, 0.01, 1000.0) {
            return Err(RecordDpError::PosWeight(self.pos_weight));
        }
        Ok(())
    }

    /// The mechanism's parameters on a model of `dim` parameters.
    pub fn mechanism(&self, dim: usize) -> MechanismParams {
        let sensitivity = noise::sensitivity(self.clip, self.gamma, dim);
        MechanismParams {
            q: self.q,
            noise_multiplier: self.sigma / sensitivity,
            steps: self.steps,
            sensitivity,
            gamma: self.gamma,
            dim,
            clip: self.clip,
            sigma: self.sigma,
            sampler: noise::sampler_for(self.sigma / self.gamma),
        }
    }
}

/// Refuses a grid γ that is not finite or below [`MIN_GAMMA`].
pub(crate) fn gamma_check(gamma: f64) -> Result<(), RecordDpError> {
    if gamma.is_finite() && gamma >= MIN_GAMMA {
        Ok(())
    } else {
        Err(RecordDpError::Gamma(gamma))
    }
}

/// Refuses `value`/`gamma` above `max` (`what` names the value).
pub(crate) fn grid_check(
    gamma: f64,
    what: &'static str,
    value: f64,
    max: f64,
) -> Result<(), RecordDpError> {
    let ratio = value / gamma;
    if ratio <= max {
        Ok(())
    } else {
        Err(RecordDpError::GridTooFine {
            gamma,
            what,
            ratio,
            max,
        })
    }
}

/// What the accountant needs: `steps` compositions of the Poisson-subsampled (rate `q`)
/// discrete Gaussian of noise multiplier σ/Δ on a `dim`-dimensional integer sum of L2
/// sensitivity Δ/γ (grid units), i.e. Δ in gradient units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MechanismParams {
    /// Sampling rate q.
    pub q: f64,
    /// σ/Δ.
    pub noise_multiplier: f64,
    /// Steps.
    pub steps: u32,
    /// Δ = C + γ·√d/2, the L2 sensitivity of the rounded sum (gradient units).
    pub sensitivity: f64,
    /// γ.
    pub gamma: f64,
    /// d, the parameter count.
    pub dim: usize,
    /// C.
    pub clip: f64,
    /// σ (gradient units; σ/γ in grid units).
    pub sigma: f64,
    /// The sampler of the noise ([`noise::sampler_for`] of σ/γ).
    #[serde(skip)]
    pub sampler: amalgam_dp::sampler::SamplerKind,
}

impl MechanismParams {
    /// The mechanism as the record ledger charges it (C, γ, σ, d, sampler).
    pub fn record_mechanism(&self) -> amalgam_dp::ledger::record::RecordMechanism {
        amalgam_dp::ledger::record::RecordMechanism {
            clip: self.clip,
            gamma: self.gamma,
            sigma: self.sigma,
            // A model of 2^32 parameters cannot be trained here; were it, the audit's Δ from
            // this d would not match σ/z and the charge would be a finding, never a pass.
            dim: u32::try_from(self.dim).unwrap_or(u32::MAX),
            sampler: self.sampler,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RecordDpRun {
    /// Final minus initial weights, in flat order.
    pub update: Vec<f32>,
    /// The mechanism that produced it.
    pub mechanism: MechanismParams,
    /// The sample size of each step. Private to the plant (their mean estimates q·N): for
    /// tests and local diagnostics, never to be sent.
    pub batch_sizes: Vec<usize>,
}

/// Trains `model` from its current weights on the plant's records `data` under record-level
/// DP-SGD (module documentation), drawing the samples from `coins`. Returns the update and the
/// mechanism's parameters; the model is left at the trained weights.
pub fn dp_sgd_train(
    model: &mut Model,
    data: &Batch,
    config: &RecordDpConfig,
    coins: &mut PoissonCoins,
) -> Result<RecordDpRun, RecordDpError> {
    config.validate()?;
    let n = data.len();
    if n == 0 || n > MAX_RECORDS {
        return Err(RecordDpError::Records(n));
    }
    model.refuse_batch_norm()?;
    let builtin = model.linear_layers().is_some();
    let dim = model.numel();
    let mechanism = config.mechanism(dim);
    let initial = model.flat();
    let mut weights = initial.clone();
    let mut velocity = vec![0.0f64; dim];
    // γ / E|B|: from the integer sum to the mean gradient, with the public expected batch.
    let scale = config.gamma / config.expected_batch;
    let mut batch_sizes = Vec::with_capacity(config.steps as usize);
    let mut run_noise = noise::RunNoise::new(mechanism.sampler, config.sigma / config.gamma)?;
    for _ in 0..config.steps {
        let idx = coins.sample(n, config.q);
        batch_sizes.push(idx.len());
        let mut sum = if idx.is_empty() {
            vec![0i64; dim]
        } else {
            let sel = Tensor::from_slice(&idx);
            let x = data.x.f_index_select(0, &sel).map_err(ModelError::from)?;
            let y = data.y.f_index_select(0, &sel).map_err(ModelError::from)?;
            let grads = if builtin {
                per_example::batched(model, &x, &y, config.pos_weight)?
            } else {
                per_example::one_at_a_time(model, &x, &y, config.pos_weight)?
            };
            noise::clip_round_sum(&grads, config.clip, config.gamma)?.sum
        };
        run_noise.add_to(&mut sum)?;
        for ((w, v), s) in weights.iter_mut().zip(&mut velocity).zip(&sum) {
            *v = config.momentum * *v + *s as f64 * scale;
            *w = (f64::from(*w) - config.lr * *v) as f32;
        }
        model.set_from_flat(&weights)?;
    }
    let update = weights.iter().zip(&initial).map(|(w, i)| w - i).collect();
    Ok(RecordDpRun {
        update,
        mechanism,
        batch_sizes,
    })
}
