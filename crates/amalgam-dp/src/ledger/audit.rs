//! Offline audit: verify the chain, the signatures and the key rotations, follow the policy the
//! genesis entry commits and every policy change, and recompute n_min, the sampler distance, ρ
//! and ε from the recorded parameters without trusting any recorded value. `amalgam ledger
//! verify` calls [`audit_file`]; the ledger replays its file through the same `replay` when
//! it opens, so what it charges against is what an auditor would recompute.
//!
//! A compliance audit is always against anchors (heads the site published elsewhere): without
//! one the file cannot show entries cut off its end, so an audit with no anchor reports
//! [`Finding::Unanchored`].

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::entry::{
    Budget, BudgetPolicy, Charge, Decision, EntryBody, EntryKind, EpsilonTotal, RoundRequest,
};
use super::store::{self, StoreError};
use super::{EpochInForce, LedgerError};
use crate::accountant::{RoundPrivacy, compose, epsilon_at, round_rho};
use crate::error::AccountError;
use crate::params::{Delta, Distance, Rho, Sigma, SiteCount, n_min_for};
use crate::sampler::distance_bound;
use crate::scaling::rounded_norm_bound;

/// Domain separation of the signed bytes.
pub(crate) const SIGNING_CONTEXT: &[u8] = b"amalgam-dp ledger entry v2\0";
/// Domain separation of the new key's signature in a key rotation.
const ROTATION_CONTEXT: &[u8] = b"amalgam-dp ledger key rotation v2\0";
/// Relative tolerance when comparing recorded and recomputed floating-point values.
const TOLERANCE: f64 = 1e-9;

/// The hash the first entry must point to: binds a ledger to its signer's key.
pub fn genesis_hash(key: &VerifyingKey) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"amalgam-dp ledger genesis v2\0");
    h.update(key.as_bytes());
    h.finalize().into()
}

