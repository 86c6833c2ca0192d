//! One ledger entry and its canonical byte encoding (the bytes that are hashed and signed).
//!
//! Layout, all integers little-endian, f64 as their IEEE-754 bit patterns:
//! `version u8 (= 3) | seq u64 | prev_hash [32] | kind u8 | kind body | versions_len u16 |
//! versions utf-8`, with the kind bodies
//!
//! * 0 genesis: `key [32] | policy | nonce [32]`; 1 policy change: `policy`;
//! * 2 key rotation: `new_key [32] | new_key_signature [64] | old_key_lost u8`;
//! * 3 epoch: `manifest_digest [32] | epoch u64 | min_cohort u32 | colluders u32 | n_cohort u32 |
//!   clip f64 | gamma f64 | bits u32 | local_sigma f64 | dim u64 | beta f64` (the round parameters);
//! * 4 charge: `round_id u64 | decision u8 | manifest_digest [32] | round_context [32] |
//!   min_cohort u32 | colluders u32 | n_min u32 | n_cohort u32 | clip f64 | gamma f64 | bits u32 |
//!   local_sigma f64 | dim u64 | beta f64 | sampler u8 | sampler_distance f64 | steps u32 |
//!   rho_round f64 | rho_total f64 | epsilon_total f64` (ε may be +∞: policy `none`);
//! * 5 recovery: `dropped_bytes u64 | dropped_sha256 [32]`;
//!
//! and `policy` = `budget u8 (0 capped, 1 none) | unit u8 | adjacency u8 | accountant u8 |
//! delta f64 | epsilon_cap f64` (both 0 under `none`).
//! Decoding is strict: exact length, known codes, every number re-validated by its newtype.

use serde::Serialize;

use crate::error::ParamError;
use crate::params::{
    Adjacency, BitWidth, ClipNorm, Delta, Dimension, Distance, Epsilon, Gamma, Rho, RoundingBias,
    Sigma, SiteCount,
};
use crate::sampler::SamplerKind;

/// Encoding version of [`EntryBody`].
pub const ENTRY_VERSION: u8 = 3;

/// Longest library-versions string accepted.
pub const MAX_VERSIONS_LEN: usize = 256;

/// Largest site-level δ a policy may state: a consortium may choose a smaller one, never a
/// larger one (δ is the probability the ε statement fails outright).
pub const SITE_DELTA_CEILING: f64 = 1e-5;

/// The library versions this build records in every entry.
pub fn library_versions() -> String {
    format!(
        "amalgam-dp {}; opendp {}",
        env!("CARGO_PKG_VERSION"),
        crate::OPENDP_VERSION
    )
}

/// Whether the round was allowed to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Decision {
    /// Within the cap: recorded before any noise was drawn, then allowed.
    Accepted,
    /// Would have exceeded the cap: refused, nothing spent.
    Refused,
}

/// What one unit of privacy protects. A site keeps one ledger per unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PrivacyUnit {
    /// One plant's whole model update in one round (site-level DP).
    SiteUpdatePerRound,
    /// One training record of a plant's dataset, over every local DP-SGD run on it in every
    /// campaign (record-level DP). Accounted by its own ledger,
    /// [`crate::ledger::record::RecordLedger`], never by a site-level [`crate::ledger::Ledger`].
    RecordInDataset,
}

/// How ε is computed from the recorded parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Accountant {
    /// KLS21 Theorem 1 ρ-zCDP per round, additive composition, opendp's zCDP → (ε, δ)
    /// conversion (CKS20 Proposition 12 / Corollary 13), sampler distance charged to δ.
    DdgZcdpOpendp,
}

/// The budget part of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Budget {
    /// ε at `delta` never exceeds `epsilon_cap`.
    Capped {
        /// Largest cumulative ε the site will ever spend.
        epsilon_cap: Epsilon,
        /// δ at which ε is computed.
        delta: Delta,
    },
    /// A non-private run: no cap, ε recorded as ∞, reports say "no differential privacy".
    /// Rounds still go through the ledger and its permits, and no noise is added.
    NoPrivacy,
}

