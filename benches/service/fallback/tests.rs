//! The load generator's fallback path at a small size: the decoded sum is the plaintext sum
//! after a restart between the uploads and the committee, a damaged upload fails the run, and
//! the bench-only view above 255 sites authenticates exactly the deployment's members.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use amalgam_proto::SiteId;
use amalgam_server::consortium::MemberRole;
use amalgam_server::events::MemoryStore;

use super::{FbDeployment, MEMBERS, drive, server};
use crate::service::os_seed;

fn small() -> (Arc<FbDeployment>, drive::Precomputed) {
    let dep = Arc::new(FbDeployment::new(5, 300, 16, os_seed()));
    let pre = drive::precompute(&dep, &os_seed(), 2);
    (dep, pre)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_sum_is_the_plaintext_sum_across_a_restart() {
    let (dep, pre) = small();
    assert!(pre.sum.iter().any(|&v| v != 0));
    let store = MemoryStore::new();
    let first = server::start(&dep, Arc::new(store.clone())).await.unwrap();
    assert!(!first.has_round().await);
    first.open().await.unwrap();
    let order = drive::shuffled(dep.n(), &os_seed());
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..dep.n()).collect::<Vec<_>>(), "a permutation");
    drive::upload_all(&dep, &first.base(), pre.uploads, &order, 2)
        .await
        .unwrap();
    first.stop().await;
    // The restarted aggregator replays the open round and the committee finishes there.
    let second = server::start(&dep, Arc::new(store.clone())).await.unwrap();
    assert!(second.has_round().await);
    drive::committee(&dep, &second.base()).await.unwrap();
    let res = drive::result(&dep, &second.base()).await.unwrap();
    assert_eq!(res.sum, pre.sum);
    assert_eq!(res.contributors, vec![0, 1, 2, 3, 4]);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_upload_fails_the_run() {
    let (dep, mut pre) = small();
    let run = server::start(&dep, Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    run.open().await.unwrap();
    let last = pre.uploads[3].len() - 1;
    pre.uploads[3][last] ^= 1;
    let err = drive::upload_all(&dep, &run.base(), pre.uploads, &[0, 1, 2, 3, 4], 1)
        .await
        .unwrap_err();
    assert!(err.starts_with("site 3:"), "{err}");
    // Nothing closed the cohort: four uploads are in, the statement is not.
    let closed = run
        .fallback
        .with_round(super::ROUND, |s| s.is_closed())
        .await
        .unwrap();
    assert!(!closed);
    run.stop().await;
}

#[test]
fn the_view_above_255_sites_knows_exactly_the_members() {
    let dep = FbDeployment::new(300, 16, 16, os_seed());
    let v = &dep.view;
    for (i, k) in dep.sites.iter().enumerate() {
        assert_eq!(
            v.role_of(k.verifying_key().as_bytes()),
            Some(MemberRole::Site(SiteId(i as u16)))
        );
    }
    for j in 0..MEMBERS {
        let k = dep.member_key(j).verifying_key();
        assert_eq!(v.role_of(k.as_bytes()), Some(MemberRole::Decryptor));
    }
    assert_eq!(v.role_of(dep.agg.verifying_key().as_bytes()), None);
    let other = FbDeployment::new(300, 16, 16, os_seed());
    assert_eq!(v.role_of(other.sites[0].verifying_key().as_bytes()), None);
    assert_eq!(v.member_keys().len(), 300 + MEMBERS);
    assert_eq!(dep.setup.sites().len(), 300);
}
