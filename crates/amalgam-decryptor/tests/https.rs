//! Committee members as outbound mTLS clients of the real in-process aggregator: a fallback
//! round whose decoded sum equals the plaintext sum, one member offline, seeds shredded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::needless_range_loop)]

// The fallback fixture (consortium, committee, in-process aggregator over HTTPS) is the
// aggregator tests' own, shared rather than copied.
#[path = "../../amalgam-server/tests/fb/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use amalgam_decryptor::{DecryptorAgent, Member, Outcome, Patience};
use amalgam_net::fallback_api::{FallbackResult, fallback_path};
use amalgam_server::events::MemoryStore;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_complete_a_round_over_https_with_one_offline() {
    let fx = Fixture::new(true);
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    run.open_fallback().await.unwrap();
    let xs = inputs();
    for i in 0..SITES {
        let r = run
            .client_for(&fx.sites[i])
            .post(
                &fallback_path(ROUND, "upload"),
                site_upload(&fx, ROUND, i, &xs[i]),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.problem());
    }
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = Vec::new();
    // Member 3 is offline; Q = 3.
    for j in 0..3 {
        let (a, b) = fx.members[j];
        let member = Member::open(&dir.path().join(format!("m{j}.db")), j, a, b).unwrap();
        let sites = fx.sites.clone();
        let members = fx.members.clone();
        let setups: amalgam_decryptor::SetupFn = Arc::new(move |r| {
            let f = Fixture {
                sites: sites.clone(),
                members: members.clone(),
                ..Fixture::new(true)
            };
            Ok(f.setup(r))
        });
        let mut agent = DecryptorAgent::new(
            member,
            run.client_for(&fx.member_key(j)),
            setups,
            true,
            Patience {
                long_poll: Duration::from_secs(10),
                poll: Duration::from_millis(50),
                max_polls: 400,
            },
        );
        tasks.push(tokio::spawn(async move {
            let out = agent.serve_round(ROUND).await;
            let shredded = agent.member_mut().is_shredded(ROUND);
            (out, shredded)
        }));
    }
    // The members wait for the statement; the cohort closes now (the deadline's close).
    run.fallback.close_now(ROUND).await.unwrap();
    let mut released = 0;
    for t in tasks {
        let (out, shredded) = t.await.unwrap();
        let cohort = vec![0, 1, 2, 3, 4];
        match out.unwrap() {
            Outcome::Released { cohort: c } => {
                assert_eq!(c, cohort);
                released += 1;
            }
            // Two releases (t_c = 2) cover every piece; a third may arrive after the end.
            Outcome::FinishedWithout { cohort: c } => assert_eq!(c, cohort),
        }
        assert!(shredded, "seeds shredded once the round is done");
    }
    assert!(released >= 2);
    let r = run
        .client_for(&fx.sites[2])
        .get(&(fallback_path(ROUND, "result") + "?wait=5"))
        .await
        .unwrap();
    let res: FallbackResult = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(res.sum, plain_sum(&xs.iter().collect::<Vec<_>>()));
    run.stop().await;
}

