//! The site's privacy budget and its tamper-evident ε ledger.
//!
//! A ledger is bound to one DP policy (δ, cap, privacy unit, adjacency, accountant) by its
//! signed genesis entry; opening it with another policy is refused, and the policy changes only
//! through a signed policy-change entry, which the audit lists as a finding when it loosens the
//! protection. A site keeps one ledger per privacy unit ([`ledger_file_name`]).
//!
//! Before a round draws any noise the site asks its [`Ledger`] to [`Ledger::authorize`] it,
//! with the round parameters the epoch in force records ([`Ledger::record_epoch`]; no charge
//! before the first epoch, none under other parameters). The ledger computes n_min, the sampler's distance bound, the round's ρ and the cumulative ε from
//! the round's parameters; if the cap would be exceeded it records a refusal and returns
//! [`LedgerError::BudgetExceeded`] (cap, spent, requested), otherwise it records the charge
//! (durably, before returning) and hands back a single-use [`RoundPermit`]. The permit is moved
//! into the noise draw ([`crate::encoding::DdgCodec::draw_noise`]): nothing else in the crate
//! produces an encoded update. Every entry is hash-chained to the previous one with SHA-256 and
//! signed with the site's Ed25519 key; [`audit`] verifies a ledger offline.
//!
//! The file is held under an exclusive lock for the ledger's lifetime and re-read before every
//! append (see [`store`]).
//!
//! The permit carries the ledger's identity, its policy kind and the anchor just after the
//! charge, and so does the encoded update; [`Ledger::seal_update`] and
//! [`Ledger::reload_update`] are the only way an update is persisted and read back.

pub mod audit;
pub mod entry;
pub mod record;
pub mod store;

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use self::audit::{
    Accounted, Anchor, Finding, SIGNING_CONTEXT, Totals, account, entry_hash, genesis_hash, replay,
    rotation_message,
};
pub use self::entry::{Budget, BudgetPolicy, PolicyKind, PrivacyUnit, RoundParams, RoundRequest};
use self::entry::{Charge, Decision, EntryBody, EntryKind, EpsilonTotal, PolicyError};
use self::store::{Store, StoreError};
use crate::encoding::EncodedUpdate;
use crate::error::{AccountError, ParamError};
use crate::params::{Distance, Sigma, SiteCount};

/// Ledger failures.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The round would push cumulative ε past the cap; it was refused (and the refusal recorded).
    #[error(
        "privacy budget exceeded: cap epsilon = {cap}, spent {spent}, this round would bring it to {requested}"
    )]
    BudgetExceeded {
        /// The cap on ε.
        cap: f64,
        /// ε spent by the accepted rounds so far.
        spent: f64,
        /// ε if this round were accepted.
        requested: f64,
    },
    /// The operating system gave no randomness for the genesis nonce.
    #[error("no randomness from the operating system for the ledger's genesis nonce")]
    Entropy,
    /// Persisted update bytes do not carry a valid seal by this ledger's key.
    #[error("the persisted update's seal does not verify under this ledger's keys")]
    BadUpdateSeal,
    /// The update was charged to another ledger.
    #[error("the persisted update was charged to another ledger")]
    UpdateFromOtherLedger,
    /// The update's round is not an accepted charge of this ledger with the same round
    /// context.
    #[error("round {0} has no accepted charge with this round context in this ledger")]
    UpdateNotCharged(u64),
    /// Persisted update bytes are malformed.
    #[error(transparent)]
    Encode(#[from] crate::error::EncodeError),
    /// The round id was already accepted (running it twice would spend twice).
    #[error("round {0} was already accepted")]
    RoundAlreadyAccepted(u64),
    /// The policy given at open is not the one the ledger records.
    #[error(
        "the ledger is bound to another policy ({recorded:?}); append a signed policy change instead"
    )]
    PolicyMismatch {
        /// The policy in force in the ledger.
        recorded: Box<BudgetPolicy>,
    },
    /// The policy breaks a rule.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A policy change to another privacy unit (a site keeps one ledger per unit).
    #[error("a ledger holds one privacy unit; open the other unit's ledger instead")]
    OtherPrivacyUnit,
    /// The key given is not the ledger's current signing key.
    #[error("this key is not the ledger's current signing key")]
    WrongKey,
    /// The charge's manifest digest is not the one the last epoch entry put in force.
    #[error("the round's manifest digest is not the consortium manifest in force")]
    ManifestMismatch,
    /// No epoch entry has put the consortium's round parameters in force yet: a charge would
    /// be accounted with parameters the site chose itself.
    #[error("no consortium epoch is in force; record the manifest's epoch before any round")]
    NoEpoch,
    /// The round's parameters are not the ones the epoch in force records.
    #[error("the round's {field} is not the one the consortium epoch in force records")]
    RoundParamsMismatch {
        /// The first differing parameter.
        field: &'static str,
    },
    /// An epoch entry would go back to an earlier epoch.
    #[error("epoch {requested} is before the epoch in force, {current}")]
    EpochRegressed {
        /// The epoch in force.
        current: u64,
        /// The epoch asked for.
        requested: u64,
    },
    /// The ledger is behind (or forked from) a head it published earlier: its tail was cut.
    #[error("the ledger is behind or differs from a published anchor: {0:?}")]
    BehindAnchor(Finding),
    /// The file on disk fails verification.
    #[error("ledger fails verification: {0:?}")]
    Tampered(Vec<Finding>),
    /// The file layer failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The accountant failed.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// A parameter is invalid.
    #[error(transparent)]
    Param(#[from] ParamError),
}

