//! The crate's own randomness: every noise and rounding stream is a ChaCha20 CSPRNG keyed with
//! 32 bytes from the operating system (`getrandom`), one fresh key per stream, so the noise
//! stream and the rounding coins are independent and no caller can choose, share or replay
//! them. `chacha20`'s generator wipes its key and buffered keystream on drop.

use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::Zeroizing;

use crate::error::SamplerError;

/// A fresh ChaCha20 stream keyed from the operating system's entropy source.
pub(crate) fn os_stream() -> Result<ChaCha20Rng, SamplerError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|_| SamplerError::Entropy)?;
    Ok(ChaCha20Rng::from_seed(*seed))
}

/// Seeds for the two streams of one draw, for tests and test vectors only (feature
/// `test-vectors`): with them a draw is replayable.
#[cfg(any(test, feature = "test-vectors"))]
#[derive(Debug, Clone, Copy)]
pub struct TestSeeds {
    /// Key of the noise stream.
    pub noise: [u8; 32],
    /// Key of the rounding-coin stream.
    pub rounding: [u8; 32],
}
