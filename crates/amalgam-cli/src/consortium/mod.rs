//! `amalgam consortium init|join|approve|sign|show`: the declarative draft, signed join
//! requests, co-signing after out-of-band fingerprint checks, and the manifest's contents and
//! flags. Approving a request only edits the draft: a manifest is valid only when every
//! listed member has signed its canonical bytes.

mod init;
mod show;
mod sign;

use std::path::{Path, PathBuf};

use amalgam_consortium::draft::{self, JoinRequest};
use amalgam_consortium::{IdentityKey, Role, fingerprint};
use ed25519_dalek::VerifyingKey;

use crate::Failure;

/// Options of `amalgam consortium`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Write a consortium.toml draft (or the next epoch's draft from a signed manifest).
    Init(Box<init::InitArgs>),
    /// Produce a join request signed by this plant's key.
    Join(JoinArgs),
    /// Add a join request to the draft (confers no authority: every member still signs).
    Approve(ApproveArgs),
    /// Sign the draft's canonical bytes after checking every member's fingerprint.
    Sign(sign::SignArgs),
    /// Replace a member's key in a next-epoch draft, with the old key's rotation statement.
    Rotate(RotateArgs),
    /// Print members, fingerprints, policy and flags.
    Show(show::ShowArgs),
}

/// Options of `consortium join`.
#[derive(Debug, clap::Args)]
struct JoinArgs {
    /// The draft (for the consortium id).
    #[arg(long)]
    manifest: PathBuf,
    /// This plant's key directory or key file.
    #[arg(long)]
    key: PathBuf,
    /// Organisation.
    #[arg(long)]
    org: String,
    /// Roles, comma-separated: site, decryptor, aggregator.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// Member name.
    #[arg(long)]
    name: String,
    /// Where to write the request (default NAME.join.toml).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Options of `consortium approve`.
#[derive(Debug, clap::Args)]
struct ApproveArgs {
    /// The draft to edit.
    #[arg(long, default_value = "consortium.toml")]
    manifest: PathBuf,
    /// The join request.
    #[arg(long)]
    request: PathBuf,
    /// The site's public aggregation weight (usually its record count) when the campaign's
    /// weight mode is `declared`; every site needs one before the draft is valid.
    #[arg(long)]
    declared_weight: Option<u32>,
}

/// Options of `consortium rotate`.
#[derive(Debug, clap::Args)]
struct RotateArgs {
    /// The next epoch's draft (`consortium init --from SIGNED`).
    #[arg(long, default_value = "consortium.toml")]
    manifest: PathBuf,
    /// The key being retired (directory or key file): it signs the statement.
    #[arg(long)]
    old_key: PathBuf,
    /// The new public key: 64 hex digits, identity.pub, or its key directory.
    #[arg(long)]
    new_key: String,
}

/// Runs `amalgam consortium …`.
pub fn run(args: &Args) -> Result<(), Failure> {
    match &args.command {
        Command::Init(a) => init::run(a),
        Command::Join(a) => join(a),
        Command::Approve(a) => approve(a),
        Command::Sign(a) => sign::run(a),
        Command::Rotate(a) => rotate(a),
        Command::Show(a) => show::run(a),
    }
}

fn parse_roles(roles: &[String]) -> Result<Vec<Role>, Failure> {
    if roles.is_empty() {
        return Err(Failure::usage(
            "--roles needs at least one of site, decryptor, aggregator",
        ));
    }
    roles
        .iter()
        .map(|r| {
            Role::parse(r).ok_or_else(|| {
                Failure::usage(format!("unknown role {r:?} (site, decryptor, aggregator)"))
            })
        })
        .collect()
}

fn join(a: &JoinArgs) -> Result<(), Failure> {
    let body = draft::read_draft(&a.manifest)?;
    let key = IdentityKey::load(&a.key)?;
    let roles = parse_roles(&a.roles)?;
    let request = JoinRequest::new(&key, &body.consortium, &a.name, &a.org, roles);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.join.toml", a.name)));
    write_new(&out, request.to_text()?.as_bytes())?;
    println!("join request: {}", out.display());
    println!(
        "fingerprint:  {} (read it to every member out of band)",
        fingerprint(&key.verifying_key())
    );
    Ok(())
}

fn approve(a: &ApproveArgs) -> Result<(), Failure> {
    let mut body = draft::read_draft(&a.manifest)?;
    let request = JoinRequest::read(&a.request)?;
    if let Some(w) = a.declared_weight {
        if body.campaign.weight_mode != amalgam_consortium::WeightMode::Declared {
            return Err(Failure::usage(
                "--declared-weight needs a campaign whose weight mode is declared",
            ));
        }
        let most = amalgam_consortium::validate::MAX_DECLARED_WEIGHT;
        if w == 0 || w > most {
            return Err(Failure::usage(format!(
                "--declared-weight must be 1 to {most}, got {w}"
            )));
        }
        if !request.roles.contains(&Role::Site) {
            return Err(Failure::usage(
                "--declared-weight is for sites only: the request asks no site role",
            ));
        }
        body.campaign
            .declared_weights
            .insert(request.name.clone(), w);
    }
    draft::approve(&mut body, &request)?;
    draft::write_draft(&a.manifest, &body)?;
    println!(
        "added {} ({}) to the draft {}: fingerprint {}",
        request.name,
        request.organisation,
        a.manifest.display(),
        fingerprint(&request.key)
    );
    println!("this confers no authority: every member must verify it and sign");
    Ok(())
}

fn rotate(a: &RotateArgs) -> Result<(), Failure> {
    let mut body = draft::read_draft(&a.manifest)?;
    if body.epoch < 2 {
        return Err(Failure::usage(
            "a rotation takes effect in a new epoch: write its draft with `consortium init --from SIGNED`",
        ));
    }
    let old = IdentityKey::load(&a.old_key)?;
    let new_key = read_public_key(&a.new_key)?;
    let old_vk = old.verifying_key();
    let member = body
        .members
        .iter_mut()
        .find(|m| m.key == old_vk)
        .ok_or_else(|| {
            Failure::failed(format!(
                "{} is not a member of the draft",
                fingerprint(&old_vk)
            ))
        })?;
    member.key = new_key;
    let name = member.name.clone();
    let statement = amalgam_consortium::RotationStatement::sign(
        &old,
        &body.consortium,
        &name,
        body.epoch,
        new_key,
    );
    body.rotations.retain(|r| r.name != name);
    body.rotations.push(statement);
    body.normalise();
    draft::write_draft(&a.manifest, &body)?;
    println!(
        "{name}: key {} replaced by {} from epoch {} (statement signed by the old key)",
        fingerprint(&old_vk),
        fingerprint(&new_key),
        body.epoch
    );
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))
}

