//! The site agent's trainer on real plant rows: the update has the model's length and moves
//! it, is reproducible under a seed without DP (and not under DP), lowers the plant's loss,
//! and every malformed round is refused before training.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_site::model::model_digest;
use amalgam_site::{GlobalModel, Permits, RoundInfo, TrainError, Trainer};
use amalgam_train::builtin::builtin;
use amalgam_train::data::{Row, read_csv};
use amalgam_train::site_trainer::{PlantTrainer, SiteRecipe, Weighting};
use amalgam_train::train::OptimizerKind;

/// 1,500 rows of AI4I (about 50 failures): a plant-sized sample.
fn plant_rows() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/ai4i2020.csv");
    let mut rows = read_csv(std::path::Path::new(path)).unwrap();
    rows.truncate(1500);
    assert!(rows.iter().filter(|r| r.failure).count() >= 20);
    rows
}

fn recipe(optimizer: OptimizerKind) -> SiteRecipe {
    SiteRecipe {
        optimizer,
        lr: if optimizer == OptimizerKind::Sgd {
            0.1
        } else {
            0.01
        },
        momentum: 0.9,
        batch_size: 64,
        prox_mu: 0.0,
        pos_weight: 3.0,
    }
}

fn trainer(name: &str, weighting: Weighting, seed: u64) -> (PlantTrainer, Vec<f32>) {
    let b = builtin(name).unwrap();
    let (_, init) = b.init(7).unwrap();
    let t = PlantTrainer::new(
        &b,
        &plant_rows(),
        recipe(OptimizerKind::Sgd),
        weighting,
        seed,
    )
    .unwrap();
    (t, init)
}

fn round(r: u64, steps: u32) -> RoundInfo {
    RoundInfo {
        round: r,
        campaign_digest: [5; 32],
        local_steps: steps,
    }
}

fn permits(info: &RoundInfo, epsilon_total: f64) -> Permits {
    Permits {
        round: info.round,
        site_steps: 1,
        epsilon_total,
        local_steps: info.local_steps,
    }
}

fn train(
    t: &mut PlantTrainer,
    global: &[f32],
    r: u64,
    steps: u32,
    eps: f64,
) -> Result<amalgam_site::TrainOutput, TrainError> {
    let info = round(r, steps);
    let g = GlobalModel {
        digest: model_digest(global),
        values: global,
    };
    t.train(g, &info, &permits(&info, eps))
}

const NO_DP: f64 = f64::INFINITY;

#[test]
fn the_update_has_the_model_length_moves_it_and_is_reproducible_under_a_seed() {
    for name in ["mlp-ai4i", "logistic-ai4i"] {
        let (mut a, global) = trainer(name, Weighting::Uniform, 11);
        let (mut b, _) = trainer(name, Weighting::Uniform, 11);
        let (mut c, _) = trainer(name, Weighting::Uniform, 12);
        let ua = train(&mut a, &global, 3, 10, NO_DP).unwrap();
        assert_eq!(ua.update.len(), a.numel(), "{name}");
        assert_eq!(ua.update.len(), global.len());
        let norm: f64 = ua.update.iter().map(|v| f64::from(*v).powi(2)).sum();
        assert!(norm > 1e-8, "{name}: the update is zero");
        assert_eq!(ua.weight, 1.0, "uniform weighting");
        assert!(ua.record_charge.is_none());
        // Same seed, same round, same global: bit-identical.
        let ub = train(&mut b, &global, 3, 10, NO_DP).unwrap();
        assert_eq!(ua.update, ub.update, "{name}: not reproducible");
        // The batch order depends on the seed and on the round.
        let uc = train(&mut c, &global, 3, 10, NO_DP).unwrap();
        assert_ne!(ua.update, uc.update, "{name}: the seed is ignored");
        let other_round = train(&mut b, &global, 4, 10, NO_DP).unwrap();
        assert_ne!(
            ua.update, other_round.update,
            "{name}: the round is ignored"
        );
        // More steps, another update: the step count is the round's.
        let more = train(&mut a, &global, 3, 11, NO_DP).unwrap();
        assert_ne!(ua.update, more.update, "{name}: the step count is ignored");
        // Training again from the same global after other rounds gives the first update:
        // nothing (optimizer state, weights) carries over between rounds.
        let again = train(&mut a, &global, 3, 10, NO_DP).unwrap();
        assert_eq!(
            ua.update, again.update,
            "{name}: state leaks between rounds"
        );
    }
}