/// Whether a policy gives differential privacy at all. An encoded update carries the kind of
/// the policy it was charged under, and whoever draws or consumes it states the kind it
/// expects: a permit from a second ledger under policy `none` is then refused where a private
/// round is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PolicyKind {
    /// A capped policy: the noise is drawn.
    Private,
    /// Policy `none`: no noise.
    NoPrivacy,
}

impl PolicyKind {
    /// One-byte code in persisted updates.
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Private => 0,
            Self::NoPrivacy => 1,
        }
    }
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Private),
            1 => Some(Self::NoPrivacy),
            _ => None,
        }
    }
}

/// The DP policy a ledger is bound to by its signed genesis entry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BudgetPolicy {
    /// The privacy unit.
    pub unit: PrivacyUnit,
    /// The neighbouring relation.
    pub adjacency: Adjacency,
    /// The accountant.
    pub accountant: Accountant,
    /// Cap and δ, or no privacy.
    pub budget: Budget,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// Site-level δ above [`SITE_DELTA_CEILING`].
    #[error("site-level delta = {0:e} is above the ceiling 1e-5 (a consortium may only lower it)")]
    DeltaAboveCeiling(f64),
    /// The record-level unit in a site-level policy: it has its own ledger and accountant.
    #[error("the record-level privacy unit is accounted by the record ledger, not this one")]
    RecordUnit,
}

impl BudgetPolicy {
    /// The site-level policy (one plant's update per round, zero-out adjacency): cap ε at δ.
    /// Refuses δ above [`SITE_DELTA_CEILING`].
    pub fn site_level(epsilon_cap: Epsilon, delta: Delta) -> Result<Self, PolicyError> {
        let policy = Self {
            unit: PrivacyUnit::SiteUpdatePerRound,
            adjacency: Adjacency::ZeroOut,
            accountant: Accountant::DdgZcdpOpendp,
            budget: Budget::Capped { epsilon_cap, delta },
        };
        policy.validate()?;
        Ok(policy)
    }

    /// Policy `none`: a non-private run, site-level unit.
    pub fn no_privacy() -> Self {
        Self {
            unit: PrivacyUnit::SiteUpdatePerRound,
            adjacency: Adjacency::ZeroOut,
            accountant: Accountant::DdgZcdpOpendp,
            budget: Budget::NoPrivacy,
        }
    }

    /// Checks the δ ceiling (also applied to policies decoded from a ledger).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.unit == PrivacyUnit::RecordInDataset {
            return Err(PolicyError::RecordUnit);
        }
        match self.budget {
            Budget::Capped { delta, .. } if delta.get() > SITE_DELTA_CEILING => {
                Err(PolicyError::DeltaAboveCeiling(delta.get()))
            }
            _ => Ok(()),
        }
    }

    /// Private or no privacy.
    pub fn kind(&self) -> PolicyKind {
        match self.budget {
            Budget::Capped { .. } => PolicyKind::Private,
            Budget::NoPrivacy => PolicyKind::NoPrivacy,
        }
    }

    /// δ, or `None` under policy `none`.
    pub fn delta(&self) -> Option<Delta> {
        match self.budget {
            Budget::Capped { delta, .. } => Some(delta),
            Budget::NoPrivacy => None,
        }
    }

    /// True when `next` gives less protection than `self`: a larger δ or cap, no privacy, or a
    /// different unit, adjacency or accountant. The audit lists such a change as a finding.
    pub fn loosened_by(&self, next: &Self) -> bool {
        if self.unit != next.unit
            || self.adjacency != next.adjacency
            || self.accountant != next.accountant
        {
            return true;
        }
        match (self.budget, next.budget) {
            (
                Budget::Capped {
                    epsilon_cap: c0,
                    delta: d0,
                },
                Budget::Capped {
                    epsilon_cap: c1,
                    delta: d1,
                },
            ) => c1.get() > c0.get() || d1.get() > d0.get(),
            (Budget::Capped { .. }, Budget::NoPrivacy) => true,
            (Budget::NoPrivacy, _) => false,
        }
    }
}

/// A cumulative ε that may be unbounded (+∞ once a round ran under policy `none`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
pub struct EpsilonTotal(f64);

