//! The homomorphic fallback over real HTTPS: sums, roles, refusals, restart, shredding and an
//! asynchronous round with sites and a committee member offline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::needless_range_loop)]

mod fb;

use std::sync::Arc;

use amalgam_net::ProblemCode;
use amalgam_net::fallback_api::{FallbackResult, fallback_path};
use amalgam_server::events::{EventKind, MemoryStore};
use fb::*;

fn code(r: &amalgam_net::client::ApiResponse) -> ProblemCode {
    r.problem().expect("a problem document").code
}

async fn upload(
    run: &Running,
    fx: &Fixture,
    i: usize,
    bytes: Vec<u8>,
) -> amalgam_net::client::ApiResponse {
    run.client_for(&fx.sites[i])
        .post(&fallback_path(ROUND, "upload"), bytes)
        .await
        .unwrap()
}

async fn result(run: &Running, fx: &Fixture) -> FallbackResult {
    let r = run
        .client_for(&fx.sites[0])
        .get(&(fallback_path(ROUND, "result") + "?wait=5"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.problem());
    serde_json::from_slice(&r.body).unwrap()
}

/// Admit, sign with `signers`, release with `releasers`.
async fn committee(fx: &Fixture, run: &Running, signers: &[usize], releasers: &[usize]) {
    let mut ms: Vec<TestMember> = signers
        .iter()
        .map(|&j| TestMember::new(fx, run, j, ROUND))
        .collect();
    for m in &mut ms {
        m.admit_all(fx).await;
        let r = m.sign().await;
        assert_eq!(r.status, 200, "{:?}", r.problem());
    }
    for m in ms.iter().filter(|m| releasers.contains(&m.j)) {
        let r = m.release().await;
        assert_eq!(r.status, 200, "{:?}", r.problem());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_round_sum_equals_plaintext_sum_and_ciphertexts_are_shredded() {
    let fx = Fixture::new(true);
    let store = MemoryStore::new();
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    run.open_fallback().await.unwrap();
    let xs = inputs();
    for i in 0..SITES {
        let r = upload(&run, &fx, i, site_upload(&fx, ROUND, i, &xs[i])).await;
        assert_eq!(r.status, 200, "{:?}", r.problem());
    }
    run.fallback.close_now(ROUND).await.unwrap();
    // Every member signs; two of them (t_c = 2) hold every piece between them.
    committee(&fx, &run, &[0, 1, 2, 3], &[0, 1]).await;
    let res = result(&run, &fx).await;
    assert_eq!(res.sum, plain_sum(&xs.iter().collect::<Vec<_>>()));
    assert_eq!(res.contributors, vec![0, 1, 2, 3, 4]);
    // Ciphertexts and releases are shredded; the statement and signatures are kept.
    let events = store.events();
    let ups: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Upload)
        .collect();
    assert_eq!(ups.len(), SITES);
    assert!(ups.iter().all(|e| e.shredded && e.body.is_empty()));
    assert!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::Other(0x40))
            .all(|e| e.shredded)
    );
    let sigs = events
        .iter()
        .filter(|e| e.kind == EventKind::Summary)
        .count();
    assert_eq!(sigs, 4);
    assert!(
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Summary | EventKind::PhaseClose))
            .all(|e| !e.shredded && !e.body.is_empty())
    );
    // The round ended: its views (seed boxes) are gone from memory, 410 to any member.
    let r = run
        .client_for(&fx.member_key(3))
        .get(&fallback_path(ROUND, "views"))
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (410, ProblemCode::RoundClosed)
    );
    // A restart after the end: the result is still served from the public record.
    run.stop().await;
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    assert_eq!(result(&run, &fx).await, res);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_on_every_fallback_route() {
    let fx = Fixture::new(true);
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    run.open_fallback().await.unwrap();
    let x = inputs();
    let member = run.client_for(&fx.member_key(0));
    // A decryptor presenting a site's route.
    let r = member
        .post(
            &fallback_path(ROUND, "upload"),
            site_upload(&fx, ROUND, 0, &x[0]),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (403, ProblemCode::AuthWrongRole)
    );
    // A site calling decryptor routes.
    let site = run.client_for(&fx.sites[0]);
    for (get, what) in [
        (true, "views"),
        (true, "signatures"),
        (false, "signatures"),
        (false, "release"),
    ] {
        let r = if get {
            site.get(&fallback_path(ROUND, what)).await.unwrap()
        } else {
            site.post(&fallback_path(ROUND, what), vec![0; 69])
                .await
                .unwrap()
        };
        assert_eq!(
            (r.status.as_u16(), code(&r)),
            (403, ProblemCode::AuthWrongRole),
            "{what}"
        );
    }
    // Nor does a site learn which fallback rounds exist: a round never opened is 403 too.
    for what in ["views", "signatures"] {
        let r = site.get(&fallback_path(ROUND + 1, what)).await.unwrap();
        assert_eq!(
            (r.status.as_u16(), code(&r)),
            (403, ProblemCode::AuthWrongRole),
            "{what} of an unopened round"
        );
    }
    // The relay carries no ciphertext: a view is far smaller than an upload.
    upload(&run, &fx, 0, site_upload(&fx, ROUND, 0, &x[0])).await;
    let views = member.get(&fallback_path(ROUND, "views")).await.unwrap();
    assert_eq!(views.status, 200);
    let up_len = site_upload(&fx, ROUND, 0, &x[0]).len();
    assert!(
        views.body.len() < up_len / 10,
        "{} vs {up_len}",
        views.body.len()
    );
    // A masking round id on a fallback route.
    let r = site.get(&fallback_path(1, "result")).await.unwrap();
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (409, ProblemCode::RoundWrongScheme)
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_leave_the_round_unchanged_and_resends_are_idempotent() {
    let fx = Fixture::new(true);
    let store = MemoryStore::new();
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    run.open_fallback().await.unwrap();
    let x = inputs();
    let good = site_upload(&fx, ROUND, 0, &x[0]);
    let first = upload(&run, &fx, 0, good.clone()).await;
    assert_eq!(first.status, 200);
    let before = run.fingerprint(ROUND).await;
    let logged = store.events().len();
    // Oversize: 413 before anything is read into the round.
    let mut big = site_upload(&fx, ROUND, 1, &x[1]);
    big.push(0);
    let r = upload(&run, &fx, 1, big).await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (413, ProblemCode::BodyTooLarge)
    );
    // Malformed at the exact length: 400.
    let r = upload(&run, &fx, 1, vec![0xAB; good.len()]).await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (400, ProblemCode::BodyMalformed)
    );
    // Site 2's upload presented by site 1: 422.
    let r = upload(&run, &fx, 1, site_upload(&fx, ROUND, 2, &x[2])).await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (422, ProblemCode::ProtocolRefused)
    );
    // A flipped ciphertext word: the signature fails, 422.
    let mut bad = site_upload(&fx, ROUND, 1, &x[1]);
    let n = bad.len();
    bad[n - 100] ^= 1;
    let r = upload(&run, &fx, 1, bad).await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (422, ProblemCode::ProtocolRefused)
    );
    // A different upload from site 0: 409; the identical one: 200 with the original bytes.
    let other: Vec<u64> = x[0].iter().map(|v| v ^ 1).collect();
    let r = upload(&run, &fx, 0, site_upload(&fx, ROUND, 0, &other)).await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (409, ProblemCode::PeerDuplicate)
    );
    let again = upload(&run, &fx, 0, good).await;
    assert_eq!((again.status, again.body), (first.status, first.body));
    // Signatures before the cohort closed: 409 wrong phase.
    let r = run
        .client_for(&fx.member_key(0))
        .post(&fallback_path(ROUND, "signatures"), vec![0; 69])
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (409, ProblemCode::RoundWrongPhase)
    );
    assert_eq!(run.fingerprint(ROUND).await, before);
    assert_eq!(store.events().len(), logged);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_forbids_the_fallback_opens_no_fallback_round() {
    let fx = Fixture::new(false);
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    let e = run.open_fallback().await.unwrap_err();
    assert!(e.detail.contains("forbids"), "{}", e.detail);
    let r = upload(&run, &fx, 0, site_upload(&fx, ROUND, 0, &inputs()[0])).await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (404, ProblemCode::RoundUnknown)
    );
    run.stop().await;
    // Allowed, but a masking round id is never a fallback round.
    let fx = Fixture::new(true);
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    let e = run
        .fallback
        .open_rerun(&run.service, ROUND)
        .await
        .unwrap_err();
    assert_eq!(e.code, ProblemCode::RoundWrongScheme);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_round_reverifies_and_continues() {
    let fx = Fixture::new(true);
    let store = MemoryStore::new();
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    run.open_fallback().await.unwrap();
    let xs = inputs();
    let mut receipts = Vec::new();
    for i in 0..3 {
        receipts.push(
            upload(&run, &fx, i, site_upload(&fx, ROUND, i, &xs[i]))
                .await
                .body,
        );
    }
    let before = run.fingerprint(ROUND).await;
    run.stop().await;
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    assert_eq!(run.fingerprint(ROUND).await, before);
    // An identical re-send after the restart gets the original response.
    let r = upload(&run, &fx, 1, site_upload(&fx, ROUND, 1, &xs[1])).await;
    assert_eq!(r.body, receipts[1]);
    run.fallback.close_now(ROUND).await.unwrap();
    committee(&fx, &run, &[0, 1, 2], &[]).await;
    run.stop().await;
    // Restart between signatures and releases.
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    committee(&fx, &run, &[0, 3], &[0, 3]).await;
    let res = result(&run, &fx).await;
    assert_eq!(res.sum, plain_sum(&xs[..3].iter().collect::<Vec<_>>()));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_upload_in_the_log_refuses_the_start() {
    let fx = Fixture::new(true);
    let store = MemoryStore::new();
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    run.open_fallback().await.unwrap();
    let xs = inputs();
    upload(&run, &fx, 0, site_upload(&fx, ROUND, 0, &xs[0])).await;
    run.stop().await;
    let seq = store
        .events()
        .iter()
        .find(|e| e.kind == EventKind::Upload)
        .unwrap()
        .seq;
    // Rewritten with a matching digest: only the replayed signature check can catch it.
    store.tamper(seq, false, |e| {
        let n = e.body.len();
        e.body[n - 100] ^= 1;
    });
    let e = start(&fx, Arc::new(store.clone()))
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains(&format!("sequence {seq}")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_round_with_sites_and_a_member_offline() {
    let mut fx = Fixture::new(true);
    fx.target = Some(3);
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    run.open_fallback().await.unwrap();
    let xs = inputs();
    // Sites 4, 0 and 2 submit at different times; the cohort closes at the third.
    let st = run
        .client_for(&fx.sites[0])
        .get(&fallback_path(ROUND, "statement"))
        .await
        .unwrap();
    assert_eq!(code(&st), ProblemCode::NotYet);
    for i in [4, 0, 2] {
        let r = upload(&run, &fx, i, site_upload(&fx, ROUND, i, &xs[i])).await;
        assert_eq!(r.status, 200, "{:?}", r.problem());
    }
    // Site 1 comes back after the close; site 3 never does.
    let r = upload(&run, &fx, 1, site_upload(&fx, ROUND, 1, &xs[1])).await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (409, ProblemCode::RoundWrongPhase)
    );
    // Member 3 is offline: Q = 3 signatures from 0, 1, 2; releases from 1 and 2.
    committee(&fx, &run, &[0, 1, 2], &[1, 2]).await;
    let res = result(&run, &fx).await;
    assert_eq!(res.contributors, vec![0, 2, 4]);
    assert_eq!(res.sum, plain_sum(&[&xs[0], &xs[2], &xs[4]]));
    run.stop().await;
}

/// A later masking round opened on model_r (the campaign gave the re-run up): the re-run of
/// round r would give a second model_{r+1}, so it never opens, and nothing is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_never_opens_once_a_later_masking_round_opened() {
    let fx = Fixture::new(true);
    let log = MemoryStore::new();
    let run = start(&fx, Arc::new(log.clone())).await.unwrap();
    run.service.open_round(1, MODEL.1).await.unwrap();
    let _ = run.service.close_phase_now(1).await;
    assert!(run.service.round_status(1).await.unwrap().aborted.is_some());
    run.service.open_round(2, MODEL.1).await.unwrap();
    let before = log.events().len();
    let e = run.fallback.open_rerun(&run.service, 1).await.unwrap_err();
    assert_eq!(e.code, ProblemCode::RoundWrongPhase);
    assert!(e.detail.contains("round 2 opened after"), "{}", e.detail);
    assert_eq!(
        log.events().len(),
        before,
        "a refused re-run logged an event"
    );
    assert!(run.fallback.with_round(ROUND, |_| ()).await.is_err());
    run.stop().await;
}

/// A masking round forced to abort (the aggregator drops everything; nobody advertises before
/// the deadline) is completed through the fallback where the policy allows it, under a new
/// round id; a round that did not abort is never re-run; a policy that forbids the fallback
/// opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_masking_round_is_rerun_through_the_fallback_only_where_allowed() {
    for allowed in [true, false] {
        let fx = Fixture::new(allowed);
        let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
        run.service.open_round(1, MODEL.1).await.unwrap();
        // Round 1 is still running: no re-run.
        let e = run.fallback.open_rerun(&run.service, 1).await.unwrap_err();
        assert_eq!(e.code, ProblemCode::RoundWrongPhase);
        // Round 1 aborts at its deadline with nobody in.
        let _ = run.service.close_phase_now(1).await;
        assert!(run.service.round_status(1).await.unwrap().aborted.is_some());
        let r = run.fallback.open_rerun(&run.service, 1).await;
        if !allowed {
            assert!(r.unwrap_err().detail.contains("forbids"));
            run.stop().await;
            continue;
        }
        assert_eq!(r.unwrap(), ROUND);
        // Only once.
        assert!(run.fallback.open_rerun(&run.service, 1).await.is_err());
        let xs = inputs();
        for i in 0..SITES {
            upload(&run, &fx, i, site_upload(&fx, ROUND, i, &xs[i])).await;
        }
        run.fallback.close_now(ROUND).await.unwrap();
        committee(&fx, &run, &[1, 2, 3], &[2, 3]).await;
        let res = result(&run, &fx).await;
        assert_eq!(res.sum, plain_sum(&xs.iter().collect::<Vec<_>>()));
        run.stop().await;
    }
}