/// Largest fingerprint list read (a 300-member consortium needs about 15 KiB).
const MAX_LIST_LEN: u64 = 64 * 1024;

/// Reads a small text file (a fingerprint list), refusing one over [`MAX_LIST_LEN`].
fn read_small_text(path: &Path) -> Result<String, Failure> {
    use std::io::Read;
    let fail = |e: std::io::Error| Failure::failed(format!("{}: {e}", path.display()));
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(fail)?
        .take(MAX_LIST_LEN + 1)
        .read_to_string(&mut text)
        .map_err(fail)?;
    if text.len() as u64 > MAX_LIST_LEN {
        return Err(Failure::failed(format!(
            "{} is larger than {MAX_LIST_LEN} bytes",
            path.display()
        )));
    }
    Ok(text)
}

/// A public key given as 64 hex digits, an identity.pub file, or a key directory holding one.
fn read_public_key(text: &str) -> Result<VerifyingKey, Failure> {
    let from_hex = |s: &str| -> Option<VerifyingKey> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut b).ok()?;
        VerifyingKey::from_bytes(&b).ok()
    };
    if let Some(k) = from_hex(text) {
        return Ok(k);
    }
    let mut path = PathBuf::from(text);
    if path.is_dir() {
        path = path.join(amalgam_consortium::key::PUB_FILE);
    }
    let content = read_small_text(&path)?;
    content
        .trim()
        .strip_prefix("amalgam-ed25519 ")
        .and_then(from_hex)
        .ok_or_else(|| {
            Failure::usage(format!(
                "{} is not an identity.pub file (amalgam-ed25519 HEX)",
                path.display()
            ))
        })
}
