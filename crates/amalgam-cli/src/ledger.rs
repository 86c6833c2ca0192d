//! `amalgam ledger verify`: the offline audit of a site's ε ledger. It reads the file without
//! locking or changing it, verifies the chain, the signatures and the key rotations under the
//! key the auditor trusts, follows the policy the genesis entry commits, recomputes n_min, the
//! sampler distance, ρ and ε from the recorded parameters, checks the published anchors and
//! prints every event and finding. It exits non-zero when there is any finding.

use std::path::PathBuf;

use amalgam_dp::ledger::audit::{Anchor, AuditReport, PublishedRound, audit_published};
use amalgam_dp::ledger::entry::Budget;
use amalgam_dp::ledger::store::read_file;
use ed25519_dalek::VerifyingKey;

/// Options of `amalgam ledger`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Verify a ledger offline and recompute ε from its recorded parameters.
    Verify(VerifyArgs),
}

/// Options of `amalgam ledger verify`.
#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// The ledger file.
    file: PathBuf,
    /// The site's Ed25519 identity key from the consortium manifest, 64 hex digits (the key
    /// the ledger was created with, or one it was rotated to).
    #[arg(long)]
    key: String,
    /// A ledger head the site published earlier, `ENTRIES:HEX_HEAD` (repeatable). Without
    /// one, entries cut off the end of the file cannot be ruled out, which is itself reported.
    #[arg(long = "anchor")]
    anchors: Vec<String>,
    /// A round the aggregator published, `ROUND=ENTRIES:HEX_HEAD`: the round id and the
    /// post-charge anchor the site's signed upload carried (repeatable). A round with no
    /// accepted charge at that anchor is a finding (a ledger cut back or forked after upload).
    #[arg(long = "published")]
    published: Vec<String>,
    /// Print the full report as JSON instead of text (the same as `--format json`).
    #[arg(long)]
    json: bool,
    /// Output format.
    #[arg(long, value_enum)]
    format: Option<crate::config::Format>,
}

/// Runs `amalgam ledger …`.
pub fn run(args: &Args) -> Result<(), String> {
    match &args.command {
        Command::Verify(v) => verify(v),
    }
}

fn parse_key(text: &str) -> Result<VerifyingKey, String> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|_| "--key must be 64 hex digits (an Ed25519 public key)".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "--key is not a valid Ed25519 public key".into())
}

