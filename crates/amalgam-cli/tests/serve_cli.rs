//! `amalgam serve` as a process: it prints its READY line, and a second aggregator on the same
//! event log is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use amalgam_consortium::testing;

#[test]
fn serve_prints_ready_and_a_second_server_on_the_same_db_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = testing::consortium(1, 5, 0, 64);
    let manifest = dir.path().join("consortium.manifest");
    c.signed.write(&manifest).unwrap();
    let keys = dir.path().join("agg-key");
    c.aggregator.save(&keys).unwrap();
    let key = keys.join("identity.key");
    let db = dir.path().join("events.db");
    let args = |cmd: &mut Command| {
        cmd.arg("serve")
            .arg("--manifest")
            .arg(&manifest)
            .arg("--key")
            .arg(&key)
            .arg("--db")
            .arg(&db)
            .args(["--listen", "127.0.0.1:0", "--round", "1"]);
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amalgam"));
    args(&mut cmd);
    let mut first = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(first.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready = line.trim();
    assert!(ready.starts_with("READY https://127.0.0.1:"), "{ready:?}");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amalgam"));
    args(&mut cmd);
    let second = cmd.output().unwrap();
    first.kill().unwrap();
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("lock"), "{err}");
}

#[test]
fn serve_refuses_a_key_that_is_not_the_pinned_aggregator() {
    let dir = tempfile::tempdir().unwrap();
    let c = testing::consortium(2, 5, 0, 64);
    let manifest = dir.path().join("consortium.manifest");
    c.signed.write(&manifest).unwrap();
    let keys = dir.path().join("site-key");
    c.sites[0].save(&keys).unwrap();
    let key = keys.join("identity.key");
    let out = Command::new(env!("CARGO_BIN_EXE_amalgam"))
        .arg("serve")
        .arg("--manifest")
        .arg(&manifest)
        .arg("--key")
        .arg(&key)
        .arg("--db")
        .arg(dir.path().join("events.db"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--initial-model` runs the campaign only from the weights the campaign pins: a file of
/// the wrong size or with another digest is refused before anything is served.
#[test]
fn serve_refuses_initial_weights_the_campaign_does_not_pin() {
    let dir = tempfile::tempdir().unwrap();
    let c = testing::consortium(3, 5, 0, 64);
    let manifest = dir.path().join("consortium.manifest");
    c.signed.write(&manifest).unwrap();
    let keys = dir.path().join("agg-key");
    c.aggregator.save(&keys).unwrap();
    let serve = |weights: &[u8]| {
        let file = dir.path().join("initial.f32");
        std::fs::write(&file, weights).unwrap();
        Command::new(env!("CARGO_BIN_EXE_amalgam"))
            .arg("serve")
            .arg("--manifest")
            .arg(&manifest)
            .arg("--key")
            .arg(keys.join("identity.key"))
            .arg("--db")
            .arg(dir.path().join("events.db"))
            .arg("--initial-model")
            .arg(&file)
            .output()
            .unwrap()
    };
    // 64 zeros: the right size, not the pinned digest ([2; 32] in the test manifest).
    let out = serve(&[0u8; 256]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("initial weights"), "{err}");
    let out = serve(&[0u8; 255]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("need 256"), "{err}");
}
