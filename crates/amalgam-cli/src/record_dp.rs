//! `amalgam site run --record-dp`: record-level DP-SGD at the plant, charged to the dataset's
//! record ledger (`protocol-spec/record-dp.md` §8, site-agent.md §3.1).
//!
//! The dataset is the name the site declares (`--record-dataset`, default `default`), never the
//! `--data` file's bytes: a file with records appended or corrected is the same dataset, and its
//! runs spend from the same budget (each charge records the file's SHA-256 and row count N,
//! treated as public). The genesis fixes N_max (`--record-max-records`, default the largest the
//! δ rule allows), which the δ rule is checked against. The ledger lives in `--record-ledgers
//! DIR` (default `STATE/records`), one directory per dataset, so a second campaign pointed at
//! the same directory keeps spending from the same budget. σ is calibrated with `calibrate_noise_multiplier` so that the campaign's
//! `--rounds` × local steps reach at most `--record-epsilon` at `--record-delta`; the ledger's
//! cap is that ε, over every campaign on the dataset.

use std::path::{Path, PathBuf};

use crate::Failure;

/// γ/C: the rounding grid of the per-example sums (its share of Δ is γ·√d/2).
pub const GRID_OVER_CLIP: f64 = 1e-4;

/// The record-level flags of `site run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// Train with record-level DP-SGD (needs `--data`, `--record-epsilon`, `--record-delta`).
    #[arg(long)]
    pub record_dp: bool,
    /// Record-level ε cap of the dataset, over every campaign on it.
    #[arg(long)]
    pub record_epsilon: Option<f64>,
    /// Record-level δ; at most 1/(10·N_max).
    #[arg(long)]
    pub record_delta: Option<f64>,
    /// The dataset's name: every version of the data file under one name (records appended,
    /// removed or corrected) spends from one record budget. 1-64 of A-Z a-z 0-9 . _ -
    #[arg(long, default_value = amalgam_dp::ledger::record::DEFAULT_DATASET_NAME)]
    pub record_dataset: String,
    /// N_max, the most records the dataset will ever hold, fixed when its ledger is created
    /// (default: the largest the δ rule allows, ⌊1/(10·δ)⌋).
    #[arg(long)]
    pub record_max_records: Option<u64>,
    /// Poisson sampling rate q of each step.
    #[arg(long, default_value_t = 0.01)]
    pub record_q: f64,
    /// Per-example clip norm C_rec.
    #[arg(long, default_value_t = 1.0)]
    pub record_clip: f64,
    /// The public expected sample size E|B| the noisy gradient sum of each step is divided
    /// by, declared in advance (e.g. q times the record count the plant declared). Never
    /// derived from the data file: under add/remove adjacency neighbouring datasets differ
    /// in N, so a divisor of q·N read from the file would release N outside the accounting.
    #[arg(long)]
    pub record_expected_batch: Option<f64>,
    /// Directory of the per-dataset record ledgers (default: STATE/records).
    #[arg(long)]
    pub record_ledgers: Option<PathBuf>,
}

/// What `site run` needs to charge record-level runs: the policy, the ledger path and the
/// trainer's settings.
#[cfg(feature = "train")]
pub struct RecordSetup {
    /// The ledger's policy.
    pub policy: amalgam_dp::ledger::record::RecordPolicy,
    /// Where the ledger lives.
    pub path: PathBuf,
    /// The trainer's DP-SGD settings.
    pub recipe: amalgam_train::site_trainer::RecordDpRecipe,
    /// The calibrated z.
    pub noise_multiplier: f64,
    /// The data file's version (digest, N), recorded in every charge.
    pub data: amalgam_dp::ledger::record::DataVersion,
}

/// The record ledger a site run charges and the numbers it reports.
pub struct Charged {
    /// The ledger's policy.
    pub policy: amalgam_dp::ledger::record::RecordPolicy,
    /// Where the ledger lives.
    pub path: PathBuf,
    /// C_rec.
    pub clip: f64,
    /// σ per coordinate.
    pub sigma: f64,
    /// The calibrated z (the charged z is σ/Δ, never below it).
    pub calibrated: f64,
    /// The mechanism every run is charged with (C, γ, σ, d, sampler).
    pub mechanism: amalgam_dp::ledger::record::RecordMechanism,
    /// The data file's version (digest, N), recorded in every charge.
    pub data: amalgam_dp::ledger::record::DataVersion,
}

