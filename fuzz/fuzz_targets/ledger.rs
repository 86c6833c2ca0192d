//! Fuzz target: see `amalgam_tests::harness::fuzz::ledger`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amalgam_tests::harness::fuzz::ledger(data));
