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
//! * [`global_model`]: model_{r+1} from model_r and a round's published sum, and the model
//!   digest: the one implementation the aggregator and every site run.
//! * [`period_key`] / [`fallback`]: a decryptor's box key per key period, signed by its
//!   identity key, and a fallback round's setup from the manifest and those certificates only.
//! * [`flags`]: who could collude by construction (aggregator and decryptor of one
//!   organisation, two decryptors of one organisation, unverified identities).
//!
//! Everything that must be equal at all sites is in the manifest or derived from it and the
//! round id ([`VerifiedManifest::round_params`], [`VerifiedManifest::dp_round_params`],
//! [`VerifiedManifest::context_digest`], [`VerifiedManifest::hadamard_seed`]); nothing is taken
//! from the aggregator.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "test-support")] {
//! use amalgam_consortium::{EpochHighWater, SignedManifest, testing};
//!
//! // 5 sites, an aggregator, no decryptors; every member has signed.
//! let c = testing::consortium(1, 5, 0, 1000);
//! let bytes = c.signed.to_bytes(); // what a party reads from disk
//! let dir = tempfile::tempdir()?;
//! let mark = dir.path().join("epoch.json");
//! let high_water = EpochHighWater::load(&mark)?;
//! let me = c.sites[2].verifying_key(); // this party's own identity
//! // verify_for refuses a manifest that does not list `me` (this party did not sign it).
//! let manifest = SignedManifest::from_bytes(&bytes)?.verify_for(&me, high_water.as_ref())?;
//! EpochHighWater::accept(&mark, &manifest, &me)?;
//!
//! let params = manifest.round_params(0)?; // amalgam_proto::RoundParams, from the manifest only
//! assert_eq!(params.n(), 5);
//! assert_eq!(manifest.site_index(&me), Some(2));
//! let _context = manifest.context_digest(&[0; 32]); // for Site::with_context_digest
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod canonical;
pub mod diff;
pub mod draft;
pub mod error;
pub mod fallback;
pub mod flags;
mod fsutil;
pub mod global_model;
pub mod highwater;
pub mod key;
pub mod labels;
pub mod model;
pub mod noised_policy;
pub mod period_key;
pub mod rotation;
pub mod signed;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod validate;
pub mod verified;

pub use draft::JoinRequest;
pub use error::{KeyError, ManifestError};
pub use fallback::{FallbackSetupError, fallback_setup};
pub use highwater::EpochHighWater;
pub use key::{IdentityKey, fingerprint};
pub use model::{
    Campaign, CommitteePolicy, DeadlineBounds, DpBudget, DpPolicy, FallbackPolicy, Graph,
    ManifestBody, Member, ModelRef, NoisedWeightPolicy, ProtocolPolicy, Role, TrainingConfig,
    Trust, WeightMode,
};
pub use period_key::PeriodCertificate;
pub use rotation::RotationStatement;
pub use signed::SignedManifest;
pub use verified::VerifiedManifest;
