//! `amalgam evaluate` and `amalgam experiment`: the plant trainer's commands.

use std::path::{Path, PathBuf};

use amalgam_train::campaign::Recipe;
use amalgam_train::data::{Row, read_csv};
use amalgam_train::export::Exported;
use amalgam_train::features::FeatureSet;
use amalgam_train::metrics::Report;
use amalgam_train::model::{Model, ModelError};
use amalgam_train::model_file::ModelFile;
use amalgam_train::split::{SplitConfig, SplitKind, split};
use amalgam_train::summary::{summarize, table};
use amalgam_train::train::Batch;
use clap::ValueEnum;

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// One JSON document.
    Json,
}

/// How rows are dealt to plants.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SplitArg {
    /// By product type.
    Type,
    /// By major failure mode (`--major-share` of a mode's failures to its plants).
    Mode,
    /// Each failure mode's failures only at its own plants.
    ModeExclusive,
}

/// Arguments of `amalgam evaluate`.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// Model file: `.json` written by `--save-model`, a scripted TorchScript `.pt`, or a
    /// traced `.pt` written by `amalgam model export` (inference only).
    #[arg(long)]
    model: PathBuf,
    /// CSV in the AI4I schema.
    #[arg(long)]
    data: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Decision threshold (default: the one saved with a `.json` model, 0.5 for `.pt`; an
    /// exported `.pt` carries no threshold: pass the one `amalgam model export` printed).
    #[arg(long)]
    threshold: Option<f32>,
    /// For a `.pt` model: feed the raw AI4I features only, without the physics features.
    #[arg(long)]
    no_physics: bool,
}

/// Arguments of `amalgam experiment`.
#[derive(Debug, clap::Args)]
pub struct ExperimentArgs {
    /// Training recipe (TOML).
    #[arg(long, default_value = "configs/campaign-default.toml")]
    config: PathBuf,
    /// CSV in the AI4I schema.
    #[arg(long, default_value = "data/ai4i2020.csv")]
    data: PathBuf,
    /// Number of plants.
    #[arg(long, default_value_t = 8)]
    plants: usize,
    /// How rows are dealt to plants.
    #[arg(long, value_enum, default_value = "type")]
    split: SplitArg,
    /// Share of a mode's failures at its own plants (`--split mode`).
    #[arg(long, default_value_t = 0.85)]
    major_share: f64,
    /// Number of seeds (each with its own split and initial weights; one thread each).
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Override the recipe's number of rounds.
    #[arg(long)]
    rounds: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Save the FedAvg model of the first seed (JSON, for `amalgam evaluate`).
    #[arg(long)]
    save_model: Option<PathBuf>,
}

fn rows_of(path: &Path) -> Result<Vec<Row>, String> {
    read_csv(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs `amalgam evaluate`.
pub fn evaluate(args: &EvaluateArgs) -> Result<(), String> {
    if let Some(t) = args.threshold
        && !(t.is_finite() && (0.0..=1.0).contains(&t))
    {
        return Err(format!("--threshold {t} outside [0, 1]"));
    }
    let rows = rows_of(&args.data)?;
    let is_script = args.model.extension().is_some_and(|e| e == "pt");
    let refs: Vec<&Row> = rows.iter().collect();
    let labels: Vec<bool> = refs.iter().map(|r| r.failure).collect();
    let (scores, saved) = if is_script {
        let features = FeatureSet {
            physics: !args.no_physics,
        };
        let batch = Batch::new(&features.matrix(&refs), &labels, features.dim());
        let named = |e: &dyn std::fmt::Display| format!("{}: {e}", args.model.display());
        let scores = match Model::load_script(&args.model, features, false) {
            Ok(mut m) => m.predict(&batch.x).map_err(|e| e.to_string())?,
            // A traced module (`amalgam model export`) has frozen weights: inference only.
            Err(ModelError::NoTrainable) => Exported::load(&args.model, features.dim())
                .and_then(|m| m.predict(&batch.x))
                .map_err(|e| named(&e))?,
            Err(e) => return Err(named(&e)),
        };
        (scores, 0.5)
    } else {
        let (f, mut model) = ModelFile::load(&args.model)?;
        let features = f.spec.features;
        let batch = Batch::new(&features.matrix(&refs), &labels, features.dim());
        let scores = model.predict(&batch.x).map_err(|e| e.to_string())?;
        (scores, f.threshold)
    };
    let report = Report::new(&refs, &scores, args.threshold.unwrap_or(saved));
    match args.format {
        Format::Text => print!("{}", report.to_text()),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        ),
    }
    Ok(())
}

/// Runs `amalgam experiment`.
pub fn experiment(args: &ExperimentArgs) -> Result<(), String> {
    let text =
        std::fs::read(&args.config).map_err(|e| format!("{}: {e}", args.config.display()))?;
    let text =
        String::from_utf8(text).map_err(|_| format!("{}: not UTF-8", args.config.display()))?;
    let mut recipe = Recipe::from_toml(&text)?;
    if let Some(r) = args.rounds {
        recipe.federated.rounds = r;
        recipe.federated.eval_every = recipe.federated.eval_every.min(r);
        recipe.validate()?;
    }
    if args.seeds == 0 || args.seeds > 100 {
        return Err("--seeds must be 1..=100".into());
    }
    let rows = rows_of(&args.data)?;
    let kind = match args.split {
        SplitArg::Type => SplitKind::Type,
        SplitArg::Mode => SplitKind::Mode,
        SplitArg::ModeExclusive => SplitKind::ModeExclusive,
    };
    let cfg = SplitConfig {
        plants: args.plants,
        kind,
        major_share: args.major_share,
        ..SplitConfig::default()
    };
    // Refuse bad split parameters once, before any thread starts.
    split(&rows, &cfg).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let seeds = args.first_seed..args.first_seed.saturating_add(args.seeds);
    let runs = amalgam_train::experiment::run_seeds(&rows, &cfg, &recipe, seeds)?;
    eprintln!(
        "amalgam: {} seeds done in {:.1} s",
        args.seeds,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.save_model
        && let Some(fedavg) = runs
            .first()
            .and_then(|r| r.iter().find(|m| m.method == "fedavg"))
            .and_then(|m| m.models.first())
    {
        let mut model = Model::new(&recipe.model).map_err(|e| e.to_string())?;
        model
            .set_from_flat(&fedavg.weights)
            .map_err(|e| e.to_string())?;
        ModelFile::new(&recipe.model, &model, fedavg.test.threshold).save(path)?;
    }
    let summary = summarize(&runs);
    match args.format {
        Format::Text => print!("{}", table(&summary)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?
        ),
    }
    Ok(())
}
