//! Checks of a site's signed ledger summaries beyond their signatures, shared by `amalgam
//! audit` and `amalgam report privacy`: a summary is the site's word on its ledger at a round,
//! so each must state the ε the ledger recomputes at the prefix it names (+∞ for a ledger with
//! a round without differential privacy), the summaries must never go backwards (entries and ε
//! non-decreasing in round), and the newest round the site took part in must have one (else a
//! set of old summaries would pass for the latest word, or hide a ledger cut after them).

use amalgam_dp::ledger::audit::audit_bytes;
use amalgam_dp::ledger::store::{self, MAGIC};
use amalgam_net::api;
use amalgam_site::statements::LedgerSummary;
use ed25519_dalek::VerifyingKey;

use crate::Failure;
use crate::aggregator::Aggregator;
use crate::audit::Row;

/// Bytes of a record's length field and checksum (the ledger store's framing).
const FRAME_OVERHEAD: usize = 4 + 32;

/// Most summaries whose prefix ε is recomputed (each is an audit of the prefix).
const MAX_RECOMPUTED: usize = 4096;

fn critical(code: &str, detail: String) -> Row {
    Row {
        severity: "critical",
        code: code.into(),
        detail,
    }
}

/// The byte length of the ledger's first `entries` records, if it has that many.
pub fn prefix_len(bytes: &[u8], entries: usize) -> Option<usize> {
    let parsed = store::parse(bytes).ok()?;
    if entries > parsed.payloads.len() {
        return None;
    }
    if entries == 0 {
        return Some(0);
    }
    Some(
        MAGIC.len()
            + parsed.payloads[..entries]
                .iter()
                .map(|p| p.len() + FRAME_OVERHEAD)
                .sum::<usize>(),
    )
}

/// ε the ledger's first `entries` records add up to (+∞ when one of them ran a round without
/// differential privacy), or `None` when the ledger is shorter (the anchor check reports that).
pub fn epsilon_at(bytes: &[u8], key: &VerifyingKey, entries: usize) -> Option<f64> {
    let len = prefix_len(bytes, entries)?;
    let report = audit_bytes(&bytes[..len], key, &[]).ok()?;
    Some(if report.private {
        report.epsilon_total
    } else {
        f64::INFINITY
    })
}

/// Whether a stated ε is the recomputed one (both +∞, or equal to within rounding).
pub fn same_epsilon(stated: f64, recomputed: f64) -> bool {
    if recomputed.is_infinite() || stated.is_infinite() {
        return stated == recomputed;
    }
    (stated - recomputed).abs() <= 1e-9 * recomputed.abs().max(1.0)
}

/// Summaries (sorted by round) that go backwards: fewer entries or less ε than an earlier
/// round's. A site cannot un-spend ε; a summary over an earlier ledger prefix passed off as the
/// latest is what this catches.
pub fn check_monotone(summaries: &[LedgerSummary], rows: &mut Vec<Row>) {
    for w in summaries.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        // NaN compares false both ways: treat it as going backwards.
        let eps_back = b.epsilon.partial_cmp(&a.epsilon).is_none_or(|o| o.is_lt());
        if b.entries < a.entries || eps_back {
            rows.push(critical(
                "SummaryRegressed",
                format!(
                    "round {}: {} entries, epsilon {} after round {}: {} entries, epsilon {}",
                    b.round, b.entries, b.epsilon, a.round, a.entries, a.epsilon
                ),
            ));
        }
    }
}

/// Each summary's ε against the ledger's own at the prefix it names.
pub fn check_epsilon(
    bytes: &[u8],
    key: &VerifyingKey,
    summaries: &[LedgerSummary],
    rows: &mut Vec<Row>,
) {
    for s in summaries.iter().rev().take(MAX_RECOMPUTED) {
        let Ok(entries) = usize::try_from(s.entries) else {
            continue;
        };
        let Some(recomputed) = epsilon_at(bytes, key, entries) else {
            continue;
        };
        if !same_epsilon(s.epsilon, recomputed) {
            rows.push(critical(
                "SummaryEpsilonMismatch",
                format!(
                    "round {}: the summary states epsilon {} at {} entries where the ledger recomputes {}",
                    s.round,
                    s.epsilon,
                    s.entries,
                    shown(recomputed)
                ),
            ));
        }
    }
}

