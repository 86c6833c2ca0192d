//! The `after-response` fault point (feature `fault-points`): reached once an accepted
//! upload's response has been handed to the connection, with k = uploads accepted so far.
//! The parent test runs the child test in its own process (the point parks a thread for a
//! harness to kill the process) and waits for both the client's 200 and the FAULT line.
#![cfg(feature = "fault-points")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use amalgam_proto::Phase;
use amalgam_server::events::MemoryStore;
use common::*;

const CHILD: &str = "AMALGAM_TEST_FAULT_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_uploads_once() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let fx = Fixture::new();
    let run = start(&fx, Arc::new(MemoryStore::new())).await.unwrap();
    run.service.open_round(ROUND, MODEL).await.unwrap();
    let mut s0 = TestSite::new(&fx, &run, 0);
    let b = s0.begin(&fx);
    let r = s0.post(Phase::AdvertiseKeys, b).await;
    println!("UPLOAD {}", r.status.as_u16());
    run.stop().await;
}

#[test]
fn after_response_fires_once_the_upload_was_answered() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_uploads_once", "--exact", "--nocapture"])
        .env(CHILD, "1")
        .env("AMALGAM_FAULT", "after-response:1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (mut answered, mut fault) = (false, false);
    // Until both lines are seen, or the child ends (no fault point: a failure).
    for line in out.lines() {
        let line = line.unwrap();
        answered |= line.trim() == "UPLOAD 200";
        fault |= line.trim() == "FAULT after-response 1";
        if answered && fault {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(answered, "the upload was not answered");
    assert!(fault, "after-response 1 was not reached");
}
