//! The site agent's trainer on real plant rows: the update has the model's length and moves
//! it, is reproducible under a seed without DP (and not under DP), lowers the plant's loss,
//! and every malformed round is refused before training.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_site::model::model_digest;
use amalgam_site::{GlobalModel, Permits, RoundInfo, TrainError, Trainer};
use amalgam_train::builtin::builtin;
use amalgam_train::data::{Row, read_csv};
use amalgam_train::site_trainer::{PlantTrainer, RecordDpRecipe, SiteRecipe, Weighting};
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
        record: None,
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

/// The noised weight mode's example count may be reported under site-level DP (the agent
/// encodes only min(n / n_cap, 1) in the noised vector); record-level DP-SGD refuses it.
#[test]
fn example_counts_are_reported_under_site_level_dp_but_not_with_record_dp() {
    let (mut t, global) = trainer("logistic-ai4i", Weighting::Examples, 1);
    let u = train(&mut t, &global, 1, 3, 1.0).unwrap();
    assert_eq!(u.weight, t.rows() as f64);
    let (mut uniform, _) = trainer("logistic-ai4i", Weighting::Uniform, 1);
    assert_eq!(train(&mut uniform, &global, 1, 3, 1.0).unwrap().weight, 1.0);
    let (t, _) = trainer("logistic-ai4i", Weighting::Examples, 1);
    let refused = t.with_record_dp(record_recipe()).unwrap_err().to_string();
    assert!(refused.contains("expected batch"), "{refused}");
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

fn record_recipe() -> RecordDpRecipe {
    RecordDpRecipe {
        q: 0.02,
        clip: 1.0,
        sigma: 1.5,
        gamma: 1e-4,
        expected_batch: 30.0,
    }
}

/// A record ledger of the 1,500 plant rows (cap 50 at δ = 1e-5) in `dir`.
fn record_ledger(dir: &std::path::Path) -> amalgam_dp::ledger::record::RecordLedger {
    use amalgam_dp::ledger::record::{RecordLedger, RecordPolicy};
    use amalgam_dp::params::{Delta, Epsilon};
    let policy = RecordPolicy {
        dataset: [0xd5; 32],
        max_records: 1500,
        epsilon_cap: Epsilon::new(50.0).unwrap(),
        delta: Delta::new(1e-5).unwrap(),
    };
    RecordLedger::open(
        &dir.join("r.ledger"),
        ed25519_dalek::SigningKey::from_bytes(&[4; 32]),
        policy,
    )
    .unwrap()
}

/// A grant for (q, z, steps) on `mechanism` (σ rescaled so that σ/Δ = z).
fn grant_for(
    ledger: &mut amalgam_dp::ledger::record::RecordLedger,
    id: u8,
    mechanism: amalgam_dp::ledger::record::RecordMechanism,
    (q, z, steps): (f64, f64, u32),
) -> amalgam_dp::ledger::record::RecordGrant {
    let mut mechanism = mechanism;
    if z != mechanism.noise_multiplier() {
        mechanism.sigma = z * mechanism.sensitivity();
    }
    ledger
        .authorize(amalgam_dp::ledger::record::RecordRunRequest {
            run_id: [id; 32],
            data: amalgam_dp::ledger::record::data_version(b"plant 0 rows", 1000),
            q,
            noise_multiplier: z,
            steps,
            mechanism,
        })
        .unwrap()
        .consume()
}

fn train_with(
    t: &mut PlantTrainer,
    global: &[f32],
    info: &RoundInfo,
    record: Option<amalgam_dp::ledger::record::RecordGrant>,
) -> Result<amalgam_site::TrainOutput, TrainError> {
    let mut p = permits(info, 1.0);
    p.record = record;
    let g = GlobalModel {
        digest: model_digest(global),
        values: global,
    };
    t.train(g, info, &p)
}

#[test]
fn under_record_dp_the_trainer_runs_the_granted_run_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = record_ledger(dir.path());
    let (t, global) = trainer("logistic-ai4i", Weighting::Uniform, 11);
    let mut t = t.with_record_dp(record_recipe()).unwrap();
    let m = t.record_mechanism(10).unwrap();
    assert_eq!((m.q, m.steps, m.dim), (0.02, 10, t.numel()));
    let info = round(1, 10);
    let grant = grant_for(
        &mut ledger,
        1,
        m.record_mechanism(),
        (m.q, m.noise_multiplier, 10),
    );
    let a = train_with(&mut t, &global, &info, Some(grant)).unwrap();
    assert_eq!(a.update.len(), global.len());
    assert!(a.update.iter().all(|v| v.is_finite()));
    let charge = a.record_charge.unwrap();
    assert_eq!(
        (charge.steps, charge.sample_rate, charge.noise_multiplier),
        (10, m.q, m.noise_multiplier)
    );
    assert_eq!(charge.mechanism, m.record_mechanism());
    assert_eq!(
        charge.mechanism.sampler,
        amalgam_dp::sampler::SamplerKind::Fast
    );
    let delta = amalgam_dp::params::Delta::new(1e-5).unwrap();
    let expected = amalgam_dp::record::record_epsilon(m.q, m.noise_multiplier, 10, delta)
        .unwrap()
        .epsilon;
    assert_eq!(ledger.spent(), expected);
    // The same seed and round again: the samples and the noise come from the OS, never from
    // the seeded shuffle, so the update differs.
    let grant = grant_for(
        &mut ledger,
        2,
        m.record_mechanism(),
        (m.q, m.noise_multiplier, 10),
    );
    let b = train_with(&mut t, &global, &info, Some(grant)).unwrap();
    assert_ne!(a.update, b.update);
}

