//! The whole consortium workflow through the `amalgam` binary: keys gen, init, join, approve,
//! sign by every member, show --format json; and the refusals with their exit statuses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn amalgam(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amalgam"))
        .current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = amalgam(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fingerprint_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap()
        .trim()
        .to_string()
}

/// `consortium init` of a 3-of-n draft under aggregator key `k-agg` (digests `ab…`, 1000
/// parameters, σ 4), with `extra` options appended.
fn init_draft(dir: &Path, extra: &[&str]) -> String {
    let args = init_args(extra);
    ok(dir, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The arguments of [`init_draft`].
fn init_args(extra: &[&str]) -> Vec<String> {
    let digest = "ab".repeat(32);
    let mut args: Vec<String> = [
        "consortium",
        "init",
        "--aggregator-key",
        "k-agg",
        "--aggregator-org",
        "Agg Ltd",
        "--threshold",
        "3",
        "--model",
        "builtin:mlp",
        "--param-list-digest",
        digest.as_str(),
        "--params",
        "1000",
        "--initial-weights-digest",
        digest.as_str(),
        "--sigma",
        "4.0",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// `consortium join` of site `name` (key directory `k-<name>`, organisation `Org <name>`)
/// to the draft `manifest`, writing `<name>.join.toml`.
fn join_as_site(dir: &Path, manifest: &str, name: &str) {
    ok(
        dir,
        &[
            "consortium",
            "join",
            "--manifest",
            manifest,
            "--key",
            &format!("k-{name}"),
            "--org",
            &format!("Org {name}"),
            "--roles",
            "site",
            "--name",
            name,
        ],
    );
}

/// `consortium sign` of `consortium.toml` by member `name` (key `k-<name>`), every
/// fingerprint checked in `verified.txt`.
fn sign_as(dir: &Path, name: &str) {
    ok(
        dir,
        &[
            "consortium",
            "sign",
            "--key",
            &format!("k-{name}"),
            "--verified",
            "verified.txt",
        ],
    );
}

/// `consortium show --format json` of `consortium.signed` (exit 0 required).
fn show_json(dir: &Path) -> serde_json::Value {
    let json = ok(
        dir,
        &[
            "consortium",
            "show",
            "--signed",
            "consortium.signed",
            "--format",
            "json",
        ],
    );
    serde_json::from_str(&json).unwrap()
}

#[test]
fn keys_init_join_approve_sign_show_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut fps = Vec::new();
    for name in ["agg", "s1", "s2", "s3"] {
        let out = ok(d, &["keys", "gen", "--dir", &format!("k-{name}")]);
        fps.push(fingerprint_of(&out));
    }
    init_draft(d, &[]);
    for name in ["s1", "s2", "s3"] {
        join_as_site(d, "consortium.toml", name);
        ok(
            d,
            &[
                "consortium",
                "approve",
                "--request",
                &format!("{name}.join.toml"),
            ],
        );
    }
    std::fs::write(d.join("verified.txt"), fps.join("\n")).unwrap();

    // Without a verification list and not on a terminal: usage error, nothing signed.
    let out = amalgam(d, &["consortium", "sign", "--key", "k-s1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!d.join("consortium.signed").exists());
    // With one fingerprint left out: refused (auth), nothing signed.
    std::fs::write(d.join("partial.txt"), fps[..3].join("\n")).unwrap();
    let out = amalgam(
        d,
        &[
            "consortium",
            "sign",
            "--key",
            "k-s1",
            "--verified",
            "partial.txt",
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("s3"));
    assert!(!d.join("consortium.signed").exists());

    // Three of four signatures: not valid yet (exit 4), JSON says who is missing.
    for name in ["agg", "s1", "s2"] {
        sign_as(d, name);
    }
    let out = amalgam(
        d,
        &[
            "consortium",
            "show",
            "--signed",
            "consortium.signed",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["unsigned"], serde_json::json!(["s3"]));

    ok(
        d,
        &[
            "consortium",
            "sign",
            "--key",
            "k-s3",
            "--verified",
            "verified.txt",
        ],
    );
    let v = show_json(d);
    assert_eq!(v["valid"], true);
    assert_eq!(v["epoch"], 1);
    assert_eq!(v["members"].as_array().unwrap().len(), 4);
    let listed: Vec<&str> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["fingerprint"].as_str().unwrap())
        .collect();
    for fp in &fps {
        assert!(listed.contains(&fp.as_str()), "{fp}");
    }
    assert_eq!(v["protocol"]["threshold"], 3);
    assert_eq!(v["flags"], serde_json::json!([]));

    // Unverified identities are flagged when the member's list misses them.
    let json = ok(
        d,
        &[
            "consortium",
            "show",
            "--signed",
            "consortium.signed",
            "--verified",
            "partial.txt",
            "--format",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["flags"][0]["flag"], "unverified");

    // Epoch 2: s1 rotates its key. The old key signs the statement, every member of epoch 2
    // (the new key included) signs, and a party that accepted epoch 2 refuses epoch 1 after.
    ok(
        d,
        &[
            "consortium",
            "show",
            "--signed",
            "consortium.signed",
            "--key",
            "k-s2",
            "--high-water",
            "hw.json",
            "--accept",
        ],
    );
    let s1b = fingerprint_of(&ok(d, &["keys", "gen", "--dir", "k-s1b"]));
    // A party whose key epoch 1 does not list (it did not sign it) cannot accept it.
    let out = amalgam(
        d,
        &[
            "consortium",
            "show",
            "--signed",
            "consortium.signed",
            "--key",
            "k-s1b",
            "--high-water",
            "hw-outsider.json",
            "--accept",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "accepted an epoch without my key"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not list your key"));
    assert!(!d.join("hw-outsider.json").exists());
    ok(
        d,
        &[
            "consortium",
            "init",
            "--from",
            "consortium.signed",
            "--out",
            "e2.toml",
        ],
    );
    ok(
        d,
        &[
            "consortium",
            "rotate",
            "--manifest",
            "e2.toml",
            "--old-key",
            "k-s1",
            "--new-key",
            "k-s1b",
        ],
    );
    let mut fps2 = fps.clone();
    fps2[1] = s1b;
    std::fs::write(d.join("verified2.txt"), fps2.join("\n")).unwrap();
    for name in ["agg", "s1b", "s2", "s3"] {
        ok(
            d,
            &[
                "consortium",
                "sign",
                "--manifest",
                "e2.toml",
                "--signed",
                "e2.signed",
                "--key",
                &format!("k-{name}"),
                "--verified",
                "verified2.txt",
                "--previous",
                "consortium.signed",
                "--accept-changes",
                "member.s1.key",
            ],
        );
    }
    // The retired key is no member of epoch 2 and cannot sign it.
    let out = amalgam(
        d,
        &[
            "consortium",
            "sign",
            "--manifest",
            "e2.toml",
            "--signed",
            "e2.signed",
            "--key",
            "k-s1",
            "--verified",
            "verified2.txt",
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    let json = ok(
        d,
        &[
            "consortium",
            "show",
            "--signed",
            "e2.signed",
            "--key",
            "k-s2",
            "--high-water",
            "hw.json",
            "--accept",
            "--format",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["epoch"], 2);
    assert_eq!(v["rotations"].as_array().unwrap().len(), 1);
    let out = amalgam(
        d,
        &[
            "consortium",
            "show",
            "--signed",
            "consortium.signed",
            "--key",
            "k-s2",
            "--high-water",
            "hw.json",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "rollback to epoch 1 accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("older than the accepted epoch 2"));

    // A "join" draft that also raises sigma: the signer sees the diff against the previous
    // epoch and must accept every changed field by name.
    let s4 = fingerprint_of(&ok(d, &["keys", "gen", "--dir", "k-s4"]));
    ok(
        d,
        &[
            "consortium",
            "init",
            "--from",
            "consortium.signed",
            "--out",
            "e3.toml",
        ],
    );
    join_as_site(d, "e3.toml", "s4");
    ok(
        d,
        &[
            "consortium",
            "approve",
            "--manifest",
            "e3.toml",
            "--request",
            "s4.join.toml",
        ],
    );
    let text = std::fs::read_to_string(d.join("e3.toml")).unwrap();
    let edited = text.replace("sigma = 4.0", "sigma = 0.5");
    assert_ne!(text, edited);
    std::fs::write(d.join("e3.toml"), edited).unwrap();
    let mut fps3 = fps.clone();
    fps3.push(s4);
    std::fs::write(d.join("verified3.txt"), fps3.join("\n")).unwrap();
    let sign3 = |extra: &[&str]| {
        let mut args = vec![
            "consortium",
            "sign",
            "--manifest",
            "e3.toml",
            "--signed",
            "e3.signed",
            "--key",
            "k-s2",
            "--verified",
            "verified3.txt",
        ];
        args.extend_from_slice(extra);
        amalgam(d, &args)
    };
    let out = sign3(&[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "epoch 2 signed without --previous"
    );
    assert!(!d.join("e3.signed").exists());
    let out = sign3(&["--previous", "consortium.signed"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "changes signed without accepting them"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("dp.sigma: 4.0 -> 0.5"), "{stdout}");
    assert!(stdout.contains("fallback allowed: false"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("dp.sigma"));
    let out = sign3(&[
        "--previous",
        "consortium.signed",
        "--accept-changes",
        "member.s4",
    ]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "an unlisted sigma change was signed"
    );
    assert!(!d.join("e3.signed").exists());
    // A previous manifest the draft does not chain to is refused.
    let out = sign3(&[
        "--previous",
        "e2.signed",
        "--accept-changes",
        "member.s4,dp.sigma",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!d.join("e3.signed").exists());
    let out = sign3(&[
        "--previous",
        "consortium.signed",
        "--accept-changes",
        "dp.sigma,member.s4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.join("e3.signed").exists());

    // One flipped byte in the signed file: exit 4.
    let mut bytes = std::fs::read(d.join("consortium.signed")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(d.join("tampered.signed"), &bytes).unwrap();
    let out = amalgam(d, &["consortium", "show", "--signed", "tampered.signed"]);
    assert_eq!(out.status.code(), Some(4));

    // Editing the draft after signatures were collected does not silently reuse them.
    let draft = std::fs::read_to_string(d.join("consortium.toml")).unwrap();
    std::fs::write(
        d.join("consortium.toml"),
        draft.replace("max_aborted_rounds = 5", "max_aborted_rounds = 6"),
    )
    .unwrap();
    let out = amalgam(
        d,
        &[
            "consortium",
            "sign",
            "--key",
            "k-s1",
            "--verified",
            "verified.txt",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn world_readable_key_directory_is_refused_and_usage_errors_exit_2() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["keys", "gen", "--dir", "k"]);
    std::fs::set_permissions(d.join("k"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = amalgam(d, &["keys", "gen", "--dir", "k"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("0755") && err.contains("chmod 700"), "{err}");
    // Usage errors exit 2.
    assert_eq!(
        amalgam(d, &["consortium", "frobnicate"]).status.code(),
        Some(2)
    );
}

/// A declared-weight campaign: each site's public weight is set when it is approved, a site
/// approved without one leaves a draft nobody can sign, and the signed manifest shows the
/// weights; `--declared-weight` on a uniform draft is a usage error that changes nothing.
#[test]
fn declared_weights_are_set_at_approval_and_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut fps = Vec::new();
    for name in ["agg", "s1", "s2", "s3"] {
        let out = ok(d, &["keys", "gen", "--dir", &format!("k-{name}")]);
        fps.push(fingerprint_of(&out));
    }
    std::fs::write(d.join("verified.txt"), fps.join("\n")).unwrap();
    init_draft(d, &["--weight-mode", "declared"]);
    init_draft(d, &["--out", "uniform.toml"]);
    for name in ["s1", "s2", "s3"] {
        join_as_site(d, "consortium.toml", name);
    }
    let approve = |manifest: &str, name: &str, weight: Option<&str>| {
        let request = format!("{name}.join.toml");
        let mut args = vec![
            "consortium",
            "approve",
            "--manifest",
            manifest,
            "--request",
            &request,
        ];
        if let Some(w) = weight {
            args.extend(["--declared-weight", w]);
        }
        amalgam(d, &args)
    };
    // Uniform draft: refused, the draft unchanged.
    let before = std::fs::read(d.join("uniform.toml")).unwrap();
    let out = approve("uniform.toml", "s1", Some("10"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("weight mode is declared"));
    assert_eq!(std::fs::read(d.join("uniform.toml")).unwrap(), before);

    // Out of range: refused, the draft unchanged.
    let before = std::fs::read(d.join("consortium.toml")).unwrap();
    let out = approve("consortium.toml", "s1", Some("0"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be 1 to"));
    assert_eq!(std::fs::read(d.join("consortium.toml")).unwrap(), before);

    for (name, w) in [("s1", "500"), ("s2", "1500")] {
        assert!(approve("consortium.toml", name, Some(w)).status.success());
    }
    // A copy where s3 comes in without a weight cannot be signed.
    std::fs::copy(d.join("consortium.toml"), d.join("missing.toml")).unwrap();
    assert!(approve("missing.toml", "s3", None).status.success());
    let out = amalgam(
        d,
        &[
            "consortium",
            "sign",
            "--manifest",
            "missing.toml",
            "--signed",
            "missing.signed",
            "--key",
            "k-agg",
            "--verified",
            "verified.txt",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("s3 has no declared weight"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!d.join("missing.signed").exists());

    assert!(
        approve("consortium.toml", "s3", Some("1000"))
            .status
            .success()
    );
    for name in ["agg", "s1", "s2", "s3"] {
        sign_as(d, name);
    }
    let text = ok(d, &["consortium", "show", "--signed", "consortium.signed"]);
    assert!(
        text.contains("declared weights (public): s1 500, s2 1500, s3 1000"),
        "{text}"
    );
    let v = show_json(d);
    assert_eq!(v["valid"], true);
    assert_eq!(
        v["campaign"]["declared_weights"],
        serde_json::json!({ "s1": 500, "s2": 1500, "s3": 1000 })
    );
}

/// `consortium init --weight-mode noised` writes the three public numbers into the draft
/// (defaults κ = C/2, floor = m/2), and the noised flags under another mode are usage errors.
#[test]
fn noised_weights_are_written_by_init_with_their_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["keys", "gen", "--dir", "k-agg"]);
    init_draft(
        d,
        &[
            "--out",
            "n.toml",
            "--weight-mode",
            "noised",
            "--n-cap",
            "500",
            "--kappa",
            "0.75",
        ],
    );
    let body = amalgam_consortium::draft::read_draft(&d.join("n.toml")).unwrap();
    let n = body.campaign.noised_weights.unwrap();
    assert_eq!((n.n_cap, n.kappa, n.floor), (500, 0.75, 1.5));
    // Each noised number under another mode is refused, never silently dropped.
    for flag in [
        ["--n-cap", "500"],
        ["--kappa", "0.5"],
        ["--weight-floor", "1.5"],
    ] {
        let mut extra = vec!["--out", "u.toml"];
        extra.extend(flag);
        let args = init_args(&extra);
        let out = amalgam(d, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag:?}: {err}");
        assert!(err.contains("need --weight-mode noised"), "{flag:?}: {err}");
        assert!(!d.join("u.toml").exists());
    }
}
