//! `amalgam audit`: a site's ε ledger verified offline (amalgam-dp's audit: chain, signatures,
//! rotations, policy, ε recomputed) against the anchors the site published — its signed
//! ledger summaries, fetched from the aggregator (`--aggregator`) or from a saved copy of
//! `GET /v1/anchors/{site}` (`--anchors FILE`). With `--transcripts`, every upload the site
//! signed (what the aggregator holds for it, and the round state persisted in its state
//! directory) must have an accepted charge in the ledger; an upload is evidence against the
//! site only when its signature re-verifies under the site's manifest key. Findings are rows with a severity;
//! any finding exits 1.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use amalgam_consortium::{IdentityKey, SignedManifest, VerifiedManifest};
use amalgam_dp::ledger::audit::{Anchor, AuditReport, Finding as LedgerFinding, audit_bytes};
use amalgam_dp::ledger::entry::{Charge, Decision, EntryBody, EntryKind};
use amalgam_dp::ledger::ledger_file_name;
use amalgam_dp::ledger::store::{self, read_file};
use amalgam_net::api;
use amalgam_proto::codec::Decode;
use amalgam_proto::messages::ToAggregator;
use amalgam_site::statements::LedgerSummary;
use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use crate::Failure;
use crate::aggregator::{Aggregator, MAX_SMALL, Member};
use crate::config::{Config, Format, print_json};

/// Largest saved anchors file.
const MAX_ANCHORS_FILE: u64 = 16 << 20;

/// `amalgam audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The co-signed consortium manifest (the site's key comes from it).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The ledger file (default: the ledger in `--state`).
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// The site agent's state directory (its ledger and persisted round state).
    #[arg(long)]
    state: Option<PathBuf>,
    /// The audited site's index in the manifest (default: the site `--key` belongs to).
    #[arg(long)]
    site: Option<u16>,
    /// A member's identity key file, for the aggregator's mutual TLS (and `--transcripts`:
    /// only the site itself may read its uploads back).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The aggregator, `https://host:port`: anchors from `GET /v1/anchors/{site}`.
    #[arg(long)]
    aggregator: Option<String>,
    /// A saved `GET /v1/anchors/{site}` answer (JSON), instead of or besides the aggregator.
    #[arg(long)]
    anchors: Option<PathBuf>,
    /// Cross-check that every upload the site signed has an accepted charge.
    #[arg(long)]
    transcripts: bool,
    /// A record ledger to audit against the record anchors of the summaries (default: every
    /// record ledger under `--state`'s record directory, `STATE/records`).
    #[arg(long)]
    record_ledger: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// One finding row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// `critical` (integrity: the ledger or a transcript cannot be trusted) or `compliance`
    /// (the ledger's own history says something an auditor must see) or `unverified` (the
    /// aggregator's copy of something the audit cannot re-verify: a lead, not proof).
    pub severity: &'static str,
    /// Stable code (the ledger finding's name, or one of this command's).
    pub code: String,
    /// What was found.
    pub detail: String,
}

/// A verified summary as printed.
#[derive(Debug, Serialize)]
pub struct SummaryRow {
    /// Its round.
    pub round: u64,
    /// Ledger entries it names.
    pub entries: u64,
    /// ε it states; absent when unbounded (JSON has no +∞).
    pub epsilon: Option<f64>,
    /// True when it states ε = +∞ (a round ran without differential privacy).
    pub unbounded: bool,
}

/// What `amalgam audit` prints.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// The audited site.
    pub site: u16,
    /// Its identity key, hex.
    pub site_key: String,
    /// The ledger file.
    pub ledger: String,
    /// The audit of the ledger.
    pub report: AuditReport,
    /// Verified summaries used as anchors.
    pub summaries: Vec<SummaryRow>,
    /// Rounds whose uploads were cross-checked (`--transcripts`).
    pub transcripts_checked: Vec<u64>,
    /// The record ledgers audited against the published record anchors.
    pub records: Vec<crate::audit_record::RecordOutcome>,
    /// Every finding, the ledger's first.
    pub findings: Vec<Row>,
}

/// The manifest, verified as `key`'s when given (listed, signatures) or on its own.
pub fn verified_manifest(
    manifest: &Path,
    key: Option<&IdentityKey>,
) -> Result<VerifiedManifest, Failure> {
    let signed = SignedManifest::read(manifest)?;
    Ok(match key {
        Some(k) => signed.verify_for(&k.verifying_key(), None)?,
        None => signed.verify()?,
    })
}

