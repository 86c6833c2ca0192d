//! A tampered, truncated-in-the-middle or reordered log is refused, naming the row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use amalgam_store::{EventKind, EventLog, EventLogHandle, EventLogOptions, StoreError};
use common::{bytes, download, find, flip, public, upload};

type Open = (EventLogHandle, std::thread::JoinHandle<()>);

fn open(path: &Path) -> Result<Open, StoreError> {
    EventLog::open(path, EventLogOptions::default())
}

fn close(h: Open) {
    drop(h.0);
    h.1.join().unwrap();
}

/// A closed log of five events: public, small secret, large secret, large public, download.
/// Returns the db path.
fn fixture(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("events.db");
    let h = open(&path).unwrap();
    h.0.append_batch(vec![
        public(1, EventKind::RoundOpen, 0, b"round one opens".to_vec()),
        upload(1, 1, 10, b"small upload".to_vec()),
        upload(1, 1, 11, bytes(1, 100_000)),
    ])
    .unwrap();
    h.0.append_batch(vec![
        public(1, EventKind::PhaseClose, 1, bytes(2, 100_000)),
        download(1, 2, 10, b"the download".to_vec()),
    ])
    .unwrap();
    close(h);
    path
}

/// Opens and replays; the error either step gives.
fn restore(path: &Path) -> StoreError {
    match open(path) {
        Err(e) => e,
        Ok(h) => {
            let r = h.0.replay();
            close(h);
            match r {
                Err(e) => e,
                Ok(evs) => panic!("tampered log restored: {} events", evs.len()),
            }
        }
    }
}

fn assert_tampered_at(err: StoreError, want: u64) {
    match err {
        StoreError::Tampered { seq, .. } => assert_eq!(seq, want, "wrong row named"),
        other => panic!("expected Tampered at {want}, got {other:?}"),
    }
}

#[test]
fn untouched_fixture_restores() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir);
    let h = open(&path).unwrap();
    assert_eq!(h.0.replay().unwrap().len(), 5);
    close(h);
}

#[test]
fn flipped_byte_in_db_file_is_refused_with_its_sequence_number() {
    // The stored responses are plaintext in the database file; flip a byte inside the
    // response of row 2 (a change the chain covers) and inside the public body of row 1.
    for (needle, seq) in [
        (b"ok:1:1:10".as_slice(), 2),
        (b"round one opens".as_slice(), 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(&dir);
        let raw = std::fs::read(&path).unwrap();
        let at = find(&raw, needle).expect("pattern in db file");
        flip(&path, at + 3);
        assert_tampered_at(restore(&path), seq);
    }
}

fn vault_blob(dir: &tempfile::TempDir) -> PathBuf {
    let round_dir = dir.path().join("events.db.vault/round-1");
    let mut files: Vec<_> = std::fs::read_dir(round_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    files.remove(0)
}

fn public_blob(dir: &tempfile::TempDir) -> PathBuf {
    let d = dir.path().join("events.db.blobs");
    let mut files: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    files.remove(0)
}

#[test]
fn flipped_byte_in_a_blob_file_is_refused_with_its_sequence_number() {
    for offset in [0usize, 10, 50_000, 99_999] {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(&dir);
        flip(&vault_blob(&dir), offset);
        assert_tampered_at(restore(&path), 3);
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(&dir);
        flip(&public_blob(&dir), offset);
        assert_tampered_at(restore(&path), 4);
    }
}

#[test]
fn missing_or_swapped_blob_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir);
    std::fs::remove_file(vault_blob(&dir)).unwrap();
    assert_tampered_at(restore(&path), 3);

    // A sealed blob renamed to another digest's name does not open (AAD binds the digest).
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir);
    let h = open(&path).unwrap();
    h.0.append(upload(1, 1, 12, bytes(9, 100_000))).unwrap();
    close(h);
    let round_dir = dir.path().join("events.db.vault/round-1");
    let names: Vec<_> = std::fs::read_dir(&round_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names.len(), 2);
    let tmp = round_dir.join("swap");
    std::fs::rename(&names[0], &tmp).unwrap();
    std::fs::rename(&names[1], &names[0]).unwrap();
    std::fs::rename(&tmp, &names[1]).unwrap();
    assert!(matches!(
        restore(&path),
        StoreError::Tampered { seq: 3 | 6, .. }
    ));
}

