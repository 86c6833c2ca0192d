//! Record-level DP-SGD against non-private local training, on the built-in models.
//!
//! The requirement: DP-SGD costs at most 3x the non-private local training time at the same
//! expected batch size and number of steps. For `mlp-ai4i` and `logistic-ai4i`, one torch
//! thread, the first `ROWS` rows of AI4I as one plant:
//!
//! * floor: one site round without record DP — [`PlantTrainer`] through the site agent's
//!   [`Trainer`] interface, `STEPS = ROWS / 64` SGD steps on shuffled batches of 64;
//! * DP-SGD: [`dp_sgd_train`] over the same rows, q = 64 / ROWS (the same expected batch) and
//!   the same steps: coins, per-example gradients, clip and round, discrete Gaussian noise
//!   from the table sampler the trainer uses (built once per run), update.
//!
//! The breakdown cases time each part of a DP-SGD run alone, `STEPS` times, so the reader sees
//! where the time goes: the per-example gradients of a 64-row sample, clipping and rounding
//! them, the noise of one step's sum, and the Poisson coins.

use std::hint::black_box;

use amalgam_benches::{append_record, criterion_median_ns, heavy_criterion, report_ratio};
use amalgam_site::model::model_digest;
use amalgam_site::{GlobalModel, Permits, RoundInfo, Trainer};
use amalgam_train::builtin::{Builtin, builtin};
use amalgam_train::data::{Row, read_csv};
use amalgam_train::dpsgd::noise::{RunNoise, clip_round_sum, sampler_for, sensitivity};
use amalgam_train::dpsgd::{PoissonCoins, RecordDpConfig, dp_sgd_train, per_example};
use amalgam_train::model::Model;
use amalgam_train::site_trainer::{PlantTrainer, SiteRecipe, Weighting};
use amalgam_train::train::{Batch, OptimizerKind};
use criterion::{Criterion, SamplingMode};
use tch::Tensor;

const GROUP: &str = "dpsgd";
/// Rows of the plant (a plant-sized share of AI4I's 10,000).
const ROWS: usize = 900;
/// Rows per step of the non-private round, and the expected sample of a DP-SGD step.
const BATCH: usize = 64;
/// One epoch: the steps of a site round over `ROWS` rows at `BATCH`.
const STEPS: u32 = (ROWS / BATCH) as u32;
/// Required: DP-SGD at most this many times the non-private round.
const TARGET: f64 = 3.0;
/// Clip norm, grid and noise multiplier of the DP-SGD run (z = 1: a typical operating point;
/// the table sampler's cost per sample hardly depends on σ).
const CLIP: f64 = 1.0;
const GAMMA: f64 = 1e-4;
const NOISE_MULTIPLIER: f64 = 1.0;

fn plant_rows() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/ai4i2020.csv");
    let mut rows = read_csv(std::path::Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
    rows.truncate(ROWS);
    rows
}

fn recipe(b: &Builtin) -> SiteRecipe {
    SiteRecipe {
        optimizer: OptimizerKind::Sgd,
        lr: 0.1,
        momentum: b.momentum,
        batch_size: BATCH,
        prox_mu: 0.0,
        pos_weight: b.pos_weight,
    }
}

fn dp_config(b: &Builtin, dim: usize) -> RecordDpConfig {
    RecordDpConfig {
        q: BATCH as f64 / ROWS as f64,
        clip: CLIP,
        sigma: NOISE_MULTIPLIER * sensitivity(CLIP, GAMMA, dim),
        gamma: GAMMA,
        steps: STEPS,
        expected_batch: BATCH as f64,
        lr: 0.1,
        momentum: b.momentum,
        pos_weight: b.pos_weight,
    }
}

/// The plant's rows as the trainer holds them (the built-in's features).
fn batch(b: &Builtin, rows: &[Row]) -> Batch {
    let f = b.spec.features;
    let refs: Vec<&Row> = rows.iter().collect();
    let labels: Vec<bool> = rows.iter().map(|r| r.failure).collect();
    Batch::new(&f.matrix(&refs), &labels, f.dim())
}

fn id(case: &str, name: &str) -> String {
    format!("{case}_{name}")
}