/// The accepted and refused charges of a ledger's intact entries, in order.
pub fn charges(bytes: &[u8]) -> Result<Vec<Charge>, Failure> {
    let parsed = match store::parse(bytes) {
        Ok(p) => p,
        Err(e) => return Err(Failure::failed(format!("ledger: {e}"))),
    };
    let mut out = Vec::new();
    for payload in &parsed.payloads {
        let Some(split) = payload.len().checked_sub(64) else {
            continue;
        };
        if let Ok(EntryBody {
            kind: EntryKind::Charge(c),
            ..
        }) = EntryBody::from_bytes(&payload[..split])
        {
            out.push(c);
        }
    }
    Ok(out)
}

/// A ledger finding as a row.
pub fn ledger_row(f: &LedgerFinding) -> Row {
    let text = format!("{f:?}");
    let code = text
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("Finding")
        .to_string();
    Row {
        severity: if f.is_compliance_only() {
            "compliance"
        } else {
            "critical"
        },
        code,
        detail: text,
    }
}

fn row(severity: &'static str, code: &str, detail: String) -> Row {
    Row {
        severity,
        code: code.into(),
        detail,
    }
}

/// The site's summaries as the aggregator holds them or a saved copy, parsed strictly.
pub fn load_anchors_file(path: &Path) -> Result<api::Anchors, Failure> {
    let bytes = crate::config::read_bounded(path, MAX_ANCHORS_FILE)
        .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::failed(format!(
            "{}: not a saved GET /v1/anchors answer: {e}",
            path.display()
        ))
    })
}

/// The ledger named explicitly: `--ledger`; none when `--state` is a flag (a flag beats a
/// ledger from the environment or the file: the directory named on the command line is the
/// one audited); else the environment's or the file's `ledger`. `None`: the ledger in the
/// state directory.
pub fn ledger_path(
    s: &crate::config::Section<'_>,
    ledger_flag: Option<&Path>,
    state_flag: Option<&Path>,
    state: &Option<PathBuf>,
) -> Result<Option<PathBuf>, Failure> {
    if let Some(l) = ledger_flag {
        return Ok(Some(l.to_path_buf()));
    }
    if state_flag.is_some() {
        return Ok(None);
    }
    let l = s.path("ledger", None)?;
    if l.is_none() && state.is_none() {
        return Err(Failure::usage("--ledger or --state is required"));
    }
    Ok(l)
}

/// The site agent's own directory inside the `--state` directory of `amalgam site run`
/// (`state.key`, `sealed/`, the ledger; `epoch.highwater` stays in the state directory).
pub fn agent_dir(state: &Path) -> PathBuf {
    state.join("agent")
}

/// The site's manifest key.
pub fn site_key(manifest: &VerifiedManifest, site: u16) -> Result<VerifyingKey, Failure> {
    manifest
        .sites()
        .get(usize::from(site))
        .map(|m| m.key)
        .ok_or_else(|| Failure::usage(format!("the manifest has no site {site}")))
}