impl EpsilonTotal {
    /// No privacy.
    pub const UNBOUNDED: Self = Self(f64::INFINITY);

    /// Validates ε ≥ 0, finite or +∞.
    pub fn new(value: f64) -> Result<Self, ParamError> {
        if value >= 0.0 && !value.is_nan() {
            Ok(Self(value))
        } else {
            Err(ParamError::OutOfRange {
                name: "epsilon total",
                value,
                rule: ">= 0 (or +inf)",
            })
        }
    }
    /// The value (+∞ when unbounded).
    pub fn get(self) -> f64 {
        self.0
    }
}

impl From<Epsilon> for EpsilonTotal {
    fn from(e: Epsilon) -> Self {
        Self(e.get())
    }
}

/// The parameters of a round the site is asked to join, with the context it is spent under.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RoundRequest {
    /// The consortium's round identifier.
    pub round_id: u64,
    /// Digest of the consortium manifest the round runs under (opaque to this crate).
    pub manifest_digest: [u8; 32],
    /// The protocol's round context (opaque to this crate): binds the charge to one round.
    pub round_context: [u8; 32],
    /// The protocol's minimum cohort m: no sum over fewer survivors is released.
    pub min_cohort: SiteCount,
    /// Colluding plants c the protocol tolerates; n_min = m − c ([`crate::params::n_min_for`]).
    pub colluders: u32,
    /// Most plants that may contribute noise (bounds the sampler-distance term).
    pub n_cohort: SiteCount,
    /// L2 clip norm C.
    pub clip: ClipNorm,
    /// Scale factor γ.
    pub gamma: Gamma,
    /// Bit width b.
    pub bits: BitWidth,
    /// Local noise standard deviation in update units, σ/√n_min (the scaled one is γ times it).
    pub local_sigma: Sigma,
    /// Update length d (the noised length is d padded to a power of two).
    pub dim: Dimension,
    /// Conditional rounding bias β.
    pub beta: RoundingBias,
    /// Which sampler draws the noise.
    pub sampler: SamplerKind,
}

impl RoundRequest {
    /// The request for round `round_id` under an epoch's `params` (what a site agent builds
    /// from the manifest in force and the round's own context).
    pub fn under(
        params: RoundParams,
        round_id: u64,
        manifest_digest: [u8; 32],
        round_context: [u8; 32],
        sampler: SamplerKind,
    ) -> Self {
        Self {
            round_id,
            manifest_digest,
            round_context,
            min_cohort: params.min_cohort,
            colluders: params.colluders,
            n_cohort: params.n_cohort,
            clip: params.clip,
            gamma: params.gamma,
            bits: params.bits,
            local_sigma: params.local_sigma,
            dim: params.dim,
            beta: params.beta,
            sampler,
        }
    }

    /// The part of this request an epoch fixes ([`RoundParams`]): everything but the round
    /// id, the round context, the manifest digest and the sampler.
    pub fn params(&self) -> RoundParams {
        RoundParams {
            min_cohort: self.min_cohort,
            colluders: self.colluders,
            n_cohort: self.n_cohort,
            clip: self.clip,
            gamma: self.gamma,
            bits: self.bits,
            local_sigma: self.local_sigma,
            dim: self.dim,
            beta: self.beta,
        }
    }
}

/// The consortium's DP-relevant round parameters for an epoch, as the manifest states them.
/// An epoch entry records them and every charge under that epoch must name exactly these:
/// a site that chose its own minimum cohort, colluder bound or σ would record an ε that is
/// not the one its noise gives. Only the round id, the round context and the sampler (whose
/// distance the crate computes and charges either way) are the round's own.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RoundParams {
    /// The protocol's minimum cohort m.
    pub min_cohort: SiteCount,
    /// Colluding plants c the protocol tolerates.
    pub colluders: u32,
    /// Most plants that may contribute noise.
    pub n_cohort: SiteCount,
    /// L2 clip norm C.
    pub clip: ClipNorm,
    /// Scale factor γ.
    pub gamma: Gamma,
    /// Bit width b.
    pub bits: BitWidth,
    /// Local noise standard deviation σ/√n_min in update units.
    pub local_sigma: Sigma,
    /// Update length d.
    pub dim: Dimension,
    /// Conditional rounding bias β.
    pub beta: RoundingBias,
}

