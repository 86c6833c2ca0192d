//! Local training at one plant: a few epochs from the global weights, returning the update.
//!
//! The loss is binary cross-entropy on the logit with a `pos_weight` fixed by the campaign's
//! configuration: computing it from local class counts would make the update depend on a
//! statistic outside the privacy accounting. FedProx adds (μ/2)·‖w − w_global‖². The optimizer is
//! created fresh for each call (its state would otherwise be local, unaggregated information
//! carried between rounds).

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor, nn::OptimizerConfig};

use crate::model::{Model, ModelError};

/// Local optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Stochastic gradient descent, with optional momentum.
    Sgd,
    /// Adam.
    Adam,
}

/// Local training configuration (the same at every plant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// SGD momentum (ignored by Adam).
    #[serde(default)]
    pub momentum: f64,
    /// Local epochs per round.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// FedProx μ (0 = FedAvg).
    #[serde(default)]
    pub prox_mu: f64,
    /// Weight of the failure class in the loss (fixed by configuration).
    pub pos_weight: f64,
}

impl LocalConfig {
    /// Checks ranges (a configuration file is untrusted).
    pub fn validate(&self) -> Result<(), String> {
        let ok = |v: f64, lo: f64, hi: f64| v.is_finite() && v >= lo && v <= hi;
        if !ok(self.lr, 1e-8, 10.0) {
            return Err(format!("lr {} outside [1e-8, 10]", self.lr));
        }
        if !ok(self.momentum, 0.0, 0.999) {
            return Err(format!("momentum {} outside [0, 0.999]", self.momentum));
        }
        if !(1..=1000).contains(&self.epochs) || !(1..=1 << 20).contains(&self.batch_size) {
            return Err("epochs must be 1..=1000 and batch_size 1..=2^20".into());
        }
        if !ok(self.prox_mu, 0.0, 100.0) || !ok(self.pos_weight, 0.01, 1000.0) {
            return Err("prox_mu must be in [0, 100] and pos_weight in [0.01, 1000]".into());
        }
        Ok(())
    }
}

/// A plant's data as tensors: features `[n, d]` float32 and labels `[n, 1]` float32.
#[derive(Debug)]
pub struct Batch {
    /// Features.
    pub x: Tensor,
    /// Labels (1 = failure).
    pub y: Tensor,
}

