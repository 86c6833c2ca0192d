//! Group commit: concurrent appends share commits but each stays all-or-nothing, durable and
//! chained in queue order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};

use amalgam_store::{EventLog, EventLogOptions, StoreError};
use common::{bytes, upload};

#[test]
fn concurrent_appends_are_all_durable_distinct_and_chained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let (h, t) = EventLog::open(&path, EventLogOptions::default()).unwrap();
    let n = 16u32;
    let barrier = Arc::new(Barrier::new(n as usize));
    let threads: Vec<_> = (0..n)
        .map(|site| {
            let (h, barrier) = (h.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                // Large (blob) and small (inline) bodies, two per batch.
                let seqs = h
                    .append_batch(vec![
                        upload(1, 1, site, bytes(site as u8, 200_000)),
                        upload(1, 2, site, bytes(site as u8 + 1, 100)),
                    ])
                    .unwrap();
                (site, seqs)
            })
        })
        .collect();
    let mut all = Vec::new();
    for th in threads {
        let (site, seqs) = th.join().unwrap();
        assert_eq!(seqs.len(), 2);
        assert_eq!(seqs[1], seqs[0] + 1, "a batch's rows are consecutive");
        all.push((seqs[0], site));
    }
    all.sort();
    let firsts: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    assert_eq!(firsts, (0..n as u64).map(|i| 1 + 2 * i).collect::<Vec<_>>());
    drop(h);
    t.join().unwrap();

    // Reopen: the chain verifies at open (and the anchor admits it); every body is back.
    let (h, t) = EventLog::open(&path, EventLogOptions::default()).unwrap();
    let events = h.replay().unwrap();
    assert_eq!(events.len(), 2 * n as usize);
    for (first, site) in all {
        let ev = &events[(first - 1) as usize];
        assert_eq!((ev.sender, ev.phase), (Some(site), 1));
        assert_eq!(ev.body, bytes(site as u8, 200_000));
        assert_eq!(events[first as usize].body, bytes(site as u8 + 1, 100));
    }
    assert_eq!(h.head().unwrap().0, 2 * n as u64);
    drop(h);
    t.join().unwrap();
}

#[test]
fn a_refused_batch_in_a_group_refuses_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let (h, t) = EventLog::open(&path, EventLogOptions::default()).unwrap();
    let n = 12u32;
    let barrier = Arc::new(Barrier::new(n as usize));
    // Every thread tries the same key (round 1, phase 1, site 7) plus one of its own: exactly
    // one batch wins; the others are refused whole (their own key is not stored either).
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (h, barrier) = (h.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                h.append_batch(vec![
                    upload(1, 2, 100 + i, bytes(i as u8, 50)),
                    upload(1, 1, 7, bytes(i as u8, 60_000)),
                ])
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1);
    assert_eq!(won[0].as_ref().unwrap(), &vec![1, 2]);
    for r in results.iter().filter(|r| r.is_err()) {
        assert!(
            matches!(r, Err(StoreError::Duplicate { site: 7, .. })),
            "{r:?}"
        );
    }
    // The log still takes appends after the refusals, chained on the winner.
    assert_eq!(h.append(upload(2, 1, 1, vec![1])).unwrap(), 3);
    drop(h);
    t.join().unwrap();
    let (h, t) = EventLog::open(&path, EventLogOptions::default()).unwrap();
    let events = h.replay().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[1].sender, Some(7));
    drop(h);
    t.join().unwrap();
}
