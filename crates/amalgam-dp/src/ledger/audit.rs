//! Offline audit: verify the chain and the signatures, and recompute ρ and ε from the recorded
//! parameters without trusting any recorded total. The `amalgam` verify command calls
//! [`audit_file`]; the ledger itself replays its file through the same code when it opens.

use std::collections::BTreeSet;
use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::LedgerError;
use super::entry::{Decision, EntryBody};
use super::store;
use crate::accountant::{RoundPrivacy, compose, epsilon_at, round_rho};
use crate::error::{AccountError, ParamError};
use crate::params::{Delta, Distance, Epsilon, Rho, Sigma};
use crate::scaling::rounded_norm_bound;

/// Domain separation of the signed bytes.
pub(crate) const SIGNING_CONTEXT: &[u8] = b"amalgam-dp ledger entry v1\0";
/// Relative tolerance when comparing recorded and recomputed floating-point values.
const TOLERANCE: f64 = 1e-9;

/// The hash the first entry must point to: binds a ledger to its signer's key.
pub fn genesis_hash(key: &VerifyingKey) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"amalgam-dp ledger genesis v1\0");
    h.update(key.as_bytes());
    h.finalize().into()
}

/// Hash of an entry as the next entry's `prev_hash` records it: SHA-256(body ‖ signature).
pub fn entry_hash(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// One problem the audit found; `index` is the position (from 0) of the entry it concerns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Finding {
    /// The record's bytes are not a valid entry.
    Undecodable {
        /// Entry position.
        index: usize,
        /// Why decoding failed.
        reason: String,
    },
    /// The signature does not verify under the expected key (edited or foreign-signed).
    BadSignature {
        /// Entry position.
        index: usize,
    },
    /// `prev_hash` does not match the previous entry (deleted, inserted or reordered).
    BrokenChain {
        /// Entry position.
        index: usize,
    },
    /// `seq` is not the entry's position.
    SequenceMismatch {
        /// Entry position.
        index: usize,
        /// The recorded sequence number.
        recorded: u64,
    },
    /// A round id was accepted twice.
    DuplicateRound {
        /// Entry position.
        index: usize,
        /// The repeated round id.
        round_id: u64,
    },
    /// A recorded value differs from the value recomputed from the recorded parameters.
    ValueMismatch {
        /// Entry position.
        index: usize,
        /// Which value.
        field: &'static str,
        /// The value in the entry.
        recorded: f64,
        /// The value the audit computed.
        recomputed: f64,
    },
    /// The recorded parameters admit no guarantee.
    Unaccountable {
        /// Entry position.
        index: usize,
        /// The accountant's error.
        reason: String,
    },
    /// An accepted entry's recomputed ε exceeds its own recorded cap.
    CapExceeded {
        /// Entry position.
        index: usize,
        /// Recomputed cumulative ε.
        epsilon: f64,
        /// The recorded cap.
        cap: f64,
    },
    /// The ledger has fewer entries than an anchor published earlier: entries (and the ε they
    /// spent) were cut off the end.
    Truncated {
        /// Entries the anchor vouches for.
        anchored: usize,
        /// Entries in the ledger.
        present: usize,
    },
    /// The entry an anchor vouches for hashes differently: history up to it was rewritten,
    /// possibly re-signed with the site's own key.
    AnchorMismatch {
        /// Position of the anchored entry (`anchored − 1`).
        index: usize,
    },
}

/// A ledger head published earlier (for example recorded by the aggregator with each round):
/// the number of entries then and the hash of the last of them. The file alone cannot show
/// entries cut off its end, or a history consistently rewritten by the key's owner; a check
/// against an anchor can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// Entries the ledger had.
    pub entries: usize,
    /// Hash of its last entry ([`genesis_hash`] when it had none).
    pub head: [u8; 32],
}

impl Anchor {
    /// The anchor a clean audit report vouches for, to publish.
    pub fn of(report: &AuditReport) -> Result<Self, AnchorParseError> {
        Self::parse(&format!("{}:{}", report.entries, report.head))
    }

    /// Parses `ENTRIES:HEX_HEAD` (the form [`Anchor`]'s `Display` writes).
    pub fn parse(text: &str) -> Result<Self, AnchorParseError> {
        let (entries, head) = text.trim().split_once(':').ok_or(AnchorParseError::Form)?;
        let entries = entries
            .parse::<usize>()
            .map_err(|_| AnchorParseError::Entries)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(head, &mut bytes).map_err(|_| AnchorParseError::Head)?;
        Ok(Self {
            entries,
            head: bytes,
        })
    }
}

impl core::fmt::Display for Anchor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}:{}", self.entries, hex::encode(self.head))
    }
}

