//! Verifying and re-accounting a record ledger: the same replay serves [`super::RecordLedger`]
//! at open and the offline audit ([`audit_record_file`]).
//!
//! Every entry must decode strictly, sit at its position, point to the previous entry's hash
//! and verify under the genesis key. Every accepted run is re-accounted from its recorded
//! parameters (its RDP curve composed onto the runs before it, converted at the policy's δ
//! less the samplers' total-variation distance over the accepted runs); a recorded ε (of the
//! run or of the total) that differs from the recomputed one, a run whose charged z is above
//! the σ/Δ of its recorded mechanism or whose parameters are invalid (q ≤ 0, no step), an
//! accepted run past the cap, a run id accepted twice or a policy breaking the δ rule is a
//! finding.

use std::collections::BTreeSet;
use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::RecordLedgerError;
use super::entry::{RecordEntryBody, RecordEntryKind, RecordPolicy, RecordRunRequest, RunCharge};
use crate::error::RecordAccountError;
use crate::ledger::audit::{Anchor, Finding, entry_hash};
use crate::ledger::entry::Decision;
use crate::ledger::store::{self, StoreError};
use crate::params::Delta;
use crate::record::{RdpCurve, RdpOrders};

/// Domain separation of a record-ledger entry's signature.
pub(crate) const RECORD_SIGNING_CONTEXT: &[u8] = b"amalgam-dp record ledger entry v1\0";
/// Relative tolerance between a recorded and a recomputed ε.
const TOLERANCE: f64 = 1e-9;

/// The hash the first entry of a record ledger points to.
pub fn record_genesis_hash(key: &VerifyingKey) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"amalgam-dp record ledger genesis v1\0");
    h.update(key.as_bytes());
    h.finalize().into()
}

/// One problem the record audit found; `index` is the entry's position from 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum RecordFinding {
    /// The file layer refused the bytes (a damaged record).
    File(String),
    /// An entry does not decode.
    Malformed {
        /// Position.
        index: usize,
    },
    /// The first entry is not a genesis, or a genesis appears later.
    Genesis {
        /// Position.
        index: usize,
    },
    /// The entry's seq or prev_hash is not its position's.
    Chain {
        /// Position.
        index: usize,
    },
    /// The signature does not verify under the ledger's key (or the expected key).
    Signature {
        /// Position.
        index: usize,
    },
    /// The genesis policy breaks the δ rule or has no record.
    Policy(String),
    /// A run's parameters cannot be accounted (q ≤ 0, no step, a mechanism out of range) or
    /// its charged z is above the σ/Δ of its recorded mechanism (an undercharge).
    InvalidRun {
        /// Position.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A run's recorded ε of the run alone is not the one its parameters give.
    RunEpsilonMismatch {
        /// Position.
        index: usize,
        /// Recorded.
        recorded: f64,
        /// Recomputed.
        recomputed: f64,
    },
    /// A recorded total ε is not the one the runs' parameters give.
    EpsilonMismatch {
        /// Position.
        index: usize,
        /// Recorded.
        recorded: f64,
        /// Recomputed.
        recomputed: f64,
    },
    /// An accepted run took ε past the cap.
    OverCap {
        /// Position.
        index: usize,
    },
    /// A run id accepted twice.
    RunReused {
        /// Position.
        index: usize,
    },
    /// A refused run would have been within the cap (a refusal that is not one).
    RefusedWithinCap {
        /// Position.
        index: usize,
    },
    /// A torn final write is present (crash; cut at the next open).
    TornTail {
        /// Bytes.
        bytes: u64,
    },
    /// The ledger is behind or differs from a published anchor.
    Anchor(Finding),
}

impl RecordFinding {
    /// A torn tail is a crash artefact; every other finding blocks charging.
    pub fn is_crash_only(&self) -> bool {
        matches!(self, Self::TornTail { .. })
    }
}

/// One accepted run as the audit lists it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AuditedRun {
    /// Position of its entry.
    pub index: usize,
    /// The charge.
    pub charge: RunCharge,
}

/// What a record-ledger audit found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordAuditReport {
    /// Entries read.
    pub entries: usize,
    /// Head hash (hex).
    pub head: String,
    /// The genesis policy.
    pub policy: Option<RecordPolicy>,
    /// Accepted runs.
    pub runs: Vec<AuditedRun>,
    /// Refused runs.
    pub refused: usize,
    /// Noisy steps over the accepted runs.
    pub steps: u64,
    /// Re-accounted ε of every accepted run at the policy's δ (0 with none).
    pub epsilon_total: f64,
    /// The order that attained it.
    pub order: u32,
    /// The samplers' total-variation distance over the accepted runs (Σ steps·d·bound),
    /// recomputed from each run's sampler and σ/γ; ε is computed at δ less this.
    pub sampler_distance: f64,
    /// The versions of the data the accepted runs trained on, in order of first use: every
    /// record of every version is charged the whole total (one added later included).
    pub data_versions: Vec<super::DataVersion>,
    /// Published anchors checked.
    pub anchors_checked: usize,
    /// Findings (empty on a clean ledger).
    pub findings: Vec<RecordFinding>,
}

