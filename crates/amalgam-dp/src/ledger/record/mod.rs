//! The record-level ledger: one per dataset, never per campaign.
//!
//! Its privacy unit is one training record ([`PrivacyUnit::RecordInDataset`]): every local
//! DP-SGD run on a dataset, in whichever campaign, spends from the same ledger, keyed by the
//! id of the dataset's declared name ([`dataset_id`] of a [`DatasetName`]), never by the data
//! file's bytes: a second campaign on the same records keeps spending where the first
//! stopped, and a record appended to the file later is charged the ledger's whole total (each
//! run records the file's digest and record count it trained on, [`DataVersion`]). The δ rule
//! is checked against the most records the dataset may ever hold (N_max, in the genesis), so
//! it holds for every version of the file.
//!
//! A [`RecordPermit`] covers the fixed number of noisy steps of one local run (q, z = σ/Δ,
//! steps): [`RecordLedger::authorize`] takes it before the first step, after the charge is on
//! disk; it is consumed whole and unused steps are never refunded. ε is the RDP accountant of
//! [`crate::record`] (the runs' curves compose by addition at each integer order; ε is the
//! conversion of the sum at the policy's δ), so one run alone is charged exactly
//! [`crate::record::record_epsilon`] of its parameters. δ above 1/(10·N_i) is refused
//! ([`validate_policy`]), and so is a run that would take ε past the cap, before it starts.
//!
//! The file, its lock, torn-tail recovery and the hash-chained, Ed25519-signed entries are
//! those of the site-level ledger ([`crate::ledger::store`]), with an entry encoding, a genesis
//! hash and a signing context of their own ([`entry`], [`replay`]). The site checks its last
//! published anchor ([`RecordLedger::check_anchor`]) before each charge, so a restored older
//! copy of the file is refused.

pub mod entry;
pub mod replay;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use self::entry::RecordEntryBody;
pub use self::entry::{
    DataVersion, MechanismError, RecordEntryKind, RecordMechanism, RecordPolicy, RecordRunRequest,
    RunCharge,
};
pub use self::replay::{
    AuditedRun, RecordAuditReport, RecordFinding, audit_record_file, record_genesis_hash,
};
use self::replay::{RECORD_SIGNING_CONTEXT, compose_run, replay_record};
use crate::error::RecordAccountError;
use crate::ledger::audit::{Anchor, entry_hash};
use crate::ledger::entry::{Decision, PrivacyUnit};
use crate::ledger::ledger_file_name;
use crate::ledger::store::{Store, StoreError};
use crate::record::RdpCurve;

/// Most records a dataset may declare (the δ rule and q·N stay meaningful).
pub const MAX_RECORDS: u64 = 1 << 40;

/// The δ rule: δ ≤ 1/(`DELTA_RECORDS_FACTOR` · N_i). A δ near 1/N would allow a mechanism that
/// publishes one record outright with probability δ·N.
pub const DELTA_RECORDS_FACTOR: f64 = 10.0;

