//! Poisson subsampling: each step, every record is in the step's sample independently with
//! probability q.
//!
//! The coins come from a ChaCha20 CSPRNG keyed with 32 bytes from the operating system, the
//! construction of amalgam-dp's own noise and rounding streams (`amalgam_dp::entropy`): a
//! fresh key per [`PoissonCoins`], wiped with the generator when it is dropped. This module
//! does not import tch: no coin can come from torch's generator, whatever state a caller (or
//! `tch::manual_seed`) left it in. A replayable stream exists only for tests and test vectors
//! (feature `test-vectors`, refused in release builds, `src/lib.rs`).

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use zeroize::Zeroizing;

/// The operating system's entropy source failed: no sample can be drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's entropy source failed: no Poisson coins")]
pub struct EntropyError;

/// The coin stream of one plant's record-level DP-SGD run.
pub struct PoissonCoins {
    stream: ChaCha20Rng,
}

impl std::fmt::Debug for PoissonCoins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The stream's state is secret: a replayed stream would reveal which records were in
        // each step.
        f.write_str("PoissonCoins(..)")
    }
}

impl PoissonCoins {
    /// A fresh stream keyed from the operating system.
    pub fn from_os() -> Result<Self, EntropyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| EntropyError)?;
        Ok(PoissonCoins {
            stream: ChaCha20Rng::from_seed(*seed),
        })
    }

    /// A replayable stream: tests and test vectors only.
    #[cfg(any(test, feature = "test-vectors"))]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        PoissonCoins {
            stream: ChaCha20Rng::from_seed(seed),
        }
    }

    /// The indices, ascending, of the records of `0..n` that fall in one step's sample, each
    /// independently with probability `q` (in (0, 1], checked by the caller's configuration).
    ///
    /// Record i is in when the i-th 64-bit coin is below ⌊q·2^64⌋ (2^64 when q = 1): the
    /// realized probability is within 2^-64 of q. Every record draws its coin, in or not, so
    /// the stream consumed per step does not depend on the outcome.
    pub fn sample(&mut self, n: usize, q: f64) -> Vec<i64> {
        let threshold = inclusion_threshold(q);
        (0..n)
            .filter(|_| u128::from(self.stream.next_u64()) < threshold)
            .map(|i| i as i64)
            .collect()
    }
}

/// ⌊q·2^64⌋ for q in [0, 1] (q·2^64 is exact in f64; the conversion truncates and saturates).
fn inclusion_threshold(q: f64) -> u128 {
    (q * 18_446_744_073_709_551_616.0) as u128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_exact_at_the_ends() {
        assert_eq!(inclusion_threshold(1.0), 1u128 << 64);
        assert_eq!(inclusion_threshold(0.5), 1u128 << 63);
        assert_eq!(inclusion_threshold(0.0), 0);
        let mut coins = PoissonCoins::from_seed([1; 32]);
        assert_eq!(coins.sample(50, 1.0), (0..50).collect::<Vec<i64>>());
        assert!(coins.sample(50, 1e-30).is_empty());
    }
}