/// The file name of a site's ledger for `unit` (one ledger per privacy unit). The record-level
/// ledger is one per dataset: its file lives in the dataset's own directory
/// ([`record::record_ledger_path`]).
pub fn ledger_file_name(unit: PrivacyUnit) -> &'static str {
    match unit {
        PrivacyUnit::SiteUpdatePerRound => "site-update-per-round.ledger",
        PrivacyUnit::RecordInDataset => "record-in-dataset.ledger",
    }
}

/// Domain separation of a sealed encoded update's signature (distinct from ledger entries).
const UPDATE_SEAL_CONTEXT: &[u8] = b"amalgam-dp sealed encoded update v1\0";

/// What a permit lets the noise draw do.
#[derive(Debug, PartialEq)]
pub(crate) enum PermitNoise {
    /// Draw discrete Gaussian noise of this σ (integer domain) with this sampler.
    Gaussian {
        /// γ·σ_local.
        scaled_sigma: Sigma,
        /// The distance bound the charge recorded.
        distance: Distance,
    },
    /// Policy `none`: no noise.
    None,
}

/// The right to draw one round's noise once, made only by [`Ledger::authorize`] after the
/// charge is on disk. It is neither `Clone` nor `Copy` and the draw consumes it. It is the unit
/// of one charge: a site-level permit covers one noisy step; a record-level permit (later)
/// will cover the fixed number of noisy steps of one local training run, drawn and consumed
/// whole, unused steps not refunded.
#[derive(Debug)]
pub struct RoundPermit {
    request: RoundRequest,
    anchor: Anchor,
    ledger_id: [u8; 32],
    policy_kind: PolicyKind,
    n_min: SiteCount,
    steps: u32,
    noise: PermitNoise,
    epsilon_total: EpsilonTotal,
}

impl RoundPermit {
    /// The accepted round's parameters.
    pub fn request(&self) -> &RoundRequest {
        &self.request
    }
    /// The identity of the ledger that charged it ([`Ledger::ledger_id`]).
    pub fn ledger_id(&self) -> &[u8; 32] {
        &self.ledger_id
    }
    /// The ledger's anchor just after this charge. It travels in the encoded update so the
    /// service can put it in the signed upload and the aggregator can publish it per round;
    /// an audit against the published rounds then finds a ledger cut back or forked after
    /// the upload ([`audit::audit_published`]).
    pub fn anchor(&self) -> Anchor {
        self.anchor
    }
    /// The kind of the policy it was charged under.
    pub fn policy_kind(&self) -> PolicyKind {
        self.policy_kind
    }
    /// n_min the charge was accounted with.
    pub fn n_min(&self) -> SiteCount {
        self.n_min
    }
    /// Noisy steps the permit covers.
    pub fn steps(&self) -> u32 {
        self.steps
    }
    /// σ of the noise in the integer domain (γ·σ_local), `None` under policy `none`.
    pub fn scaled_local_sigma(&self) -> Option<Sigma> {
        match self.noise {
            PermitNoise::Gaussian { scaled_sigma, .. } => Some(scaled_sigma),
            PermitNoise::None => None,
        }
    }
    /// Cumulative ε including this round (+∞: no differential privacy).
    pub fn epsilon_total(&self) -> EpsilonTotal {
        self.epsilon_total
    }
    pub(crate) fn noise(&self) -> &PermitNoise {
        &self.noise
    }
}