/// Verifies each summary under the site's key and for this consortium and site; the good
/// ones become anchors, the others findings (the aggregator's copy is not the site's word).
pub fn summaries_to_anchors(
    sets: &[api::Anchors],
    site: u16,
    key: &VerifyingKey,
    digest: &[u8; 32],
    rows: &mut Vec<Row>,
) -> Vec<LedgerSummary> {
    let mut out: Vec<LedgerSummary> = Vec::new();
    for set in sets {
        if set.site != site {
            rows.push(row(
                "critical",
                "AnchorsOfAnotherSite",
                format!(
                    "anchors list site {} where site {site} was asked for",
                    set.site
                ),
            ));
            continue;
        }
        for (round, hexed) in &set.summaries {
            let verified = hex::decode(hexed)
                .map_err(|_| "not hex".to_string())
                .and_then(|b| LedgerSummary::verify(&b, key).map_err(|e| e.to_string()));
            match verified {
                Err(e) => rows.push(row(
                    "critical",
                    "SummaryUnverifiable",
                    format!("round {round}: the stored summary is not the site's: {e}"),
                )),
                Ok(s) if s.round != *round || s.site != site || &s.consortium_digest != digest => {
                    rows.push(row(
                        "critical",
                        "SummaryMisfiled",
                        format!(
                            "stored under round {round}: signed for round {}, site {}, another consortium: {}",
                            s.round,
                            s.site,
                            &s.consortium_digest != digest
                        ),
                    ));
                }
                Ok(s) => {
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
        }
    }
    out.sort_by_key(|s| s.round);
    out
}

/// Rounds whose state the site agent persisted (`sealed/round-<r>`): state is written only
/// after the round's charge, so each needs an accepted charge.
fn persisted_rounds(state: &Path) -> Result<Vec<u64>, Failure> {
    let dir = agent_dir(state).join("sealed");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Failure::failed(format!("{}: {e}", dir.display()))),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Failure::failed(format!("{}: {e}", dir.display())))?;
        if let Some(r) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("round-"))
            .and_then(|r| r.parse::<u64>().ok())
        {
            out.push(r);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// An upload the aggregator holds for a round the ledger has no charge for. Only a key
/// advertisement can be re-verified offline (its signature covers the round context, which
/// the manifest and the round's served model digest give; later phases sign the session id,
/// derived from every site's advertisement): a valid signature makes it critical evidence
/// against the site, a bad one is the aggregator's fabrication, any other kind is a lead
/// (severity `unverified`) to confirm from the site's own records.
fn upload_without_charge(
    m: &ToAggregator,
    manifest: &VerifiedManifest,
    key: &VerifyingKey,
    served: Option<[u8; 32]>,
    r: u64,
) -> Row {
    let ToAggregator::AdvertiseKeys(adv) = m else {
        return row(
            "unverified",
            "UploadWithoutCharge",
            format!(
                "round {r}: the aggregator holds a {} as the site's but the ledger has no accepted charge for the round (its signature cannot be re-verified offline: confirm with the site's records)",
                m.name()
            ),
        );
    };
    let verified = match (served, manifest.round_params(r)) {
        (Some(model), Ok(params)) => {
            let context = amalgam_proto::crypto::kdf::masking_round_context(
                &manifest.context_digest(&model),
                &params,
                r,
            );
            amalgam_proto::crypto::sign::verify_message(key, &context, &adv.body(), &adv.signature)
        }
        _ => false,
    };
    if verified {
        row(
            "critical",
            "UploadWithoutCharge",
            format!(
                "round {r}: the site signed a key advertisement (signature verified under its manifest key) but the ledger has no accepted charge for the round"
            ),
        )
    } else {
        row(
            "critical",
            "UploadForged",
            format!(
                "round {r}: the aggregator's copy of the site's key advertisement does not verify under the site's manifest key: the aggregator's evidence, not the site's"
            ),
        )
    }
}

/// Runs `amalgam audit`; exit 1 when there is any finding.
pub fn run(a: &Args, config: &Config) -> Result<(), Failure> {
    let s = config.section("audit");
    let format = s.format(a.format)?;
    let manifest_path = s.require_path("manifest", a.manifest.as_deref())?;
    let key_path = s.path("key", a.key.as_deref())?;
    let state = s.path("state", a.state.as_deref())?;
    let url = s.string("aggregator", a.aggregator.as_deref())?;
    let anchors_file = s.path("anchors", a.anchors.as_deref())?;
    let identity = key_path.as_deref().map(IdentityKey::load).transpose()?;
    let manifest = verified_manifest(&manifest_path, identity.as_ref())?;
    let site = match (a.site, &identity) {
        (Some(i), _) => i,
        (None, Some(k)) => manifest.site_index(&k.verifying_key()).ok_or_else(|| {
            Failure::usage("--key is not a site of the manifest: name the site with --site")
        })?,
        (None, None) => return Err(Failure::usage("--site (or a site's --key) is required")),
    };
    let site_key = site_key(&manifest, site)?;
    let ledger = match ledger_path(&s, a.ledger.as_deref(), a.state.as_deref(), &state)? {
        Some(l) => l,
        None => agent_dir(
            state
                .as_deref()
                .ok_or_else(|| Failure::usage("--ledger or --state is required"))?,
        )
        .join(ledger_file_name(manifest.budget_policy()?.unit)),
    };
    let mut rows = Vec::new();
    let mut sets = Vec::new();
    if let Some(f) = &anchors_file {
        sets.push(load_anchors_file(f)?);
    }
    let agg = match &url {
        Some(u) => {
            let Some(identity) = identity else {
                return Err(Failure::usage(
                    "--aggregator needs --key (a member's identity: the API is mutual TLS)",
                ));
            };
            let member = Member {
                manifest: manifest.clone(),
                identity,
            };
            let max = amalgam_site::http::max_message_answer(
                manifest.sites().len(),
                manifest.dp_round_params().dim.get() as usize,
            )
            .max(MAX_SMALL);
            let agg = Aggregator::connect(u, &member, false, max)?;
            sets.push(agg.json::<api::Anchors>(&format!("/v1/anchors/{site}"))?);
            Some((agg, member))
        }
        None => None,
    };
    let digest = manifest.consortium_digest();
    let summaries = summaries_to_anchors(&sets, site, &site_key, &digest, &mut rows);
    let anchors: Vec<Anchor> = summaries
        .iter()
        .map(|s| Anchor {
            entries: s.entries as usize,
            head: s.head,
        })
        .collect();
    let bytes =
        read_file(&ledger).map_err(|e| Failure::failed(format!("{}: {e}", ledger.display())))?;
    let report = audit_bytes(&bytes, &site_key, &anchors)
        .map_err(|e| Failure::failed(format!("{}: {e}", ledger.display())))?;
    let mut findings: Vec<Row> = report.findings.iter().map(ledger_row).collect();
    // Each summary's ε at the prefix it names, the summaries never going backwards, and one
    // for the newest round the site contributed to (the aggregator's published results).
    crate::summaries::check_manifest(&report, &digest, &mut rows);
    crate::summaries::check_monotone(&summaries, &mut rows);
    crate::summaries::check_epsilon(&bytes, &site_key, &summaries, &mut rows);
    if let Some((agg, _)) = &agg {
        let newest = crate::summaries::newest_contribution(agg, site)?;
        crate::summaries::check_fresh(&summaries, site, newest, &mut rows);
    }
    // Record ledgers: the file named, or all of the state directory's (then a dataset the
    // summaries anchor with no ledger there is a finding: the file was deleted).
    let record_flag = s.path("record_ledger", a.record_ledger.as_deref())?;
    let record_dir = state.as_deref().map(crate::record_dp::default_dir);
    let record_ledgers =
        crate::audit_record::discover(record_flag.as_deref(), record_dir.as_deref())?;
    let records = crate::audit_record::audit_records(
        &record_ledgers,
        &site_key,
        &summaries,
        record_flag.is_none() && record_dir.is_some(),
        &mut rows,
    )?;
    let mut transcripts_checked = Vec::new();
    if a.transcripts {
        // A charge counts for round r of this consortium manifest only.
        let accepted: BTreeSet<u64> = charges(&bytes)?
            .iter()
            .filter(|c| c.decision == Decision::Accepted && c.request.manifest_digest == digest)
            .map(|c| c.request.round_id)
            .collect();
        let mut sources = 0;
        if let Some(dir) = &state {
            sources += 1;
            for r in persisted_rounds(dir)? {
                transcripts_checked.push(r);
                if !accepted.contains(&r) {
                    rows.push(row(
                        "critical",
                        "PersistedRoundWithoutCharge",
                        format!(
                            "round {r}: the state directory holds the round's signed state but the ledger has no accepted charge for it"
                        ),
                    ));
                }
            }
        }
        if let Some((agg, member)) = &agg {
            if member.site() != Some(site) {
                return Err(Failure::usage(
                    "--transcripts against the aggregator needs the audited site's own --key (only it may read its uploads back)",
                ));
            }
            sources += 1;
            for st in agg.status()?.rounds {
                let r = st.round;
                let served = hex::decode(&st.model_digest)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok());
                let resp = agg.get(&api::mine_latest_path(r))?;
                match resp.status.as_u16() {
                    204 | 404 => continue,
                    200 => {}
                    _ => return Err(crate::aggregator::refusal(&agg.url, "mine/latest", &resp)),
                }
                transcripts_checked.push(r);
                let params = manifest.round_params(r)?;
                match ToAggregator::from_bytes(&resp.body, &params) {
                    Err(e) => rows.push(row(
                        "critical",
                        "UploadUndecodable",
                        format!("round {r}: the aggregator's copy of the site's upload does not decode: {e}"),
                    )),
                    Ok(m) if m.sender().0 != site || m.round() != r => rows.push(row(
                        "critical",
                        "UploadMisattributed",
                        format!("round {r}: the aggregator holds a {} of site {} round {} as this site's", m.name(), m.sender().0, m.round()),
                    )),
                    Ok(m) if !accepted.contains(&r) => {
                        rows.push(upload_without_charge(&m, &manifest, &site_key, served, r))
                    }
                    Ok(_) => {}
                }
            }
        }
        if sources == 0 {
            return Err(Failure::usage(
                "--transcripts needs --state (the site's own round records) and/or --aggregator",
            ));
        }
        transcripts_checked.sort_unstable();
        transcripts_checked.dedup();
    }
    findings.extend(rows);
    let outcome = Outcome {
        site,
        site_key: hex::encode(site_key.as_bytes()),
        ledger: ledger.display().to_string(),
        summaries: summaries
            .iter()
            .map(|s| SummaryRow {
                round: s.round,
                entries: s.entries,
                epsilon: s.epsilon.is_finite().then_some(s.epsilon),
                unbounded: s.epsilon.is_infinite(),
            })
            .collect(),
        report,
        transcripts_checked,
        records,
        findings,
    };
    match format {
        Format::Json => print_json(&outcome)?,
        Format::Text => print!("{}", render(&outcome)),
    }
    if outcome.findings.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed(format!(
            "audit: {} finding(s)",
            outcome.findings.len()
        )))
    }
}