/// The same round on the SQLite event log: ciphertexts go to the log's vault under the round
/// key and are crypto-shredded at the end; a restart on the same database serves the result
/// and answers an identical re-send with the original receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_sqlite_log_ciphertexts_are_shredded_and_the_result_survives_a_restart() {
    let fx = Fixture::new(true);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fallback.db");
    let xs = inputs();
    let (receipt, res) = {
        let (log, writer) = amalgam_server::events::open_sqlite(&db).unwrap();
        let run = start(&fx, Arc::new(log)).await.unwrap();
        run.open_fallback().await.unwrap();
        let mut receipt = Vec::new();
        for i in 0..SITES {
            let r = upload(&run, &fx, i, site_upload(&fx, ROUND, i, &xs[i])).await;
            assert_eq!(r.status, 200, "{:?}", r.problem());
            receipt = r.body;
        }
        run.fallback.close_now(ROUND).await.unwrap();
        committee(&fx, &run, &[0, 1, 2], &[0, 1]).await;
        let res = result(&run, &fx).await;
        run.stop().await;
        // The writer thread ends (and releases the lock) once nothing holds the log.
        tokio::task::spawn_blocking(move || writer.join().unwrap())
            .await
            .unwrap();
        (receipt, res)
    };
    assert_eq!(res.sum, plain_sum(&xs.iter().collect::<Vec<_>>()));
    let (log, _writer) = amalgam_server::events::open_sqlite(&db).unwrap();
    let events = amalgam_server::events::EventStore::replay(&log).unwrap();
    let ups: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Upload)
        .collect();
    assert_eq!(ups.len(), SITES);
    assert!(ups.iter().all(|e| e.shredded && e.body.is_empty()));
    let run = start(&fx, Arc::new(log)).await.unwrap();
    assert_eq!(result(&run, &fx).await, res);
    let again = upload(
        &run,
        &fx,
        SITES - 1,
        site_upload(&fx, ROUND, SITES - 1, &xs[SITES - 1]),
    )
    .await;
    assert_eq!((again.status.as_u16(), again.body), (200, receipt));
    run.stop().await;
}