/// Record-ledger failures.
#[derive(Debug, thiserror::Error)]
pub enum RecordLedgerError {
    /// The run would take the dataset's ε past its cap: refused (and the refusal recorded)
    /// before any step.
    #[error(
        "record-level budget exceeded: cap epsilon = {cap}, spent {spent}, this run would bring it to {requested}"
    )]
    BudgetExceeded {
        /// The cap.
        cap: f64,
        /// ε spent by the accepted runs.
        spent: f64,
        /// ε if this run were accepted (+∞: unbounded).
        requested: f64,
    },
    /// δ above 1/(10·N_i).
    #[error(
        "record-level delta = {delta:e} is above 1/(10 N) = {limit:e} for N = {records} records"
    )]
    DeltaTooLarge {
        /// δ given.
        delta: f64,
        /// N_i.
        records: u64,
        /// 1/(10·N_i).
        limit: f64,
    },
    /// A dataset of no record, or more than [`MAX_RECORDS`].
    #[error("a dataset of {0} records is outside 1..=2^40")]
    Records(u64),
    /// A run on more records than the dataset's declared N_max (or on none): the δ rule was
    /// checked against N_max only.
    #[error(
        "this version of the dataset holds {records} records, outside the 1..={max_records} its record ledger was opened for: the delta rule was checked against that bound, and a record ledger has no policy change, so this dataset cannot grow past it under record-level DP"
    )]
    RecordsAboveDeclared {
        /// N of the run's data.
        records: u64,
        /// N_max of the policy.
        max_records: u64,
    },
    /// A dataset name outside 1..=64 characters of `A-Z a-z 0-9 . _ -`.
    #[error("dataset name {0:?} is not 1 to 64 characters of letters, digits, '.', '_' or '-'")]
    DatasetName(String),
    /// The run id was already charged (running it again would spend again).
    #[error("this local run was already charged; a permit is taken once per run")]
    RunAlreadyCharged,
    /// The policy given at open is not the one the genesis records.
    #[error("the record ledger is bound to another policy ({recorded:?})")]
    PolicyMismatch {
        /// The recorded policy.
        recorded: Box<RecordPolicy>,
    },
    /// The key is not the ledger's signer.
    #[error("this key is not the record ledger's signing key")]
    WrongKey,
    /// The file fails verification.
    #[error("record ledger fails verification: {0:?}")]
    Tampered(Vec<RecordFinding>),
    /// The ledger is behind or differs from an anchor it published (an older copy restored).
    #[error("the record ledger is behind or differs from its published anchor {0}")]
    BehindAnchor(Anchor),
    /// No randomness for the genesis nonce.
    #[error("no randomness from the operating system for the record ledger's genesis nonce")]
    Entropy,
    /// A run parameter is invalid.
    #[error(transparent)]
    Account(#[from] RecordAccountError),
    /// The run's mechanism is invalid or does not give the charged noise multiplier.
    #[error(transparent)]
    Mechanism(#[from] MechanismError),
    /// The file layer failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The name a site declares a dataset under (`--record-dataset`): 1 to 64 characters of
/// letters, digits, `.`, `_` or `-`. It names the records, not one file's bytes: every
/// version of the plant's data file under one name spends from one ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetName(String);

/// The name a site's dataset has when it declares none.
pub const DEFAULT_DATASET_NAME: &str = "default";

impl DatasetName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, RecordLedgerError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(RecordLedgerError::DatasetName(
                name.chars().take(80).collect(),
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The dataset id of a declared dataset name: SHA-256 of a domain tag and the name.
pub fn dataset_id(name: &DatasetName) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"amalgam-dp record dataset v1\0");
    h.update(name.0.as_bytes());
    h.finalize().into()
}

/// The version of a data file: its plain SHA-256 (what `sha256sum` prints) and its N records.
pub fn data_version(bytes: &[u8], records: u64) -> DataVersion {
    DataVersion {
        file: Sha256::digest(bytes).into(),
        records,
    }
}

/// The N_max a site declares when it gives none: the most records the δ rule allows at δ,
/// ⌊1/(10·δ)⌋ (at most [`MAX_RECORDS`]), so appending records never needs a new ledger
/// until the δ rule itself would break.
pub fn default_max_records(delta: f64) -> u64 {
    let n = (1.0 / (DELTA_RECORDS_FACTOR * delta)).floor();
    if n.is_finite() && n >= 1.0 {
        (n as u64).min(MAX_RECORDS)
    } else if n.is_finite() {
        0
    } else {
        MAX_RECORDS
    }
}

/// Where the record ledger of `dataset` lives under `root`: its own directory per dataset,
/// `root/<dataset hex>/record-in-dataset.ledger`.
pub fn record_ledger_path(root: &Path, dataset: &[u8; 32]) -> PathBuf {
    root.join(hex::encode(dataset))
        .join(ledger_file_name(PrivacyUnit::RecordInDataset))
}

/// Checks the record-level policy: 1 ≤ N_max ≤ [`MAX_RECORDS`] and δ ≤ 1/(10·N_max).
pub fn validate_policy(p: &RecordPolicy) -> Result<(), RecordLedgerError> {
    if p.max_records == 0 || p.max_records > MAX_RECORDS {
        return Err(RecordLedgerError::Records(p.max_records));
    }
    let limit = 1.0 / (DELTA_RECORDS_FACTOR * p.max_records as f64);
    if p.delta.get() > limit {
        return Err(RecordLedgerError::DeltaTooLarge {
            delta: p.delta.get(),
            records: p.max_records,
            limit,
        });
    }
    Ok(())
}

/// Checks that a run's data fits the policy: 1 ≤ N ≤ N_max.
pub fn check_data(p: &RecordPolicy, data: &DataVersion) -> Result<(), RecordLedgerError> {
    if data.records == 0 || data.records > p.max_records {
        return Err(RecordLedgerError::RecordsAboveDeclared {
            records: data.records,
            max_records: p.max_records,
        });
    }
    Ok(())
}

/// The right to run one local DP-SGD run of exactly these parameters once. Made only by
/// [`RecordLedger::authorize`] after the charge is on disk; neither `Clone` nor `Copy`, and
/// the trainer consumes it ([`RecordPermit::consume`]) before its first step.
#[derive(Debug)]
pub struct RecordPermit {
    request: RecordRunRequest,
    ledger_id: [u8; 32],
    dataset: [u8; 32],
    epsilon_run: f64,
    epsilon_total: f64,
    anchor: Anchor,
}

/// What a consumed permit leaves: the parameters the run must use and the guarantee.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordGrant {
    /// The charged run.
    pub request: RecordRunRequest,
    /// The dataset charged.
    pub dataset: [u8; 32],
    /// ε of the run alone.
    pub epsilon_run: f64,
    /// ε of the dataset over every accepted run, this one included.
    pub epsilon_total: f64,
}

impl RecordPermit {
    /// The charged run.
    pub fn request(&self) -> &RecordRunRequest {
        &self.request
    }
    /// The ledger that charged it.
    pub fn ledger_id(&self) -> &[u8; 32] {
        &self.ledger_id
    }
    /// ε of every accepted run including this one.
    pub fn epsilon_total(&self) -> f64 {
        self.epsilon_total
    }
    /// The ledger's anchor just after the charge (to keep as the published anchor).
    pub fn anchor(&self) -> Anchor {
        self.anchor
    }
    /// Uses the permit up, whole: the run's steps are spent whether or not they all run.
    pub fn consume(self) -> RecordGrant {
        RecordGrant {
            request: self.request,
            dataset: self.dataset,
            epsilon_run: self.epsilon_run,
            epsilon_total: self.epsilon_total,
        }
    }
}

/// A dataset's append-only, signed record-level ε ledger.
pub struct RecordLedger {
    store: Store,
    key: SigningKey,
    policy: RecordPolicy,
    hashes: Vec<[u8; 32]>,
    curve: Option<RdpCurve>,
    accepted: BTreeSet<[u8; 32]>,
    spent: f64,
    /// The samplers' total-variation distance over the accepted runs (taken from δ).
    distance: f64,
}

impl core::fmt::Debug for RecordLedger {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecordLedger")
            .field("policy", &self.policy)
            .field("entries", &self.hashes.len())
            .field("spent", &self.spent)
            .finish_non_exhaustive()
    }
}

