//! The in-process secure campaign: real site agents with plant trainers over the in-memory
//! aggregator. Each round's published model is exactly the FedAvg step of the plaintext sum of
//! the encoded updates the sites masked (masking changes nothing), the campaign learns, and
//! under DP the ledgers' ε grows with the rounds and falls with σ.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_site::model::next_model;
use amalgam_train::builtin::builtin;
use amalgam_train::data::{Row, read_csv};
use amalgam_train::metrics::auprc;
use amalgam_train::secure_campaign::{SecureCampaign, run_secure_campaign};
use amalgam_train::site_trainer::SiteRecipe;
use amalgam_train::split::{Split, SplitConfig, split};
use amalgam_train::train::OptimizerKind;

fn data() -> (Vec<Row>, Split) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/ai4i2020.csv");
    let mut rows = read_csv(std::path::Path::new(path)).unwrap();
    rows.truncate(4000);
    let s = split(
        &rows,
        &SplitConfig {
            plants: 4,
            seed: 3,
            ..SplitConfig::default()
        },
    )
    .unwrap();
    (rows, s)
}

fn campaign(rounds: u32, sigma: Option<f64>) -> SecureCampaign {
    let b = builtin("logistic-ai4i").unwrap();
    SecureCampaign {
        recipe: SiteRecipe {
            optimizer: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: b.momentum,
            batch_size: 64,
            prox_mu: 0.0,
            pos_weight: b.pos_weight,
        },
        builtin: b,
        local_steps: 10,
        rounds,
        server_lr: 1.0,
        clip: 2.0,
        sigma,
        record: None,
        delta: 1e-6,
        bits: 20,
        colluders: 1,
        threshold: None,
        eval_every: 1,
        seed: 5,
        keep_trace: true,
    }
}

#[test]
fn each_published_model_is_the_fedavg_step_of_the_plaintext_sum_of_the_encoded_updates() {
    let (rows, s) = data();
    let out = run_secure_campaign(&rows, &s, &campaign(4, Some(4.0))).unwrap();
    let trace = &out.trace;
    let rules = trace.rules.as_ref().unwrap();
    assert_eq!(trace.encoded.len(), 4);
    assert_eq!(trace.models.len(), 5);
    let modulus = 1u64 << rules.dp.bits.get();
    for r in 0..4 {
        let enc = &trace.encoded[r];
        assert_eq!(enc.len(), 4, "round {r}: every plant masked one update");
        let mut sum = vec![0u64; enc[0].1.len()];
        for (_, v) in enc {
            for (a, b) in sum.iter_mut().zip(v) {
                *a = (*a + b) % modulus;
            }
        }
        let expected = next_model(
            rules.encoding(r as u64),
            &trace.models[r],
            &sum,
            enc.len() as f64,
            rules.server_lr,
        )
        .unwrap();
        assert_eq!(
            expected,
            trace.models[r + 1],
            "round {r}: the published model is not FedAvg of the plaintext sum"
        );
        assert_ne!(trace.models[r], trace.models[r + 1], "round {r}: no move");
        assert_eq!(out.rounds[r].survivors, 4);
    }
    // Under DP the noise makes two plants' encodings of the same round differ from any
    // noise-free encoding; the ledgers spent a finite, positive ε.
    let eps = out.epsilon.unwrap();
    assert!(eps.is_finite() && eps > 0.0, "{eps}");
}

#[test]
fn without_dp_the_campaign_learns_and_spends_no_epsilon_figure() {
    let (rows, s) = data();
    let c = campaign(6, None);
    let out = run_secure_campaign(&rows, &s, &c).unwrap();
    assert!(out.epsilon.is_none());
    // The selected model beats the initial weights on the pooled validation rows.
    let val: Vec<usize> = s.plants.iter().flat_map(|p| p.validation.clone()).collect();
    let refs: Vec<&Row> = val.iter().map(|&i| &rows[i]).collect();
    let labels: Vec<bool> = refs.iter().map(|r| r.failure).collect();
    let f = c.builtin.spec.features;
    let x = amalgam_train::train::Batch::new(&f.matrix(&refs), &labels, f.dim());
    let (mut model, _) = c.builtin.init(c.seed).unwrap();
    let before = auprc(&labels, &model.predict(&x.x).unwrap());
    model.set_from_flat(&out.weights).unwrap();
    let after = auprc(&labels, &model.predict(&x.x).unwrap());
    assert!(after > before, "validation AUPRC {before} -> {after}");
    assert!(out.test.rows == s.test.len() && out.test.auprc > 0.0);
    assert_eq!(out.protocol.threshold, 3, "t for 4 plants");
}

#[test]
fn epsilon_grows_with_rounds_and_falls_with_sigma() {
    let (rows, s) = data();
    let eps = |rounds, sigma| {
        let mut c = campaign(rounds, Some(sigma));
        c.keep_trace = false;
        run_secure_campaign(&rows, &s, &c).unwrap().epsilon.unwrap()
    };
    let (two, four, four_quiet) = (eps(2, 2.0), eps(4, 2.0), eps(4, 6.0));
    assert!(two < four, "{two} !< {four}");
    assert!(four_quiet < four, "{four_quiet} !< {four}");
}

#[test]
fn a_campaign_with_no_round_or_no_evaluation_is_refused() {
    let (rows, s) = data();
    let mut c = campaign(0, None);
    assert!(run_secure_campaign(&rows, &s, &c).is_err());
    c.rounds = 1;
    c.eval_every = 0;
    assert!(run_secure_campaign(&rows, &s, &c).is_err());
}
