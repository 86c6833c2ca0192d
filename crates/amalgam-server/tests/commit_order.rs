//! Commit ordering with the round's lock released before the commit: a response, a download,
//! a status, an identical re-send's stored answer — nothing leaves before the transaction
//! holding what it shows committed; the uploads of a phase queue together (one group
//! commit); a lost append fails the service closed (503 to everything, nothing uncommitted
//! served) and a restart continues from the log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use amalgam_net::ProblemCode;
use amalgam_net::api;
use amalgam_net::client::{ApiClient, ApiResponse};
use amalgam_proto::Phase;
use amalgam_server::events::{EventKind, MemoryStore};
use common::*;

/// How long a request is given to (wrongly) answer while its commit is held.
const HELD: Duration = Duration::from_millis(300);

fn spawn_post(c: &ApiClient, phase: Phase, b: Vec<u8>) -> tokio::task::JoinHandle<ApiResponse> {
    let c = c.clone();
    let path = api::masking_path(ROUND, phase).unwrap();
    tokio::spawn(async move { c.post(&path, b).await.unwrap() })
}

fn spawn_get(c: &ApiClient, path: String) -> tokio::task::JoinHandle<ApiResponse> {
    let c = c.clone();
    tokio::spawn(async move { c.get(&path).await.unwrap() })
}

async fn until_held(store: &MemoryStore, n: usize) {
    for _ in 0..500 {
        if store.held_commits() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} appends held, {n} expected", store.held_commits());
}