/// Hash of an entry as the next entry's `prev_hash` records it: SHA-256(body ‖ signature).
pub fn entry_hash(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// What the new key signs in a key rotation: position, previous hash, old and new key.
pub fn rotation_message(seq: u64, prev_hash: &[u8; 32], old: &[u8; 32], new: &[u8; 32]) -> Vec<u8> {
    [ROTATION_CONTEXT, &seq.to_le_bytes(), prev_hash, old, new].concat()
}

/// One problem the audit found; `index` is the position (from 0) of the entry it concerns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Finding {
    /// A complete record fails its checksum (a flipped bit or an edit, never a crash).
    CorruptRecord {
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The record's bytes are not a valid entry.
    Undecodable {
        /// Entry position.
        index: usize,
        /// Why decoding failed.
        reason: String,
    },
    /// The first entry is not a genesis entry, or a genesis entry appears later.
    MisplacedGenesis {
        /// Entry position.
        index: usize,
    },
    /// The key the auditor trusts signed neither the genesis nor any rotation of this ledger.
    UntrustedKey,
    /// The signature does not verify under the key in force (edited or foreign-signed).
    BadSignature {
        /// Entry position.
        index: usize,
    },
    /// A key rotation's new-key signature does not verify.
    BadRotationSignature {
        /// Entry position.
        index: usize,
    },
    /// A key rotation signed only by the new key: the old key was lost, and nothing but the
    /// new key vouches for the change of signer.
    OldKeyLost {
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
    /// A policy (genesis or change) breaks a rule (δ above the site-level ceiling, another
    /// privacy unit than the genesis one).
    PolicyInvalid {
        /// Entry position.
        index: usize,
        /// Which rule.
        reason: String,
    },
    /// A policy change gives less protection (larger δ or cap, no privacy, other adjacency).
    PolicyLoosened {
        /// Entry position.
        index: usize,
    },
    /// A policy change set a cap below the ε already spent (recomputed at the new δ): the
    /// ledger can accept no further round, but the spend on record is above the cap the
    /// compliance reader sees in force.
    SpentAboveCap {
        /// Entry position of the policy change.
        index: usize,
        /// Recomputed ε spent before it, at its δ.
        epsilon: f64,
        /// The cap it put in force.
        cap: f64,
    },
    /// An epoch entry goes back to an earlier epoch.
    EpochRegressed {
        /// Entry position.
        index: usize,
    },
    /// A charge's manifest digest is not the one the last epoch entry put in force.
    ManifestMismatch {
        /// Entry position.
        index: usize,
    },
    /// A charge recorded before any epoch entry put the consortium's round parameters in
    /// force: its parameters are the site's own word.
    ChargeBeforeEpoch {
        /// Entry position.
        index: usize,
    },
    /// A charge's round parameters differ from those the epoch in force records.
    RoundParamsMismatch {
        /// Entry position.
        index: usize,
        /// The first differing parameter.
        field: &'static str,
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
    /// An accepted entry's recomputed ε exceeds the cap in force.
    CapExceeded {
        /// Entry position.
        index: usize,
        /// Recomputed cumulative ε.
        epsilon: f64,
        /// The cap in force.
        cap: f64,
    },
    /// A round published with the site's upload (its post-charge anchor) has no accepted
    /// charge in this ledger at the anchored position: the charge was cut off and the round
    /// re-charged or dropped, or the upload came from another ledger.
    PublishedRoundNotCharged {
        /// The published round id.
        round_id: u64,
    },
    /// No anchor was given: entries cut off the end of the file cannot be ruled out.
    Unanchored,
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

impl Finding {
    /// True for findings about what the ledger's own history says (a loosened policy, a lost
    /// key, no anchor given to the audit): listed for the compliance reader, but the ledger's
    /// integrity is intact and it may go on charging. Every other finding makes it refuse.
    pub fn is_compliance_only(&self) -> bool {
        matches!(
            self,
            Finding::PolicyLoosened { .. }
                | Finding::SpentAboveCap { .. }
                | Finding::OldKeyLost { .. }
                | Finding::Unanchored
        )
    }
}

/// Something the ledger records that is not a problem but that the audit lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Event {
    /// A torn tail (crash mid-append) was cut off when the ledger was opened.
    Recovered {
        /// Entry position of the recovery record.
        index: usize,
        /// Bytes cut off.
        dropped_bytes: u64,
    },
    /// The policy changed.
    PolicyChanged {
        /// Entry position.
        index: usize,
    },
    /// The signing key changed.
    KeyRotated {
        /// Entry position.
        index: usize,
    },
    /// A consortium manifest, epoch and round parameters came into force (compare them with
    /// the published manifest).
    Epoch {
        /// Entry position.
        index: usize,
        /// The epoch.
        epoch: u64,
        /// The manifest digest, hex.
        manifest_digest: String,
        /// The round parameters charges of the epoch must name.
        params: super::entry::RoundParams,
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
    /// Hash of its last entry.
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

    /// Checks `hashes` (every entry's hash, in order) against this anchor: `None` when the
    /// ledger holds the anchored entry unchanged.
    pub fn check(&self, hashes: &[[u8; 32]]) -> Option<Finding> {
        match self.entries.checked_sub(1) {
            None => None,
            Some(last) => match hashes.get(last) {
                None => Some(Finding::Truncated {
                    anchored: self.entries,
                    present: hashes.len(),
                }),
                Some(h) if *h != self.head => Some(Finding::AnchorMismatch { index: last }),
                Some(_) => None,
            },
        }
    }
}

impl core::fmt::Display for Anchor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}:{}", self.entries, hex::encode(self.head))
    }
}

/// A round as the aggregator published it: the round id and the ledger anchor the site's
/// signed upload carried (the anchor right after the round's charge, from
/// [`crate::ledger::RoundPermit::anchor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedRound {
    /// The round id.
    pub round_id: u64,
    /// The anchor just after its charge.
    pub anchor: Anchor,
}