/// What opening found.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenReport {
    /// Entries in the ledger after opening (a genesis or recovery entry written now included).
    pub entries: u64,
    /// Bytes of a torn final record cut off by crash recovery (and recorded), if any.
    pub torn_bytes: Option<u64>,
    /// Compliance findings in the history (a loosened policy, a lost key); none block charging.
    pub findings: Vec<Finding>,
}

/// The consortium manifest, epoch and round parameters the last epoch entry put in force.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EpochInForce {
    pub manifest_digest: [u8; 32],
    pub epoch: u64,
    pub params: RoundParams,
}

impl EpochInForce {
    /// Why `request` may not be charged under this epoch, if it may not.
    pub(crate) fn refuses(&self, request: &RoundRequest) -> Option<LedgerError> {
        if self.manifest_digest != request.manifest_digest {
            return Some(LedgerError::ManifestMismatch);
        }
        self.params
            .mismatch(request)
            .map(|field| LedgerError::RoundParamsMismatch { field })
    }
}

/// A site's append-only, signed ε ledger for one privacy unit, bound to its policy.
pub struct Ledger {
    store: Store,
    key: SigningKey,
    policy: BudgetPolicy,
    hashes: Vec<[u8; 32]>,
    totals: Totals,
    /// Accepted round ids and the round context each was charged under.
    accepted_rounds: BTreeMap<u64, [u8; 32]>,
    /// Every key that signed the genesis or was rotated to (an update sealed before a
    /// rotation still reloads).
    keys: Vec<VerifyingKey>,
    manifest: Option<EpochInForce>,
    distances: BTreeMap<(u8, u64), Distance>,
}

impl Ledger {
    /// Opens (or creates, committing `policy` in its genesis entry) the ledger at `path` under
    /// an exclusive lock, and replays it: every entry must verify and re-account, `key` must
    /// be the signing key in force and `policy` the policy in force. A torn final write is cut
    /// off and the cut recorded; nothing is changed when opening is refused.
    pub fn open(
        path: &Path,
        key: SigningKey,
        policy: BudgetPolicy,
    ) -> Result<(Self, OpenReport), LedgerError> {
        Self::open_inner(path, key, policy, false)
    }

    /// Opens the ledger with a new key after the old one was lost: appends a key rotation
    /// signed by the new key only, which every audit reports as [`Finding::OldKeyLost`].
    pub fn open_after_lost_key(
        path: &Path,
        new_key: SigningKey,
        policy: BudgetPolicy,
    ) -> Result<(Self, OpenReport), LedgerError> {
        Self::open_inner(path, new_key, policy, true)
    }

