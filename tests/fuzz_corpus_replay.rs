//! Replays every committed fuzz corpus input through the same entry point its cargo-fuzz
//! target calls (`fuzz/fuzz_targets/*.rs`), so each CI run re-checks that no input the fuzzer
//! ever kept makes a decoder or a state machine panic.

use std::path::PathBuf;

use amalgam_tests::harness::fuzz;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {} is missing: {e}", dir.display()));
    let mut replayed = 0usize;
    for entry in entries {
        let path = entry.expect("readable corpus entry").path();
        let data = std::fs::read(&path).expect("readable corpus file");
        run(&data);
        replayed += 1;
    }
    assert!(replayed > 0, "fuzz corpus {} is empty", dir.display());
}

#[test]
fn decoders_corpus() {
    replay("decoders", fuzz::decoders);
}

#[test]
fn snapshots_corpus() {
    replay("snapshots", fuzz::snapshots);
}

#[test]
fn aggregator_corpus() {
    replay("aggregator", fuzz::aggregator);
}

#[test]
fn site_corpus() {
    replay("site", fuzz::site);
}