impl RecordLedger {
    /// Opens (or creates, committing `policy` in its genesis) the record ledger at `path`
    /// under an exclusive lock and replays it: every entry must verify and re-account, `key`
    /// must be its signer and `policy` its policy. A torn final write is cut off and recorded.
    /// Nothing changes when opening is refused.
    pub fn open(
        path: &Path,
        key: SigningKey,
        policy: RecordPolicy,
    ) -> Result<Self, RecordLedgerError> {
        validate_policy(&policy)?;
        let (mut store, parsed) = Store::open(path)?;
        let vk = key.verifying_key();
        let replayed = replay_record(&parsed.payloads, parsed.torn_bytes, Some(&vk));
        let blocking: Vec<_> = replayed
            .report
            .findings
            .iter()
            .filter(|f| !f.is_crash_only())
            .cloned()
            .collect();
        if !blocking.is_empty() {
            return Err(RecordLedgerError::Tampered(blocking));
        }
        let fresh = parsed.payloads.is_empty();
        if !fresh {
            if replayed.key != Some(vk) {
                return Err(RecordLedgerError::WrongKey);
            }
            let recorded = replayed.report.policy.ok_or(RecordLedgerError::WrongKey)?;
            if recorded != policy {
                return Err(RecordLedgerError::PolicyMismatch {
                    recorded: Box::new(recorded),
                });
            }
        }
        store.repair(&parsed, path)?;
        let mut ledger = Self {
            store,
            key,
            policy,
            hashes: replayed.hashes,
            curve: replayed.curve,
            accepted: replayed.accepted,
            spent: replayed.report.epsilon_total,
            distance: replayed.distance,
        };
        if fresh {
            let mut nonce = [0u8; 32];
            getrandom::fill(&mut nonce).map_err(|_| RecordLedgerError::Entropy)?;
            ledger.append(RecordEntryKind::Genesis {
                key: vk.to_bytes(),
                policy,
                nonce,
            })?;
        }
        if let Some(dropped) = parsed.torn_bytes {
            ledger.append(RecordEntryKind::Recovery {
                dropped_bytes: dropped,
                dropped_sha256: Sha256::digest(&parsed.torn_tail).into(),
            })?;
        }
        Ok(ledger)
    }

