//! `amalgam report privacy`: one page for compliance readers, built only from verified
//! material — the site's ledger (audited, ε recomputed), the co-signed manifest and the sites'
//! signed summaries — never from configuration. A ledger with an integrity finding is refused,
//! not reported. `--consortium` adds every site's latest verified summary.
//!
//! `amalgam report simulation --dir DIR`: re-renders a simulation report directory from its
//! `report.json` (the `amalgam-report` crate does the rendering and the refusals).

use std::path::PathBuf;

use amalgam_consortium::{IdentityKey, VerifiedManifest, WeightMode, fingerprint};
use amalgam_dp::ledger::audit::{Anchor, Event, audit_bytes};
use amalgam_dp::ledger::entry::{Budget, RoundParams};
use amalgam_dp::ledger::ledger_file_name;
use amalgam_dp::ledger::store::read_file;
use amalgam_net::api;
use serde::Serialize;

use crate::Failure;
use crate::aggregator::{Aggregator, MAX_SMALL, Member};
use crate::audit::{
    Row, ledger_row, load_anchors_file, site_key, summaries_to_anchors, verified_manifest,
};
use crate::config::{Config, Format, print_json};
use crate::summaries;

/// `amalgam report …`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The privacy guarantees in force and what they do not cover, from verified ledgers,
    /// manifests and signed summaries.
    Privacy(PrivacyArgs),
    /// Re-render a simulation report directory (`index.html`, `plots/*.svg`) from its
    /// `report.json` alone.
    Simulation(SimulationArgs),
}

/// `amalgam report simulation`.
#[derive(Debug, clap::Args)]
pub struct SimulationArgs {
    /// The report directory written by `amalgam simulate` (holding `report.json`).
    #[arg(long)]
    dir: PathBuf,
}

