//! `amalgam simulate` through the binary: a small campaign (4 plants on a slice of the AI4I
//! file, 3 rounds, one plant skipping round 1) runs the aggregator and the sites as real
//! processes and writes a report that parses with the schema's reader, with one row per
//! round, the survivors the schedule gives, the federated model's figures and a model that
//! moved. Bad flags are usage errors that write nothing; a failing child is named with its
//! log and the run exits 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use amalgam_report::{ModelKind, PrivacySetting, SimulationReport};

fn amalgam(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amalgam"))
        .current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The first `n` data lines of the AI4I file, with its header, as `in.csv`.
fn small_csv(dir: &Path, n: usize) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/ai4i2020.csv"
    ))
    .unwrap();
    let lines: Vec<&str> = text.lines().take(n + 1).collect();
    std::fs::write(dir.join("in.csv"), lines.join("\n") + "\n").unwrap();
}

/// A small, fast recipe: the logistic built-in, one local epoch, three rounds.
fn recipe(dir: &Path) {
    std::fs::write(
        dir.join("recipe.toml"),
        "[model]\narch = { kind = \"logistic\" }\nfeatures = { physics = true }\n\
         [local]\noptimizer = \"sgd\"\nlr = 0.1\nmomentum = 0.9\nepochs = 1\nbatch_size = 64\n\
         pos_weight = 3.0\n\
         [federated]\nrounds = 3\nserver_lr = 1.0\neval_every = 1\nfedprox_mu = 0.0\n\
         finetune_epochs = 1\n",
    )
    .unwrap();
}

const BASE: [&str; 10] = [
    "simulate",
    "--config",
    "recipe.toml",
    "--data",
    "in.csv",
    "--plants",
    "4",
    "--phase-seconds",
    "10",
    "--keep",
];

#[test]
fn a_small_campaign_runs_through_real_processes_and_reports_every_round() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_csv(d, 2400);
    recipe(d);
    let mut args = BASE.to_vec();
    args.extend(["--work", "work", "--out", "out", "--drop", "3:1"]);
    let o = amalgam(d, &args);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let report = SimulationReport::read(&d.join("out/report.json")).unwrap();
    assert_eq!(report.campaign.plants, 4);
    assert_eq!(report.campaign.rounds, 3);
    assert!(report.campaign.single_operator);
    assert_eq!(report.campaign.model, "builtin:logistic-ai4i");
    assert_eq!(report.privacy, PrivacySetting::None);
    // 4 plants, c = 1: t = 3, so one dropout is tolerated.
    assert_eq!(
        (report.protocol.threshold, report.protocol.dropouts),
        (3, 1)
    );
    // One row per round, in order; plant 3 skipped round 1 and rejoined in round 2.
    let rounds: Vec<u64> = report.rounds.iter().map(|r| r.round).collect();
    assert_eq!(rounds, vec![0, 1, 2]);
    let survivors: Vec<u16> = report.rounds.iter().map(|r| r.survivors).collect();
    assert_eq!(survivors, vec![4, 3, 4], "{err}");
    // The harness printed one progress line per round.
    assert_eq!(err.matches("plants in the sum").count(), 3, "{err}");
    for r in &report.rounds {
        assert_eq!(
            r.epsilon,
            vec![None; 4],
            "no privacy: ε = ∞ for every plant"
        );
        assert!(r.loss.is_some_and(f64::is_finite) && r.val_f1.is_some());
        assert!(r.seconds > 0.0);
    }
    // The model moved: the global model's validation loss differs after each round.
    let losses: Vec<f64> = report.rounds.iter().map(|r| r.loss.unwrap()).collect();
    assert!(
        losses.windows(2).all(|w| w[0] != w[1]),
        "the global model did not move: {losses:?}"
    );
    // Every model is scored on the same global test rows; per-plant models once per plant.
    let global: Vec<_> = report
        .models
        .iter()
        .filter(|m| m.test_set == "global")
        .collect();
    let count = |kind| global.iter().filter(|m| m.kind == kind).count();
    assert_eq!(count(ModelKind::Federated), 1);
    assert_eq!(count(ModelKind::Centralized), 1);
    assert_eq!(count(ModelKind::FineTuned), 4);
    assert_eq!(count(ModelKind::LocalOnly), 4);
    let fed = global
        .iter()
        .find(|m| m.kind == ModelKind::Federated)
        .unwrap();
    assert!(fed.rows > 0 && fed.failures > 0 && fed.f1.is_finite() && fed.auprc > 0.0);
    assert!(global.iter().all(|m| m.rows == fed.rows));
    // And on each plant's own held-out rows: the four models a plant could use, on the same
    // rows at that plant.
    for plant in 0..4u16 {
        let here: Vec<_> = report
            .models
            .iter()
            .filter(|m| m.test_set == "plant" && m.plant == Some(plant))
            .collect();
        assert_eq!(here.len(), 4, "plant {plant}");
        assert!(here.iter().all(|m| m.rows == here[0].rows && m.rows > 0));
    }
    assert_eq!(report.models.len(), 10 + 16);
    // Each plant's ledger: 3 plants charged every round they ran; ε ∞ without privacy.
    assert_eq!(report.epsilon.len(), 4);
    assert!(
        report
            .epsilon
            .iter()
            .all(|e| e.spent.is_none() && e.entries > 0)
    );
    // Every stage is measured by the sites themselves and the shares add up to one.
    let share = report.time_share.expect("time share measured");
    for s in [
        share.training,
        share.dp_encoding,
        share.masking,
        share.persistence,
    ] {
        assert!(s > 0.0 && s < 1.0, "{share:?}");
    }
    let sum = share.training + share.dp_encoding + share.masking + share.persistence + share.http;
    assert!((sum - 1.0).abs() < 1e-9, "{share:?}");
    // The page and its plots are rendered from report.json; the federated model is
    // exported as TorchScript whose predictions `evaluate` scores like the report's.
    let html = std::fs::read_to_string(d.join("out/index.html")).unwrap();
    let first = report
        .models
        .iter()
        .find(|m| m.kind == ModelKind::Federated)
        .unwrap();
    assert!(html.contains("single-operator simulation: no separation of duties"));
    assert!(
        html.contains("no differential privacy"),
        "privacy = none is said"
    );
    assert!(d.join("out/plots/rounds.svg").exists() && d.join("out/plots/recall.svg").exists());
    assert_eq!(report.exports, vec!["global_model.pt".to_string()]);
    let threshold = format!("{}", first.threshold);
    let e = amalgam(
        d,
        &[
            "evaluate",
            "--model",
            "out/global_model.pt",
            "--data",
            "in.csv",
            "--threshold",
            &threshold,
            "--format",
            "json",
        ],
    );
    assert!(e.status.success(), "{}", stderr(&e));
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert!(v.to_string().contains("auprc"), "{v}");
    assert!(
        std::fs::metadata(d.join("out/global_model.pt"))
            .unwrap()
            .len()
            > 0
    );
    // The children's logs stay in the work directory.
    for name in ["aggregator", "site-0", "site-3"] {
        assert!(
            d.join(format!("work/logs/{name}.stderr")).exists(),
            "{name}"
        );
    }
}

