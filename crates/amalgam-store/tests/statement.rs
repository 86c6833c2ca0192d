//! The decryptor's once-per-round statement store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_store::{Recorded, StatementStore, StoreError};

#[test]
fn one_statement_per_round_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statements.db");
    {
        let mut s = StatementStore::open(&path).unwrap();
        let d = s.durability().unwrap();
        assert_eq!((d.journal_mode.as_str(), d.synchronous), ("wal", 2));
        assert_eq!(
            s.record_once(1, b"decrypt cohort A").unwrap(),
            Recorded::New
        );
        assert_eq!(
            s.record_once(1, b"decrypt cohort A").unwrap(),
            Recorded::Same
        );
        assert!(matches!(
            s.record_once(1, b"decrypt cohort B"),
            Err(StoreError::SecondStatement { round: 1 })
        ));
        assert_eq!(
            s.record_once(2, b"decrypt cohort B").unwrap(),
            Recorded::New
        );
    }
    let mut s = StatementStore::open(&path).unwrap();
    // The attacker's best move after a restart: ask again with the other cohort.
    assert!(matches!(
        s.record_once(1, b"decrypt cohort B"),
        Err(StoreError::SecondStatement { round: 1 })
    ));
    assert_eq!(
        s.record_once(1, b"decrypt cohort A").unwrap(),
        Recorded::Same
    );
    assert_eq!(s.statement(1).unwrap().unwrap(), b"decrypt cohort A");
    assert!(s.statement(3).unwrap().is_none());
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statements.db");
    let _s = StatementStore::open(&path).unwrap();
    assert!(matches!(
        StatementStore::open(&path),
        Err(StoreError::Locked { .. })
    ));
}

#[test]
fn rows_cannot_be_rewritten_through_sql() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statements.db");
    let mut s = StatementStore::open(&path).unwrap();
    s.record_once(1, b"A").unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    assert!(
        raw.execute("UPDATE statements SET statement = x'42'", [])
            .is_err()
    );
    assert!(raw.execute("DELETE FROM statements", []).is_err());
    assert_eq!(s.record_once(1, b"A").unwrap(), Recorded::Same);
}

#[test]
fn tampered_statement_row_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statements.db");
    {
        let mut s = StatementStore::open(&path).unwrap();
        s.record_once(1, b"AAAA").unwrap();
    }
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "DROP TRIGGER statements_no_update; UPDATE statements SET statement = x'42424242';",
    )
    .unwrap();
    drop(raw);
    let mut s = StatementStore::open(&path).unwrap();
    assert!(matches!(
        s.record_once(1, b"BBBB"),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(s.statement(1), Err(StoreError::Corrupt { .. })));
}

#[test]
fn oversized_statement_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StatementStore::open(&dir.path().join("s.db")).unwrap();
    assert!(matches!(
        s.record_once(1, &vec![0; 1024 * 1024 + 1]),
        Err(StoreError::TooLarge { .. })
    ));
    assert!(s.statement(1).unwrap().is_none());
}

#[test]
fn vault_holds_seeds_until_shredded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let digest = {
        let mut s = StatementStore::open(&path).unwrap();
        s.vault().put(4, b"seed pieces").unwrap()
    };
    let mut s = StatementStore::open(&path).unwrap();
    assert_eq!(
        s.vault().get(4, &digest).unwrap().as_slice(),
        b"seed pieces"
    );
    s.vault().shred_round(4).unwrap();
    assert!(matches!(
        s.vault().get(4, &digest),
        Err(StoreError::Shredded { round: 4 })
    ));
}

#[test]
fn statement_limit_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StatementStore::open(&dir.path().join("s.db"))
        .unwrap()
        .with_max_statement(4);
    assert!(matches!(
        s.record_once(1, b"12345"),
        Err(StoreError::TooLarge { len: 5, max: 4, .. })
    ));
    assert_eq!(s.record_once(1, b"1234").unwrap(), Recorded::New);
}

#[test]
fn database_restored_from_an_older_backup_is_refused() {
    // Restoring the statement db alone from a backup would forget round 2's statement and
    // let the decryptor sign a second, different one for it.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("statements.db");
    let backup = dir.path().join("backup.db");
    let mut s = StatementStore::open(&db).unwrap();
    s.record_once(1, b"round 1 cohort").unwrap();
    drop(s);
    std::fs::copy(&db, &backup).unwrap();
    let mut s = StatementStore::open(&db).unwrap();
    s.record_once(2, b"round 2 cohort").unwrap();
    drop(s);
    let _ = std::fs::remove_file(dir.path().join("statements.db-wal"));
    std::fs::copy(&backup, &db).unwrap();
    match StatementStore::open(&db) {
        Err(StoreError::Truncated {
            found: 1,
            anchored: 2,
            ..
        }) => {}
        Err(other) => panic!("expected Truncated 1 < 2, got {other:?}"),
        Ok(mut s) => panic!(
            "restored db opened; a second statement is {:?}",
            s.record_once(2, b"another cohort")
        ),
    }
}