/// The default record-ledger directory of a state directory.
pub fn default_dir(state: &Path) -> PathBuf {
    state.join("records")
}

/// Calibrates σ and builds the policy for `rows` rows of a `dim`-parameter model, `steps`
/// noisy steps in the campaign; `bytes` are the data file's bytes the rows were parsed from
/// (`data` names it in messages).
#[cfg(feature = "train")]
pub fn setup(
    a: &RecordArgs,
    state: &Path,
    data: &Path,
    bytes: &[u8],
    rows: usize,
    dim: usize,
    steps: u64,
) -> Result<RecordSetup, Failure> {
    use amalgam_dp::ledger::record::{
        DatasetName, RecordPolicy, check_data, data_version, dataset_id, default_max_records,
        record_ledger_path,
    };
    use amalgam_dp::params::{Delta, Epsilon};
    use amalgam_dp::record::calibrate_noise_multiplier;

    let (Some(e), Some(d), Some(expected_batch)) =
        (a.record_epsilon, a.record_delta, a.record_expected_batch)
    else {
        return Err(Failure::usage(
            "--record-dp needs --record-epsilon E, --record-delta D and --record-expected-batch B \
             (the public expected sample size, declared in advance, never read from the data)",
        ));
    };
    if !(expected_batch.is_finite()
        && (1.0..=amalgam_train::dpsgd::MAX_RECORDS as f64).contains(&expected_batch))
    {
        return Err(Failure::usage(format!(
            "--record-expected-batch {expected_batch} outside [1, 2^24]"
        )));
    }
    let epsilon = Epsilon::new(e).map_err(|e| Failure::usage(format!("--record-epsilon: {e}")))?;
    let delta = Delta::new(d).map_err(|e| Failure::usage(format!("--record-delta: {e}")))?;
    let name = DatasetName::new(&a.record_dataset)
        .map_err(|e| Failure::usage(format!("--record-dataset: {e}")))?;
    let max_records = a
        .record_max_records
        .unwrap_or_else(|| default_max_records(d));
    let policy = RecordPolicy {
        dataset: dataset_id(&name),
        max_records,
        epsilon_cap: epsilon,
        delta,
    };
    amalgam_dp::ledger::record::validate_policy(&policy)
        .map_err(|e| Failure::usage(format!("--record-delta / --record-max-records: {e}")))?;
    let data_version = data_version(bytes, rows as u64);
    check_data(&policy, &data_version).map_err(|e| match a.record_max_records {
        Some(_) => Failure::usage(format!("{}: {e}", data.display())),
        None => Failure::usage(format!(
            "{}: {rows} records, but --record-delta {d:e} allows at most {max_records} (delta \
             <= 1/(10 N)): use a smaller delta",
            data.display()
        )),
    })?;
    let cal = calibrate_noise_multiplier(epsilon, delta, steps, a.record_q)
        .map_err(|e| Failure::usage(format!("record-level calibration: {e}")))?;
    let gamma = a.record_clip * GRID_OVER_CLIP;
    let sensitivity = amalgam_train::dpsgd::noise::sensitivity(a.record_clip, gamma, dim);
    // A hair above the calibrated σ: the z the trainer recomputes (σ/Δ) is then never below
    // the calibrated one, so the campaign's runs stay within the cap.
    let sigma = cal.noise_multiplier * sensitivity * (1.0 + 1e-12);
    let root = a
        .record_ledgers
        .clone()
        .unwrap_or_else(|| default_dir(state));
    let path = record_ledger_path(&root, &policy.dataset);
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Failure::failed(format!("{}: {e}", dir.display())))?;
    }
    Ok(RecordSetup {
        policy,
        path,
        recipe: amalgam_train::site_trainer::RecordDpRecipe {
            q: a.record_q,
            clip: a.record_clip,
            sigma,
            gamma,
            // Declared by the operator before the data is read (record-dp.md §3).
            expected_batch,
        },
        noise_multiplier: cal.noise_multiplier,
        data: data_version,
    })
}

#[cfg(all(test, feature = "train"))]
mod tests {
    use super::*;

