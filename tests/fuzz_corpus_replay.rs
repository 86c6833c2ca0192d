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

#[test]
fn packed_sum_corpus() {
    replay("packed_sum", fuzz::packed_sum);
}

#[test]
fn he_decoders_corpus() {
    replay("he_decoders", fuzz::he_decoders);
}

#[test]
fn ledger_corpus() {
    replay("ledger", fuzz::ledger);
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
        let site = f.site_at(SiteId(0), phase).expect("site at phase");
        std::fs::write(dir.join(format!("seed-site0-{i}")), site.snapshot().bytes())
            .expect("write");
    }
}

/// Writes seeds for the `he_decoders` corpus (every hex message of the HE conformance vectors)
/// and the `ledger` corpus (a real three-round ledger and one of its entries, plus an anchor).
/// Run on demand:
/// `cargo test -p amalgam-tests --test fuzz_corpus_replay -- --ignored write_he_and_ledger_seeds`.
#[test]
#[ignore = "writes seed files into fuzz/corpus"]
fn write_he_and_ledger_seeds() {
    use amalgam_dp::ledger::audit::{Anchor, audit_file};
    use amalgam_dp::ledger::store::parse;
    use amalgam_dp::ledger::{BudgetPolicy, Ledger, RoundParams, RoundRequest};
    use amalgam_dp::params::{
        BitWidth, ClipNorm, Delta, Dimension, Epsilon, Gamma, RoundingBias, Sigma, SiteCount,
    };
    use amalgam_dp::sampler::SamplerKind;

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let he_dir = root.join("fuzz/corpus/he_decoders");
    std::fs::create_dir_all(&he_dir).expect("corpus dir");
    let vectors = root.join("protocol-spec/test-vectors/v2");
    for entry in std::fs::read_dir(&vectors).expect("vectors") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if !name.starts_with("he_") {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let Some(fields) = json.as_object() else {
            continue;
        };
        for (field, value) in fields {
            if let (true, Some(text)) = (field.ends_with("hex"), value.as_str()) {
                let bytes = hex::decode(text).expect("hex");
                std::fs::write(he_dir.join(format!("seed-{name}-{field}")), bytes).expect("write");
            }
        }
    }

    // The persisted round records (no vector carries them).
    let mut record = amalgam_he::MemberRoundRecord::from_bytes(&[
        b'A', b'G', 2, 0x77, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0,
        0, 0, 0, 0, 7,
    ])
    .expect("record seed");
    record.prune_below(4);
    std::fs::write(he_dir.join("seed-member-round-record"), record.to_bytes()).expect("write");
    std::fs::write(
        he_dir.join("seed-site-round-log"),
        amalgam_he::SiteRoundLog::new().to_bytes(),
    )
    .expect("write");

    let ledger_dir = root.join("fuzz/corpus/ledger");
    std::fs::create_dir_all(&ledger_dir).expect("corpus dir");
    let path = ledger_dir.join("seed-ledger-3-rounds");
    let _ = std::fs::remove_file(&path);
    let policy = BudgetPolicy::site_level(
        Epsilon::new(100.0).expect("cap"),
        Delta::new(1e-6).expect("delta"),
    )
    .expect("policy");
    let (mut ledger, _) = Ledger::open(&path, fuzz::ledger_key(), policy).expect("open");
    let params = RoundParams {
        min_cohort: SiteCount::new(4).expect("min cohort"),
        colluders: 0,
        n_cohort: SiteCount::new(5).expect("n_cohort"),
        clip: ClipNorm::new(1.0).expect("clip"),
        gamma: Gamma::new(1000.0).expect("gamma"),
        bits: BitWidth::new(24).expect("bits"),
        local_sigma: Sigma::new(5.0).expect("sigma"),
        dim: Dimension::new(1000).expect("dim"),
        beta: RoundingBias::recommended(),
    };
    ledger.record_epoch([0x11; 32], 1, params).expect("epoch");
    for round_id in 0..3 {
        ledger
            .authorize(RoundRequest::under(
                params,
                round_id,
                [0x11; 32],
                [round_id as u8; 32],
                SamplerKind::Fast,
            ))
            .expect("authorize");
    }
    ledger
        .rotate_key(ed25519_dalek::SigningKey::from_bytes(&[8; 32]))
        .expect("rotate");
    let anchor = ledger.anchor();
    drop(ledger);
    let bytes = std::fs::read(&path).expect("read");
    let payload = &parse(&bytes).expect("parse").payloads[2];
    std::fs::write(
        ledger_dir.join("seed-entry-body"),
        &payload[..payload.len() - 64],
    )
    .expect("write");
    let report = audit_file(&path, &fuzz::ledger_key().verifying_key(), &[anchor]).expect("audit");
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(Anchor::of(&report).expect("anchor"), anchor);
    std::fs::write(ledger_dir.join("seed-anchor"), anchor.to_string()).expect("write");
}