impl RoundParams {
    /// Refuses cohorts above [`crate::params::MAX_COHORT`], no honest plant left
    /// (c ≥ m), and fewer plants than n_min.
    pub fn validate(&self) -> Result<(), ParamError> {
        crate::params::check_cohort("cohort size n_cohort", self.n_cohort)?;
        let n_min = crate::params::n_min_for(self.min_cohort, self.colluders)?;
        if self.n_cohort < n_min {
            return Err(ParamError::OutOfRange {
                name: "cohort size n_cohort",
                value: f64::from(self.n_cohort.get()),
                rule: ">= n_min",
            });
        }
        Ok(())
    }

    /// The first field where `r` differs from these parameters (floats compared bit for bit),
    /// or `None` when the request runs under them.
    pub fn mismatch(&self, r: &RoundRequest) -> Option<&'static str> {
        let same = |a: f64, b: f64| a.to_bits() == b.to_bits();
        [
            ("min_cohort", self.min_cohort == r.min_cohort),
            ("colluders", self.colluders == r.colluders),
            ("n_cohort", self.n_cohort == r.n_cohort),
            ("clip", same(self.clip.get(), r.clip.get())),
            ("gamma", same(self.gamma.get(), r.gamma.get())),
            ("bits", self.bits == r.bits),
            (
                "local_sigma",
                same(self.local_sigma.get(), r.local_sigma.get()),
            ),
            ("dim", self.dim == r.dim),
            ("beta", same(self.beta.get(), r.beta.get())),
        ]
        .into_iter()
        .find_map(|(field, ok)| (!ok).then_some(field))
    }
}

/// A charge: one round decided (accepted or refused), with the numbers the audit recomputes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Charge {
    /// The round, exactly as requested.
    pub request: RoundRequest,
    /// Accepted or refused.
    pub decision: Decision,
    /// n_min = min_cohort − colluders.
    pub n_min: SiteCount,
    /// The sampler's per-sample distance bound, computed by the crate from (kind, γ·σ_local).
    pub sampler_distance: Distance,
    /// Noisy steps the permit covers (1 for a site-level round), charged whole.
    pub steps: u32,
    /// ρ of the round (all its steps; 0 when refused or under policy `none`).
    pub rho_round: Rho,
    /// ρ of all accepted rounds so far, this one included.
    pub rho_total: Rho,
    /// ε of all accepted rounds so far at the policy's δ (∞ once any ran without privacy).
    pub epsilon_total: EpsilonTotal,
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum EntryKind {
    /// The first entry: the signing key and the policy the ledger is bound to.
    Genesis {
        /// The site's identity key at creation.
        key: [u8; 32],
        /// The policy.
        policy: BudgetPolicy,
        /// 32 random bytes drawn at creation: two ledgers made with the same key and policy
        /// have different genesis entries, so a ledger's identity (the genesis hash) names one
        /// ledger, not every ledger the key could create.
        nonce: [u8; 32],
    },
    /// The policy from here on (a finding when it loosens the previous one).
    PolicyChange(BudgetPolicy),
    /// The signing key from here on. Signed (outer signature) by the old key, and inside by
    /// the new key; `old_key_lost` means the outer signature is the new key's (a finding).
    KeyRotation {
        /// The new verifying key.
        new_key: [u8; 32],
        /// The new key's signature over the rotation (see `audit::rotation_message`).
        #[serde(with = "hex_sig")]
        new_key_signature: [u8; 64],
        /// The old key was lost.
        old_key_lost: bool,
    },
    /// The consortium manifest (digest), epoch and round parameters in force from here on;
    /// not a finding.
    Epoch {
        /// Digest of the manifest.
        manifest_digest: [u8; 32],
        /// Its epoch.
        epoch: u64,
        /// The round parameters every charge of the epoch must name.
        params: RoundParams,
    },
    /// A round decided.
    Charge(Charge),
    /// A torn tail (a crash mid-append) was cut off when the ledger was opened.
    Recovery {
        /// Bytes cut off.
        dropped_bytes: u64,
        /// SHA-256 of those bytes.
        dropped_sha256: [u8; 32],
    },
}

