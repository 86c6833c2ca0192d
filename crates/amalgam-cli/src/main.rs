//! `amalgam`: the command-line tool of the Amalgam secure-aggregation service.

mod ledger;
mod simulate;
#[cfg(feature = "train")]
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Secure aggregation for federated learning across manufacturing plants.
#[derive(Debug, Parser)]
#[command(name = "amalgam", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one pairwise-masking round of a local consortium in this process, drop sites, and
    /// compare the aggregator's recovered sum with the plaintext sum of the survivors' inputs.
    Simulate(simulate::Args),
    /// Privacy-budget ledger tools (`amalgam ledger verify FILE --key HEX --anchor N:HEAD`).
    Ledger(ledger::Args),
    /// Print the metrics of a saved model (`.json` from `amalgam experiment --save-model`, or a
    /// scripted TorchScript `.pt`) on a CSV in the AI4I schema.
    #[cfg(feature = "train")]
    Evaluate(train::EvaluateArgs),
    /// Run an in-process federated experiment (centralized, FedAvg, FedProx, fine-tuning,
    /// local-only) over several seeded splits and report means with 95% intervals.
    #[cfg(feature = "train")]
    Experiment(train::ExperimentArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(args) => simulate::run(&args),
        Command::Ledger(args) => ledger::run(&args),
        #[cfg(feature = "train")]
        Command::Evaluate(args) => train::evaluate(&args),
        #[cfg(feature = "train")]
        Command::Experiment(args) => train::experiment(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("amalgam: {message}");
            ExitCode::FAILURE
        }
    }
}
