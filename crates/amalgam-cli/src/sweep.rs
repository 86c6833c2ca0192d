//! `amalgam sweep`: the site-level ε-versus-F1 curve. Each point is a noise level σ; for each
//! seed (its own split and initial weights) a whole campaign runs through real site agents —
//! ε ledger, DDG encoding and noise, pairwise masking, the model chain — over the in-memory
//! aggregator (`amalgam_train::secure_campaign`), and the point is the mean over seeds with a
//! 95 % interval. ε is what the plants' ledgers spent, at the campaign's δ.

use std::path::PathBuf;

mod record;

use amalgam_report::CurvePoint;
use amalgam_train::builtin::builtin;
use amalgam_train::campaign::Recipe;
use amalgam_train::secure_campaign::{Protocol, SecureCampaign, run_secure_campaign};
use amalgam_train::site_trainer::SiteRecipe;
use amalgam_train::split::{SplitConfig, SplitKind, split};
use amalgam_train::summary::interval;
use serde::Serialize;

use crate::train::{Format, SplitArg};

/// Options of `amalgam sweep`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Training recipe (TOML): local optimizer, learning rate, batch size, server rate,
    /// evaluation interval, rounds.
    #[arg(long, default_value = "configs/campaign-default.toml")]
    config: PathBuf,
    /// CSV in the AI4I schema.
    #[arg(long, default_value = "data/ai4i2020.csv")]
    data: PathBuf,
    /// The built-in model every plant trains.
    #[arg(long, default_value = "mlp-ai4i")]
    model: String,
    /// Number of plants.
    #[arg(long, default_value_t = 8)]
    plants: usize,
    /// How rows are dealt to plants.
    #[arg(long, value_enum, default_value = "type")]
    split: SplitArg,
    /// Central noise levels σ, comma-separated, in update units (0 = no differential privacy;
    /// default 0,0.5,1,2).
    #[arg(long)]
    sigmas: Option<String>,
    /// The record-level curve instead: target ε per plant over the whole campaign,
    /// comma-separated (`inf` = no record-level DP, the non-private reference).
    #[arg(long, conflicts_with = "sigmas")]
    record_epsilons: Option<String>,
    /// DP-SGD recipe of the record-level curve (TOML).
    #[arg(long, default_value = "configs/record-dp-recipe.toml")]
    record_config: PathBuf,
    /// Override the recipe's Poisson sampling rate q.
    #[arg(long)]
    record_q: Option<f64>,
    /// Override the recipe's per-example clip norm C_rec.
    #[arg(long)]
    record_clip: Option<f64>,
    /// Override the recipe's local learning rate (record-level curve).
    #[arg(long)]
    record_lr: Option<f64>,
    /// L2 clip norm C of each plant's update.
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// δ of the site-level accounting.
    #[arg(long, default_value_t = 1e-6)]
    delta: f64,
    /// Bits per value of the encoding.
    #[arg(long, default_value_t = 20)]
    bits: u32,
    /// Colluding plants c tolerated (the masking threshold and n_min = t − c, as in a
    /// manifest; `amalgam simulate` uses the same default).
    #[arg(long, default_value_t = 1)]
    colluders: u16,
    /// Seeds per point (each its own split and initial weights).
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Override the recipe's number of rounds.
    #[arg(long)]
    rounds: Option<u32>,
    /// Optimizer steps per round at every plant (default: one pass over the average plant's
    /// training rows at the recipe's batch size, times its local epochs).
    #[arg(long)]
    local_steps: Option<u32>,
    /// Write the points and every run as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output format of stdout.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// One campaign of the sweep.
#[derive(Debug, Serialize)]
struct Run {
    sigma: f64,
    seed: u64,
    epsilon: Option<f64>,
    f1: f64,
    auprc: f64,
    best_round: u64,
    seconds: f64,
    /// Set when a plant's training diverged and the campaign ended early.
    stopped: Option<amalgam_train::secure_campaign::Stopped>,
}

