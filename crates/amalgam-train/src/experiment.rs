//! In-process federated experiment on one split: FedAvg, FedProx, per-plant fine-tuning,
//! local-only training per plant, and centralized training of the same architecture and recipe
//! on the pooled training rows. Aggregation here is plaintext; the service runs the same
//! arithmetic under secure aggregation.
//!
//! Model selection uses validation rows only: every `eval_every` rounds (or the same number of
//! epochs) the model is scored by AUPRC on the validation rows it may see (the union of the
//! plants' validation sets for a federated model — in a campaign those per-threshold counts
//! are summed under secure aggregation — its own for a plant's model, the pooled set for the
//! centralized one), the best is kept, and its decision threshold maximizes validation F1. The
//! global test set is only scored, never used for a choice.

use serde::Serialize;

use crate::campaign::Recipe;
use crate::data::{Mode, Row};
use crate::metrics::{Report, auprc, best_threshold};
use crate::model::{Model, ModelError};
use crate::split::Split;
use crate::train::{Batch, LocalConfig, train_epochs, train_local};

/// A scored model.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    /// Metrics on the global test set.
    pub test: Report,
    /// Round (or epoch block × `eval_every`) of the selected checkpoint.
    pub best_round: usize,
    /// The selected weights, in flat order.
    #[serde(skip)]
    pub weights: Vec<f32>,
}

/// Results of one method over plants (one entry for a shared model).
#[derive(Debug, Clone, Serialize)]
pub struct MethodResult {
    /// Method name.
    pub method: &'static str,
    /// One per model (the federated and centralized methods have one model).
    pub models: Vec<Scored>,
    /// Mean over the models of the mean test recall on rule modes that model's plant never
    /// saw (mode splits only; for a shared model, averaged over plants).
    pub unseen_mode_recall: Option<f64>,
}

