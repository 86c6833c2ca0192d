//! Statistical tests of the fast sampler against the analytic pmf of N_Z(0, σ²) and against
//! opendp's exact sampler.
//!
//! Fixed in advance: seeds, sample counts, bins (from the analytic pmf only), and a significance
//! level α = 10⁻⁶ per test for χ² (p-value from the regularised incomplete gamma function) and
//! Kolmogorov-Smirnov (asymptotic critical value √(ln(2/α)/2)·scale, conservative for discrete
//! distributions). Tails are checked by a binomial z-test at |z| ≤ 5.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_dp::params::Sigma;
use amalgam_dp::sampler::{ExactSampler, FastSampler, NoiseSampler, SamplerKind, distance_bound};

const ALPHA: f64 = 1e-6;
const FAST_SAMPLES: usize = 200_000;
const EXACT_SAMPLES: usize = 3_000;
const SIGMAS: [f64; 7] = [0.5, 1.0, 3.0, 10.0, 100.0, 1e3, 1e5];

/// The analytic pmf of N_Z(0, σ²) on [−M, M] with M = 15σ (mass beyond is below 10⁻⁴⁸).
struct Pmf {
    lo: i64,
    p: Vec<f64>,
}

impl Pmf {
    fn new(sigma: f64) -> Self {
        let m = (15.0 * sigma).ceil() as i64 + 1;
        let w: Vec<f64> = (-m..=m)
            .map(|x| (-((x * x) as f64) / (2.0 * sigma * sigma)).exp())
            .collect();
        let z: f64 = w.iter().sum();
        Self {
            lo: -m,
            p: w.iter().map(|v| v / z).collect(),
        }
    }

    /// Bins: integer ranges [start, next start) each with probability ≥ 1/target (the last
    /// absorbs the remainder), the first and last open-ended.
    fn bins(&self, target: usize) -> Vec<(i64, f64)> {
        let mut bins = Vec::new();
        let (mut acc, mut start) = (0.0, i64::MIN);
        for (i, &p) in self.p.iter().enumerate() {
            acc += p;
            if acc >= 1.0 / target as f64 {
                bins.push((start, acc));
                start = self.lo + i as i64 + 1;
                acc = 0.0;
            }
        }
        if let Some(last) = bins.last_mut() {
            last.1 += acc;
        }
        bins
    }

    fn variance(&self) -> f64 {
        self.p
            .iter()
            .enumerate()
            .map(|(i, &p)| ((self.lo + i as i64) as f64).powi(2) * p)
            .sum()
    }

    fn cdf(&self, x: i64) -> f64 {
        if x < self.lo {
            return 0.0;
        }
        let end = ((x - self.lo) as usize).min(self.p.len() - 1);
        self.p[..=end].iter().sum()
    }
}

fn bin_index(bins: &[(i64, f64)], x: i64) -> usize {
    bins.partition_point(|&(start, _)| start <= x) - 1
}

fn chi_square_p_value(observed: &[u64], expected: &[f64]) -> f64 {
    let stat: f64 = observed
        .iter()
        .zip(expected)
        .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
        .sum();
    let df = (observed.len() - 1) as f64;
    statrs::function::gamma::gamma_ur(df / 2.0, stat / 2.0)
}

fn ks_critical(scale: f64) -> f64 {
    ((2.0 / ALPHA).ln() / 2.0).sqrt() * scale
}

fn fast_samples(sigma: f64, seed: u8, n: usize) -> Vec<i64> {
    let mut s = FastSampler::from_seed(Sigma::new(sigma).unwrap(), [seed; 32]).unwrap();
    let mut out = vec![0; n];
    s.fill(&mut out).unwrap();
    out
}

#[test]
fn fast_sampler_matches_the_analytic_pmf_chi_square() {
    for (i, &sigma) in SIGMAS.iter().enumerate() {
        let pmf = Pmf::new(sigma);
        let bins = pmf.bins(60);
        let samples = fast_samples(sigma, 10 + i as u8, FAST_SAMPLES);
        let mut observed = vec![0u64; bins.len()];
        for &x in &samples {
            observed[bin_index(&bins, x)] += 1;
        }
        let expected: Vec<f64> = bins.iter().map(|&(_, p)| p * FAST_SAMPLES as f64).collect();
        assert!(expected.iter().all(|&e| e >= 5.0));
        let p = chi_square_p_value(&observed, &expected);
        assert!(
            p > ALPHA,
            "sigma={sigma}: chi-square p-value {p:e} over {} bins",
            bins.len()
        );
    }
}