    fn open_inner(
        path: &Path,
        key: SigningKey,
        policy: BudgetPolicy,
        old_key_lost: bool,
    ) -> Result<(Self, OpenReport), LedgerError> {
        policy.validate()?;
        let (mut store, parsed) = Store::open(path)?;
        let replayed = replay(&parsed.payloads, parsed.torn_bytes);
        let (blocking, compliance): (Vec<_>, Vec<_>) = replayed
            .report
            .findings
            .iter()
            .cloned()
            .partition(|f| !f.is_compliance_only());
        if !blocking.is_empty() {
            return Err(LedgerError::Tampered(blocking));
        }
        let fresh = parsed.payloads.is_empty();
        if !fresh {
            let current = replayed.key.ok_or(LedgerError::WrongKey)?;
            if !old_key_lost && current != key.verifying_key() {
                return Err(LedgerError::WrongKey);
            }
            let recorded = replayed.policy.ok_or(LedgerError::WrongKey)?;
            if recorded != policy {
                return Err(LedgerError::PolicyMismatch {
                    recorded: Box::new(recorded),
                });
            }
        } else if old_key_lost {
            return Err(LedgerError::WrongKey);
        }
        store.repair(&parsed, path)?;
        let mut ledger = Self {
            store,
            key,
            policy,
            hashes: replayed.hashes,
            totals: replayed.totals,
            accepted_rounds: replayed.accepted_rounds,
            keys: replayed.keys,
            manifest: replayed.manifest,
            distances: replayed.distances,
        };
        if fresh {
            ledger.keys.push(ledger.key.verifying_key());
            let mut nonce = [0u8; 32];
            getrandom::fill(&mut nonce).map_err(|_| LedgerError::Entropy)?;
            let genesis = EntryKind::Genesis {
                key: ledger.key.verifying_key().to_bytes(),
                policy,
                nonce,
            };
            ledger.append(genesis)?;
        }
        if let Some(dropped) = parsed.torn_bytes {
            let digest: [u8; 32] = Sha256::digest(&parsed.torn_tail).into();
            ledger.append(EntryKind::Recovery {
                dropped_bytes: dropped,
                dropped_sha256: digest,
            })?;
        }
        if old_key_lost {
            let new = ledger.key.verifying_key().to_bytes();
            // The old key is gone: its bytes are taken from the replayed chain for the message.
            let old = replayed.key.map(|k| k.to_bytes()).unwrap_or([0; 32]);
            ledger.append_rotation(new, &old, true)?;
            ledger.keys.push(ledger.key.verifying_key());
        }
        let report = OpenReport {
            entries: ledger.hashes.len() as u64,
            torn_bytes: parsed.torn_bytes,
            findings: compliance,
        };
        Ok((ledger, report))
    }

    /// Signs and appends one entry; the in-memory state changes only once it is on disk.
    fn append(&mut self, kind: EntryKind) -> Result<(), LedgerError> {
        let body = EntryBody {
            seq: self.hashes.len() as u64,
            prev_hash: self.head(),
            kind,
            versions: entry::library_versions(),
        };
        let body_bytes = body.to_bytes();
        let signature = self.key.sign(&[SIGNING_CONTEXT, &body_bytes].concat());
        let payload = [body_bytes.as_slice(), &signature.to_bytes()].concat();
        self.store.append(&payload)?;
        self.hashes.push(entry_hash(&payload));
        Ok(())
    }

    fn append_rotation(
        &mut self,
        new_key: [u8; 32],
        old_key: &[u8; 32],
        old_key_lost: bool,
    ) -> Result<(), LedgerError> {
        let seq = self.hashes.len() as u64;
        let message = rotation_message(seq, &self.head(), old_key, &new_key);
        let new_key_signature = self.key.sign(&message).to_bytes();
        self.append(EntryKind::KeyRotation {
            new_key,
            new_key_signature,
            old_key_lost,
        })
    }

    /// Hash of the last entry (the genesis hash of the signing key before any).
    fn head(&self) -> [u8; 32] {
        self.hashes
            .last()
            .copied()
            .unwrap_or_else(|| genesis_hash(&self.key.verifying_key()))
    }

    /// The ledger's identity: the hash of its genesis entry, which binds the signing key and
    /// the policy it was created under. Every permit and encoded update carries it, so a
    /// consumer that knows the site's ledger (from the manifest, or from its own
    /// configuration) refuses an update charged to any other ledger.
    pub fn ledger_id(&self) -> [u8; 32] {
        self.hashes.first().copied().unwrap_or([0; 32])
    }

    /// The public key auditors verify new entries with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The policy in force.
    pub fn policy(&self) -> &BudgetPolicy {
        &self.policy
    }

    /// The consortium manifest digest, epoch and round parameters in force (`None` before the
    /// first epoch entry, when every charge is refused).
    pub fn epoch_in_force(&self) -> Option<([u8; 32], u64, RoundParams)> {
        self.manifest
            .map(|m| (m.manifest_digest, m.epoch, m.params))
    }

    /// The anchor to publish now (entry count and head).
    pub fn anchor(&self) -> Anchor {
        Anchor {
            entries: self.hashes.len(),
            head: self.head(),
        }
    }

