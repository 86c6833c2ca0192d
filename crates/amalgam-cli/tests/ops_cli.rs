//! The operator's read commands through the binary: the configuration file and its
//! precedence, `round status|wait|watch` against a real aggregator process (mutual TLS), and
//! their exit statuses (0 finished, 1 aborted, 2 usage, 3 timeout, 4 pin mismatch, 5
//! unreachable).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::server::{
    amalgam_env as amalgam, member_args, serve, serve_with, setup, setup_zero, text_of as text,
};

#[test]
fn round_status_wait_and_watch_follow_a_round_to_its_abort() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, 61);
    let server = serve(d, "600");

    let mut args = vec!["round", "status"];
    args.extend(member_args(&server.url));
    args.extend(["--round", "1", "--format", "json"]);
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["round"], 1);
    assert_eq!(v["phase"], "advertise-keys");
    assert_eq!(v["expected"], 5);
    assert_eq!(v["responded"], 0);
    let left = v["deadline_in_s"].as_i64().unwrap();
    assert!(left > 0 && left <= 600, "{left}");

    // Text form, and a round the aggregator does not know.
    let mut args = vec!["round", "status"];
    args.extend(member_args(&server.url));
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("round 1: advertise-keys") && t.contains("0 of 5"),
        "{t}"
    );
    args.extend(["--round", "7"]);
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no round 7"));

    // Before the deadline a one-second wait times out (3) ...
    let mut args = vec!["round", "wait"];
    args.extend(member_args(&server.url));
    args.extend(["--round", "1", "--timeout", "1", "--interval", "1"]);
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    drop(server);

    // A round with 5 s phases: watch follows it to the abort (1), in plain lines (stdout is
    // not a terminal), and a wait after it exits 1 at once.
    let other = tempfile::tempdir().unwrap();
    let d = other.path();
    setup(d, 61);
    let server = serve(d, "5");
    let mut args = vec!["round", "watch"];
    args.extend(member_args(&server.url));
    args.extend(["--timeout", "60", "--interval", "1"]);
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("s round 1 ") && t.contains("answered"), "{t}");
    assert!(
        t.contains("round 1: aborted") && t.contains("not enough sites"),
        "{t}"
    );

    let mut args = vec!["round", "wait"];
    args.extend(member_args(&server.url));
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("round 1 aborted"));
}

#[test]
fn unreachable_is_5_and_a_foreign_aggregator_is_a_pin_mismatch_4() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, 62);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let mut args = vec!["round", "status"];
    args.extend(member_args(&url));
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));

    // An aggregator of another consortium: its binding does not verify under our pin.
    let other = tempfile::tempdir().unwrap();
    setup(other.path(), 63);
    let server = serve(other.path(), "600");
    let mut args = vec!["round", "status"];
    args.extend(member_args(&server.url));
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("probable TLS interception"),
        "{}",
        text(&out)
    );
}

fn write(path: PathBuf, text: &str) -> PathBuf {
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_file_env_and_flag_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, 64);
    let server = serve(d, "600");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("https://127.0.0.1:{port}");
    // ./amalgam.toml is read by default: it names the live aggregator.
    write(
        d.join("amalgam.toml"),
        &format!(
            "[round]\nmanifest = \"consortium.manifest\"\nkey = \"site0/identity.key\"\naggregator = \"{}\"\nformat = \"json\"\n",
            server.url
        ),
    );
    let out = amalgam(d, &["round", "status"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["round"], 1);
    // The environment beats the file ...
    let out = amalgam(
        d,
        &["round", "status"],
        &[("AMALGAM_ROUND_AGGREGATOR", &dead)],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    // ... and the flag beats the environment.
    let out = amalgam(
        d,
        &[
            "round",
            "status",
            "--aggregator",
            &server.url,
            "--format",
            "text",
        ],
        &[("AMALGAM_ROUND_AGGREGATOR", &dead)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("round 1: "));

    // Strict decoding: an unknown key is refused by name (usage, 2).
    let bad = write(
        d.join("bad.toml"),
        "[round]\nmanifest = \"consortium.manifest\"\naggregater = \"x\"\n",
    );
    let out = amalgam(
        d,
        &["--config", bad.to_str().unwrap(), "round", "status"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key `aggregater` in [round]"));
    // A key given inline (in the file, or in the environment) is refused.
    let hex = "0f".repeat(32);
    let inline = write(
        d.join("inline.toml"),
        &format!("[round]\nkey = \"{hex}\"\n"),
    );
    let out = amalgam(
        d,
        &["--config", inline.to_str().unwrap(), "round", "status"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("looks like an inline key"));
    let out = amalgam(d, &["round", "status"], &[("AMALGAM_ROUND_KEY", &hex)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AMALGAM_ROUND_KEY looks like an inline key")
    );
    // A missing setting names the flag, the variable and the file key.
    std::fs::remove_file(d.join("amalgam.toml")).unwrap();
    let out = amalgam(d, &["round", "status"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AMALGAM_ROUND_MANIFEST"));
}

#[test]
fn round_wait_exits_0_when_every_site_completes_the_round() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup_zero(d);
    let server = serve(d, "30");
    let sites: Vec<_> = (0..5)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_amalgam"))
                .current_dir(d)
                .args(["site", "run", "--manifest", "consortium.manifest", "--key"])
                .arg(format!("site{i}/identity.key"))
                .arg("--state")
                .arg(format!("state{i}"))
                .args(["--aggregator", &server.url, "--synthetic-trainer"])
                .arg(format!("{:02x}", i + 1))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut args = vec!["round", "watch"];
    args.extend(member_args(&server.url));
    args.extend(["--round", "1", "--timeout", "300", "--interval", "1"]);
    let out = amalgam(d, &args, &[]);
    for mut s in sites {
        let _ = s.wait();
    }
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("round 1: finished"), "{t}");
    assert!(t.contains("result: 5 contributors [0, 1, 2, 3, 4]"), "{t}");
    // Every phase watch saw closing kept all five sites (phases closed faster than a poll
    // are not listed).
    if let Some(line) = t.lines().find(|l| l.starts_with("survivors per phase: ")) {
        let steps = line.trim_start_matches("survivors per phase: ");
        assert!(steps.split(", ").all(|s| s.ends_with(" 5")), "{t}");
    }
    let mut args = vec!["round", "wait"];
    args.extend(member_args(&server.url));
    args.extend(["--format", "json"]);
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["phase"], "finished");
    assert_eq!(v["result"]["contributors"].as_array().unwrap().len(), 5);
}

#[test]
fn round_status_over_plain_http_on_loopback_with_insecure_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, 68);
    let server = serve_with(d, "600", &["--insecure"]);
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    let mut args = vec!["round", "status"];
    args.extend(member_args(&server.url));
    // Without --insecure the https-only client refuses the plain URL.
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only with --insecure"));
    let out = amalgam(d, &args, &[("AMALGAM_ROUND_INSECURE", "true")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("round 1: advertise-keys"));
    let out = amalgam(d, &args, &[("AMALGAM_ROUND_INSECURE", "yes")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
