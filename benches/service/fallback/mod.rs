//! The homomorphic fallback under measurement: N sites, a decryptor committee of
//! [`MEMBERS`] (t_c = [`PIECE_THRESHOLD`], Q = [`QUORUM`], c_d = [`CORRUPT`], the
//! `he_fallback` bench's committee), every identity derived from one seed drawn from the OS,
//! and the real aggregator (`FallbackService` + `fallback_router` + `serve_tls`) on an event
//! log.
//!
//! * [`deployment`]: keys, the consortium view, the round setup every party derives.
//! * [`server`]: the aggregator's fallback service over mutual TLS, opening the round the only
//!   way there is (a masking round that aborted is re-run).
//! * [`drive`]: precomputed site uploads submitted in shuffled order with bounded concurrency,
//!   then the committee members (in this process, `amalgam_he::Decryptor`) over the API.

pub mod deployment;
pub mod drive;
pub mod server;

pub use deployment::FbDeployment;

/// Committee size c.
pub const MEMBERS: usize = 5;
/// Pieces are recoverable from any t_c members.
pub const PIECE_THRESHOLD: usize = 3;
/// Signatures on the identical cohort statement before any member releases.
pub const QUORUM: usize = 4;
/// Corrupt members tolerated.
pub const CORRUPT: usize = 2;
/// The fallback re-run of masking round 1.
pub const ROUND: u64 = amalgam_net::fallback_api::FALLBACK_ROUND_BASE + 1;
/// The model every upload is trained on: round 1, the bench's model digest.
pub const MODEL: (u64, [u8; 32]) = (1, super::fixture::MODEL);

#[cfg(test)]
mod tests;