    fn append(&mut self, kind: RecordEntryKind) -> Result<(), RecordLedgerError> {
        let body = RecordEntryBody::new(self.hashes.len() as u64, self.head(), kind).to_bytes();
        let signature = self.key.sign(&[RECORD_SIGNING_CONTEXT, &body].concat());
        let payload = [body.as_slice(), &signature.to_bytes()].concat();
        self.store.append(&payload)?;
        self.hashes.push(entry_hash(&payload));
        Ok(())
    }

    fn head(&self) -> [u8; 32] {
        self.hashes
            .last()
            .copied()
            .unwrap_or_else(|| record_genesis_hash(&self.key.verifying_key()))
    }

    /// The ledger's identity: the hash of its genesis entry.
    pub fn ledger_id(&self) -> [u8; 32] {
        self.hashes.first().copied().unwrap_or([0; 32])
    }

    /// The key auditors verify entries with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The policy.
    pub fn policy(&self) -> &RecordPolicy {
        &self.policy
    }

    /// ε spent by the accepted runs at the policy's δ.
    pub fn spent(&self) -> f64 {
        self.spent
    }

    /// The anchor to keep or publish now.
    pub fn anchor(&self) -> Anchor {
        Anchor {
            entries: self.hashes.len(),
            head: self.head(),
        }
    }

    /// Refuses when this ledger is behind `published` or holds another entry at its place:
    /// an older copy of the file was restored, or the file was forked.
    pub fn check_anchor(&self, published: &Anchor) -> Result<(), RecordLedgerError> {
        match published.check(&self.hashes) {
            Some(_) => Err(RecordLedgerError::BehindAnchor(*published)),
            None => Ok(()),
        }
    }

    /// What [`Self::authorize`] would decide, without writing: ε of every accepted run with
    /// this one, or the refusal. The site asks before it charges the round's site-level
    /// budget, so a run the record cap refuses declines the round without spending either.
    pub fn check(&self, request: &RecordRunRequest) -> Result<f64, RecordLedgerError> {
        if self.accepted.contains(&request.run_id) {
            return Err(RecordLedgerError::RunAlreadyCharged);
        }
        let composed = self.compose(request)?;
        let cap = self.policy.epsilon_cap.get();
        match composed.total {
            Some((e, _)) if e <= cap => Ok(e),
            total => Err(RecordLedgerError::BudgetExceeded {
                cap,
                spent: self.spent,
                requested: total.map_or(f64::INFINITY, |(e, _)| e),
            }),
        }
    }

    fn compose(&self, request: &RecordRunRequest) -> Result<replay::Composed, RecordLedgerError> {
        compose_run(self.curve.as_ref(), self.distance, request, &self.policy)
    }

