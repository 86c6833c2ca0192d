//! `amalgam audit`'s record-level part: each record ledger (`--record-ledger FILE`, or every
//! ledger under `--state`'s record directory) verified offline with amalgam-dp's
//! `audit_record_file` under the site's manifest key, against the record anchors the site
//! published in its signed summaries (record-dp.md §8). The published anchors are the copy
//! the plant's operator cannot reach: a ledger behind one, another ledger of a dataset a
//! summary anchors, or (with `--state`) no ledger at all for such a dataset is a finding.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use amalgam_dp::ledger::audit::Anchor;
use amalgam_dp::ledger::record::{RecordAuditReport, RecordFinding, audit_record_file};
use amalgam_site::statements::{LedgerSummary, RecordAnchor};
use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use crate::Failure;
use crate::audit::Row;

/// Most dataset directories read under a record-ledger directory.
const MAX_DATASETS: usize = 4096;

/// One audited record ledger as printed.
#[derive(Debug, Serialize)]
pub struct RecordOutcome {
    /// The ledger file.
    pub ledger: String,
    /// Its dataset id (hex), from its genesis policy.
    pub dataset: Option<String>,
    /// The audit.
    pub report: RecordAuditReport,
}

/// The record ledgers to audit: the file named, else every
/// `<dataset hex>/record-in-dataset.ledger` under `dir` (none when `dir` does not exist).
pub fn discover(flag: Option<&Path>, dir: Option<&Path>) -> Result<Vec<PathBuf>, Failure> {
    if let Some(f) = flag {
        return Ok(vec![f.to_path_buf()]);
    }
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Failure::failed(format!("{}: {e}", dir.display()))),
    };
    let name =
        amalgam_dp::ledger::ledger_file_name(amalgam_dp::ledger::PrivacyUnit::RecordInDataset);
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Failure::failed(format!("{}: {e}", dir.display())))?;
        let p = entry.path().join(name);
        if p.is_file() {
            out.push(p);
        }
        if out.len() > MAX_DATASETS {
            return Err(Failure::failed(format!(
                "{}: more than {MAX_DATASETS} record ledgers",
                dir.display()
            )));
        }
    }
    out.sort();
    Ok(out)
}

