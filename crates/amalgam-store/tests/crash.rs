//! Cross-process behaviour: the lock against a second process, and crashes (SIGKILL) at the
//! fault points around a commit. The parent re-runs this test binary as a child that executes
//! the ignored `child` test with its instructions in environment variables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use amalgam_store::{EventLog, EventLogOptions, Recorded, StatementStore, StoreError};
use common::{bytes, upload};

const MODE: &str = "AMALGAM_STORE_TEST_CHILD";
const DB: &str = "AMALGAM_STORE_TEST_DB";

/// The child side; does nothing unless started by a parent below.
#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (Ok(mode), Ok(db)) = (std::env::var(MODE), std::env::var(DB)) else {
        return;
    };
    let db = Path::new(&db);
    match mode.as_str() {
        "hold-lock" => {
            let (h, _t) = EventLog::open(db, EventLogOptions::default()).unwrap();
            println!("READY");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(h);
        }
        "append" => {
            let (h, _t) = EventLog::open(db, EventLogOptions::default()).unwrap();
            h.append(upload(1, 1, 1, b"one".to_vec())).unwrap();
            h.append(upload(1, 1, 2, bytes(2, 100_000))).unwrap();
            h.append(upload(1, 1, 3, bytes(3, 100_000))).unwrap();
            println!("DONE");
        }
        "statement" => {
            let mut s = StatementStore::open(db).unwrap();
            s.record_once(1, b"cohort A").unwrap();
            println!("DONE");
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn spawn(mode: &str, db: &Path, fault: Option<&str>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(MODE, mode)
    .env(DB, db)
    .env_remove("AMALGAM_FAULT")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(f) = fault {
        cmd.env("AMALGAM_FAULT", f);
    }
    cmd.spawn().unwrap()
}

/// Reads the child's stdout until a line containing `prefix`; the line from `prefix` on.
fn wait_for(child: &mut Child, prefix: &str) -> String {
    let out = child.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "child exited before printing {prefix:?}");
        // The harness prints "test child ... " without a newline before the test runs, so
        // the child's first line shares a line with it.
        if let Some(at) = line.find(prefix) {
            return line[at..].trim_end().to_owned();
        }
    }
}

#[test]
fn a_second_process_is_locked_out_and_a_killed_one_leaves_no_stale_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let mut child = spawn("hold-lock", &db, None);
    wait_for(&mut child, "READY");
    match EventLog::open(&db, EventLogOptions::default()) {
        Err(StoreError::Locked { .. }) => {}
        other => panic!("second process not locked out: {other:?}"),
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (h, t) = EventLog::open(&db, EventLogOptions::default()).unwrap();
    drop(h);
    t.join().unwrap();
}

fn crash_at(fault: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let mut child = spawn("append", &db, Some(fault));
    let line = wait_for(&mut child, "FAULT");
    let (name, k) = fault.split_once(':').unwrap();
    assert_eq!(line, format!("FAULT {name} {k}"));
    child.kill().unwrap();
    child.wait().unwrap();
    dir
}

#[test]
fn crash_before_commit_loses_only_the_unacknowledged_append() {
    let dir = crash_at("eventlog-before-commit:3");
    let (h, t) = EventLog::open(&dir.path().join("events.db"), EventLogOptions::default()).unwrap();
    let events = h.replay().unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(events[1].body, bytes(2, 100_000));
    assert!(h.lookup_upload(1, 1, 3).unwrap().is_none());
    // The site re-sends; the log continues without a gap (the orphaned blob is harmless).
    assert_eq!(h.append(upload(1, 1, 3, bytes(3, 100_000))).unwrap(), 3);
    assert_eq!(h.replay().unwrap()[2].body, bytes(3, 100_000));
    drop(h);
    t.join().unwrap();
}

#[test]
fn crash_after_commit_keeps_the_append() {
    let dir = crash_at("eventlog-after-commit:3");
    let (h, t) = EventLog::open(&dir.path().join("events.db"), EventLogOptions::default()).unwrap();
    let events = h.replay().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].body, bytes(3, 100_000));
    assert!(h.lookup_upload(1, 1, 3).unwrap().is_some());
    drop(h);
    t.join().unwrap();
}

#[test]
fn statement_committed_before_a_crash_blocks_a_second_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("statements.db");
    let mut child = spawn("statement", &db, Some("statement-after-commit:1"));
    wait_for(&mut child, "FAULT");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut s = StatementStore::open(&db).unwrap();
    assert!(matches!(
        s.record_once(1, b"cohort B"),
        Err(StoreError::SecondStatement { round: 1 })
    ));
    assert_eq!(s.record_once(1, b"cohort A").unwrap(), Recorded::Same);
}

#[test]
fn statement_crash_before_commit_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("statements.db");
    let mut child = spawn("statement", &db, Some("statement-before-commit:1"));
    wait_for(&mut child, "FAULT");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut s = StatementStore::open(&db).unwrap();
    assert!(s.statement(1).unwrap().is_none());
    assert_eq!(s.record_once(1, b"cohort B").unwrap(), Recorded::New);
}