    /// Decides one local run before its first step and records the decision durably. Within
    /// the cap: the charge is on disk and the permit is returned. Past it (or unbounded): the
    /// refusal is recorded and [`RecordLedgerError::BudgetExceeded`] returned; nothing spent.
    pub fn authorize(
        &mut self,
        request: RecordRunRequest,
    ) -> Result<RecordPermit, RecordLedgerError> {
        if self.accepted.contains(&request.run_id) {
            return Err(RecordLedgerError::RunAlreadyCharged);
        }
        let replay::Composed {
            curve,
            total,
            run,
            distance,
        } = self.compose(&request)?;
        let cap = self.policy.epsilon_cap.get();
        let accepted = total.filter(|(e, _)| *e <= cap);
        let epsilon_run = run.unwrap_or(f64::INFINITY);
        let Some((epsilon_total, order)) = accepted else {
            self.append(RecordEntryKind::Run(RunCharge {
                request,
                decision: Decision::Refused,
                epsilon_run,
                epsilon_total: self.spent,
                order: 0,
            }))?;
            return Err(RecordLedgerError::BudgetExceeded {
                cap,
                spent: self.spent,
                requested: total.map_or(f64::INFINITY, |(e, _)| e),
            });
        };
        self.append(RecordEntryKind::Run(RunCharge {
            request,
            decision: Decision::Accepted,
            epsilon_run,
            epsilon_total,
            order,
        }))?;
        self.curve = Some(curve);
        self.distance = distance;
        self.accepted.insert(request.run_id);
        self.spent = epsilon_total;
        Ok(RecordPermit {
            request,
            ledger_id: self.ledger_id(),
            dataset: self.policy.dataset,
            epsilon_run,
            epsilon_total,
            anchor: self.anchor(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::params::{Delta, Epsilon};
    use crate::sampler::SamplerKind;

    const DATA: DataVersion = DataVersion {
        file: [7; 32],
        records: 100,
    };

    fn policy() -> RecordPolicy {
        RecordPolicy {
            dataset: [1; 32],
            max_records: 100,
            epsilon_cap: Epsilon::new(5.0).unwrap(),
            delta: Delta::new(1e-5).unwrap(),
        }
    }

    /// A site holding its own key that appends a correctly signed run stating less ε than its
    /// parameters give (understating its spend to an auditor): the audit recomputes it, names
    /// the entry, and the ledger no longer opens for charging.
    #[test]
    fn a_signed_entry_understating_epsilon_is_found_and_blocks_charging() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let key = SigningKey::from_bytes(&[2; 32]);
        let mut ledger = RecordLedger::open(&path, key.clone(), policy()).unwrap();
        let request = RecordRunRequest {
            run_id: [3; 32],
            q: 0.1,
            noise_multiplier: 1.0,
            steps: 10,
            data: DATA,
            mechanism: RecordMechanism::with_multiplier(1.0, 1e-4, 100, SamplerKind::Fast, 1.0),
        };
        let honest = ledger.check(&request).unwrap();
        ledger
            .append(RecordEntryKind::Run(RunCharge {
                request,
                decision: Decision::Accepted,
                // The run alone stated honestly (its own lie is the next test's case).
                epsilon_run: honest,
                epsilon_total: honest / 10.0,
                order: 2,
            }))
            .unwrap();
        drop(ledger);
        let report = audit_record_file(&path, Some(&key.verifying_key()), &[]).unwrap();
        assert!(matches!(
            report.findings[..],
            [RecordFinding::EpsilonMismatch { index: 1, recomputed, .. }] if recomputed == honest
        ));
        assert!(matches!(
            RecordLedger::open(&path, key, policy()),
            Err(RecordLedgerError::Tampered(_))
        ));
    }

    /// A site holding its own key signs entries that understate its spend in each remaining
    /// way: a charged z above the σ/Δ its recorded noise gives, a run alone stated below its
    /// parameters' ε while the total is right, and a run at q = 0 (which the accountant would
    /// price at nothing). Each is found by the audit at its entry, and the ledger no longer
    /// opens for charging.
    #[test]
    fn signed_entries_understating_a_run_are_found_and_block_charging() {
        let honest_request = RecordRunRequest {
            run_id: [3; 32],
            q: 0.1,
            noise_multiplier: 1.0,
            steps: 10,
            data: DATA,
            mechanism: RecordMechanism::with_multiplier(1.0, 1e-4, 100, SamplerKind::Fast, 1.0),
        };
        let mut over_z = honest_request;
        over_z.noise_multiplier = 3.0;
        let mut zero_q = honest_request;
        zero_q.q = 0.0;
        type Lie = fn(&RecordFinding) -> bool;
        let cases: [(RecordRunRequest, bool, Lie); 3] = [
            (over_z, false, |f| {
                matches!(f, RecordFinding::InvalidRun { index: 1, .. })
            }),
            (honest_request, true, |f| {
                matches!(f, RecordFinding::RunEpsilonMismatch { index: 1, .. })
            }),
            (zero_q, false, |f| {
                matches!(f, RecordFinding::InvalidRun { index: 1, .. })
            }),
        ];
        for (request, understate_run, finding) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r");
            let key = SigningKey::from_bytes(&[2; 32]);
            let mut ledger = RecordLedger::open(&path, key.clone(), policy()).unwrap();
            let honest = ledger.check(&honest_request).unwrap();
            let epsilon_run = if understate_run {
                honest / 10.0
            } else {
                honest
            };
            ledger
                .append(RecordEntryKind::Run(RunCharge {
                    request,
                    decision: Decision::Accepted,
                    epsilon_run,
                    epsilon_total: honest,
                    order: 2,
                }))
                .unwrap();
            drop(ledger);
            let report = audit_record_file(&path, Some(&key.verifying_key()), &[]).unwrap();
            assert!(
                report.findings.iter().any(finding),
                "{request:?}: {:?}",
                report.findings
            );
            assert!(matches!(
                RecordLedger::open(&path, key, policy()),
                Err(RecordLedgerError::Tampered(_))
            ));
        }
    }
}
