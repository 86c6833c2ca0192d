//! `amalgam site run` through the binary: its refusals and exit statuses (1 failed, 5
//! unreachable). Whole rounds are tested in `crates/amalgam-site/tests/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use amalgam_consortium::testing::{body, seeded_key, sign_all};

fn amalgam(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amalgam"))
        .current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// A co-signed manifest for 5 sites whose initial weights are 6 zeros (when `zeros`).
fn setup(d: &Path, zeros: bool) {
    let sites: Vec<_> = (0..5).map(|i| seeded_key(41, i)).collect();
    let agg = seeded_key(41, 99);
    let mut b = body(&sites, &agg, &[], 6);
    if zeros {
        b.campaign.initial_weights_digest = amalgam_site::model::model_digest(&[0.0; 6]);
    }
    let mut keys: Vec<_> = sites.iter().collect();
    keys.push(&agg);
    let (signed, _) = sign_all(b, &keys);
    signed.write(&d.join("consortium.manifest")).unwrap();
    sites[0].save(&d.join("key")).unwrap();
}

fn run(d: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "site",
        "run",
        "--manifest",
        "consortium.manifest",
        "--key",
        "key/identity.key",
        "--state",
        "state",
        "--aggregator",
        "https://127.0.0.1:1",
    ];
    args.extend_from_slice(extra);
    amalgam(d, &args)
}

#[test]
fn site_run_refuses_without_a_trainer_or_with_foreign_initial_weights() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path(), true);
    let out = run(tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "no trainer is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exactly one trainer"));

    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path(), false);
    let out = run(tmp.path(), &["--synthetic-trainer", "01"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("initial weights"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn site_run_exits_5_when_the_aggregator_is_unreachable() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path(), true);
    let out = run(tmp.path(), &["--synthetic-trainer", "01"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
