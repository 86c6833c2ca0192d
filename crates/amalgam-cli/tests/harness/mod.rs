//! The crash-test harness (`tests/harness/`) shared by `round_cli.rs` and `crash_cli.rs`: real `amalgam`
//! processes over real HTTPS on loopback ports announced on READY lines, parked at fault
//! points (`AMALGAM_FAULT=<point>:<k>`, the binary is built with feature `fault-points` for
//! these tests), SIGKILLed and restarted. Spec: `protocol-spec/persistence.md`, "Crash
//! testing".
//!
//! Every wait is bounded ([`world::STEP`]); a process left running is killed on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod decryptor;
pub mod proc;
pub mod world;

use amalgam_proto::Phase;
use amalgam_server::events::EventKind;

use world::{Server, World, rows, sha256, upload_rows};

/// The checks every round ends with, on a running aggregator `s` whose round 1 finished:
///
/// - the published sum equals the plaintext sum of exactly `contributors`' encoded updates;
/// - after a SIGKILL, the event log holds `uploads` upload rows, each (phase, site) once,
///   every contributor's MaskedInput among them, and one RoundEnd;
/// - every download served now is the one the log recorded (same SHA-256), and a restarted
///   aggregator serves every download and the result byte-identical.
///
/// Returns the restarted aggregator.
pub fn check_round(
    w: &World,
    mut s: Server,
    contributors: &[u16],
    uploads: usize,
    phase_seconds: u64,
) -> Server {
    let result = w.result(&s.url);
    assert_eq!(result.contributors, contributors, "contributors");
    assert_eq!(
        result.sum,
        w.plaintext_sum(contributors),
        "published sum != plaintext sum"
    );
    let before = w.downloads(&s.url);
    assert!(!before.is_empty(), "no download served");
    s.proc.kill();

    let events = w.log();
    let up = upload_rows(&events);
    assert!(
        up.values().all(|&c| c == 1),
        "an upload counted twice: {up:?}"
    );
    assert_eq!(up.values().sum::<usize>(), uploads, "upload rows: {up:?}");
    for &c in contributors {
        assert!(
            up.contains_key(&(Phase::MaskedInput.code(), u32::from(c))),
            "contributor {c} has no MaskedInput row"
        );
    }
    assert_eq!(rows(&events, EventKind::RoundEnd), 1, "RoundEnd rows");
    for ((site, phase), bytes) in &before {
        let recorded: Vec<_> = events
            .iter()
            .filter(|e| {
                e.kind == EventKind::Download && e.sender == Some(*site as u32) && e.phase == *phase
            })
            .collect();
        assert_eq!(
            recorded.len(),
            1,
            "download rows for site {site} phase {phase}"
        );
        assert_eq!(
            recorded[0].body_sha256,
            sha256(bytes),
            "site {site} phase {phase}: served bytes are not the recorded ones"
        );
    }

    let s2 = w.serve(&s.addr(), phase_seconds, None);
    assert_eq!(
        w.downloads(&s2.url),
        before,
        "re-delivery is not byte-identical"
    );
    assert_eq!(w.result(&s2.url), result, "result changed across a restart");
    s2
}
