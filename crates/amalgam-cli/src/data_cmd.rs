//! `amalgam data split`: deals an AI4I-schema CSV into one file per plant plus the global test
//! set, with the seeded splits of `amalgam_train::split` (`protocol-spec/training.md` §4).

use std::path::PathBuf;

use amalgam_train::plant_files::{data_lines, write_split};
use amalgam_train::split::{SplitConfig, SplitKind, split};

use crate::Failure;
use crate::train::SplitArg;

/// `amalgam data …`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Write `plant-<i>.csv` for each plant and `test.csv` into a directory.
    Split(SplitArgs),
}

/// `amalgam data split`.
#[derive(Debug, clap::Args)]
pub struct SplitArgs {
    /// Number of plants.
    #[arg(long, default_value_t = 8)]
    plants: usize,
    /// How rows are dealt to plants.
    #[arg(long, value_enum, default_value = "type")]
    split: SplitArg,
    /// Share of a mode's failures at its own plants (`--split mode`).
    #[arg(long, default_value_t = 0.85)]
    major_share: f64,
    /// Split seed (public).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// CSV in the AI4I schema.
    #[arg(long, default_value = "data/ai4i2020.csv")]
    data: PathBuf,
    /// Output directory (created if missing; existing files are never replaced).
    #[arg(long)]
    out: PathBuf,
}

/// Runs the subcommand.
pub fn run(args: &Args) -> Result<(), Failure> {
    match &args.command {
        Command::Split(a) => split_files(a),
    }
}

fn split_files(a: &SplitArgs) -> Result<(), Failure> {
    let len = std::fs::metadata(&a.data)
        .map_err(|e| Failure::failed(format!("{}: {e}", a.data.display())))?
        .len();
    if len > amalgam_train::data::MAX_FILE_BYTES {
        return Err(Failure::failed(format!(
            "{}: {len} bytes, over the limit of {}",
            a.data.display(),
            amalgam_train::data::MAX_FILE_BYTES
        )));
    }
    let bytes = std::fs::read(&a.data)
        .map_err(|e| Failure::failed(format!("{}: {e}", a.data.display())))?;
    if bytes.len() as u64 > amalgam_train::data::MAX_FILE_BYTES {
        return Err(Failure::failed(format!(
            "{}: over the limit of {} bytes",
            a.data.display(),
            amalgam_train::data::MAX_FILE_BYTES
        )));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Failure::failed(format!("{}: not UTF-8", a.data.display())))?;
    let (lines, rows) =
        data_lines(text).map_err(|e| Failure::failed(format!("{}: {e}", a.data.display())))?;
    let kind = match a.split {
        SplitArg::Type => SplitKind::Type,
        SplitArg::Mode => SplitKind::Mode,
        SplitArg::ModeExclusive => SplitKind::ModeExclusive,
    };
    let cfg = SplitConfig {
        plants: a.plants,
        kind,
        major_share: a.major_share,
        seed: a.seed,
        ..SplitConfig::default()
    };
    let s = split(&rows, &cfg).map_err(|e| Failure::usage(e.to_string()))?;
    let written = write_split(&a.out, &lines, &s).map_err(|e| Failure::failed(e.to_string()))?;
    for (p, plant) in s.plants.iter().enumerate() {
        println!(
            "plant {p}: {} rows -> {}",
            plant.all().count(),
            written[p].display()
        );
    }
    println!(
        "test: {} rows -> {}",
        s.test.len(),
        written[s.plants.len()].display()
    );
    Ok(())
}
