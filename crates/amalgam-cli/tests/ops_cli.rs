//! The operator's read commands through the binary: the configuration file and its
//! precedence, `round status|wait|watch` against a real aggregator process (mutual TLS), and
//! their exit statuses (0 finished, 1 aborted, 2 usage, 3 timeout, 4 pin mismatch, 5
//! unreachable).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use amalgam_consortium::testing;

/// An aggregator process, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes consortium `seed` (5 sites, 64 parameters) into `dir`: `consortium.manifest`,
/// `agg/identity.key`, `site0/identity.key`.
fn setup(dir: &Path, seed: u64) -> testing::TestConsortium {
    let c = testing::consortium(seed, 5, 0, 64);
    c.signed.write(&dir.join("consortium.manifest")).unwrap();
    c.aggregator.save(&dir.join("agg")).unwrap();
    c.sites[0].save(&dir.join("site0")).unwrap();
    c
}

/// `amalgam serve` on port 0 with round 1 open and phases of `phase` seconds: with no site
/// taking part, AdvertiseKeys closes empty at its deadline and the round aborts (5 s is the
/// manifest's minimum; 600 s keeps the round open for the whole test).
fn serve(dir: &Path, phase: &str) -> Server {
    serve_with(dir, phase, &[])
}

fn serve_with(dir: &Path, phase: &str, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_amalgam"))
        .current_dir(dir)
        .args([
            "serve",
            "--manifest",
            "consortium.manifest",
            "--key",
            "agg/identity.key",
            "--db",
            "events.db",
            "--round",
            "1",
            "--phase-seconds",
            phase,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().strip_prefix("READY ").unwrap().to_string();
    Server { child, url }
}

fn amalgam(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amalgam"));
    cmd.current_dir(dir).args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn member_args(url: &str) -> Vec<&str> {
    vec![
        "--manifest",
        "consortium.manifest",
        "--key",
        "site0/identity.key",
        "--aggregator",
        url,
    ]
}

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

fn doctor(d: &Path, url: &str) -> (Output, serde_json::Value) {
    let out = amalgam(
        d,
        &[
            "site",
            "doctor",
            "--manifest",
            "consortium.manifest",
            "--key",
            "site0/identity.key",
            "--state",
            "state",
            "--aggregator",
            url,
            "--format",
            "json",
        ],
        &[],
    );
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

/// The rows of `v` whose status is `problem`, as (check, detail, fix).
fn problems(v: &serde_json::Value) -> Vec<(String, String, String)> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "problem")
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("check"), s("detail"), s("fix"))
        })
        .collect()
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn site_doctor_passes_a_healthy_site_and_names_each_provoked_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, 65);
    std::fs::create_dir(d.join("state")).unwrap();
    chmod(&d.join("state"), 0o700);
    let server = serve(d, "600");

    let (out, v) = doctor(d, &server.url);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(problems(&v), vec![]);
    let checks: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["check"].as_str().unwrap())
        .collect();
    for c in [
        "key file",
        "key directory",
        "state directory",
        "file system",
        "free space",
        "manifest",
        "aggregator",
        "pin",
        "clock",
        "ledger",
    ] {
        assert!(checks.contains(&c), "{c} missing from {checks:?}");
    }

    // A key file readable by others.
    chmod(&d.join("site0/identity.key"), 0o644);
    let (out, v) = doctor(d, &server.url);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = problems(&v);
    assert!(
        p.iter()
            .any(|(c, _, fix)| c == "key file" && fix.starts_with("chmod 600")),
        "{p:?}"
    );
    chmod(&d.join("site0/identity.key"), 0o600);

    // A state directory open to the group.
    chmod(&d.join("state"), 0o750);
    let (out, v) = doctor(d, &server.url);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = problems(&v);
    assert!(
        p.iter()
            .any(|(c, _, fix)| c == "state directory" && fix.starts_with("chmod 700")),
        "{p:?}"
    );
    chmod(&d.join("state"), 0o700);

    // A manifest that forks from the epoch this site accepted (same keys and epoch, other
    // content): the manifest row names it, and doctor does not move the mark.
    let forked = testing::consortium(65, 5, 0, 32);
    let hw = d.join("state/epoch.highwater");
    amalgam_consortium::EpochHighWater::accept(
        &hw,
        &forked.verified,
        &forked.sites[0].verifying_key(),
    )
    .unwrap();
    let before = std::fs::read(&hw).unwrap();
    let (out, v) = doctor(d, &server.url);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = problems(&v);
    assert!(
        p.iter()
            .any(|(c, detail, _)| c == "manifest" && detail.contains("epoch")),
        "{p:?}"
    );
    assert_eq!(std::fs::read(&hw).unwrap(), before);
    std::fs::remove_file(&hw).unwrap();

    // Nothing listening at the address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (out, v) = doctor(d, &format!("https://127.0.0.1:{port}"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = problems(&v);
    assert!(
        p.iter()
            .any(|(c, _, fix)| c == "aggregator" && fix.contains("nothing listens")),
        "{p:?}"
    );

    // Another consortium's aggregator: reported as probable TLS interception.
    let other = tempfile::tempdir().unwrap();
    setup(other.path(), 66);
    let foreign = serve(other.path(), "600");
    let (out, v) = doctor(d, &foreign.url);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = problems(&v);
    assert!(
        p.iter().any(|(c, detail, fix)| c == "pin"
            && detail.contains("probable TLS interception")
            && fix.contains("probable TLS interception")),
        "{p:?}"
    );

    // The text form prints the fix under the problem.
    chmod(&d.join("site0/identity.key"), 0o640);
    let out = amalgam(
        d,
        &[
            "site",
            "doctor",
            "--manifest",
            "consortium.manifest",
            "--key",
            "site0/identity.key",
            "--state",
            "state",
            "--aggregator",
            &server.url,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("problem") && t.contains("fix: chmod 600"), "{t}");
}