    /// Refuses when this ledger is behind `published` (entries cut off since it was published)
    /// or holds a different entry at its position. The site agent calls this with the last
    /// anchor it published before it charges: a complete last record cut mid-way looks like a
    /// crash to the file alone.
    pub fn check_anchor(&self, published: &Anchor) -> Result<(), LedgerError> {
        match published.check(&self.hashes) {
            Some(finding) => Err(LedgerError::BehindAnchor(finding)),
            None => Ok(()),
        }
    }

    /// ε spent so far at the policy's δ (+∞ once a round ran without privacy).
    pub fn spent(&self) -> Result<EpsilonTotal, LedgerError> {
        Ok(self.totals.epsilon(self.policy.delta())?)
    }

    /// ρ spent so far.
    pub fn rho_spent(&self) -> crate::params::Rho {
        self.totals.rho
    }

    /// Appends a signed policy change (the audit reports it as a finding when it loosens δ, the
    /// cap or the adjacency). Refuses another privacy unit and δ above the site-level ceiling.
    pub fn change_policy(&mut self, next: BudgetPolicy) -> Result<(), LedgerError> {
        next.validate()?;
        if next.unit != self.policy.unit {
            return Err(LedgerError::OtherPrivacyUnit);
        }
        self.append(EntryKind::PolicyChange(next))?;
        self.policy = next;
        Ok(())
    }

    /// Rotates the signing key: the entry is signed by the old key and, inside, by the new one.
    /// The site writes the same rotation to each of its ledgers (one per privacy unit).
    pub fn rotate_key(&mut self, new_key: SigningKey) -> Result<(), LedgerError> {
        let old = self.key.verifying_key().to_bytes();
        let new = new_key.verifying_key().to_bytes();
        let seq = self.hashes.len() as u64;
        let message = rotation_message(seq, &self.head(), &old, &new);
        let new_key_signature = new_key.sign(&message).to_bytes();
        self.append(EntryKind::KeyRotation {
            new_key: new,
            new_key_signature,
            old_key_lost: false,
        })?;
        self.keys.push(new_key.verifying_key());
        self.key = new_key;
        Ok(())
    }

    /// Records the consortium manifest (digest), epoch and round parameters now in force, as
    /// the manifest states them; charges must then name that manifest and exactly those
    /// parameters, and no charge is accepted before the first epoch. Membership changes so
    /// never fork a ledger. Parameters that admit no guarantee (c ≥ m, a cohort above
    /// [`crate::params::MAX_COHORT`]) are refused here, before they are recorded.
    pub fn record_epoch(
        &mut self,
        manifest_digest: [u8; 32],
        epoch: u64,
        params: RoundParams,
    ) -> Result<(), LedgerError> {
        params.validate()?;
        if let Some(EpochInForce { epoch: current, .. }) = self.manifest
            && epoch < current
        {
            return Err(LedgerError::EpochRegressed {
                current,
                requested: epoch,
            });
        }
        self.append(EntryKind::Epoch {
            manifest_digest,
            epoch,
            params,
        })?;
        self.manifest = Some(EpochInForce {
            manifest_digest,
            epoch,
            params,
        });
        Ok(())
    }

