//! Mask PRG: the raw ChaCha20 keystream (RFC 8439 block function, 32-byte key, counter and
//! nonce starting at zero), spec §4.7.
//!
//! Bulk expansion uses OpenSSL's `chacha20` (runtime CPU dispatch to its assembly). The
//! EVP IV is 16 bytes: a 4-byte little-endian block counter (0) followed by a 12-byte nonce
//! (0). This stream is byte-identical to `rand_chacha` 0.10 `ChaCha20Rng::from_seed(key)`
//! (64-bit counter, 64-bit stream 0) for the first 2^32 blocks (256 GiB), far beyond any mask
//! ([`crate::params::MAX_VECTOR_LEN`] u64 words = 128 MiB). The tests cross-check both.

use openssl::symm::{Cipher, Crypter, Mode};

/// Bytes of zeros fed to the cipher per call (keystream = encryption of zeros).
const ZEROS: [u8; 16 * 1024] = [0u8; 16 * 1024];

/// A streaming ChaCha20 keystream: successive [`Keystream::fill`] calls continue the stream.
pub struct Keystream {
    crypter: Crypter,
}

impl core::fmt::Debug for Keystream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Keystream(..)")
    }
}

impl Keystream {
    /// Keystream for `key`, starting at block 0.
    pub fn new(key: &[u8; 32]) -> Self {
        let iv = [0u8; 16];
        // OpenSSL 3 always provides ChaCha20; a failure here is a broken installation.
        #[allow(clippy::expect_used)]
        let crypter = Crypter::new(Cipher::chacha20(), Mode::Encrypt, key, Some(&iv))
            .expect("OpenSSL ChaCha20 is available");
        Self { crypter }
    }

    /// Writes the next `out.len()` keystream bytes into `out`.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(ZEROS.len()) {
            let n = chunk.len();
            // ChaCha20 is a stream cipher (block size 1): output length == input length.
            #[allow(clippy::expect_used)]
            let written = self
                .crypter
                .update(&ZEROS[..n], chunk)
                .expect("ChaCha20 update");
            debug_assert_eq!(written, n);
        }
    }
}

/// One-shot keystream of `out.len()` bytes for `key`.
pub fn keystream(key: &[u8; 32], out: &mut [u8]) {
    Keystream::new(key).fill(out);
}

/// Reference keystream via `rand_chacha` 0.10 (portable, slower); used to cross-check.
pub fn reference_keystream(key: &[u8; 32], out: &mut [u8]) {
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};
    let mut rng = ChaCha20Rng::from_seed(*key);
    rng.fill_bytes(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_matches_rand_chacha() {
        for (i, len) in [
            0usize,
            1,
            63,
            64,
            65,
            127,
            1000,
            4096,
            16 * 1024 + 3,
            100_003,
        ]
        .iter()
        .enumerate()
        {
            let mut key = [0u8; 32];
            for (j, b) in key.iter_mut().enumerate() {
                *b = (i * 37 + j * 11) as u8;
            }
            let mut a = vec![0u8; *len];
            let mut b = vec![0u8; *len];
            keystream(&key, &mut a);
            reference_keystream(&key, &mut b);
            assert_eq!(a, b, "len {len}");
        }
    }

    #[test]
    fn chunked_continuation_matches_one_shot() {
        let key = [0x42u8; 32];
        let total = 3 * 4096 + 77;
        let mut whole = vec![0u8; total];
        reference_keystream(&key, &mut whole);
        let mut ks = Keystream::new(&key);
        let mut pieces = Vec::new();
        for step in [5usize, 64, 100, 4096, 1, 7000] {
            let mut buf = vec![0u8; step];
            ks.fill(&mut buf);
            pieces.extend_from_slice(&buf);
        }
        let mut rest = vec![0u8; total - pieces.len()];
        ks.fill(&mut rest);
        pieces.extend_from_slice(&rest);
        assert_eq!(pieces, whole);
    }

    #[test]
    fn rfc8439_block_zero() {
        // RFC 8439 §2.3.2 style check with the all-zero key: first keystream bytes are the
        // well-known ChaCha20 zero-key/zero-nonce output.
        let mut out = [0u8; 16];
        keystream(&[0u8; 32], &mut out);
        assert_eq!(
            out,
            [
                0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90, 0x40, 0x5d, 0x6a, 0xe5, 0x53, 0x86,
                0xbd, 0x28
            ]
        );
    }
}