mod hex_sig {
    pub fn serialize<S: serde::Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
}

/// The signed content of one ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntryBody {
    /// Position in the ledger, from 0.
    pub seq: u64,
    /// SHA-256 of the previous entry's body and signature (the genesis hash for seq 0).
    pub prev_hash: [u8; 32],
    /// What the entry records.
    pub kind: EntryKind,
    /// Library versions that produced the entry.
    pub versions: String,
}

/// Why an entry's bytes were rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntryDecodeError {
    /// The bytes end before the layout does, or continue after it.
    #[error("entry body has the wrong length")]
    Length,
    /// Unknown encoding version.
    #[error("unknown entry version {0}")]
    Version(u8),
    /// An enum code is not one this version defines.
    #[error("unknown {field} code {code}")]
    Code {
        /// Which field.
        field: &'static str,
        /// The code found.
        code: u8,
    },
    /// The versions string is not UTF-8 or too long.
    #[error("versions string is not valid UTF-8 of at most 256 bytes")]
    Versions,
    /// A number fails its newtype's validation.
    #[error(transparent)]
    Param(#[from] ParamError),
}

pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], EntryDecodeError> {
        if self.bytes.len() < n {
            return Err(EntryDecodeError::Length);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], EntryDecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, EntryDecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, EntryDecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, EntryDecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, EntryDecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn f64(&mut self) -> Result<f64, EntryDecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }
    pub(crate) fn code<T>(
        &mut self,
        field: &'static str,
        from: impl Fn(u8) -> Option<T>,
    ) -> Result<T, EntryDecodeError> {
        let code = self.u8()?;
        from(code).ok_or(EntryDecodeError::Code { field, code })
    }
}

pub(crate) fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

fn put_policy(out: &mut Vec<u8>, p: &BudgetPolicy) {
    let (code, delta, cap) = match p.budget {
        Budget::Capped { epsilon_cap, delta } => (0u8, delta.get(), epsilon_cap.get()),
        Budget::NoPrivacy => (1u8, 0.0, 0.0),
    };
    out.push(code);
    out.push(match p.unit {
        PrivacyUnit::SiteUpdatePerRound => 0,
        PrivacyUnit::RecordInDataset => 1,
    });
    out.push(p.adjacency.code());
    out.push(match p.accountant {
        Accountant::DdgZcdpOpendp => 0,
    });
    put_f64(out, delta);
    put_f64(out, cap);
}

fn read_policy(r: &mut Reader<'_>) -> Result<BudgetPolicy, EntryDecodeError> {
    let budget_code = r.u8()?;
    let unit = r.code("privacy unit", |c| {
        (c == 0).then_some(PrivacyUnit::SiteUpdatePerRound)
    })?;
    let adjacency = r.code("adjacency", Adjacency::from_code)?;
    let accountant = r.code("accountant", |c| {
        (c == 0).then_some(Accountant::DdgZcdpOpendp)
    })?;
    let (delta, cap) = (r.f64()?, r.f64()?);
    let budget = match budget_code {
        0 => Budget::Capped {
            epsilon_cap: Epsilon::new(cap)?,
            delta: Delta::new(delta)?,
        },
        1 if delta.to_bits() == 0 && cap.to_bits() == 0 => Budget::NoPrivacy,
        code => {
            return Err(EntryDecodeError::Code {
                field: "budget",
                code,
            });
        }
    };
    Ok(BudgetPolicy {
        unit,
        adjacency,
        accountant,
        budget,
    })
}

