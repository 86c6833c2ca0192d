//! Crash tests through the `amalgam` binary (built with feature `fault-points` for these
//! tests): an aggregator or a site parks at a named fault point, the harness SIGKILLs it and
//! restarts it, and the round still completes with the plaintext sum, every upload counted
//! once, downloads re-delivered byte-identical, no 409 (no second, different message for a
//! phase). Also: a second aggregator on the same event log, a tampered log, a site restored
//! from an older state copy. Points and the k values run here: `protocol-spec/persistence.md`,
//! "Crash testing". The full sweeps are `#[ignore]`d (`cargo test -- --ignored`): every k of
//! every aggregator point, every site point of every phase.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::check_round;
use harness::proc::Proc;
use harness::world::{PHASES, STEP, World, conflicts, expect_completed, metrics};

/// Uploads of a round without dropouts: 5 sites × 5 phases.
const ALL_UPLOADS: usize = 25;
const ALL: [u16; 5] = [0, 1, 2, 3, 4];
/// Phase length while nothing should close on a deadline (sites restart well inside it).
const LONG: u64 = 60;

/// The aggregator parks at `point` with counter `k`, is SIGKILLed and restarted on the same
/// port and log; the sites ride it out with their retries.
fn aggregator_killed_at(point: &str, k: u64, seed: u64, second_refused: bool) {
    let w = World::new(seed, 5, None);
    let fault = format!("{point}:{k}");
    let mut s = w.serve("127.0.0.1:0", LONG, Some(&fault));
    let mut sites = w.sites(&s.url, |_| None);
    assert_eq!(
        s.proc.expect_line("FAULT ", STEP),
        format!("FAULT {point} {k}")
    );
    if second_refused {
        // The parked aggregator still holds `<db>.lock`: a second one is refused.
        let cmd = w.serve_cmd("127.0.0.1:0", LONG, None);
        let mut second = Proc::spawn("second aggregator", cmd, w.path("second.stderr"));
        let status = second.wait_exit(STEP);
        assert_eq!(status.code(), Some(1), "{}", second.stderr_tail());
        assert!(
            second.stderr_tail().contains("lock"),
            "{}",
            second.stderr_tail()
        );
        assert!(!second.seen.iter().any(|l| l.starts_with("READY")));
    }
    s.proc.kill();
    let s = w.serve(&s.addr(), LONG, None);
    for p in &mut sites {
        expect_completed(p);
    }
    check_round(&w, s, &ALL, ALL_UPLOADS, LONG);
}

/// Site 2 parks at `after-<what>-<phase>` of round 1, is SIGKILLed and restarted on the same
/// state directory: it resumes, is counted once, and never sends a different message.
fn site_killed_at(what: &str, phase: &str, seed: u64) {
    let w = World::new(seed, 5, None);
    let s = w.serve("127.0.0.1:0", LONG, None);
    let point = format!("after-{what}-{phase}");
    let mut sites = w.sites(&s.url, |i| (i == 2).then(|| format!("{point}:1")));
    assert_eq!(
        sites[2].expect_line("FAULT ", STEP),
        format!("FAULT {point} 1")
    );
    sites[2].kill();
    sites[2] = w.site(2, &s.url, None);
    for p in &mut sites {
        expect_completed(p);
    }
    let m = metrics(&s.metrics);
    assert!(conflicts(&m).is_empty(), "409s: {:?}", conflicts(&m));
    check_round(&w, s, &ALL, ALL_UPLOADS, LONG);
}

// Aggregator points, one k in each of three phases by default (k counts accepted uploads:
// 1-5 AdvertiseKeys, 6-10 ShareKeys, 11-15 MaskedInput, 16-20 ConsistencyCheck, 21-25
// Unmasking).

#[test]
fn aggregator_killed_before_commit_in_advertise_keys() {
    aggregator_killed_at("before-commit", 3, 401, false);
}

#[test]
fn aggregator_killed_after_commit_in_masked_input_and_a_second_one_refused() {
    aggregator_killed_at("after-commit", 13, 402, true);
}

#[test]
fn aggregator_killed_after_response_in_unmasking() {
    aggregator_killed_at("after-response", 23, 403, false);
}