fn bench_model(c: &mut Criterion, name: &str, rows: &[Row]) {
    let b = builtin(name).unwrap_or_else(|e| panic!("{e}"));
    let (mut model, init): (Model, Vec<f32>) = b.init(7).unwrap_or_else(|e| panic!("{e}"));
    let dim = model.numel();
    let data = batch(&b, rows);
    let cfg = dp_config(&b, dim);
    let mut trainer = PlantTrainer::new(&b, rows, recipe(&b), Weighting::Uniform, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    tch::set_num_threads(1);

    let info = RoundInfo {
        round: 1,
        campaign_digest: [5; 32],
        local_steps: STEPS,
    };
    let permits = Permits {
        round: 1,
        site_steps: 1,
        epsilon_total: f64::INFINITY,
        local_steps: STEPS,
        record: None,
    };
    let global = GlobalModel {
        digest: model_digest(&init),
        values: &init,
    };
    let mut group = c.benchmark_group(GROUP);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(id("floor_local_epoch", name), |bn| {
        bn.iter(|| {
            trainer
                .train(black_box(global), &info, &permits)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    let mut coins = PoissonCoins::from_os().unwrap_or_else(|e| panic!("{e}"));
    group.bench_function(id("dpsgd_epoch", name), |bn| {
        bn.iter(|| {
            model.set_from_flat(&init).unwrap_or_else(|e| panic!("{e}"));
            dp_sgd_train(&mut model, black_box(&data), &cfg, &mut coins)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });

    // Breakdown: each part of a run alone, STEPS times.
    let sel = Tensor::from_slice(&(0..BATCH as i64).collect::<Vec<i64>>());
    let x = data.x.index_select(0, &sel);
    let y = data.y.index_select(0, &sel);
    group.bench_function(id("part_per_example_grads", name), |bn| {
        bn.iter(|| {
            for _ in 0..STEPS {
                let xs = data.x.index_select(0, &sel);
                let ys = data.y.index_select(0, &sel);
                black_box(
                    per_example::batched(&mut model, &xs, &ys, b.pos_weight)
                        .unwrap_or_else(|e| panic!("{e}")),
                );
            }
        })
    });
    let grads =
        per_example::batched(&mut model, &x, &y, b.pos_weight).unwrap_or_else(|e| panic!("{e}"));
    group.bench_function(id("part_clip_round_sum", name), |bn| {
        bn.iter(|| {
            for _ in 0..STEPS {
                black_box(
                    clip_round_sum(black_box(&grads), cfg.clip, cfg.gamma)
                        .unwrap_or_else(|e| panic!("{e}")),
                );
            }
        })
    });
    let mut sum = vec![0i64; dim];
    let scale = cfg.sigma / cfg.gamma;
    let mut run_noise = RunNoise::new(sampler_for(scale), scale).unwrap_or_else(|e| panic!("{e}"));
    group.bench_function(id("part_noise", name), |bn| {
        bn.iter(|| {
            for _ in 0..STEPS {
                run_noise
                    .add_to(black_box(&mut sum))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        })
    });
    group.bench_function(id("part_coins", name), |bn| {
        bn.iter(|| {
            for _ in 0..STEPS {
                black_box(coins.sample(ROWS, cfg.q));
            }
        })
    });
    group.finish();
}

/// Prints each part's median as a share of the DP-SGD run's and as a multiple of the floor.
fn report_split(name: &str) {
    let (Some(dp), Some(floor)) = (
        criterion_median_ns(GROUP, &id("dpsgd_epoch", name)),
        criterion_median_ns(GROUP, &id("floor_local_epoch", name)),
    ) else {
        return;
    };
    let mut parts = Vec::new();
    let mut accounted = 0.0;
    for (case, label) in [
        ("part_per_example_grads", "per-example grads"),
        ("part_clip_round_sum", "clip/round/sum"),
        ("part_noise", "noise (table sampler)"),
        ("part_coins", "coins"),
    ] {
        if let Some(t) = criterion_median_ns(GROUP, &id(case, name)) {
            accounted += t;
            parts.push(format!(
                "{label} {:.3} ms ({:.0} %, {:.2}x floor)",
                t / 1e6,
                100.0 * t / dp,
                t / floor
            ));
        }
    }
    let rest = dp - accounted;
    parts.push(format!(
        "rest (gathers, update, set weights) {:.3} ms ({:.0} %)",
        rest / 1e6,
        100.0 * rest / dp
    ));
    let line = format!(
        "dpsgd {name} split of {:.3} ms over {STEPS} steps: {}",
        dp / 1e6,
        parts.join(", ")
    );
    println!("{line}");
    append_record(&line);
}

fn main() {
    let rows = plant_rows();
    let mut c = heavy_criterion().configure_from_args();
    for name in ["mlp-ai4i", "logistic-ai4i"] {
        bench_model(&mut c, name, &rows);
    }
    c.final_summary();
    for name in ["mlp-ai4i", "logistic-ai4i"] {
        report_ratio(
            &format!(
                "dpsgd {name}: DP-SGD epoch ({STEPS} steps, q = {BATCH}/{ROWS}) vs non-private local epoch (batch {BATCH})"
            ),
            (GROUP, &id("dpsgd_epoch", name)),
            (GROUP, &id("floor_local_epoch", name)),
            TARGET,
        );
        report_split(name);
    }
}
