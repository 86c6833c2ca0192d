//! The site's privacy budget and its tamper-evident ε ledger.
//!
//! Before a round draws any noise the site asks its [`Ledger`] to [`Ledger::authorize`] it. The
//! ledger computes the round's ρ and the cumulative ε at the policy's δ from the round's
//! parameters; if the cap would be exceeded it records a refusal and returns
//! [`LedgerError::BudgetExceeded`] (cap, spent, requested), otherwise it records the acceptance
//! (durably, before returning) and hands back a [`RoundPermit`], which the encoder requires to
//! add noise. Every entry is appended once, hash-chained to the previous one with SHA-256 and
//! signed with the site's Ed25519 key; [`audit`] verifies a ledger offline.

pub mod audit;
pub mod entry;
pub mod store;

use std::collections::BTreeSet;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use self::audit::{Finding, SIGNING_CONTEXT, Totals, advance, entry_hash, entry_round_rho, replay};
pub use self::entry::RoundRequest;
use self::entry::{Decision, EntryBody, PrivacyUnit, library_versions};
use self::store::{Store, StoreError};
use crate::error::{AccountError, ParamError};
use crate::params::{Delta, Epsilon, Rho, Sigma};

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
    /// The round id was already accepted (running it twice would spend twice).
    #[error("round {0} was already accepted")]
    RoundAlreadyAccepted(u64),
    /// The file on disk fails verification under this site's key.
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

/// The site's budget policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetPolicy {
    /// Largest cumulative ε the site will ever spend.
    pub epsilon_cap: Epsilon,
    /// δ at which ε is computed.
    pub delta: Delta,
}

/// Proof that a round was accepted and recorded; only [`Ledger::authorize`] makes one, and the
/// encoder requires it before it adds noise.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundPermit {
    request: RoundRequest,
    epsilon_total: Epsilon,
}

impl RoundPermit {
    /// The accepted round's parameters.
    pub fn request(&self) -> &RoundRequest {
        &self.request
    }
    /// σ of the noise in the integer domain: γ·σ_local.
    pub fn scaled_local_sigma(&self) -> Result<Sigma, ParamError> {
        Sigma::new(self.request.gamma.get() * self.request.local_sigma.get())
    }
    /// Cumulative ε including this round.
    pub fn epsilon_total(&self) -> Epsilon {
        self.epsilon_total
    }
}

/// What opening found.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenReport {
    /// Entries in the ledger.
    pub entries: u64,
    /// Bytes of a torn final record dropped by crash recovery, if any.
    pub torn_bytes: Option<u64>,
}

/// A site's append-only, signed ε ledger and budget.
pub struct Ledger {
    store: Store,
    key: SigningKey,
    policy: BudgetPolicy,
    head: [u8; 32],
    next_seq: u64,
    totals: Totals,
    accepted_rounds: BTreeSet<u64>,
}

impl Ledger {
    /// Opens (or creates) the ledger at `path`, recovering from a torn final write, and replays
    /// it: every entry must verify under `key` and re-account to its recorded totals.
    pub fn open(
        path: &Path,
        key: SigningKey,
        policy: BudgetPolicy,
    ) -> Result<(Self, OpenReport), LedgerError> {
        let (store, parsed) = Store::open(path)?;
        let replayed = replay(&parsed.payloads, &key.verifying_key(), parsed.torn_bytes);
        if !replayed.report.is_clean() {
            return Err(LedgerError::Tampered(replayed.report.findings));
        }
        let report = OpenReport {
            entries: parsed.payloads.len() as u64,
            torn_bytes: parsed.torn_bytes,
        };
        let ledger = Self {
            store,
            key,
            policy,
            head: replayed.head,
            next_seq: report.entries,
            totals: replayed.totals,
            accepted_rounds: replayed.accepted_rounds,
        };
        Ok((ledger, report))
    }

    /// The public key auditors verify this ledger with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// ε spent so far at the policy's δ.
    pub fn spent(&self) -> Result<Epsilon, LedgerError> {
        Ok(self.totals.epsilon(self.policy.delta)?)
    }

    /// ρ spent so far.
    pub fn rho_spent(&self) -> Rho {
        self.totals.rho
    }

    /// Decides a round before any noise is drawn, and records the decision durably.
    pub fn authorize(&mut self, request: RoundRequest) -> Result<RoundPermit, LedgerError> {
        if self.accepted_rounds.contains(&request.round_id) {
            return Err(LedgerError::RoundAlreadyAccepted(request.round_id));
        }
        let mut body = EntryBody {
            seq: self.next_seq,
            prev_hash: self.head,
            request,
            decision: Decision::Accepted,
            unit: PrivacyUnit::SiteUpdatePerRound,
            delta: self.policy.delta,
            epsilon_cap: self.policy.epsilon_cap,
            rho_round: Rho::ZERO,
            rho_total: self.totals.rho,
            epsilon_total: Epsilon::ZERO,
            versions: library_versions(),
        };
        let rho = entry_round_rho(&body)?;
        let after = advance(&self.totals, &body, rho)?;
        let spent = self.totals.epsilon(self.policy.delta)?;
        // ε so large that the sampler's share (1 + e^ε)·η no longer fits in δ is certainly
        // over any sensible cap: it is refused like any other overspend.
        let requested = match after.epsilon(self.policy.delta) {
            Ok(e) => Some(e),
            Err(AccountError::SamplerDistanceTooLarge { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        body.rho_round = rho;
        let accepted = requested.filter(|e| e.get() <= self.policy.epsilon_cap.get());
        if let Some(requested) = accepted {
            body.rho_total = after.rho;
            body.epsilon_total = requested;
        } else {
            body.decision = Decision::Refused;
            body.epsilon_total = spent;
        }
        let body_bytes = body.to_bytes();
        let signature = self.key.sign(&[SIGNING_CONTEXT, &body_bytes].concat());
        let payload = [body_bytes.as_slice(), &signature.to_bytes()].concat();
        self.store.append(&payload)?;
        self.head = entry_hash(&payload);
        self.next_seq += 1;
        let Some(requested) = accepted else {
            return Err(LedgerError::BudgetExceeded {
                cap: self.policy.epsilon_cap.get(),
                spent: spent.get(),
                requested: requested.map_or(f64::INFINITY, Epsilon::get),
            });
        };
        self.totals = after;
        self.accepted_rounds.insert(request.round_id);
        Ok(RoundPermit {
            request,
            epsilon_total: requested,
        })
    }
}