    /// Seals the round's encoded update for the caller to persist: its canonical bytes
    /// followed by an Ed25519 signature by the ledger's key under a context of its own (never
    /// a valid ledger entry). Only [`Ledger::reload_update`] turns the bytes back into an
    /// update. Refuses an update charged to another ledger.
    pub fn seal_update(
        &self,
        update: &EncodedUpdate,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, LedgerError> {
        if update.ledger_id() != &self.ledger_id() {
            return Err(LedgerError::UpdateFromOtherLedger);
        }
        let mut bytes = update.to_bytes();
        let message = zeroize::Zeroizing::new([UPDATE_SEAL_CONTEXT, bytes.as_slice()].concat());
        let signature = self.key.sign(&message);
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(bytes)
    }

    /// Reloads an update persisted with [`Ledger::seal_update`] (for a retry, which re-sends
    /// the same bytes and never re-draws): the seal must verify under a key of this ledger,
    /// the bytes must decode strictly, the update must name this ledger, and its round must
    /// be an accepted charge here with the same round context. Forged, relabelled or foreign
    /// bytes are refused; nothing changes either way.
    pub fn reload_update(&self, sealed: &[u8]) -> Result<EncodedUpdate, LedgerError> {
        let split = sealed
            .len()
            .checked_sub(ed25519_dalek::Signature::BYTE_SIZE)
            .ok_or(LedgerError::BadUpdateSeal)?;
        let (bytes, signature) = sealed.split_at(split);
        let signature = ed25519_dalek::Signature::from_slice(signature)
            .map_err(|_| LedgerError::BadUpdateSeal)?;
        let message = zeroize::Zeroizing::new([UPDATE_SEAL_CONTEXT, bytes].concat());
        if !self
            .keys
            .iter()
            .any(|k| k.verify_strict(&message, &signature).is_ok())
        {
            return Err(LedgerError::BadUpdateSeal);
        }
        let update = EncodedUpdate::from_bytes(bytes)?;
        if update.ledger_id() != &self.ledger_id() {
            return Err(LedgerError::UpdateFromOtherLedger);
        }
        match self.accepted_rounds.get(&update.round_id()) {
            Some(context) if context == update.round_context() => Ok(update),
            _ => Err(LedgerError::UpdateNotCharged(update.round_id())),
        }
    }

    /// Decides a round before any noise is drawn, and records the decision durably.
    pub fn authorize(&mut self, request: RoundRequest) -> Result<RoundPermit, LedgerError> {
        if self.accepted_rounds.contains_key(&request.round_id) {
            return Err(LedgerError::RoundAlreadyAccepted(request.round_id));
        }
        let epoch = self.manifest.as_ref().ok_or(LedgerError::NoEpoch)?;
        if let Some(refusal) = epoch.refuses(&request) {
            return Err(refusal);
        }
        let accounted: Accounted =
            account(&self.totals, &self.policy, &request, &mut self.distances)?;
        let delta = self.policy.delta();
        let spent = self.totals.epsilon(delta)?;
        // ε so large that the sampler's share (1 + e^ε)·η no longer fits in δ is certainly
        // over any sensible cap: it is refused like any other overspend.
        let requested = match accounted.after.epsilon(delta) {
            Ok(e) => Some(e),
            Err(AccountError::SamplerDistanceTooLarge { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let accepted = match self.policy.budget {
            Budget::NoPrivacy => requested,
            Budget::Capped { epsilon_cap, .. } => {
                requested.filter(|e| e.get() <= epsilon_cap.get())
            }
        };
        let (decision, rho_total, epsilon_total) = match accepted {
            Some(e) => (Decision::Accepted, accounted.after.rho, e),
            None => (Decision::Refused, self.totals.rho, spent),
        };
        self.append(EntryKind::Charge(Charge {
            request,
            decision,
            n_min: accounted.n_min,
            sampler_distance: accounted.sampler_distance,
            steps: accounted.steps,
            rho_round: accounted.rho_round,
            rho_total,
            epsilon_total,
        }))?;
        let Some(epsilon_total) = accepted else {
            let cap = match self.policy.budget {
                Budget::Capped { epsilon_cap, .. } => epsilon_cap.get(),
                Budget::NoPrivacy => f64::INFINITY,
            };
            return Err(LedgerError::BudgetExceeded {
                cap,
                spent: spent.get(),
                requested: requested.map_or(f64::INFINITY, EpsilonTotal::get),
            });
        };
        self.totals = accounted.after;
        self.accepted_rounds
            .insert(request.round_id, request.round_context);
        let noise = match self.policy.budget {
            Budget::NoPrivacy => PermitNoise::None,
            Budget::Capped { .. } => PermitNoise::Gaussian {
                scaled_sigma: Sigma::new(request.gamma.get() * request.local_sigma.get())?,
                distance: accounted.sampler_distance,
            },
        };
        Ok(RoundPermit {
            request,
            anchor: self.anchor(),
            ledger_id: self.ledger_id(),
            policy_kind: self.policy.kind(),
            n_min: accounted.n_min,
            steps: accounted.steps,
            noise,
            epsilon_total,
        })
    }
}