/// What `--out` holds.
#[derive(Debug, Serialize)]
struct SweepFile {
    model: String,
    plants: usize,
    rounds: u32,
    local_steps: u32,
    clip: f64,
    delta: f64,
    bits: u32,
    protocol: Protocol,
    points: Vec<CurvePoint>,
    runs: Vec<Run>,
}

fn parse_sigmas(text: &str) -> Result<Vec<f64>, String> {
    let v: Vec<f64> = text
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--sigmas: {e}"))?;
    if v.is_empty() || v.len() > 32 || v.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
        return Err("--sigmas takes 1 to 32 finite values >= 0".into());
    }
    Ok(v)
}

/// Runs `amalgam sweep`.
pub fn run(args: &Args) -> Result<(), crate::Failure> {
    use crate::Failure;
    let sigmas =
        parse_sigmas(args.sigmas.as_deref().unwrap_or("0,0.5,1,2")).map_err(Failure::usage)?;
    if args.seeds == 0 || args.seeds > 100 {
        return Err(Failure::usage("--seeds must be 1..=100"));
    }
    let b = builtin(&args.model).map_err(|e| Failure::usage(e.to_string()))?;
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| Failure::failed(format!("{}: {e}", args.config.display())))?;
    let recipe = Recipe::from_toml(&text).map_err(Failure::failed)?;
    let rows = amalgam_train::data::read_csv(&args.data)
        .map_err(|e| Failure::failed(format!("{}: {e}", args.data.display())))?;
    let kind = match args.split {
        SplitArg::Type => SplitKind::Type,
        SplitArg::Mode => SplitKind::Mode,
        SplitArg::ModeExclusive => SplitKind::ModeExclusive,
    };
    if let Some(eps) = &args.record_epsilons {
        return run_record(args, eps, &recipe, b, &rows, kind);
    }
    let rounds = args
        .rounds
        .unwrap_or(u32::try_from(recipe.federated.rounds).unwrap_or(u32::MAX));
    let l = &recipe.local;
    let site_recipe = SiteRecipe {
        optimizer: l.optimizer,
        lr: l.lr,
        momentum: l.momentum,
        batch_size: l.batch_size,
        prox_mu: 0.0,
        pos_weight: b.pos_weight,
    };
    let mut runs = Vec::new();
    let mut points = Vec::new();
    let mut protocol = Protocol::default();
    let mut steps_used = 0;
    for &sigma in &sigmas {
        let mut f1s = Vec::new();
        let mut auprcs = Vec::new();
        let mut eps: Option<f64> = None;
        for seed in args.first_seed..args.first_seed.saturating_add(args.seeds) {
            let cfg = SplitConfig {
                plants: args.plants,
                kind,
                seed,
                ..SplitConfig::default()
            };
            let s = split(&rows, &cfg).map_err(|e| Failure::usage(e.to_string()))?;
            let mean_rows =
                s.plants.iter().map(|p| p.train.len()).sum::<usize>() / s.plants.len().max(1);
            let local_steps = args.local_steps.unwrap_or_else(|| {
                let per_epoch = mean_rows.div_ceil(l.batch_size.max(1)).max(1);
                u32::try_from(per_epoch * l.epochs.max(1)).unwrap_or(u32::MAX)
            });
            steps_used = local_steps;
            let c = SecureCampaign {
                builtin: b.clone(),
                recipe: site_recipe,
                local_steps,
                rounds,
                server_lr: recipe.federated.server_lr,
                clip: args.clip,
                sigma: (sigma > 0.0).then_some(sigma),
                record: None,
                delta: args.delta,
                bits: args.bits,
                colluders: args.colluders,
                threshold: None,
                eval_every: u32::try_from(recipe.federated.eval_every)
                    .unwrap_or(1)
                    .clamp(1, rounds.max(1)),
                seed,
                keep_trace: false,
            };
            let started = std::time::Instant::now();
            let out =
                run_secure_campaign(&rows, &s, &c).map_err(|e| Failure::failed(e.to_string()))?;
            protocol = out.protocol;
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "sigma {sigma} seed {seed}: F1 {:.3} AUPRC {:.3} epsilon {} ({seconds:.0} s){}",
                out.test.f1,
                out.test.auprc,
                out.epsilon.map_or("inf".into(), |e| format!("{e:.2}")),
                out.stopped.as_ref().map_or(String::new(), |s| format!(
                    "; stopped at round {}: plant {}: {}",
                    s.round, s.plant, s.message
                ))
            );
            f1s.push(out.test.f1);
            auprcs.push(out.test.auprc);
            eps = match (eps, out.epsilon) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (_, e) => e,
            };
            runs.push(Run {
                sigma,
                seed,
                epsilon: out.epsilon,
                f1: out.test.f1,
                auprc: out.test.auprc,
                best_round: out.best_round,
                seconds,
                stopped: out.stopped.clone(),
            });
        }
        let f1 = interval(&f1s).ok_or_else(|| Failure::failed("no run"))?;
        let ap = interval(&auprcs).ok_or_else(|| Failure::failed("no run"))?;
        points.push(CurvePoint {
            sigma,
            epsilon: eps,
            f1: f1.mean,
            f1_ci95: f1.ci95,
            auprc: ap.mean,
            seeds: f1s.len() as u32,
            real_processes: false,
        });
    }
    let file = SweepFile {
        model: args.model.clone(),
        plants: args.plants,
        rounds,
        local_steps: steps_used,
        clip: args.clip,
        delta: args.delta,
        bits: args.bits,
        protocol,
        points,
        runs,
    };
    let json = serde_json::to_string_pretty(&file).map_err(|e| Failure::failed(e.to_string()))?;
    if let Some(path) = &args.out {
        std::fs::write(path, &json)
            .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
    }
    match args.format {
        Format::Json => println!("{json}"),
        Format::Text => {
            println!(
                "site-level DP sweep: {} plants, {rounds} rounds, {steps_used} local steps, C = {}, delta = {}, t = {} c = {} m = {} n_min = {}",
                args.plants,
                args.clip,
                args.delta,
                protocol.threshold,
                protocol.colluders,
                protocol.min_cohort,
                protocol.n_min
            );
            println!("sigma    epsilon      F1 (95% CI)        AUPRC   seeds");
            for p in &file.points {
                println!(
                    "{:<8} {:<12} {:.3} ± {:.3}      {:.3}   {}",
                    p.sigma,
                    p.epsilon.map_or("inf".into(), |e| format!("{e:.2}")),
                    p.f1,
                    p.f1_ci95,
                    p.auprc,
                    p.seeds
                );
            }
        }
    }
    Ok(())
}