impl Batch {
    /// Builds from a row-major feature matrix and labels.
    pub fn new(features: &[f32], labels: &[bool], dim: usize) -> Batch {
        let n = labels.len() as i64;
        let y: Vec<f32> = labels.iter().map(|&b| f32::from(u8::from(b))).collect();
        Batch {
            x: Tensor::from_slice(features).view([n, dim as i64]),
            y: Tensor::from_slice(&y).view([n, 1]),
        }
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.y.size()[0] as usize
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Mean weighted BCE-with-logits loss of the model on `data`.
pub fn loss(model: &Model, data: &Batch, pos_weight: f64) -> Result<f64, ModelError> {
    let pw = Tensor::from_slice(&[pos_weight as f32]);
    let l = tch::no_grad(|| {
        model.forward(&data.x).map(|o| {
            o.binary_cross_entropy_with_logits::<Tensor>(&data.y, None, Some(pw), Reduction::Mean)
        })
    })?;
    Ok(l.double_value(&[]))
}

/// The result of local training.
#[derive(Debug, Clone)]
pub struct Update {
    /// Local minus global weights, in flat order.
    pub delta: Vec<f32>,
    /// Aggregation weight (training rows).
    pub weight: f64,
}

/// Trains `model` from `global` on `data` and returns the update. `seed` orders the batches.
pub fn train_local(
    model: &mut Model,
    global: &[f32],
    data: &Batch,
    cfg: &LocalConfig,
    seed: u64,
) -> Result<Update, ModelError> {
    model.set_from_flat(global)?;
    train_epochs(model, Some(global), data, cfg, cfg.epochs, seed)?;
    let delta = model
        .flat()
        .iter()
        .zip(global)
        .map(|(l, g)| l - g)
        .collect();
    Ok(Update {
        delta,
        weight: data.len() as f64,
    })
}

/// Runs `epochs` epochs of `cfg` on `data` from the model's current weights; the FedProx term
/// pulls toward `anchor` when given.
pub fn train_epochs(
    model: &mut Model,
    anchor: Option<&[f32]>,
    data: &Batch,
    cfg: &LocalConfig,
    epochs: usize,
    seed: u64,
) -> Result<(), ModelError> {
    let n = data.len();
    if n == 0 {
        return Ok(());
    }
    let mut opt = match cfg.optimizer {
        OptimizerKind::Sgd => tch::nn::Sgd {
            momentum: cfg.momentum,
            ..Default::default()
        }
        .build(&model.vs, cfg.lr)?,
        OptimizerKind::Adam => tch::nn::Adam::default().build(&model.vs, cfg.lr)?,
    };
    let anchor = match (anchor, cfg.prox_mu > 0.0) {
        (Some(a), true) => Some(model.unflatten(a)?),
        _ => None,
    };
    let pw = Tensor::from_slice(&[cfg.pos_weight as f32]);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx: Vec<i64> = (0..n as i64).collect();
    model.set_train(true);
    for _ in 0..epochs {
        for i in (1..idx.len()).rev() {
            idx.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        for chunk in idx.chunks(cfg.batch_size) {
            let sel = Tensor::from_slice(chunk);
            let (x, y) = (data.x.index_select(0, &sel), data.y.index_select(0, &sel));
            let logits = model.forward(&x)?;
            let mut l = logits.binary_cross_entropy_with_logits::<Tensor>(
                &y,
                None,
                Some(pw.shallow_clone()),
                Reduction::Mean,
            );
            if let Some(a) = &anchor {
                let mut prox = Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
                for (p, g) in model.params().iter().zip(a) {
                    prox += (p - g).square().sum(Kind::Float);
                }
                l += prox * (cfg.prox_mu / 2.0);
            }
            opt.backward_step(&l);
        }
    }
    model.set_train(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureSet;
    use crate::model::{Arch, ModelSpec};

    /// A separable toy problem: label = first feature > 0.
    fn toy() -> Batch {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..256 {
            let row: Vec<f32> = (0..8)
                .map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            y.push(row[0] > 0.0);
            x.extend(row);
        }
        Batch::new(&x, &y, 8)
    }

    fn cfg(opt: OptimizerKind, mu: f64) -> LocalConfig {
        LocalConfig {
            optimizer: opt,
            lr: 0.1,
            momentum: 0.9,
            epochs: 5,
            batch_size: 32,
            prox_mu: mu,
            pos_weight: 1.0,
        }
    }

    fn spec() -> ModelSpec {
        ModelSpec {
            arch: Arch::Mlp { hidden: vec![8] },
            features: FeatureSet { physics: false },
        }
    }

    #[test]
    fn local_training_lowers_the_loss_on_a_fixed_seed() {
        tch::set_num_threads(1);
        for opt in [OptimizerKind::Sgd, OptimizerKind::Adam] {
            tch::manual_seed(3);
            let mut m = Model::new(&spec()).unwrap();
            let data = toy();
            let global = m.flat();
            let before = loss(&m, &data, 1.0).unwrap();
            let u = train_local(&mut m, &global, &data, &cfg(opt, 0.0), 1).unwrap();
            let after = loss(&m, &data, 1.0).unwrap();
            assert!(after < 0.5 * before, "{opt:?}: {before} -> {after}");
            assert_eq!(u.weight, 256.0);
            // global + delta is the local model (up to f32 rounding of the subtraction).
            for ((g, d), l) in global.iter().zip(&u.delta).zip(m.flat()) {
                assert!((g + d - l).abs() <= 1e-6 * (1.0 + l.abs()));
            }
        }
    }

    #[test]
    fn the_proximal_term_keeps_the_update_near_the_global_weights() {
        let norm = |mu: f64| {
            tch::manual_seed(3);
            let mut m = Model::new(&spec()).unwrap();
            let global = m.flat();
            let u = train_local(&mut m, &global, &toy(), &cfg(OptimizerKind::Sgd, mu), 1).unwrap();
            u.delta.iter().map(|d| f64::from(d * d)).sum::<f64>().sqrt()
        };
        assert!(norm(10.0) < 0.5 * norm(0.0));
    }
}
