//! The homomorphic fallback through the binaries: `amalgam serve`, five `amalgam site run`
//! and three `amalgam decryptor serve` processes over real mutual TLS. Masking round 1 is
//! forced to abort: two sites park after their AdvertiseKeys upload (`after-send-advertise-
//! keys:1`), so ShareKeys closes at its deadline with 3 < t = 4 uploads. They are SIGKILLed
//! and restarted; every site then follows the aggregator's re-run `2^32 + 1` (or, with the
//! manifest's fallback off, reports the abort and nothing more).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::Duration;

use amalgam_net::fallback_api::fallback_round_of;
use amalgam_site::fallback::{FallbackPoll, FallbackTransport};
use amalgam_site::model::{model_digest, next_model};
use amalgam_site::{ConsortiumRules, Transport};
use harness::proc::Proc;
use harness::world::{DIM, ROUND, STEP, Server, World};

/// Sites, committee members; ShareKeys closes below t = 4 with two sites parked.
const SITES: usize = 5;
const MEMBERS: usize = 3;
/// Phase length: the manifest's shortest allowed is 5 s.
const PHASE_S: u64 = 6;
const PARKED: [usize; 2] = [3, 4];

fn rerun() -> u64 {
    fallback_round_of(ROUND).unwrap()
}

/// Starts the sites for `rounds` rounds, parks two after their AdvertiseKeys upload of
/// masking round `masking`, waits for the abort the three others report, and restarts the
/// parked two. Returns the running sites.
fn abort_round(w: &World, s: &Server, masking: u64, rounds: u32) -> Vec<Proc> {
    let park = format!("after-send-advertise-keys:{masking}");
    let mut sites: Vec<Proc> = (0..SITES)
        .map(|i| {
            w.site_rounds(
                i,
                &s.url,
                PARKED.contains(&i).then_some(park.as_str()),
                rounds,
            )
        })
        .collect();
    for &i in &PARKED {
        sites[i].expect_line("FAULT after-send-advertise-keys", STEP);
    }
    for (i, p) in sites.iter_mut().enumerate() {
        if !PARKED.contains(&i) {
            p.expect_line(&format!("round {masking}: Aborted"), STEP);
        }
    }
    for &i in &PARKED {
        sites[i].kill();
        sites[i] = w.site_rounds(i, &s.url, None, rounds);
    }
    sites
}

/// Waits for `p` to exit and asserts it exited 0 (its stderr tail otherwise).
fn exits_ok(p: &mut Proc) {
    let status = p.wait_exit(STEP);
    assert!(
        status.success(),
        "{}: {status:?}\n{}",
        p.name,
        p.stderr_tail()
    );
}

/// [`abort_round`] of masking round 1, the sites running one round.
fn abort_round_one(w: &World, s: &Server) -> Vec<Proc> {
    abort_round(w, s, ROUND, 1)
}

/// Σ of the sites' encoded updates of `round` mod 2^b, from what each site wrote out.
fn encoded_sum(w: &World, round: u64) -> Vec<u64> {
    let mask = (1u64 << w.bits) - 1;
    let mut sum: Vec<u64> = Vec::new();
    for i in 0..SITES {
        let f = w.path(&format!("encoded{i}.json"));
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(doc["round"], round, "{f:?}");
        let values = doc["values"].as_array().unwrap();
        if sum.is_empty() {
            sum = vec![0; values.len()];
        }
        for (a, v) in sum.iter_mut().zip(values) {
            *a = (*a + v.as_u64().unwrap()) & mask;
        }
    }
    sum
}

/// The re-run's published sum, long-polled as site 0 (bounded by [`STEP`]).
fn published(w: &World, url: &str) -> amalgam_site::RoundResult {
    published_of(w, url, rerun())
}

