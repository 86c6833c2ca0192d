//! Privacy accounting on opendp: per-round ρ, composition over rounds, (ε, δ), calibration.
//!
//! All quantities are in the integer (scaled) domain the noise is added in.
//!
//! * Per round, the aggregate carries the sum of n_min (or more) independent N_Z(0, σ²) shares,
//!   σ the scaled local standard deviation. That sum is not exactly a discrete Gaussian; KLS21
//!   Theorem 1 (Proposition 14, Eq. 17) bounds its Rényi divergence for an L2 sensitivity Δ by
//!   α/2 · (Δ/(√n·σ) + τ√D)², i.e. ρ-zCDP with ρ = ½(Δ/(√n σ) + τ√D)², where
//!   τ = 10·Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1)) and D is the vector length. opendp's
//!   `make_gaussian` (proof: `MakeNoise_for_DiscreteGaussian.tex`, CKS20 Theorem 14) gives
//!   ρ = (Δ'/σ_tot)²/2 for a discrete Gaussian of scale σ_tot = √n·σ; evaluating its map at
//!   Δ' = Δ + τ√D·σ_tot yields exactly the DDG bound above.
//! * zCDP composes additively (Bun & Steinke 2016, Lemma 2.3): opendp `make_composition`.
//! * ρ-zCDP → (ε, δ): opendp `make_zCDP_to_approxDP` (the optimal conversion of Canonne, Kamath,
//!   Steinke 2020, Proposition 12 / Corollary 13) and `make_fix_delta`.
//! * The fast sampler is within total-variation distance η_total of the exact mechanism over the
//!   whole run. If M is (ε, δ₀)-DP and ‖M'(x) − M(x)‖_TV ≤ η for every input, then
//!   P[M'(x) ∈ S] ≤ e^ε P[M'(x') ∈ S] + δ₀ + (1 + e^ε)·η, so M' is (ε, δ₀ + (1 + e^ε)η)-DP.
//!   [`epsilon_at`] spends that term out of δ.

use opendp::combinators::{make_composition, make_fix_delta, make_zCDP_to_approxDP};
use opendp::core::Measurement;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;

use crate::error::AccountError;
use crate::params::{Adjacency, Delta, Distance, Epsilon, Rho, Sensitivity, Sigma, SiteCount};

type ZcdpMeasurement = Measurement<
    VectorDomain<AtomDomain<i64>>,
    L2Distance<f64>,
    ZeroConcentratedDivergence,
    Vec<i64>,
>;

/// What one round's guarantee depends on (integer domain).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundPrivacy {
    /// L2 bound of one plant's rounded, scaled contribution (zero-out).
    pub sensitivity: Sensitivity,
    /// Neighbouring relation: replace-one doubles Δ.
    pub adjacency: Adjacency,
    /// Scaled local noise standard deviation σ = γ·σ_local.
    pub scaled_local_sigma: Sigma,
    /// Fewest plants whose noise is in the sum.
    pub n_min: SiteCount,
    /// Length D of the noised vector (padded dimension).
    pub padded_dim: u64,
}

/// τ of KLS21 Theorem 1: 10·Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1)).
pub fn ddg_tau(scaled_local_sigma: Sigma, n: SiteCount) -> f64 {
    let s2 = scaled_local_sigma.get().powi(2);
    let pi2 = std::f64::consts::PI.powi(2);
    let sum: f64 = (1..n.get())
        .map(|k| {
            let k = f64::from(k);
            (-2.0 * pi2 * s2 * k / (k + 1.0)).exp()
        })
        .sum();
    10.0 * sum
}

/// opendp's discrete Gaussian on integer vectors with the round's parameters normalised so that
/// its map at distance 1 is the round's ρ (scale σ_tot/Δ').
fn normalised_round(round: &RoundPrivacy) -> Result<ZcdpMeasurement, AccountError> {
    let n = round.n_min;
    let sigma_total = f64::from(n.get()).sqrt() * round.scaled_local_sigma.get();
    let delta = round.sensitivity.get() * round.adjacency.sensitivity_factor();
    let tau = ddg_tau(round.scaled_local_sigma, n);
    let effective = delta + tau * (round.padded_dim as f64).sqrt() * sigma_total;
    Ok(make_gaussian(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L2Distance::<f64>::default(),
        sigma_total / effective,
        None,
    )?)
}

/// ρ of one round (KLS21 Theorem 1 through opendp, see the module docs).
pub fn round_rho(round: &RoundPrivacy) -> Result<Rho, AccountError> {
    Ok(Rho::new(normalised_round(round)?.map(&1.0)?)?)
}

/// ρ of a plain (not distributed) Gaussian with noise multiplier z = σ/Δ: 1/(2z²), via opendp.
pub fn gaussian_rho(noise_multiplier: Sigma) -> Result<Rho, AccountError> {
    let m = make_gaussian(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L2Distance::<f64>::default(),
        noise_multiplier.get(),
        None,
    )?;
    Ok(Rho::new(m.map(&1.0)?)?)
}

/// A measurement with ρ as its map at distance 1 (scale 1/√(2ρ)); ρ = 0 gives scale ∞.
fn measurement_for_rho(rho: Rho) -> Result<ZcdpMeasurement, AccountError> {
    let scale = if rho.get() > 0.0 {
        (2.0 * rho.get()).sqrt().recip()
    } else {
        f64::MAX
    };
    Ok(make_gaussian(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L2Distance::<f64>::default(),
        scale,
        None,
    )?)
}

