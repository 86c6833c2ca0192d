//! White-box test of the fast sampler: its exact output distribution, built from the tables'
//! 128-bit cumulative values and, above σ = 256, their convolution X = kY + Z, against the
//! analytic pmf of N_Z(0, σ²). Deterministic: no sampling, so nothing is left to chance.

use super::FastSampler;
use crate::params::Sigma;

/// The analytic pmf of N_Z(0, σ²) on [lo, lo + len), normalised over ±(40σ + 10) (the mass
/// beyond is below 10⁻³⁴⁰).
fn analytic(sigma: f64, lo: i64, len: usize) -> (Vec<f64>, f64) {
    let m = (40.0 * sigma).ceil() as i64 + 10;
    let w = |x: i64| (-((x * x) as f64) / (2.0 * sigma * sigma)).exp();
    let z: f64 = (-m..=m).map(w).sum();
    let variance: f64 = (-m..=m).map(|x| (x * x) as f64 * w(x)).sum::<f64>() / z;
    ((0..len as i64).map(|i| w(lo + i) / z).collect(), variance)
}

#[test]
fn output_pmf_matches_the_analytic_pmf_to_1e_minus_9() {
    let sigmas = [
        0.5, 0.7, 1.0, 2.5, 10.0, 63.3, 255.9, 256.0, 256.1, 257.0, 300.0, 1e3, 1e4, 1e5,
    ];
    for sigma in sigmas {
        let sampler =
            FastSampler::from_seed(Sigma::new(sigma).unwrap_or_else(|e| panic!("{e}")), [0; 32])
                .unwrap_or_else(|e| panic!("{e}"));
        let (lo, pmf) = sampler.output_pmf();
        let (target, variance) = analytic(sigma, lo, pmf.len());
        let total: f64 = pmf.iter().sum();
        assert!((total - 1.0).abs() < 1e-12, "sigma={sigma}: mass {total}");
        // The output support covers the analytic mass up to < 1e-30 (tables reach ~14σ).
        let covered: f64 = target.iter().sum();
        let tv = 0.5
            * (pmf
                .iter()
                .zip(&target)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                + (1.0 - covered).max(0.0));
        let mean: f64 = pmf
            .iter()
            .enumerate()
            .map(|(i, &p)| (lo + i as i64) as f64 * p)
            .sum();
        let var: f64 = pmf
            .iter()
            .enumerate()
            .map(|(i, &p)| ((lo + i as i64) as f64 - mean).powi(2) * p)
            .sum();
        let rel = (var / variance - 1.0).abs();
        assert!(tv < 1e-9, "sigma={sigma}: total variation {tv:e}");
        assert!(rel < 1e-9, "sigma={sigma}: relative variance error {rel:e}");
        assert!(mean.abs() < 1e-9 * sigma, "sigma={sigma}: mean {mean:e}");
    }
}

#[test]
fn the_white_box_check_fails_for_a_wrong_sigma() {
    // The same comparison against σ·(1 + 10⁻⁴) is far outside 1e-9: the test can fail.
    for sigma in [3.0, 257.0] {
        let sampler = FastSampler::from_seed(
            Sigma::new(sigma * (1.0 + 1e-4)).unwrap_or_else(|e| panic!("{e}")),
            [0; 32],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (lo, pmf) = sampler.output_pmf();
        let (target, variance) = analytic(sigma, lo, pmf.len());
        let tv: f64 = 0.5
            * pmf
                .iter()
                .zip(&target)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>();
        let var: f64 = pmf
            .iter()
            .enumerate()
            .map(|(i, &p)| ((lo + i as i64) as f64).powi(2) * p)
            .sum();
        assert!(
            tv > 1e-6 && (var / variance - 1.0).abs() > 1e-5,
            "sigma={sigma}"
        );
    }
}