/// The published record anchors of `dataset`, as ledger anchors: each summary's (entries,
/// head), and its ledger id as the anchor of the genesis entry (entry 0's hash), so another
/// ledger of the dataset is a finding even where its length and head happen to pass.
pub fn anchors_of(summaries: &[LedgerSummary], dataset: &[u8; 32]) -> Vec<Anchor> {
    let mut out = Vec::new();
    for r in summaries.iter().filter_map(|s| s.record.as_ref()) {
        if &r.dataset != dataset {
            continue;
        }
        for a in [
            Anchor {
                entries: 1,
                head: r.ledger_id,
            },
            Anchor {
                entries: usize::try_from(r.entries).unwrap_or(usize::MAX),
                head: r.head,
            },
        ] {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// Relative tolerance between a published ε and the ledger's at the same anchor (the ledger's
/// own recorded-versus-recomputed tolerance).
const EPSILON_TOLERANCE: f64 = 1e-9;

/// ε of the ledger after its first `entries` entries: the total of the last accepted run among
/// them (0 before any).
fn epsilon_at(report: &RecordAuditReport, entries: usize) -> f64 {
    // The runs are in entry order: the last one before `entries` by binary search.
    let before = report.runs.partition_point(|r| r.index < entries);
    before
        .checked_sub(1)
        .map_or(0.0, |i| report.runs[i].charge.epsilon_total)
}

/// What one site's summaries publish about its record datasets, in round order: more than one
/// record dataset id (`RecordDatasetChanged`: the same records declared under a second name
/// start a second budget), and, per dataset, another ledger id, fewer entries or a smaller ε
/// than an earlier round's summary (`RecordAnchorRegressed`: a stale anchor, which the site
/// signs with its own key, would pass the per-summary checks). Both critical.
pub fn summary_consistency(summaries: &[LedgerSummary]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut ordered: Vec<&LedgerSummary> = summaries.iter().collect();
    ordered.sort_by_key(|s| s.round);
    let datasets: BTreeSet<[u8; 32]> = ordered
        .iter()
        .filter_map(|s| s.record.as_ref().map(|r| r.dataset))
        .collect();
    if datasets.len() > 1 {
        rows.push(Row {
            severity: "critical",
            code: "RecordDatasetChanged".into(),
            detail: format!(
                "the site's summaries anchor {} record datasets ({}): one site charges one record dataset in a consortium, and the same records under another name would start a second budget",
                datasets.len(),
                datasets.iter().map(hex::encode).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let mut last: std::collections::BTreeMap<[u8; 32], (u64, &RecordAnchor)> =
        std::collections::BTreeMap::new();
    for s in ordered {
        let Some(r) = s.record.as_ref() else {
            continue;
        };
        if let Some((round, prev)) = last.get(&r.dataset) {
            let regressed = r.ledger_id != prev.ledger_id
                || r.entries < prev.entries
                || r.epsilon < prev.epsilon;
            if regressed {
                rows.push(Row {
                    severity: "critical",
                    code: "RecordAnchorRegressed".into(),
                    detail: format!(
                        "dataset {}: the summary of round {} publishes ledger {}, {} entries, epsilon {}; round {round}'s published ledger {}, {} entries, epsilon {}",
                        hex::encode(r.dataset),
                        s.round,
                        hex::encode(&r.ledger_id[..8]),
                        r.entries,
                        r.epsilon,
                        hex::encode(&prev.ledger_id[..8]),
                        prev.entries,
                        prev.epsilon
                    ),
                });
            }
        }
        last.insert(r.dataset, (s.round, r));
    }
    rows
}

/// Every summary of `dataset` whose published ε is not the ledger's ε at the anchor that
/// summary publishes (`RecordEpsilonMisstated`, critical): a site that posts a smaller spend
/// than its chain holds understates its record-level exposure to the consortium. Anchors the
/// ledger does not hold are the anchor check's findings, not compared here.
pub fn misstated_epsilon(
    ledger: &Path,
    summaries: &[LedgerSummary],
    dataset: &[u8; 32],
    report: &RecordAuditReport,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for s in summaries {
        let Some(r) = s.record.as_ref().filter(|r| &r.dataset == dataset) else {
            continue;
        };
        let Ok(entries) = usize::try_from(r.entries) else {
            continue;
        };
        if entries == 0 || entries > report.entries {
            continue;
        }
        let held = epsilon_at(report, entries);
        let off = (r.epsilon - held).abs() > EPSILON_TOLERANCE * held.abs().max(1.0);
        if off || r.epsilon.is_nan() {
            rows.push(Row {
                severity: "critical",
                code: "RecordEpsilonMisstated".into(),
                detail: format!(
                    "{}: the summary of round {} publishes record-level epsilon {} at {} entries; the ledger holds {held} there",
                    ledger.display(),
                    s.round,
                    r.epsilon,
                    r.entries
                ),
            });
        }
    }
    rows
}

/// A record finding as a row (`Record` + the finding's name); a torn tail is a crash
/// artefact (compliance), every other finding critical.
pub fn record_row(ledger: &Path, f: &RecordFinding) -> Row {
    let text = format!("{f:?}");
    let name = text
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("Finding");
    Row {
        severity: if f.is_crash_only() {
            "compliance"
        } else {
            "critical"
        },
        code: format!("Record{name}"),
        detail: format!("{}: {text}", ledger.display()),
    }
}

/// Audits every ledger in `ledgers` under `key` against the record anchors of `summaries`.
/// With `complete` (the ledgers are all of a state directory's), a dataset a summary anchors
/// with no ledger among them is a `RecordLedgerMissing` finding: the file was deleted.
pub fn audit_records(
    ledgers: &[PathBuf],
    key: &VerifyingKey,
    summaries: &[LedgerSummary],
    complete: bool,
    rows: &mut Vec<Row>,
) -> Result<Vec<RecordOutcome>, Failure> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for path in ledgers {
        // First pass for the dataset the ledger's genesis names; the anchors depend on it.
        let first = audit_record_file(path, Some(key), &[])
            .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
        let dataset = first.policy.as_ref().map(|p| p.dataset);
        let report = match &dataset {
            Some(d) => {
                seen.insert(*d);
                audit_record_file(path, Some(key), &anchors_of(summaries, d))
                    .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?
            }
            None => first,
        };
        rows.extend(report.findings.iter().map(|f| record_row(path, f)));
        if let Some(d) = &dataset {
            rows.extend(misstated_epsilon(path, summaries, d, &report));
        }
        out.push(RecordOutcome {
            ledger: path.display().to_string(),
            dataset: dataset.map(hex::encode),
            report,
        });
    }
    rows.extend(summary_consistency(summaries));
    let published: BTreeSet<[u8; 32]> = summaries
        .iter()
        .filter_map(|s| s.record.as_ref().map(|r: &RecordAnchor| r.dataset))
        .collect();
    for d in published.difference(&seen) {
        rows.push(if complete {
            Row {
                severity: "critical",
                code: "RecordLedgerMissing".into(),
                detail: format!(
                    "the site's summaries anchor a record ledger of dataset {} that the state directory does not hold",
                    hex::encode(d)
                ),
            }
        } else {
            Row {
                severity: "compliance",
                code: "RecordLedgerNotAudited".into(),
                detail: format!(
                    "the site's summaries anchor a record ledger of dataset {} that was not given to this audit: its spend is unverified",
                    hex::encode(d)
                ),
            }
        });
    }
    Ok(out)
}
