//! `amalgam`: the command-line tool of the Amalgam secure-aggregation service.
//!
//! Exit status: 0 success, 1 failure, 2 usage error, 3 timeout, 4 authentication failure (a
//! signature, epoch chain or key rotation that does not verify, a fingerprint not verified, a
//! pin mismatch or a refused member), 5 aggregator unreachable, 6 budget exceeded.
//!
//! The operator's read commands (`round`, `audit`, `report`, `site doctor`) also read the
//! configuration file (`--config`, default `./amalgam.toml`; see `config.rs` and
//! `protocol-spec/operations.md`).

mod aggregator;
mod audit;
mod audit_record;
mod config;
mod consortium;
#[cfg(feature = "train")]
mod data_cmd;
mod decryptor;
mod doctor;
mod keys;
mod ledger;
#[cfg(feature = "train")]
mod model_cmd;
mod plant;
mod record_dp;
mod report;
mod report_record;
mod round;
mod serve;
mod serve_fallback;
#[cfg(feature = "train")]
mod simulate;
mod simulate_round;
mod site;
mod summaries;
#[cfg(feature = "train")]
mod sweep;
#[cfg(feature = "train")]
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Secure aggregation for federated learning across manufacturing plants.
#[derive(Debug, Parser)]
#[command(name = "amalgam", version, about)]
struct Cli {
    /// Configuration file for the read commands (default `./amalgam.toml` when present).
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole federated campaign through real processes: split the data into plant files,
    /// make the keys and the co-signed manifest, run `serve` and one `site run --data` per
    /// plant, follow every round, compare with local and centralized models, write
    /// `report/report.json`.
    #[cfg(feature = "train")]
    Simulate(Box<simulate::Args>),
    /// Run one pairwise-masking round of a local consortium in this process, drop sites, and
    /// compare the aggregator's recovered sum with the plaintext sum of the survivors' inputs.
    SimulateRound(simulate_round::Args),
    /// Privacy-budget ledger tools (`amalgam ledger verify FILE --key HEX --anchor N:HEAD`).
    Ledger(ledger::Args),
    /// Identity keys (`amalgam keys gen --dir D`).
    Keys(keys::Args),
    /// The co-signed consortium manifest: init, join, approve, sign, show.
    Consortium(consortium::Args),
    /// A member of the decryptor committee (`amalgam decryptor serve --manifest M --key K
    /// --state DIR --aggregator URL`): the homomorphic fallback's re-runs of aborted rounds.
    Decryptor(decryptor::Args),
    /// The site agent (`amalgam site run --manifest M --key K --state DIR --aggregator URL`).
    Site(site::Args),
    /// Audit a site's ε ledger against its published anchors (`--transcripts`: every signed
    /// upload has a charge).
    Audit(audit::Args),
    /// The privacy report (`amalgam report privacy`), from verified ledgers, manifests and
    /// signed summaries; `amalgam report simulation --dir DIR` re-renders a simulation report.
    Report(report::Args),
    /// A round as the aggregator reports it: `status`, `watch`, `wait`.
    Round(round::Args),
    /// Run the aggregator service (`amalgam serve --manifest M --key K --db DB --listen ADDR`).
    Serve(serve::Args),
    /// Print the metrics of a saved model (`.json` from `amalgam experiment --save-model`, or a
    /// scripted TorchScript `.pt`) on a CSV in the AI4I schema.
    #[cfg(feature = "train")]
    Evaluate(train::EvaluateArgs),
    /// A built-in model's initial weights for a campaign (`amalgam model init --builtin NAME
    /// --seed S --out FILE`), with the digests `consortium init` pins.
    #[cfg(feature = "train")]
    Model(model_cmd::Args),
    /// Plant data files from one AI4I-schema CSV (`amalgam data split --plants N --split KIND
    /// --seed S --data CSV --out DIR`).
    #[cfg(feature = "train")]
    Data(data_cmd::Args),
    /// Run an in-process federated experiment (centralized, FedAvg, FedProx, fine-tuning,
    /// local-only) over several seeded splits and report means with 95% intervals.
    #[cfg(feature = "train")]
    Experiment(train::ExperimentArgs),
    /// The site-level ε-versus-F1 curve: whole campaigns of real site agents (ledger, DDG
    /// noise, masking) per noise level and seed, in one process (`--sigmas 0,0.5,1,2`).
    #[cfg(feature = "train")]
    Sweep(sweep::Args),
}

/// A failure with the exit status it maps to.
#[derive(Debug)]
pub struct Failure {
    /// 1 failed, 2 usage, 3 timeout, 4 authentication, 5 unreachable, 6 budget exceeded.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl Failure {
    /// A failure with an explicit exit status.
    pub fn with(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// Exit status 1.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
    /// Exit status 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<amalgam_consortium::ManifestError> for Failure {
    fn from(e: amalgam_consortium::ManifestError) -> Self {
        Self {
            code: if e.is_auth() { 4 } else { 1 },
            message: e.to_string(),
        }
    }
}

impl From<amalgam_consortium::KeyError> for Failure {
    fn from(e: amalgam_consortium::KeyError) -> Self {
        Self::failed(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = dispatch(cli);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("amalgam: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// The configuration file, read only by the commands that use it (a broken file must not
/// stop `keys gen` or `serve`).
fn config(cli_config: Option<&std::path::Path>, auto: bool) -> Result<config::Config, Failure> {
    config::Config::load(cli_config, auto)
}

fn dispatch(cli: Cli) -> Result<(), Failure> {
    let cfg = cli.config.as_deref();
    match cli.command {
        Command::Round(args) => round::run(&args, &config(cfg, true)?),
        Command::Audit(args) => audit::run(&args, &config(cfg, false)?),
        Command::Report(args) => report::run(&args, &config(cfg, false)?),
        #[cfg(feature = "train")]
        Command::Simulate(args) => simulate::run(&args),
        Command::SimulateRound(args) => simulate_round::run(&args).map_err(Failure::failed),
        Command::Ledger(args) => ledger::run(&args).map_err(Failure::failed),
        Command::Keys(args) => keys::run(&args),
        Command::Consortium(args) => consortium::run(&args),
        Command::Site(args) => site::run(&args, cfg),
        Command::Decryptor(args) => decryptor::run(&args),
        Command::Serve(args) => serve::run(&args),
        #[cfg(feature = "train")]
        Command::Evaluate(args) => train::evaluate(&args).map_err(Failure::failed),
        #[cfg(feature = "train")]
        Command::Model(args) => model_cmd::run(&args),
        #[cfg(feature = "train")]
        Command::Data(args) => data_cmd::run(&args),
        #[cfg(feature = "train")]
        Command::Experiment(args) => train::experiment(&args).map_err(Failure::failed),
        #[cfg(feature = "train")]
        Command::Sweep(args) => sweep::run(&args),
    }
}