fn status_path() -> String {
    format!("/v1/rounds/{ROUND}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaves_before_its_commit_and_a_phase_shares_one_commit_queue() {
    let fx = Fixture::new();
    let store = MemoryStore::new();
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let mut sites: Vec<TestSite> = (0..5).map(|i| TestSite::new(&fx, &run, i)).collect();
    let bodies: Vec<Vec<u8>> = sites.iter_mut().map(|s| s.begin(&fx)).collect();
    let opened = store.events().len();
    assert_eq!(opened, 1);

    store.hold_commits(true);
    // Site 0's upload is accepted in memory and queued, but not committed: no answer.
    let first = spawn_post(&sites[0].client, Phase::AdvertiseKeys, bodies[0].clone());
    until_held(&store, 1).await;
    tokio::time::sleep(HELD).await;
    assert!(
        !first.is_finished(),
        "an upload was answered before its commit"
    );
    // Neither an identical re-send (its stored answer) nor a different one (a refusal
    // that shows the first was accepted) nor a status showing it as responded leaves.
    let resend = spawn_post(&sites[0].client, Phase::AdvertiseKeys, bodies[0].clone());
    let conflicting = spawn_post(&sites[0].client, Phase::AdvertiseKeys, bodies[1].clone());
    let status = spawn_get(&sites[1].client, status_path());
    // The other four upload while site 0's commit is still held: the round's lock is free,
    // so all five are queued together (one group commit in the SQLite log). The last one
    // closes the phase in memory; its downloads are in its append.
    let rest: Vec<_> = (1..5)
        .map(|i| spawn_post(&sites[i].client, Phase::AdvertiseKeys, bodies[i].clone()))
        .collect();
    until_held(&store, 5).await;
    let download = spawn_get(
        &sites[2].client,
        format!(
            "{}?wait=10",
            api::masking_path(ROUND, Phase::AdvertiseKeys).unwrap()
        ),
    );
    tokio::time::sleep(HELD).await;
    for (what, t) in [
        ("the re-send", &resend),
        ("the conflicting upload", &conflicting),
        ("the status", &status),
        ("the download", &download),
    ] {
        assert!(!t.is_finished(), "{what} left before the commit it shows");
    }
    assert!(rest.iter().all(|t| !t.is_finished()));
    assert!(!first.is_finished());
    assert_eq!(store.events().len(), opened, "nothing is committed yet");
    assert_eq!(store.held_commits(), 5);

    store.hold_commits(false);
    assert_eq!(first.await.unwrap().status, 200);
    let resent = resend.await.unwrap();
    assert_eq!(resent.status, 200);
    assert_eq!(
        conflicting.await.unwrap().problem().unwrap().code,
        ProblemCode::PeerDuplicate
    );
    for t in rest {
        assert_eq!(t.await.unwrap().status, 200);
    }
    let status = status.await.unwrap();
    assert_eq!(status.status, 200);
    let served = download.await.unwrap();
    assert_eq!(served.status, 200);
    // What was served is what the log holds, byte for byte.
    let events = store.events();
    let stored = events
        .iter()
        .find(|e| {
            e.kind == EventKind::Download
                && e.sender == Some(2)
                && e.phase == Phase::AdvertiseKeys.code()
        })
        .expect("site 2's download is in the log");
    assert_eq!(stored.body, served.body);
    let uploads = events
        .iter()
        .filter(|e| e.kind == EventKind::Upload)
        .count();
    assert_eq!(uploads, 5);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::PhaseClose)
            .count(),
        1
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_append_fails_the_service_closed_and_a_restart_continues_from_the_log() {
    let fx = Fixture::new();
    let store = MemoryStore::new();
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let mut sites: Vec<TestSite> = (0..5).map(|i| TestSite::new(&fx, &run, i)).collect();
    let bodies: Vec<Vec<u8>> = sites.iter_mut().map(|s| s.begin(&fx)).collect();
    // Site 0 is committed normally.
    assert_eq!(
        sites[0]
            .post(Phase::AdvertiseKeys, bodies[0].clone())
            .await
            .status,
        200
    );

    store.hold_commits(true);
    let lost = spawn_post(&sites[1].client, Phase::AdvertiseKeys, bodies[1].clone());
    until_held(&store, 1).await;
    // A reader of the state that includes the held upload waits for it.
    let status = spawn_get(&sites[2].client, status_path());
    tokio::time::sleep(HELD).await;
    assert!(!status.is_finished());
    assert_eq!(store.lose_held_commits(), 1);

    // The lost upload is refused (nothing was accepted); the waiting reader gets 503, not
    // the state it saw.
    let r = lost.await.unwrap();
    assert_eq!(r.status, 500, "{:?}", r.problem());
    let s = status.await.unwrap();
    assert_eq!(s.status, 503, "{:?}", s.problem());
    assert_eq!(s.problem().unwrap().code, ProblemCode::ServerBusy);
    // From now on everything is 503: uploads, re-sends, status, downloads, the result.
    for r in [
        sites[2].post(Phase::AdvertiseKeys, bodies[2].clone()).await,
        sites[0].post(Phase::AdvertiseKeys, bodies[0].clone()).await,
        sites[0].client.get(&status_path()).await.unwrap(),
        sites[0].client.get(api::STATUS).await.unwrap(),
        sites[0]
            .client
            .get(&api::masking_path(ROUND, Phase::AdvertiseKeys).unwrap())
            .await
            .unwrap(),
        sites[0].client.get(&api::result_path(ROUND)).await.unwrap(),
    ] {
        assert_eq!(r.status, 503, "{:?}", r.problem());
    }
    let uploads = |store: &MemoryStore| {
        store
            .events()
            .iter()
            .filter(|e| e.kind == EventKind::Upload)
            .map(|e| e.sender)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        uploads(&store),
        vec![Some(0)],
        "only the committed upload is stored"
    );
    run.stop().await;

    // A restart replays the log: site 0 is in (its re-send gets its original answer), site
    // 1's lost upload is not, and the round completes with everyone.
    store.hold_commits(false);
    drop(store.claim().unwrap());
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    for s in sites.iter_mut() {
        s.client = run.client_for(&fx.sites[s.index]);
    }
    let again = sites[0].post(Phase::AdvertiseKeys, bodies[0].clone()).await;
    assert_eq!(again.status, 200);
    for (s, b) in sites.iter_mut().zip(&bodies).skip(1) {
        s.pending = Some(b.clone());
    }
    sites[0].pending = None;
    let (result, _) = drive_from_advertise(&fx, &run, &mut sites).await;
    assert_eq!(result.sum, plaintext(&fx, &[0, 1, 2, 3, 4]));
    assert_eq!(uploads(&store).len(), 5 * PHASES.len());
    run.stop().await;
}

/// Finishes the round from AdvertiseKeys, site 0's upload of it already accepted.
async fn drive_from_advertise(
    fx: &Fixture,
    run: &Running,
    sites: &mut [TestSite],
) -> (api::RoundResult, Vec<(Phase, usize, Vec<u8>)>) {
    for s in sites.iter_mut().skip(1) {
        let b = s.pending.take().unwrap();
        assert_eq!(s.post(Phase::AdvertiseKeys, b).await.status, 200);
    }
    for s in sites.iter_mut() {
        let r = s.fetch(Phase::AdvertiseKeys).await;
        assert_eq!(r.status, 200, "{:?}", r.problem());
        s.handle(&r.body, Phase::AdvertiseKeys);
    }
    drive(fx, run, sites, &[None; 5], Phase::ShareKeys).await
}
