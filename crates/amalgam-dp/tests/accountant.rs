//! The accountant: the reference point, adjacency, the DDG τ term, the sampler share of δ and
//! calibration.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_dp::accountant::{
    RoundPrivacy, calibrate, calibrate_noise_multiplier, compose, ddg_tau, epsilon_at,
    gaussian_profile_epsilon, gaussian_rho, round_rho,
};
use amalgam_dp::error::AccountError;
use amalgam_dp::params::{
    Adjacency, BitWidth, ClipNorm, Delta, Distance, Epsilon, OverflowMargin, Rho, RoundingBias,
    Sensitivity, Sigma, SiteCount,
};
use amalgam_dp::scaling::{choose_gamma, rounded_norm_bound};

fn delta() -> Delta {
    Delta::new(1e-6).unwrap()
}

/// T = 100 rounds, Δ = 1, σ = 10, δ = 10⁻⁶: ρ = 100·(1/10)²/2 = 0.5, and the zCDP → (ε, δ)
/// conversion (CKS20 Proposition 12, the best that knows only ρ) gives ε ≈ 5.22, to ±0.01. The classic bound
/// ρ + 2√(ρ ln(1/δ)) = 5.757 (Bun & Steinke 2016, Proposition 1.3) must be strictly looser.
#[test]
fn reference_point_t100_sigma10_delta1e6_gives_epsilon_5_22() {
    let per_round = gaussian_rho(Sigma::new(10.0).unwrap()).unwrap();
    assert!((per_round.get() - 0.005).abs() < 1e-12);
    let rho_total = compose(&vec![per_round; 100]).unwrap();
    assert!((rho_total.get() - 0.5).abs() < 1e-9);
    let eps = epsilon_at(rho_total, delta(), Distance::ZERO)
        .unwrap()
        .get();
    println!("reference epsilon (T=100, sigma=10, delta=1e-6): {eps:.6}");
    let classic = 0.5 + 2.0 * (0.5 * (1e6f64).ln()).sqrt();
    assert!(eps < classic, "{eps} not below the classic bound {classic}");
    assert!((eps - 5.22).abs() < 0.01, "epsilon {eps}");
}

fn round(n: u32, scaled_sigma: f64, adjacency: Adjacency) -> RoundPrivacy {
    RoundPrivacy {
        sensitivity: Sensitivity::new(100.0).unwrap(),
        adjacency,
        scaled_local_sigma: Sigma::new(scaled_sigma).unwrap(),
        n_min: SiteCount::new(n).unwrap(),
        padded_dim: 1 << 20,
    }
}

#[test]
fn replace_one_adjacency_costs_four_times_the_rho() {
    let zero_out = round_rho(&round(10, 50.0, Adjacency::ZeroOut))
        .unwrap()
        .get();
    let replace = round_rho(&round(10, 50.0, Adjacency::ReplaceOne))
        .unwrap()
        .get();
    assert!((replace / zero_out - 4.0).abs() < 1e-9);
    // With negligible τ, the round is a Gaussian of σ_tot = √10·50 on Δ = 100.
    let expected = (100.0f64 / (10f64.sqrt() * 50.0)).powi(2) / 2.0;
    assert!((zero_out / expected - 1.0).abs() < 1e-9);
}

#[test]
fn tau_vanishes_for_wide_shares_and_inflates_rho_for_narrow_ones() {
    let n = SiteCount::new(20).unwrap();
    assert!(ddg_tau(Sigma::new(5.0).unwrap(), n) < 1e-100);
    let narrow = ddg_tau(Sigma::new(0.5).unwrap(), n);
    // 10·Σ_{k=1}^{19} e^{−2π²·0.25·k/(k+1)}: each term lies in [e^{−π²/2}, e^{−π²/4}].
    assert!(narrow > 10.0 * 19.0 * (-std::f64::consts::PI.powi(2) / 2.0).exp());
    assert!(narrow < 10.0 * 19.0 * (-std::f64::consts::PI.powi(2) / 4.0).exp());
    // The inflated ρ is ½(Δ/σ_tot + τ√D)².
    let r = round(20, 0.5, Adjacency::ZeroOut);
    let rho = round_rho(&r).unwrap().get();
    let expected = 0.5 * (100.0 / (20f64.sqrt() * 0.5) + narrow * 1024.0).powi(2);
    assert!((rho / expected - 1.0).abs() < 1e-9);
    // A single site has no sum-of-Gaussians term.
    assert_eq!(
        ddg_tau(Sigma::new(0.5).unwrap(), SiteCount::new(1).unwrap()),
        0.0
    );
}

#[test]
fn sampler_distance_is_charged_to_delta() {
    let rho = Rho::new(0.5).unwrap();
    let exact = epsilon_at(rho, delta(), Distance::ZERO).unwrap().get();
    let tiny = epsilon_at(rho, delta(), Distance::new(1e-30).unwrap())
        .unwrap()
        .get();
    let large = epsilon_at(rho, delta(), Distance::new(1e-9).unwrap())
        .unwrap()
        .get();
    assert!(tiny >= exact && tiny - exact < 1e-9);
    assert!(large > exact);
    assert!(epsilon_at(rho, delta(), Distance::new(1e-7).unwrap()).is_err());
}

