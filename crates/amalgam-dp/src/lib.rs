//! Differential privacy for Amalgam: everything a plant does to its model update before the
//! update is masked, and everything a compliance team needs to audit the privacy spent.
//!
//! The mechanism is the Distributed Discrete Gaussian (Kairouz, Liu, Steinke, ICML 2021,
//! "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation",
//! <https://arxiv.org/abs/2102.06387>), as TensorFlow Federated implements it:
//! L2 clip to C → randomized Hadamard rotation → scale by γ → conditional randomized rounding →
//! discrete Gaussian noise with σ_local = σ/√n_min → wrap modulo 2^b. The privacy unit is one
//! plant's whole update in one round (site-level, zero-out adjacency); the crate README states
//! the trust assumptions and lists the papers every formula comes from (CKS20:
//! <https://arxiv.org/abs/2004.00010>, BS16: <https://arxiv.org/abs/1605.02065>, MW17:
//! <https://eprint.iacr.org/2017/259>).
//!
//! * [`params`]: validated newtypes for every number with a meaning.
//! * [`rotation`], [`encoding`], [`scaling`]: the encoding and its inverse, and the choice of γ.
//! * [`sampler`]: the fast table sampler and opendp's exact reference sampler.
//! * [`entropy`]: the crate's own OS-seeded noise and rounding streams.
//! * [`accountant`]: per-round ρ, composition and (ε, δ) on opendp, σ calibration.
//! * [`ledger`]: the budget cap, the signed hash-chained ledger and its audit.
//! * [`record`]: the record-level (DP-SGD) accountant: RDP of the Poisson-subsampled Gaussian
//!   at integer orders, (ε, δ) conversion and σ calibration.

//! # What cannot be written
//!
//! A permit is used once: it cannot be cloned, and the draw consumes it.
//!
//! ```compile_fail
//! fn reuse(codec: &amalgam_dp::encoding::DdgCodec, permit: amalgam_dp::ledger::RoundPermit) {
//!     let _first = codec.draw_noise(permit, amalgam_dp::ledger::PolicyKind::Private);
//!     let _second = codec.draw_noise(permit, amalgam_dp::ledger::PolicyKind::Private); // use of moved value
//! }
//! ```
//!
//! ```compile_fail
//! fn copy(permit: &amalgam_dp::ledger::RoundPermit) -> amalgam_dp::ledger::RoundPermit {
//!     permit.clone() // RoundPermit is not Clone
//! }
//! ```
//!
//! Outside this crate an encoded update is made only by `DdgCodec::encode` under a permit, or
//! reloaded by `Ledger::reload_update` from bytes sealed by a key of that ledger for one of its
//! accepted charges with the same round context: quantizing, wrapping and decoding bytes are
//! private. (Whoever holds the site's key can still seal bytes of their choosing: the crate
//! README states what catches that.)
//!
//! ```compile_fail
//! fn noiseless(codec: &amalgam_dp::encoding::DdgCodec, x: &[f64]) {
//!     let _ = codec.wrap(&[0], &[0]); // private
//! }
//! ```
//!
//! ```compile_fail
//! let _ = amalgam_dp::encoding::EncodedUpdate::from_bytes(b"AMDPUPD2"); // private
//! ```
//!
//! A release build offers no way to pick the noise stream, and no caller declares the sampler's
//! distance (`RoundRequest` has no such field).
//!
//! ```compile_fail
//! use rand_core::SeedableRng;
//! let _ = amalgam_dp::sampler::FastSampler::new(
//!     amalgam_dp::params::Sigma::new(3.0).unwrap(),
//!     rand_chacha::ChaCha20Rng::from_seed([0; 32]), // takes no stream
//! );
//! ```

// Seeded (replayable) noise and rounding streams must never reach a release build: the
// `test-vectors` feature compiles only with debug assertions on (the dev and test profiles) or
// under `cfg(test)`. A release build that enables it, by any path, fails here.
#[cfg(all(feature = "test-vectors", not(debug_assertions), not(test)))]
compile_error!(
    "amalgam-dp's `test-vectors` feature (seeded noise streams) is for tests only and cannot be \
     built without debug assertions"
);

pub mod accountant;
pub mod encoding;
pub mod entropy;
pub mod error;
pub mod ledger;
pub mod params;
pub mod record;
pub mod rotation;
pub mod sampler;
pub mod scaling;

/// The opendp release this crate is built and tested against (recorded in ledger entries; a
/// test checks it against Cargo.lock).
pub const OPENDP_VERSION: &str = "0.16.0";