/// The attacker's move: open masking round X at a fallback id (so that masking round X and
/// fallback round X coexist and share a round id). The masking service refuses every id at or
/// above 2^32 with a specific code, and nothing is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_masking_service_refuses_fallback_round_ids() {
    let fx = Fixture::new(true);
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    for id in [
        ROUND,
        amalgam_net::fallback_api::FALLBACK_ROUND_BASE,
        u64::MAX,
    ] {
        let e = run.service.open_round(id, MODEL.1).await.unwrap_err();
        assert_eq!(e.code, ProblemCode::RoundWrongScheme, "{}", e.detail);
        assert!(run.service.round_status(id).await.is_err());
    }
    // The fallback round opened the only way there is stays the only round with its id.
    assert_eq!(run.open_fallback().await.unwrap(), ROUND);
    assert!(run.service.open_round(ROUND, MODEL.1).await.is_err());
    run.stop().await;
}

/// Masking round 1 opens and aborts with nobody in (no re-run yet).
async fn abort_round_one(run: &Running) {
    run.service.open_round(1, MODEL.1).await.unwrap();
    let _ = run.service.close_phase_now(1).await;
    assert!(run.service.round_status(1).await.unwrap().aborted.is_some());
}

/// The campaign gave the re-run of aborted round 1 up (its committee certificates never
/// came): the give-up is in the fallback log when `give_up_rerun` returns, so neither this
/// process nor a restarted one opens the re-run (which would publish a second model_2); a
/// second give-up logs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_up_rerun_never_opens_also_after_a_restart() {
    let fx = Fixture::new(true);
    let log = MemoryStore::new();
    let run = start(&fx, Arc::new(log.clone())).await.unwrap();
    abort_round_one(&run).await;
    assert!(!run.fallback.rerun_given_up(1).await.unwrap());
    let before = log.events().len();
    assert!(run.fallback.give_up_rerun(1).await.unwrap());
    assert_eq!(log.events().len(), before + 1, "the give-up is not logged");
    assert!(run.fallback.give_up_rerun(1).await.unwrap());
    let logged = log.events().len();
    assert_eq!(logged, before + 1, "a second give-up logged again");
    let e = run.fallback.open_rerun(&run.service, 1).await.unwrap_err();
    assert_eq!(e.code, ProblemCode::RoundWrongPhase);
    assert!(e.detail.contains("gave up"), "{}", e.detail);
    run.stop().await;

    // A restart on the same fallback log: round 1 aborts again in the (fresh) masking
    // service, and its re-run still never opens.
    let run = start(&fx, Arc::new(log.clone())).await.unwrap();
    assert!(run.fallback.rerun_given_up(1).await.unwrap());
    abort_round_one(&run).await;
    let e = run.fallback.open_rerun(&run.service, 1).await.unwrap_err();
    assert_eq!(e.code, ProblemCode::RoundWrongPhase);
    assert!(e.detail.contains("gave up"), "{}", e.detail);
    assert!(run.fallback.with_round(ROUND, |_| ()).await.is_err());
    assert_eq!(
        log.events().len(),
        logged,
        "a refused re-run logged an event"
    );
    run.stop().await;
}