#[test]
fn fast_sampler_matches_the_analytic_cdf_kolmogorov_smirnov() {
    for (i, &sigma) in SIGMAS.iter().enumerate() {
        let pmf = Pmf::new(sigma);
        let mut samples = fast_samples(sigma, 30 + i as u8, FAST_SAMPLES);
        samples.sort_unstable();
        let n = samples.len() as f64;
        let (mut d, mut j, mut cdf) = (0.0f64, 0usize, 0.0f64);
        for (k, &p) in pmf.p.iter().enumerate() {
            let x = pmf.lo + k as i64;
            cdf += p;
            while j < samples.len() && samples[j] <= x {
                j += 1;
            }
            d = d.max((j as f64 / n - cdf).abs());
        }
        let crit = ks_critical(1.0 / n.sqrt());
        assert!(d < crit, "sigma={sigma}: KS D={d} >= {crit}");
        // Mean and variance within 6 standard errors of 0 and σ².
        let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = samples
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let true_var: f64 = pmf
            .p
            .iter()
            .enumerate()
            .map(|(k, p)| p * ((pmf.lo + k as i64) as f64).powi(2))
            .sum();
        assert!(
            mean.abs() < 6.0 * (true_var / n).sqrt(),
            "sigma={sigma}: mean {mean}"
        );
        assert!(
            (var - true_var).abs() < 6.0 * true_var * (2.0 / n).sqrt(),
            "sigma={sigma}: var {var}"
        );
        assert!(pmf.cdf(0) > 0.5);
    }
}

#[test]
fn fast_sampler_tails_have_the_analytic_mass() {
    // Tail beyond 2.5σ (beyond 1 for σ = 0.5, where 2.5σ is not a lattice gap) on each side.
    for (i, &sigma) in SIGMAS.iter().enumerate() {
        let pmf = Pmf::new(sigma);
        let t = ((2.5 * sigma).floor() as i64).max(1);
        let p_tail: f64 = 1.0 - pmf.cdf(t);
        let samples = fast_samples(sigma, 50 + i as u8, FAST_SAMPLES);
        let n = samples.len() as f64;
        for (side, count) in [
            ("upper", samples.iter().filter(|&&x| x > t).count()),
            ("lower", samples.iter().filter(|&&x| x < -t).count()),
        ] {
            let z = (count as f64 - n * p_tail) / (n * p_tail * (1.0 - p_tail)).sqrt();
            assert!(
                z.abs() < 5.0,
                "sigma={sigma} {side} tail: count {count}, expected {}",
                n * p_tail
            );
        }
        // Nothing beyond 14.5σ + 2 (the table bound); at these counts even 6σ is rare.
        let limit = (14.5 * sigma).ceil() as i64 + 2;
        assert!(samples.iter().all(|x| x.abs() <= limit));
    }
}

#[test]
fn fast_sampler_matches_opendp_exact_sampler() {
    for (i, &sigma) in SIGMAS.iter().enumerate() {
        let mut exact = ExactSampler::new(Sigma::new(sigma).unwrap()).unwrap();
        let mut reference = vec![0i64; EXACT_SAMPLES];
        exact.fill(&mut reference).unwrap();
        let mut fast = fast_samples(sigma, 70 + i as u8, FAST_SAMPLES / 4);
        reference.sort_unstable();
        fast.sort_unstable();
        // Two-sample KS over the union of values.
        let (n, m) = (reference.len() as f64, fast.len() as f64);
        let (mut a, mut b, mut d) = (0usize, 0usize, 0.0f64);
        while a < reference.len() && b < fast.len() {
            let x = reference[a].min(fast[b]);
            while a < reference.len() && reference[a] <= x {
                a += 1;
            }
            while b < fast.len() && fast[b] <= x {
                b += 1;
            }
            d = d.max((a as f64 / n - b as f64 / m).abs());
        }
        let crit = ks_critical(((n + m) / (n * m)).sqrt());
        assert!(d < crit, "sigma={sigma}: two-sample KS D={d} >= {crit}");
        // χ² homogeneity on 12 bins from the analytic pmf.
        let bins = Pmf::new(sigma).bins(12);
        let (mut ce, mut cf) = (vec![0u64; bins.len()], vec![0u64; bins.len()]);
        reference.iter().for_each(|&x| ce[bin_index(&bins, x)] += 1);
        fast.iter().for_each(|&x| cf[bin_index(&bins, x)] += 1);
        let total = n + m;
        let mut stat = 0.0;
        for (&e, &f) in ce.iter().zip(&cf) {
            let col = (e + f) as f64;
            for (obs, rows) in [(e as f64, n), (f as f64, m)] {
                let exp = rows * col / total;
                stat += (obs - exp).powi(2) / exp;
            }
        }
        let p = statrs::function::gamma::gamma_ur((bins.len() - 1) as f64 / 2.0, stat / 2.0);
        assert!(p > ALPHA, "sigma={sigma}: homogeneity p-value {p:e}");
    }
}

