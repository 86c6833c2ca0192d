//! `consortium show`: members, fingerprints, policy, signature status and flags, as text or
//! JSON. With `--signed`, the exit status says whether the manifest verifies (4 when not).

use std::path::PathBuf;

use amalgam_consortium::flags::{Flag, flags, parse_verified};
use amalgam_consortium::{
    EpochHighWater, IdentityKey, ManifestBody, SignedManifest, draft, fingerprint,
};
use serde_json::json;

use crate::Failure;

/// Options of `consortium show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// A draft to show.
    #[arg(long, conflicts_with = "signed")]
    manifest: Option<PathBuf>,
    /// A signed manifest to show and verify.
    #[arg(long)]
    signed: Option<PathBuf>,
    /// The fingerprints this member verified: others are flagged as unverified.
    #[arg(long)]
    verified: Option<PathBuf>,
    /// This party's key directory or key file: verification then also requires that the
    /// manifest lists this key (this party signed it).
    #[arg(long)]
    key: Option<PathBuf>,
    /// This party's epoch high-water file (verification then also checks the chain).
    #[arg(long, requires = "key")]
    high_water: Option<PathBuf>,
    /// After a successful verification, record this epoch in --high-water (atomic write under
    /// a lock; never lowers the mark; refuses an epoch that does not list --key).
    #[arg(long, requires_all = ["high_water", "signed", "key"])]
    accept: bool,
    /// text or json.
    #[arg(long, default_value = "text")]
    format: String,
}

