//! Clipping, grid rounding, the integer sum and its discrete Gaussian noise.
//!
//! Each example's gradient g is clipped to L2 norm C (scaled by min(1, C/‖g‖), the factor
//! shaved by 10⁻⁹ so that f64 rounding cannot leave a norm above C), then each coordinate is
//! rounded to the nearest multiple of γ, held as the integer k = round(c/γ). Rounding moves each
//! coordinate by at most γ/2, so ‖γ·k‖ ≤ C + γ·√d/2 = Δ, checked exactly for every example
//! anyway. The integers are summed exactly (i64; the configuration's bounds keep the sum far
//! from overflow) and every coordinate of the sum gets an independent N_Z(0, (σ/γ)²) sample
//! from amalgam-dp's exact sampler: in gradient units the noise is σ per coordinate, and the
//! noisy sum is a Gaussian mechanism of sensitivity Δ under adding or removing one record.

use amalgam_dp::params::Sigma;
use amalgam_dp::sampler::{ExactSampler, NoiseSampler};

use super::RecordDpError;
use super::per_example::PerExample;

/// Shave on the clipping factor, far above f64's error on a norm of a few thousand terms.
const CLIP_SHAVE: f64 = 1e-9;

/// The sensitivity Δ = C + γ·√d/2 of the rounded sum.
pub fn sensitivity(clip: f64, gamma: f64, dim: usize) -> f64 {
    clip + gamma * (dim as f64).sqrt() / 2.0
}

/// One step's rounded sum, with each example's norms after clipping and after rounding (for
/// tests and diagnostics; they never leave the plant).
#[derive(Debug, Clone, PartialEq)]
pub struct RoundedSum {
    /// Σ over the sample of round(clip(gᵢ)/γ), per coordinate.
    pub sum: Vec<i64>,
    /// ‖clip(gᵢ)‖ per example.
    pub clipped_norms: Vec<f64>,
    /// ‖γ·round(clip(gᵢ)/γ)‖ per example.
    pub rounded_norms: Vec<f64>,
}

/// Clips each example's gradient to `clip`, rounds it to the grid `gamma` and sums the
/// integers. Refuses `clip`, `gamma` or C/γ out of the configuration's ranges, gradients whose
/// length is not rows × dim, a non-finite gradient value and a sum that would overflow.
pub fn clip_round_sum(
    grads: &PerExample,
    clip: f64,
    gamma: f64,
) -> Result<RoundedSum, RecordDpError> {
    if !(clip.is_finite() && clip > 0.0) {
        return Err(RecordDpError::ClipNorm(clip));
    }
    if !(gamma.is_finite() && gamma > 0.0) {
        return Err(RecordDpError::Gamma(gamma));
    }
    super::grid_check(gamma, "C", clip, super::MAX_CLIP_OVER_GAMMA)?;
    let d = grads.dim;
    if grads.rows.checked_mul(d) != Some(grads.values.len()) {
        return Err(RecordDpError::GradientShape {
            rows: grads.rows,
            dim: d,
            values: grads.values.len(),
        });
    }
    let delta = sensitivity(clip, gamma, d);
    let mut sum = vec![0i64; d];
    let mut clipped_norms = Vec::with_capacity(grads.rows);
    let mut rounded_norms = Vec::with_capacity(grads.rows);
    let mut k = vec![0i64; d];
    for i in 0..grads.rows {
        let g = grads.row(i);
        if let Some(j) = g.iter().position(|v| !v.is_finite()) {
            return Err(RecordDpError::NonFiniteGradient(j));
        }
        let norm = super::per_example::l2(g);
        let factor = if norm > clip {
            clip / norm * (1.0 - CLIP_SHAVE)
        } else {
            1.0
        };
        let mut c2 = 0.0f64;
        let mut k2: i128 = 0;
        for ((kj, &gj), s) in k.iter_mut().zip(g).zip(sum.iter_mut()) {
            let c = f64::from(gj) * factor;
            c2 += c * c;
            // |c/γ| ≤ C/γ ≤ 2^31 (configuration), so the conversion is exact and in range.
            *kj = (c / gamma).round() as i64;
            k2 += i128::from(*kj) * i128::from(*kj);
            *s = s.checked_add(*kj).ok_or(RecordDpError::Overflow)?;
        }
        let rounded = (k2 as f64).sqrt() * gamma;
        // Exact by construction; a violation would be a bug, and the step is refused.
        if rounded > delta * (1.0 + 1e-12) {
            return Err(RecordDpError::SensitivityExceeded {
                norm: rounded,
                delta,
            });
        }
        clipped_norms.push(c2.sqrt());
        rounded_norms.push(rounded);
    }
    Ok(RoundedSum {
        sum,
        clipped_norms,
        rounded_norms,
    })
}

/// Adds an independent N_Z(0, `scale`²) sample to every coordinate of `sum`, from
/// amalgam-dp's exact discrete Gaussian sampler (OS entropy; not replayable). `scale` is σ/γ.
pub fn add_discrete_gaussian(sum: &mut [i64], scale: f64) -> Result<(), RecordDpError> {
    let sigma = Sigma::new(scale).map_err(|e| RecordDpError::Noise(e.to_string()))?;
    let mut sampler = ExactSampler::new(sigma).map_err(|e| RecordDpError::Noise(e.to_string()))?;
    let mut noise = vec![0i64; sum.len()];
    sampler
        .fill(&mut noise)
        .map_err(|e| RecordDpError::Noise(e.to_string()))?;
    for (s, z) in sum.iter_mut().zip(&noise) {
        *s = s.checked_add(*z).ok_or(RecordDpError::Overflow)?;
    }
    Ok(())
}
