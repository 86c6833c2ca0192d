//! Event log: durability settings, round trips, idempotency keys, locking, tampering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use amalgam_store::{EventKind, EventLog, EventLogHandle, EventLogOptions, StoreError, sha256};
use common::{bytes, download, find, public, upload};

fn open(path: &Path) -> (EventLogHandle, std::thread::JoinHandle<()>) {
    EventLog::open(path, EventLogOptions::default()).unwrap()
}

/// Closes the log (writer thread ends, SQLite checkpoints the WAL into the main file).
fn close(h: (EventLogHandle, std::thread::JoinHandle<()>)) {
    drop(h.0);
    h.1.join().unwrap();
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("events.db")
}

#[test]
fn opened_log_runs_wal_synchronous_full_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(&db(&dir));
    let d = h.0.durability().unwrap();
    assert_eq!(d.journal_mode.to_ascii_lowercase(), "wal");
    assert_eq!(d.synchronous, 2, "synchronous must be FULL");
    assert!(d.foreign_keys);
    close(h);
}

#[test]
fn appends_replay_in_order_with_bodies_and_responses() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let h = open(&path);
    let big = bytes(7, 300_000);
    let batch = vec![
        public(1, EventKind::RoundOpen, 0, b"open".to_vec()),
        upload(1, 1, 10, b"small upload".to_vec()),
        upload(1, 1, 11, big.clone()),
        public(1, EventKind::PhaseClose, 1, bytes(3, 100_000)),
        download(1, 2, 10, b"shares for 10".to_vec()),
    ];
    let seqs = h.0.append_batch(batch.clone()).unwrap();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(h.0.append(upload(1, 1, 12, vec![])).unwrap(), 6);
    close(h);

    let h = open(&path);
    let events = h.0.replay().unwrap();
    assert_eq!(events.len(), 6);
    for (ev, new) in events.iter().zip(&batch) {
        assert_eq!(
            (ev.round, ev.kind, ev.phase, ev.sender),
            (new.round, new.kind, new.phase, new.sender)
        );
        assert_eq!(ev.body, new.body);
        assert_eq!(ev.body_sha256, sha256(&new.body));
        assert_eq!(ev.response, new.response);
        assert!(!ev.shredded);
    }
    assert_eq!(events[5].seq, 6);
    assert!(events[5].body.is_empty());
    // The large bodies are not in the database file.
    close(h);
    let raw = std::fs::read(&path).unwrap();
    assert!(
        raw.len() < 200_000,
        "large bodies must live in blob files, db is {} B",
        raw.len()
    );
}

#[test]
fn secret_bodies_are_not_stored_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let h = open(&path);
    let marker = b"SECRET-MASKED-INPUT-0123456789".to_vec();
    let mut big = marker.clone();
    big.extend(bytes(1, 100_000));
    h.0.append_batch(vec![
        upload(1, 1, 1, marker.clone()),
        upload(1, 1, 2, big),
        download(1, 2, 1, marker.clone()),
    ])
    .unwrap();
    close(h);
    for entry in walk(dir.path()) {
        let content = std::fs::read(&entry).unwrap();
        assert!(
            find(&content, &marker).is_none(),
            "plaintext found in {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn lookup_upload_returns_digest_and_response_and_duplicates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(&db(&dir));
    h.0.append(upload(3, 1, 5, b"first".to_vec())).unwrap();
    let stored = h.0.lookup_upload(3, 1, 5).unwrap().unwrap();
    assert_eq!(stored.seq, 1);
    assert_eq!(stored.body_sha256, sha256(b"first"));
    assert_eq!(stored.response.as_deref(), Some(b"ok:3:1:5".as_slice()));
    assert!(h.0.lookup_upload(3, 1, 6).unwrap().is_none());
    assert!(h.0.lookup_upload(3, 2, 5).unwrap().is_none());
    assert!(h.0.lookup_upload(4, 1, 5).unwrap().is_none());

    // A second upload for the key, even in a batch with a valid one, changes nothing.
    let err =
        h.0.append_batch(vec![
            upload(3, 1, 6, b"ok".to_vec()),
            upload(3, 1, 5, b"second".to_vec()),
        ])
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Duplicate {
                kind: "upload",
                round: 3,
                phase: 1,
                site: 5
            }
        ),
        "{err}"
    );
    // Two uploads for one key inside one batch are refused too.
    let err =
        h.0.append_batch(vec![
            upload(3, 1, 7, b"a".to_vec()),
            upload(3, 1, 7, b"b".to_vec()),
        ])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { site: 7, .. }),
        "{err}"
    );
    assert!(h.0.lookup_upload(3, 1, 6).unwrap().is_none());
    assert_eq!(h.0.replay().unwrap().len(), 1);
    assert_eq!(h.0.head().unwrap().0, 1);
    // The log continues after the refusals without a gap.
    assert_eq!(h.0.append(upload(3, 1, 6, b"ok".to_vec())).unwrap(), 2);
    assert_eq!(h.0.replay().unwrap().len(), 2);
    close(h);
}