/// Opens the database as an attacker with file access: drops the append-only triggers.
fn raw(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;")
        .unwrap();
    c
}

#[test]
fn triggers_refuse_update_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir);
    let c = rusqlite::Connection::open(&path).unwrap();
    assert!(
        c.execute("UPDATE events SET phase = 9 WHERE seq = 2", [])
            .is_err()
    );
    assert!(c.execute("DELETE FROM events WHERE seq = 5", []).is_err());
}

#[test]
fn deleted_row_is_refused_naming_the_missing_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir);
    raw(&path)
        .execute("DELETE FROM events WHERE seq = 3", [])
        .unwrap();
    assert_tampered_at(restore(&path), 3);
}

#[test]
fn reordered_rows_are_refused() {
    // Swap rows 2 and 3 wholesale (hashes included): each row's own hash is intact, but row 2
    // no longer chains onto row 1.
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir);
    let c = raw(&path);
    c.execute_batch(
        "UPDATE events SET seq = 100 WHERE seq = 2;
         UPDATE events SET seq = 2 WHERE seq = 3;
         UPDATE events SET seq = 3 WHERE seq = 100;",
    )
    .unwrap();
    drop(c);
    assert_tampered_at(restore(&path), 2);
}

#[test]
fn edited_fields_are_refused() {
    let edits = [
        ("UPDATE events SET phase = 2 WHERE seq = 2", 2),
        ("UPDATE events SET sender = 99 WHERE seq = 2", 2),
        ("UPDATE events SET round = 7 WHERE seq = 4", 4),
        ("UPDATE events SET response = x'00' WHERE seq = 3", 3),
        ("UPDATE events SET kind = 2 WHERE seq = 2", 2),
        ("UPDATE events SET seq = 0 WHERE seq = 1", 0),
    ];
    for (sql, seq) in edits {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(&dir);
        raw(&path).execute(sql, []).unwrap();
        assert_tampered_at(restore(&path), seq);
    }
}

#[test]
fn rehashed_row_still_breaks_its_successor() {
    // The attacker's best move without the chain: change a public body and recompute its
    // digest. The row's stored hash no longer matches (the digest is chained).
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir);
    let forged = b"round one opens!";
    raw(&path)
        .execute(
            "UPDATE events SET body = ?1, body_len = ?2, body_sha256 = ?3 WHERE seq = 1",
            rusqlite::params![
                forged.as_slice(),
                forged.len() as i64,
                amalgam_store::sha256(forged).as_slice()
            ],
        )
        .unwrap();
    assert_tampered_at(restore(&path), 1);
}

#[test]
fn altered_inline_ciphertext_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir);
    let c = raw(&path);
    let mut body: Vec<u8> = c
        .query_row("SELECT body FROM events WHERE seq = 2", [], |r| r.get(0))
        .unwrap();
    body[14] ^= 1;
    c.execute("UPDATE events SET body = ?1 WHERE seq = 2", [body])
        .unwrap();
    drop(c);
    assert_tampered_at(restore(&path), 2);
    // Reads of that row refuse too, not just replay.
    let h = open(&path).unwrap();
    assert!(matches!(
        h.0.events_for_round(1),
        Err(StoreError::Tampered { seq: 2, .. })
    ));
    close(h);
}

#[test]
fn tampered_download_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir);
    let c = raw(&path);
    let mut body: Vec<u8> = c
        .query_row("SELECT body FROM events WHERE seq = 5", [], |r| r.get(0))
        .unwrap();
    let last = body.len() - 1;
    body[last] ^= 1;
    c.execute("UPDATE events SET body = ?1 WHERE seq = 5", [body])
        .unwrap();
    drop(c);
    let h = open(&path).unwrap();
    assert!(matches!(
        h.0.download(1, 2, 10),
        Err(StoreError::Tampered { seq: 5, .. })
    ));
    close(h);
}

#[test]
fn appended_forged_row_is_refused() {
    // A row inserted at the end with a made-up hash.
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir);
    raw(&path)
        .execute(
            "INSERT INTO events(seq, round, kind, phase, sender, storage, body_len, body_sha256, body, response, row_hash)
             SELECT 6, round, kind, phase, 77, storage, body_len, body_sha256, body, response, row_hash FROM events WHERE seq = 2",
            [],
        )
        .unwrap();
    assert_tampered_at(restore(&path), 6);
}

