//! Every refusal is the specific problem and leaves the round byte-for-byte unchanged (the
//! protocol snapshot and the event log are compared before and after each attempt).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use amalgam_net::ProblemCode;
use amalgam_net::api;
use amalgam_net::client::{ApiClient, ClientError};
use amalgam_proto::Phase;
use amalgam_server::events::MemoryStore;
use common::*;

struct Probe {
    snapshot: Vec<u8>,
    events: usize,
}

async fn probe(run: &Running, store: &MemoryStore) -> Probe {
    Probe {
        snapshot: run
            .service
            .with_round(ROUND, |st| st.protocol_snapshot())
            .await
            .unwrap(),
        events: store.events().len(),
    }
}

async fn assert_unchanged(run: &Running, store: &MemoryStore, before: &Probe, what: &str) {
    let after = probe(run, store).await;
    assert!(
        after.snapshot == before.snapshot,
        "{what}: protocol state changed"
    );
    assert_eq!(after.events, before.events, "{what}: event log changed");
}

async fn expect(client: &ApiClient, path: &str, body: Vec<u8>, code: ProblemCode) {
    let r = client.post(path, body).await.unwrap();
    let p = r
        .problem()
        .unwrap_or_else(|| panic!("{path}: status {} without problem", r.status));
    assert_eq!(p.code, code, "{path}: {p}");
    assert_eq!(r.status.as_u16(), code.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_specific_and_change_nothing() {
    let fx = Fixture::new();
    let store = MemoryStore::new();
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let mut s0 = TestSite::new(&fx, &run, 0);
    let mut s1 = TestSite::new(&fx, &run, 1);
    let adv0 = s0.begin(&fx);
    let adv1 = s1.begin(&fx);
    let path = api::masking_path(ROUND, Phase::AdvertiseKeys).unwrap();
    // Site 1's advertisement is accepted first, so refusals are checked against a non-empty state.
    assert_eq!(
        s1.post(Phase::AdvertiseKeys, adv1.clone()).await.status,
        200
    );
    let before = probe(&run, &store).await;

    // No client certificate: the handshake refuses it, so it reads nothing, status included.
    for p in [path.as_str(), api::STATUS, api::TIME] {
        match run.anonymous().post(p, adv0.clone()).await {
            Err(ClientError::Transport(_)) => {}
            other => panic!("anonymous {p} got {other:?}"),
        }
    }
    match run.anonymous().get(api::STATUS).await {
        Err(ClientError::Transport(_)) => {}
        other => panic!("anonymous status got {other:?}"),
    }
    assert_unchanged(&run, &store, &before, "anonymous").await;

    // A key that is not in the manifest fails the TLS handshake: no request is read.
    let outsider = run.client_for(&fx.outsider);
    match outsider.post(&path, adv0.clone()).await {
        Err(ClientError::Transport(_)) => {}
        other => panic!("outsider got {other:?}"),
    }
    assert_unchanged(&run, &store, &before, "outsider").await;

    // Oversize (declared length above the phase bound), malformed, forged signature.
    let mut big = adv0.clone();
    big.resize(adv0.len() + 1, 0);
    expect(&s0.client, &path, big, ProblemCode::BodyTooLarge).await;
    expect(
        &s0.client,
        &path,
        vec![0x41; 10],
        ProblemCode::BodyMalformed,
    )
    .await;
    let mut forged = adv0.clone();
    *forged.last_mut().unwrap() ^= 1;
    expect(&s0.client, &path, forged, ProblemCode::ProtocolRefused).await;
    assert_unchanged(&run, &store, &before, "size/format/signature").await;

    // Wrong phase (a valid message on another phase's route), unknown round.
    let share_path = api::masking_path(ROUND, Phase::ShareKeys).unwrap();
    expect(
        &s0.client,
        &share_path,
        adv0.clone(),
        ProblemCode::RoundWrongPhase,
    )
    .await;
    let other_round = api::masking_path(ROUND + 1, Phase::AdvertiseKeys).unwrap();
    expect(
        &s0.client,
        &other_round,
        adv0.clone(),
        ProblemCode::RoundUnknown,
    )
    .await;
    assert_unchanged(&run, &store, &before, "phase/round").await;

    // Site 0 relaying site 1's message (the sender field is not the authenticated site), and
    // site 1's own different second advertisement.
    expect(
        &s0.client,
        &path,
        adv1.clone(),
        ProblemCode::ProtocolRefused,
    )
    .await;
    let mut again = TestSite::new(&fx, &run, 1);
    let adv1_other = {
        // A fresh instance with another RNG advertises other keys.
        again.reseed([55; 32]);
        let b = again.begin(&fx);
        assert_ne!(b, adv1);
        b
    };
    expect(&s1.client, &path, adv1_other, ProblemCode::PeerDuplicate).await;
    assert_unchanged(&run, &store, &before, "relay/duplicate").await;

    // The identical re-send gets the original response and changes nothing.
    let first = s1.post(Phase::AdvertiseKeys, adv1.clone()).await;
    assert_eq!(first.status, 200);
    let receipt: api::UploadReceipt = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(receipt.phase, "advertise-keys");
    assert_unchanged(&run, &store, &before, "identical retry").await;

    // A message for another round id, on this round's route.
    let mut log = amalgam_proto::site::RoundLog::new();
    let mut r2 = amalgam_proto::Site::with_context_digest(
        fx.params,
        fx.consortium.manifest.clone(),
        fx.context(),
        ROUND + 1,
        fx.sites[0].clone(),
        amalgam_proto::sim::sim_timeout(),
        &mut log,
    )
    .unwrap();
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([77; 32]);
    let out = r2
        .start(
            fx.inputs[0].clone(),
            amalgam_proto::sim::sim_time(Phase::AdvertiseKeys),
            &mut rng,
        )
        .unwrap();
    let (up, _) = amalgam_proto::sim::persist_and_release(&r2, out).unwrap();
    let wrong_round = amalgam_proto::codec::Encode::to_bytes(&up);
    expect(&s0.client, &path, wrong_round, ProblemCode::ProtocolRefused).await;
    assert_unchanged(&run, &store, &before, "wrong round id").await;

    // Download before the phase closed: 425 with Retry-After, and the deadline.
    let r = s0.client.get(&path).await.unwrap();
    assert_eq!(r.status.as_u16(), 425);
    assert_eq!(r.retry_after, Some(1));
    assert!(r.deadline_ms.is_some());

    // Finally the genuine upload is accepted.
    assert_eq!(s0.post(Phase::AdvertiseKeys, adv0).await.status, 200);
    assert_eq!(store.events().len(), before.events + 1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_retry_after_the_phase_closed_gets_the_original_response() {
    let fx = Fixture::new();
    let store = MemoryStore::new();
    let run = start(&fx, Arc::new(store.clone())).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let mut sites: Vec<TestSite> = (0..5).map(|i| TestSite::new(&fx, &run, i)).collect();
    let mut first = Vec::new();
    for s in sites.iter_mut() {
        let b = s.begin(&fx);
        let r = s.post(Phase::AdvertiseKeys, b.clone()).await;
        assert_eq!(r.status, 200);
        first.push((b, r.body));
    }
    // Everyone answered: the phase closed. A re-send (a lost response) is still answered.
    let phase = run
        .service
        .with_round(ROUND, |st| st.phase())
        .await
        .unwrap();
    assert_eq!(phase, Phase::ShareKeys);
    let n = store.events().len();
    for (s, (b, body)) in sites.iter().zip(first) {
        let r = s.post(Phase::AdvertiseKeys, b).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body);
    }
    assert_eq!(store.events().len(), n);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_say_no_secret() {
    let fx = Fixture::new();
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let s0 = TestSite::new(&fx, &run, 0);
    let r = s0.client.get(api::STATUS).await.unwrap();
    assert_eq!(r.status, 200);
    let st: api::ServiceStatus = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(st.rounds.len(), 1);
    assert_eq!(st.rounds[0].phase, "advertise-keys");
    assert_eq!(st.rounds[0].expected, 5);
    assert!(st.rounds[0].deadline_ms.is_some());
    // A refusal is counted by reason, never by site (no site labels by default).
    expect(
        &s0.client,
        &api::masking_path(ROUND, Phase::AdvertiseKeys).unwrap(),
        vec![1],
        ProblemCode::BodyMalformed,
    )
    .await;
    let m = run.service.metrics().encode();
    assert!(m.contains("reason=\"body.malformed\""), "{m}");
    assert!(!m.contains("site="), "{m}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_an_aggregator_it_does_not_pin() {
    let fx = Fixture::new();
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    // The site pins another aggregator identity key (an interception proxy's view).
    let mut pin = fx.pin();
    pin.identity = fx.outsider.verifying_key();
    let id = amalgam_net::tls::member_identity(&amalgam_net::tls::ed25519_pkcs8_from_seed(
        &fx.sites[0].to_bytes(),
    ))
    .unwrap();
    let client = ApiClient::new(
        &run.base(),
        amalgam_net::tls::client_config(&id, pin).unwrap(),
        amalgam_net::client::RetryPolicy::default(),
    )
    .unwrap();
    match client.get(api::TIME).await {
        Err(ClientError::PinMismatch(amalgam_net::PinError::BadSignature)) => {}
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
    run.stop().await;
}
