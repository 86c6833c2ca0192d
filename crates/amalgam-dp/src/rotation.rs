//! Randomized Hadamard rotation (KLS21 §4.2; TFF's `HadamardTransformFactory`).
//!
//! y = (1/√D) · H_D · diag(s) · pad(x), with H_D the D×D Walsh-Hadamard matrix, D the next power
//! of two ≥ d and s ∈ {±1}^D drawn from a public per-round seed. H_D·H_D = D·I, so the map is
//! orthogonal: it preserves the L2 norm (the clip bound survives it) and its inverse is
//! x = diag(s) · (1/√D) · H_D · y, truncated back to d coordinates. Rotating flattens the
//! coordinates (each is roughly N(0, ‖x‖²/D)), which keeps rounding and wrapping errors small.

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::params::Dimension;

/// The public per-round seed of the rotation's sign flips (all sites of a round share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationSeed(pub [u8; 32]);

/// A randomized Hadamard rotation for vectors of one length.
#[derive(Debug, Clone)]
pub struct Rotation {
    seed: RotationSeed,
    dim: usize,
    padded: usize,
}

/// In-place unnormalised fast Walsh-Hadamard transform; `x.len()` is a power of two.
fn walsh_hadamard(x: &mut [f64]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for block in x.chunks_exact_mut(2 * h) {
            let (left, right) = block.split_at_mut(h);
            for (a, b) in left.iter_mut().zip(right.iter_mut()) {
                let (u, v) = (*a, *b);
                *a = u + v;
                *b = u - v;
            }
        }
        h *= 2;
    }
}

impl Rotation {
    /// The rotation for vectors of length `dim` under `seed`.
    pub fn new(seed: RotationSeed, dim: Dimension) -> Self {
        // Dimension ≤ 2^30, so both fit in usize on every supported target.
        let padded = dim.padded() as usize;
        Self {
            seed,
            dim: dim.get() as usize,
            padded,
        }
    }

    /// Length of the rotated vectors, D.
    pub fn padded_len(&self) -> usize {
        self.padded
    }

    /// Applies diag(s) in place.
    fn flip_signs(&self, x: &mut [f64]) {
        let mut rng = ChaCha20Rng::from_seed(self.seed.0);
        for chunk in x.chunks_mut(64) {
            let bits = rng.next_u64();
            for (i, v) in chunk.iter_mut().enumerate() {
                if (bits >> i) & 1 == 1 {
                    *v = -*v;
                }
            }
        }
    }

    /// y = (1/√D) H diag(s) pad(x). `x` must have the rotation's length d.
    pub fn forward(&self, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; self.padded];
        let n = x.len().min(self.dim);
        y[..n].copy_from_slice(&x[..n]);
        self.flip_signs(&mut y);
        walsh_hadamard(&mut y);
        let norm = 1.0 / (self.padded as f64).sqrt();
        y.iter_mut().for_each(|v| *v *= norm);
        y
    }

    /// x = diag(s) (1/√D) H y, truncated to d coordinates. `y` has length D.
    pub fn inverse(&self, y: &[f64]) -> Vec<f64> {
        let mut x = vec![0.0; self.padded];
        let n = y.len().min(self.padded);
        x[..n].copy_from_slice(&y[..n]);
        walsh_hadamard(&mut x);
        let norm = 1.0 / (self.padded as f64).sqrt();
        x.iter_mut().for_each(|v| *v *= norm);
        self.flip_signs(&mut x);
        x.truncate(self.dim);
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(x: &[f64]) -> f64 {
        x.iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    proptest! {
        #[test]
        fn rotation_is_orthogonal_and_invertible(
            x in proptest::collection::vec(-1e3f64..1e3, 1..300),
            seed in any::<[u8; 32]>(),
        ) {
            let rot = Rotation::new(RotationSeed(seed), Dimension::new(x.len() as u64).unwrap());
            let y = rot.forward(&x);
            prop_assert_eq!(y.len(), (x.len() as u64).next_power_of_two() as usize);
            prop_assert!((norm(&y) - norm(&x)).abs() <= 1e-9 * (1.0 + norm(&x)));
            let back = rot.inverse(&y);
            prop_assert_eq!(back.len(), x.len());
            for (a, b) in back.iter().zip(&x) {
                prop_assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()));
            }
        }
    }

    #[test]
    fn rotation_spreads_a_spike_and_depends_on_the_seed() {
        let mut x = vec![0.0; 1024];
        x[7] = 32.0;
        let dim = Dimension::new(1024).unwrap();
        let a = Rotation::new(RotationSeed([1; 32]), dim).forward(&x);
        let b = Rotation::new(RotationSeed([2; 32]), dim).forward(&x);
        // A spike of norm 32 becomes 1024 coordinates of magnitude exactly 1.
        assert!(a.iter().all(|v| (v.abs() - 1.0).abs() < 1e-12));
        assert_ne!(a, b);
    }
}
