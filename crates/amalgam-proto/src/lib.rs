//! Sans-IO pairwise-masking secure aggregation for Amalgam (Bonawitz et al., CCS 2017, with
//! the active-adversary extension; optional SecAgg+ neighbour graph, Bell et al., CCS 2020).
//!
//! Normative specification: `protocol-spec/secagg.md`. No I/O, no clock, no OS randomness:
//! the caller passes a [`rand_core::CryptoRng`] and decides when each phase closes.
#![forbid(unsafe_code)]

pub mod aggregator;
pub mod codec;
pub mod crypto;
pub mod error;
pub mod labels;
pub mod masking;
pub mod messages;
pub mod packing;
pub mod params;
pub mod phase;
pub mod roles;
pub mod sim;
pub mod site;

pub use aggregator::{AggregateOutput, Aggregator};
pub use error::{DecodeError, Error, Misbehaviour, Misuse, ParamError, Result, Sender};
pub use params::{
    InputBits, Manifest, MinCohort, NeighbourGraph, ParamsRequest, RoundParams, SiteCount, SiteId,
    SumBits, SumMode, Threshold, VectorLen,
};
pub use phase::Phase;
pub use roles::{AggregatorRole, AggregatorStep, DecryptorRole, SiteRole, Snapshot};
pub use site::{Site, SiteRestore};

#[cfg(test)]
mod tests_sim;