/// Runs `consortium show`.
pub fn run(a: &ShowArgs) -> Result<(), Failure> {
    if a.format != "text" && a.format != "json" {
        return Err(Failure::usage("--format must be text or json"));
    }
    let verified = match &a.verified {
        Some(p) => {
            let text = super::read_small_text(p)?;
            Some(
                parse_verified(&text)
                    .map_err(|e| Failure::usage(format!("{}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    let (body, signed) = match (&a.signed, &a.manifest) {
        (Some(p), _) => {
            let s = SignedManifest::read(p)?;
            (s.body().clone(), Some(s))
        }
        (None, Some(p)) => {
            let mut b = draft::read_draft(p)?;
            b.normalise();
            (b, None)
        }
        (None, None) => return Err(Failure::usage("give --manifest DRAFT or --signed FILE")),
    };
    let high_water = match &a.high_water {
        Some(p) => EpochHighWater::load(p)?,
        None => None,
    };
    let me = match &a.key {
        Some(p) => Some(IdentityKey::load(p)?.verifying_key()),
        None => None,
    };
    let verdict = signed.as_ref().map(|s| match &me {
        Some(me) => s.verify_for(me, high_water.as_ref()),
        None => s.verify(),
    });
    let flags = flags(&body, verified.as_deref());
    let unsigned: Vec<String> = signed
        .as_ref()
        .map(|s| {
            s.unsigned_members()
                .iter()
                .map(|m| m.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let digest = signed.as_ref().map(|s| hex::encode(s.digest()));
    let error = match &verdict {
        Some(Err(e)) => Some(e.to_string()),
        _ => None,
    };
    if a.format == "json" {
        let value = to_json(&body, &flags, &unsigned, digest, &verdict, signed.is_some())?;
        let text =
            serde_json::to_string_pretty(&value).map_err(|e| Failure::failed(e.to_string()))?;
        println!("{text}");
    } else {
        print!(
            "{}",
            to_text(
                &body,
                &flags,
                &unsigned,
                digest,
                error.as_deref(),
                signed.is_some()
            )
        );
    }
    match verdict {
        Some(Err(e)) => Err(e.into()),
        Some(Ok(v)) if a.accept => {
            if let (Some(p), Some(me)) = (&a.high_water, &me) {
                EpochHighWater::accept(p, &v, me)?;
                // Shown on stderr so that `--format json` stays one JSON document.
                if high_water.is_none() {
                    eprintln!(
                        "first contact: no earlier mark in {}; trusting epoch {} and these \
                         identities on first use (check them out of band):",
                        p.display(),
                        v.epoch()
                    );
                } else {
                    eprintln!(
                        "accepted epoch {} in {}; identities now trusted:",
                        v.epoch(),
                        p.display()
                    );
                }
                for m in v.members() {
                    eprintln!("  {} ({}) {}", m.name, m.organisation, fingerprint(&m.key));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn to_json(
    body: &ManifestBody,
    flags: &[Flag],
    unsigned: &[String],
    digest: Option<String>,
    verdict: &Option<
        Result<amalgam_consortium::VerifiedManifest, amalgam_consortium::ManifestError>,
    >,
    is_signed: bool,
) -> Result<serde_json::Value, Failure> {
    let members: Vec<_> = body
        .members
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "organisation": m.organisation,
                "roles": m.roles,
                "key": hex::encode(m.key.as_bytes()),
                "fingerprint": fingerprint(&m.key),
                "signed": is_signed && !unsigned.contains(&m.name),
            })
        })
        .collect();
    let ser =
        |v: serde_json::Result<serde_json::Value>| v.map_err(|e| Failure::failed(e.to_string()));
    Ok(json!({
        "consortium": body.consortium,
        "epoch": body.epoch,
        "prev_digest": body.prev_digest.map(hex::encode),
        "digest": digest,
        "valid": matches!(verdict, Some(Ok(_))),
        "error": match verdict { Some(Err(e)) => Some(e.to_string()), _ => None },
        "members": members,
        "unsigned": unsigned,
        "protocol": ser(serde_json::to_value(body.protocol))?,
        "committee": ser(serde_json::to_value(body.committee))?,
        "dp": ser(serde_json::to_value(body.dp))?,
        "fallback": ser(serde_json::to_value(body.fallback))?,
        "deadlines": ser(serde_json::to_value(body.deadlines))?,
        "max_aborted_rounds": body.max_aborted_rounds,
        "campaign": ser(serde_json::to_value(&body.campaign))?,
        "rotations": ser(serde_json::to_value(&body.rotations))?,
        "flags": ser(serde_json::to_value(flags))?,
    }))
}

fn to_text(
    body: &ManifestBody,
    flags: &[Flag],
    unsigned: &[String],
    digest: Option<String>,
    error: Option<&str>,
    is_signed: bool,
) -> String {
    let mut out = format!("consortium {} epoch {}\n", body.consortium, body.epoch);
    if let Some(d) = &digest {
        out.push_str(&format!("digest {d}\n"));
    }
    if let Some(p) = body.prev_digest {
        out.push_str(&format!("previous epoch {}\n", hex::encode(p)));
    }
    out.push_str("members:\n");
    for m in &body.members {
        let roles: Vec<&str> = m.roles.iter().map(|r| r.name()).collect();
        let state = if !is_signed {
            ""
        } else if unsigned.contains(&m.name) {
            "  NOT SIGNED"
        } else {
            "  signed"
        };
        out.push_str(&format!(
            "  {:<20} {:<28} {:<22} {}{state}\n",
            m.name,
            m.organisation,
            roles.join(","),
            fingerprint(&m.key)
        ));
    }
    out.push_str(&policy_text(body));
    if flags.is_empty() {
        out.push_str("flags: none\n");
    }
    for f in flags {
        let line = match f {
            Flag::AggregatorOrganisationRunsDecryptor { organisation } => format!(
                "FLAG: {organisation} runs the aggregator and a decryptor (counts against c_d)"
            ),
            Flag::DecryptorsShareOrganisation {
                organisation,
                decryptors,
            } => format!(
                "FLAG: {organisation} runs {decryptors} decryptors ({} count against c_d)",
                decryptors - 1
            ),
            Flag::AggregatorOrganisationRunsSites {
                organisation,
                sites,
            } => format!(
                "FLAG: {organisation} runs the aggregator and {sites} site(s) (count against c)"
            ),
            Flag::Unverified {
                name,
                organisation,
                fingerprint,
            } => format!(
                "FLAG: {name} ({organisation}) [{fingerprint}] not verified by you: count it against c"
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    match (is_signed, error) {
        (true, None) => out.push_str("valid: every member signed\n"),
        (true, Some(e)) => out.push_str(&format!("NOT VALID: {e}\n")),
        (false, _) => out.push_str("draft: not signed (confers no authority)\n"),
    }
    out
}

/// The whole policy of `body` (everything but the member list), one section a line: what a
/// member agrees to when it signs.
pub(super) fn policy_text(body: &ManifestBody) -> String {
    let mut out = String::new();
    let p = &body.protocol;
    out.push_str(&format!(
        "protocol: t = {}, c = {}, f = {}, m = {}, graph {:?}, aggregator {:?}\n",
        p.threshold, p.colluders, p.dropouts, p.min_cohort, p.graph, p.trust
    ));
    if let Some(c) = &body.committee {
        out.push_str(&format!(
            "committee: t_c = {}, Q = {}, c_d = {}\n",
            c.threshold, c.quorum, c.corrupt
        ));
    }
    let dp = &body.dp;
    out.push_str(&format!(
        "dp: {:?}, C = {}, sigma = {}, b = {}, gamma = {}, beta = {}, unit {:?}\n",
        dp.budget,
        dp.clip.get(),
        dp.sigma.get(),
        dp.bits.get(),
        dp.gamma.get(),
        dp.beta.get(),
        dp.unit
    ));
    out.push_str(&format!(
        "fallback allowed: {}; phase deadlines {}..={} s; max aborted rounds {}\n",
        body.fallback.allowed,
        body.deadlines.min_secs,
        body.deadlines.max_secs,
        body.max_aborted_rounds
    ));
    let c = &body.campaign;
    out.push_str(&format!(
        "campaign {}: model {:?}, {} parameters, {} rounds, weights {:?}\n",
        c.id,
        c.model,
        c.parameter_count.get(),
        c.training.rounds,
        c.weight_mode
    ));
    if !c.declared_weights.is_empty() {
        let list: Vec<String> = c
            .declared_weights
            .iter()
            .map(|(name, w)| format!("{name} {w}"))
            .collect();
        out.push_str(&format!("declared weights (public): {}\n", list.join(", ")));
    }
    if let Some(n) = &c.noised_weights {
        out.push_str(&format!(
            "noised weights: w = min(n / {}, 1), kappa {}, divisor floor {} (n each site's private example count)\n",
            n.n_cap, n.kappa, n.floor
        ));
    }
    let t = &c.training;
    out.push_str(&format!(
        "training: {} local epochs, batch {}, {:?}, lr {}, mu {}, server lr {}, momentum {}\n",
        t.local_epochs,
        t.batch_size,
        t.optimizer,
        t.learning_rate,
        t.mu,
        t.server_lr,
        t.server_momentum
    ));
    out.push_str(&format!(
        "digests: parameter list {}, initial weights {}\n",
        hex::encode(c.parameter_list_digest),
        hex::encode(c.initial_weights_digest)
    ));
    out
}