fn verify(args: &VerifyArgs) -> Result<(), String> {
    let key = parse_key(&args.key)?;
    let anchors = args
        .anchors
        .iter()
        .map(|a| Anchor::parse(a).map_err(|e| format!("--anchor {a}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let published = args
        .published
        .iter()
        .map(|p| PublishedRound::parse(p).map_err(|e| format!("--published {p}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = read_file(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    if is_record_ledger(&bytes) {
        return verify_record(args, &key, &anchors);
    }
    let report = audit_published(&bytes, &key, &anchors, &published)
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    if args.json || args.format == Some(crate::config::Format::Json) {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", render(&report));
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(format!(
            "ledger verify: {} finding(s)",
            report.findings.len()
        ))
    }
}

/// True when the file's first entry is a record-ledger entry (its own version byte).
fn is_record_ledger(bytes: &[u8]) -> bool {
    amalgam_dp::ledger::store::parse(bytes).is_ok_and(|p| {
        p.payloads.first().and_then(|e| e.first()).copied()
            == Some(amalgam_dp::ledger::record::entry::RECORD_ENTRY_VERSION)
    })
}

/// `ledger verify` of a record-level ledger: re-accounts every run and prints the guarantee.
fn verify_record(args: &VerifyArgs, key: &VerifyingKey, anchors: &[Anchor]) -> Result<(), String> {
    let report = amalgam_dp::ledger::record::audit_record_file(&args.file, Some(key), anchors)
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    if args.json || args.format == Some(crate::config::Format::Json) {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        let mut out = format!(
            "record-level ledger: {} entries, head {}\n",
            report.entries, report.head
        );
        if let Some(p) = &report.policy {
            out.push_str(&format!(
                "privacy unit: one record of dataset {} (at most N_max = {} records, treated as public)\ncap epsilon = {} at delta = {:e}\n",
                hex::encode(p.dataset),
                p.max_records,
                p.epsilon_cap.get(),
                p.delta.get()
            ));
        }
        out.push_str(&format!(
            "runs: {} accepted ({} noisy steps), {} refused\nrecord-level epsilon = {} (order {})\nanchors checked: {}\n",
            report.runs.len(),
            report.steps,
            report.refused,
            report.epsilon_total,
            report.order,
            report.anchors_checked
        ));
        for v in &report.data_versions {
            out.push_str(&format!(
                "data version: sha256 {} ({} records); every record of it is covered by the total above\n",
                hex::encode(v.file),
                v.records
            ));
        }
        for f in &report.findings {
            out.push_str(&format!("finding: {f:?}\n"));
        }
        print!("{out}");
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(format!(
            "ledger verify: {} finding(s)",
            report.findings.len()
        ))
    }
}

/// A policy's budget in words.
fn budget_text(budget: Option<Budget>) -> String {
    match budget {
        Some(Budget::Capped { epsilon_cap, delta }) => {
            format!(
                "cap epsilon = {} at delta = {:e}",
                epsilon_cap.get(),
                delta.get()
            )
        }
        Some(Budget::NoPrivacy) => "none (no differential privacy)".into(),
        None => "none recorded".into(),
    }
}

/// The text report: the policy in force, then the genesis policy and every change (a reader
/// must see a cap that was tightened after the spend, not only the last one).
fn render(report: &AuditReport) -> String {
    let mut out = String::new();
    let policy = budget_text(report.policy.map(|p| p.budget));
    out.push_str(&format!("policy: {policy}\n"));
    for record in &report.policies {
        let what = if record.index == 0 {
            "genesis policy"
        } else {
            "policy change"
        };
        out.push_str(&format!(
            "{what} at entry {}: {} ({:?}, {:?}, {:?}); epsilon spent before it = {:.4}\n",
            record.index,
            budget_text(Some(record.policy.budget)),
            record.policy.unit,
            record.policy.adjacency,
            record.policy.accountant,
            record.epsilon_spent_before
        ));
    }
    if let Some(p) = report.policy {
        out.push_str(&format!(
            "privacy unit: {:?}, adjacency: {:?}, accountant: {:?}\n",
            p.unit, p.adjacency, p.accountant
        ));
    }
    out.push_str(&format!(
        "entries: {} (charges accepted {}, refused {}), head {}\n",
        report.entries, report.accepted, report.refused, report.head
    ));
    if report.private {
        out.push_str(&format!(
            "spent (recomputed): rho = {:.6}, epsilon = {:.4} at the policy's delta\n",
            report.rho_total, report.epsilon_total
        ));
    } else {
        out.push_str("spent (recomputed): no differential privacy (epsilon unbounded)\n");
    }
    out.push_str(&format!(
        "anchor to publish: {}:{}\nanchors checked: {}\n",
        report.entries, report.head, report.anchors_checked
    ));
    if let Some(torn) = report.torn_bytes {
        out.push_str(&format!(
            "torn tail: {torn} bytes (a crash mid-append; not yet recovered)\n"
        ));
    }
    for event in &report.events {
        out.push_str(&format!("event: {event:?}\n"));
    }
    for finding in &report.findings {
        out.push_str(&format!("FINDING: {finding:?}\n"));
    }
    if report.is_clean() {
        out.push_str("verified: no findings\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use amalgam_dp::ledger::audit::audit_file;
    use amalgam_dp::ledger::entry::RoundRequest;
    use amalgam_dp::ledger::{BudgetPolicy, Ledger, RoundParams};
    use amalgam_dp::params::{
        BitWidth, ClipNorm, Delta, Dimension, Epsilon, Gamma, RoundingBias, Sigma, SiteCount,
    };
    use amalgam_dp::sampler::SamplerKind;
    use ed25519_dalek::SigningKey;

    fn args(file: PathBuf, key: &SigningKey, anchors: Vec<String>) -> VerifyArgs {
        VerifyArgs {
            file,
            key: hex::encode(key.verifying_key().to_bytes()),
            anchors,
            published: vec![],
            json: false,
            format: None,
        }
    }

    #[test]
    fn verify_recomputes_epsilon_and_fails_on_a_cut_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger");
        let key = SigningKey::from_bytes(&[3; 32]);
        let policy =
            BudgetPolicy::site_level(Epsilon::new(10.0).unwrap(), Delta::new(1e-6).unwrap())
                .unwrap();
        let (mut ledger, _) = Ledger::open(&path, key.clone(), policy).unwrap();
        let params = RoundParams {
            min_cohort: SiteCount::new(4).unwrap(),
            colluders: 1,
            n_cohort: SiteCount::new(5).unwrap(),
            clip: ClipNorm::new(1.0).unwrap(),
            gamma: Gamma::new(1000.0).unwrap(),
            bits: BitWidth::new(24).unwrap(),
            local_sigma: Sigma::new(5.0).unwrap(),
            dim: Dimension::new(100).unwrap(),
            beta: RoundingBias::recommended(),
        };
        ledger.record_epoch([0; 32], 1, params).unwrap();
        for round_id in 0..3 {
            ledger
                .authorize(RoundRequest::under(
                    params,
                    round_id,
                    [0; 32],
                    [0; 32],
                    SamplerKind::Fast,
                ))
                .unwrap();
        }
        let anchor = ledger.anchor().to_string();
        drop(ledger);
        assert_eq!(
            verify(&args(path.clone(), &key, vec![anchor.clone()])),
            Ok(())
        );
        // The last round's post-charge anchor, as the aggregator publishes it with the round.
        let mut with_round = args(path.clone(), &key, vec![]);
        with_round.published = vec![format!("2={anchor}")];
        assert_eq!(verify(&with_round), Ok(()));
        with_round.published = vec![format!("1={anchor}")];
        assert!(verify(&with_round).is_err());
        with_round.published = vec!["2:x".into()];
        assert!(verify(&with_round).is_err());
        let report = audit_file(&path, &key.verifying_key(), &[]).unwrap();
        let text = render(&report);
        assert!(
            text.contains("epsilon = ") && text.contains("FINDING: Unanchored"),
            "{text}"
        );
        assert!(
            text.contains("genesis policy at entry 0: cap epsilon = 10 at delta = 1e-6"),
            "{text}"
        );
        // A tightened cap below the spend (on a copy): the change and the finding are printed.
        let tightened = dir.path().join("tightened");
        std::fs::copy(&path, &tightened).unwrap();
        let (mut ledger, _) = Ledger::open(&tightened, key.clone(), policy).unwrap();
        ledger
            .change_policy(
                BudgetPolicy::site_level(Epsilon::new(1e-3).unwrap(), Delta::new(1e-7).unwrap())
                    .unwrap(),
            )
            .unwrap();
        drop(ledger);
        let text = render(&audit_file(&tightened, &key.verifying_key(), &[]).unwrap());
        assert!(
            text.contains("policy change at entry 5: cap epsilon = 0.001 at delta = 1e-7")
                && text.contains("FINDING: SpentAboveCap"),
            "{text}"
        );
        // Without an anchor, or with the last entry cut off, verification fails.
        assert!(verify(&args(path.clone(), &key, vec![])).is_err());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
        assert!(verify(&args(path.clone(), &key, vec![anchor])).is_err());
        assert!(verify(&args(path, &SigningKey::from_bytes(&[4; 32]), vec![])).is_err());
    }
}
