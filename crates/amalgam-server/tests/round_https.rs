//! Whole masking rounds over real HTTPS with five sites: the published sum equals the
//! plaintext sum of exactly the contributors, with and without dropouts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use amalgam_proto::Phase;
use amalgam_server::events::MemoryStore;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sites_no_dropout_sum_is_exact() {
    let fx = Fixture::new();
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let fresh = run
        .service
        .with_round(ROUND, |st| st.protocol_snapshot())
        .await
        .unwrap();
    let mut sites: Vec<TestSite> = (0..5).map(|i| TestSite::new(&fx, &run, i)).collect();
    let (result, _) = drive(&fx, &run, &mut sites, &[None; 5], Phase::AdvertiseKeys).await;
    assert_eq!(result.contributors, vec![0, 1, 2, 3, 4]);
    assert_eq!(result.sum, plaintext(&fx, &result.contributors));
    assert!(result.dropped.is_empty());
    // Shredded: no masked input, key share or unmask share is left in memory.
    let (shredded, snapshot, held) = run
        .service
        .with_round(ROUND, |st| {
            (st.is_shredded(), st.protocol_snapshot(), st.held_bodies())
        })
        .await
        .unwrap();
    assert!(shredded);
    assert!(snapshot == fresh, "the protocol state outlives the shred");
    assert_eq!(held, 0);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_sites_two_dropouts_sum_is_exact() {
    // Five sites tolerate one dropout (t = 4 is the least safe threshold for c = 1); two
    // dropouts need n = 7, t = 5 (c = 2, f = 2).
    let fx = Fixture::with(7, 5);
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let mut sites: Vec<TestSite> = (0..7).map(|i| TestSite::new(&fx, &run, i)).collect();
    // Site 1 vanishes before its masked input (not in the sum); site 3 after it (its input
    // counts, its self-mask is recovered from shares).
    let mut drops = [None; 7];
    drops[1] = Some(Phase::MaskedInput);
    drops[3] = Some(Phase::Unmasking);
    let (result, _) = drive(&fx, &run, &mut sites, &drops, Phase::AdvertiseKeys).await;
    assert_eq!(result.contributors, vec![0, 2, 3, 4, 5, 6]);
    assert_eq!(result.dropped, vec![1]);
    assert_eq!(result.sum, plaintext(&fx, &result.contributors));
    assert_ne!(result.sum, plaintext(&fx, &[0, 1, 2, 3, 4, 5, 6]));
    let m = run.service.metrics().encode();
    assert!(
        m.contains("amalgam_phase_survivors{phase=\"share-keys\"} 7"),
        "{m}"
    );
    assert!(
        m.contains("amalgam_phase_survivors{phase=\"masked-input\"} 6"),
        "{m}"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sites_one_dropout_sum_is_exact() {
    let fx = Fixture::new();
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let mut sites: Vec<TestSite> = (0..5).map(|i| TestSite::new(&fx, &run, i)).collect();
    let drops = [None, None, Some(Phase::MaskedInput), None, None];
    let (result, _) = drive(&fx, &run, &mut sites, &drops, Phase::AdvertiseKeys).await;
    assert_eq!(result.contributors, vec![0, 1, 3, 4]);
    assert_eq!(result.sum, plaintext(&fx, &result.contributors));
    run.stop().await;
}
