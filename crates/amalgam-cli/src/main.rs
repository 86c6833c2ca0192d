//! `amalgam`: the command-line tool of the Amalgam secure-aggregation service.
//!
//! Exit status: 0 success, 1 failure, 2 usage error, 4 authentication failure (a signature,
//! epoch chain or key rotation that does not verify, or a fingerprint not verified).

mod consortium;
mod keys;
mod ledger;
mod serve;
mod simulate;
mod site;

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
    /// Identity keys (`amalgam keys gen --dir D`).
    Keys(keys::Args),
    /// The co-signed consortium manifest: init, join, approve, sign, show.
    Consortium(consortium::Args),
    /// The site agent (`amalgam site run --manifest M --key K --state DIR --aggregator URL`).
    Site(site::Args),
    /// Run the aggregator service (`amalgam serve --manifest M --key K --db DB --listen ADDR`).
    Serve(serve::Args),
}

/// A failure with the exit status it maps to.
#[derive(Debug)]
pub struct Failure {
    /// 1 failed, 2 usage, 4 authentication.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl Failure {
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
    let result = match cli.command {
        Command::Simulate(args) => simulate::run(&args).map_err(Failure::failed),
        Command::Ledger(args) => ledger::run(&args).map_err(Failure::failed),
        Command::Keys(args) => keys::run(&args),
        Command::Consortium(args) => consortium::run(&args),
        Command::Site(args) => site::run(&args),
        Command::Serve(args) => serve::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("amalgam: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
