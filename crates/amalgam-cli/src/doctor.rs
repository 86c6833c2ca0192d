//! `amalgam site doctor`: what stops this site from taking part, as rows of problem and how to
//! fix it — key file and directory permissions, the manifest's signatures and epoch against the
//! persisted high-water mark, reachability (nothing listening vs no answer), the aggregator pin
//! (a mismatch is reported as probable TLS interception), clock skew against the aggregator's
//! authenticated time, the ledger's audit, the state directory's file system and free space.
//! It reads and changes nothing but what it prints. Exit 1 when any row is a problem.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use amalgam_consortium::{EpochHighWater, IdentityKey, SignedManifest, VerifiedManifest};
use amalgam_dp::ledger::audit::{Anchor, audit_bytes};
use amalgam_dp::ledger::ledger_file_name;
use amalgam_dp::ledger::store::read_file;
use amalgam_net::api;
use amalgam_store::{FsKind, fs_kind};
use serde::Serialize;

use crate::Failure;
use crate::aggregator::{Aggregator, MAX_SMALL, Member};
use crate::audit::{agent_dir, summaries_to_anchors};
use crate::config::{Config, Format, print_json};

/// Largest clock difference with the aggregator before it is a problem (deadlines and TLS
/// binding expiry are absolute instants).
pub const MAX_SKEW_S: u64 = 300;
/// Free space below which the state directory is a problem (sealed state, ledger, models).
pub const MIN_FREE_BYTES: u64 = 256 << 20;

/// `amalgam site doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The co-signed consortium manifest.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// This site's identity key file.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The site agent's state directory.
    #[arg(long)]
    state: Option<PathBuf>,
    /// The aggregator, `https://host:port`.
    #[arg(long)]
    aggregator: Option<String>,
    /// Output format.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// One row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    /// What was checked.
    pub check: &'static str,
    /// `ok`, `warning` or `problem`.
    pub status: &'static str,
    /// What was found.
    pub detail: String,
    /// How to fix it (empty when ok).
    pub fix: String,
}

fn ok(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        status: "ok",
        detail: detail.into(),
        fix: String::new(),
    }
}

fn problem(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        check,
        status: "problem",
        detail: detail.into(),
        fix: fix.into(),
    }
}

fn warning(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        check,
        status: "warning",
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// Mode bits beyond `allowed` on `path` as a row.
fn mode_check(check: &'static str, path: &Path, allowed: u32, want: &str) -> Check {
    match std::fs::symlink_metadata(path) {
        Err(e) => problem(
            check,
            format!("{}: {e}", path.display()),
            "create it, or fix the path",
        ),
        Ok(m) if m.file_type().is_symlink() => problem(
            check,
            format!("{} is a symbolic link", path.display()),
            "point the setting at the real file (links are refused)",
        ),
        Ok(m) => {
            let mode = m.permissions().mode() & 0o7777;
            if mode & !allowed != 0 {
                problem(
                    check,
                    format!(
                        "{} is mode {mode:04o}: readable or writable by others",
                        path.display()
                    ),
                    format!("chmod {want} {}", path.display()),
                )
            } else {
                ok(check, format!("{} mode {mode:04o}", path.display()))
            }
        }
    }
}

/// The key's file and directory (`IdentityKey::load` refuses wider modes).
fn key_checks(key: &Path) -> Vec<Check> {
    let (dir, file) = if key.is_dir() {
        (key.to_path_buf(), key.join("identity.key"))
    } else {
        let dir = match key.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (dir, key.to_path_buf())
    };
    vec![
        mode_check("key file", &file, 0o600, "600"),
        mode_check("key directory", &dir, 0o700, "700"),
    ]
}

/// Clock skew between this host and the aggregator's authenticated time, `local_ms` the
/// midpoint of the request.
pub fn skew_check(local_ms: u64, server_ms: u64) -> Check {
    let skew = local_ms.abs_diff(server_ms) / 1000;
    let ahead = if local_ms > server_ms {
        "ahead of"
    } else {
        "behind"
    };
    if skew > MAX_SKEW_S {
        problem(
            "clock",
            format!("this host is {skew} s {ahead} the aggregator (more than {MAX_SKEW_S} s)"),
            "synchronise the clock (NTP/chrony); phase deadlines and the aggregator's TLS binding expiry are absolute times",
        )
    } else {
        ok("clock", format!("{skew} s {ahead} the aggregator"))
    }
}

/// The state directory's file system as a row.
pub fn fs_check(kind: &FsKind) -> Check {
    match kind {
        FsKind::Local(k) => ok("file system", format!("local ({k})")),
        FsKind::Network(k) => problem(
            "file system",
            format!(
                "the state directory is on a network file system ({k}): locks and fsync are not what the stores rely on; the site agent refuses it"
            ),
            "move the state directory to a local, encrypted disk",
        ),
        FsKind::Unknown(magic) => warning(
            "file system",
            format!("unrecognised file system (statfs magic {magic:#x}, FUSE or other)"),
            "make sure it is a local disk with working flock and fsync",
        ),
    }
}

fn state_checks(state: &Path) -> Vec<Check> {
    if !state.exists() {
        return vec![warning(
            "state directory",
            format!("{} does not exist yet", state.display()),
            "it is created (0700) by the first `amalgam site run`",
        )];
    }
    let mut out = vec![mode_check("state directory", state, 0o700, "700")];
    let state_key = agent_dir(state).join("state.key");
    if state_key.exists() {
        out.push(mode_check("state key", &state_key, 0o600, "600"));
    }
    match fs_kind(state) {
        Ok(k) => out.push(fs_check(&k)),
        Err(e) => out.push(problem("file system", e.to_string(), "check the path")),
    }
    match rustix::fs::statvfs(state) {
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            if free < MIN_FREE_BYTES {
                out.push(problem(
                    "free space",
                    format!("{} MiB free", free >> 20),
                    format!(
                        "free at least {} MiB on the state directory's disk",
                        MIN_FREE_BYTES >> 20
                    ),
                ));
            } else {
                out.push(ok("free space", format!("{} MiB free", free >> 20)));
            }
        }
        Err(e) => out.push(problem("free space", e.to_string(), "check the path")),
    }
    out
}

