//! Noise budget of a sum of compact-PKE ciphertexts, after removal of the deterministic bias.
//!
//! One ciphertext decrypts to `Δ·m + E_pk(r) + <e1, s> + e2` where `r` is the site's binary
//! encryption randomness, `e1`, `e2` are fresh TUniform(17) samples and `E_pk(r)` is the public
//! key's noise `e_pk` convolved with `r`. Because `r` is uniform on {0, 1} (mean 1/2, not 0), a sum
//! of `K` ciphertexts carries `E_pk(Σ r_k)` whose mean `(K/2)·E_pk(1)` grows linearly in `K`; the
//! key holder knows `e_pk` and subtracts it (see [`crate::decrypt`]). What remains is centred:
//!
//! * `Σ_k E_pk(r_k - 1/2)`: per site a sum of 2048 terms `±e_pk,i·(r_i - 1/2)`; bounded using the
//!   worst case `|e_pk,i| <= 2^17`, variance at most `2048 · 2^34 / 4`;
//! * `Σ_k <e1_k, s>`: at most 2048 TUniform terms per site (worst-case secret weight), variance
//!   `2048 · Var(TU17)` with `Var(TU(b)) = (2^(2b+1) + 1) / 6`;
//! * `Σ_k e2_k`: variance `Var(TU17)` per site.
//!
//! The decoded value is wrong only if the residual reaches `Δ/2`. The check models the residual
//! of `K` sites as Gaussian of variance `K·v` (a sum of ~4096·K independent bounded terms; the
//! usual approach for LWE noise) and requires `z·sqrt(K·v) < Δ/2` with `z` chosen so that the
//! tail `2·exp(-z²/2)` is at most 2^-80 per value. The same bound is enforced at decryption: a
//! residual above it means a contribution was malformed and nothing is released.

use crate::params::{LWE_DIMENSION, NOISE_BOUND_LOG2};

/// log2 of the tolerated probability that one decrypted value is wrong.
pub const FAILURE_PROBABILITY_LOG2: u32 = 80;

/// Noise bound for a given number of summed ciphertexts against a given plaintext width.
#[derive(Clone, Copy, Debug)]
pub struct NoiseBudget {
    bound: f64,
    plaintext_bits: u32,
}

impl NoiseBudget {
    /// Budget of a sum of `sites` ciphertexts encoded with `plaintext_bits` bits.
    pub fn for_sites(sites: u32, plaintext_bits: u32) -> Self {
        let bound = tail_factor() * (f64::from(sites) * per_site_variance()).sqrt();
        Self {
            bound,
            plaintext_bits,
        }
    }

    /// Largest residual (in units of the 2^64 torus) an honest sum reaches except with
    /// probability 2^-80 per value.
    pub fn bound(&self) -> u64 {
        // The bound is below 2^63 for every admissible site count (at most 2^46).
        self.bound.ceil() as u64
    }

    /// log2 of [`Self::bound`], for error messages and reports.
    pub fn bound_log2(&self) -> f64 {
        self.bound.log2()
    }

    /// log2 of `Δ/2 = 2^(63-P)`.
    pub fn half_delta_log2(&self) -> u32 {
        63u32.saturating_sub(self.plaintext_bits)
    }

    /// Whether the bound stays strictly below `Δ/2`.
    pub fn fits(&self) -> bool {
        self.plaintext_bits < 63 && self.bound < f64::from(self.half_delta_log2()).exp2()
    }
}

/// Variance of TUniform(b): uniform on `(-2^b, 2^b)` with half weight on both ends.
fn t_uniform_variance(bound_log2: u32) -> f64 {
    ((2f64).powi(2 * bound_log2 as i32 + 1) + 1.0) / 6.0
}

/// Variance contributed by one site's ciphertext after bias removal (module docs).
fn per_site_variance() -> f64 {
    let n = LWE_DIMENSION as f64;
    let max_pk_noise_sq = (2f64).powi(2 * NOISE_BOUND_LOG2 as i32);
    let fresh = t_uniform_variance(NOISE_BOUND_LOG2);
    n * max_pk_noise_sq / 4.0 + n * fresh + fresh
}

/// `z = sqrt(2·ln(2^(λ+1)))`, so that `2·exp(-z²/2) = 2^-λ`.
fn tail_factor() -> f64 {
    (2.0 * f64::from(FAILURE_PROBABILITY_LOG2 + 1) * std::f64::consts::LN_2).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_uniform_variance_matches_direct_sum_for_small_bound() {
        // TU(2): values -4..=4, ends with weight 1/16, interior 1/8.
        let direct: f64 = (-4i32..=4)
            .map(|x| {
                let w = if x.abs() == 4 { 1.0 / 16.0 } else { 1.0 / 8.0 };
                w * f64::from(x * x)
            })
            .sum();
        assert!((t_uniform_variance(2) - direct).abs() < 1e-9);
    }

    #[test]
    fn bound_grows_with_square_root_of_sites() {
        let one = NoiseBudget::for_sites(1, 30).bound_log2();
        let many = NoiseBudget::for_sites(1024, 30).bound_log2();
        assert!((many - one - 5.0).abs() < 1e-9);
        // One site: about 2^25.5 on a 2^64 torus.
        assert!(one > 25.0 && one < 26.0, "{one}");
    }
}
