//! Clipping, grid rounding, the integer sum and its discrete Gaussian noise.
//!
//! Each example's gradient g is clipped to L2 norm C (scaled by min(1, C/‖g‖), the factor
//! shaved by 10⁻⁹ so that f64 rounding cannot leave a norm above C), then each coordinate is
//! rounded to the nearest multiple of γ, held as the integer k = round(c/γ). Rounding moves each
//! coordinate by at most γ/2, so ‖γ·k‖ ≤ C + γ·√d/2 = Δ, checked for every example anyway.
//! The integers are summed exactly (in f64: C/γ ≤ 2^28 and at most 2^24 examples keep every
//! partial sum below 2^53) and every coordinate of the sum gets an independent N_Z(0, (σ/γ)²)
//! sample from amalgam-dp's samplers: in gradient units the noise is σ per coordinate, and the
//! noisy sum is a Gaussian mechanism of sensitivity Δ under adding or removing one record.
//!
//! The sampler is amalgam-dp's table sampler ([`FastSampler`], ChaCha20 keyed from the OS)
//! wherever σ/γ is inside its range, with its total-variation distance (below 10⁻³⁰ a sample)
//! charged to δ by the record ledger, and opendp's exact sampler otherwise: the exact sampler
//! costs about 15-70 µs a coordinate, hundreds of times the training step it noises
//! (benches/README.md). Which one a run uses is a function of σ/γ alone ([`sampler_for`]),
//! recorded in its charge. It is built once per run and reused by every step; the table
//! sampler's tables are shared by every run of the same σ/γ in the process (public data), its
//! stream is the run's own.

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
    /// Examples that contributed nothing (a non-finite gradient, or a rounded norm over Δ).
    pub dropped: usize,
}

/// Clips each example's gradient to `clip`, rounds it to the grid `gamma` and sums the
/// integers. Refuses `clip`, `gamma` or C/γ out of the configuration's ranges, gradients whose
/// length is not rows × dim and more than [`super::MAX_RECORDS`] examples (the integer sum
/// stays exact below that); an example with a non-finite
/// gradient value contributes nothing (counted in `dropped`).
pub fn clip_round_sum(
    grads: &PerExample,
    clip: f64,
    gamma: f64,
) -> Result<RoundedSum, RecordDpError> {
    if !(clip.is_finite() && clip > 0.0) {
        return Err(RecordDpError::ClipNorm(clip));
    }
    super::gamma_check(gamma)?;
    super::grid_check(gamma, "C", clip, super::MAX_CLIP_OVER_GAMMA)?;
    let d = grads.dim;
    if grads.rows.checked_mul(d) != Some(grads.values.len()) {
        return Err(RecordDpError::GradientShape {
            rows: grads.rows,
            dim: d,
            values: grads.values.len(),
        });
    }
    // More examples than a plant may hold would take the f64 sum past 2^53.
    if grads.rows > super::MAX_RECORDS {
        return Err(RecordDpError::Records(grads.rows));
    }
    let delta = sensitivity(clip, gamma, d);
    let recheck_margin = CLIP_SHAVE.max(d as f64 * f64::EPSILON);
    // Integers held in f64: every partial sum is below 2^53 (|k| ≤ 2^28, at most 2^24
    // examples), so the additions are exact, and cheaper than checked i64 ones.
    let mut sum = vec![0.0f64; d];
    let mut clipped_norms = Vec::with_capacity(grads.rows);
    let mut rounded_norms = Vec::with_capacity(grads.rows);
    let mut dropped = 0usize;
    for i in 0..grads.rows {
        let g = grads.row(i);
        let norm = super::per_example::l2(g);
        // A record whose gradient is not finite contributes nothing (a deterministic function
        // of the record, so the sensitivity bound holds): refusing the step instead would make
        // whether the run fails depend on whether that record was drawn, an unaccounted
        // release. A NaN or infinite coordinate makes the f64 norm non-finite (an f32 squared
        // cannot overflow f64), so the norm is the whole check.
        if !norm.is_finite() {
            dropped += 1;
            clipped_norms.push(0.0);
            rounded_norms.push(0.0);
            continue;
        }
        let factor = if norm > clip {
            clip / norm * (1.0 - CLIP_SHAVE)
        } else {
            1.0
        };
        // Grid units: x = clip(g)/γ, |x| ≤ C/γ ≤ 2^28 (configuration). One pass rounds,
        // sums the squares (four independent lanes, see `per_example::l2`) and adds the
        // integers to the sum, undone below in the case that cannot happen.
        let to_grid = factor / gamma;
        let mut lanes = [0.0f64; 4];
        let mut sums = sum.chunks_exact_mut(4);
        let mut coords = g.chunks_exact(4);
        for (s4, g4) in (&mut sums).zip(&mut coords) {
            for ((s, &gj), lane) in s4.iter_mut().zip(g4).zip(&mut lanes) {
                let k = round_to_integer(f64::from(gj) * to_grid);
                *lane += k * k;
                *s += k;
            }
        }
        for (s, &gj) in sums.into_remainder().iter_mut().zip(coords.remainder()) {
            let k = round_to_integer(f64::from(gj) * to_grid);
            lanes[0] += k * k;
            *s += k;
        }
        let k2: f64 = lanes.iter().sum();
        // ‖clip(g)‖ = factor·‖g‖, up to one rounding.
        let clipped = norm * factor;
        // The squares summed in f64 are exact below 2^53 and within a relative d·2⁻⁵² beyond;
        // within that (or 10⁻⁹, if larger) of Δ the norm is recomputed from the integers in
        // i128, so every example's check is exact where it can matter.
        let mut rounded = k2.sqrt() * gamma;
        if rounded > delta * (1.0 - recheck_margin) {
            rounded = exact_rounded_norm(g, to_grid, gamma);
        }
        // Within Δ by construction. A rounded vector over it (which would be a bug) is taken
        // back out of the sum: like a non-finite one, never released and never a
        // data-dependent refusal.
        // Written so that a NaN norm (which the configuration's bounds exclude) is dropped too.
        if rounded.is_nan() || rounded > delta {
            for (s, &gj) in sum.iter_mut().zip(g) {
                *s -= round_to_integer(f64::from(gj) * to_grid);
            }
            dropped += 1;
            clipped_norms.push(clipped);
            rounded_norms.push(0.0);
            continue;
        }
        clipped_norms.push(clipped);
        rounded_norms.push(rounded);
    }
    Ok(RoundedSum {
        // Integers below 2^53 in magnitude: the conversion is exact.
        sum: sum.iter().map(|&s| s as i64).collect(),
        clipped_norms,
        rounded_norms,
        dropped,
    })
}

