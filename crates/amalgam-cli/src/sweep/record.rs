//! `amalgam sweep --record-epsilons`: the record-level ε-versus-F1 curve with the consortium
//! gates (protocol-spec/record-dp.md, "The record-level curve").
//!
//! Each point is a target ε per plant over the whole campaign (`inf`: no record-level DP,
//! the non-private reference); for each seed (its own split and initial weights) a campaign
//! runs through real site agents, every plant training with DP-SGD and charging each local
//! run to its own record ledger, with no site-level noise. For every seed each plant's
//! non-private local-only model is trained on the same split, so gate 2 is a paired
//! comparison.

use std::path::Path;

use amalgam_train::builtin::Builtin;
use amalgam_train::campaign::Recipe;
use amalgam_train::data::Row;
use amalgam_train::record_curve::{
    Gate2Plant, PlantFigures, centralized_baseline, federated_figures, gate2, local_baselines,
    monotone_within_ci,
};
use amalgam_train::secure_campaign::{RecordCampaign, SecureCampaign, run_secure_campaign};
use amalgam_train::site_trainer::SiteRecipe;
use amalgam_train::split::{SplitConfig, SplitKind, split};
use amalgam_train::summary::interval;
use amalgam_train::train::OptimizerKind;
use serde::{Deserialize, Serialize};

use crate::Failure;

/// The DP-SGD recipe of the curve (configs/record-dp-recipe.toml), fixed on validation
/// figures before the final run; it also says how it was chosen.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRecipe {
    /// Poisson sampling rate q of each step.
    pub q: f64,
    /// Per-example clip norm C_rec.
    pub clip: f64,
    /// Local SGD learning rate.
    pub lr: f64,
    /// Local SGD momentum.
    pub momentum: f64,
    /// `pos_weight` of the BCE loss (default: the built-in model's).
    #[serde(default)]
    pub pos_weight: Option<f64>,
    /// Rounds of the campaign.
    pub rounds: u32,
    /// DP-SGD steps per round at every plant.
    pub local_steps: u32,
    /// Server learning rate of the FedAvg step.
    pub server_lr: f64,
    /// Rounds between validation checks (model selection on pooled validation AUPRC).
    pub eval_every: u32,
    /// Record-level δ.
    pub delta: f64,
    /// Configurations tried before this one was fixed (this one included).
    pub configurations_tried: u32,
    /// What the hyperparameters were chosen on, and whether that choice is accounted.
    pub tuning: String,
}

/// The flags of the record-level curve.
pub struct RecordSweep<'a> {
    /// Target ε values; `None` is ∞.
    pub epsilons: Vec<Option<f64>>,
    /// The recipe (after the command line's overrides).
    pub recipe: RecordRecipe,
    /// The non-private recipe of the local-only models.
    pub local_recipe: &'a Recipe,
    /// The built-in model.
    pub builtin: Builtin,
    /// Plants.
    pub plants: usize,
    /// Split kind.
    pub kind: SplitKind,
    /// Seeds.
    pub seeds: std::ops::Range<u64>,
    /// Colluders c of the masking.
    pub colluders: u16,
    /// Bits of the encoding.
    pub bits: u32,
    /// Site-level clip (sizes the encoding; no site-level noise).
    pub clip: f64,
}

/// Parses `1,3,8,inf`.
pub fn parse_epsilons(text: &str) -> Result<Vec<Option<f64>>, String> {
    let v: Vec<Option<f64>> = text
        .split(',')
        .map(|s| match s.trim() {
            "inf" | "∞" => Ok(None),
            t => t
                .parse::<f64>()
                .map(Some)
                .map_err(|e| format!("--record-epsilons: {t}: {e}")),
        })
        .collect::<Result<_, _>>()?;
    if v.is_empty() || v.len() > 16 || v.iter().flatten().any(|e| !(e.is_finite() && *e > 0.0)) {
        return Err("--record-epsilons takes 1 to 16 values > 0 or inf".into());
    }
    Ok(v)
}

/// Reads the recipe file.
pub fn read_recipe(path: &Path) -> Result<RecordRecipe, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
    if text.len() > 64 * 1024 {
        return Err(Failure::failed(format!("{}: over 64 KiB", path.display())));
    }
    toml::from_str(&text).map_err(|e| Failure::failed(format!("{}: {e}", path.display())))
}

/// One campaign.
#[derive(Debug, Serialize)]
struct Run {
    target_epsilon: Option<f64>,
    seed: u64,
    epsilon_spent: Option<f64>,
    noise_multiplier: Option<f64>,
    f1: f64,
    auprc: f64,
    threshold: f32,
    unseen_mode_recall: Option<f64>,
    /// Best pooled validation AUPRC (what model selection and tuning look at).
    val_auprc: f64,
    best_round: u64,
    seconds: f64,
    stopped: Option<amalgam_train::secure_campaign::Stopped>,
}