/// Fallback round `fr`'s published sum, long-polled as site 0 (bounded by [`STEP`]).
fn published_of(w: &World, url: &str, fr: u64) -> amalgam_site::RoundResult {
    let mut t = w.transport(0, url);
    let end = std::time::Instant::now() + STEP;
    loop {
        match t.fallback_result(fr, Duration::from_secs(5)) {
            Ok(FallbackPoll::Published(r)) => return r,
            Ok(FallbackPoll::Aborted) => panic!("the re-run aborted"),
            Ok(FallbackPoll::NotYet { .. }) => {}
            // Not opened yet: the aggregator opens it shortly after the abort.
            Err(amalgam_site::TransportError::Refused { code, .. }) if code == "round.unknown" => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("re-run result: {e}"),
        }
        assert!(
            std::time::Instant::now() < end,
            "no re-run result in {STEP:?}"
        );
    }
}

/// Every site completed the re-run on the model the published sum gives (the model moved
/// off the initial one and is the same at every site), and that sum is the plaintext sum of
/// the sites' encoded updates of the re-run.
fn check_rerun(w: &World, s: &Server, sites: &mut [Proc]) {
    let res = published(w, &s.url);
    assert_eq!(res.contributors, vec![0, 1, 2, 3, 4]);
    let mask = (1u64 << w.bits) - 1;
    let reduced: Vec<u64> = res.sum.iter().map(|v| v & mask).collect();
    assert_eq!(
        reduced,
        encoded_sum(w, rerun()),
        "published sum != plaintext sum"
    );
    let rules = ConsortiumRules::from_manifest(&w.verified).unwrap();
    let initial = vec![0.0f32; DIM];
    let next = next_model(
        rules.encoding(rerun()),
        &initial,
        &reduced,
        SITES as f64,
        rules.server_lr,
    )
    .unwrap();
    let digest = model_digest(&next);
    assert_ne!(digest, model_digest(&initial), "the model did not move");
    let want = format!("round {}: FallbackCompleted", rerun());
    for p in sites.iter_mut() {
        exits_ok(p);
        let line = p
            .seen
            .iter()
            .find(|l| l.starts_with(&want))
            .unwrap_or_else(|| panic!("{}: no {want:?} in {:?}", p.name, p.seen));
        assert!(
            line.contains(&format!("model_digest: {digest:?}")),
            "{}: {line}",
            p.name
        );
    }
}

/// Rows of `dstate<j>/statements.db` for `round` (read once the member is stopped).
fn statements(w: &World, j: usize, round: u64) -> i64 {
    let c = rusqlite::Connection::open(w.path(&format!("dstate{j}/statements.db"))).unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM statements WHERE round = ?1",
        [round as i64],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn an_aborted_round_completes_through_the_fallback_with_decryptor_processes() {
    let w = World::with_committee(701, SITES, None, MEMBERS, true);
    let s = w.serve("127.0.0.1:0", PHASE_S, None);
    let mut members: Vec<Proc> = (0..MEMBERS).map(|j| w.decryptor(j, &s.url, None)).collect();
    let mut sites = abort_round_one(&w, &s);
    check_rerun(&w, &s, &mut sites);
    for (j, m) in members.iter_mut().enumerate() {
        m.expect_line(&format!("round {}: ", rerun()), STEP);
        m.kill();
        assert_eq!(statements(&w, j, rerun()), 1, "member {j}");
    }
    // The member's state is private: the directory 0700, its state key and every sealed
    // box secret 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&w.path("dstate0")), 0o700);
    assert_eq!(mode(&w.path("dstate0/state.key")), 0o600);
    let mut sealed = 0;
    for d in std::fs::read_dir(w.path("dstate0/sealed")).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            assert_eq!(mode(&f.unwrap().path()), 0o600);
            sealed += 1;
        }
    }
    // The current and the next period's secrets.
    assert_eq!(sealed, 2);
    // A member that lost its state would draw a second box key for the period: the
    // aggregator keeps the first certificate (409) and the member refuses to serve.
    std::fs::remove_dir_all(w.path("dstate0")).unwrap();
    let mut p = w.spawn_decryptor(0, &s.url, None);
    let status = p.wait_exit(STEP);
    assert_eq!(status.code(), Some(4), "{:?}\n{}", p.seen, p.stderr_tail());
    assert!(
        !p.seen.iter().any(|l| l.starts_with("READY")),
        "{:?}",
        p.seen
    );
}