/// Why an anchor's text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnchorParseError {
    /// Not of the form `ENTRIES:HEX_HEAD`.
    #[error("a ledger anchor is ENTRIES:HEX_HEAD (no ':' found)")]
    Form,
    /// The entry count is not a non-negative integer.
    #[error("a ledger anchor's entry count is not a non-negative integer")]
    Entries,
    /// The head is not 64 hex digits.
    #[error("a ledger anchor's head is not 64 hex digits")]
    Head,
}

/// The result of an audit.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Number of entries read.
    pub entries: usize,
    /// Entries whose decision is Accepted.
    pub accepted: usize,
    /// Entries whose decision is Refused.
    pub refused: usize,
    /// Hash of the last entry (publish it to detect later truncation), hex.
    pub head: String,
    /// Recomputed ρ of all accepted rounds.
    pub rho_total: f64,
    /// Recomputed ε of all accepted rounds at `delta`.
    pub epsilon_total: f64,
    /// δ of the last entry, if any.
    pub delta: Option<f64>,
    /// Length of a torn tail left by a crash (not an integrity failure).
    pub torn_bytes: Option<u64>,
    /// Problems found; empty means the ledger verifies.
    pub findings: Vec<Finding>,
}

impl AuditReport {
    /// True when no finding was raised.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Running accounting state over accepted rounds, recomputed from parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Totals {
    pub rho: Rho,
    pub distance: f64,
    pub rounds: u64,
}

impl Totals {
    pub(crate) const EMPTY: Self = Self {
        rho: Rho::ZERO,
        distance: 0.0,
        rounds: 0,
    };

    /// ε of the totals at `delta` (0 before any round).
    pub(crate) fn epsilon(&self, delta: Delta) -> Result<Epsilon, AccountError> {
        if self.rounds == 0 {
            return Ok(Epsilon::ZERO);
        }
        epsilon_at(self.rho, delta, Distance::new(self.distance)?)
    }
}

/// ρ of the round an entry describes, from its recorded parameters only.
pub(crate) fn entry_round_rho(body: &EntryBody) -> Result<Rho, AccountError> {
    let r = &body.request;
    if r.n_cohort < r.n_min {
        return Err(ParamError::OutOfRange {
            name: "cohort size n_cohort",
            value: f64::from(r.n_cohort.get()),
            rule: ">= n_min",
        }
        .into());
    }
    let padded = r.dim.padded();
    let round = RoundPrivacy {
        sensitivity: rounded_norm_bound(r.clip, r.gamma, r.beta, padded)?,
        adjacency: r.adjacency,
        scaled_local_sigma: Sigma::new(r.gamma.get() * r.local_sigma.get())?,
        n_min: r.n_min,
        padded_dim: padded,
    };
    round_rho(&round)
}

/// Totals after accepting a round of ρ `rho` described by `body`.
pub(crate) fn advance(totals: &Totals, body: &EntryBody, rho: Rho) -> Result<Totals, AccountError> {
    let r = &body.request;
    let rho_total = if totals.rounds == 0 {
        rho
    } else {
        compose(&[totals.rho, rho])?
    };
    let samples = f64::from(r.n_cohort.get()) * r.dim.padded() as f64;
    Ok(Totals {
        rho: rho_total,
        distance: totals.distance + r.sampler_distance.get() * samples,
        rounds: totals.rounds + 1,
    })
}

fn differs(recorded: f64, recomputed: f64) -> bool {
    (recorded - recomputed).abs() > TOLERANCE * recorded.abs().max(recomputed.abs()).max(1e-300)
}

/// The replay of a ledger's records under one key.
pub(crate) struct Replay {
    pub report: AuditReport,
    pub totals: Totals,
    pub head: [u8; 32],
    pub accepted_rounds: BTreeSet<u64>,
}

