//! Record-level DP-SGD on real AI4I rows: the two per-example gradient paths agree with each
//! other and with torch's own gradient, clipping and rounding keep every example within C and
//! Δ (adversarial gradients included), the sample sizes are Binomial(N, q), no coin comes from
//! torch's generator, the noise has variance (σ/γ)² in grid units even on an empty sample,
//! BatchNorm and out-of-range configurations are refused without a change, and training lowers
//! the validation loss.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use amalgam_train::builtin::builtin;
use amalgam_train::data::{Row, read_csv};
use amalgam_train::dpsgd::noise::{add_discrete_gaussian, clip_round_sum, sensitivity};
use amalgam_train::dpsgd::per_example::{self, PerExample};
use amalgam_train::dpsgd::{PoissonCoins, RecordDpConfig, RecordDpError, dp_sgd_train};
use amalgam_train::model::{Model, ModelError};
use amalgam_train::train::{Batch, loss};
use statrs::distribution::{ChiSquared, Univariate};
use tch::{Kind, Reduction, Tensor};

/// Serializes the tests: model construction draws from torch's global generator, and one test
/// checks that training does not.
static TORCH: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    tch::set_num_threads(1);
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}

fn all_rows() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/ai4i2020.csv");
    read_csv(std::path::Path::new(path)).unwrap()
}

fn batch(rows: &[Row]) -> Batch {
    let f = builtin("mlp-ai4i").unwrap().spec.features;
    let refs: Vec<&Row> = rows.iter().collect();
    let labels: Vec<bool> = rows.iter().map(|r| r.failure).collect();
    Batch::new(&f.matrix(&refs), &labels, f.dim())
}

/// 48 rows without a failure and every failure among the first 3,000 rows up to 16.
fn mixed_rows() -> Vec<Row> {
    let rows = all_rows();
    let mut out: Vec<Row> = rows
        .iter()
        .filter(|r| r.failure)
        .take(16)
        .cloned()
        .collect();
    out.extend(rows.iter().filter(|r| !r.failure).take(48).cloned());
    assert_eq!(out.len(), 64);
    out
}

fn model(name: &str, seed: u64) -> Model {
    builtin(name).unwrap().init(seed).unwrap().0
}

fn config() -> RecordDpConfig {
    RecordDpConfig {
        q: 0.05,
        clip: 1.0,
        sigma: 1e-3,
        gamma: 1e-4,
        steps: 10,
        expected_batch: 32.0,
        lr: 0.1,
        momentum: 0.9,
        pos_weight: 3.0,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn batched_and_one_at_a_time_paths_agree_with_each_other_and_with_torch() {
    let _g = lock();
    let data = batch(&mixed_rows());
    for name in ["mlp-ai4i", "logistic-ai4i"] {
        let mut m = model(name, 11);
        // Move off the initial weights so every layer has non-trivial gradients.
        let moved: Vec<f32> = m.flat().iter().map(|w| w * 1.5 + 0.01).collect();
        m.set_from_flat(&moved).unwrap();
        let a = per_example::batched(&mut m, &data.x, &data.y, 3.0).unwrap();
        let b = per_example::one_at_a_time(&mut m, &data.x, &data.y, 3.0).unwrap();
        assert_eq!((a.rows, a.dim), (64, m.numel()), "{name}");
        assert_eq!((b.rows, b.dim), (a.rows, a.dim), "{name}");
        let worst = a
            .values
            .iter()
            .zip(&b.values)
            .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1.0))
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-6,
            "{name}: per-example gradients differ by {worst}"
        );
        for (na, nb) in a.norms().iter().zip(b.norms()) {
            assert!(close(*na, nb), "{name}: norms {na} and {nb}");
            assert!(*na > 0.0);
        }
        // Examples differ (the per-example rows are not one gradient repeated).
        assert!(a.row(0) != a.row(63));
        // The per-example gradients sum to torch's gradient of the summed loss.
        let pw = Tensor::from_slice(&[3.0f32]);
        let l = m
            .forward(&data.x)
            .unwrap()
            .binary_cross_entropy_with_logits::<Tensor>(&data.y, None, Some(pw), Reduction::Sum);
        let params: Vec<Tensor> = m.params().iter().map(Tensor::shallow_clone).collect();
        let reference: Vec<f32> = Tensor::run_backward(&[l], &params, false, false)
            .iter()
            .flat_map(|g| Vec::<f32>::try_from(g.flatten(0, -1)).unwrap())
            .collect();
        for (j, r) in reference.iter().enumerate() {
            let s: f64 = (0..a.rows).map(|i| f64::from(a.row(i)[j])).sum();
            assert!(
                (s - f64::from(*r)).abs() <= 1e-4 * f64::from(r.abs()).max(1.0),
                "{name}: coordinate {j}: {s} vs {r}"
            );
        }
    }
}