#[test]
fn with_the_fallback_off_no_rerun_opens_and_the_sites_report_the_abort() {
    let w = World::with_committee(702, SITES, None, MEMBERS, false);
    let s = w.serve("127.0.0.1:0", PHASE_S, None);
    // A member under that manifest connects, but certifies no key and serves nothing.
    let mut member = w.decryptor(0, &s.url, None);
    let park = format!("after-send-advertise-keys:{ROUND}");
    let mut sites = w.sites(&s.url, |i| PARKED.contains(&i).then(|| park.clone()));
    for (i, p) in sites.iter_mut().enumerate() {
        if PARKED.contains(&i) {
            continue;
        }
        exits_ok(p);
        assert!(
            p.seen
                .iter()
                .any(|l| l == &format!("round {ROUND}: Aborted")),
            "{}: {:?}",
            p.name,
            p.seen
        );
        assert!(
            !p.seen.iter().any(|l| l.contains(&rerun().to_string())),
            "{}: followed a re-run: {:?}",
            p.name,
            p.seen
        );
    }
    // The aggregator serves no fallback route: no re-run exists to take part in.
    let mut t = w.transport(0, &s.url);
    assert!(t.fallback_mine(rerun()).is_err());
    member.drain();
    assert!(
        !member.seen.iter().any(|l| l.starts_with("round ")),
        "{:?}",
        member.seen
    );
    member.kill();
    let sealed = std::fs::read_dir(w.path("dstate0/sealed")).unwrap().count();
    assert_eq!(
        sealed, 0,
        "a box key was drawn under a manifest without the fallback"
    );
}

/// Member 0 (for `after-release` every member: t_c = 2 releases end the round, so a third
/// may come too late to reach the point) parks at decryptor fault point `point` of the
/// re-run; each member that reached it is SIGKILLed and restarted. The round completes at
/// every site, every member holds exactly one statement row (no second statement signed), and
/// each restarted member's vault of the round ends shredded.
fn member_killed_at(point: &str, seed: u64) {
    let w = World::with_committee(seed, SITES, None, MEMBERS, true);
    let s = w.serve("127.0.0.1:0", PHASE_S, None);
    let fault = format!("{point}:{}", rerun());
    let all = point == "after-release";
    let parked = |j: usize| j == 0 || all;
    let mut members: Vec<Proc> = (0..MEMBERS)
        .map(|j| w.decryptor(j, &s.url, parked(j).then_some(fault.as_str())))
        .collect();
    let mut sites = abort_round_one(&w, &s);
    let done = format!("round {}: ", rerun());
    let mut restarted = Vec::new();
    for (j, m) in members.iter_mut().enumerate() {
        if !parked(j) {
            continue;
        }
        let line = m.expect_any(&[&format!("FAULT {point}"), &done], STEP);
        if line.starts_with("FAULT") {
            m.kill();
            assert_eq!(statements(&w, j, rerun()), 1, "member {j}");
            *m = w.decryptor(j, &s.url, None);
            restarted.push(j);
        }
    }
    assert!(
        restarted.contains(&0) || all,
        "member 0 never reached {point}"
    );
    assert!(!restarted.is_empty(), "no member reached {point}");
    check_rerun(&w, &s, &mut sites);
    for (j, m) in members.iter_mut().enumerate() {
        m.expect_line(&done, STEP);
        m.kill();
        assert_eq!(statements(&w, j, rerun()), 1, "member {j}");
    }
    for j in restarted {
        // The restarted member's vault of the round: its key is gone (tombstone only).
        let vault = w.path(&format!("dstate{j}/statements.db.vault"));
        let left: Vec<_> = std::fs::read_dir(&vault)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(&rerun().to_string()) && !n.ends_with(".shredded"))
            .collect();
        assert!(
            left.is_empty(),
            "{point}: member {j}'s vault not shredded: {left:?}"
        );
        assert!(vault.join(format!("round-{}.shredded", rerun())).exists());
    }
}