/// Verifies and re-accounts the records' payloads (body ‖ signature) in order.
pub(crate) fn replay(payloads: &[Vec<u8>], key: &VerifyingKey, torn_bytes: Option<u64>) -> Replay {
    let mut findings = Vec::new();
    let mut head = genesis_hash(key);
    let mut totals = Totals::EMPTY;
    let mut accepted_rounds = BTreeSet::new();
    let (mut accepted, mut refused, mut delta) = (0, 0, None);
    for (index, payload) in payloads.iter().enumerate() {
        let expected_prev = head;
        head = entry_hash(payload);
        let Some(split) = payload.len().checked_sub(Signature::BYTE_SIZE) else {
            findings.push(Finding::Undecodable {
                index,
                reason: "shorter than a signature".into(),
            });
            continue;
        };
        let (body_bytes, sig_bytes) = payload.split_at(split);
        let signature = Signature::from_slice(sig_bytes).ok();
        let message = [SIGNING_CONTEXT, body_bytes].concat();
        if signature.is_none_or(|s| key.verify_strict(&message, &s).is_err()) {
            findings.push(Finding::BadSignature { index });
        }
        let body = match EntryBody::from_bytes(body_bytes) {
            Ok(body) => body,
            Err(e) => {
                findings.push(Finding::Undecodable {
                    index,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        if body.prev_hash != expected_prev {
            findings.push(Finding::BrokenChain { index });
        }
        if body.seq != index as u64 {
            findings.push(Finding::SequenceMismatch {
                index,
                recorded: body.seq,
            });
        }
        delta = Some(body.delta.get());
        let checked = entry_round_rho(&body).and_then(|rho| {
            let after = match body.decision {
                Decision::Accepted => advance(&totals, &body, rho)?,
                Decision::Refused => totals,
            };
            Ok((rho, after, after.epsilon(body.delta)?))
        });
        let (rho, after, epsilon) = match checked {
            Ok(v) => v,
            Err(e) => {
                findings.push(Finding::Unaccountable {
                    index,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        for (field, recorded, recomputed) in [
            ("rho_round", body.rho_round.get(), rho.get()),
            ("rho_total", body.rho_total.get(), after.rho.get()),
            ("epsilon_total", body.epsilon_total.get(), epsilon.get()),
        ] {
            if differs(recorded, recomputed) {
                findings.push(Finding::ValueMismatch {
                    index,
                    field,
                    recorded,
                    recomputed,
                });
            }
        }
        match body.decision {
            Decision::Accepted => {
                accepted += 1;
                if !accepted_rounds.insert(body.request.round_id) {
                    findings.push(Finding::DuplicateRound {
                        index,
                        round_id: body.request.round_id,
                    });
                }
                if epsilon.get() > body.epsilon_cap.get() {
                    findings.push(Finding::CapExceeded {
                        index,
                        epsilon: epsilon.get(),
                        cap: body.epsilon_cap.get(),
                    });
                }
            }
            Decision::Refused => refused += 1,
        }
        totals = after;
    }
    let epsilon_total = match delta.map(Delta::new) {
        Some(Ok(d)) => totals.epsilon(d).map(Epsilon::get).unwrap_or(f64::INFINITY),
        _ => 0.0,
    };
    let report = AuditReport {
        entries: payloads.len(),
        accepted,
        refused,
        head: hex::encode(head),
        rho_total: totals.rho.get(),
        epsilon_total,
        delta,
        torn_bytes,
        findings,
    };
    Replay {
        report,
        totals,
        head,
        accepted_rounds,
    }
}

/// Audits a ledger held in memory (the file's bytes) against the site's public key.
pub fn audit_bytes(bytes: &[u8], key: &VerifyingKey) -> Result<AuditReport, LedgerError> {
    audit_bytes_anchored(bytes, key, &[])
}

/// Audits a ledger file, read-only, against the site's public key.
pub fn audit_file(path: &Path, key: &VerifyingKey) -> Result<AuditReport, LedgerError> {
    audit_file_anchored(path, key, &[])
}

/// [`audit_bytes`], and also checks the ledger against heads published earlier.
pub fn audit_bytes_anchored(
    bytes: &[u8],
    key: &VerifyingKey,
    anchors: &[Anchor],
) -> Result<AuditReport, LedgerError> {
    let parsed = store::parse(bytes)?;
    Ok(anchored_report(&parsed, key, anchors))
}

/// [`audit_file`], and also checks the ledger against heads published earlier.
pub fn audit_file_anchored(
    path: &Path,
    key: &VerifyingKey,
    anchors: &[Anchor],
) -> Result<AuditReport, LedgerError> {
    let parsed = store::read_only(path)?;
    Ok(anchored_report(&parsed, key, anchors))
}

fn anchored_report(parsed: &store::Parsed, key: &VerifyingKey, anchors: &[Anchor]) -> AuditReport {
    let payloads = &parsed.payloads;
    let mut report = replay(payloads, key, parsed.torn_bytes).report;
    for anchor in anchors {
        let hash = match anchor.entries.checked_sub(1) {
            None => Some(genesis_hash(key)),
            Some(last) => payloads.get(last).map(|p| entry_hash(p)),
        };
        match hash {
            None => report.findings.push(Finding::Truncated {
                anchored: anchor.entries,
                present: payloads.len(),
            }),
            Some(h) if h != anchor.head => report.findings.push(Finding::AnchorMismatch {
                index: anchor.entries.saturating_sub(1),
            }),
            Some(_) => {}
        }
    }
    report
}