#[test]
fn clipped_norms_stay_within_c_and_rounded_norms_within_delta() {
    let _g = lock();
    let data = batch(&mixed_rows());
    let mut m = model("mlp-ai4i", 3);
    let grads = per_example::batched(&mut m, &data.x, &data.y, 3.0).unwrap();
    let raw = grads.norms();
    let clip = 0.05;
    assert!(
        raw.iter().filter(|&&n| n > clip).count() >= 32,
        "clipping must bind"
    );
    for gamma in [1e-5, 1e-3, 1e-2] {
        let delta = sensitivity(clip, gamma, grads.dim);
        let r = clip_round_sum(&grads, clip, gamma).unwrap();
        for (i, (c, k)) in r.clipped_norms.iter().zip(&r.rounded_norms).enumerate() {
            assert!(*c <= clip, "example {i}: clipped norm {c} > {clip}");
            assert!(*k <= delta, "example {i}: rounded norm {k} > {delta}");
            if raw[i] <= clip {
                assert!(close(*c, raw[i]), "an unclipped gradient keeps its norm");
            }
        }
        // The sum is the sum of the rounded examples, in integers.
        let one = PerExample {
            rows: 1,
            dim: grads.dim,
            values: grads.row(5).to_vec(),
        };
        let r5 = clip_round_sum(&one, clip, gamma).unwrap();
        assert!(r5.sum.iter().any(|&k| k != 0));
    }
    // The attacker's best gradients for the rounding bound: every coordinate just above a
    // half-grid point (each rounds away from zero by almost γ/2) with the norm just under C,
    // and a gradient far beyond C on one coordinate.
    let (d, gamma) = (grads.dim, 1e-3);
    let delta = sensitivity(clip, gamma, d);
    let half: Vec<f32> = (0..d)
        .map(|j| {
            let v = (gamma * 0.500001) as f32;
            if j % 2 == 0 { v } else { -v }
        })
        .collect();
    let hostile = PerExample {
        rows: 3,
        dim: d,
        values: half
            .iter()
            .copied()
            .chain((0..d).map(|j| if j == 8 { 1e30 } else { 0.0 }))
            .chain((0..d).map(|j| if j == 8 { -1e30 } else { 1e-30 }))
            .collect(),
    };
    assert!(hostile.norms()[0] <= clip);
    let r = clip_round_sum(&hostile, clip, gamma).unwrap();
    assert!(r.rounded_norms[0] > clip, "rounding grew the norm past C");
    for k in &r.rounded_norms {
        assert!(*k <= delta, "{k} > {delta}");
    }
    assert_eq!(r.sum[8], 1 + 50 - 50);
    // Parameters out of range and inconsistent shapes are refused, not trusted.
    assert!(matches!(
        clip_round_sum(&hostile, clip, 1e-12),
        Err(RecordDpError::GridTooFine { .. })
    ));
    assert!(matches!(
        clip_round_sum(&hostile, f64::INFINITY, gamma),
        Err(RecordDpError::ClipNorm(_))
    ));
    // A subnormal grid with C/γ in range: 1/γ is infinite, and an all-zero gradient would
    // scale to NaN in every coordinate of the sum. Refused, in the function and the config.
    let mut zero_row = hostile.clone();
    zero_row.values[..d].iter_mut().for_each(|v| *v = 0.0);
    assert!(matches!(
        clip_round_sum(&zero_row, 1e-306, 1e-310),
        Err(RecordDpError::Gamma(_))
    ));
    let tiny = RecordDpConfig {
        clip: 1e-306,
        gamma: 1e-310,
        ..config()
    };
    assert!(matches!(tiny.validate(), Err(RecordDpError::Gamma(_))));
    let short = PerExample {
        rows: 4,
        ..hostile.clone()
    };
    assert!(matches!(
        clip_round_sum(&short, clip, gamma),
        Err(RecordDpError::GradientShape { rows: 4, .. })
    ));
    // A record with a non-finite gradient contributes nothing; the step goes on with the
    // others' sum (refusing it would reveal whether that record was drawn).
    let mut nan = hostile.clone();
    nan.values[d + 3] = f32::NAN;
    let with_nan = clip_round_sum(&nan, clip, gamma).unwrap();
    assert_eq!(with_nan.dropped, 1);
    let mut zeroed = hostile.clone();
    zeroed.values[d..2 * d].iter_mut().for_each(|v| *v = 0.0);
    let without = clip_round_sum(&zeroed, clip, gamma).unwrap();
    assert_eq!(with_nan.sum, without.sum, "the NaN record changed the sum");
}