impl PublishedRound {
    /// Parses `ROUND=ENTRIES:HEX_HEAD`.
    pub fn parse(text: &str) -> Result<Self, AnchorParseError> {
        let (round, anchor) = text.trim().split_once('=').ok_or(AnchorParseError::Form)?;
        Ok(Self {
            round_id: round.parse().map_err(|_| AnchorParseError::Round)?,
            anchor: Anchor::parse(anchor)?,
        })
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
    /// A published round's id is not a non-negative integer.
    #[error("a published round is ROUND=ENTRIES:HEX_HEAD with ROUND a non-negative integer")]
    Round,
}

/// One policy the ledger was under: the genesis policy or a policy change, with the ε spent
/// when it came into force (recomputed, at its δ).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRecord {
    /// Entry position (0 for the genesis policy).
    pub index: usize,
    /// The policy.
    pub policy: BudgetPolicy,
    /// ε spent by the accepted rounds before it, at its δ (+∞ without privacy).
    pub epsilon_spent_before: f64,
}

/// The result of an audit.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Number of entries read.
    pub entries: usize,
    /// Charges whose decision is Accepted.
    pub accepted: usize,
    /// Charges whose decision is Refused.
    pub refused: usize,
    /// Hash of the last entry (publish it as an anchor), hex.
    pub head: String,
    /// The policy in force after the last entry.
    pub policy: Option<BudgetPolicy>,
    /// The genesis policy and every policy change, in order.
    pub policies: Vec<PolicyRecord>,
    /// Recomputed ρ of all accepted rounds that ran with noise.
    pub rho_total: f64,
    /// Recomputed ε of all accepted rounds at the policy's δ (+∞: no differential privacy).
    pub epsilon_total: f64,
    /// Whether the guarantee is differential privacy at all (false once any round ran under
    /// policy `none`, or when the policy in force is `none`).
    pub private: bool,
    /// Length of a torn tail still in the file (not an integrity failure).
    pub torn_bytes: Option<u64>,
    /// Anchors checked.
    pub anchors_checked: usize,
    /// Recoveries, policy changes, rotations and epochs, in order.
    pub events: Vec<Event>,
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
    /// A round ran without noise (policy `none`): ε is unbounded from then on.
    pub unbounded: bool,
}

impl Totals {
    pub(crate) const EMPTY: Self = Self {
        rho: Rho::ZERO,
        distance: 0.0,
        rounds: 0,
        unbounded: false,
    };

    /// ε of the totals at `delta` (0 before any round; ∞ once unbounded or without δ).
    pub(crate) fn epsilon(&self, delta: Option<Delta>) -> Result<EpsilonTotal, AccountError> {
        if self.unbounded {
            return Ok(EpsilonTotal::UNBOUNDED);
        }
        if self.rounds == 0 {
            return Ok(EpsilonTotal::from(crate::params::Epsilon::ZERO));
        }
        match delta {
            None => Ok(EpsilonTotal::UNBOUNDED),
            Some(d) => Ok(epsilon_at(self.rho, d, Distance::new(self.distance)?)?.into()),
        }
    }
}

/// What the accountant makes of one request under a policy, from its parameters only.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accounted {
    pub n_min: SiteCount,
    pub sampler_distance: Distance,
    pub steps: u32,
    pub rho_round: Rho,
    /// Totals if the round is accepted.
    pub after: Totals,
}

/// Noisy steps one site-level permit covers.
pub(crate) const SITE_LEVEL_STEPS: u32 = 1;