/// The ledger's latest epoch entry must name the manifest given: a ledger whose epoch in
/// force is another manifest's (an older epoch, another consortium) does not report on this
/// one (`ManifestNotInForce`).
pub fn check_manifest(
    report: &amalgam_dp::ledger::audit::AuditReport,
    digest: &[u8; 32],
    rows: &mut Vec<Row>,
) {
    let latest = report.events.iter().rev().find_map(|e| match e {
        amalgam_dp::ledger::audit::Event::Epoch {
            epoch,
            manifest_digest,
            ..
        } => Some((*epoch, manifest_digest.clone())),
        _ => None,
    });
    let want = hex::encode(digest);
    match latest {
        Some((_, d)) if d == want => {}
        Some((epoch, d)) => rows.push(critical(
            "ManifestNotInForce",
            format!("the ledger's latest epoch entry (epoch {epoch}) names manifest {d}, not the given {want}"),
        )),
        None => rows.push(critical(
            "ManifestNotInForce",
            format!("the ledger has no epoch entry: manifest {want} was never in force for it"),
        )),
    }
}

/// ε as text (`unbounded` for +∞).
pub fn shown(eps: f64) -> String {
    if eps.is_infinite() {
        "unbounded".into()
    } else {
        format!("{eps}")
    }
}

/// The newest round whose published result lists `site` among its contributors, from the
/// aggregator's status (rounds without a published result are skipped).
pub fn newest_contribution(agg: &Aggregator, site: u16) -> Result<Option<u64>, Failure> {
    let mut rounds: Vec<u64> = agg
        .status()?
        .rounds
        .iter()
        .filter(|r| r.phase == "finished")
        .map(|r| r.round)
        .collect();
    rounds.sort_unstable();
    for r in rounds.into_iter().rev() {
        let resp = agg.get(&api::result_path(r))?;
        match resp.status.as_u16() {
            200 => {}
            404 => continue,
            _ => return Err(crate::aggregator::refusal(&agg.url, "result", &resp)),
        }
        let result: api::RoundResult = serde_json::from_slice(&resp.body).map_err(|e| {
            Failure::failed(format!("{}: round {r} result malformed: {e}", agg.url))
        })?;
        if result.contributors.contains(&site) {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// A summary for round `newest` or later must be among the verified ones (the site signs one
/// at the end of every round it takes part in).
pub fn check_fresh(
    summaries: &[LedgerSummary],
    site: u16,
    newest: Option<u64>,
    rows: &mut Vec<Row>,
) {
    let Some(newest) = newest else { return };
    if summaries.iter().all(|s| s.round < newest) {
        rows.push(critical(
            "SummaryMissing",
            format!(
                "site {site} contributed to round {newest} but no verified summary covers it (latest: {})",
                summaries
                    .last()
                    .map_or_else(|| "none".into(), |s| format!("round {}", s.round))
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(round: u64, entries: u64, epsilon: f64) -> LedgerSummary {
        LedgerSummary {
            consortium_digest: [0; 32],
            round,
            site: 0,
            entries,
            head: [0; 32],
            epsilon,
            record: None,
        }
    }

    #[test]
    fn unbounded_is_only_equal_to_unbounded() {
        assert!(same_epsilon(f64::INFINITY, f64::INFINITY));
        assert!(!same_epsilon(3.0, f64::INFINITY));
        assert!(!same_epsilon(f64::INFINITY, 3.0));
        assert!(!same_epsilon(f64::NAN, 3.0));
        assert!(same_epsilon(3.0, 3.0 + 1e-12));
    }

    #[test]
    fn going_back_in_entries_or_epsilon_is_a_regression() {
        let mut rows = Vec::new();
        check_monotone(&[summary(1, 3, 1.0), summary(2, 4, 2.0)], &mut rows);
        assert!(rows.is_empty());
        check_monotone(&[summary(1, 3, 1.0), summary(2, 2, 2.0)], &mut rows);
        check_monotone(&[summary(1, 3, 2.0), summary(2, 4, 1.0)], &mut rows);
        check_monotone(
            &[summary(1, 3, f64::INFINITY), summary(2, 4, 1.0)],
            &mut rows,
        );
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r.code == "SummaryRegressed"));
    }

    #[test]
    fn the_newest_contribution_needs_a_summary() {
        let mut rows = Vec::new();
        check_fresh(&[summary(4, 3, 1.0)], 0, Some(4), &mut rows);
        check_fresh(&[summary(4, 3, 1.0)], 0, None, &mut rows);
        assert!(rows.is_empty());
        check_fresh(&[summary(3, 3, 1.0)], 0, Some(4), &mut rows);
        check_fresh(&[], 0, Some(1), &mut rows);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.code == "SummaryMissing"));
    }
}