/// ‖γ·k‖ with Σ k_j² summed exactly in i128 (k = round(g·`to_grid`), |k| ≤ 2^28).
fn exact_rounded_norm(g: &[f32], to_grid: f64, gamma: f64) -> f64 {
    let k2: i128 = g
        .iter()
        .map(|&gj| {
            let k = round_to_integer(f64::from(gj) * to_grid) as i64;
            i128::from(k) * i128::from(k)
        })
        .sum();
    (k2 as f64).sqrt() * gamma
}

// The shift rounding needs IEEE 754 double arithmetic without extended intermediates: x87
// (32-bit x86 without SSE2) keeps 80-bit sums and would leave k off the integers.
#[cfg(all(target_arch = "x86", not(target_feature = "sse2")))]
compile_error!("record-level DP-SGD's grid rounding needs SSE2 on 32-bit x86");

/// The integer nearest `x` (ties to even) for |x| < 2^51: x + 1.5·2^52 lies where the f64
/// spacing is 1, so IEEE 754's round-to-nearest-even (the only mode Rust runs in) leaves the
/// rounded integer, and subtracting the constant back is exact. Two additions instead of a
/// libm call per coordinate; any nearest-integer rounding keeps |k − x| ≤ 1/2.
#[inline]
fn round_to_integer(x: f64) -> f64 {
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    (x + SHIFT) - SHIFT
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

#[cfg(test)]
mod tests {
    use super::{PerExample, clip_round_sum, round_to_integer, sensitivity};

    #[test]
    fn the_integer_recheck_agrees_with_the_float_norm() {
        // Rows at both ends of the grid range, where the f64 sum of squares is exact (small k)
        // and where it is not (k near 2^28): the i128 norm matches to f64 precision, and the
        // sum and norms of clip_round_sum match the integers rounded one by one.
        let (clip, gamma) = (200.0, 1e-6);
        let values: Vec<f32> = (0..64)
            .map(|j| ((j as f32) * 0.37).sin() * if j < 32 { 1e-5 } else { 100.0 })
            .collect();
        let rows = PerExample {
            rows: 2,
            dim: 32,
            values: values.clone(),
        };
        let r = clip_round_sum(&rows, clip, gamma).unwrap();
        let delta = sensitivity(clip, gamma, 32);
        let mut want = vec![0i64; 32];
        for (i, row) in values.chunks(32).enumerate() {
            let norm = super::super::per_example::l2(row);
            let to_grid = if norm > clip {
                clip / norm * (1.0 - super::CLIP_SHAVE)
            } else {
                1.0
            } / gamma;
            let exact = super::exact_rounded_norm(row, to_grid, gamma);
            assert!(
                (exact - r.rounded_norms[i]).abs() <= 1e-12 * exact,
                "row {i}"
            );
            assert!(exact <= delta);
            for (w, &g) in want.iter_mut().zip(row) {
                *w += (f64::from(g) * to_grid).round_ties_even() as i64;
            }
        }
        assert!(
            r.rounded_norms[1] / gamma > 1.9e8,
            "the large row is not large"
        );
        assert_eq!(r.sum, want);
    }

    #[test]
    fn the_shift_rounding_is_round_ties_even_over_the_grid_range() {
        let mut values = vec![0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 0.49999999999999994];
        for base in [1.0f64, 3.0, 1e4, 2_147_483_647.0, 2_147_483_648.0] {
            for off in [-0.5, -0.4999999, 0.0, 0.25, 0.5, 0.5000001, 0.75] {
                values.push(base + off);
                values.push(-(base + off));
            }
        }
        // Pseudo-random magnitudes over ±2^31, beyond the range C/γ ≤ 2^28 allows.
        let mut v = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..100_000 {
            v ^= v << 13;
            v ^= v >> 7;
            v ^= v << 17;
            let x = (v >> 11) as f64 / (1u64 << 53) as f64 * 2f64.powi(32) - 2f64.powi(31);
            values.push(x);
        }
        for x in values {
            let got = round_to_integer(x);
            assert_eq!(got, x.round_ties_even(), "x = {x:e}");
            assert!((got - x).abs() <= 0.5, "x = {x:e}");
        }
    }
}