fn manifest_check(
    manifest: &Path,
    key: &IdentityKey,
    state: &Path,
) -> (Check, Option<VerifiedManifest>) {
    let hw = match EpochHighWater::load(&state.join("epoch.highwater")) {
        Ok(hw) => hw,
        Err(e) => {
            return (
                problem(
                    "manifest",
                    format!("epoch high-water mark: {e}"),
                    "restore the state directory from this site's own copy",
                ),
                None,
            );
        }
    };
    let me = key.verifying_key();
    let checked = SignedManifest::read(manifest).and_then(|s| s.verify_for(&me, hw.as_ref()));
    match checked {
        Ok(m) => {
            let hw_text = hw.as_ref().map_or_else(
                || "no epoch accepted yet".to_string(),
                |h| format!("high-water epoch {}", h.epoch),
            );
            let site = m.site_index(&me);
            let c = match site {
                Some(i) => ok(
                    "manifest",
                    format!(
                        "signatures verify; epoch {} ({hw_text}); this key is site {i}",
                        m.epoch()
                    ),
                ),
                None => problem(
                    "manifest",
                    "this key is listed but is not a site",
                    "use the site's own identity key",
                ),
            };
            (c, Some(m))
        }
        Err(e) => (
            problem(
                "manifest",
                e.to_string(),
                "fetch the consortium's current co-signed manifest (an older epoch than this site accepted is refused)",
            ),
            None,
        ),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reachability, pin and clock from one authenticated `GET /v1/time`.
fn aggregator_checks(url: &str, member: &Member) -> (Vec<Check>, Option<Aggregator>) {
    let agg = match Aggregator::connect(url, member, false, MAX_SMALL) {
        Ok(a) => a,
        Err(f) => {
            return (
                vec![problem(
                    "aggregator",
                    f.message,
                    "check the URL (https://host:port)",
                )],
                None,
            );
        }
    };
    let before = now_ms();
    let time: Result<api::ServerTime, Failure> = agg.json(api::TIME);
    let after = now_ms();
    match time {
        Ok(t) => (
            vec![
                ok("aggregator", format!("{url} answers")),
                ok(
                    "pin",
                    "the aggregator's TLS key is bound to the identity key the manifest pins",
                ),
                skew_check(before / 2 + after / 2, t.unix_ms),
            ],
            Some(agg),
        ),
        Err(f) => {
            let m = f.message.clone();
            let row = if m.contains("probable TLS interception") {
                problem(
                    "pin",
                    m,
                    "pin mismatch, probable TLS interception: do not connect; check for a proxy or a wrong address, compare the aggregator's fingerprint out of band",
                )
            } else if f.code == 5 && m.to_lowercase().contains("refused") {
                problem(
                    "aggregator",
                    m,
                    "nothing listens at that address: is the aggregator running, is the port right?",
                )
            } else if f.code == 5 {
                problem(
                    "aggregator",
                    m,
                    "no answer: check the network path and firewall to the aggregator",
                )
            } else if f.code == 4 {
                problem(
                    "aggregator",
                    m,
                    "the aggregator refused this key: is it serving this manifest's epoch?",
                )
            } else {
                problem("aggregator", m, "see the aggregator's logs")
            };
            (vec![row], None)
        }
    }
}

fn ledger_check(
    state: &Path,
    manifest: &VerifiedManifest,
    site: u16,
    agg: Option<&Aggregator>,
) -> Check {
    let Ok(policy) = manifest.budget_policy() else {
        return problem(
            "ledger",
            "the manifest's budget policy is invalid",
            "fix the manifest",
        );
    };
    let path = agent_dir(state).join(ledger_file_name(policy.unit));
    if !path.exists() {
        return ok("ledger", "no ledger yet (created by the first round)");
    }
    let Some(key) = manifest.sites().get(usize::from(site)).map(|m| m.key) else {
        return problem("ledger", "no site key", "use the site's key");
    };
    let mut rows = Vec::new();
    let summaries = match agg.map(|a| a.json::<api::Anchors>(&format!("/v1/anchors/{site}"))) {
        Some(Ok(set)) => {
            summaries_to_anchors(&[set], site, &key, &manifest.consortium_digest(), &mut rows)
        }
        _ => Vec::new(),
    };
    let anchors: Vec<Anchor> = summaries
        .iter()
        .map(|s| Anchor {
            entries: s.entries as usize,
            head: s.head,
        })
        .collect();
    let report = match read_file(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| audit_bytes(&b, &key, &anchors).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            return problem(
                "ledger",
                e,
                "run `amalgam audit` and restore the ledger from this site's own backup",
            );
        }
    };
    let critical: Vec<String> = report
        .findings
        .iter()
        .filter(|f| !f.is_compliance_only())
        .map(|f| format!("{f:?}"))
        .chain(rows.iter().map(|r| r.code.clone()))
        .collect();
    if !critical.is_empty() {
        problem(
            "ledger",
            format!("audit findings: {}", critical.join("; ")),
            "run `amalgam audit --transcripts` for the rows; the site agent refuses to charge a ledger that does not verify",
        )
    } else if !report.findings.is_empty() {
        warning(
            "ledger",
            format!(
                "{} entries verify; compliance findings: {:?}",
                report.entries, report.findings
            ),
            "anchor it: the aggregator must be reachable to check the site's published summaries",
        )
    } else {
        ok(
            "ledger",
            format!(
                "{} entries verify against {} published summaries; epsilon spent {:.6}",
                report.entries, report.anchors_checked, report.epsilon_total
            ),
        )
    }
}

/// Runs `amalgam site doctor`.
pub fn run(a: &Args, config: &Config) -> Result<(), Failure> {
    let s = config.section("doctor");
    let format = s.format(a.format)?;
    let manifest = s.require_path("manifest", a.manifest.as_deref())?;
    let key_path = s.require_path("key", a.key.as_deref())?;
    let state = s.require_path("state", a.state.as_deref())?;
    let url = s.require_string("aggregator", a.aggregator.as_deref())?;
    let mut rows = key_checks(&key_path);
    rows.extend(state_checks(&state));
    match IdentityKey::load(&key_path) {
        Err(e) => rows.push(problem(
            "key",
            e.to_string(),
            "give the site's identity key file (0600 in a 0700 directory)",
        )),
        Ok(identity) => {
            let (row, verified) = manifest_check(&manifest, &identity, &state);
            rows.push(row);
            if let Some(m) = verified {
                let site = m.site_index(&identity.verifying_key());
                let member = Member {
                    manifest: m.clone(),
                    identity,
                };
                let (more, agg) = aggregator_checks(&url, &member);
                rows.extend(more);
                if let Some(site) = site {
                    rows.push(ledger_check(&state, &m, site, agg.as_ref()));
                }
            }
        }
    }
    let problems = rows.iter().filter(|r| r.status == "problem").count();
    match format {
        Format::Json => print_json(&serde_json::json!({ "checks": rows, "problems": problems }))?,
        Format::Text => {
            for r in &rows {
                println!("{:<8} {:<16} {}", r.status, r.check, r.detail);
                if !r.fix.is_empty() {
                    println!("{:<8} {:<16} fix: {}", "", "", r.fix);
                }
            }
        }
    }
    if problems == 0 {
        Ok(())
    } else {
        Err(Failure::failed(format!(
            "site doctor: {problems} problem(s)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_above_300_s_is_a_problem_either_way() {
        assert_eq!(skew_check(1_000_000, 1_000_000).status, "ok");
        assert_eq!(skew_check(1_000_000 + 300_000, 1_000_000).status, "ok");
        let fast = skew_check(1_000_000 + 301_000, 1_000_000);
        assert_eq!(fast.status, "problem");
        assert!(fast.detail.contains("301 s ahead of"), "{}", fast.detail);
        let slow = skew_check(1_000_000, 1_000_000 + 3_600_000);
        assert!(slow.status == "problem" && slow.detail.contains("behind"));
    }

    #[test]
    fn network_file_systems_are_problems_fuse_a_warning() {
        assert_eq!(fs_check(&FsKind::Network("nfs")).status, "problem");
        assert!(fs_check(&FsKind::Network("nfs")).detail.contains("nfs"));
        assert_eq!(fs_check(&FsKind::Local("ext2/3/4")).status, "ok");
        assert_eq!(fs_check(&FsKind::Unknown(0x6573_5546)).status, "warning");
    }
}