/// A member that persisted its statement and sent its signature, then died before releasing,
/// restarts on the same database: it re-sends the identical signature (the aggregator answers
/// 200 with the original receipt, not 409) and completes the round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_restarted_after_signing_resends_the_same_signature_and_completes() {
    use amalgam_he::{CohortStatement, UploadView};
    use amalgam_net::fallback_api::decode_frames;
    use amalgam_proto::codec::{Decode, Encode};

    let fx = Fixture::new(true);
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    run.open_fallback().await.unwrap();
    let xs = inputs();
    for i in 0..3 {
        run.client_for(&fx.sites[i])
            .post(
                &fallback_path(ROUND, "upload"),
                site_upload(&fx, ROUND, i, &xs[i]),
            )
            .await
            .unwrap();
    }
    run.fallback.close_now(ROUND).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m0.db");
    let (a, b) = fx.members[0];
    let client = run.client_for(&fx.member_key(0));
    // First life: sign and send, then "crash" (drop everything) before the release.
    let first_receipt = {
        let mut m = Member::open(&db, 0, a, b).unwrap();
        let st = client
            .get(&fallback_path(ROUND, "statement"))
            .await
            .unwrap();
        let statement = CohortStatement::from_bytes(&st.body, &()).unwrap();
        let v = client.get(&fallback_path(ROUND, "views")).await.unwrap();
        let setup = fx.setup(ROUND);
        let views: Vec<UploadView> = decode_frames(&v.body, 100, 1 << 20)
            .unwrap()
            .iter()
            .map(|f| UploadView::from_bytes(f, &setup, 0).unwrap())
            .collect();
        let signed = m.sign(&setup, &views, &statement).unwrap();
        let r = client
            .post(
                &fallback_path(ROUND, "signatures"),
                signed.signature.to_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        (r.body, signed.signature.to_bytes())
    };
    let (first_receipt, first_sig) = first_receipt;
    // Two other members sign through their agents; then member 0's second life.
    let mut tasks = Vec::new();
    for j in [0usize, 1, 2] {
        let (a, b) = fx.members[j];
        let path = if j == 0 {
            db.clone()
        } else {
            dir.path().join(format!("m{j}.db"))
        };
        let member = Member::open(&path, j, a, b).unwrap();
        let sites = fx.sites.clone();
        let members = fx.members.clone();
        let setups: amalgam_decryptor::SetupFn = Arc::new(move |r| {
            let f = Fixture {
                sites: sites.clone(),
                members: members.clone(),
                ..Fixture::new(true)
            };
            Ok(f.setup(r))
        });
        let mut agent = DecryptorAgent::new(
            member,
            run.client_for(&fx.member_key(j)),
            setups,
            true,
            Patience {
                long_poll: Duration::from_secs(10),
                poll: Duration::from_millis(50),
                max_polls: 400,
            },
        );
        tasks.push(tokio::spawn(async move { agent.serve_round(ROUND).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Member 0's re-sent signature was the identical one: the stored receipt is unchanged and
    // a re-post of the first signature bytes still gets it.
    let sigs = client
        .get(&fallback_path(ROUND, "signatures"))
        .await
        .unwrap();
    let frames = decode_frames(&sigs.body, 8, 69).unwrap();
    assert_eq!(frames.len(), 3);
    // The aggregator holds member 0's first signature bytes: the second life sent the same.
    assert!(frames.contains(&first_sig));
    let again = client
        .post(&fallback_path(ROUND, "signatures"), first_sig.clone())
        .await
        .unwrap();
    assert_eq!(again.status, 200, "{:?}", again.problem());
    assert_eq!(
        again.body, first_receipt,
        "the original receipt, byte for byte"
    );
    let r = client
        .get(&(fallback_path(ROUND, "result") + "?wait=5"))
        .await
        .unwrap();
    let res: FallbackResult = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(res.sum, plain_sum(&xs[..3].iter().collect::<Vec<_>>()));
    run.stop().await;
}

/// A member whose own manifest forbids the fallback serves no round, even one the aggregator
/// opened; and a masking round id is refused before anything is fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_checks_the_policy_and_the_id_range_itself() {
    let fx = Fixture::new(true);
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    run.open_fallback().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (allowed, round) in [(false, ROUND), (true, 1)] {
        let (a, b) = fx.members[0];
        let member = Member::open(&dir.path().join(format!("{allowed}.db")), 0, a, b).unwrap();
        let setups: amalgam_decryptor::SetupFn = Arc::new(|r| Ok(Fixture::new(true).setup(r)));
        let mut agent = DecryptorAgent::new(
            member,
            run.client_for(&fx.member_key(0)),
            setups,
            allowed,
            Patience::default(),
        );
        let e = agent.serve_round(round).await.unwrap_err();
        if allowed {
            assert!(
                matches!(
                    e,
                    amalgam_decryptor::DecryptorError::NotAFallbackRound { round: 1 }
                ),
                "{e}"
            );
        } else {
            assert!(
                matches!(e, amalgam_decryptor::DecryptorError::PolicyForbids { .. }),
                "{e}"
            );
        }
        assert_eq!(agent.member_mut().recorded(round).unwrap(), None);
    }
    run.stop().await;
}

/// The aggregator withholds the other signatures: the member gives up (no quorum within its
/// patience) with an error, and its seeds are shredded all the same — never left on disk next
/// to their key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_gives_up_shreds_its_seeds() {
    let fx = Fixture::new(true);
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    run.open_fallback().await.unwrap();
    let xs = inputs();
    for i in 0..SITES {
        let r = run
            .client_for(&fx.sites[i])
            .post(
                &fallback_path(ROUND, "upload"),
                site_upload(&fx, ROUND, i, &xs[i]),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.problem());
    }
    run.fallback.close_now(ROUND).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = fx.members[0];
    let member = Member::open(&dir.path().join("m0.db"), 0, a, b).unwrap();
    let sites = fx.sites.clone();
    let members = fx.members.clone();
    let setups: amalgam_decryptor::SetupFn = Arc::new(move |r| {
        let f = Fixture {
            sites: sites.clone(),
            members: members.clone(),
            ..Fixture::new(true)
        };
        Ok(f.setup(r))
    });
    let mut agent = DecryptorAgent::new(
        member,
        run.client_for(&fx.member_key(0)),
        setups,
        true,
        Patience {
            long_poll: Duration::from_secs(5),
            poll: Duration::from_millis(1),
            max_polls: 0,
        },
    );
    // Alone, member 0 never sees Q = 3 signatures.
    let e = agent.serve_round(ROUND).await.unwrap_err();
    assert!(
        matches!(
            e,
            amalgam_decryptor::DecryptorError::Protocol(amalgam_he::HeError::NoQuorum { .. })
        ),
        "{e}"
    );
    assert!(agent.member_mut().recorded(ROUND).unwrap().is_some());
    assert!(
        agent.member_mut().is_shredded(ROUND),
        "seeds shredded on failure"
    );
    run.stop().await;
}
