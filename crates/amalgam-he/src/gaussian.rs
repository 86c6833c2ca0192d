//! Rounded Gaussian noise for KAHE bodies, drawn from a keystream (never from a
//! non-cryptographic generator).
//!
//! Box–Muller on 53-bit uniforms: `z = sqrt(−2 ln u1) · cos(2π u2)`, `e = round(σ z)`. Because
//! `u1 ≥ 2^-53`, `|z| ≤ sqrt(106 ln 2) < 8.58`, so every sample satisfies `|e| ≤ `
//! [`noise_bound`]`(σ)` deterministically; the parameter check uses that bound, so a sum of
//! honest bodies never fails to decode. Gaussian (not uniform) noise is what makes the noise sum
//! the aggregator learns once the key sum is known cost exactly a factor √2 in σ.

use crate::field::{UniformSampler, from_i64};

/// Largest |z| Box–Muller can return from 53-bit uniforms (sqrt(106 ln 2) = 8.5717...).
const Z_MAX: f64 = 8.5718;

/// The deterministic bound on one rounded sample of standard deviation `sigma`.
pub fn noise_bound(sigma: f64) -> u64 {
    (sigma * Z_MAX).ceil() as u64 + 1
}

/// A uniform in `(0, 1]` with 53 bits of precision.
#[inline]
fn open_unit(s: &mut UniformSampler) -> f64 {
    ((s.next_word() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Fills `out` with rounded Gaussian samples of standard deviation `sigma`, mod q.
pub fn fill_noise(s: &mut UniformSampler, sigma: f64, out: &mut [u64]) {
    let mut pairs = out.chunks_exact_mut(2);
    for pair in &mut pairs {
        let (a, b) = sample_pair(s, sigma);
        pair[0] = from_i64(a);
        pair[1] = from_i64(b);
    }
    if let [last] = pairs.into_remainder() {
        *last = from_i64(sample_pair(s, sigma).0);
    }
}

/// Two independent rounded samples.
#[inline]
fn sample_pair(s: &mut UniformSampler, sigma: f64) -> (i64, i64) {
    let r = (-2.0 * open_unit(s).ln()).sqrt() * sigma;
    let (sin, cos) = (core::f64::consts::TAU * open_unit(s)).sin_cos();
    ((r * cos).round() as i64, (r * sin).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::centred;

    #[test]
    fn samples_have_the_stated_spread_and_bound() {
        let sigma = 65536.0;
        let mut out = vec![0u64; 1 << 16];
        fill_noise(&mut UniformSampler::new(&[9; 32]), sigma, &mut out);
        let vals: Vec<f64> = out.iter().map(|&v| centred(v) as f64).collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
        assert!(mean.abs() < 0.02 * sigma, "mean {mean}");
        assert!((var.sqrt() / sigma - 1.0).abs() < 0.02, "sd {}", var.sqrt());
        let bound = noise_bound(sigma) as f64;
        assert!(vals.iter().all(|v| v.abs() <= bound));
        // Gaussian, not uniform: about 68 % within one σ.
        let within = vals.iter().filter(|v| v.abs() <= sigma).count() as f64 / vals.len() as f64;
        assert!((within - 0.6827).abs() < 0.01, "{within}");
    }
}