/// One point of the curve (the field names are read by the report code).
#[derive(Debug, Serialize)]
struct Point {
    target_epsilon: Option<f64>,
    epsilon_spent: Option<f64>,
    noise_multiplier: Option<f64>,
    f1: f64,
    f1_ci95: f64,
    auprc: f64,
    auprc_ci95: f64,
    unseen_mode_recall: Option<f64>,
    unseen_mode_recall_ci95: Option<f64>,
    val_auprc: f64,
    seeds: u32,
}

#[derive(Debug, Serialize)]
struct LocalRun {
    seed: u64,
    plants: Vec<PlantFigures>,
    /// The centralized model's binary F1 and AUPRC on the global test set (same recipe as the
    /// local-only models, on every plant's training rows pooled; non-private).
    centralized_f1: f64,
    centralized_auprc: f64,
}

/// The centralized reference over seeds.
#[derive(Debug, Serialize)]
struct Centralized {
    f1: f64,
    f1_ci95: f64,
    auprc: f64,
    auprc_ci95: f64,
    seeds: u32,
}

#[derive(Debug, Serialize)]
struct Gate2 {
    target_epsilon: f64,
    rule: &'static str,
    pass: bool,
    plants_passing: usize,
    plants: Vec<Gate2Plant>,
}

#[derive(Debug, Serialize)]
struct Gate3 {
    rule: &'static str,
    f1_monotone: bool,
    auprc_monotone: bool,
    pass: bool,
}

#[derive(Debug, Serialize)]
struct Gates {
    gate2: Option<Gate2>,
    gate3: Gate3,
}

#[derive(Debug, Serialize)]
struct CurveFile {
    model: String,
    plants: usize,
    split: &'static str,
    delta: f64,
    recipe: RecordRecipe,
    local_only_recipe: String,
    configurations_tried: u32,
    tuning: String,
    measured: String,
    /// F1 at ε = 3 over the non-private federated F1.
    f1_ratio_eps3_to_nonprivate: Option<f64>,
    /// F1 at ε = 3 over the centralized F1 (the stretch goal is 0.90).
    f1_ratio_eps3_to_centralized: Option<f64>,
    /// The non-private centralized model (local-only recipe, pooled rows), per seed in
    /// `local_only`.
    centralized: Centralized,
    points: Vec<Point>,
    gates: Gates,
    runs: Vec<Run>,
    local_only: Vec<LocalRun>,
}

/// The UTC date of now, `YYYY-MM-DD`.
fn today() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut t = crate::round::utc(ms);
    t.truncate(10);
    t
}

fn split_name(k: SplitKind) -> &'static str {
    match k {
        SplitKind::Type => "type",
        SplitKind::Mode => "mode",
        SplitKind::ModeExclusive => "mode-exclusive",
    }
}