impl MethodResult {
    /// Mean over models of a metric.
    pub fn mean(&self, f: impl Fn(&Report) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.models.iter().filter_map(|m| f(&m.test)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// Tensors of one split: each plant's training and validation rows, the pooled training and
/// validation rows and the global test set, with the recipe's features. Built once per split
/// and shared by every method, so all of them are scored on the same rows.
pub struct Prepared<'a> {
    split: &'a Split,
    train: Vec<Batch>,
    validation: Vec<(Batch, Vec<bool>)>,
    pooled_train: Batch,
    pooled_val: (Batch, Vec<bool>),
    test: (Batch, Vec<&'a Row>),
    held_out: Vec<(Batch, Vec<&'a Row>)>,
}

fn batch(rows: &[Row], idx: &[usize], recipe: &Recipe) -> (Batch, Vec<bool>) {
    let refs: Vec<&Row> = idx.iter().map(|&i| &rows[i]).collect();
    let labels: Vec<bool> = refs.iter().map(|r| r.failure).collect();
    let f = recipe.model.features;
    (Batch::new(&f.matrix(&refs), &labels, f.dim()), labels)
}

fn union(parts: impl Iterator<Item = Vec<usize>>) -> Vec<usize> {
    parts.flatten().collect()
}

/// Validation AUPRC of the model's current weights.
fn val_auprc(model: &mut Model, val: &(Batch, Vec<bool>)) -> Result<f64, ModelError> {
    Ok(auprc(&val.1, &model.predict(&val.0.x)?))
}

/// Scores the weights `flat` on the test set with the threshold chosen on `val`.
fn score(
    p: &Prepared,
    model: &mut Model,
    flat: &[f32],
    val: &(Batch, Vec<bool>),
    best_round: usize,
) -> Result<Scored, ModelError> {
    model.set_from_flat(flat)?;
    let t = best_threshold(&val.1, &model.predict(&val.0.x)?);
    let s = model.predict(&p.test.0.x)?;
    Ok(Scored {
        test: Report::new(&p.test.1, &s, t),
        best_round,
        weights: flat.to_vec(),
    })
}

/// Keeps the best validated weights.
struct Best {
    auprc: f64,
    flat: Vec<f32>,
    round: usize,
}

impl Best {
    fn offer(&mut self, auprc: f64, flat: impl FnOnce() -> Vec<f32>, round: usize) {
        if auprc > self.auprc {
            self.auprc = auprc;
            self.flat = flat();
            self.round = round;
        }
    }
}

impl<'a> Prepared<'a> {
    /// The tensors of `split` over `rows`.
    pub fn new(rows: &'a [Row], split: &'a Split, recipe: &Recipe) -> Prepared<'a> {
        let plants = &split.plants;
        Prepared {
            split,
            train: plants
                .iter()
                .map(|pl| batch(rows, &pl.train, recipe).0)
                .collect(),
            validation: plants
                .iter()
                .map(|pl| batch(rows, &pl.validation, recipe))
                .collect(),
            pooled_train: batch(
                rows,
                &union(plants.iter().map(|pl| pl.train.clone())),
                recipe,
            )
            .0,
            pooled_val: batch(
                rows,
                &union(plants.iter().map(|pl| pl.validation.clone())),
                recipe,
            ),
            test: (
                batch(rows, &split.test, recipe).0,
                split.test.iter().map(|&i| &rows[i]).collect(),
            ),
            held_out: plants
                .iter()
                .map(|pl| {
                    (
                        batch(rows, &pl.held_out, recipe).0,
                        pl.held_out.iter().map(|&i| &rows[i]).collect(),
                    )
                })
                .collect(),
        }
    }

    /// A scored model's weights on plant `k`'s held-out rows (its own distribution), at the
    /// threshold already chosen on validation rows: a second test set, scored once.
    pub fn on_held_out(
        &self,
        model: &mut Model,
        scored: &Scored,
        k: usize,
    ) -> Result<Report, ModelError> {
        model.set_from_flat(&scored.weights)?;
        let (batch, rows) = &self.held_out[k];
        let s = model.predict(&batch.x)?;
        Ok(Report::new(rows, &s, scored.test.threshold))
    }

    /// Loss (the recipe's weighted BCE), validation F1 at the threshold that maximizes it, and
    /// AUPRC of the flat weights `flat` on the pooled validation rows.
    pub fn pooled_validation(
        &self,
        model: &mut Model,
        flat: &[f32],
        pos_weight: f64,
    ) -> Result<(f64, f64, f64), ModelError> {
        model.set_from_flat(flat)?;
        let (batch, labels) = &self.pooled_val;
        let loss = crate::train::loss(model, batch, pos_weight)?;
        let scores = model.predict(&batch.x)?;
        let t = best_threshold(labels, &scores);
        let (_, _, f1) = crate::metrics::f1_at(labels, &scores, t);
        Ok((loss, f1, auprc(labels, &scores)))
    }

    /// Number of plants.
    pub fn plants(&self) -> usize {
        self.train.len()
    }
}

/// The federated weights `flat` scored on the global test set, the threshold chosen on the
/// pooled validation rows; `round` is recorded as the selected round.
pub fn score_federated(
    p: &Prepared,
    model: &mut Model,
    flat: &[f32],
    round: usize,
) -> Result<Scored, ModelError> {
    score(p, model, flat, &p.pooled_val, round)
}

/// The centralized model: the recipe on the pooled training rows from `init`, for as many
/// epochs as a campaign's plant trains, selected on the pooled validation rows.
pub fn centralized(
    p: &Prepared,
    model: &mut Model,
    init: &[f32],
    recipe: &Recipe,
    seed: u64,
) -> Result<Scored, ModelError> {
    single(p, model, init, &p.pooled_train, &p.pooled_val, recipe, seed)
}

/// Plant `k`'s local-only model: the recipe on its own training rows from `init`, selected on
/// its own validation rows.
pub fn local_only(
    p: &Prepared,
    model: &mut Model,
    init: &[f32],
    k: usize,
    recipe: &Recipe,
    seed: u64,
) -> Result<Scored, ModelError> {
    single(
        p,
        model,
        init,
        &p.train[k],
        &p.validation[k],
        recipe,
        seed ^ (k as u64 + 1) << 40,
    )
}

/// The federated weights `global` fine-tuned at plant `k` for up to the recipe's
/// `finetune_epochs` (no FedProx term): after each epoch, and before the first (the federated
/// weights unchanged), the plant's validation AUPRC is measured and the best is kept (ties go
/// to fewer epochs), so a plant whose few rows would overfit keeps the federated model; the
/// threshold is chosen on the same validation rows, and `best_round` is the epochs kept.
pub fn fine_tuned(
    p: &Prepared,
    model: &mut Model,
    global: &[f32],
    k: usize,
    recipe: &Recipe,
    seed: u64,
) -> Result<Scored, ModelError> {
    let ft = LocalConfig {
        prox_mu: 0.0,
        ..recipe.local.clone()
    };
    model.set_from_flat(global)?;
    let val = &p.validation[k];
    let mut best = Best {
        auprc: val_auprc(model, val)?,
        flat: global.to_vec(),
        round: 0,
    };
    for epoch in 1..=recipe.federated.finetune_epochs {
        train_epochs(
            model,
            None,
            &p.train[k],
            &ft,
            1,
            (seed ^ (k as u64 + 1) << 32).wrapping_add(epoch as u64),
        )?;
        let a = val_auprc(model, val)?;
        best.offer(a, || model.flat(), epoch);
    }
    score(p, model, &best.flat, val, best.round)
}

/// Runs every method on one split. `seed` fixes the initial weights (the same for every
/// method) and the batch order.
pub fn run(
    rows: &[Row],
    split: &Split,
    recipe: &Recipe,
    seed: u64,
) -> Result<Vec<MethodResult>, ModelError> {
    tch::set_num_threads(1);
    let plants = &split.plants;
    let p = Prepared::new(rows, split, recipe);
    let mut model = Model::new(&recipe.model)?;
    let init = model.init_seeded(seed)?;
    let mut out = Vec::new();

    let central = centralized(&p, &mut model, &init, recipe, seed)?;
    out.push(method(&p, "centralized", vec![central], true));

    let (fedavg, fedavg_flat) = federated(&p, &mut model, &init, recipe, 0.0, seed)?;
    out.push(method(&p, "fedavg", vec![fedavg], true));
    let (fedprox, _) = federated(
        &p,
        &mut model,
        &init,
        recipe,
        recipe.federated.fedprox_mu,
        seed,
    )?;
    out.push(method(&p, "fedprox", vec![fedprox], true));

    let mut tuned = Vec::new();
    let mut local = Vec::new();
    for k in 0..plants.len() {
        tuned.push(fine_tuned(&p, &mut model, &fedavg_flat, k, recipe, seed)?);
        local.push(local_only(&p, &mut model, &init, k, recipe, seed)?);
    }
    out.push(method(&p, "fedavg+finetune", tuned, false));
    out.push(method(&p, "local-only", local, false));
    Ok(out)
}

/// Runs [`run`] for each seed (split seed and initial-weight seed alike) on its own thread;
/// results in seed order.
pub fn run_seeds(
    rows: &[Row],
    split_config: &crate::split::SplitConfig,
    recipe: &Recipe,
    seeds: std::ops::Range<u64>,
) -> Result<Vec<Vec<MethodResult>>, String> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = seeds
            .map(|seed| {
                scope.spawn(move || {
                    let cfg = crate::split::SplitConfig {
                        seed,
                        ..split_config.clone()
                    };
                    let s = crate::split::split(rows, &cfg).map_err(|e| e.to_string())?;
                    run(rows, &s, recipe, seed).map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "an experiment thread panicked".to_string())?
            })
            .collect()
    })
}

fn method(p: &Prepared, name: &'static str, models: Vec<Scored>, shared: bool) -> MethodResult {
    let plants = &p.split.plants;
    let mut per_model = Vec::new();
    for (k, m) in models.iter().enumerate() {
        let owners: Vec<usize> = if shared {
            (0..plants.len()).collect()
        } else {
            vec![k]
        };
        for o in owners {
            let unseen: Vec<f64> = Mode::RULE
                .iter()
                .filter(|md| {
                    !plants[o].owned_modes.is_empty() && !plants[o].owned_modes.contains(md)
                })
                .filter_map(|&md| m.test.mode_recall(md))
                .collect();
            if !unseen.is_empty() {
                per_model.push(unseen.iter().sum::<f64>() / unseen.len() as f64);
            }
        }
    }
    MethodResult {
        method: name,
        models,
        unseen_mode_recall: (!per_model.is_empty())
            .then(|| per_model.iter().sum::<f64>() / per_model.len() as f64),
    }
}

/// One model trained alone on `train` for as many epochs as a campaign's plant trains
/// (rounds × local epochs), selected on `val`.
fn single(
    p: &Prepared,
    model: &mut Model,
    init: &[f32],
    train: &Batch,
    val: &(Batch, Vec<bool>),
    recipe: &Recipe,
    seed: u64,
) -> Result<Scored, ModelError> {
    let f = &recipe.federated;
    let cfg = LocalConfig {
        prox_mu: 0.0,
        ..recipe.local.clone()
    };
    model.set_from_flat(init)?;
    let mut best = Best {
        auprc: -1.0,
        flat: init.to_vec(),
        round: 0,
    };
    let mut round = 0;
    while round < f.rounds {
        let step = f.eval_every.min(f.rounds - round);
        train_epochs(
            model,
            None,
            train,
            &cfg,
            step * cfg.epochs,
            seed.wrapping_add(round as u64),
        )?;
        round += step;
        let a = val_auprc(model, val)?;
        best.offer(a, || model.flat(), round);
    }
    score(p, model, &best.flat, val, best.round)
}

/// FedAvg (`mu` = 0) or FedProx over all plants each round; returns the selected model's
/// scores and weights.
fn federated(
    p: &Prepared,
    model: &mut Model,
    init: &[f32],
    recipe: &Recipe,
    mu: f64,
    seed: u64,
) -> Result<(Scored, Vec<f32>), ModelError> {
    let f = &recipe.federated;
    let cfg = LocalConfig {
        prox_mu: mu,
        ..recipe.local.clone()
    };
    let mut global = init.to_vec();
    let mut best = Best {
        auprc: -1.0,
        flat: init.to_vec(),
        round: 0,
    };
    for round in 1..=f.rounds {
        let mut sum = vec![0.0f64; global.len()];
        let mut weight = 0.0;
        for (k, data) in p.train.iter().enumerate() {
            if data.is_empty() {
                continue;
            }
            let u = train_local(
                model,
                &global,
                data,
                &cfg,
                seed ^ ((round as u64) << 16) ^ k as u64,
            )?;
            for (s, d) in sum.iter_mut().zip(&u.delta) {
                *s += u.weight * f64::from(*d);
            }
            weight += u.weight;
        }
        if weight > 0.0 {
            for (g, s) in global.iter_mut().zip(&sum) {
                *g += (f.server_lr * s / weight) as f32;
            }
        }
        if round % f.eval_every == 0 || round == f.rounds {
            model.set_from_flat(&global)?;
            let a = val_auprc(model, &p.pooled_val)?;
            best.offer(a, || global.clone(), round);
        }
    }
    let scored = score(p, model, &best.flat.clone(), &p.pooled_val, best.round)?;
    Ok((scored, best.flat))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::{SplitConfig, SplitKind, split};

    /// Fine-tuning keeps whichever epoch count validates best, the federated weights (0
    /// epochs) included: its validation AUPRC is never below theirs, and with no epochs
    /// allowed it returns them unchanged.
    #[test]
    fn fine_tuning_never_validates_below_the_federated_weights() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join("configs/campaign-default.toml")).unwrap();
        let mut recipe = Recipe::from_toml(&text).unwrap();
        let rows = crate::data::read_csv(&root.join("data/ai4i2020.csv")).unwrap();
        let rows = &rows[..3000];
        let cfg = SplitConfig {
            plants: 3,
            kind: SplitKind::Type,
            seed: 7,
            ..SplitConfig::default()
        };
        let s = split(rows, &cfg).unwrap();
        let p = Prepared::new(rows, &s, &recipe);
        let mut model = Model::new(&recipe.model).unwrap();
        let global = model.init_seeded(7).unwrap();
        let mut kept_some = false;
        for k in 0..p.plants() {
            model.set_from_flat(&global).unwrap();
            let before = val_auprc(&mut model, &p.validation[k]).unwrap();
            recipe.federated.finetune_epochs = 4;
            let ft = fine_tuned(&p, &mut model, &global, k, &recipe, 7).unwrap();
            assert!(ft.best_round <= 4);
            model.set_from_flat(&ft.weights).unwrap();
            let after = val_auprc(&mut model, &p.validation[k]).unwrap();
            assert!(after >= before, "plant {k}: {after} < {before}");
            kept_some |= ft.best_round > 0;
            if ft.best_round == 0 {
                assert_eq!(ft.weights, global);
            }
            recipe.federated.finetune_epochs = 0;
            let none = fine_tuned(&p, &mut model, &global, k, &recipe, 7).unwrap();
            assert_eq!((none.best_round, &none.weights), (0, &global));
        }
        // From random initial weights training helps somewhere: the search is not a no-op.
        assert!(kept_some);
    }
}
