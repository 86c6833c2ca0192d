//! `amalgam site run --record-dp`: record-level DP-SGD at the plant, charged to the dataset's
//! record ledger (`protocol-spec/record-dp.md` §8, site-agent.md §3.1).
//!
//! The dataset id is the SHA-256 of the `--data` file and N_i its row count (treated as
//! public); the ledger lives in `--record-ledgers DIR` (default `STATE/records`), one directory
//! per dataset, so a second campaign pointed at the same directory keeps spending from the same
//! budget. σ is calibrated with `calibrate_noise_multiplier` so that the campaign's
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
    /// Record-level δ; at most 1/(10·N), N the plant's row count.
    #[arg(long)]
    pub record_delta: Option<f64>,
    /// Poisson sampling rate q of each step.
    #[arg(long, default_value_t = 0.01)]
    pub record_q: f64,
    /// Per-example clip norm C_rec.
    #[arg(long, default_value_t = 1.0)]
    pub record_clip: f64,
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
}

/// The default record-ledger directory of a state directory.
pub fn default_dir(state: &Path) -> PathBuf {
    state.join("records")
}

/// Calibrates σ and builds the policy for `rows` rows of a `dim`-parameter model, `steps`
/// noisy steps in the campaign.
#[cfg(feature = "train")]
pub fn setup(
    a: &RecordArgs,
    state: &Path,
    data: &Path,
    rows: usize,
    dim: usize,
    steps: u64,
) -> Result<RecordSetup, Failure> {
    use amalgam_dp::ledger::record::{RecordPolicy, dataset_id, record_ledger_path};
    use amalgam_dp::params::{Delta, Epsilon};
    use amalgam_dp::record::calibrate_noise_multiplier;

    let (Some(e), Some(d)) = (a.record_epsilon, a.record_delta) else {
        return Err(Failure::usage(
            "--record-dp needs --record-epsilon E and --record-delta D",
        ));
    };
    let epsilon = Epsilon::new(e).map_err(|e| Failure::usage(format!("--record-epsilon: {e}")))?;
    let delta = Delta::new(d).map_err(|e| Failure::usage(format!("--record-delta: {e}")))?;
    let bytes =
        std::fs::read(data).map_err(|e| Failure::failed(format!("{}: {e}", data.display())))?;
    let policy = RecordPolicy {
        dataset: dataset_id(&bytes),
        records: rows as u64,
        epsilon_cap: epsilon,
        delta,
    };
    amalgam_dp::ledger::record::validate_policy(&policy)
        .map_err(|e| Failure::usage(format!("--record-delta: {e}")))?;
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
            // N is treated as public (record-dp.md §1): the declared count fixes E|B| = q·N.
            expected_batch: (a.record_q * policy.records as f64).max(1.0),
        },
        noise_multiplier: cal.noise_multiplier,
    })
}
