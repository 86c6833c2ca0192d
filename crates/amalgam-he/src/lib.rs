//! Homomorphic fallback of Amalgam: additively homomorphic ring-LWE encryption on tfhe's
//! `core_crypto` compact public-key encryption.
//!
//! Each plant encrypts its quantized update under the decryptor's public key ([`HeSite`]); the
//! untrusted aggregator adds ciphertexts, a wrapping add of `u64` arrays, while holding no key
//! ([`HeAggregator`]); a separate [`Decryptor`] decrypts only round aggregates backed by the
//! minimum cohort of signed contributions, once per round, and logs every decryption. The site
//! and aggregator implement the protocol crate's role traits, so a service runs masking or HE per
//! round. Specification: `protocol-spec/he-fallback.md`.
//!
//! tfhe-rs is BSD-3-Clause-Clear; Zama requires a patent licence for commercial use (README).

pub mod aggregator;
pub mod audit;
pub mod ciphertext;
pub mod consortium;
pub mod decrypt;
pub mod decryptor;
pub mod encrypt;
pub mod error;
pub mod fallback;
pub mod keyfile;
pub mod keys;
pub mod messages;
pub mod noise;
pub mod params;
mod ring;
pub mod site;
pub mod wire;

pub use aggregator::{Closing, HeAggregator};
pub use ciphertext::{CiphertextSum, EncryptedVector};
pub use consortium::{HeConsortium, SiteDirectory};
pub use decrypt::decrypt_sum;
pub use decryptor::{DecryptionRequest, Decryptor, MaskIntake, RoundSum};
pub use encrypt::encrypt_vector;
pub use error::{Fault, HeError};
pub use keys::{DecryptionKey, KeyFingerprint, PublicKey};
pub use messages::{AggregateClaim, MaskAttestation, SignedContribution};
pub use params::HeParams;
pub use site::HeSite;