/// χ² statistic of `counts` (per value) against `pmf`, tail bins pooled until each expects ≥ 5;
/// returns (statistic, degrees of freedom).
fn chi_squared(counts: &[u64], pmf: &[f64], total: f64) -> (f64, f64) {
    let (mut bins, mut obs, mut exp) = (Vec::new(), 0.0, 0.0);
    for (c, p) in counts.iter().zip(pmf) {
        obs += *c as f64;
        exp += p * total;
        if exp >= 5.0 {
            bins.push((obs, exp));
            (obs, exp) = (0.0, 0.0);
        }
    }
    if let Some(last) = bins.last_mut() {
        last.0 += obs;
        last.1 += exp;
    }
    let stat = bins.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
    (stat, bins.len() as f64 - 1.0)
}

/// Upper-tail probability of χ²(df) at `stat`.
fn p_value(stat: f64, df: f64) -> f64 {
    1.0 - ChiSquared::new(df).unwrap().cdf(stat)
}

fn binomial_pmf(n: usize, q: f64) -> Vec<f64> {
    let mut pmf = vec![0.0; n + 1];
    let ln = |k: usize| (1..=k).map(|i| (i as f64).ln()).sum::<f64>();
    for (k, p) in pmf.iter_mut().enumerate() {
        let lc = ln(n) - ln(k) - ln(n - k);
        *p = (lc + k as f64 * q.ln() + (n - k) as f64 * (1.0 - q).ln()).exp();
    }
    pmf
}

#[test]
fn sample_sizes_follow_binomial_n_q() {
    // Fixed number of steps; the test fails by chance with probability 1e-4 per χ² check.
    let _g = lock();
    let rows: Vec<Row> = all_rows().into_iter().take(120).collect();
    let data = batch(&rows);
    let mut m = model("logistic-ai4i", 5);
    let cfg = RecordDpConfig {
        q: 0.25,
        steps: 4000,
        lr: 1e-3,
        momentum: 0.0,
        ..config()
    };
    let mut coins = PoissonCoins::from_os().unwrap();
    let run = dp_sgd_train(&mut m, &data, &cfg, &mut coins).unwrap();
    assert_eq!(run.batch_sizes.len(), 4000);
    let mut counts = vec![0u64; 121];
    for &b in &run.batch_sizes {
        counts[b] += 1;
    }
    let (stat, df) = chi_squared(&counts, &binomial_pmf(120, 0.25), 4000.0);
    let p = p_value(stat, df);
    assert!(df >= 10.0 && p >= 1e-4, "chi2 {stat} at {df} df: p = {p}");
    // A fixed-size batch of the mean (30) fails the same test.
    let mut fixed = vec![0u64; 121];
    fixed[30] = 4000;
    let (stat, df) = chi_squared(&fixed, &binomial_pmf(120, 0.25), 4000.0);
    assert!(p_value(stat, df) < 1e-4);
    // Each record's inclusion count is Binomial(steps, q) too, independently of its position.
    let mut coins = PoissonCoins::from_os().unwrap();
    let mut per_record = vec![0u64; 40];
    for _ in 0..2000 {
        for i in coins.sample(40, 0.1) {
            per_record[i as usize] += 1;
        }
    }
    let e = 2000.0 * 0.1;
    let stat: f64 = per_record
        .iter()
        .map(|&c| (c as f64 - e).powi(2) / (e * 0.9))
        .sum();
    let p = p_value(stat, 40.0);
    assert!(p >= 1e-4, "per-record chi2 {stat} at 40 df: p = {p}");
}