#[test]
fn a_decryptor_killed_after_persisting_its_statement_signs_no_second_one() {
    // Q = 3 of 3: the round cannot finish without the restarted member's signature.
    member_killed_at("after-statement-persisted", 703);
}

#[test]
fn a_decryptor_killed_after_sending_its_signature_resends_it_and_the_round_completes() {
    member_killed_at("after-signature-sent", 704);
}

#[test]
fn a_decryptor_killed_after_its_release_ends_the_round_with_its_seeds_shredded() {
    member_killed_at("after-release", 705);
}

#[test]
fn a_campaign_continues_its_model_chain_from_the_rerun() {
    let w = World::with_committee(706, SITES, None, MEMBERS, true);
    let s = w.serve_campaign(PHASE_S);
    let _members: Vec<Proc> = (0..MEMBERS).map(|j| w.decryptor(j, &s.url, None)).collect();
    // Round 0 aborts; every site follows its re-run, then takes part in round 1.
    let mut sites = abort_round(&w, &s, 0, 2);
    let fr = fallback_round_of(0).unwrap();
    let res = published_of(&w, &s.url, fr);
    assert_eq!(res.contributors, vec![0, 1, 2, 3, 4]);
    let mask = (1u64 << w.bits) - 1;
    let reduced: Vec<u64> = res.sum.iter().map(|v| v & mask).collect();
    let rules = ConsortiumRules::from_manifest(&w.verified).unwrap();
    let initial = vec![0.0f32; DIM];
    let next = next_model(
        rules.encoding(fr),
        &initial,
        &reduced,
        SITES as f64,
        rules.server_lr,
    )
    .unwrap();
    for p in sites.iter_mut() {
        exits_ok(p);
        for want in [
            format!("round {fr}: FallbackCompleted"),
            format!("round {ROUND}: Completed"),
        ] {
            assert!(
                p.seen.iter().any(|l| l.starts_with(&want)),
                "{}: no {want:?} in {:?}",
                p.name,
                p.seen
            );
        }
    }
    // The campaign bound round 1 to the model the re-run's sum gives, not to model_0.
    let bound = w.transport(0, &s.url).round_model(ROUND).unwrap();
    assert_eq!(bound, Some(model_digest(&next)));
    assert_ne!(bound, Some(model_digest(&initial)));
    // Round 1's sum is the plaintext sum of the sites' round-1 updates.
    let r1 = w.result(&s.url);
    assert_eq!(r1.contributors, vec![0, 1, 2, 3, 4]);
    assert_eq!(r1.sum, w.plaintext_sum(&[0, 1, 2, 3, 4]));
}

