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

/// Writes a real site and aggregator snapshot of every phase of the fuzz fixture into the
/// `snapshots` corpus, as seeds that get the fuzzer past the header. Run on demand:
/// `cargo test -p amalgam-tests --test fuzz_corpus_replay -- --ignored write_snapshot_seeds`.
#[test]
#[ignore = "writes seed files into fuzz/corpus"]
fn write_snapshot_seeds() {
    use amalgam_proto::params::SiteId;
    use amalgam_proto::roles::Snapshot;
    use amalgam_tests::harness::PHASES;

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/snapshots");
    let f = fuzz::fixture();
    for (i, phase) in PHASES.into_iter().enumerate() {
        let agg = f.aggregator_at(phase).expect("aggregator at phase");
        std::fs::write(dir.join(format!("seed-aggregator-{i}")), agg.snapshot()).expect("write");
        let (site, _) = f.site_at(SiteId(0), phase).expect("site at phase");
        std::fs::write(dir.join(format!("seed-site0-{i}")), site.snapshot()).expect("write");
    }
}