#[test]
fn torch_generator_neither_drives_nor_is_consumed_by_the_sampling() {
    let _g = lock();
    let rows: Vec<Row> = all_rows().into_iter().take(200).collect();
    let data = batch(&rows);
    let cfg = RecordDpConfig {
        q: 0.1,
        steps: 50,
        ..config()
    };
    let run = |torch_seed: i64| {
        let mut m = model("mlp-ai4i", 5);
        tch::manual_seed(torch_seed);
        let mut coins = PoissonCoins::from_seed([9; 32]);
        let r = dp_sgd_train(&mut m, &data, &cfg, &mut coins).unwrap();
        // Had the run drawn from torch's generator, this draw would differ from a fresh one.
        let after = Tensor::rand([4], (Kind::Float, tch::Device::Cpu));
        tch::manual_seed(torch_seed);
        let fresh = Tensor::rand([4], (Kind::Float, tch::Device::Cpu));
        assert_eq!(
            Vec::<f32>::try_from(after).unwrap(),
            Vec::<f32>::try_from(fresh).unwrap(),
            "the run consumed torch's generator"
        );
        r.batch_sizes
    };
    let a = run(1);
    assert_eq!(a, run(2), "torch's seed changed the samples");
    assert!(a.iter().any(|&b| b != a[0]), "sample sizes vary");
    // The coins themselves: the same key gives the same samples whatever torch's seed.
    tch::manual_seed(3);
    let s1 = PoissonCoins::from_seed([4; 32]).sample(1000, 0.3);
    tch::manual_seed(4);
    assert_eq!(s1, PoissonCoins::from_seed([4; 32]).sample(1000, 0.3));
    // Two OS-keyed streams differ.
    let (mut x, mut y) = (
        PoissonCoins::from_os().unwrap(),
        PoissonCoins::from_os().unwrap(),
    );
    assert_ne!(x.sample(1000, 0.5), y.sample(1000, 0.5));
}

/// Asserts `z` has mean 0 and variance `s2` within 4.5 standard errors (normal approximation:
/// Var(z²) ≈ 2σ⁴ for a Gaussian; the discrete Gaussian's moments at σ ≥ 1 match to 1e-20).
fn assert_moments(z: &[i64], s2: f64) {
    let m = z.len() as f64;
    let mean = z.iter().map(|&v| v as f64).sum::<f64>() / m;
    let var = z.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / m;
    assert!(mean.abs() <= 4.5 * (s2 / m).sqrt(), "mean {mean}");
    assert!(
        (var - s2).abs() <= 4.5 * s2 * (2.0 / m).sqrt(),
        "variance {var}, want {s2}"
    );
}

#[test]
fn noise_on_a_zero_sum_has_variance_sigma_over_gamma_squared() {
    let _g = lock();
    let mut z = vec![0i64; 40_000];
    add_discrete_gaussian(&mut z, 3.0).unwrap();
    assert_moments(&z, 9.0);
    // Through the trainer: an empty sample (q·N = 1e-7) still gets noise of scale σ/γ = 3,
    // and the update is −lr·γ/E|B| times it (E|B| = 1, the public expected batch).
    let rows: Vec<Row> = all_rows().into_iter().take(100).collect();
    let data = batch(&rows);
    let mut m = model("mlp-ai4i", 8);
    let cfg = RecordDpConfig {
        q: 1e-9,
        clip: 1.0,
        sigma: 3e-3,
        gamma: 1e-3,
        steps: 1,
        expected_batch: 1.0,
        lr: 0.1,
        momentum: 0.0,
        pos_weight: 3.0,
    };
    let run = dp_sgd_train(&mut m, &data, &cfg, &mut PoissonCoins::from_os().unwrap()).unwrap();
    assert_eq!(run.batch_sizes, [0]);
    // Each update value is −1e-4·z for an integer z (f32 error far below 0.5e-4).
    let z: Vec<i64> = run
        .update
        .iter()
        .map(|u| (-f64::from(*u) * 1e4).round() as i64)
        .collect();
    for (u, k) in run.update.iter().zip(&z) {
        assert!((f64::from(*u) + 1e-4 * *k as f64).abs() < 1e-6);
    }
    assert_moments(&z, 9.0);
    assert!(close(
        run.mechanism.noise_multiplier,
        3e-3 / sensitivity(1.0, 1e-3, 2881)
    ));
}

