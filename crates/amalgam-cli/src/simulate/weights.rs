//! `simulate --weight-mode`: how the federated step weights the plants. `uniform` (the
//! default) counts every contributing plant once; `noised` is DP-FedAvg (McMahan et al.
//! 2018): each plant's private row count n becomes w = min(n / n_cap, 1), carried as κ·w in
//! an extra coordinate of the same clipped, masked and noised vector, and every party divides
//! the decoded sum by the decoded weight sum over κ, clamped to [floor, contributors]. n_cap,
//! κ and the floor are public and signed into the manifest.

use amalgam_consortium::NoisedWeightPolicy;
use amalgam_consortium::noised_policy::{NoisedContext, NoisedPolicyError, check_noised_policy};
use clap::ValueEnum;

use crate::Failure;

/// The campaign's weight mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WeightArg {
    /// Every contributing plant counts once.
    Uniform,
    /// DP-FedAvg weights from each plant's private row count, noised with the update.
    Noised,
}

/// The weight flags of `simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct WeightFlags {
    /// How the federated step weights plants: `uniform`, or `noised` (w = min(rows / n_cap,
    /// 1) per plant, summed under the mask with the update's noise).
    #[arg(long, value_enum, default_value = "uniform")]
    pub weight_mode: WeightArg,
    /// Row count at which a plant's weight reaches 1 (`--weight-mode noised`; public;
    /// default 1000).
    #[arg(long)]
    pub n_cap: Option<u32>,
    /// Scale κ of the weight coordinate, 0 < κ ≤ C (`--weight-mode noised`; default C / 2:
    /// the update keeps at least 89 % of the clip norm).
    #[arg(long)]
    pub kappa: Option<f64>,
    /// Public floor of the step's divisor, in full-weight plants, within [t/2, t]
    /// (`--weight-mode noised`; default t/2): a forged weight or the noise can amplify the
    /// step at most n / floor times.
    #[arg(long)]
    pub weight_floor: Option<f64>,
}

/// The noised weight policy of `flags` (`None` under uniform weights) for `plants` plants
/// with minimum cohort `t` and `c` tolerated colluders, clip norm `clip` and central σ
/// `sigma` (`None` without DP). The noised flags are refused under uniform weights, so
/// that a flag never reads as applied when it is not, and each number is checked against
/// the range the manifest enforces, with the flag's name.
pub fn policy(
    flags: &WeightFlags,
    (plants, t, c): (u16, u16, u16),
    clip: f64,
    sigma: Option<f64>,
) -> Result<Option<NoisedWeightPolicy>, Failure> {
    if flags.weight_mode == WeightArg::Uniform {
        if flags.n_cap.is_some() || flags.kappa.is_some() || flags.weight_floor.is_some() {
            return Err(Failure::usage(
                "--n-cap, --kappa and --weight-floor need --weight-mode noised",
            ));
        }
        return Ok(None);
    }
    let m = f64::from(t);
    let policy = NoisedWeightPolicy {
        n_cap: flags.n_cap.unwrap_or(1000),
        kappa: flags.kappa.unwrap_or(clip / 2.0),
        floor: flags.weight_floor.unwrap_or(m / 2.0),
    };
    let ctx = NoisedContext {
        clip,
        min_cohort: t,
        colluders: c,
        sites: plants,
        sigma,
    };
    // The manifest's own rule, reworded with the flags' names.
    check_noised_policy(&policy, &ctx).map_err(|e| {
        Failure::usage(match e {
            NoisedPolicyError::NCap => "--n-cap must be at least 1".to_string(),
            NoisedPolicyError::Kappa { kappa, clip } => {
                format!("--kappa {kappa} must be in (0, C = {clip}]")
            }
            NoisedPolicyError::Floor { floor, low, high } => format!(
                "--weight-floor {floor} must be in [{low}, {high}] (half the threshold t to t)"
            ),
            NoisedPolicyError::Noise { noise, floor } => format!(
                "--weight-mode noised: the weight sum's noise (σ·√(n/n_min)/κ = {noise:.2} plants) exceeds the floor {floor}, so the divisor would be noise; raise --kappa (up to C), lower --sigma, or use uniform weights"
            ),
        })
    })?;
    Ok(Some(policy))
}

/// How the report names the weight mode (`private`: under site-level DP, where the weight
/// sum the aggregator learns is noised; without DP it is exact).
pub fn describe(policy: Option<&NoisedWeightPolicy>, private: bool) -> String {
    match policy {
        None => "uniform (every contributing plant counts once)".into(),
        Some(p) => format!(
            "noised (DP-FedAvg: w = min(rows / {}, 1), κ = {}, divisor floor {}; {})",
            p.n_cap,
            p.kappa,
            p.floor,
            if private {
                "the aggregator and every member learn each round's noisy weight sum, covered by the site-level ε"
            } else {
                "no differential privacy: each round's exact weight sum is revealed to the aggregator and every member, and each plant's weight by differencing rounds"
            }
        ),
    }
}
