//! Clipping, grid rounding, the integer sum and its discrete Gaussian noise.
//!
//! Each example's gradient g is clipped to L2 norm C (scaled by min(1, C/‖g‖), the factor
//! shaved by 10⁻⁹ so that f64 rounding cannot leave a norm above C), then each coordinate is
//! rounded to the nearest multiple of γ, held as the integer k = round(c/γ). Rounding moves each
//! coordinate by at most γ/2, so ‖γ·k‖ ≤ C + γ·√d/2 = Δ, checked exactly for every example
//! anyway. The integers are summed exactly (i64; the configuration's bounds keep the sum far
//! from overflow) and every coordinate of the sum gets an independent N_Z(0, (σ/γ)²) sample
//! from amalgam-dp's samplers: in gradient units the noise is σ per coordinate, and the
//! noisy sum is a Gaussian mechanism of sensitivity Δ under adding or removing one record.
//!
//! The sampler is amalgam-dp's table sampler ([`FastSampler`], ChaCha20 keyed from the OS)
//! wherever σ/γ is inside its range, with its total-variation distance (below 10⁻³⁰ a sample)
//! charged to δ by the record ledger, and opendp's exact sampler otherwise: the exact sampler
//! costs about 15-70 µs a coordinate, hundreds of times the training step it noises
//! (benches/README.md). Which one a run uses is a function of σ/γ alone ([`sampler_for`]),
//! recorded in its charge. It is built once per run and reused by every step.

use amalgam_dp::params::Sigma;
use amalgam_dp::sampler::{
    ExactSampler, FAST_MAX_SIGMA, FAST_MIN_SIGMA, FastSampler, NoiseSampler, SamplerKind,
};

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
    /// ‖γ·round(clip(gᵢ)/γ)‖ per example (0 for a dropped one).
    pub rounded_norms: Vec<f64>,
    /// Examples that contributed nothing (a non-finite gradient).
    pub dropped: usize,
}

/// Clips each example's gradient to `clip`, rounds it to the grid `gamma` and sums the
/// integers. Refuses `clip`, `gamma` or C/γ out of the configuration's ranges, gradients whose
/// length is not rows × dim and a sum that would overflow; an example with a non-finite
/// gradient value contributes nothing (counted in `dropped`).
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
    let mut dropped = 0usize;
    for i in 0..grads.rows {
        let g = grads.row(i);
        // A record whose gradient is not finite contributes nothing (a deterministic function
        // of the record, so the sensitivity bound holds): refusing the step instead would make
        // whether the run fails depend on whether that record was drawn, an unaccounted
        // release.
        if g.iter().any(|v| !v.is_finite()) {
            dropped += 1;
            clipped_norms.push(0.0);
            rounded_norms.push(0.0);
            continue;
        }
        let norm = super::per_example::l2(g);
        let factor = if norm > clip {
            clip / norm * (1.0 - CLIP_SHAVE)
        } else {
            1.0
        };
        let mut c2 = 0.0f64;
        let mut k2: i128 = 0;
        for (kj, &gj) in k.iter_mut().zip(g) {
            let c = f64::from(gj) * factor;
            c2 += c * c;
            // |c/γ| ≤ C/γ ≤ 2^31 (configuration), so the conversion is exact and in range.
            *kj = (c / gamma).round() as i64;
            k2 += i128::from(*kj) * i128::from(*kj);
        }
        let rounded = (k2 as f64).sqrt() * gamma;
        // Within Δ by construction; a rounded vector over it (which would be a bug) is
        // dropped like a non-finite one, never released and never a data-dependent refusal.
        if rounded > delta {
            dropped += 1;
            clipped_norms.push(c2.sqrt());
            rounded_norms.push(0.0);
            continue;
        }
        for (s, kj) in sum.iter_mut().zip(&k) {
            *s = s.checked_add(*kj).ok_or(RecordDpError::Overflow)?;
        }
        clipped_norms.push(c2.sqrt());
        rounded_norms.push(rounded);
    }
    Ok(RoundedSum {
        sum,
        clipped_norms,
        rounded_norms,
        dropped,
    })
}

/// The sampler a run of noise scale σ/γ = `scale` uses: the table sampler inside its range,
/// the exact one outside it.
pub fn sampler_for(scale: f64) -> SamplerKind {
    if (FAST_MIN_SIGMA..=FAST_MAX_SIGMA).contains(&scale) {
        SamplerKind::Fast
    } else {
        SamplerKind::Exact
    }
}

/// A run's noise: N_Z(0, `scale`²) per coordinate from the sampler of `kind`, on its own
/// OS-seeded stream (not replayable), reused by every step of the run.
pub struct RunNoise {
    sampler: Box<dyn NoiseSampler + Send>,
    buf: Vec<i64>,
}

impl RunNoise {
    /// The noise of scale σ/γ = `scale` from the sampler of `kind`.
    pub fn new(kind: SamplerKind, scale: f64) -> Result<Self, RecordDpError> {
        let noise = |e: String| RecordDpError::Noise(e);
        let sigma = Sigma::new(scale).map_err(|e| noise(e.to_string()))?;
        let sampler: Box<dyn NoiseSampler + Send> = match kind {
            SamplerKind::Fast => {
                Box::new(FastSampler::new(sigma).map_err(|e| noise(e.to_string()))?)
            }
            SamplerKind::Exact => {
                Box::new(ExactSampler::new(sigma).map_err(|e| noise(e.to_string()))?)
            }
        };
        Ok(Self {
            sampler,
            buf: Vec::new(),
        })
    }

    /// Which sampler draws.
    pub fn kind(&self) -> SamplerKind {
        self.sampler.kind()
    }

    /// Adds an independent sample to every coordinate of `sum`.
    pub fn add_to(&mut self, sum: &mut [i64]) -> Result<(), RecordDpError> {
        self.buf.resize(sum.len(), 0);
        self.sampler
            .fill(&mut self.buf)
            .map_err(|e| RecordDpError::Noise(e.to_string()))?;
        for (s, z) in sum.iter_mut().zip(&self.buf) {
            *s = s.checked_add(*z).ok_or(RecordDpError::Overflow)?;
        }
        Ok(())
    }
}

/// Adds an independent N_Z(0, `scale`²) sample to every coordinate of `sum` from the sampler
/// [`sampler_for`] picks. `scale` is σ/γ.
pub fn add_discrete_gaussian(sum: &mut [i64], scale: f64) -> Result<(), RecordDpError> {
    RunNoise::new(sampler_for(scale), scale)?.add_to(sum)
}