/// Accounts one request (see [`Accounted`]); `distances` memoises the sampler bound per σ.
pub(crate) fn account(
    totals: &Totals,
    policy: &BudgetPolicy,
    r: &RoundRequest,
    distances: &mut BTreeMap<(u8, u64), Distance>,
) -> Result<Accounted, AccountError> {
    let n_min = n_min_for(r.min_cohort, r.colluders)?;
    crate::params::check_cohort("cohort size n_cohort", r.n_cohort)?;
    if r.n_cohort < n_min {
        return Err(crate::error::ParamError::OutOfRange {
            name: "cohort size n_cohort",
            value: f64::from(r.n_cohort.get()),
            rule: ">= n_min",
        }
        .into());
    }
    let steps = SITE_LEVEL_STEPS;
    if matches!(policy.budget, Budget::NoPrivacy) {
        return Ok(Accounted {
            n_min,
            sampler_distance: Distance::ZERO,
            steps,
            rho_round: Rho::ZERO,
            after: Totals {
                rounds: totals.rounds + 1,
                unbounded: true,
                ..*totals
            },
        });
    }
    let padded = r.dim.padded();
    let scaled = Sigma::new(r.gamma.get() * r.local_sigma.get())?;
    let key = (r.sampler.code(), scaled.get().to_bits());
    let sampler_distance = match distances.get(&key) {
        Some(d) => *d,
        None => {
            let d = distance_bound(r.sampler, scaled)
                .map_err(|e| AccountError::OpenDp(format!("sampler: {e}")))?;
            distances.insert(key, d);
            d
        }
    };
    let round = RoundPrivacy {
        sensitivity: rounded_norm_bound(r.clip, r.gamma, r.beta, padded)?,
        adjacency: policy.adjacency,
        scaled_local_sigma: scaled,
        n_min,
        padded_dim: padded,
    };
    let rho_round = round_rho(&round)?;
    let rho = if totals.rounds == 0 || totals.rho.get() == 0.0 {
        rho_round
    } else {
        compose(&[totals.rho, rho_round])?
    };
    let samples = f64::from(r.n_cohort.get()) * padded as f64 * f64::from(steps);
    Ok(Accounted {
        n_min,
        sampler_distance,
        steps,
        rho_round,
        after: Totals {
            rho,
            distance: totals.distance + sampler_distance.get() * samples,
            rounds: totals.rounds + 1,
            unbounded: totals.unbounded,
        },
    })
}

fn differs(recorded: f64, recomputed: f64) -> bool {
    if recorded.is_infinite() || recomputed.is_infinite() {
        return recorded != recomputed;
    }
    (recorded - recomputed).abs() > TOLERANCE * recorded.abs().max(recomputed.abs()).max(1e-300)
}

/// The replayed state of a ledger.
pub(crate) struct Replay {
    pub report: AuditReport,
    pub totals: Totals,
    pub policy: Option<BudgetPolicy>,
    /// The key in force after the last entry.
    pub key: Option<VerifyingKey>,
    /// Every key that signed the genesis or was rotated to.
    pub keys: Vec<VerifyingKey>,
    pub hashes: Vec<[u8; 32]>,
    /// Accepted round ids and the round context each was charged under.
    pub accepted_rounds: BTreeMap<u64, [u8; 32]>,
    /// Entry position of each accepted round's charge.
    pub charge_index: BTreeMap<u64, usize>,
    pub manifest: Option<EpochInForce>,
    pub distances: BTreeMap<(u8, u64), Distance>,
}