/// Site-level DP with noised weights (DP-FedAvg): every plant's ε comes from its own ledger,
/// grows with each round it takes part in, stays under the cap, and the report's final ε rows
/// are the last round's figures; the weight coordinate rides in the same noised vector, so
/// every plant, whatever its row count, spends the same ε, and the report names the mode
/// with its public numbers.
#[test]
fn under_site_level_dp_each_plants_epsilon_grows_round_by_round() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_csv(d, 1600);
    recipe(d);
    let mut args = BASE.to_vec();
    args.extend([
        "--work",
        "work",
        "--out",
        "out",
        "--rounds",
        "2",
        "--privacy",
        "site",
        "--sigma",
        "1.0",
        "--weight-mode",
        "noised",
        "--n-cap",
        "300",
        "--kappa",
        "1",
    ]);
    let o = amalgam(d, &args);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let report = SimulationReport::read(&d.join("out/report.json")).unwrap();
    assert!(
        report.campaign.weights.starts_with("noised")
            && report.campaign.weights.contains("min(rows / 300, 1)")
            && report.campaign.weights.contains("κ = 1, divisor floor 1.5")
            && report
                .campaign
                .weights
                .contains("covered by the site-level ε"),
        "{}",
        report.campaign.weights
    );
    // The harness stepped the federated model each round (its loss is a finite number).
    assert!(
        report
            .rounds
            .iter()
            .all(|r| r.loss.is_some_and(f64::is_finite)),
        "{:?}",
        report.rounds
    );
    let PrivacySetting::SiteLevel {
        sigma, epsilon_cap, ..
    } = report.privacy
    else {
        panic!("{:?}", report.privacy)
    };
    assert_eq!((sigma, epsilon_cap), (1.0, 1000.0));
    assert_eq!(report.rounds.len(), 2);
    let first: Vec<f64> = report.rounds[0]
        .epsilon
        .iter()
        .map(|e| e.unwrap())
        .collect();
    let second: Vec<f64> = report.rounds[1]
        .epsilon
        .iter()
        .map(|e| e.unwrap())
        .collect();
    for p in 0..4 {
        assert!(first[p] > 0.0 && first[p].is_finite(), "{first:?}");
        assert!(
            second[p] > first[p] && second[p] < epsilon_cap,
            "{second:?}"
        );
        // Same σ and rounds at every plant: the same ε.
        assert_eq!(second[p], second[0]);
    }
    for e in &report.epsilon {
        assert_eq!(e.spent, Some(second[usize::from(e.plant)]));
        assert_eq!(e.cap, Some(1000.0));
    }
    assert!(err.contains("ε per plant ["), "{err}");
}

