//! The consortium of Amalgam: who the members are, what they agreed to, and proof that every
//! one of them agreed (normative: `protocol-spec/consortium.md`).
//!
//! * [`key`]: a plant's Ed25519 identity key, generated and kept locally (0600 file in a 0700
//!   directory), and its human-comparable [`fingerprint`].
//! * [`model`]: the manifest content — members and roles, the masking thresholds, the
//!   decryptor committee, the DP policy, the fallback policy, the campaign, deadline bounds.
//! * [`canonical`]: the deterministic binary encoding members sign (never the TOML text).
//! * [`SignedManifest`] / [`VerifiedManifest`]: valid only when **every** listed member signed
//!   the exact canonical bytes; no quorum. A member that will not sign is not in that epoch.
//! * [`EpochHighWater`]: the highest epoch accepted, persisted; older, forked or unchained
//!   epochs are refused. [`RotationStatement`]: old key signs new key.
//! * [`draft`]: the TOML draft and signed join requests (approving one confers no authority).
//! * [`flags`]: who could collude by construction (aggregator and decryptor of one
//!   organisation, two decryptors of one organisation, unverified identities).
//!
//! Everything that must be equal at all sites is in the manifest or derived from it and the
//! round id ([`VerifiedManifest::round_params`], [`VerifiedManifest::dp_round_params`],
//! [`VerifiedManifest::context_digest`], [`VerifiedManifest::hadamard_seed`]); nothing is taken
//! from the aggregator.
#![forbid(unsafe_code)]

pub mod canonical;
pub mod draft;
pub mod error;
pub mod flags;
mod fsutil;
pub mod highwater;
pub mod key;
pub mod labels;
pub mod model;
pub mod rotation;
pub mod signed;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod validate;
pub mod verified;

pub use draft::JoinRequest;
pub use error::{KeyError, ManifestError};
pub use highwater::EpochHighWater;
pub use key::{IdentityKey, fingerprint};
pub use model::{
    Campaign, CommitteePolicy, DeadlineBounds, DpBudget, DpPolicy, FallbackPolicy, Graph,
    ManifestBody, Member, ModelRef, ProtocolPolicy, Role, TrainingConfig, Trust, WeightMode,
};
pub use rotation::RotationStatement;
pub use signed::SignedManifest;
pub use verified::VerifiedManifest;