#[test]
fn unknown_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 9")
        .unwrap();
    assert!(matches!(
        open(&path),
        Err(StoreError::SchemaVersion {
            found: 9,
            expected: 1,
            ..
        })
    ));
}

#[test]
fn grown_public_blob_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir);
    let blob = public_blob(&dir);
    let mut raw = std::fs::read(&blob).unwrap();
    raw.extend([0u8; 10]);
    std::fs::write(&blob, raw).unwrap();
    assert_tampered_at(restore(&path), 4);
}

/// The attacker's search over single-bit flips of the database file: every flip (sampled at
/// a stride over the whole file) is either refused at open or replay, or leaves the replayed
/// log and every key lookup exactly as written (a flip in unused space).
#[test]
fn no_single_bit_flip_of_the_db_file_is_accepted_as_a_different_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let h = open(&path).unwrap();
    h.0.append_batch(vec![
        public(1, EventKind::RoundOpen, 0, b"round one opens".to_vec()),
        upload(1, 1, 10, b"upload ten".to_vec()),
        upload(1, 1, 11, b"upload eleven".to_vec()),
        download(1, 2, 10, b"the download".to_vec()),
    ])
    .unwrap();
    let expected = h.0.replay().unwrap();
    close(h);
    let original = std::fs::read(&path).unwrap();
    let mut refused = 0usize;
    let mut offsets: Vec<usize> = (0..original.len()).step_by(17).collect();
    offsets.extend(100..112); // the SQLite header's page-size and counters
    for offset in offsets {
        let mut bytes = original.clone();
        bytes[offset] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let outcome = open(&path).and_then(|h| {
            let r = (|| {
                let evs = h.0.replay()?;
                let up10 = h.0.lookup_upload(1, 1, 10)?;
                let up11 = h.0.lookup_upload(1, 1, 11)?;
                let dl = h.0.download(1, 2, 10)?;
                Ok((evs, up10, up11, dl))
            })();
            close(h);
            r
        });
        match outcome {
            Err(_) => refused += 1,
            Ok((evs, up10, up11, dl)) => {
                assert_eq!(evs, expected, "flip at {offset} changed the replayed log");
                assert!(
                    up10.is_some() && up11.is_some(),
                    "flip at {offset} hid an upload"
                );
                assert_eq!(
                    dl.as_deref(),
                    Some(b"the download".as_slice()),
                    "flip at {offset}"
                );
            }
        }
    }
    assert!(refused > 0);
}

#[test]
fn truncated_tail_with_its_old_anchor_file_is_caught_by_an_external_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let anchor = dir.path().join("events.db.anchor");
    let h = open(&path).unwrap();
    h.0.append_batch(vec![
        public(1, EventKind::RoundOpen, 0, b"round one opens".to_vec()),
        upload(1, 1, 10, b"small upload".to_vec()),
        upload(1, 1, 11, bytes(1, 100_000)),
    ])
    .unwrap();
    let old_anchor = std::fs::read(&anchor).unwrap();
    h.0.append_batch(vec![
        public(1, EventKind::PhaseClose, 1, bytes(2, 100_000)),
        download(1, 2, 10, b"the download".to_vec()),
    ])
    .unwrap();
    let (seq, hash) = h.0.head().unwrap();
    assert_eq!(seq, 5);
    h.0.verify_anchor(seq, hash).unwrap();
    h.0.verify_anchor(0, [0; 32]).unwrap();
    let mut wrong = hash;
    wrong[0] ^= 1;
    assert!(matches!(
        h.0.verify_anchor(5, wrong),
        Err(StoreError::Tampered { seq: 5, .. })
    ));
    close(h);
    // The attacker deletes the last two rows and puts back the anchor file of that time:
    // the chain and the local anchor agree (whoever rewrites every file wins locally)...
    raw(&path)
        .execute("DELETE FROM events WHERE seq >= 4", [])
        .unwrap();
    std::fs::write(&anchor, old_anchor).unwrap();
    let h = open(&path).unwrap();
    assert_eq!(h.0.replay().unwrap().len(), 3);
    // ...but a head kept outside the host (a signed round record) does not.
    assert!(matches!(
        h.0.verify_anchor(seq, hash),
        Err(StoreError::Tampered { seq: 4, .. })
    ));
    close(h);
}