impl RecordAuditReport {
    /// No finding at all.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// The replayed state.
pub(crate) struct RecordReplay {
    pub report: RecordAuditReport,
    pub distance: f64,
    pub key: Option<VerifyingKey>,
    pub hashes: Vec<[u8; 32]>,
    pub curve: Option<RdpCurve>,
    pub accepted: BTreeSet<[u8; 32]>,
}

fn differs(recorded: f64, recomputed: f64) -> bool {
    if recorded == recomputed {
        return false;
    }
    // NaN differs from everything.
    (recorded - recomputed)
        .abs()
        .partial_cmp(&(TOLERANCE * recomputed.abs().max(1.0)))
        .is_none_or(|o| o == std::cmp::Ordering::Greater)
}

/// A run composed onto the runs before it.
pub(crate) struct Composed {
    /// The curve of every run so far, this one included.
    pub curve: RdpCurve,
    /// Its ε at the policy's δ less the sampler distance, and the order (`None`: unbounded).
    pub total: Option<(f64, u32)>,
    /// ε of this run alone (`None`: unbounded).
    pub run: Option<f64>,
    /// The samplers' distance over every run so far, this one included.
    pub distance: f64,
}

/// The δ the RDP conversion may use once `distance` of it went to the samplers (`None`: none
/// left, ε unbounded).
fn accounting_delta(policy: &RecordPolicy, distance: f64) -> Option<Delta> {
    Delta::new(policy.delta.get() - distance).ok()
}

/// `curve` (with `distance` of δ already taken by the samplers) composed with the run
/// `request` at `policy`'s δ. Refuses a run that cannot be accounted: no step, q ≤ 0 (it would
/// cost nothing while the run trains on records), data of more records than N_max (the δ rule
/// was checked against N_max), a mechanism out of range or a charged z above its σ/Δ.
pub(crate) fn compose_run(
    curve: Option<&RdpCurve>,
    distance: f64,
    request: &RecordRunRequest,
    policy: &RecordPolicy,
) -> Result<Composed, RecordLedgerError> {
    if request.steps == 0 {
        return Err(RecordAccountError::NoSteps.into());
    }
    if request.q.is_nan() || request.q <= 0.0 {
        return Err(RecordAccountError::SamplingRate(request.q).into());
    }
    super::check_data(policy, &request.data)?;
    request.mechanism.check(request.noise_multiplier)?;
    let run_distance = request.mechanism.run_distance(request.steps)?;
    let run = RdpCurve::sampled_gaussian(
        RdpOrders::dense(),
        request.q,
        request.noise_multiplier,
        u64::from(request.steps),
    )?;
    let run_eps = accounting_delta(policy, run_distance)
        .and_then(|d| run.epsilon(d).ok())
        .map(|e| e.epsilon);
    let total = match curve {
        Some(c) => c.compose(&run)?,
        None => run,
    };
    let distance = distance + run_distance;
    let total_eps = accounting_delta(policy, distance)
        .and_then(|d| total.epsilon(d).ok())
        .map(|e| (e.epsilon, e.order));
    Ok(Composed {
        curve: total,
        total: total_eps,
        run: run_eps,
        distance,
    })
}

/// Replays `payloads`; `expected_key` (when given) must be the genesis key.
pub(crate) fn replay_record(
    payloads: &[Vec<u8>],
    torn_bytes: Option<u64>,
    expected_key: Option<&VerifyingKey>,
) -> RecordReplay {
    let mut findings = Vec::new();
    let mut key: Option<VerifyingKey> = None;
    let mut policy: Option<RecordPolicy> = None;
    let mut hashes = Vec::with_capacity(payloads.len());
    let mut curve: Option<RdpCurve> = None;
    let mut distance = 0.0f64;
    let mut accepted = BTreeSet::new();
    let mut runs = Vec::new();
    let mut data_versions = Vec::new();
    let mut seen_versions = BTreeSet::new();
    let (mut refused, mut steps, mut epsilon_total, mut order) = (0usize, 0u64, 0.0f64, 0u32);
    for (index, payload) in payloads.iter().enumerate() {
        let Some(split) = payload.len().checked_sub(Signature::BYTE_SIZE) else {
            findings.push(RecordFinding::Malformed { index });
            break;
        };
        let (body_bytes, sig) = payload.split_at(split);
        let Ok(body) = RecordEntryBody::from_bytes(body_bytes) else {
            findings.push(RecordFinding::Malformed { index });
            break;
        };
        if index == 0 {
            let RecordEntryKind::Genesis {
                key: k, policy: p, ..
            } = &body.kind
            else {
                findings.push(RecordFinding::Genesis { index });
                break;
            };
            let Ok(k) = VerifyingKey::from_bytes(k) else {
                findings.push(RecordFinding::Signature { index });
                break;
            };
            if let Err(e) = super::validate_policy(p) {
                findings.push(RecordFinding::Policy(e.to_string()));
            }
            if expected_key.is_some_and(|e| *e != k) {
                findings.push(RecordFinding::Signature { index });
            }
            key = Some(k);
            policy = Some(*p);
        } else if matches!(body.kind, RecordEntryKind::Genesis { .. }) {
            findings.push(RecordFinding::Genesis { index });
            break;
        }
        let Some(k) = key else { break };
        let prev = hashes
            .last()
            .copied()
            .unwrap_or_else(|| record_genesis_hash(&k));
        if body.seq != index as u64 || body.prev_hash != prev {
            findings.push(RecordFinding::Chain { index });
            break;
        }
        let ok = Signature::from_slice(sig).is_ok_and(|s| {
            k.verify_strict(&[RECORD_SIGNING_CONTEXT, body_bytes].concat(), &s)
                .is_ok()
        });
        if !ok {
            findings.push(RecordFinding::Signature { index });
            break;
        }
        hashes.push(entry_hash(payload));
        let (RecordEntryKind::Run(charge), Some(p)) = (&body.kind, policy.as_ref()) else {
            continue;
        };
        let r = charge.request;
        let Composed {
            curve: next,
            total,
            run,
            distance: next_distance,
        } = match compose_run(curve.as_ref(), distance, &r, p) {
            Ok(c) => c,
            Err(e) => {
                // Not composed: the audit goes on with the runs it can account.
                findings.push(RecordFinding::InvalidRun {
                    index,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let run_eps = run.unwrap_or(f64::INFINITY);
        if differs(charge.epsilon_run, run_eps) {
            findings.push(RecordFinding::RunEpsilonMismatch {
                index,
                recorded: charge.epsilon_run,
                recomputed: run_eps,
            });
        }
        let within = total.is_some_and(|(e, _)| e <= p.epsilon_cap.get());
        match charge.decision {
            Decision::Accepted => {
                let Some((e, o)) = total else {
                    findings.push(RecordFinding::OverCap { index });
                    continue;
                };
                if differs(charge.epsilon_total, e) {
                    findings.push(RecordFinding::EpsilonMismatch {
                        index,
                        recorded: charge.epsilon_total,
                        recomputed: e,
                    });
                }
                if !within {
                    findings.push(RecordFinding::OverCap { index });
                }
                if !accepted.insert(r.run_id) {
                    findings.push(RecordFinding::RunReused { index });
                }
                curve = Some(next);
                distance = next_distance;
                (epsilon_total, order) = (e, o);
                steps += u64::from(r.steps);
                if seen_versions.insert((r.data.file, r.data.records)) {
                    data_versions.push(r.data);
                }
                runs.push(AuditedRun {
                    index,
                    charge: *charge,
                });
            }
            Decision::Refused => {
                // A refusal records the total as it stood: anything else misstates the spend.
                if differs(charge.epsilon_total, epsilon_total) {
                    findings.push(RecordFinding::EpsilonMismatch {
                        index,
                        recorded: charge.epsilon_total,
                        recomputed: epsilon_total,
                    });
                }
                if within && !accepted.contains(&r.run_id) {
                    findings.push(RecordFinding::RefusedWithinCap { index });
                }
                refused += 1;
            }
        }
    }
    if let Some(bytes) = torn_bytes {
        findings.push(RecordFinding::TornTail { bytes });
    }
    let head = hashes.last().map(hex::encode).unwrap_or_default();
    RecordReplay {
        report: RecordAuditReport {
            entries: hashes.len(),
            head,
            policy,
            runs,
            refused,
            steps,
            epsilon_total,
            order,
            sampler_distance: distance,
            data_versions,
            anchors_checked: 0,
            findings,
        },
        distance,
        key,
        hashes,
        curve,
        accepted,
    }
}

/// Audits the record ledger at `path` offline without locking or changing it: `key` (when
/// given) must be its signer, and every anchor in `published` must be an entry it still holds.
pub fn audit_record_file(
    path: &Path,
    key: Option<&VerifyingKey>,
    published: &[Anchor],
) -> Result<RecordAuditReport, StoreError> {
    let bytes = store::read_file(path)?;
    let mut report = match store::parse(&bytes) {
        Ok(parsed) => replay_record(&parsed.payloads, parsed.torn_bytes, key).report,
        Err(e) => RecordAuditReport {
            entries: 0,
            head: String::new(),
            policy: None,
            runs: Vec::new(),
            refused: 0,
            steps: 0,
            epsilon_total: 0.0,
            order: 0,
            sampler_distance: 0.0,
            data_versions: Vec::new(),
            anchors_checked: 0,
            findings: vec![RecordFinding::File(e.to_string())],
        },
    };
    let hashes = {
        let parsed = store::parse(&bytes).ok();
        parsed
            .map(|p| p.payloads.iter().map(|x| entry_hash(x)).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    for a in published {
        if let Some(f) = a.check(&hashes[..report.entries.min(hashes.len())]) {
            report.findings.push(RecordFinding::Anchor(f));
        }
    }
    report.anchors_checked = published.len();
    Ok(report)
}