#[test]
fn bad_flags_are_usage_errors_that_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_csv(d, 400);
    recipe(d);
    for extra in [
        &["--privacy", "site"][..],
        &["--sigma", "1.0"][..],
        &["--dropout-rate", "1.5"][..],
        &["--drop", "9:0"][..],
        &["--drop", "0:1", "--drop", "1:1"][..],
        &["--threshold", "4"][..],
        &["--plants", "3"][..],
        &["--split", "diagonal"][..],
        &["--config", "missing.toml"][..],
        &["--curve", "missing.json"][..],
        &["--curve", "recipe.toml"][..],
        &["--kappa", "0.5"][..],
        &["--weight-mode", "noised", "--kappa", "2"][..],
        &["--weight-mode", "noised", "--weight-floor", "5"][..],
        &["--weight-mode", "noised", "--weight-floor", "1"][..],
        &[
            "--weight-mode",
            "noised",
            "--privacy",
            "site",
            "--sigma",
            "4",
        ][..],
        &["--weight-mode", "noised", "--n-cap", "0"][..],
        &["--weight-mode", "noised", "--record-dp"][..],
    ] {
        let mut args = BASE.to_vec();
        args.extend(["--work", "work", "--out", "out"]);
        args.extend_from_slice(extra);
        let o = amalgam(d, &args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(
            !d.join("work").exists(),
            "{extra:?}: work directory written"
        );
        assert!(
            !d.join("out").exists(),
            "{extra:?}: report directory written"
        );
    }
}

#[test]
fn a_failing_child_is_named_with_its_log_and_the_run_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_csv(d, 1200);
    recipe(d);
    // Plant 2's state directory is taken by a file: its `site run` fails at start.
    std::fs::create_dir_all(d.join("failing-work/state")).unwrap();
    std::fs::write(d.join("failing-work/state/site-2"), "not a directory").unwrap();
    let mut args = BASE.to_vec();
    args.extend(["--work", "failing-work", "--out", "out"]);
    let o = amalgam(d, &args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("site-2 exited"), "{err}");
    assert!(err.contains("failing-work/logs/site-2.stderr"), "{err}");
    let log = d.join("failing-work/logs/site-2.stderr");
    assert!(!std::fs::read_to_string(&log).unwrap().is_empty());
    assert!(!d.join("out/report.json").exists());
    // The aggregator and the other sites were killed with it.
    assert!(
        processes_mentioning("failing-work/").is_empty(),
        "children left running: {:?}",
        processes_mentioning("failing-work/")
    );
}

/// Processes whose command line mentions `needle` (the run's unique work directory).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

/// SIGINT to the harness alone (not its process group, as a terminal would send): it kills
/// the aggregator and every site before it exits with 130.
#[test]
fn an_interrupt_kills_every_child() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_csv(d, 1600);
    recipe(d);
    let work = d.join("interrupted-work");
    let work_s = work.display().to_string();
    let mut args = BASE.to_vec();
    args.extend(["--work", &work_s, "--out", "out", "--rounds", "500"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_amalgam"))
        .current_dir(d)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Wait for the first round: the aggregator and the sites are running then.
    let mut seen = Vec::new();
    loop {
        let l = lines
            .next()
            .expect("simulate ended before a round")
            .unwrap();
        seen.push(l.clone());
        if l.starts_with("round 1/") {
            break;
        }
    }
    let kids = processes_mentioning(&work_s);
    assert!(
        kids.len() >= 5,
        "aggregator and 4 sites expected: {kids:?} {seen:?}"
    );
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen:?}");
    assert!(
        processes_mentioning(&work_s).is_empty(),
        "children left running: {:?}",
        processes_mentioning(&work_s)
    );
}