/// Verifies and re-accounts the records' payloads (body ‖ signature) in order. The signer of
/// the genesis entry is taken from it; whether that key is trusted is the caller's check
/// (`keys`).
pub(crate) fn replay(payloads: &[Vec<u8>], torn_bytes: Option<u64>) -> Replay {
    let mut findings = Vec::new();
    let mut events = Vec::new();
    let mut key: Option<VerifyingKey> = None;
    let mut keys = Vec::new();
    let mut policy: Option<BudgetPolicy> = None;
    let mut policies = Vec::new();
    let mut totals = Totals::EMPTY;
    let mut hashes: Vec<[u8; 32]> = Vec::with_capacity(payloads.len());
    let mut accepted_rounds = BTreeMap::new();
    let mut charge_index = BTreeMap::new();
    let mut manifest: Option<EpochInForce> = None;
    let mut distances = BTreeMap::new();
    let (mut accepted, mut refused) = (0, 0);
    for (index, payload) in payloads.iter().enumerate() {
        let expected_prev = hashes.last().copied();
        hashes.push(entry_hash(payload));
        let Some(split) = payload.len().checked_sub(Signature::BYTE_SIZE) else {
            findings.push(Finding::Undecodable {
                index,
                reason: "shorter than a signature".into(),
            });
            continue;
        };
        let (body_bytes, sig_bytes) = payload.split_at(split);
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
        // The key the outer signature must verify under.
        let signer = match (&body.kind, index) {
            (EntryKind::Genesis { key: k, .. }, 0) => VerifyingKey::from_bytes(k).ok(),
            (
                EntryKind::KeyRotation {
                    new_key,
                    old_key_lost: true,
                    ..
                },
                _,
            ) => VerifyingKey::from_bytes(new_key).ok(),
            _ => key,
        };
        let message = [SIGNING_CONTEXT, body_bytes].concat();
        let signature = Signature::from_slice(sig_bytes).ok();
        let signed = match (signer, signature) {
            (Some(k), Some(s)) => k.verify_strict(&message, &s).is_ok(),
            _ => false,
        };
        if !signed {
            findings.push(Finding::BadSignature { index });
        }
        let prev_ok = match (expected_prev, index, signer) {
            (Some(prev), _, _) => body.prev_hash == prev,
            (None, 0, Some(k)) => body.prev_hash == genesis_hash(&k),
            _ => false,
        };
        if !prev_ok {
            findings.push(Finding::BrokenChain { index });
        }
        if body.seq != index as u64 {
            findings.push(Finding::SequenceMismatch {
                index,
                recorded: body.seq,
            });
        }
        if index == 0 && !matches!(body.kind, EntryKind::Genesis { .. }) {
            findings.push(Finding::MisplacedGenesis { index });
        }
        match &body.kind {
            EntryKind::Genesis { policy: p, .. } => {
                if index != 0 {
                    findings.push(Finding::MisplacedGenesis { index });
                    continue;
                }
                if let Err(e) = p.validate() {
                    findings.push(Finding::PolicyInvalid {
                        index,
                        reason: e.to_string(),
                    });
                }
                key = signer;
                keys.extend(signer);
                policy = Some(*p);
                policies.push(PolicyRecord {
                    index,
                    policy: *p,
                    epsilon_spent_before: 0.0,
                });
            }
            EntryKind::PolicyChange(p) => {
                if let Err(e) = p.validate() {
                    findings.push(Finding::PolicyInvalid {
                        index,
                        reason: e.to_string(),
                    });
                }
                if let Some(old) = &policy {
                    if old.unit != p.unit {
                        findings.push(Finding::PolicyInvalid {
                            index,
                            reason: "a ledger holds one privacy unit".into(),
                        });
                    }
                    if old.loosened_by(p) {
                        findings.push(Finding::PolicyLoosened { index });
                    }
                }
                let spent = totals
                    .epsilon(p.delta())
                    .map(EpsilonTotal::get)
                    .unwrap_or(f64::INFINITY);
                if let Budget::Capped { epsilon_cap, .. } = p.budget
                    && spent > epsilon_cap.get()
                {
                    findings.push(Finding::SpentAboveCap {
                        index,
                        epsilon: spent,
                        cap: epsilon_cap.get(),
                    });
                }
                events.push(Event::PolicyChanged { index });
                policies.push(PolicyRecord {
                    index,
                    policy: *p,
                    epsilon_spent_before: spent,
                });
                policy = Some(*p);
            }
            EntryKind::KeyRotation {
                new_key,
                new_key_signature,
                old_key_lost,
            } => {
                let new = VerifyingKey::from_bytes(new_key).ok();
                let old = key.map(|k| k.to_bytes()).unwrap_or([0; 32]);
                let message = rotation_message(body.seq, &body.prev_hash, &old, new_key);
                let sig = Signature::from_bytes(new_key_signature);
                if new.is_none_or(|k| k.verify_strict(&message, &sig).is_err()) {
                    findings.push(Finding::BadRotationSignature { index });
                }
                if *old_key_lost {
                    findings.push(Finding::OldKeyLost { index });
                }
                events.push(Event::KeyRotated { index });
                key = new;
                keys.extend(new);
            }
            EntryKind::Epoch {
                manifest_digest,
                epoch,
                params,
            } => {
                if manifest.is_some_and(|m| *epoch < m.epoch) {
                    findings.push(Finding::EpochRegressed { index });
                }
                if let Err(e) = params.validate() {
                    findings.push(Finding::Unaccountable {
                        index,
                        reason: e.to_string(),
                    });
                }
                events.push(Event::Epoch {
                    index,
                    epoch: *epoch,
                    manifest_digest: hex::encode(manifest_digest),
                    params: *params,
                });
                manifest = Some(EpochInForce {
                    manifest_digest: *manifest_digest,
                    epoch: *epoch,
                    params: *params,
                });
            }
            EntryKind::Recovery { dropped_bytes, .. } => {
                events.push(Event::Recovered {
                    index,
                    dropped_bytes: *dropped_bytes,
                });
            }
            EntryKind::Charge(charge) => {
                let Some(p) = policy else {
                    continue;
                };
                match manifest.as_ref().map(|m| m.refuses(&charge.request)) {
                    None => findings.push(Finding::ChargeBeforeEpoch { index }),
                    Some(None) => {}
                    Some(Some(LedgerError::RoundParamsMismatch { field })) => {
                        findings.push(Finding::RoundParamsMismatch { index, field });
                    }
                    Some(Some(_)) => findings.push(Finding::ManifestMismatch { index }),
                }
                match replay_charge(index, charge, &p, &totals, &mut distances, &mut findings) {
                    Some(after) => totals = after,
                    None => continue,
                }
                match charge.decision {
                    Decision::Accepted => {
                        accepted += 1;
                        charge_index.insert(charge.request.round_id, index);
                        if accepted_rounds
                            .insert(charge.request.round_id, charge.request.round_context)
                            .is_some()
                        {
                            findings.push(Finding::DuplicateRound {
                                index,
                                round_id: charge.request.round_id,
                            });
                        }
                    }
                    Decision::Refused => refused += 1,
                }
            }
        }
    }
    let delta = policy.as_ref().and_then(BudgetPolicy::delta);
    let epsilon_total = totals
        .epsilon(delta)
        .map(EpsilonTotal::get)
        .unwrap_or(f64::INFINITY);
    let report = AuditReport {
        entries: payloads.len(),
        accepted,
        refused,
        head: hex::encode(hashes.last().copied().unwrap_or([0; 32])),
        policy,
        policies,
        rho_total: totals.rho.get(),
        epsilon_total,
        private: !totals.unbounded && delta.is_some(),
        torn_bytes,
        anchors_checked: 0,
        events,
        findings,
    };
    Replay {
        report,
        totals,
        policy,
        key,
        keys,
        hashes,
        accepted_rounds,
        charge_index,
        manifest,
        distances,
    }
}