#[test]
fn under_record_dp_a_round_without_its_permit_or_with_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = record_ledger(dir.path());
    let (t, global) = trainer("logistic-ai4i", Weighting::Uniform, 11);
    let mut t = t.with_record_dp(record_recipe()).unwrap();
    let m = t.record_mechanism(10).unwrap();
    let info = round(1, 10);
    let no_permit = train_with(&mut t, &global, &info, None).unwrap_err();
    assert!(
        no_permit.to_string().contains("record permit"),
        "{no_permit}"
    );
    // Same q, z and steps on another mechanism: twice the clip with twice the noise.
    let mut other = m.record_mechanism();
    other.clip *= 2.0;
    other.sigma = m.noise_multiplier * other.sensitivity();
    for (id, mechanism, (q, z, steps)) in [
        (10, m.record_mechanism(), (m.q, m.noise_multiplier, 9)),
        (
            11,
            m.record_mechanism(),
            (m.q / 2.0, m.noise_multiplier, 10),
        ),
        (
            12,
            m.record_mechanism(),
            (m.q, m.noise_multiplier * 2.0, 10),
        ),
        (13, other, (m.q, m.noise_multiplier, 10)),
    ] {
        let grant = grant_for(&mut ledger, id, mechanism, (q, z, steps));
        let e = train_with(&mut t, &global, &info, Some(grant)).unwrap_err();
        assert!(e.to_string().contains("the record permit covers"), "{e}");
    }
    // A trainer without record-level DP refuses a round a record permit was taken for.
    let (mut plain, _) = trainer("logistic-ai4i", Weighting::Uniform, 11);
    let grant = grant_for(
        &mut ledger,
        200,
        m.record_mechanism(),
        (m.q, m.noise_multiplier, 10),
    );
    assert!(train_with(&mut plain, &global, &info, Some(grant)).is_err());
}

#[test]
fn record_dp_refuses_adam_fedprox_and_row_weights() {
    let b = builtin("logistic-ai4i").unwrap();
    let rows = plant_rows();
    let adam = PlantTrainer::new(
        &b,
        &rows,
        recipe(OptimizerKind::Adam),
        Weighting::Uniform,
        1,
    )
    .unwrap();
    assert!(adam.with_record_dp(record_recipe()).is_err());
    let mut prox = recipe(OptimizerKind::Sgd);
    prox.prox_mu = 0.1;
    let prox = PlantTrainer::new(&b, &rows, prox, Weighting::Uniform, 1).unwrap();
    assert!(prox.with_record_dp(record_recipe()).is_err());
    let (rows_weighted, _) = trainer("logistic-ai4i", Weighting::Rows, 1);
    assert!(rows_weighted.with_record_dp(record_recipe()).is_err());
    let (t, _) = trainer("logistic-ai4i", Weighting::Uniform, 1);
    let mut bad = record_recipe();
    bad.q = 0.0;
    assert!(t.with_record_dp(bad).is_err());
}
