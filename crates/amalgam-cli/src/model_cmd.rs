//! `amalgam model init`: the initial weights of a built-in model, in the canonical model bytes
//! (`model_bytes`: little-endian f32 values in parameter order), and the three values a
//! manifest pins for it (parameter count, parameter-list digest, initial-weights digest).
//! `amalgam model export`: a trained `.json` model as a traced TorchScript module.

use std::path::PathBuf;

use amalgam_site::model::{model_bytes, model_digest};
use amalgam_train::builtin::{builtin, parameter_list_digest};
use amalgam_train::export::export_torchscript;
use amalgam_train::model_file::ModelFile;

use crate::Failure;

/// `amalgam model …`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Draw a built-in model's initial weights from a seed and write them for
    /// `consortium init` (digests) and `serve --initial-model` / `site run --initial-model`.
    Init(InitArgs),
    /// Write a trained `.json` model (`amalgam experiment --save-model`) as a traced
    /// TorchScript module: float32 [B, F] in the documented feature order to logits [B, 1].
    Export(ExportArgs),
}

/// `amalgam model export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The trained model (`.json`).
    #[arg(long)]
    model: PathBuf,
    /// Output TorchScript file (refused if it exists).
    #[arg(long)]
    out: PathBuf,
}

/// `amalgam model init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Built-in model: mlp-ai4i or logistic-ai4i.
    #[arg(long)]
    builtin: String,
    /// Seed of the initial weights (public: every member can recompute the file).
    #[arg(long)]
    seed: u64,
    /// Output file (refused if it exists).
    #[arg(long)]
    out: PathBuf,
}

/// Runs the subcommand.
pub fn run(args: &Args) -> Result<(), Failure> {
    match &args.command {
        Command::Init(a) => init(a),
        Command::Export(a) => export(a),
    }
}

fn export(a: &ExportArgs) -> Result<(), Failure> {
    if a.out.exists() {
        return Err(Failure::failed(format!(
            "{} exists; remove it first",
            a.out.display()
        )));
    }
    let (file, _) = ModelFile::load(&a.model).map_err(Failure::failed)?;
    export_torchscript(&file.spec, &file.params, &a.out)
        .map_err(|e| Failure::failed(format!("{}: {e}", a.out.display())))?;
    println!("features {}", file.spec.features.dim());
    println!("threshold {}", file.threshold);
    println!("written {}", a.out.display());
    Ok(())
}

fn init(a: &InitArgs) -> Result<(), Failure> {
    let b = builtin(&a.builtin).map_err(|e| Failure::usage(e.to_string()))?;
    if a.out.exists() {
        return Err(Failure::failed(format!(
            "{} exists; remove it first",
            a.out.display()
        )));
    }
    let (model, flat) = b.init(a.seed).map_err(|e| Failure::failed(e.to_string()))?;
    let list = parameter_list_digest(&model).map_err(|e| Failure::failed(e.to_string()))?;
    amalgam_store::atomic_write(&a.out, &model_bytes(&flat), 0o644)
        .map_err(|e| Failure::failed(format!("{}: {e}", a.out.display())))?;
    println!("model builtin:{}", b.name);
    println!("params {}", flat.len());
    println!("param_list_digest {}", hex::encode(list));
    println!(
        "initial_weights_digest {}",
        hex::encode(model_digest(&flat))
    );
    println!("written {}", a.out.display());
    Ok(())
}