/// A re-run that opened is never given up: its end decides model_2, and nothing is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opened_rerun_is_not_given_up() {
    let fx = Fixture::new(true);
    let log = MemoryStore::new();
    let run = start(&fx, Arc::new(log.clone())).await.unwrap();
    assert_eq!(run.open_fallback().await.unwrap(), ROUND);
    let before = log.events().len();
    assert!(!run.fallback.give_up_rerun(1).await.unwrap());
    assert!(!run.fallback.rerun_given_up(1).await.unwrap());
    assert_eq!(log.events().len(), before);
    run.stop().await;
}

/// A log that holds a give-up and an open of the same re-run, in either order, is refused at
/// start: the service never writes one, so it was tampered with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_with_a_given_up_rerun_that_opened_refuses_the_start() {
    use amalgam_server::events::EventStore;
    use amalgam_server::fallback::give_up;
    let fx = Fixture::new(true);
    // Opened, then a give-up appended behind the service's back.
    let opened = MemoryStore::new();
    let run = start(&fx, Arc::new(opened.clone())).await.unwrap();
    run.open_fallback().await.unwrap();
    run.stop().await;
    opened.append_batch(vec![give_up::event(ROUND)]).unwrap();
    let e = start(&fx, Arc::new(opened)).await.err().expect("refused");
    assert!(e.to_string().contains("given up after it opened"), "{e}");

    // Given up, then an open: the open is moved behind a give-up written first.
    let reordered = MemoryStore::new();
    reordered.append_batch(vec![give_up::event(ROUND)]).unwrap();
    let run = start(&fx, Arc::new(reordered.clone())).await.unwrap();
    abort_round_one(&run).await;
    assert!(run.fallback.open_rerun(&run.service, 1).await.is_err());
    run.stop().await;
    let honest = MemoryStore::new();
    let run = start(&fx, Arc::new(honest.clone())).await.unwrap();
    run.open_fallback().await.unwrap();
    run.stop().await;
    let open = honest
        .events()
        .into_iter()
        .find(|e| e.kind == EventKind::RoundOpen)
        .unwrap();
    reordered
        .append_batch(vec![amalgam_server::events::as_new(&open)])
        .unwrap();
    let e = start(&fx, Arc::new(reordered))
        .await
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains("opened after it was given up"),
        "{e}"
    );

    // A give-up under a masking round id is malformed.
    let masking = MemoryStore::new();
    masking.append_batch(vec![give_up::event(1)]).unwrap();
    let e = start(&fx, Arc::new(masking)).await.err().expect("refused");
    assert!(e.to_string().contains("not a re-run"), "{e}");
}
