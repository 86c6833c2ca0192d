//! `consortium sign`: a member signs the draft's exact canonical bytes, but only after it has
//! checked every other member's fingerprint out of band (a `--verified` file, or a typed
//! confirmation per member on a terminal). Signatures accumulate in the signed-manifest file.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use amalgam_consortium::flags::{parse_verified, require_verified};
use amalgam_consortium::{IdentityKey, ManifestError, SignedManifest, draft, fingerprint};

use crate::Failure;

/// Options of `consortium sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The draft.
    #[arg(long, default_value = "consortium.toml")]
    manifest: PathBuf,
    /// This member's key directory or key file.
    #[arg(long)]
    key: PathBuf,
    /// Fingerprints this member checked out of band, one per line. Without it, each member
    /// is confirmed interactively (only on a terminal).
    #[arg(long)]
    verified: Option<PathBuf>,
    /// The signed manifest collecting every member's signature.
    #[arg(long, default_value = "consortium.signed")]
    signed: PathBuf,
    /// Start a new collection when the signed file holds signatures over other bytes.
    #[arg(long)]
    restart: bool,
    /// The previous epoch's signed manifest (required from epoch 2 on): it is verified, the
    /// draft must chain to it, and every field the draft changes is shown.
    #[arg(long)]
    previous: Option<PathBuf>,
    /// With --verified (no terminal): the exact list of changed fields this member accepts,
    /// comma-separated as `sign` prints them (e.g. protocol.threshold,member.plant-c).
    #[arg(long, value_delimiter = ',')]
    accept_changes: Vec<String>,
}

/// Runs `consortium sign`.
pub fn run(a: &SignArgs) -> Result<(), Failure> {
    let body = draft::read_draft(&a.manifest)?;
    let mut signed = SignedManifest::from_body(body)?;
    let key = IdentityKey::load(&a.key)?;
    let me = key.verifying_key();
    let body = signed.body().clone();
    if !body.members.iter().any(|m| m.key == me) {
        return Err(ManifestError::NotAMember {
            fingerprint: fingerprint(&me),
        }
        .into());
    }
    println!(
        "consortium {} epoch {} digest {}",
        body.consortium,
        body.epoch,
        hex::encode(signed.digest())
    );
    for m in &body.members {
        let roles: Vec<&str> = m.roles.iter().map(|r| r.name()).collect();
        let you = if m.key == me { "  (you)" } else { "" };
        println!(
            "  {:<20} {:<28} {:<22} {}{you}",
            m.name,
            m.organisation,
            roles.join(","),
            fingerprint(&m.key)
        );
    }
    print!("{}", super::show::policy_text(&body));
    review_changes(a, &body, &me)?;
    let verified = match &a.verified {
        Some(path) => {
            let text = super::read_small_text(path)?;
            parse_verified(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?
        }
        None if std::io::stdin().is_terminal() => confirm(&body, &me)?,
        None => {
            return Err(Failure::usage(
                "--verified FILE is required when standard input is not a terminal",
            ));
        }
    };
    require_verified(&body, &me, &verified)?;
    if a.signed.exists() {
        let existing = SignedManifest::read(&a.signed)?;
        if existing.canonical_bytes() == signed.canonical_bytes() {
            signed.merge(&existing)?;
        } else if !a.restart {
            return Err(Failure::failed(format!(
                "{} holds signatures over different bytes (the draft changed); \
                 pass --restart to start a new collection",
                a.signed.display()
            )));
        }
    }
    signed.sign_as(&key)?;
    signed.write(&a.signed)?;
    let missing = signed.unsigned_members();
    if missing.is_empty() {
        signed.verify()?;
        println!(
            "{}: every member signed; the manifest is valid",
            a.signed.display()
        );
    } else {
        let names: Vec<String> = missing
            .iter()
            .map(|m| format!("{} ({})", m.name, m.organisation))
            .collect();
        println!(
            "{}: signed; still to sign: {}",
            a.signed.display(),
            names.join(", ")
        );
    }
    Ok(())
}

/// From epoch 2 on: verifies the previous epoch, checks the draft chains to it, prints every
/// changed field, and requires the changes to be accepted — by typing `yes` on a terminal, or
/// (with `--verified`) by listing exactly the changed fields in `--accept-changes`.
fn review_changes(
    a: &SignArgs,
    body: &amalgam_consortium::ManifestBody,
    me: &ed25519_dalek::VerifyingKey,
) -> Result<(), Failure> {
    let refused = |message: String| Failure { code: 4, message };
    let Some(path) = &a.previous else {
        if body.epoch >= 2 {
            return Err(Failure::usage(format!(
                "epoch {} changes epoch {}: pass --previous SIGNED (that epoch's signed \
                 manifest) to see what this draft changes",
                body.epoch,
                body.epoch - 1
            )));
        }
        if !a.accept_changes.is_empty() {
            return Err(Failure::usage("--accept-changes needs --previous"));
        }
        return Ok(());
    };
    if body.epoch < 2 {
        return Err(Failure::usage(
            "epoch 1 has no previous epoch: drop --previous",
        ));
    }
    let prev = SignedManifest::read(path)?.verify()?;
    let changes = amalgam_consortium::diff::changes_since(&prev, body, me)?;
    if changes.is_empty() {
        println!("changes since epoch {}: none", prev.epoch());
    } else {
        println!("changes since epoch {}:", prev.epoch());
        for c in &changes {
            println!("  {}: {} -> {}", c.field, c.before, c.after);
        }
    }
    let mut changed: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
    changed.sort_unstable();
    let mut accepted: Vec<&str> = a.accept_changes.iter().map(|s| s.trim()).collect();
    accepted.sort_unstable();
    accepted.dedup();
    if a.verified.is_some() || !std::io::stdin().is_terminal() {
        if accepted != changed {
            return Err(refused(format!(
                "refusing to sign: the draft changes [{}] but --accept-changes lists [{}]; \
                 list exactly the changed fields",
                changed.join(","),
                accepted.join(",")
            )));
        }
        return Ok(());
    }
    if changes.is_empty() {
        return Ok(());
    }
    print!("Accept every change listed above? Type yes: ");
    std::io::stdout()
        .flush()
        .map_err(|e| Failure::failed(e.to_string()))?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::failed(e.to_string()))?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(refused(
            "refusing to sign: the changes were not accepted".into(),
        ))
    }
}

/// Asks, on the terminal, for each other member's fingerprint to be confirmed.
fn confirm(
    body: &amalgam_consortium::ManifestBody,
    me: &ed25519_dalek::VerifyingKey,
) -> Result<Vec<String>, Failure> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut out = Vec::new();
    for m in body.members.iter().filter(|m| &m.key != me) {
        let fp = fingerprint(&m.key);
        print!(
            "Did {} ({}) confirm fingerprint {fp} out of band? Type yes: ",
            m.name, m.organisation
        );
        std::io::stdout()
            .flush()
            .map_err(|e| Failure::failed(e.to_string()))?;
        let answer = lines
            .next()
            .transpose()
            .map_err(|e| Failure::failed(e.to_string()))?
            .unwrap_or_default();
        if answer.trim() == "yes" {
            out.push(fp);
        }
    }
    Ok(out)
}
