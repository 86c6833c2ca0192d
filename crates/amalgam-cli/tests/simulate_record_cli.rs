//! `amalgam simulate --record-dp` through the binary: 4 plants, 2 rounds of the logistic
//! built-in under record-level DP-SGD. Every plant's record ledger must verify under its
//! identity key, its ε must be positive and within the cap and equal to what amalgam-dp's
//! accountant gives for the charged (q, z, steps), and the report must carry both units in
//! separate rows. A δ above 1/(10·N_i) is refused before anything is written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use amalgam_report::SimulationReport;

fn amalgam(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amalgam"))
        .current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn setup(dir: &Path) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/ai4i2020.csv"
    ))
    .unwrap();
    let lines: Vec<&str> = text.lines().take(2401).collect();
    std::fs::write(dir.join("in.csv"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("recipe.toml"),
        "[model]\narch = { kind = \"logistic\" }\nfeatures = { physics = true }\n\
         [local]\noptimizer = \"sgd\"\nlr = 0.1\nmomentum = 0.9\nepochs = 1\nbatch_size = 64\n\
         pos_weight = 3.0\n\
         [federated]\nrounds = 2\nserver_lr = 1.0\neval_every = 1\nfedprox_mu = 0.0\n\
         finetune_epochs = 1\n",
    )
    .unwrap();
}

const BASE: [&str; 16] = [
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
    "--work",
    "work",
    "--out",
    "out",
    "--record-dp",
    "--record-q=0.05",
];

#[test]
fn every_plants_record_ledger_verifies_and_the_report_keeps_both_units_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let mut args = BASE.to_vec();
    args.extend(["--record-epsilon", "8", "--record-delta", "1e-6"]);
    let o = amalgam(d, &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let report = SimulationReport::read(&d.join("out/report.json")).unwrap();
    assert_eq!(report.record_level.len(), 4, "{err}");
    for (p, row) in report.record_level.iter().enumerate() {
        assert_eq!(usize::from(row.plant), p);
        assert!(row.epsilon_spent > 0.0, "plant {p}: {row:?}");
        assert!(row.epsilon_spent <= row.epsilon_cap, "plant {p}: {row:?}");
        assert_eq!(row.epsilon_cap, 8.0);
        assert_eq!(row.delta, 1e-6);
        assert!(row.delta <= 1.0 / (10.0 * row.records as f64));
        assert_eq!(row.q, 0.05);
        assert_eq!(row.runs, 2, "one local run per round");
        // The same mechanism in every run: the composition is that of all steps at once.
        assert_eq!(row.noise_multipliers.len(), 1);
        let z = row.noise_multipliers[0];
        let again = amalgam_dp::record::record_epsilon(
            row.q,
            z,
            row.steps,
            amalgam_dp::params::Delta::new(row.delta).unwrap(),
        )
        .unwrap();
        assert!(
            (again.epsilon - row.epsilon_spent).abs() <= 1e-9 * again.epsilon.max(1.0),
            "plant {p}: {} in the report, {} from the accountant",
            row.epsilon_spent,
            again.epsilon
        );
        // The ledger itself verifies under the plant's key, at the head in the report.
        let ledgers = d.join(format!("work/records/site-{p}"));
        let file = std::fs::read_dir(&ledgers)
            .unwrap()
            .map(|e| e.unwrap().path().join("record-in-dataset.ledger"))
            .find(|f| f.is_file())
            .expect("a record ledger");
        let key = amalgam_consortium::IdentityKey::load(&d.join(format!("work/keys/site-{p}")))
            .unwrap()
            .verifying_key();
        let audit = amalgam_dp::ledger::record::audit_record_file(&file, Some(&key), &[]).unwrap();
        assert!(audit.is_clean(), "plant {p}: {:?}", audit.findings);
        assert_eq!(audit.head, row.ledger_head);
        assert_eq!(audit.epsilon_total, row.epsilon_spent);
    }
    // Site-level rows keep their own unit; no privacy at site level here (∞).
    assert!(
        report
            .epsilon
            .iter()
            .all(|e| e.unit == "site-update-per-round" && e.spent.is_none())
    );
    let html = std::fs::read_to_string(d.join("out/index.html")).unwrap();
    assert!(html.contains("Record-level privacy per plant"));
    assert!(html.contains("data-json=\"/record_level/3/epsilon_spent\""));
}

#[test]
fn a_delta_above_one_tenth_of_one_over_n_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let mut args = BASE.to_vec();
    // About 400 training rows per plant: 1/(10·N) ≈ 2.5e-4.
    args.extend(["--record-epsilon", "8", "--record-delta", "1e-3"]);
    let o = amalgam(d, &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("plant 0") && err.contains("N = "),
        "names the plant and its N: {err}"
    );
    assert!(
        !d.join("work").exists(),
        "a refusal wrote the work directory"
    );
    assert!(!d.join("out").exists());
}
