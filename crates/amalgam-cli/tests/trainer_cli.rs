//! The plant trainer's commands through the binary: `model init` writes weights whose digest
//! it prints, `data split` partitions a CSV into plant files and the test set, and `site run`
//! takes exactly one trainer (exit 2 otherwise) and refuses a model the manifest does not pin.
//! One campaign round runs through real processes with every site training on its plant file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "harness/proc.rs"]
mod proc;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use amalgam_consortium::IdentityKey;
use amalgam_consortium::testing::{body, seeded_key, sign_all};
use amalgam_site::model::{model_digest, model_from_bytes};

fn amalgam(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amalgam"))
        .current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The value printed after `key ` on its own line.
fn field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key:?} line in {out}"))
        .trim()
        .to_owned()
}

/// `model init` output: (params, parameter-list digest, initial-weights digest).
fn model_init(dir: &Path, name: &str, seed: &str, out: &str) -> (usize, String, String) {
    let o = amalgam(
        dir,
        &[
            "model",
            "init",
            "--builtin",
            name,
            "--seed",
            seed,
            "--out",
            out,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    (
        field(&s, "params").parse().unwrap(),
        field(&s, "param_list_digest"),
        field(&s, "initial_weights_digest"),
    )
}

#[test]
fn model_init_writes_weights_whose_digest_it_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (name, params) in [("mlp-ai4i", 2881), ("logistic-ai4i", 12)] {
        let a = format!("{name}-a.bin");
        let (n, list, digest) = model_init(d, name, "5", &a);
        assert_eq!(n, params, "{name}");
        let bytes = std::fs::read(d.join(&a)).unwrap();
        let values = model_from_bytes(&bytes, n).unwrap();
        assert_eq!(hex::encode(model_digest(&values)), digest, "{name}");
        assert!(values.iter().all(|v| v.is_finite()) && values.iter().any(|v| *v != 0.0));
        // Same seed, same bytes; another seed, other weights with the same parameter list.
        let (_, list_b, digest_b) = model_init(d, name, "5", &format!("{name}-b.bin"));
        assert_eq!((list_b, digest_b), (list.clone(), digest.clone()));
        assert_eq!(
            std::fs::read(d.join(format!("{name}-b.bin"))).unwrap(),
            bytes
        );
        let (_, list_c, digest_c) = model_init(d, name, "6", &format!("{name}-c.bin"));
        assert_eq!(list_c, list);
        assert_ne!(digest_c, digest);
    }
    // An unknown model is a usage error; an existing file is never replaced.
    let o = amalgam(
        d,
        &[
            "model",
            "init",
            "--builtin",
            "gpt",
            "--seed",
            "1",
            "--out",
            "x",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let before = std::fs::read(d.join("logistic-ai4i-a.bin")).unwrap();
    let o = amalgam(
        d,
        &[
            "model",
            "init",
            "--builtin",
            "logistic-ai4i",
            "--seed",
            "9",
            "--out",
            "logistic-ai4i-a.bin",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        std::fs::read(d.join("logistic-ai4i-a.bin")).unwrap(),
        before
    );
}

/// The first `n` data lines of the AI4I file, with its header.
fn small_csv(dir: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/ai4i2020.csv"
    ))
    .unwrap();
    let lines: Vec<String> = text.lines().take(n + 1).map(str::to_owned).collect();
    std::fs::write(dir.join("in.csv"), lines.join("\n") + "\n").unwrap();
    lines
}

/// The UDIs (first column) of a CSV file, checking the header is the input's.
fn udis(path: &Path, header: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(header), "{path:?}");
    lines
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect()
}

#[test]
fn data_split_writes_plant_files_that_partition_the_input_minus_the_test_set() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let input = small_csv(d, 800);
    let all: BTreeSet<String> = input[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect();
    for (kind, plants) in [("type", 4usize), ("mode-exclusive", 5)] {
        let out = format!("split-{kind}");
        let o = amalgam(
            d,
            &[
                "data",
                "split",
                "--plants",
                &plants.to_string(),
                "--split",
                kind,
                "--seed",
                "3",
                "--data",
                "in.csv",
                "--out",
                &out,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let test = udis(&d.join(&out).join("test.csv"), &input[0]);
        assert!(!test.is_empty());
        let mut seen: BTreeSet<String> = test.iter().cloned().collect();
        assert_eq!(seen.len(), test.len(), "a test row twice");
        let mut files = 0;
        for p in 0..plants {
            let rows = udis(&d.join(&out).join(format!("plant-{p}.csv")), &input[0]);
            assert!(!rows.is_empty(), "{kind}: plant {p} is empty");
            for u in rows {
                assert!(seen.insert(u.clone()), "{kind}: row {u} in two files");
            }
            files += 1;
        }
        assert_eq!(files, plants);
        assert!(!d.join(&out).join(format!("plant-{plants}.csv")).exists());
        assert_eq!(seen, all, "{kind}: the files do not cover the input");
        // Each plant file is valid input for the trainer: `site run --data` reads it with the
        // same strict reader (a row rewritten wrongly would be refused there).
        let again = amalgam(
            d,
            &[
                "data",
                "split",
                "--plants",
                "2",
                "--seed",
                "1",
                "--data",
                &format!("{out}/plant-0.csv"),
                "--out",
                &format!("{out}/again"),
            ],
        );
        assert!(again.status.success(), "{}", stderr(&again));
    }
    // Same seed, same files; never over existing files; bad parameters are usage errors.
    let o = amalgam(
        d,
        &[
            "data",
            "split",
            "--plants",
            "4",
            "--seed",
            "3",
            "--data",
            "in.csv",
            "--out",
            "split-type",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "replaced existing files");
    let o = amalgam(
        d,
        &[
            "data", "split", "--plants", "4", "--seed", "3", "--data", "in.csv", "--out", "re",
        ],
    );
    assert!(o.status.success());
    for f in ["plant-0.csv", "plant-3.csv", "test.csv"] {
        assert_eq!(
            std::fs::read(d.join("re").join(f)).unwrap(),
            std::fs::read(d.join("split-type").join(f)).unwrap(),
            "{f}: not reproducible"
        );
    }
    let o = amalgam(
        d,
        &[
            "data", "split", "--plants", "0", "--data", "in.csv", "--out", "z",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let mut bad = input.clone();
    bad[3] = bad[3]
        .replacen(",L,", ",X,", 1)
        .replacen(",M,", ",X,", 1)
        .replacen(",H,", ",X,", 1);
    std::fs::write(d.join("bad.csv"), bad.join("\n")).unwrap();
    let o = amalgam(d, &["data", "split", "--data", "bad.csv", "--out", "b"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("row 4"), "{}", stderr(&o));
    assert!(!d.join("b").exists(), "files written from a refused input");
}

fn site_run(d: &Path, extra: &[&str]) -> Output {
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
fn site_run_takes_exactly_one_trainer() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for extra in [
        &[][..],
        &["--synthetic-trainer", "01", "--data", "plant.csv"][..],
        &["--synthetic-trainer", "01", "--model-builtin", "mlp-ai4i"][..],
    ] {
        let o = site_run(d, extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("--data"), "{}", stderr(&o));
        assert!(!d.join("state").exists(), "{extra:?}: state created");
    }
}

/// A manifest for 5 sites pinning `builtin:logistic-ai4i` with the digests `model init`
/// printed (or `params` / `list` overriding them), and site 0's key.
fn setup(d: &Path, params: u64, list: &str, initial: &str) -> Vec<IdentityKey> {
    setup_with(d, params, list, initial, false)
}

/// [`setup`], with plain SGD (lr 0.05) as the local optimizer when `sgd` (what record-level
/// DP-SGD runs).
fn setup_with(d: &Path, params: u64, list: &str, initial: &str, sgd: bool) -> Vec<IdentityKey> {
    let sites: Vec<_> = (0..5).map(|i| seeded_key(71, i)).collect();
    let agg = seeded_key(71, 99);
    let mut b = body(&sites, &agg, &[], params);
    if sgd {
        b.campaign.training.optimizer = amalgam_consortium::model::Optimizer::Sgd;
        b.campaign.training.learning_rate = 0.05;
    }
    b.campaign.model = amalgam_consortium::ModelRef::Builtin {
        name: "logistic-ai4i".into(),
    };
    hex::decode_to_slice(list, &mut b.campaign.parameter_list_digest).unwrap();
    hex::decode_to_slice(initial, &mut b.campaign.initial_weights_digest).unwrap();
    let mut keys: Vec<_> = sites.iter().collect();
    keys.push(&agg);
    let (signed, _) = sign_all(b, &keys);
    signed.write(&d.join("consortium.manifest")).unwrap();
    sites[0].save(&d.join("key")).unwrap();
    agg.save(&d.join("agg")).unwrap();
    for (i, k) in sites.iter().enumerate() {
        k.save(&d.join(format!("key{i}"))).unwrap();
    }
    sites
}

#[test]
fn site_run_data_refuses_a_model_the_manifest_does_not_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_csv(d, 300);
    let (n, list, initial) = model_init(d, "logistic-ai4i", "2", "init.bin");
    let common = ["--data", "in.csv", "--initial-model", "init.bin"];
    // The pinned model and its digests: the trainer is built and the run gets as far as the
    // aggregator (unreachable here: exit 5).
    setup(d, n as u64, &list, &initial);
    let o = site_run(d, &common);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    // Another built-in than the pinned one: a usage error.
    let mut args = common.to_vec();
    args.extend(["--model-builtin", "mlp-ai4i"]);
    let o = site_run(d, &args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("builtin:logistic-ai4i"),
        "{}",
        stderr(&o)
    );
    // A parameter-list digest that is not the built-in's.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_csv(d, 300);
    model_init(d, "logistic-ai4i", "2", "init.bin");
    setup(d, n as u64, &"ab".repeat(32), &initial);
    let o = site_run(d, &common);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("parameter-list digest"),
        "{}",
        stderr(&o)
    );
    // A data file that is not in the AI4I schema.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    model_init(d, "logistic-ai4i", "2", "init.bin");
    setup(d, n as u64, &list, &initial);
    std::fs::write(d.join("in.csv"), "a,b\n1,2\n").unwrap();
    let o = site_run(d, &common);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("header"), "{}", stderr(&o));
}

/// `amalgam ARGS` in `d` as a child named `name` (stderr to `d/name.stderr`).
fn spawn_in(d: &Path, name: &str, args: &[&str]) -> proc::Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amalgam"));
    cmd.current_dir(d).args(args);
    proc::Proc::spawn(name, cmd, d.join(format!("{name}.stderr")))
}

/// `amalgam serve` on the campaign of `d` (its manifest, aggregator key and initial weights),
/// and the URL its READY line names.
fn start_aggregator(d: &Path, step: std::time::Duration) -> (proc::Proc, String) {
    let mut server = spawn_in(
        d,
        "aggregator",
        &[
            "serve",
            "--manifest",
            "consortium.manifest",
            "--key",
            "agg/identity.key",
            "--db",
            "events.db",
            "--listen",
            "127.0.0.1:0",
            "--initial-model",
            "init.bin",
            "--phase-seconds",
            "60",
        ],
    );
    let url = server.expect_line("READY ", step)["READY ".len()..]
        .trim()
        .to_owned();
    (server, url)
}

/// The operator's path end to end: `data split` deals a CSV to five plants, `model init`
/// writes the weights the manifest pins, `serve --initial-model` runs the campaign and five
/// `site run --data` processes train the pinned model on their plant files in round 0. Every
/// site computes the next model itself and checks the aggregator's (a `Completed` outcome, not
/// a mismatch); the model the aggregator binds round 1 to has the model's length, hashes to
/// the bound digest and differs from the initial weights.
#[test]
fn sites_train_on_their_plant_files_and_the_next_model_moves() {
    use std::time::{Duration, Instant};
    let step = Duration::from_secs(120);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_csv(d, 1000);
    let o = amalgam(
        d,
        &[
            "data", "split", "--plants", "5", "--seed", "2", "--data", "in.csv", "--out", "plants",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (n, list, initial) = model_init(d, "logistic-ai4i", "4", "init.bin");
    let sites = setup(d, n as u64, &list, &initial);
    let spawn = |name: &str, args: &[&str]| spawn_in(d, name, args);
    let (mut server, url) = start_aggregator(d, step);
    let mut procs: Vec<_> = (0..sites.len())
        .map(|i| {
            let (key, state) = (format!("key{i}/identity.key"), format!("state{i}"));
            let (data, seed) = (format!("plants/plant-{i}.csv"), i.to_string());
            spawn(
                &format!("site{i}"),
                &[
                    "site",
                    "run",
                    "--manifest",
                    "consortium.manifest",
                    "--key",
                    &key,
                    "--state",
                    &state,
                    "--aggregator",
                    &url,
                    "--rounds",
                    "1",
                    "--wait-for-round",
                    "60",
                    "--data",
                    &data,
                    "--initial-model",
                    "init.bin",
                    "--train-seed",
                    &seed,
                ],
            )
        })
        .collect();
    for p in &mut procs {
        let status = p.wait_exit(step);
        assert!(
            status.success() && p.seen.iter().any(|l| l.starts_with("round 0: Completed")),
            "{}: {status:?} {:?}\n{}",
            p.name,
            p.seen,
            p.stderr_tail()
        );
    }
    amalgam_net::install_crypto_provider();
    let verified = amalgam_consortium::SignedManifest::read(&d.join("consortium.manifest"))
        .unwrap()
        .verify()
        .unwrap();
    let policy = amalgam_net::client::RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(50),
        max: Duration::from_millis(500),
        timeout: Duration::from_secs(30),
        max_body: 1 << 24,
    };
    let mut t = amalgam_site::http::HttpTransport::new(&url, &sites[0], &verified, policy).unwrap();
    use amalgam_site::Transport;
    let end = Instant::now() + step;
    let bound = loop {
        if let Some(b) = t.round_model(1).unwrap() {
            break b;
        }
        assert!(Instant::now() < end, "round 1 never opened");
        std::thread::sleep(Duration::from_millis(200));
    };
    let bytes = t.model(1).unwrap().expect("the model of round 1");
    let next = model_from_bytes(&bytes, n).unwrap();
    assert_eq!(model_digest(&next), bound);
    let init = model_from_bytes(&std::fs::read(d.join("init.bin")).unwrap(), n).unwrap();
    assert_eq!(hex::encode(model_digest(&init)), initial);
    assert_ne!(next, init, "the campaign's model did not move");
    server.kill();
}

/// `amalgam sweep` runs whole campaigns of real site agents per noise level: the point without
/// noise has no ε, the noised one a finite ε from the ledgers, each point as many seeds as
/// asked; a bad noise list is a usage error.
#[test]
fn sweep_writes_one_point_per_noise_level_with_the_ledgers_epsilon() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_csv(d, 2500);
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/campaign-default.toml"
    );
    let o = amalgam(
        d,
        &[
            "sweep",
            "--config",
            config,
            "--data",
            "in.csv",
            "--model",
            "logistic-ai4i",
            "--plants",
            "3",
            "--sigmas",
            "0,8",
            "--seeds",
            "2",
            "--rounds",
            "2",
            "--out",
            "sweep.json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("sweep.json")).unwrap()).unwrap();
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert!(points[0]["epsilon"].is_null(), "{v}");
    let eps = points[1]["epsilon"].as_f64().unwrap();
    assert!(eps.is_finite() && eps > 0.0, "{eps}");
    assert!(points.iter().all(|p| p["seeds"] == 2));
    assert_eq!(v["runs"].as_array().unwrap().len(), 4);
    for bad in ["", "1,-2", "x"] {
        let o = amalgam(d, &["sweep", "--data", "in.csv", "--sigmas", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
}

/// A `.json` model of `mlp-ai4i` with deterministic pseudo-random weights (xorshift).
fn json_model(path: &Path, threshold: f32) {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let params: Vec<f32> = (0..2881)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 0.6 - 0.3) as f32
        })
        .collect();
    let file = serde_json::json!({
        "format": "amalgam-model/1",
        "spec": { "arch": { "kind": "mlp", "hidden": [64, 32] }, "features": { "physics": true } },
        "threshold": threshold,
        "params": params,
    });
    std::fs::write(path, file.to_string()).unwrap();
}

#[test]
fn an_exported_model_evaluates_like_its_json_model() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/ai4i2020.csv");
    json_model(&d.join("m.json"), 0.375);
    let o = amalgam(
        d,
        &["model", "export", "--model", "m.json", "--out", "m.pt"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let threshold = field(&stdout(&o), "threshold");
    assert_eq!(threshold, "0.375");
    assert_eq!(field(&stdout(&o), "features"), "11");
    for format in ["json", "text"] {
        let eval = |model: &str, extra: &[&str]| {
            let mut args = vec![
                "evaluate", "--model", model, "--data", data, "--format", format,
            ];
            args.extend_from_slice(extra);
            let o = amalgam(d, &args);
            assert!(o.status.success(), "{model}: {}", stderr(&o));
            stdout(&o)
        };
        let from_json = eval("m.json", &[]);
        let from_pt = eval("m.pt", &["--threshold", &threshold]);
        assert_eq!(from_pt, from_json, "{format}");
        assert!(from_json.contains("10000"), "scored every row: {from_json}");
    }
    // The export refuses to overwrite, and a tampered model writes nothing.
    let o = amalgam(
        d,
        &["model", "export", "--model", "m.json", "--out", "m.pt"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = std::fs::read_to_string(d.join("m.json")).unwrap();
    std::fs::write(
        d.join("bad.json"),
        text.replacen("\"params\":[", "\"params\":[0.5,", 1),
    )
    .unwrap();
    let o = amalgam(
        d,
        &["model", "export", "--model", "bad.json", "--out", "bad.pt"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("2882"), "{}", stderr(&o));
    assert!(!d.join("bad.pt").exists());
}

/// One round of five `site run --data --record-dp` processes: every site takes its record
/// permit before training, and site 0's record ledger then holds one run whose ε is exactly
/// `record_epsilon` of the q and z it printed; `ledger verify` re-accounts it and
/// `report privacy` shows the record-level statement in its own section, per plant, next to
/// the site-level one. A δ above 1/(10 N) is a usage error before anything runs.
#[test]
fn record_dp_sites_charge_their_record_ledgers_and_the_report_shows_both_guarantees() {
    use std::time::Duration;
    let step = Duration::from_secs(120);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_csv(d, 1000);
    let o = amalgam(
        d,
        &[
            "data", "split", "--plants", "5", "--seed", "2", "--data", "in.csv", "--out", "plants",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (n, list, initial) = model_init(d, "logistic-ai4i", "4", "init.bin");
    setup_with(d, n as u64, &list, &initial, true);
    let record = [
        "--record-dp",
        "--record-epsilon",
        "8",
        "--record-delta",
        "1e-5",
        "--record-q",
        "0.05",
        "--record-clip",
        "0.5",
        "--record-expected-batch",
        "8",
    ];
    // δ = 0.01 is above 1/(10 N) for any plant file here: refused before any state.
    let mut bad = vec![
        "--data",
        "plants/plant-0.csv",
        "--initial-model",
        "init.bin",
    ];
    bad.extend(record);
    let delta_at = bad.iter().position(|a| *a == "1e-5").unwrap();
    bad[delta_at] = "0.01";
    let o = site_run(d, &bad);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("1/(10 N)"), "{}", stderr(&o));
    let spawn = |name: &str, args: &[&str]| spawn_in(d, name, args);
    let (mut server, url) = start_aggregator(d, step);
    let mut procs: Vec<_> = (0..5)
        .map(|i| {
            let (key, state) = (format!("key{i}/identity.key"), format!("state{i}"));
            let data = format!("plants/plant-{i}.csv");
            let mut args = vec![
                "site",
                "run",
                "--manifest",
                "consortium.manifest",
                "--key",
                &key,
                "--state",
                &state,
                "--aggregator",
                &url,
                "--rounds",
                "1",
                "--wait-for-round",
                "60",
                "--data",
                &data,
                "--initial-model",
                "init.bin",
            ];
            args.extend(record);
            spawn(&format!("site{i}"), &args)
        })
        .collect();
    for p in &mut procs {
        let status = p.wait_exit(step);
        assert!(
            status.success() && p.seen.iter().any(|l| l.starts_with("round 0: Completed")),
            "{}: {status:?} {:?}\n{}",
            p.name,
            p.seen,
            p.stderr_tail()
        );
    }
    server.kill();
    // Site 0's printed mechanism and its record ledger.
    let line = procs[0]
        .seen
        .iter()
        .find(|l| l.starts_with("record-level DP:"))
        .expect("the record-level line")
        .clone();
    let after = |key: &str| -> f64 {
        let rest = &line[line.find(key).unwrap() + key.len()..];
        rest.split([' ', ',', ';']).next().unwrap().parse().unwrap()
    };
    let (q, z) = (after("q = "), after(" z = "));
    assert_eq!(q, 0.05);
    let expected =
        amalgam_dp::record::record_epsilon(q, z, 1, amalgam_dp::params::Delta::new(1e-5).unwrap())
            .unwrap()
            .epsilon;
    let ledgers: Vec<_> = std::fs::read_dir(d.join("state0/records"))
        .unwrap()
        .map(|e| e.unwrap().path().join("record-in-dataset.ledger"))
        .collect();
    assert_eq!(ledgers.len(), 1);
    let key_hex = hex::encode(seeded_key(71, 0).verifying_key().as_bytes());
    let o = amalgam(
        d,
        &[
            "ledger",
            "verify",
            ledgers[0].to_str().unwrap(),
            "--key",
            &key_hex,
            "--json",
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["runs"].as_array().unwrap().len(), 1);
    assert_eq!(report["epsilon_total"].as_f64().unwrap(), expected);
    assert!(expected > 0.0 && expected <= 8.0);
    let o = amalgam(
        d,
        &[
            "report",
            "privacy",
            "--manifest",
            "consortium.manifest",
            "--key",
            "key0/identity.key",
            "--state",
            "state0",
            "--record-clip",
            "0.5",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let site_level = text.find("Budget per site").unwrap();
    let record_level = text.find("Record-level guarantee").unwrap();
    assert!(site_level < record_level, "{text}");
    for needle in [
        ": privacy unit: one training record of this plant's own dataset",
        "(treated as public)",
        "at most 1/(10 N_max)",
        "a record added in a later version is covered by the whole total",
        &format!("record-level epsilon spent = {expected:.6} of cap 8.000000"),
        "record-level C_rec = 0.5",
        "site-level C = ",
        "accountant: RDP of the Poisson-subsampled Gaussian",
        "not covered: a fine-tuned local model a plant shares",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
}