impl EntryBody {
    /// The canonical bytes (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.versions.len());
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.prev_hash);
        match &self.kind {
            EntryKind::Genesis { key, policy, nonce } => {
                out.push(0);
                out.extend_from_slice(key);
                put_policy(&mut out, policy);
                out.extend_from_slice(nonce);
            }
            EntryKind::PolicyChange(policy) => {
                out.push(1);
                put_policy(&mut out, policy);
            }
            EntryKind::KeyRotation {
                new_key,
                new_key_signature,
                old_key_lost,
            } => {
                out.push(2);
                out.extend_from_slice(new_key);
                out.extend_from_slice(new_key_signature);
                out.push(u8::from(*old_key_lost));
            }
            EntryKind::Epoch {
                manifest_digest,
                epoch,
                params: p,
            } => {
                out.push(3);
                out.extend_from_slice(manifest_digest);
                out.extend_from_slice(&epoch.to_le_bytes());
                for v in [p.min_cohort.get(), p.colluders, p.n_cohort.get()] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                put_f64(&mut out, p.clip.get());
                put_f64(&mut out, p.gamma.get());
                out.extend_from_slice(&p.bits.get().to_le_bytes());
                put_f64(&mut out, p.local_sigma.get());
                out.extend_from_slice(&p.dim.get().to_le_bytes());
                put_f64(&mut out, p.beta.get());
            }
            EntryKind::Charge(c) => {
                out.push(4);
                let r = &c.request;
                out.extend_from_slice(&r.round_id.to_le_bytes());
                out.push(match c.decision {
                    Decision::Accepted => 0,
                    Decision::Refused => 1,
                });
                out.extend_from_slice(&r.manifest_digest);
                out.extend_from_slice(&r.round_context);
                for v in [
                    r.min_cohort.get(),
                    r.colluders,
                    c.n_min.get(),
                    r.n_cohort.get(),
                ] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                put_f64(&mut out, r.clip.get());
                put_f64(&mut out, r.gamma.get());
                out.extend_from_slice(&r.bits.get().to_le_bytes());
                put_f64(&mut out, r.local_sigma.get());
                out.extend_from_slice(&r.dim.get().to_le_bytes());
                put_f64(&mut out, r.beta.get());
                out.push(r.sampler.code());
                put_f64(&mut out, c.sampler_distance.get());
                out.extend_from_slice(&c.steps.to_le_bytes());
                for v in [c.rho_round.get(), c.rho_total.get(), c.epsilon_total.get()] {
                    put_f64(&mut out, v);
                }
            }
            EntryKind::Recovery {
                dropped_bytes,
                dropped_sha256,
            } => {
                out.push(5);
                out.extend_from_slice(&dropped_bytes.to_le_bytes());
                out.extend_from_slice(dropped_sha256);
            }
        }
        // `versions` is bounded when built (new entries) or when decoded.
        let versions = &self.versions.as_bytes()[..self.versions.len().min(MAX_VERSIONS_LEN)];
        out.extend_from_slice(&(versions.len() as u16).to_le_bytes());
        out.extend_from_slice(versions);
        out
    }

    /// Strictly decodes canonical bytes; any deviation is an error naming the problem.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EntryDecodeError> {
        let mut r = Reader { bytes };
        let version = r.u8()?;
        if version != ENTRY_VERSION {
            return Err(EntryDecodeError::Version(version));
        }
        let seq = r.u64()?;
        let prev_hash = r.array::<32>()?;
        let kind = match r.u8()? {
            0 => EntryKind::Genesis {
                key: r.array()?,
                policy: read_policy(&mut r)?,
                nonce: r.array()?,
            },
            1 => EntryKind::PolicyChange(read_policy(&mut r)?),
            2 => EntryKind::KeyRotation {
                new_key: r.array()?,
                new_key_signature: r.array()?,
                old_key_lost: r.code("old key lost", |c| match c {
                    0 => Some(false),
                    1 => Some(true),
                    _ => None,
                })?,
            },
            3 => EntryKind::Epoch {
                manifest_digest: r.array()?,
                epoch: r.u64()?,
                params: RoundParams {
                    min_cohort: SiteCount::new(r.u32()?)?,
                    colluders: r.u32()?,
                    n_cohort: SiteCount::new(r.u32()?)?,
                    clip: ClipNorm::new(r.f64()?)?,
                    gamma: Gamma::new(r.f64()?)?,
                    bits: BitWidth::new(r.u32()?)?,
                    local_sigma: Sigma::new(r.f64()?)?,
                    dim: Dimension::new(r.u64()?)?,
                    beta: RoundingBias::new(r.f64()?)?,
                },
            },
            4 => EntryKind::Charge(read_charge(&mut r)?),
            5 => EntryKind::Recovery {
                dropped_bytes: r.u64()?,
                dropped_sha256: r.array()?,
            },
            code => {
                return Err(EntryDecodeError::Code {
                    field: "entry kind",
                    code,
                });
            }
        };
        let len = usize::from(r.u16()?);
        if len > MAX_VERSIONS_LEN {
            return Err(EntryDecodeError::Versions);
        }
        let versions =
            String::from_utf8(r.take(len)?.to_vec()).map_err(|_| EntryDecodeError::Versions)?;
        if !r.bytes.is_empty() {
            return Err(EntryDecodeError::Length);
        }
        Ok(Self {
            seq,
            prev_hash,
            kind,
            versions,
        })
    }
}

