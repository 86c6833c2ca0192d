//! The in-process campaign under record-level DP-SGD: each plant's record ledger spends
//! exactly the accountant's ε for rounds × local steps at the charged z (never more than the
//! target), with no site-level DP unless asked, and a campaign the cap cannot cover is
//! refused before any training.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_dp::params::Delta;
use amalgam_dp::record::record_epsilon;
use amalgam_train::builtin::builtin;
use amalgam_train::data::{Row, read_csv};
use amalgam_train::secure_campaign::{
    CampaignError, RecordCampaign, SecureCampaign, run_secure_campaign,
};
use amalgam_train::site_trainer::SiteRecipe;
use amalgam_train::split::{Split, SplitConfig, split};
use amalgam_train::train::OptimizerKind;

fn data() -> (Vec<Row>, Split) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/ai4i2020.csv");
    let mut rows = read_csv(std::path::Path::new(path)).unwrap();
    rows.truncate(3000);
    let s = split(
        &rows,
        &SplitConfig {
            plants: 4,
            seed: 2,
            ..SplitConfig::default()
        },
    )
    .unwrap();
    (rows, s)
}

fn campaign(rounds: u32, record: RecordCampaign) -> SecureCampaign {
    let b = builtin("logistic-ai4i").unwrap();
    SecureCampaign {
        recipe: SiteRecipe {
            optimizer: OptimizerKind::Sgd,
            lr: 0.2,
            momentum: 0.0,
            batch_size: 64,
            prox_mu: 0.0,
            pos_weight: b.pos_weight,
        },
        builtin: b,
        local_steps: 4,
        rounds,
        server_lr: 1.0,
        clip: 1.0,
        sigma: None,
        record: Some(record),
        delta: 1e-6,
        bits: 20,
        colluders: 1,
        threshold: None,
        eval_every: 1,
        seed: 7,
        keep_trace: false,
    }
}

fn record(epsilon: f64, noise_multiplier: Option<f64>) -> RecordCampaign {
    RecordCampaign {
        epsilon,
        delta: 1e-6,
        q: 0.1,
        clip: 1.0,
        noise_multiplier,
    }
}

#[test]
fn the_ledgers_spend_the_accountants_epsilon_for_rounds_times_steps_and_stay_under_the_target() {
    let (rows, s) = data();
    let out = run_secure_campaign(&rows, &s, &campaign(3, record(3.0, None))).unwrap();
    assert!(out.stopped.is_none());
    assert_eq!(out.rounds.len(), 3);
    assert_eq!(out.epsilon, None, "no site-level DP was asked for");
    let spent = out.record.unwrap();
    assert!(spent.noise_multiplier >= spent.calibrated);
    let expected = record_epsilon(
        0.1,
        spent.noise_multiplier,
        3 * 4,
        Delta::new(1e-6).unwrap(),
    )
    .unwrap()
    .epsilon;
    assert!(
        (spent.epsilon_spent - expected).abs() <= 1e-9 * expected,
        "ledger {} vs accountant {expected}",
        spent.epsilon_spent
    );
    assert!(spent.epsilon_spent <= 3.0, "spent {}", spent.epsilon_spent);
    // The calibration is tight: the target is nearly reached.
    assert!(spent.epsilon_spent > 2.9, "spent {}", spent.epsilon_spent);
}

#[test]
fn a_campaign_whose_rounds_pass_the_cap_is_refused_before_training() {
    let (rows, s) = data();
    // A fixed z at q = 0.1 for which 1 round of 4 steps fits ε = 3 and 200 rounds do not
    // (checked with the accountant first, so the case stays what it claims).
    let z = 1.5;
    let eps = |steps| {
        record_epsilon(0.1, z, steps, Delta::new(1e-6).unwrap())
            .unwrap()
            .epsilon
    };
    assert!(eps(4) < 3.0 && eps(800) > 3.0, "{} {}", eps(4), eps(800));
    let small = run_secure_campaign(&rows, &s, &campaign(1, record(3.0, Some(z))));
    assert!(small.is_ok(), "{:?}", small.err());
    let started = std::time::Instant::now();
    let err = run_secure_campaign(&rows, &s, &campaign(200, record(3.0, Some(z)))).unwrap_err();
    let CampaignError::Config(message) = err else {
        panic!("expected a configuration refusal, got {err:?}");
    };
    assert!(message.contains("refused before training"), "{message}");
    // Nothing trained: 200 rounds would take far longer than setting up.
    assert!(started.elapsed().as_secs_f64() < 20.0);
}

#[test]
fn a_delta_above_one_over_ten_n_is_refused() {
    let (rows, s) = data();
    let mut r = record(3.0, None);
    r.delta = 1e-2;
    let err = run_secure_campaign(&rows, &s, &campaign(1, r)).unwrap_err();
    let CampaignError::Config(message) = err else {
        panic!("expected a configuration refusal, got {err:?}");
    };
    assert!(message.contains("above 1/(10 N)"), "{message}");
}
