//! Chained appends (`queue_chained`): their callers act before the commit, so a lost one
//! poisons the log — every later append is refused until it is reopened — while a refused
//! plain append stays the caller's own business. Nothing after a lost chained append commits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use amalgam_store::{EventLog, EventLogHandle, EventLogOptions, StoreError};
use common::{bytes, download, upload};

type Open = (EventLogHandle, std::thread::JoinHandle<()>);

fn open(path: &Path) -> Open {
    EventLog::open(path, EventLogOptions::default()).unwrap()
}

fn close(h: Open) {
    drop(h.0);
    h.1.join().unwrap();
}

fn wait(
    rx: tokio::sync::oneshot::Receiver<amalgam_store::Result<Vec<u64>>>,
) -> amalgam_store::Result<Vec<u64>> {
    rx.blocking_recv().unwrap()
}

#[test]
fn a_lost_chained_append_refuses_every_later_one_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let h = open(&path);
    // Queued back to back (they may share one group commit or not: the outcome is the same).
    let first =
        h.0.queue_chained(vec![upload(1, 1, 1, bytes(1, 300_000))])
            .unwrap();
    let lost =
        h.0.queue_chained(vec![upload(1, 1, 1, bytes(2, 10))])
            .unwrap();
    let after =
        h.0.queue_chained(vec![upload(1, 1, 2, bytes(3, 300_000))])
            .unwrap();
    assert_eq!(wait(first).unwrap(), vec![1]);
    assert!(matches!(
        wait(lost),
        Err(StoreError::Duplicate { site: 1, .. })
    ));
    assert!(matches!(wait(after), Err(StoreError::Poisoned { .. })));
    // Plain appends and later chained ones are refused too, and nothing was written.
    assert!(matches!(
        h.0.append_batch(vec![upload(1, 2, 3, bytes(4, 10))]),
        Err(StoreError::Poisoned { .. })
    ));
    let later =
        h.0.queue_chained(vec![download(1, 1, 2, bytes(5, 10))])
            .unwrap();
    assert!(matches!(wait(later), Err(StoreError::Poisoned { .. })));
    assert_eq!(h.0.head().unwrap().0, 1);
    assert_eq!(h.0.replay().unwrap().len(), 1);
    close(h);

    // Reopened: the log holds the one committed row and takes appends again.
    let h = open(&path);
    let events = h.0.replay().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body, bytes(1, 300_000));
    assert_eq!(
        h.0.append_batch(vec![upload(1, 1, 2, bytes(3, 300_000))])
            .unwrap(),
        vec![2]
    );
    close(h);
}

#[test]
fn a_refused_plain_append_does_not_poison() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let h = open(&path);
    h.0.append_batch(vec![upload(1, 1, 1, bytes(1, 10))])
        .unwrap();
    let dup =
        h.0.queue_append(vec![upload(1, 1, 1, bytes(2, 10))])
            .unwrap();
    assert!(matches!(wait(dup), Err(StoreError::Duplicate { .. })));
    let next =
        h.0.queue_chained(vec![upload(1, 1, 2, bytes(3, 200_000))])
            .unwrap();
    assert_eq!(wait(next).unwrap(), vec![2]);
    close(h);
    let h = open(&path);
    assert_eq!(h.0.replay().unwrap().len(), 2);
    close(h);
}

#[test]
fn a_chained_append_refused_before_writing_poisons_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let h = open(&path);
    let max = EventLogOptions::default().max_body;
    let too_large =
        h.0.queue_chained(vec![upload(1, 1, 1, vec![0; max + 1])])
            .unwrap();
    assert!(matches!(wait(too_large), Err(StoreError::TooLarge { .. })));
    assert!(matches!(
        h.0.append_batch(vec![upload(1, 1, 2, bytes(1, 10))]),
        Err(StoreError::Poisoned { .. })
    ));
    assert_eq!(h.0.head().unwrap().0, 0);
    close(h);
}