#[test]
fn under_dp_the_batch_order_is_not_the_seed_s() {
    let (mut a, global) = trainer("logistic-ai4i", Weighting::Uniform, 11);
    let (mut b, _) = trainer("logistic-ai4i", Weighting::Uniform, 11);
    let ua = train(&mut a, &global, 3, 10, 2.5).unwrap();
    let ub = train(&mut b, &global, 3, 10, 2.5).unwrap();
    assert_eq!(ua.update.len(), ub.update.len());
    assert_ne!(ua.update, ub.update, "DP batch order came from the seed");
}

#[test]
fn training_on_the_plant_s_rows_lowers_its_loss_from_the_global_model() {
    for (name, opt) in [
        ("mlp-ai4i", OptimizerKind::Sgd),
        ("mlp-ai4i", OptimizerKind::Adam),
        ("logistic-ai4i", OptimizerKind::Sgd),
    ] {
        let b = builtin(name).unwrap();
        let (_, global) = b.init(3).unwrap();
        let mut t =
            PlantTrainer::new(&b, &plant_rows(), recipe(opt), Weighting::Uniform, 1).unwrap();
        let before = t.loss_of(&global).unwrap();
        let u = train(&mut t, &global, 1, 60, NO_DP).unwrap();
        let local: Vec<f32> = global.iter().zip(&u.update).map(|(g, d)| g + d).collect();
        let after = t.loss_of(&local).unwrap();
        assert!(
            after < 0.8 * before,
            "{name} {opt:?}: loss {before} -> {after}"
        );
    }
}

#[test]
fn a_malformed_round_is_refused_before_training() {
    let (mut t, global) = trainer("mlp-ai4i", Weighting::Uniform, 1);
    let want = global.len();
    // A global model of the wrong length: the specific shape error, both ways.
    for bad in [&global[1..], &[global.as_slice(), &[0.0]].concat()[..]] {
        match train(&mut t, bad, 1, 5, NO_DP) {
            Err(TrainError::Shape { expected, got }) => {
                assert_eq!((expected, got), (want, bad.len()));
            }
            other => panic!("wrong-length global accepted: {other:?}"),
        }
    }
    // A global whose digest is not its values'.
    let info = round(1, 5);
    let forged = GlobalModel {
        digest: [0; 32],
        values: &global,
    };
    assert!(matches!(
        t.train(forged, &info, &permits(&info, NO_DP)),
        Err(TrainError::Failed(m)) if m.contains("digest")
    ));
    // Permits for another round, or for another step count.
    let mut p = permits(&info, NO_DP);
    p.round = 2;
    let g = GlobalModel {
        digest: model_digest(&global),
        values: &global,
    };
    assert!(matches!(t.train(g, &info, &p), Err(TrainError::Failed(_))));
    let mut p = permits(&info, NO_DP);
    p.local_steps = 6;
    assert!(matches!(t.train(g, &info, &p), Err(TrainError::Failed(_))));
    // Zero steps.
    assert!(matches!(
        train(&mut t, &global, 1, 0, NO_DP),
        Err(TrainError::Failed(m)) if m.contains("local steps")
    ));
    // A non-finite global value.
    let mut nan = global.clone();
    nan[4] = f32::NAN;
    assert!(matches!(
        train(&mut t, &nan, 1, 5, NO_DP),
        Err(TrainError::Failed(_))
    ));
    // The trainer still works after the refusals.
    assert_eq!(
        train(&mut t, &global, 1, 5, NO_DP).unwrap().update.len(),
        want
    );
}

#[test]
fn row_weights_only_without_dp_and_empty_data_is_refused() {
    let (mut t, global) = trainer("logistic-ai4i", Weighting::Rows, 1);
    let u = train(&mut t, &global, 1, 3, NO_DP).unwrap();
    assert_eq!(u.weight, t.rows() as f64);
    assert_eq!(t.rows(), 1500);
    assert!(matches!(
        train(&mut t, &global, 1, 3, 1.0),
        Err(TrainError::Failed(m)) if m.contains("uniform")
    ));
    let b = builtin("logistic-ai4i").unwrap();
    assert!(PlantTrainer::new(&b, &[], recipe(OptimizerKind::Sgd), Weighting::Uniform, 1).is_err());
    let mut bad = recipe(OptimizerKind::Sgd);
    bad.lr = f64::NAN;
    assert!(PlantTrainer::new(&b, &plant_rows(), bad, Weighting::Uniform, 1).is_err());
}
