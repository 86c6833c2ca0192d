//! Configuration cannot swap what an auditor audits: a `--state` flag beats a ledger named in
//! the file, paths in a file resolve against the file's directory, the file in effect is named
//! on stderr, and `audit`/`report` never read `./amalgam.toml` unasked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{amalgam, charged, consortium, text, write_anchors};

#[test]
fn a_state_flag_beats_the_files_ledger_and_file_paths_are_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, summaries) = charged(d, &c, &[1, 2]);
    write_anchors(d, &c, &summaries);
    std::fs::create_dir(d.join("conf")).unwrap();
    // Another ledger (absent here: reading it would fail) and paths relative to conf/.
    std::fs::write(
        d.join("conf/audit.toml"),
        "[audit]\nledger = \"elsewhere.ledger\"\nmanifest = \"../consortium.manifest\"\nanchors = \"../anchors.json\"\n",
    )
    .unwrap();
    let out = amalgam(
        d,
        &[
            "--config",
            "conf/audit.toml",
            "audit",
            "--site",
            "0",
            "--state",
            "state",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["ledger"].as_str().unwrap().starts_with("state"), "{v}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config conf/audit.toml"),
        "{}",
        text(&out)
    );
    // Without the flag the file's ledger is used (and resolved against conf/).
    let out = amalgam(d, &["--config", "conf/audit.toml", "audit", "--site", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("conf/elsewhere.ledger"),
        "{}",
        text(&out)
    );
}

#[test]
fn audit_does_not_read_the_working_directorys_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = consortium(d);
    let (_, summaries) = charged(d, &c, &[1]);
    write_anchors(d, &c, &summaries);
    std::fs::write(d.join("amalgam.toml"), "[audit]\nformat = \"json\"\n").unwrap();
    let out = amalgam(
        d,
        &[
            "audit",
            "--manifest",
            "consortium.manifest",
            "--site",
            "0",
            "--state",
            "state",
            "--anchors",
            "anchors.json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("no findings"), "{stdout}");
    assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).is_err());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("config"));
}
