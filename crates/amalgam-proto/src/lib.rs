//! Sans-IO pairwise-masking secure aggregation for Amalgam (Bonawitz et al., CCS 2017, with
//! the active-adversary extension; optional SecAgg+ neighbour graph, Bell et al., CCS 2020).
//!
//! Normative specification: `protocol-spec/secagg.md`. No I/O, no clock, no OS randomness:
//! the caller passes a [`rand_core::CryptoRng`] and decides when each phase closes.
//!
//! # Map
//!
//! * [`params`]: validated newtypes ([`RoundParams`], [`Manifest`], [`SiteId`]...); unsafe sets
//!   are refused with a [`ParamError`] that says why.
//! * [`site::Site`] and [`aggregator::Aggregator`]: the state machines. Drive a site with
//!   [`Site::start`] then [`Site::handle`] / [`Site::handle_bytes`], each returning an
//!   [`site::Outgoing`] that is released only against [`Site::snapshot`] of the new state
//!   (persist, then send: spec §8.1); the aggregator with [`Aggregator::receive`] /
//!   [`Aggregator::receive_bytes`] and [`Aggregator::close_phase`] (closing a phase with
//!   whoever answered is how dropouts happen). Both implement the scheme-agnostic [`roles`]
//!   traits; the aggregator implements [`Snapshot`], the site has its own
//!   [`Site::snapshot`] / [`Site::restore`] (secret-bearing bytes, clock, round log).
//! * [`messages`]: every message and its canonical encoding over the public [`codec`].
//! * [`masking`]: chunked mask expansion ([`masking::mask_and_pack`], [`masking::unmask_sum`]);
//!   [`crypto::prg`] the ChaCha20 keystream (OpenSSL, cross-checked against `rand_chacha`);
//!   [`packing`] the B-bit packing.
//! * [`sim`]: an in-memory consortium with dropout schedules and tamper hooks.
//!
//! # Example
//!
//! ```
//! use amalgam_proto::sim::{self, SimConfig};
//! use amalgam_proto::{Phase, RoundParams};
//!
//! // 10 sites, threshold 6, 16-bit inputs, exact sums (B = 20), 1000 elements.
//! let params = RoundParams::exact(10, 6, 16, 1000)?;
//! let config = SimConfig::new(params, 1, [7; 32])
//!     .drop_site(2, Phase::MaskedInput) // before sending its masked input: not in the sum
//!     .drop_site(5, Phase::Unmasking); // after: its input counts, its b is recovered
//! let inputs = config.inputs.clone();
//! let report = sim::run(config)?;
//! let out = report.output?;
//! assert_eq!(out.contributors.len(), 9);
//! assert_eq!(out.sum, sim::plaintext_sum(&params, &inputs, &out.contributors));
//! # Ok::<(), amalgam_proto::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod aggregator;
pub mod codec;
pub mod cohort;
pub mod crypto;
pub mod error;
pub mod labels;
pub mod masking;
pub mod messages;
pub mod packed_sum;
pub mod packing;
pub mod params;
pub mod phase;
pub mod roles;
pub mod sim;
pub mod site;
mod snapshot_codec;

pub use aggregator::{AggregateOutput, Aggregator};
pub use error::{DecodeError, Error, Misbehaviour, Misuse, ParamError, Result, Sender};
pub use params::{
    AggregatorTrust, Colluders, Dropouts, InputBits, Manifest, MinCohort, NeighbourGraph,
    ParamsRequest, RoundParams, SiteCount, SiteId, SumBits, SumMode, Threshold, VectorLen,
};
pub use phase::Phase;
pub use roles::{AggregatorRole, AggregatorStep, DecryptorRole, SiteRole, Snapshot};
pub use site::{Site, SiteRestore};

#[cfg(test)]
mod tests_sim;