/// The record-level curve (`--record-epsilons`).
fn run_record(
    args: &Args,
    epsilons: &str,
    local_recipe: &Recipe,
    b: amalgam_train::builtin::Builtin,
    rows: &[amalgam_train::data::Row],
    kind: SplitKind,
) -> Result<(), crate::Failure> {
    use crate::Failure;
    let epsilons = record::parse_epsilons(epsilons).map_err(Failure::usage)?;
    let mut r = record::read_recipe(&args.record_config)?;
    r.q = args.record_q.unwrap_or(r.q);
    r.clip = args.record_clip.unwrap_or(r.clip);
    r.lr = args.record_lr.unwrap_or(r.lr);
    r.rounds = args.rounds.unwrap_or(r.rounds);
    r.local_steps = args.local_steps.unwrap_or(r.local_steps);
    if args.delta != 1e-6 {
        r.delta = args.delta;
    }
    let s = record::RecordSweep {
        epsilons,
        recipe: r,
        local_recipe,
        builtin: b,
        plants: args.plants,
        kind,
        seeds: args.first_seed..args.first_seed.saturating_add(args.seeds),
        colluders: args.colluders,
        bits: args.bits,
        clip: args.clip,
    };
    let (json, text) = record::run(rows, &s, &args.config)?;
    if let Some(path) = &args.out {
        std::fs::write(path, &json)
            .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
    }
    match args.format {
        Format::Json => println!("{json}"),
        Format::Text => print!("{text}"),
    }
    Ok(())
}