/// A consortium whose campaign starts from 6 zero weights (what `site run` uses without
/// `--initial-model`), written like [`setup`].
fn setup_zero(d: &Path) {
    use amalgam_consortium::testing::{body, seeded_key, sign_all};
    let sites: Vec<_> = (0..5).map(|i| seeded_key(67, i)).collect();
    let agg = seeded_key(67, 99);
    let mut b = body(&sites, &agg, &[], 6);
    b.campaign.initial_weights_digest = amalgam_site::model::model_digest(&[0.0; 6]);
    let mut keys: Vec<_> = sites.iter().collect();
    keys.push(&agg);
    let (signed, _) = sign_all(b, &keys);
    signed.write(&d.join("consortium.manifest")).unwrap();
    agg.save(&d.join("agg")).unwrap();
    for (i, k) in sites.iter().enumerate() {
        k.save(&d.join(format!("site{i}"))).unwrap();
    }
}

fn codes(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn audit_transcripts_against_the_aggregator_find_an_upload_without_a_charge() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup_zero(d);
    let server = serve(d, "5");
    // One site joins round 1: it charges its ledger, advertises keys; the round aborts at the
    // 5 s deadline (one site of the 4 needed) and the site uploads its signed summary.
    let run = amalgam(
        d,
        &[
            "site",
            "run",
            "--manifest",
            "consortium.manifest",
            "--key",
            "site0/identity.key",
            "--state",
            "state",
            "--aggregator",
            &server.url,
            "--synthetic-trainer",
            "01",
            "--wait-for-round",
            "30",
        ],
        &[],
    );
    let audit = |extra: &[&str]| {
        let mut args = vec!["audit"];
        args.extend(member_args(&server.url));
        args.extend(["--state", "state", "--format", "json"]);
        args.extend_from_slice(extra);
        let out = amalgam(d, &args, &[]);
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, v)
    };
    let (out, v) = audit(&["--transcripts"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nsite run: {}",
        text(&out),
        text(&run)
    );
    assert_eq!(v["transcripts_checked"], serde_json::json!([1]));
    assert_eq!(v["report"]["accepted"], 1);
    assert!(!v["summaries"].as_array().unwrap().is_empty(), "{v}");

    // The privacy report over the same live material.
    let mut args = vec!["report", "privacy"];
    args.extend(member_args(&server.url));
    args.extend(["--state", "state", "--consortium", "--format", "json"]);
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Our key's site (the manifest orders members by key) is reported from its ledger, the
    // four others, who never ran, with no spend.
    let rows = r["sites"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    let ours: Vec<_> = rows.iter().filter(|s| s["site"] == v["site"]).collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["source"], "ledger");
    assert_eq!(ours[0]["epsilon_spent"], v["report"]["epsilon_total"]);
    assert!(
        rows.iter()
            .filter(|s| s["site"] != v["site"])
            .all(|s| s["source"] == "summary" && s["epsilon_spent"].is_null()),
        "{r}"
    );

    // Cut the charge off the ledger: the upload the aggregator holds has no charge.
    let ledger = PathBuf::from(v["ledger"].as_str().unwrap());
    let ledger = if ledger.is_absolute() {
        ledger
    } else {
        d.join(ledger)
    };
    let bytes = amalgam_dp::ledger::store::read_file(&ledger).unwrap();
    let parsed = amalgam_dp::ledger::store::parse(&bytes).unwrap();
    std::fs::remove_file(&ledger).unwrap();
    let (mut store, fresh) = amalgam_dp::ledger::store::Store::open(&ledger).unwrap();
    store.repair(&fresh, &ledger).unwrap();
    let n = parsed.payloads.len();
    for p in &parsed.payloads[..n - 1] {
        store.append(p).unwrap();
    }
    drop(store);
    let (out, v) = audit(&["--transcripts"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let c = codes(&v);
    assert!(c.contains(&"UploadWithoutCharge".to_string()), "{c:?}");
    assert!(c.contains(&"Truncated".to_string()), "{c:?}");
    // A tampered ledger is refused by the report.
    let out = amalgam(d, &args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty());
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