/// Runs the curve; the JSON text and a table for stdout.
pub fn run(
    rows: &[Row],
    s: &RecordSweep,
    local_recipe_path: &Path,
) -> Result<(String, String), Failure> {
    let r = &s.recipe;
    let site_recipe = SiteRecipe {
        optimizer: OptimizerKind::Sgd,
        lr: r.lr,
        momentum: r.momentum,
        batch_size: 64,
        prox_mu: 0.0,
        pos_weight: r.pos_weight.unwrap_or(s.builtin.pos_weight),
    };
    let mut runs = Vec::new();
    let mut locals = Vec::new();
    // fed[e][seed][plant]
    let mut fed: Vec<Vec<Vec<PlantFigures>>> = vec![Vec::new(); s.epsilons.len()];
    for seed in s.seeds.clone() {
        let cfg = SplitConfig {
            plants: s.plants,
            kind: s.kind,
            seed,
            ..SplitConfig::default()
        };
        let sp = split(rows, &cfg).map_err(|e| Failure::usage(e.to_string()))?;
        let started = std::time::Instant::now();
        let local = local_baselines(rows, &sp, s.local_recipe, seed)
            .map_err(|e| Failure::failed(format!("local-only: {e}")))?;
        eprintln!(
            "seed {seed}: local-only F1 {} ({:.0} s)",
            local
                .iter()
                .map(|p| format!("{:.3}", p.f1))
                .collect::<Vec<_>>()
                .join(" "),
            started.elapsed().as_secs_f64()
        );
        let central = centralized_baseline(rows, &sp, s.local_recipe, seed)
            .map_err(|e| Failure::failed(format!("centralized: {e}")))?;
        eprintln!(
            "seed {seed}: centralized F1 {:.3} AUPRC {:.3}",
            central.f1, central.auprc
        );
        locals.push(LocalRun {
            seed,
            plants: local,
            centralized_f1: central.f1,
            centralized_auprc: central.auprc,
        });
        for (e, target) in s.epsilons.iter().enumerate() {
            let c = SecureCampaign {
                builtin: s.builtin.clone(),
                recipe: site_recipe,
                local_steps: r.local_steps,
                rounds: r.rounds,
                server_lr: r.server_lr,
                clip: s.clip,
                sigma: None,
                record: target.map(|epsilon| RecordCampaign {
                    epsilon,
                    delta: r.delta,
                    q: r.q,
                    clip: r.clip,
                    noise_multiplier: None,
                }),
                delta: r.delta,
                bits: s.bits,
                colluders: s.colluders,
                threshold: None,
                eval_every: r.eval_every.clamp(1, r.rounds.max(1)),
                seed,
                keep_trace: false,
            };
            let started = std::time::Instant::now();
            let out =
                run_secure_campaign(rows, &sp, &c).map_err(|e| Failure::failed(e.to_string()))?;
            let seconds = started.elapsed().as_secs_f64();
            let figs = federated_figures(&out.test, &sp);
            let unseen: Vec<f64> = figs.iter().filter_map(|f| f.unseen_mode_recall).collect();
            let unseen =
                (!unseen.is_empty()).then(|| unseen.iter().sum::<f64>() / unseen.len() as f64);
            let val_auprc = out
                .rounds
                .iter()
                .filter_map(|r| r.val_auprc)
                .fold(f64::NEG_INFINITY, f64::max);
            eprintln!(
                "epsilon {} seed {seed}: val AUPRC {val_auprc:.3} | test F1 {:.3} AUPRC {:.3} unseen recall {} spent {} ({seconds:.0} s){}",
                target.map_or("inf".into(), |e| e.to_string()),
                out.test.f1,
                out.test.auprc,
                unseen.map_or("-".into(), |u| format!("{u:.3}")),
                out.record
                    .map_or("-".into(), |x| format!("{:.3}", x.epsilon_spent)),
                out.stopped
                    .as_ref()
                    .map_or(String::new(), |s| format!("; stopped at round {}", s.round))
            );
            runs.push(Run {
                target_epsilon: *target,
                seed,
                epsilon_spent: out.record.map(|x| x.epsilon_spent),
                noise_multiplier: out.record.map(|x| x.noise_multiplier),
                f1: out.test.f1,
                auprc: out.test.auprc,
                threshold: out.test.threshold,
                unseen_mode_recall: unseen,
                val_auprc,
                best_round: out.best_round,
                seconds,
                stopped: out.stopped.clone(),
            });
            fed[e].push(figs);
        }
    }
    let mut points = Vec::new();
    for target in &s.epsilons {
        let mine: Vec<&Run> = runs
            .iter()
            .filter(|x| x.target_epsilon == *target)
            .collect();
        let col = |f: &dyn Fn(&Run) -> Option<f64>| -> Vec<f64> {
            mine.iter().filter_map(|x| f(x)).collect()
        };
        let f1 = interval(&col(&|x| Some(x.f1))).ok_or_else(|| Failure::failed("no run"))?;
        let ap = interval(&col(&|x| Some(x.auprc))).ok_or_else(|| Failure::failed("no run"))?;
        let va = interval(&col(&|x| Some(x.val_auprc))).ok_or_else(|| Failure::failed("no run"))?;
        let un = interval(&col(&|x| x.unseen_mode_recall));
        let spent = col(&|x| x.epsilon_spent);
        let z = col(&|x| x.noise_multiplier);
        points.push(Point {
            target_epsilon: *target,
            epsilon_spent: (!spent.is_empty()).then(|| spent.iter().copied().fold(0.0, f64::max)),
            noise_multiplier: (!z.is_empty()).then(|| z.iter().copied().fold(0.0, f64::max)),
            f1: f1.mean,
            f1_ci95: f1.ci95,
            auprc: ap.mean,
            auprc_ci95: ap.ci95,
            unseen_mode_recall: un.map(|i| i.mean),
            unseen_mode_recall_ci95: un.map(|i| i.ci95),
            val_auprc: va.mean,
            seeds: mine.len() as u32,
        });
    }
    let local_figs: Vec<Vec<PlantFigures>> = locals.iter().map(|l| l.plants.clone()).collect();
    let gate2 = s.epsilons.iter().position(|e| *e == Some(8.0)).map(|e| {
        let plants = gate2(&fed[e], &local_figs);
        let passing = plants.iter().filter(|p| p.pass).count();
        Gate2 {
            target_epsilon: 8.0,
            rule: "per plant, paired over seeds on the same split: mean (federated DP - non-private local-only) recall on the plant's never-seen modes > 0 and mean F1 difference on the global test set >= 0, each at the threshold chosen on validation",
            pass: passing == plants.len() && !plants.is_empty(),
            plants_passing: passing,
            plants,
        }
    });
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        let k = |p: &Point| p.target_epsilon.unwrap_or(f64::INFINITY);
        k(&points[a]).total_cmp(&k(&points[b]))
    });
    let f1m = monotone_within_ci(
        &order
            .iter()
            .map(|&i| (points[i].f1, points[i].f1_ci95))
            .collect::<Vec<_>>(),
    )
    .is_ok();
    let apm = monotone_within_ci(
        &order
            .iter()
            .map(|&i| (points[i].auprc, points[i].auprc_ci95))
            .collect::<Vec<_>>(),
    )
    .is_ok();
    let at = |e: Option<f64>| points.iter().find(|p| p.target_epsilon == e).map(|p| p.f1);
    let ratio = match (at(Some(3.0)), at(None)) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let cf1 = interval(&locals.iter().map(|l| l.centralized_f1).collect::<Vec<_>>())
        .ok_or_else(|| Failure::failed("no centralized run"))?;
    let cap = interval(
        &locals
            .iter()
            .map(|l| l.centralized_auprc)
            .collect::<Vec<_>>(),
    )
    .ok_or_else(|| Failure::failed("no centralized run"))?;
    let centralized = Centralized {
        f1: cf1.mean,
        f1_ci95: cf1.ci95,
        auprc: cap.mean,
        auprc_ci95: cap.ci95,
        seeds: locals.len() as u32,
    };
    let ratio_central = at(Some(3.0))
        .filter(|_| centralized.f1 > 0.0)
        .map(|a| a / centralized.f1);
    let command: Vec<String> = std::env::args().collect();
    let file = CurveFile {
        model: s.builtin.name.to_string(),
        plants: s.plants,
        split: split_name(s.kind),
        delta: r.delta,
        recipe: r.clone(),
        local_only_recipe: local_recipe_path.display().to_string(),
        configurations_tried: r.configurations_tried,
        tuning: r.tuning.clone(),
        measured: format!(
            "{} on a 2-core machine shared with other builds, with `amalgam {}`",
            today(),
            command.get(1..).map_or(String::new(), |a| a.join(" "))
        ),
        f1_ratio_eps3_to_nonprivate: ratio,
        f1_ratio_eps3_to_centralized: ratio_central,
        centralized,
        points,
        gates: Gates {
            gate2,
            gate3: Gate3 {
                rule: "in increasing epsilon (inf last), no point's 95% interval lies entirely below that of a point at smaller epsilon",
                f1_monotone: f1m,
                auprc_monotone: apm,
                pass: f1m && apm,
            },
        },
        runs,
        local_only: locals,
    };
    let json = serde_json::to_string_pretty(&file).map_err(|e| Failure::failed(e.to_string()))?;
    let mut text = format!(
        "record-level DP sweep: {} plants, {} split, {} rounds x {} steps, q = {}, C_rec = {}, delta = {:e}\n\
         epsilon  spent    z        F1 (95% CI)      AUPRC (95% CI)   unseen rec (95% CI)  seeds\n",
        s.plants, file.split, r.rounds, r.local_steps, r.q, r.clip, r.delta
    );
    for p in &file.points {
        text.push_str(&format!(
            "{:<8} {:<8} {:<8} {:.3} ± {:.3}    {:.3} ± {:.3}    {}   {}\n",
            p.target_epsilon.map_or("inf".into(), |e| e.to_string()),
            p.epsilon_spent.map_or("-".into(), |e| format!("{e:.3}")),
            p.noise_multiplier.map_or("-".into(), |e| format!("{e:.3}")),
            p.f1,
            p.f1_ci95,
            p.auprc,
            p.auprc_ci95,
            p.unseen_mode_recall.map_or("-".into(), |u| format!(
                "{u:.3} ± {:.3}",
                p.unseen_mode_recall_ci95.unwrap_or(0.0)
            )),
            p.seeds
        ));
    }
    text.push_str(&format!(
        "centralized (non-private, pooled rows, local-only recipe): F1 {:.3} ± {:.3}, AUPRC {:.3} ± {:.3}; F1 at epsilon 3 / centralized = {}\n",
        file.centralized.f1,
        file.centralized.f1_ci95,
        file.centralized.auprc,
        file.centralized.auprc_ci95,
        file.f1_ratio_eps3_to_centralized
            .map_or("-".into(), |r| format!("{r:.2}"))
    ));
    if let Some(g) = &file.gates.gate2 {
        text.push_str(&format!(
            "gate 2 (epsilon 8): {} ({} of {} plants)\n",
            if g.pass { "pass" } else { "FAIL" },
            g.plants_passing,
            g.plants.len()
        ));
    }
    text.push_str(&format!(
        "gate 3 (monotone within CIs): {} (F1 {}, AUPRC {})\n",
        if file.gates.gate3.pass {
            "pass"
        } else {
            "FAIL"
        },
        f1m,
        apm
    ));
    Ok((json, text))
}