    /// [`setup`] on the file at `data` as it is now, declaring `rows` records of 100 features
    /// and 50 steps.
    fn setup_rows(
        a: &RecordArgs,
        state: &Path,
        data: &Path,
        rows: usize,
    ) -> Result<RecordSetup, Failure> {
        let bytes = std::fs::read(data).map_err(|e| Failure::failed(e.to_string()))?;
        setup(a, state, data, &bytes, rows, 100, 50)
    }

    fn args(expected_batch: Option<f64>) -> RecordArgs {
        RecordArgs {
            record_dp: true,
            record_epsilon: Some(8.0),
            record_delta: Some(1e-6),
            record_dataset: "default".into(),
            record_max_records: None,
            record_q: 0.05,
            record_clip: 1.0,
            record_expected_batch: expected_batch,
            record_ledgers: None,
        }
    }

    /// The divisor of the noisy sum is the declared figure whatever the file holds: two
    /// neighbouring datasets (N and N + 1 records) train with the same scale, so the scale of
    /// the released noise says nothing about N.
    #[test]
    fn the_expected_batch_is_the_declared_one_never_q_times_the_row_count() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("plant.csv");
        std::fs::write(&data, b"rows").unwrap();
        let a = args(Some(40.0));
        let small = setup_rows(&a, dir.path(), &data, 1000).unwrap();
        let large = setup_rows(&a, dir.path(), &data, 1001).unwrap();
        assert_eq!(small.recipe.expected_batch, 40.0);
        assert_eq!(large.recipe.expected_batch, 40.0);
        assert_eq!(small.recipe.sigma, large.recipe.sigma);
    }

    #[test]
    fn record_dp_without_a_declared_expected_batch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("plant.csv");
        std::fs::write(&data, b"rows").unwrap();
        let refused = |a: &RecordArgs| setup_rows(a, dir.path(), &data, 1000).err();
        let e = refused(&args(None)).expect("refused");
        assert!(
            e.message.contains("--record-expected-batch"),
            "{}",
            e.message
        );
        assert_eq!(e.code, 2);
        for bad in [0.5, f64::NAN, f64::INFINITY, 1e9] {
            assert!(refused(&args(Some(bad))).is_some(), "{bad} accepted");
        }
        assert!(!dir.path().join("records").exists(), "a refusal made state");
    }

    /// The operator's cheapest way to a fresh record budget used to be one appended row (a new
    /// file digest, so a new ledger). Now the ledger follows the declared name: the file with
    /// a row appended gets the same policy and the same ledger path, and its charges record
    /// the new digest and N; only another name (which every published summary then shows as
    /// another dataset) gets another ledger.
    #[test]
    fn appending_a_row_keeps_the_ledger_and_only_another_name_changes_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("plant.csv");
        std::fs::write(&data, b"header\nrow 1\n").unwrap();
        let a = args(Some(40.0));
        let before = setup_rows(&a, dir.path(), &data, 1000).unwrap();
        std::fs::write(&data, b"header\nrow 1\nrow 2\n").unwrap();
        let after = setup_rows(&a, dir.path(), &data, 1001).unwrap();
        assert_eq!(before.path, after.path);
        assert_eq!(before.policy, after.policy);
        assert_eq!(
            before.policy.max_records, 100_000,
            "the δ rule's largest N at 1e-6"
        );
        assert_ne!(before.data.file, after.data.file);
        assert_eq!((before.data.records, after.data.records), (1000, 1001));
        let mut other = args(Some(40.0));
        other.record_dataset = "line-2".into();
        let renamed = setup_rows(&other, dir.path(), &data, 1001).unwrap();
        assert_ne!(renamed.path, after.path);
        // A file past the declared N_max, or a malformed name, is refused before any state.
        let mut small = args(Some(40.0));
        small.record_max_records = Some(1000);
        let e = setup_rows(&small, dir.path(), &data, 1001)
            .err()
            .expect("refused");
        assert!(e.message.contains("1..=1000"), "{}", e.message);
        let mut bad = args(Some(40.0));
        bad.record_dataset = "../escape".into();
        let e = setup_rows(&bad, dir.path(), &data, 1001)
            .err()
            .expect("refused");
        assert!(e.message.contains("--record-dataset"), "{}", e.message);
    }
}