/// Re-accounts one charge; returns the totals after it, or `None` when it admits no guarantee.
fn replay_charge(
    index: usize,
    charge: &Charge,
    policy: &BudgetPolicy,
    totals: &Totals,
    distances: &mut BTreeMap<(u8, u64), Distance>,
    findings: &mut Vec<Finding>,
) -> Option<Totals> {
    let checked = account(totals, policy, &charge.request, distances).and_then(|a| {
        let after = match charge.decision {
            Decision::Accepted => a.after,
            Decision::Refused => *totals,
        };
        Ok((a, after, after.epsilon(policy.delta())?))
    });
    let (a, after, epsilon) = match checked {
        Ok(v) => v,
        Err(e) => {
            findings.push(Finding::Unaccountable {
                index,
                reason: e.to_string(),
            });
            return None;
        }
    };
    let (rho_round, rho_total) = match charge.decision {
        Decision::Accepted => (a.rho_round.get(), after.rho.get()),
        Decision::Refused => (a.rho_round.get(), totals.rho.get()),
    };
    for (field, recorded, recomputed) in [
        (
            "n_min",
            f64::from(charge.n_min.get()),
            f64::from(a.n_min.get()),
        ),
        (
            "sampler_distance",
            charge.sampler_distance.get(),
            a.sampler_distance.get(),
        ),
        ("steps", f64::from(charge.steps), f64::from(a.steps)),
        ("rho_round", charge.rho_round.get(), rho_round),
        ("rho_total", charge.rho_total.get(), rho_total),
        ("epsilon_total", charge.epsilon_total.get(), epsilon.get()),
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
    if let (Decision::Accepted, Budget::Capped { epsilon_cap, .. }) =
        (charge.decision, policy.budget)
        && epsilon.get() > epsilon_cap.get()
    {
        findings.push(Finding::CapExceeded {
            index,
            epsilon: epsilon.get(),
            cap: epsilon_cap.get(),
        });
    }
    Some(after)
}

/// Audits a ledger held in memory (the file's bytes) against the key the auditor trusts (the
/// site's identity key from the manifest, at creation or after a rotation) and the anchors the
/// site published. Corruption is reported as a finding, not an error.
pub fn audit_bytes(
    bytes: &[u8],
    key: &VerifyingKey,
    anchors: &[Anchor],
) -> Result<AuditReport, LedgerError> {
    audit_published(bytes, key, anchors, &[])
}

/// [`audit_bytes`] on a file, read-only (it does not take the ledger's lock, so it can audit a
/// copy or a live ledger).
pub fn audit_file(
    path: &Path,
    key: &VerifyingKey,
    anchors: &[Anchor],
) -> Result<AuditReport, LedgerError> {
    let bytes = store::read_file(path)?;
    audit_bytes(&bytes, key, anchors)
}

/// [`audit_bytes`] with the rounds the aggregator published (round id and the post-charge
/// anchor from the site's signed upload): each anchor is checked like any other, and a round
/// with no accepted charge at its anchored position is [`Finding::PublishedRoundNotCharged`].
/// This is what catches a site that cut charges off its ledger, or ran a second ledger,
/// after uploading: its published anchors are then ahead of, or differ from, the ledger.
pub fn audit_published(
    bytes: &[u8],
    key: &VerifyingKey,
    anchors: &[Anchor],
    published: &[PublishedRound],
) -> Result<AuditReport, LedgerError> {
    let (parsed, corrupt) = match store::parse(bytes) {
        Ok(parsed) => (parsed, None),
        Err(StoreError::Corrupt { offset, reason }) => {
            let prefix = bytes.get(..offset as usize).unwrap_or(&[]);
            (store::parse(prefix)?, Some((offset, reason)))
        }
        Err(e) => return Err(e.into()),
    };
    let mut report = anchored_report(&parsed, key, anchors, published);
    if let Some((offset, reason)) = corrupt {
        report.findings.insert(
            0,
            Finding::CorruptRecord {
                offset,
                reason: reason.into(),
            },
        );
    }
    Ok(report)
}

fn anchored_report(
    parsed: &store::Parsed,
    key: &VerifyingKey,
    anchors: &[Anchor],
    published: &[PublishedRound],
) -> AuditReport {
    let replayed = replay(&parsed.payloads, parsed.torn_bytes);
    let mut report = replayed.report;
    if !parsed.payloads.is_empty() && !replayed.keys.contains(key) {
        report.findings.push(Finding::UntrustedKey);
    }
    if anchors.is_empty() && published.is_empty() {
        report.findings.push(Finding::Unanchored);
    }
    for anchor in anchors.iter().chain(published.iter().map(|p| &p.anchor)) {
        report.findings.extend(anchor.check(&replayed.hashes));
    }
    for p in published {
        let at = replayed.charge_index.get(&p.round_id).copied();
        if at.is_none_or(|i| Some(i) != p.anchor.entries.checked_sub(1)) {
            report.findings.push(Finding::PublishedRoundNotCharged {
                round_id: p.round_id,
            });
        }
    }
    report.anchors_checked = anchors.len() + published.len();
    report
}