/// Recognizes the error a refused configuration must give.
type Expect = fn(&RecordDpError) -> bool;

#[test]
fn batch_norm_and_out_of_range_configurations_are_refused_without_a_change() {
    let _g = lock();
    let data = batch(&mixed_rows());
    let mut m = model("mlp-ai4i", 2);
    let before = m.flat();
    let _bn = tch::nn::batch_norm1d(m.vs.root() / "bn", 64, Default::default());
    let mut coins = PoissonCoins::from_os().unwrap();
    let err = dp_sgd_train(&mut m, &data, &config(), &mut coins).unwrap_err();
    assert!(
        matches!(&err, RecordDpError::Model(ModelError::BatchNorm(s)) if s.contains("bn.running_")),
        "{err}"
    );
    assert_eq!(m.flat(), before);

    let mut m = model("logistic-ai4i", 2);
    let before = m.flat();
    let bad: [(RecordDpConfig, Expect); 11] = [
        (RecordDpConfig { q: 0.0, ..config() }, |e| {
            matches!(e, RecordDpError::SamplingRate(_))
        }),
        (RecordDpConfig { q: 1.5, ..config() }, |e| {
            matches!(e, RecordDpError::SamplingRate(_))
        }),
        (
            RecordDpConfig {
                clip: f64::NAN,
                ..config()
            },
            |e| matches!(e, RecordDpError::ClipNorm(_)),
        ),
        (
            RecordDpConfig {
                sigma: 0.0,
                ..config()
            },
            |e| matches!(e, RecordDpError::Sigma(_)),
        ),
        (
            RecordDpConfig {
                gamma: -1.0,
                ..config()
            },
            |e| matches!(e, RecordDpError::Gamma(_)),
        ),
        (
            RecordDpConfig {
                gamma: 1e-12,
                ..config()
            },
            |e| matches!(e, RecordDpError::GridTooFine { what: "C", .. }),
        ),
        (
            RecordDpConfig {
                steps: 0,
                ..config()
            },
            |e| matches!(e, RecordDpError::Steps(0)),
        ),
        (
            RecordDpConfig {
                lr: 11.0,
                ..config()
            },
            |e| matches!(e, RecordDpError::LearningRate(_)),
        ),
        (
            RecordDpConfig {
                momentum: 1.0,
                ..config()
            },
            |e| matches!(e, RecordDpError::Momentum(_)),
        ),
        (
            RecordDpConfig {
                pos_weight: f64::INFINITY,
                ..config()
            },
            |e| matches!(e, RecordDpError::PosWeight(_)),
        ),
        (
            RecordDpConfig {
                sigma: 1e10,
                gamma: 1e-3,
                ..config()
            },
            |e| matches!(e, RecordDpError::GridTooFine { what: "sigma", .. }),
        ),
    ];
    for (cfg, want) in bad {
        let err = dp_sgd_train(&mut m, &data, &cfg, &mut coins).unwrap_err();
        assert!(want(&err), "{cfg:?}: {err}");
        assert_eq!(m.flat(), before);
    }
    let empty = batch(&[]);
    assert!(matches!(
        dp_sgd_train(&mut m, &empty, &config(), &mut coins),
        Err(RecordDpError::Records(0))
    ));
    assert_eq!(m.flat(), before);
}

