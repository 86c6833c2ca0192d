//! Shared helpers for Amalgam's criterion benchmarks (floors, reporting).