/// No decryptor process runs, so the committee never certifies and the re-run of aborted
/// round 0 cannot open: after `--rerun-open-wait` the campaign gives it up, round 1 opens on
/// model_0 (carried over), every site stops waiting for the re-run once round 1 is open and
/// completes it, and the re-run never opens, not even once the committee certifies later.
#[test]
fn a_committee_that_never_certifies_cannot_stall_the_campaign() {
    let w = World::with_committee(707, SITES, None, MEMBERS, true);
    let s = w.serve_campaign_with(PHASE_S, &["--rerun-open-wait", "2"]);
    let mut sites = abort_round(&w, &s, 0, 2);
    let fr = fallback_round_of(0).unwrap();
    for p in sites.iter_mut() {
        exits_ok(p);
        assert!(
            p.seen
                .iter()
                .any(|l| l.starts_with(&format!("round {ROUND}: Completed"))),
            "{}: {:?}",
            p.name,
            p.seen
        );
        assert!(
            !p.seen
                .iter()
                .any(|l| l.starts_with(&format!("round {fr}: Fallback"))),
            "{}: took part in a re-run: {:?}",
            p.name,
            p.seen
        );
    }
    let mut t = w.transport(0, &s.url);
    assert_eq!(
        t.round_model(ROUND).unwrap(),
        Some(model_digest(&[0.0f32; DIM])),
        "round 1 is not bound to model_0"
    );
    let r1 = w.result(&s.url);
    assert_eq!(r1.contributors, vec![0, 1, 2, 3, 4]);
    assert_eq!(r1.sum, w.plaintext_sum(&[0, 1, 2, 3, 4]));
    // The committee comes up late and certifies (READY is printed after its certificates are
    // posted): round 0 aborted and is still listed so, but round 1 is logged, so the
    // aggregator's opener (every 0.5 s) never opens its re-run.
    let _members: Vec<Proc> = (0..MEMBERS).map(|j| w.decryptor(j, &s.url, None)).collect();
    std::thread::sleep(Duration::from_secs(3));
    match t.fallback_mine(fr) {
        Err(amalgam_site::TransportError::Refused { code, .. }) => {
            assert_eq!(code, "round.unknown", "the given-up re-run opened");
        }
        Err(e) => panic!("fallback/mine: {e}"),
        Ok(_) => panic!("the given-up re-run opened"),
    }
}

/// `amalgam serve --round 2` is refused while the re-run of round 1 is open: round 2 opened
/// beside it would be a second source of model_2 (and a campaign's restart would then refuse
/// the log). Round 1 aborts, every site is stopped so that nobody uploads to the re-run, the
/// re-run opens once the committee certified, the aggregator is killed, and a restart asking
/// for round 2 exits 1 without opening it.
#[test]
fn serve_refuses_to_open_a_round_beside_an_open_rerun() {
    let w = World::with_committee(708, SITES, None, MEMBERS, true);
    let mut s = w.serve("127.0.0.1:0", PHASE_S, None);
    let _members: Vec<Proc> = (0..MEMBERS).map(|j| w.decryptor(j, &s.url, None)).collect();
    let park = format!("after-send-advertise-keys:{ROUND}");
    let mut sites: Vec<Proc> = (0..SITES)
        .map(|i| w.site(i, &s.url, PARKED.contains(&i).then_some(park.as_str())))
        .collect();
    for &i in &PARKED {
        sites[i].expect_line("FAULT after-send-advertise-keys", STEP);
    }
    for (i, p) in sites.iter_mut().enumerate() {
        if !PARKED.contains(&i) {
            p.expect_line(&format!("round {ROUND}: Aborted"), STEP);
        }
        p.kill();
    }
    let fr = rerun();
    let mut t = w.transport(0, &s.url);
    let start = std::time::Instant::now();
    while t.fallback_mine(fr).is_err() {
        assert!(start.elapsed() < STEP, "the re-run never opened");
        std::thread::sleep(Duration::from_millis(200));
    }
    let model = hex::encode(t.round_model(ROUND).unwrap().unwrap());
    s.proc.kill();
    let cmd = w.serve_round_cmd("127.0.0.1:0", PHASE_S, None, 2, Some(&model));
    let mut p = Proc::spawn(
        "aggregator (round 2)",
        cmd,
        w.path("aggregator-round2.stderr"),
    );
    let status = p.wait_exit(STEP);
    assert_eq!(status.code(), Some(1), "{:?}\n{}", p.seen, p.stderr_tail());
    assert!(
        p.stderr_tail().contains("is still open"),
        "{}",
        p.stderr_tail()
    );
    assert!(
        !p.seen.iter().any(|l| l.starts_with("READY")),
        "{:?}",
        p.seen
    );
}