#[test]
fn calibration_finds_the_smallest_sufficient_noise() {
    // Brief §3: T = 100, δ = 10⁻⁶, ε = 10 needs σ ≈ 5.7·C.
    let target = Epsilon::new(10.0).unwrap();
    let z = calibrate_noise_multiplier(target, delta(), 100)
        .unwrap()
        .get();
    assert!((z - 5.7).abs() < 0.1, "noise multiplier {z}");
    let eps_at = |z: f64| {
        let rho = Rho::new(100.0 * gaussian_rho(Sigma::new(z).unwrap()).unwrap().get()).unwrap();
        epsilon_at(rho, delta(), Distance::ZERO).unwrap().get()
    };
    assert!(eps_at(z) <= 10.0 + 1e-6);
    assert!(eps_at(z * 0.999) > 10.0);
    // The reference point read backwards: calibrating for ε(σ = 10) returns σ = 10.
    let reference = eps_at(10.0);
    let back = calibrate_noise_multiplier(Epsilon::new(reference).unwrap(), delta(), 100)
        .unwrap()
        .get();
    assert!((back - 10.0).abs() < 1e-6, "{back}");
}

#[test]
fn ddg_calibration_accounts_for_tau_and_sites() {
    let target = Epsilon::new(3.0).unwrap();
    let sigma = calibrate(target, delta(), 50, |s| {
        round_rho(&RoundPrivacy {
            scaled_local_sigma: s,
            ..round(10, 1.0, Adjacency::ZeroOut)
        })
    })
    .unwrap()
    .get();
    let rho = round_rho(&round(10, sigma, Adjacency::ZeroOut))
        .unwrap()
        .get();
    let eps = epsilon_at(Rho::new(50.0 * rho).unwrap(), delta(), Distance::ZERO)
        .unwrap()
        .get();
    assert!(eps <= 3.0 + 1e-6 && eps > 2.99, "{eps}");
    assert!(calibrate(target, delta(), 0, |_| Ok(Rho::ZERO)).is_err());
}

#[test]
fn recorded_opendp_version_matches_the_lockfile() {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).unwrap();
    let entry = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"opendp\""))
        .unwrap();
    assert!(
        entry.contains(&format!("version = \"{}\"", amalgam_dp::OPENDP_VERSION)),
        "Cargo.lock opendp entry: {entry}"
    );
}

/// The exact Gaussian privacy profile (Balle & Wang 2018) at the reference point, μ = √T/z = 1:
/// 4.89, tighter than the zCDP conversion's 5.22 (for continuous Gaussians only; the ledger
/// keeps the zCDP bound, see the crate README).
#[test]
fn the_exact_gaussian_profile_is_tighter_at_the_reference_point() {
    let profile = gaussian_profile_epsilon(1.0, delta()).unwrap().get();
    assert!((profile - 4.89).abs() < 0.005, "{profile}");
    // It solves δ(ε) = δ: Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ).
    let phi = |x: f64| 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
    let d = phi(0.5 - profile) - profile.exp() * phi(-0.5 - profile);
    assert!((d / 1e-6 - 1.0).abs() < 1e-6, "{d}");
    let zcdp = epsilon_at(Rho::new(0.5).unwrap(), delta(), Distance::ZERO)
        .unwrap()
        .get();
    assert!(profile < zcdp);
}

/// The DDG figures the crate README quotes, computed here (T = 100, δ = 10⁻⁶, b = 16,
/// D = 2^20, n = 10 plants, β = e^(−1/2), overflow probability 10⁻⁴: TFF's defaults) and
/// checked against the README text, so the documentation cannot drift from the code.
#[test]
fn readme_figures_are_computed_by_the_crate() {
    let d: u64 = 1 << 20;
    let n = 10u32;
    let rho_of = |z: Sigma| -> Result<Rho, AccountError> {
        let local = Sigma::new(z.get() / f64::from(n).sqrt())?;
        let gamma = choose_gamma(
            BitWidth::new(16)?,
            SiteCount::new(n)?,
            ClipNorm::new(1.0)?,
            local,
            d,
            OverflowMargin::from_probability(1e-4)?,
        )
        .map_err(|e| AccountError::OpenDp(e.to_string()))?;
        round_rho(&RoundPrivacy {
            sensitivity: rounded_norm_bound(
                ClipNorm::new(1.0)?,
                gamma,
                RoundingBias::recommended(),
                d,
            )?,
            adjacency: Adjacency::ZeroOut,
            scaled_local_sigma: Sigma::new(gamma.get() * local.get())?,
            n_min: SiteCount::new(n)?,
            padded_dim: d,
        })
    };
    let eps_of = |rho: Rho| {
        epsilon_at(
            Rho::new(rho.get() * 100.0).unwrap(),
            delta(),
            Distance::ZERO,
        )
        .unwrap()
        .get()
    };
    let plain = eps_of(gaussian_rho(Sigma::new(5.7).unwrap()).unwrap());
    let ddg = eps_of(rho_of(Sigma::new(5.7).unwrap()).unwrap());
    let ddg_sigma = calibrate(Epsilon::new(10.0).unwrap(), delta(), 100, rho_of)
        .unwrap()
        .get();
    let profile = gaussian_profile_epsilon(1.0, delta()).unwrap().get();
    let zcdp = eps_of(gaussian_rho(Sigma::new(10.0).unwrap()).unwrap());
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for figure in [
        format!("plain Gaussian ε = {plain:.2}"),
        format!("with the DDG encoding ε = {ddg:.2}"),
        format!("σ ≈ {ddg_sigma:.2}·C"),
        format!("ε ≈ {zcdp:.2}"),
        format!("gives {profile:.2}"),
    ] {
        assert!(readme.contains(&figure), "README lacks \"{figure}\"");
    }
}
