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
