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

use world::{Server, World, rows, upload_rows};

/// The checks every round ends with, on a running aggregator `s` whose round 1 finished:
///
/// - the published sum equals the plaintext sum of exactly `contributors`' encoded updates;
/// - after a SIGKILL, the event log holds `uploads` upload rows, each (phase, site) once,
///   every contributor's MaskedInput among them, and one RoundEnd;
/// - every download was recorded once per (recipient, phase), so no restart served a second
///   version; the finished round is shredded (no download served, before or after a
///   restart) and a restarted aggregator serves the result byte-identical.
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
    // The finished round is crypto-shredded: its downloads are gone (410 `round.shredded`),
    // only their digests stay in the log.
    assert!(
        w.downloads(&s.url).is_empty(),
        "a finished round still serves downloads after its shred"
    );
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
    // Every download was recorded once per (recipient, phase): a restart re-delivered the
    // logged bytes and never served a second, different version.
    let mut served: std::collections::BTreeMap<(Option<u32>, u8), usize> = Default::default();
    for e in events.iter().filter(|e| e.kind == EventKind::Download) {
        *served.entry((e.sender, e.phase)).or_default() += 1;
    }
    assert!(!served.is_empty(), "no download recorded");
    assert!(
        served.values().all(|&c| c == 1),
        "a download recorded twice: {served:?}"
    );
    for &c in contributors {
        assert!(
            served.keys().any(|(to, _)| *to == Some(u32::from(c))),
            "contributor {c} got no download"
        );
    }

    let s2 = w.serve(&s.addr(), phase_seconds, None);
    assert!(
        w.downloads(&s2.url).is_empty(),
        "a restart brought back a shredded round's downloads"
    );
    assert_eq!(w.result(&s2.url), result, "result changed across a restart");
    s2
}
