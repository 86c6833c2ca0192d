//! Shared harness for Amalgam's cross-crate tests and fuzz targets.
//!
//! [`harness::RecordedRound`] records one deterministic simulated round and rebuilds an
//! aggregator or a site *at any phase* by replaying it, so that conformance vectors, attack
//! tests and fuzz targets all start from exactly the same states. [`harness::fuzz`] holds
//! the fuzz entry points (the corpus replay tests call the same functions).

pub mod harness;
