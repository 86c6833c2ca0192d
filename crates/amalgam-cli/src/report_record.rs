//! The record-level part of `amalgam report privacy`: one section per audited record ledger,
//! kept apart from the site-level guarantee (another unit, another accountant, another clip
//! norm), so neither figure is read as the other.

use std::path::{Path, PathBuf};

use amalgam_dp::ledger::record::{RecordLedgerError, audit_record_file};
use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use crate::Failure;

/// One dataset's record-level guarantee.
#[derive(Debug, Serialize)]
pub struct RecordSection {
    /// The site whose records these are.
    pub site: u16,
    /// The dataset id (of its declared name), hex.
    pub dataset: String,
    /// N_i of the data the latest accepted run trained on, treated as public (0 before any
    /// run).
    pub records: u64,
    /// N_max, the most records any version may hold (public).
    pub max_records: u64,
    /// Versions of the data file the accepted runs trained on: a record added in a later
    /// version is charged the whole total too.
    pub data_versions: usize,
    /// δ of the record-level statement.
    pub delta: f64,
    /// 1/(10·N_max), the largest δ the ledger accepts.
    pub delta_limit: f64,
    /// The cap.
    pub epsilon_cap: f64,
    /// ε of every accepted run, re-accounted.
    pub epsilon_spent: f64,
    /// The Rényi order that attained it.
    pub order: u32,
    /// Accepted local runs.
    pub runs: usize,
    /// Refused runs.
    pub refused: usize,
    /// Noisy steps over the accepted runs.
    pub steps: u64,
    /// Distinct (q, z) of the accepted runs.
    pub mechanisms: Vec<(f64, f64)>,
    /// The audited ledger's head (hex): the anchor a later audit is checked against.
    pub head: String,
}

/// The record ledgers under `state` (`STATE/records/*/record-in-dataset.ledger`).
pub fn ledgers_under(state: &Path) -> Vec<PathBuf> {
    let name =
        amalgam_dp::ledger::ledger_file_name(amalgam_dp::ledger::PrivacyUnit::RecordInDataset);
    let Ok(dirs) = std::fs::read_dir(crate::record_dp::default_dir(state)) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dirs
        .filter_map(Result::ok)
        .map(|d| d.path().join(name))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Audits the record ledger at `path` under `key`; refuses one with any finding.
pub fn section(path: &Path, key: &VerifyingKey, site: u16) -> Result<RecordSection, Failure> {
    let r = audit_record_file(path, Some(key), &[])
        .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
    if !r.is_clean() {
        return Err(Failure::failed(format!(
            "{}: {}; refused, nothing reported",
            path.display(),
            RecordLedgerError::Tampered(r.findings)
        )));
    }
    let p = r
        .policy
        .ok_or_else(|| Failure::failed(format!("{}: no genesis", path.display())))?;
    let mut mechanisms: Vec<(f64, f64)> = Vec::new();
    for run in &r.runs {
        let m = (run.charge.request.q, run.charge.request.noise_multiplier);
        if !mechanisms.contains(&m) {
            mechanisms.push(m);
        }
    }
    Ok(RecordSection {
        site,
        dataset: hex::encode(p.dataset),
        records: r.runs.last().map_or(0, |x| x.charge.request.data.records),
        max_records: p.max_records,
        data_versions: r.data_versions.len(),
        delta: p.delta.get(),
        delta_limit: 1.0 / (10.0 * p.max_records as f64),
        epsilon_cap: p.epsilon_cap.get(),
        epsilon_spent: r.epsilon_total,
        order: r.order,
        runs: r.runs.len(),
        refused: r.refused,
        steps: r.steps,
        mechanisms,
        head: r.head,
    })
}

/// The text of the record-level sections; `site_clip` is the site-level clip norm C.
pub fn render(
    sections: &[RecordSection],
    site_clip: Option<f64>,
    record_clip: Option<f64>,
) -> String {
    let mut out = String::from(
        "\nRecord-level guarantee (DP-SGD inside each plant; a separate statement from the site-level one above)\n",
    );
    if sections.is_empty() {
        out.push_str("  no record ledger given: no record-level statement\n");
        return out;
    }
    for s in sections {
        out.push_str(&format!(
            "  site {}: privacy unit: one training record of this plant's own dataset {} (add/remove one record)\n",
            s.site, s.dataset
        ));
        out.push_str(&format!(
            "    records N_i = {} in the latest of {} data version(s), at most N_max = {} (treated as public); delta = {:e} (at most 1/(10 N_max) = {:e}); a record added in a later version is covered by the whole total\n",
            s.records, s.data_versions, s.max_records, s.delta, s.delta_limit
        ));
        out.push_str(&format!(
            "    record-level epsilon spent = {:.6} of cap {:.6} (order {}; {} runs, {} noisy steps, {} refused)\n",
            s.epsilon_spent, s.epsilon_cap, s.order, s.runs, s.steps, s.refused
        ));
        for (q, z) in &s.mechanisms {
            out.push_str(&format!("    runs at q = {q}, z = sigma/Delta = {z}\n"));
        }
    }
    out.push_str(&format!(
        "  accountant: {}\n",
        amalgam_report::record::ACCOUNTANT
    ));
    out.push_str(&format!(
        "  clip norms: record-level C_rec = {} bounds one record's gradient in each step; site-level C = {} bounds the plant's whole update in each round\n",
        record_clip.map_or_else(|| "-".into(), |c| c.to_string()),
        site_clip.map_or_else(|| "-".into(), |c| c.to_string()),
    ));
    out.push_str(&format!(
        "  not covered: {}\n",
        amalgam_report::record::NOT_COVERED
    ));
    out
}