/// `amalgam report privacy`.
#[derive(Debug, clap::Args)]
pub struct PrivacyArgs {
    /// The co-signed consortium manifest.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The site whose ledger is reported (default: the site `--key` belongs to).
    #[arg(long)]
    site: Option<u16>,
    /// The site's ledger file (default: the ledger in `--state`).
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// The site agent's state directory.
    #[arg(long)]
    state: Option<PathBuf>,
    /// A member's identity key file (for `--aggregator`).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The aggregator: the sites' signed summaries from `GET /v1/anchors/{site}`.
    #[arg(long)]
    aggregator: Option<String>,
    /// Saved `GET /v1/anchors/{site}` answers (repeatable; one per site for `--consortium`).
    #[arg(long)]
    anchors: Vec<PathBuf>,
    /// Every site of the consortium, from its latest verified summary.
    #[arg(long)]
    consortium: bool,
    /// A record-level ledger of the site (repeatable; default: every one under
    /// `STATE/records`). Reported in its own section, never merged with the site-level ε.
    #[arg(long)]
    record_ledger: Vec<PathBuf>,
    /// The per-example clip norm C_rec the record-level runs used (shown next to the
    /// site-level C).
    #[arg(long)]
    record_clip: Option<f64>,
    /// Also write the page as HTML.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// A site's budget line.
#[derive(Debug, Serialize)]
struct SiteBudget {
    site: u16,
    name: String,
    organisation: String,
    /// `ledger` (audited, recomputed) or `summary` (the site's latest signed statement).
    source: &'static str,
    /// Round of the latest summary.
    as_of_round: Option<u64>,
    epsilon_cap: Option<f64>,
    /// ε spent; absent when unknown or unbounded (JSON has no +∞).
    epsilon_spent: Option<f64>,
    /// True when a round ran without differential privacy: ε is unbounded.
    epsilon_unbounded: bool,
    epsilon_remaining: Option<f64>,
}

/// The masking and committee thresholds in force for the epoch's rounds.
#[derive(Debug, Serialize)]
struct Collusion {
    rounds: String,
    sites: usize,
    threshold_t: u16,
    colluders_c: u16,
    dropouts_f: u16,
    min_cohort_m: u16,
    n_min: u32,
    trust: String,
    graph: String,
    committee: Option<String>,
}

/// The page.
#[derive(Debug, Serialize)]
struct Page {
    consortium: String,
    epoch: u64,
    manifest_digest: String,
    privacy_unit: String,
    adjacency: String,
    accountant: String,
    delta: Option<f64>,
    mechanism: Option<RoundParams>,
    mechanism_matches_manifest: bool,
    sites: Vec<SiteBudget>,
    keys: Vec<String>,
    collusion: Collusion,
    not_protected: Vec<String>,
    caveats: Vec<Row>,
    /// The record-level statements, one per audited record ledger.
    record_level: Vec<crate::report_record::RecordSection>,
    #[serde(skip)]
    record_clip: Option<f64>,
}

/// Runs `amalgam report …`.
pub fn run(args: &Args, config: &Config) -> Result<(), Failure> {
    match &args.command {
        Command::Privacy(a) => privacy(a, config),
        Command::Simulation(a) => simulation(a),
    }
}

/// Renders the page and plots from `DIR/report.json` and prints each file written; a report
/// that is malformed, oversized or of another schema is refused (exit 1, nothing written).
fn simulation(a: &SimulationArgs) -> Result<(), Failure> {
    let written = amalgam_report::render_dir(&a.dir).map_err(|e| Failure::failed(e.to_string()))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

fn privacy(a: &PrivacyArgs, config: &Config) -> Result<(), Failure> {
    let s = config.section("report");
    let format = s.format(a.format)?;
    let manifest_path = s.require_path("manifest", a.manifest.as_deref())?;
    let key_path = s.path("key", a.key.as_deref())?;
    let url = s.string("aggregator", a.aggregator.as_deref())?;
    let mut anchor_files = a.anchors.clone();
    if anchor_files.is_empty()
        && let Some(f) = s.path("anchors", None)?
    {
        anchor_files.push(f);
    }
    let identity = key_path.as_deref().map(IdentityKey::load).transpose()?;
    let manifest = verified_manifest(&manifest_path, identity.as_ref())?;
    let site = match (a.site, &identity) {
        (Some(i), _) => Some(i),
        (None, Some(k)) => manifest.site_index(&k.verifying_key()),
        (None, None) => None,
    };
    let state = s.path("state", a.state.as_deref())?;
    let policy_unit = manifest.budget_policy()?.unit;
    let ledger = if a.ledger.is_none()
        && a.state.is_none()
        && state.is_none()
        && s.path("ledger", None)?.is_none()
    {
        None
    } else {
        match crate::audit::ledger_path(&s, a.ledger.as_deref(), a.state.as_deref(), &state)? {
            Some(l) => Some(l),
            None => state
                .as_deref()
                .map(|dir| crate::audit::agent_dir(dir).join(ledger_file_name(policy_unit))),
        }
    };
    if ledger.is_none() && !a.consortium {
        return Err(Failure::usage(
            "--ledger or --state is required (or --consortium for every site's summaries)",
        ));
    }
    let mut sets: Vec<api::Anchors> = anchor_files
        .iter()
        .map(|f| load_anchors_file(f))
        .collect::<Result<_, _>>()?;
    let mut agg = None;
    if let Some(u) = &url {
        let Some(identity) = identity else {
            return Err(Failure::usage(
                "--aggregator needs --key (the API is mutual TLS)",
            ));
        };
        let member = Member {
            manifest: manifest.clone(),
            identity,
        };
        let conn = Aggregator::connect(u, &member, false, MAX_SMALL)?;
        let wanted: Vec<u16> = if a.consortium {
            (0..manifest.sites().len() as u16).collect()
        } else {
            site.into_iter().collect()
        };
        for i in wanted {
            sets.push(conn.json(&format!("/v1/anchors/{i}"))?);
        }
        agg = Some(conn);
    }
    let policy = manifest.budget_policy()?;
    let cap = match policy.budget {
        Budget::Capped { epsilon_cap, .. } => Some(epsilon_cap.get()),
        Budget::NoPrivacy => None,
    };
    let mut caveats = Vec::new();
    let mut sites = Vec::new();
    let mut mechanism = None;
    let mut reported_policy = policy;
    let digest = manifest.consortium_digest();
    let members = manifest.sites();
    if let Some(path) = &ledger {
        let Some(site) = site else {
            return Err(Failure::usage(
                "--site (or a site's --key) is required with a ledger",
            ));
        };
        let key = site_key(&manifest, site)?;
        // Every set is checked: one naming another site is a finding, not silently dropped
        // (with --consortium the other sites' sets are read below).
        let set: Vec<api::Anchors> = sets
            .iter()
            .filter(|s| s.site == site || !a.consortium)
            .cloned()
            .collect();
        let summaries = summaries_to_anchors(&set, site, &key, &digest, &mut caveats);
        let anchors: Vec<Anchor> = summaries
            .iter()
            .map(|s| Anchor {
                entries: s.entries as usize,
                head: s.head,
            })
            .collect();
        let bytes =
            read_file(path).map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
        let report = audit_bytes(&bytes, &key, &anchors)
            .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
        summaries::check_manifest(&report, &digest, &mut caveats);
        summaries::check_monotone(&summaries, &mut caveats);
        summaries::check_epsilon(&bytes, &key, &summaries, &mut caveats);
        if let Some(agg) = &agg {
            let newest = summaries::newest_contribution(agg, site)?;
            summaries::check_fresh(&summaries, site, newest, &mut caveats);
        }
        // With an aggregator to ask, a ledger no summary anchors is not reported either (the
        // aggregator's silence would otherwise pass for a clean ledger).
        let critical: Vec<Row> = report
            .findings
            .iter()
            .filter(|f| {
                !f.is_compliance_only()
                    || (agg.is_some()
                        && matches!(f, amalgam_dp::ledger::audit::Finding::Unanchored))
            })
            .map(ledger_row)
            .collect();
        // Summaries the aggregator holds that are not the site's word (bad signature, filed
        // under another round or site) are the aggregator's fault: caveats, never a reason to
        // refuse the site's own report. What the site signed and contradicts its ledger is.
        let site_fault = |r: &Row| {
            r.severity == "critical"
                && !matches!(
                    r.code.as_str(),
                    "SummaryUnverifiable" | "SummaryMisfiled" | "AnchorsOfAnotherSite"
                )
        };
        if !critical.is_empty() || caveats.iter().any(site_fault) {
            let all: Vec<String> = critical
                .iter()
                .chain(caveats.iter().filter(|r| site_fault(r)))
                .map(|r| r.code.clone())
                .collect();
            return Err(Failure::failed(format!(
                "{}: the ledger does not verify ({}); refused, nothing reported (run `amalgam audit` for the rows)",
                path.display(),
                all.join(", ")
            )));
        }
        caveats.extend(report.findings.iter().map(ledger_row));
        if let Some(p) = report.policy {
            reported_policy = p;
        }
        mechanism = report.events.iter().rev().find_map(|e| match e {
            Event::Epoch { params, .. } => Some(*params),
            _ => None,
        });
        let cap = match reported_policy.budget {
            Budget::Capped { epsilon_cap, .. } => Some(epsilon_cap.get()),
            Budget::NoPrivacy => None,
        };
        let spent = report.private.then_some(report.epsilon_total);
        let m = members.get(usize::from(site));
        sites.push(SiteBudget {
            site,
            name: m.map(|m| m.name.clone()).unwrap_or_default(),
            organisation: m.map(|m| m.organisation.clone()).unwrap_or_default(),
            source: "ledger",
            as_of_round: summaries.last().map(|s| s.round),
            epsilon_cap: cap,
            epsilon_spent: spent,
            epsilon_unbounded: spent.is_none(),
            epsilon_remaining: cap.zip(spent).map(|(c, s)| (c - s).max(0.0)),
        });
    }
    if a.consortium {
        for (i, m) in members.iter().enumerate() {
            let i = i as u16;
            if sites.iter().any(|s: &SiteBudget| s.site == i) {
                continue;
            }
            let set: Vec<api::Anchors> = sets.iter().filter(|s| s.site == i).cloned().collect();
            let verified = summaries_to_anchors(&set, i, &m.key, &digest, &mut caveats);
            summaries::check_monotone(&verified, &mut caveats);
            if let Some(agg) = &agg {
                let newest = summaries::newest_contribution(agg, i)?;
                summaries::check_fresh(&verified, i, newest, &mut caveats);
            }
            let latest = verified.into_iter().next_back();
            sites.push(SiteBudget {
                site: i,
                name: m.name.clone(),
                organisation: m.organisation.clone(),
                source: "summary",
                as_of_round: latest.map(|s| s.round),
                epsilon_cap: cap,
                epsilon_spent: latest.map(|s| s.epsilon).filter(|e| e.is_finite()),
                epsilon_unbounded: latest.is_some_and(|s| s.epsilon.is_infinite()),
                epsilon_remaining: cap
                    .zip(latest.map(|s| s.epsilon).filter(|e| e.is_finite()))
                    .map(|(c, s)| (c - s).max(0.0)),
            });
        }
        sites.sort_by_key(|s| s.site);
        // A site's summaries that go backwards, or stop before the newest round it took part
        // in, would show less ε than it spent: refused rather than printed. (A summary that
        // does not verify is only a caveat: that site's spend is then shown as unknown.)
        let bad: Vec<String> = caveats
            .iter()
            .filter(|r| r.code == "SummaryRegressed" || r.code == "SummaryMissing")
            .map(|r| format!("{}: {}", r.code, r.detail))
            .collect();
        if !bad.is_empty() {
            return Err(Failure::failed(format!(
                "the sites' summaries do not verify; refused, nothing reported: {}",
                bad.join("; ")
            )));
        }
    }
    let mut record_paths = a.record_ledger.clone();
    if record_paths.is_empty()
        && let Some(dir) = a.state.as_deref().or(state.as_deref())
    {
        record_paths = crate::report_record::ledgers_under(dir);
    }
    let mut record_level = Vec::new();
    if !record_paths.is_empty() {
        let Some(site) = site else {
            return Err(Failure::usage(
                "--site (or a site's --key) is required with a record ledger",
            ));
        };
        let key = site_key(&manifest, site)?;
        for p in &record_paths {
            record_level.push(crate::report_record::section(p, &key, site)?);
        }
    }
    let page = Page {
        record_level,
        record_clip: a.record_clip,
        consortium: manifest.consortium().to_string(),
        epoch: manifest.epoch(),
        manifest_digest: hex::encode(digest),
        privacy_unit: format!("{:?}", reported_policy.unit),
        adjacency: format!("{:?}", reported_policy.adjacency),
        accountant: format!("{:?}", reported_policy.accountant),
        delta: reported_policy.delta().map(|d| d.get()),
        mechanism_matches_manifest: mechanism.is_some_and(|p| p == manifest.dp_round_params()),
        mechanism,
        sites,
        keys: keys(&manifest),
        collusion: collusion(&manifest),
        not_protected: not_protected(&manifest),
        caveats,
    };
    let text = render(&page);
    if let Some(h) = &a.html {
        std::fs::write(h, html(&page.consortium, &text))
            .map_err(|e| Failure::failed(format!("{}: {e}", h.display())))?;
    }
    match format {
        Format::Json => print_json(&page),
        Format::Text => {
            print!("{text}");
            Ok(())
        }
    }
}

fn keys(m: &VerifiedManifest) -> Vec<String> {
    let agg = m.aggregator();
    let mut out = vec![format!(
        "aggregator {} ({}): identity key {} — pinned by every member; signs a fresh TLS key at each start; holds no key that unmasks a single site's input",
        agg.name,
        agg.organisation,
        fingerprint(&agg.key)
    )];
    for (i, s) in m.sites().iter().enumerate() {
        out.push(format!(
            "site {i} {} ({}): identity key {} — signs its uploads, ledger and summaries; its state key, noise and mask seeds never leave its state directory",
            s.name,
            s.organisation,
            fingerprint(&s.key)
        ));
    }
    out.push(
        "mask seeds: each site's secrets are Shamir-shared t-of-n among the sites (no single party holds another site's seed)".into(),
    );
    for (i, d) in m.decryptors().iter().enumerate() {
        out.push(format!(
            "decryptor {i} {} ({}): identity key {} — one share of the fallback's decryption key",
            d.name,
            d.organisation,
            fingerprint(&d.key)
        ));
    }
    out
}

fn collusion(m: &VerifiedManifest) -> Collusion {
    let p = m.body().protocol;
    Collusion {
        rounds: format!("0..={} (epoch {})", m.max_round(), m.epoch()),
        sites: m.sites().len(),
        threshold_t: p.threshold,
        colluders_c: p.colluders,
        dropouts_f: p.dropouts,
        min_cohort_m: p.min_cohort,
        n_min: u32::from(p.min_cohort).saturating_sub(u32::from(p.colluders)),
        trust: format!("{:?}", p.trust),
        graph: format!("{:?}", p.graph),
        committee: m.committee().map(|c| {
            format!(
                "threshold {} of quorum {}, tolerating {} corrupt decryptors",
                c.threshold, c.quorum, c.corrupt
            )
        }),
    }
}

fn not_protected(m: &VerifiedManifest) -> Vec<String> {
    let weights = match m.campaign().weight_mode {
        WeightMode::Uniform => "dataset sizes: not used (every site counts once)".to_string(),
        WeightMode::Declared => {
            "dataset sizes: DECLARED — each site's aggregation weight (usually its record count) is public in the manifest, to the aggregator and every member".into()
        }
        WeightMode::Noised if m.body().dp.budget == amalgam_consortium::DpBudget::None => {
            "dataset sizes: NOISED WEIGHTS WITHOUT DIFFERENTIAL PRIVACY — each site's weight min(n / n_cap, 1) is summed under the mask but with no noise: sample counts are revealed to the aggregator and every member as each round's exact weight sum, also by differencing across rounds".into()
        }
        WeightMode::Noised => {
            "dataset sizes: NOISED — each site's weight min(n / n_cap, 1) is summed under the mask with the site-level noise and covered by its ε; the aggregator and every member learn each round's noisy weight sum over its contributors".into()
        }
    };
    vec![
        "participation: which sites took part in, declined, or dropped out of each round is visible to the aggregator (and per-phase counts to every member)".into(),
        weights,
        "timing: when each site uploads, and how long its training took, is visible to the aggregator".into(),
        "the global model's integrity: a site checks the model chain against its own computation, but a malicious aggregator can still skew the FedAvg divisor within the contributor-list checks (site-agent.md §6), and the published model itself is not differentially private beyond the noised sum".into(),
        "the noised sum of every published round, and of up to max_aborted_rounds unpublished ones, is learnt by the aggregator".into(),
    ]
}

fn render(p: &Page) -> String {
    let mut out = format!(
        "PRIVACY REPORT — consortium {}, epoch {}\nmanifest {}\n\n",
        p.consortium, p.epoch, p.manifest_digest
    );
    out.push_str(&format!(
        "Guarantee\n  privacy unit: {}\n  adjacency: {}\n  accountant: {}\n  delta: {}\n\n",
        p.privacy_unit,
        p.adjacency,
        p.accountant,
        p.delta.map_or_else(
            || "none (no differential privacy)".into(),
            |d| format!("{d:e}")
        )
    ));
    out.push_str("Budget per site (epsilon)\n");
    out.push_str(&format!(
        "  {:<5} {:<20} {:<8} {:>10} {:>12} {:>12} {:>10}\n",
        "site", "name", "source", "round", "cap", "spent", "remaining"
    ));
    let num = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.6}"));
    for s in &p.sites {
        out.push_str(&format!(
            "  {:<5} {:<20} {:<8} {:>10} {:>12} {:>12} {:>10}\n",
            s.site,
            s.name,
            s.source,
            s.as_of_round.map_or_else(|| "-".into(), |r| r.to_string()),
            num(s.epsilon_cap),
            if s.epsilon_unbounded {
                "unbounded".into()
            } else {
                num(s.epsilon_spent)
            },
            num(s.epsilon_remaining)
        ));
    }
    out.push_str("\nMechanism (from the ledger's epoch entry)\n");
    match &p.mechanism {
        Some(m) => out.push_str(&format!(
            "  clip C = {}, local sigma = {}, bits b = {}, gamma = {}, beta = {}, d = {}, min cohort m = {}, colluders c = {}, cohort n = {}\n  matches the manifest: {}\n",
            m.clip.get(),
            m.local_sigma.get(),
            m.bits.get(),
            m.gamma.get(),
            m.beta.get(),
            m.dim.get(),
            m.min_cohort.get(),
            m.colluders,
            m.n_cohort.get(),
            p.mechanism_matches_manifest
        )),
        None => out.push_str("  no ledger given\n"),
    }
    let c = &p.collusion;
    out.push_str(&format!(
        "\nCollusion bounds in force (rounds {})\n  n = {} sites, threshold t = {}, colluders c = {}, dropouts f = {}, min cohort m = {}, n_min = m - c = {}\n  aggregator trust: {}, graph: {}\n  committee: {}\n",
        c.rounds,
        c.sites,
        c.threshold_t,
        c.colluders_c,
        c.dropouts_f,
        c.min_cohort_m,
        c.n_min,
        c.trust,
        c.graph,
        c.committee.as_deref().unwrap_or("none")
    ));
    out.push_str("\nWho holds which key\n");
    for k in &p.keys {
        out.push_str(&format!("  {k}\n"));
    }
    out.push_str(&crate::report_record::render(
        &p.record_level,
        p.mechanism.as_ref().map(|m| m.clip.get()),
        p.record_clip,
    ));
    out.push_str("\nNOT protected\n");
    for n in &p.not_protected {
        out.push_str(&format!("  - {n}\n"));
    }
    if !p.caveats.is_empty() {
        out.push_str("\nCaveats\n");
        for r in &p.caveats {
            out.push_str(&format!("  {} {}: {}\n", r.severity, r.code, r.detail));
        }
    }
    out
}

fn html(title: &str, text: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Amalgam privacy report — {}</title></head>\n<body><pre>{}</pre></body></html>\n",
        esc(title),
        esc(text)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn html_escapes_markup_in_the_title_and_the_text() {
        let page = super::html("a<b>\"c\"", "site <script>alert(1)</script> & co");
        assert!(!page.contains("<script>") && !page.contains("a<b>"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"));
        assert!(page.contains("a&lt;b&gt;&quot;c&quot;"));
    }
}