#[test]
#[ignore = "sweep: every k of every aggregator point (75 rounds, several minutes)"]
fn aggregator_killed_at_every_point_and_k() {
    // `AMALGAM_SWEEP_K=<lo>-<hi>` narrows the sweep to those k (to rerun a failure).
    let (lo, hi) = std::env::var("AMALGAM_SWEEP_K")
        .ok()
        .and_then(|v| {
            let (a, b) = v.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((1, ALL_UPLOADS as u64));
    for point in ["before-commit", "after-commit", "after-response"] {
        for k in lo..=hi {
            eprintln!("aggregator killed at {point} {k}");
            aggregator_killed_at(point, k, 500 + k, false);
        }
    }
}

// Site points: a representative subset by default.

#[test]
fn site_killed_after_persist_advertise_keys() {
    site_killed_at("persist", "advertise-keys", 411);
}

#[test]
fn site_killed_after_send_share_keys() {
    site_killed_at("send", "share-keys", 412);
}

#[test]
fn site_killed_after_persist_masked_input() {
    site_killed_at("persist", "masked-input", 413);
}

#[test]
fn site_killed_after_send_unmasking() {
    site_killed_at("send", "unmasking", 414);
}

#[test]
#[ignore = "sweep: both site points of every phase (10 rounds)"]
fn site_killed_at_every_point_of_every_phase() {
    for (i, p) in PHASES.iter().enumerate() {
        let seg = amalgam_net::api::phase_segment(*p).unwrap();
        eprintln!("site killed after persist/send of {seg}");
        site_killed_at("persist", seg, 600 + i as u64);
        site_killed_at("send", seg, 610 + i as u64);
    }
}

#[test]
fn a_byte_flipped_in_the_event_log_is_refused_at_restart() {
    let w = World::new(421, 5, None);
    let mut s = w.serve("127.0.0.1:0", LONG, None);
    s.proc.kill();
    {
        // Someone with write access to the files: lift the append-only triggers, flip one
        // bit of row 1's body digest, put the triggers back.
        let c = rusqlite::Connection::open(w.db()).unwrap();
        let triggers: Vec<(String, String)> = c
            .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (name, _) in &triggers {
            c.execute_batch(&format!("DROP TRIGGER \"{name}\""))
                .unwrap();
        }
        let mut d: Vec<u8> = c
            .query_row("SELECT body_sha256 FROM events WHERE seq = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        d[0] ^= 0x01;
        c.execute("UPDATE events SET body_sha256 = ?1 WHERE seq = 1", [d])
            .unwrap();
        for (_, sql) in &triggers {
            c.execute_batch(sql).unwrap();
        }
    }
    let cmd = w.serve_cmd(&s.addr(), LONG, None);
    let mut p = Proc::spawn("restarted aggregator", cmd, w.path("tampered.stderr"));
    let status = p.wait_exit(STEP);
    assert_eq!(status.code(), Some(1), "{}", p.stderr_tail());
    assert!(p.stderr_tail().contains("tampered"), "{}", p.stderr_tail());
    assert!(!p.seen.iter().any(|l| l.starts_with("READY")));
}

/// A copy of a state directory as a backup tool makes it (modes kept).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_site_restored_from_an_older_state_copy_refuses_the_round() {
    // Threshold 4 of 5: the round completes without the refusing site. Short phases, since
    // MaskedInput closes on its deadline.
    const PHASE: u64 = 15;
    let w = World::new(431, 5, None);
    let s = w.serve("127.0.0.1:0", PHASE, None);
    let mut sites = w.sites(&s.url, |i| {
        (i == 2).then(|| "after-send-advertise-keys:1".into())
    });
    assert_eq!(
        sites[2].expect_line("FAULT ", STEP),
        "FAULT after-send-advertise-keys 1"
    );
    sites[2].kill();
    let (state, old) = (w.path("state2"), w.path("state2.old"));
    copy_dir(&state, &old);
    sites[2] = w.site(2, &s.url, Some("after-send-share-keys:1"));
    assert_eq!(
        sites[2].expect_line("FAULT ", STEP),
        "FAULT after-send-share-keys 1"
    );
    sites[2].kill();
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::rename(&old, &state).unwrap();
    sites[2] = w.site(2, &s.url, None);
    let status = sites[2].wait_exit(STEP);
    assert_eq!(status.code(), Some(1), "{}", sites[2].stderr_tail());
    assert!(
        sites[2].stderr_tail().contains("older copy"),
        "{}",
        sites[2].stderr_tail()
    );
    for i in [0, 1, 3, 4] {
        expect_completed(&mut sites[i]);
    }
    let m = metrics(&s.metrics);
    assert!(conflicts(&m).is_empty(), "409s: {:?}", conflicts(&m));
    // Four contributors' five uploads; site 2's AdvertiseKeys and ShareKeys.
    check_round(&w, s, &[0, 1, 3, 4], 4 * 5 + 2, PHASE);
}

#[test]
fn the_409_detector_sees_a_conflict_in_the_metrics_text() {
    // The "no 409" assertions above are only as good as this filter.
    let text = "# HELP amalgam_rejected_requests Refused requests by problem code\n\
                amalgam_rejected_requests_total{reason=\"not-yet\"} 7\n\
                amalgam_rejected_requests_total{reason=\"peer.duplicate\"} 1\n\
                amalgam_rejected_requests_total{reason=\"round.wrong-phase\"} 0\n";
    assert_eq!(
        conflicts(text),
        vec!["amalgam_rejected_requests_total{reason=\"peer.duplicate\"} 1".to_owned()]
    );
}
