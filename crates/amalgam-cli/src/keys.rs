//! `amalgam keys gen --dir D`: a plant generates its Ed25519 identity key locally. The
//! private key stays in D (0700) as identity.key (0600); identity.pub and the fingerprint are
//! what the plant shares.

use std::path::PathBuf;

use amalgam_consortium::{IdentityKey, fingerprint};

use crate::Failure;

/// Options of `amalgam keys`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Generate a new identity key in a private directory (never overwrites one).
    Gen {
        /// The key directory (created 0700 if absent).
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Runs `amalgam keys …`.
pub fn run(args: &Args) -> Result<(), Failure> {
    match &args.command {
        Command::Gen { dir } => {
            let path = IdentityKey::save_new(dir)?;
            let key = IdentityKey::load(&path)?;
            println!(
                "private key: {} (never leaves this machine)",
                path.display()
            );
            println!(
                "public key:  {}",
                dir.join(amalgam_consortium::key::PUB_FILE).display()
            );
            println!("fingerprint: {}", fingerprint(&key.verifying_key()));
            Ok(())
        }
    }
}