fn read_charge(r: &mut Reader<'_>) -> Result<Charge, EntryDecodeError> {
    let round_id = r.u64()?;
    let decision = r.code("decision", |c| match c {
        0 => Some(Decision::Accepted),
        1 => Some(Decision::Refused),
        _ => None,
    })?;
    let manifest_digest = r.array()?;
    let round_context = r.array()?;
    let min_cohort = SiteCount::new(r.u32()?)?;
    let colluders = r.u32()?;
    let n_min = SiteCount::new(r.u32()?)?;
    let n_cohort = SiteCount::new(r.u32()?)?;
    let clip = ClipNorm::new(r.f64()?)?;
    let gamma = Gamma::new(r.f64()?)?;
    let bits = BitWidth::new(r.u32()?)?;
    let local_sigma = Sigma::new(r.f64()?)?;
    let dim = Dimension::new(r.u64()?)?;
    let beta = RoundingBias::new(r.f64()?)?;
    let sampler = r.code("sampler", SamplerKind::from_code)?;
    let sampler_distance = Distance::new(r.f64()?)?;
    let steps = r.u32()?;
    let rho_round = Rho::new(r.f64()?)?;
    let rho_total = Rho::new(r.f64()?)?;
    let epsilon_total = EpsilonTotal::new(r.f64()?)?;
    Ok(Charge {
        request: RoundRequest {
            round_id,
            manifest_digest,
            round_context,
            min_cohort,
            colluders,
            n_cohort,
            clip,
            gamma,
            bits,
            local_sigma,
            dim,
            beta,
            sampler,
        },
        decision,
        n_min,
        sampler_distance,
        steps,
        rho_round,
        rho_total,
        epsilon_total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge() -> EntryBody {
        EntryBody {
            seq: 3,
            prev_hash: [0xab; 32],
            kind: EntryKind::Charge(Charge {
                request: RoundRequest {
                    round_id: 77,
                    manifest_digest: [1; 32],
                    round_context: [2; 32],
                    min_cohort: SiteCount::new(8).unwrap(),
                    colluders: 2,
                    n_cohort: SiteCount::new(9).unwrap(),
                    clip: ClipNorm::new(0.75).unwrap(),
                    gamma: Gamma::new(1234.5).unwrap(),
                    bits: BitWidth::new(18).unwrap(),
                    local_sigma: Sigma::new(0.3).unwrap(),
                    dim: Dimension::new(1000).unwrap(),
                    beta: RoundingBias::recommended(),
                    sampler: SamplerKind::Exact,
                },
                decision: Decision::Refused,
                n_min: SiteCount::new(6).unwrap(),
                sampler_distance: Distance::new(1e-35).unwrap(),
                steps: 1,
                rho_round: Rho::new(0.01).unwrap(),
                rho_total: Rho::new(0.2).unwrap(),
                epsilon_total: EpsilonTotal::UNBOUNDED,
            }),
            versions: library_versions(),
        }
    }

    fn others() -> Vec<EntryBody> {
        let policy =
            BudgetPolicy::site_level(Epsilon::new(8.0).unwrap(), Delta::new(1e-7).unwrap())
                .unwrap();
        [
            EntryKind::Genesis {
                key: [5; 32],
                policy,
                nonce: [3; 32],
            },
            EntryKind::PolicyChange(BudgetPolicy::no_privacy()),
            EntryKind::KeyRotation {
                new_key: [6; 32],
                new_key_signature: [7; 64],
                old_key_lost: true,
            },
            EntryKind::Epoch {
                manifest_digest: [8; 32],
                epoch: 4,
                params: RoundParams {
                    min_cohort: SiteCount::new(8).unwrap(),
                    colluders: 2,
                    n_cohort: SiteCount::new(9).unwrap(),
                    clip: ClipNorm::new(0.75).unwrap(),
                    gamma: Gamma::new(1234.5).unwrap(),
                    bits: BitWidth::new(18).unwrap(),
                    local_sigma: Sigma::new(0.3).unwrap(),
                    dim: Dimension::new(1000).unwrap(),
                    beta: RoundingBias::recommended(),
                },
            },
            EntryKind::Recovery {
                dropped_bytes: 12,
                dropped_sha256: [9; 32],
            },
        ]
        .into_iter()
        .map(|kind| EntryBody {
            seq: 0,
            prev_hash: [0; 32],
            kind,
            versions: String::new(),
        })
        .collect()
    }

    #[test]
    fn canonical_bytes_round_trip_and_every_truncation_or_extension_is_refused() {
        for body in others().into_iter().chain([charge()]) {
            let bytes = body.to_bytes();
            assert_eq!(EntryBody::from_bytes(&bytes), Ok(body));
            for cut in 0..bytes.len() {
                assert!(
                    EntryBody::from_bytes(&bytes[..cut]).is_err(),
                    "prefix of {cut} bytes"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                EntryBody::from_bytes(&longer),
                Err(EntryDecodeError::Length)
            );
        }
    }

    #[test]
    fn unknown_codes_and_invalid_numbers_are_named() {
        let bytes = charge().to_bytes();
        let mut v = bytes.clone();
        v[0] = 1;
        assert_eq!(EntryBody::from_bytes(&v), Err(EntryDecodeError::Version(1)));
        // kind is at 1 + 8 + 32 = 41, decision at 41 + 1 + 8 = 50.
        let mut v = bytes.clone();
        v[41] = 9;
        assert_eq!(
            EntryBody::from_bytes(&v),
            Err(EntryDecodeError::Code {
                field: "entry kind",
                code: 9
            })
        );
        let mut v = bytes.clone();
        v[50] = 7;
        assert_eq!(
            EntryBody::from_bytes(&v),
            Err(EntryDecodeError::Code {
                field: "decision",
                code: 7
            })
        );
        // clip norm (f64) starts at 51 + 64 + 16 = 131: a negative clip is refused.
        let mut v = bytes.clone();
        v[131..139].copy_from_slice(&(-1.0f64).to_bits().to_le_bytes());
        assert!(matches!(
            EntryBody::from_bytes(&v),
            Err(EntryDecodeError::Param(ParamError::OutOfRange {
                name: "clip norm C",
                ..
            }))
        ));
        assert!(library_versions().contains(crate::OPENDP_VERSION));
    }

    #[test]
    fn site_level_delta_above_the_ceiling_is_refused_and_loosening_is_recognised() {
        let cap = Epsilon::new(2.0).unwrap();
        assert_eq!(
            BudgetPolicy::site_level(cap, Delta::new(0.05).unwrap()),
            Err(PolicyError::DeltaAboveCeiling(0.05))
        );
        let tight = BudgetPolicy::site_level(cap, Delta::new(1e-6).unwrap()).unwrap();
        let wider_delta = BudgetPolicy::site_level(cap, Delta::new(1e-5).unwrap()).unwrap();
        let higher_cap =
            BudgetPolicy::site_level(Epsilon::new(3.0).unwrap(), Delta::new(1e-6).unwrap())
                .unwrap();
        let lower_cap =
            BudgetPolicy::site_level(Epsilon::new(1.0).unwrap(), Delta::new(1e-7).unwrap())
                .unwrap();
        assert!(tight.loosened_by(&wider_delta));
        assert!(tight.loosened_by(&higher_cap));
        assert!(tight.loosened_by(&BudgetPolicy::no_privacy()));
        assert!(!tight.loosened_by(&lower_cap));
        assert!(!BudgetPolicy::no_privacy().loosened_by(&tight));
    }
}