/// Composes per-round ρ values with opendp `make_composition` and returns the total.
pub fn compose(rhos: &[Rho]) -> Result<Rho, AccountError> {
    if rhos.is_empty() {
        return Err(AccountError::NoRounds);
    }
    let parts = rhos
        .iter()
        .map(|&r| measurement_for_rho(r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rho::new(make_composition(parts)?.map(&1.0)?)?)
}

/// ε at exactly `delta` of a ρ-zCDP mechanism: opendp `make_zCDP_to_approxDP` + `make_fix_delta`.
fn epsilon_of_rho(rho: Rho, delta: f64) -> Result<f64, AccountError> {
    let m = measurement_for_rho(rho)?;
    let approx = make_zCDP_to_approxDP(m)?;
    let fixed = make_fix_delta(&approx, delta)?;
    Ok(fixed.map(&1.0)?.0)
}

/// ε at `delta` for a run with total ρ `rho_total` whose noise was drawn within total-variation
/// distance `sampler_distance` of the exact samplers (0 for opendp's exact sampler); the
/// sampler's share (1 + e^ε)·η is taken out of δ first (module docs).
pub fn epsilon_at(
    rho_total: Rho,
    delta: Delta,
    sampler_distance: Distance,
) -> Result<Epsilon, AccountError> {
    let eta = sampler_distance.get();
    if eta == 0.0 {
        return Ok(Epsilon::new(epsilon_of_rho(rho_total, delta.get())?)?);
    }
    // ε(δ/2) ≥ ε(δ − share) whenever share ≤ δ/2, so the share computed from it is an upper bound.
    let guess = epsilon_of_rho(rho_total, delta.get() / 2.0)?;
    let share = (1.0 + guess.exp()) * eta;
    // A NaN share (from an infinite guess) is refused as well.
    if share.is_nan() || share > delta.get() / 2.0 {
        return Err(AccountError::SamplerDistanceTooLarge {
            distance: eta,
            delta: delta.get(),
        });
    }
    Ok(Epsilon::new(epsilon_of_rho(
        rho_total,
        delta.get() - share,
    )?)?)
}

/// Smallest noise multiplier z = σ/Δ (to a relative 10⁻⁹) such that `rounds` rounds of a
/// Gaussian with ρ = 1/(2z²) stay within `target` at `delta`, by bisection (ε decreases in z).
pub fn calibrate_noise_multiplier(
    target: Epsilon,
    delta: Delta,
    rounds: u32,
) -> Result<Sigma, AccountError> {
    calibrate(target, delta, rounds, gaussian_rho)
}

/// Smallest σ such that `rounds` rounds of ρ(σ) stay within `target` at `delta`, by bisection
/// over σ ∈ [10⁻³, 10⁹] on a log scale; `rho_of` must decrease in σ. Exact sampling is assumed:
/// the fast sampler's share of δ, (1 + e^ε)·η with η below 10⁻³⁰ per sample, is charged by the ledger.
pub fn calibrate(
    target: Epsilon,
    delta: Delta,
    rounds: u32,
    rho_of: impl Fn(Sigma) -> Result<Rho, AccountError>,
) -> Result<Sigma, AccountError> {
    if rounds == 0 {
        return Err(AccountError::NoRounds);
    }
    let eps_of = |sigma: f64| -> Result<f64, AccountError> {
        let rho = rho_of(Sigma::new(sigma)?)?;
        epsilon_of_rho(Rho::new(rho.get() * f64::from(rounds))?, delta.get())
    };
    let (low, high) = (1e-3f64, 1e9f64);
    if eps_of(high)? > target.get() {
        return Err(AccountError::CalibrationFailed {
            target: target.get(),
            low,
            high,
        });
    }
    let (mut lo, mut hi) = (low.ln(), high.ln());
    while hi - lo > 1e-9 {
        let mid = 0.5 * (lo + hi);
        if eps_of(mid.exp())? > target.get() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Sigma::new(hi.exp())?)
}

/// Standard normal cumulative distribution Φ(x).
fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// ε at `delta` from the exact privacy profile of a Gaussian mechanism with μ = Δ/σ (Balle &
/// Wang, ICML 2018, "Improving the Gaussian Mechanism for Differential Privacy", Theorem 8):
/// δ(ε) = Φ(μ/2 − ε/μ) − e^ε·Φ(−μ/2 − ε/μ), solved for ε by bisection. T rounds of a Gaussian
/// of multiplier z compose exactly to μ = √T/z.
///
/// This is tighter than the zCDP conversion the ledger uses (at T = 100, z = 10, δ = 10⁻⁶:
/// 4.89 against 5.22), but it is the profile of the *continuous* Gaussian. The DDG aggregate is
/// a sum of discrete Gaussians whose guarantee KLS21 proves as a Rényi (zCDP) bound, not as a
/// privacy profile, so the ledger charges the zCDP conversion; this function is offered for
/// comparison and for mechanisms that really are continuous Gaussians.
pub fn gaussian_profile_epsilon(mu: f64, delta: Delta) -> Result<Epsilon, AccountError> {
    if !(mu.is_finite() && mu > 0.0) {
        return Err(crate::error::ParamError::OutOfRange {
            name: "mu",
            value: mu,
            rule: "finite and > 0",
        }
        .into());
    }
    let profile =
        |eps: f64| normal_cdf(mu / 2.0 - eps / mu) - eps.exp() * normal_cdf(-mu / 2.0 - eps / mu);
    let d = delta.get();
    if profile(0.0) <= d {
        return Ok(Epsilon::ZERO);
    }
    // δ(ε) decreases in ε; grow the upper end until it is below δ.
    let mut hi = 1.0f64;
    while profile(hi) > d {
        hi *= 2.0;
        if hi > 1e6 {
            return Err(AccountError::CalibrationFailed {
                target: d,
                low: 0.0,
                high: hi,
            });
        }
    }
    let mut lo = 0.0f64;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if profile(mid) > d {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Epsilon::new(hi)?)
}
