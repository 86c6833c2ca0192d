//! Homomorphic fallback of Amalgam: key-additive RLWE aggregation (KAHE) on tfhe's
//! `core_crypto` NTT, with per-round keys held in pieces by a decryptor committee.
//!
//! Each site draws a fresh per-round key k_i as the sum of pieces (32-byte seeds expanded by the
//! PRG), encrypts its already-noised, encoded update once ([`site::SiteRound`]) and sends one
//! signed upload: KAHE bodies for the aggregator, one seed box per committee member. The
//! aggregator ([`HeAggregator`]) adds bodies and holds no key; committee members
//! ([`Decryptor`]) see seeds, never bodies, sign at most one cohort statement per round, and
//! release per-piece cohort sums only after a quorum signed the identical statement. No single
//! party ever holds a key that opens one plant's update. Specification:
//! `protocol-spec/he-fallback.md`.
//!
//! tfhe-rs is BSD-3-Clause-Clear; Zama requires a patent licence for commercial use (README).

pub mod aggregator;
pub mod committee;
pub mod decryptor;
pub mod error;
pub mod field;
pub mod gaussian;
pub mod kahe;
pub mod params;
pub mod persist;
pub mod release;
pub mod roles;
pub mod round;
pub mod round_record;
pub mod seed_box;
pub mod site;
pub mod statement;
pub mod upload;
pub mod wire;

pub use aggregator::{Closing, HeAggregator};
pub use committee::{Committee, MemberKeys, MemberSecrets, PeriodScope};
pub use decryptor::Decryptor;
pub use error::{Fault, HeError};
pub use kahe::KeyVector;
pub use params::KaheParams;
pub use persist::PersistFirst;
pub use release::PieceSumRelease;
pub use roles::HeSite;
pub use round::{RoundSetup, SiteDirectory, round_context, staleness_weight};
pub use round_record::{MemberRoundRecord, SiteRoundLog};
pub use site::SiteRound;
pub use statement::{CohortStatement, StatementSignature};
pub use upload::{SignedUpload, UploadView};