#[test]
fn downloads_are_byte_identical_and_unique_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let h = open(&path);
    let body = bytes(9, 50_000);
    h.0.append(download(2, 3, 8, body.clone())).unwrap();
    assert!(matches!(
        h.0.append(download(2, 3, 8, b"other".to_vec())),
        Err(StoreError::Duplicate {
            kind: "download",
            ..
        })
    ));
    close(h);
    let h = open(&path);
    assert_eq!(h.0.download(2, 3, 8).unwrap().unwrap(), body);
    assert!(h.0.download(2, 3, 9).unwrap().is_none());
    close(h);
}

#[test]
fn uploads_and_downloads_must_name_their_site() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(&db(&dir));
    let mut ev = upload(1, 1, 1, vec![1]);
    ev.sender = None;
    assert!(matches!(
        h.0.append(ev),
        Err(StoreError::InvalidInput {
            what: "event sender",
            ..
        })
    ));
    close(h);
}

#[test]
fn oversized_bodies_responses_and_batches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EventLogOptions {
        max_body: 1000,
        max_response: 10,
        max_batch: 2,
        ..EventLogOptions::default()
    };
    let h = EventLog::open(&db(&dir), opts).unwrap();
    assert!(matches!(
        h.0.append(upload(1, 1, 1, vec![0; 1001])),
        Err(StoreError::TooLarge {
            what: "event body",
            len: 1001,
            max: 1000
        })
    ));
    let mut ev = upload(1, 1, 1, vec![0; 10]);
    ev.response = Some(vec![0; 11]);
    assert!(matches!(
        h.0.append(ev),
        Err(StoreError::TooLarge {
            what: "stored response",
            ..
        })
    ));
    let three = (0..3).map(|i| upload(1, 1, i, vec![])).collect();
    assert!(matches!(
        h.0.append_batch(three),
        Err(StoreError::TooLarge {
            what: "event batch",
            ..
        })
    ));
    assert_eq!(h.0.head().unwrap().0, 0);
    close(h);
}

#[test]
fn meta_and_nonces() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let h = open(&path);
    assert!(h.0.get_meta("epoch").unwrap().is_none());
    h.0.put_meta("epoch", b"7").unwrap();
    h.0.put_meta("epoch", b"8").unwrap();
    assert!(h.0.insert_nonce(b"n1", 100).unwrap());
    assert!(
        !h.0.insert_nonce(b"n1", 200).unwrap(),
        "a replayed nonce must be refused"
    );
    assert!(h.0.insert_nonce(b"n2", 300).unwrap());
    assert!(h.0.insert_nonce(&[], 1).is_err());
    assert!(h.0.insert_nonce(&[0; 65], 1).is_err());
    assert!(h.0.put_meta("", b"x").is_err());
    assert!(matches!(
        h.0.put_meta("k", &vec![0; 64 * 1024 + 1]),
        Err(StoreError::TooLarge { .. })
    ));
    close(h);
    let h = open(&path);
    assert_eq!(
        h.0.get_meta("epoch").unwrap().as_deref(),
        Some(b"8".as_slice())
    );
    assert!(
        !h.0.insert_nonce(b"n1", 100).unwrap(),
        "nonces survive a restart"
    );
    assert_eq!(h.0.purge_nonces(150).unwrap(), 1);
    assert!(h.0.insert_nonce(b"n1", 400).unwrap());
    assert!(!h.0.insert_nonce(b"n2", 400).unwrap());
    close(h);
}

#[tokio::test]
async fn async_api_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(&db(&dir));
    let seqs =
        h.0.append_batch_async(vec![upload(1, 1, 1, b"x".to_vec())])
            .await
            .unwrap();
    assert_eq!(seqs, vec![1]);
    let stored = h.0.lookup_upload_async(1, 1, 1).await.unwrap().unwrap();
    assert_eq!(stored.body_sha256, sha256(b"x"));
    h.0.append_batch_async(vec![download(1, 2, 1, b"d".to_vec())])
        .await
        .unwrap();
    assert_eq!(h.0.download_async(1, 2, 1).await.unwrap().unwrap(), b"d");
    h.0.put_meta_async("k", b"v").await.unwrap();
    assert_eq!(h.0.get_meta_async("k").await.unwrap().unwrap(), b"v");
    assert!(h.0.insert_nonce_async(b"n", 1).await.unwrap());
    let (handle, thread) = h;
    drop(handle);
    thread.join().unwrap();
}

#[test]
fn second_open_in_process_is_locked_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let h = open(&path);
    match EventLog::open(&path, EventLogOptions::default()) {
        Err(StoreError::Locked { path: lock }) => assert!(lock.ends_with("events.db.lock")),
        other => panic!("expected Locked, got {other:?}"),
    }
    // A clone of the handle is the same writer, not a second one.
    let clone = h.0.clone();
    clone.append(upload(1, 1, 1, vec![1])).unwrap();
    drop(clone);
    close(h);
    let h = open(&path);
    assert_eq!(h.0.replay().unwrap().len(), 1);
    close(h);
}

#[test]
fn handle_after_writer_stopped_reports_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (h, t) = open(&db(&dir));
    let extra = h.clone();
    drop(h);
    // The writer still runs while `extra` exists.
    assert!(extra.head().is_ok());
    drop(extra);
    t.join().unwrap();
}