#[test]
fn a_biased_sampler_is_detected_by_the_same_tests() {
    // The tests can fail: samples of σ·1.02 are rejected against the pmf of σ.
    let sigma = 10.0;
    let pmf = Pmf::new(sigma);
    let bins = pmf.bins(60);
    let samples = fast_samples(sigma * 1.02, 90, FAST_SAMPLES);
    let mut observed = vec![0u64; bins.len()];
    samples
        .iter()
        .for_each(|&x| observed[bin_index(&bins, x)] += 1);
    let expected: Vec<f64> = bins.iter().map(|&(_, p)| p * FAST_SAMPLES as f64).collect();
    assert!(chi_square_p_value(&observed, &expected) < ALPHA);
}

#[test]
fn distance_bounds_are_negligible_and_exact_is_zero() {
    // Up to the supported maximum, where the tables are largest.
    for &sigma in SIGMAS.iter().chain(&[1e6, 1e7]) {
        let s = FastSampler::new(Sigma::new(sigma).unwrap()).unwrap();
        let d = s.distance_per_sample().get();
        assert!(d > 0.0 && d < 1e-30, "sigma={sigma}: {d:e}");
        // The crate's own bound, the one the ledger records and the audit recomputes.
        assert_eq!(
            distance_bound(SamplerKind::Fast, Sigma::new(sigma).unwrap()),
            Ok(s.distance_per_sample())
        );
        assert_eq!(
            ExactSampler::new(Sigma::new(sigma).unwrap())
                .unwrap()
                .distance_per_sample()
                .get(),
            0.0
        );
    }
    assert!(FastSampler::new(Sigma::new(0.4).unwrap()).is_err());
    assert!(FastSampler::new(Sigma::new(2e7).unwrap()).is_err());
}

#[test]
fn the_fast_stream_is_reproducible_from_its_seed() {
    assert_eq!(fast_samples(3.0, 5, 1000), fast_samples(3.0, 5, 1000));
    assert_ne!(fast_samples(3.0, 5, 1000), fast_samples(3.0, 6, 1000));
}

#[test]
fn os_seeded_samplers_never_share_a_stream() {
    let draw = || {
        let mut s = FastSampler::new(Sigma::new(3.0).unwrap()).unwrap();
        let mut out = vec![0i64; 256];
        s.fill(&mut out).unwrap();
        out
    };
    assert_ne!(draw(), draw());
}

/// Sample variance of `n` draws of the fast sampler at `sigma` (seeded), relative to the
/// analytic variance of N_Z(0, target²).
fn relative_variance_error(sigma: f64, target: f64, seed: u8, n: usize) -> f64 {
    let mut s = FastSampler::from_seed(Sigma::new(sigma).unwrap(), [seed; 32]).unwrap();
    let mut buf = vec![0i64; 1 << 16];
    let (mut sum, mut sum_sq) = (0f64, 0f64);
    let mut left = n;
    while left > 0 {
        let take = left.min(buf.len());
        s.fill(&mut buf[..take]).unwrap();
        for &x in &buf[..take] {
            let x = x as f64;
            sum += x;
            sum_sq += x * x;
        }
        left -= take;
    }
    let mean = sum / n as f64;
    let var = sum_sq / n as f64 - mean * mean;
    var / Pmf::new(target).variance() - 1.0
}

/// 8·10⁶ samples per σ: the sample variance's relative standard deviation is √(2/n) = 0.05 %,
/// so the ±0.25 % acceptance band is 5 standard deviations wide on each side, and a 0.5 %
/// variance error lies 5 more beyond it (both failure probabilities ≈ 3·10⁻⁷). Seeds are fixed.
const VARIANCE_SAMPLES: usize = 8_000_000;
const VARIANCE_BAND: f64 = 0.0025;

#[test]
fn fast_sampler_variance_is_within_a_quarter_percent_and_a_half_percent_error_is_caught() {
    for (i, &sigma) in [2.0, 300.0, 1e5].iter().enumerate() {
        let err = relative_variance_error(sigma, sigma, 40 + i as u8, VARIANCE_SAMPLES);
        assert!(
            err.abs() < VARIANCE_BAND,
            "sigma={sigma}: relative variance error {err}"
        );
    }
    // The same test on samplers whose variance is 0.5 % low or high fails.
    for (i, factor) in [0.995f64, 1.005].into_iter().enumerate() {
        let sigma = 300.0;
        let err =
            relative_variance_error(sigma * factor.sqrt(), sigma, 50 + i as u8, VARIANCE_SAMPLES);
        assert!(
            err.abs() >= VARIANCE_BAND,
            "factor {factor}: error {err} not caught"
        );
    }
}