fn render(o: &Outcome) -> String {
    let r = &o.report;
    let mut out = format!(
        "site {} ({})\nledger {}: {} entries, {} charges accepted, {} refused, head {}\n",
        o.site, o.site_key, o.ledger, r.entries, r.accepted, r.refused, r.head
    );
    if r.private {
        out.push_str(&format!(
            "epsilon spent (recomputed): {:.6}\n",
            r.epsilon_total
        ));
    } else {
        out.push_str("epsilon spent: unbounded (a round ran without differential privacy)\n");
    }
    out.push_str(&format!(
        "anchors: {} verified summaries, {} checked\n",
        o.summaries.len(),
        r.anchors_checked
    ));
    for rec in &o.records {
        let r = &rec.report;
        out.push_str(&format!(
            "record ledger {}: dataset {}, {} entries, {} runs accepted, {} refused, epsilon {:.6}, {} anchors checked\n",
            rec.ledger,
            rec.dataset.as_deref().unwrap_or("unknown"),
            r.entries,
            r.runs.len(),
            r.refused,
            r.epsilon_total,
            r.anchors_checked
        ));
    }
    if !o.transcripts_checked.is_empty() {
        out.push_str(&format!(
            "uploads cross-checked in rounds {:?}\n",
            o.transcripts_checked
        ));
    }
    if o.findings.is_empty() {
        out.push_str("no findings\n");
    } else {
        out.push_str(&format!("{:<11} {:<28} detail\n", "severity", "finding"));
        for f in &o.findings {
            out.push_str(&format!("{:<11} {:<28} {}\n", f.severity, f.code, f.detail));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use amalgam_proto::messages::AdvertiseKeys;
    use amalgam_proto::params::SiteId;

    fn advert(c: &amalgam_consortium::testing::TestConsortium, model: &[u8; 32]) -> AdvertiseKeys {
        let m = &c.verified;
        let context = amalgam_proto::crypto::kdf::masking_round_context(
            &m.context_digest(model),
            &m.round_params(1).unwrap(),
            1,
        );
        let mut a = AdvertiseKeys {
            round: 1,
            sender: SiteId(0),
            c_pk: [7; 32],
            s_pk: [8; 32],
            signature: [0; 64],
        };
        a.signature = amalgam_proto::crypto::sign::sign_message(
            &c.sites[0].to_ledger_key(),
            &context,
            &a.body(),
        );
        a
    }

    #[test]
    fn only_a_verified_advertisement_is_evidence_against_the_site() {
        let c = amalgam_consortium::testing::consortium(71, 5, 0, 64);
        let key = site_key(&c.verified, 0).unwrap();
        let model = [3; 32];
        let good = ToAggregator::AdvertiseKeys(advert(&c, &model));
        let r = upload_without_charge(&good, &c.verified, &key, Some(model), 1);
        assert_eq!(
            (r.severity, r.code.as_str()),
            ("critical", "UploadWithoutCharge")
        );
        // The aggregator names another served model, or alters the signature: its copy does
        // not verify, and the finding is against it.
        let r = upload_without_charge(&good, &c.verified, &key, Some([4; 32]), 1);
        assert_eq!(r.code, "UploadForged");
        let mut bad = advert(&c, &model);
        bad.signature[0] ^= 1;
        let r = upload_without_charge(
            &ToAggregator::AdvertiseKeys(bad),
            &c.verified,
            &key,
            Some(model),
            1,
        );
        assert_eq!(r.code, "UploadForged");
        let r = upload_without_charge(&good, &c.verified, &key, None, 1);
        assert_eq!(r.code, "UploadForged");
    }
}
