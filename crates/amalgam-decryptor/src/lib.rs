//! One member of Amalgam's decryptor committee (`amalgam decryptor serve`; normative text:
//! `protocol-spec/decryptor.md`).
//!
//! The member connects **outbound** to the aggregator over mutual TLS (it never listens). It
//! receives, per site, only the signed upload structure with its own seed box, every box digest
//! and the ciphertext digest, and verifies the site's signature from those alone — it never
//! receives a ciphertext. It signs at most one cohort statement per round, recorded in its
//! SQLite statement store (`synchronous=FULL`, exclusive lock, count anchor) **before** the
//! signature exists outside the process; a restart re-sends the identical signature and never
//! signs a second statement. Its seeds are kept encrypted under a per-round key in the store's
//! vault and crypto-shredded when the round is done.
//!
//! * [`member::Member`]: the sans-network core (admit, record-then-sign, release, shred).
//! * [`agent::DecryptorAgent`]: the round driver over [`amalgam_net::client::ApiClient`].
//! * [`keys`]: posting this member's key-period certificate, fetching a period's.
//!
//! Fault points (feature `fault-points`): `after-statement-persisted`, `after-signature-sent`,
//! `after-release`, each with k = the round id.

pub mod agent;
pub mod error;
pub mod keys;
pub mod member;

pub use agent::{DecryptorAgent, Outcome, Patience, SetupFn};
pub use error::DecryptorError;
pub use member::{Member, Signed};