#[test]
fn one_step_at_q_one_without_clipping_is_a_full_batch_gradient_step() {
    let _g = lock();
    let data = batch(&mixed_rows());
    for name in ["mlp-ai4i", "logistic-ai4i"] {
        let mut m = model(name, 4);
        let w0 = m.flat();
        let cfg = RecordDpConfig {
            q: 1.0,
            clip: 100.0,
            sigma: 1e-9,
            gamma: 1e-6,
            steps: 1,
            expected_batch: 64.0,
            lr: 0.01,
            momentum: 0.0,
            pos_weight: 3.0,
        };
        let run = dp_sgd_train(&mut m, &data, &cfg, &mut PoissonCoins::from_os().unwrap()).unwrap();
        assert_eq!(run.batch_sizes, [64]);
        // Reference: torch's gradient of the mean loss at w0.
        let mut r = model(name, 4);
        r.set_from_flat(&w0).unwrap();
        let pw = Tensor::from_slice(&[3.0f32]);
        let l = r
            .forward(&data.x)
            .unwrap()
            .binary_cross_entropy_with_logits::<Tensor>(&data.y, None, Some(pw), Reduction::Mean);
        let params: Vec<Tensor> = r.params().iter().map(Tensor::shallow_clone).collect();
        let grad: Vec<f32> = Tensor::run_backward(&[l], &params, false, false)
            .iter()
            .flat_map(|g| Vec::<f32>::try_from(g.flatten(0, -1)).unwrap())
            .collect();
        assert!(grad.iter().any(|g| g.abs() > 1e-3));
        for (j, (u, g)) in run.update.iter().zip(&grad).enumerate() {
            assert!(
                (u + 0.01 * g).abs() <= 2e-7,
                "{name} coordinate {j}: {u} vs {}",
                -0.01 * g
            );
        }
    }
}

#[test]
fn dp_sgd_lowers_the_validation_loss() {
    let _g = lock();
    let rows = all_rows();
    let (train, val) = (batch(&rows[..1500]), batch(&rows[1500..2500]));
    for (name, steps) in [("mlp-ai4i", 150), ("logistic-ai4i", 300)] {
        let mut m = model(name, 7);
        let before = loss(&m, &val, 3.0).unwrap();
        let cfg = RecordDpConfig {
            q: 64.0 / 1500.0,
            clip: 1.0,
            sigma: 1e-6,
            gamma: 1e-6,
            steps,
            expected_batch: 64.0,
            lr: 0.1,
            momentum: 0.9,
            pos_weight: 3.0,
        };
        let run =
            dp_sgd_train(&mut m, &train, &cfg, &mut PoissonCoins::from_os().unwrap()).unwrap();
        let after = loss(&m, &val, 3.0).unwrap();
        println!("{name}: validation loss {before:.4} -> {after:.4}");
        assert!(after < 0.8 * before, "{name}: {before} -> {after}");
        assert!(run.update.iter().all(|u| u.is_finite()));
        assert_eq!(run.mechanism.steps, steps);
    }
}

#[test]
#[ignore = "measurement: prints the per-example time of both paths for the MLP and a step's noise time"]
fn per_example_time_of_both_paths() {
    let _g = lock();
    let rows: Vec<Row> = all_rows().into_iter().take(256).collect();
    let data = batch(&rows);
    let mut m = model("mlp-ai4i", 1);
    for _ in 0..3 {
        per_example::batched(&mut m, &data.x, &data.y, 3.0).unwrap();
    }
    let reps = 20;
    let t = std::time::Instant::now();
    for _ in 0..reps {
        per_example::batched(&mut m, &data.x, &data.y, 3.0).unwrap();
    }
    let batched = t.elapsed().as_secs_f64() / (reps * 256) as f64;
    let t = std::time::Instant::now();
    for _ in 0..2 {
        per_example::one_at_a_time(&mut m, &data.x, &data.y, 3.0).unwrap();
    }
    let single = t.elapsed().as_secs_f64() / (2 * 256) as f64;
    // The exact noise of one step (d = 2,881 samples), for comparison.
    let t = std::time::Instant::now();
    let mut z = vec![0i64; m.numel()];
    add_discrete_gaussian(&mut z, 10.0).unwrap();
    println!(
        "exact discrete Gaussian noise of one step (d = {}, sigma/gamma = 10): {:.1} ms",
        m.numel(),
        t.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "mlp-ai4i, batches of 256, one torch thread: batched {:.2} us/example, one at a time {:.2} us/example ({:.1}x)",
        batched * 1e6,
        single * 1e6,
        single / batched
    );
}
