//! Arithmetic modulo the KAHE prime q = 2^64 − 2^32 + 1 and uniform sampling from a keystream.
//!
//! The prime admits a negacyclic NTT of size 2048 (q − 1 is divisible by 2^32), so tfhe's
//! `core_crypto` NTT runs on it, and its special form makes a 128-bit reduction a few adds.
//! Every value here is canonical (`< Q`); decoders reject anything else.

use amalgam_proto::crypto::prg::Keystream;
use zeroize::Zeroize;

/// The KAHE ciphertext modulus q = 2^64 − 2^32 + 1.
pub const Q: u64 = 0xffff_ffff_0000_0001;
/// 2^64 mod q = 2^32 − 1.
const EPSILON: u64 = 0xffff_ffff;

/// `a + b mod q` for canonical inputs.
#[inline(always)]
pub fn add(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    if carry || s >= Q {
        s.wrapping_sub(Q)
    } else {
        s
    }
}

/// `a − b mod q` for canonical inputs.
#[inline(always)]
pub fn sub(a: u64, b: u64) -> u64 {
    let (s, borrow) = a.overflowing_sub(b);
    if borrow { s.wrapping_add(Q) } else { s }
}

/// `a · b mod q` (Goldilocks reduction: 2^64 ≡ 2^32 − 1 and 2^96 ≡ −1).
#[inline(always)]
pub fn mul(a: u64, b: u64) -> u64 {
    reduce128(u128::from(a) * u128::from(b))
}

/// Reduces a 128-bit value modulo q to its canonical representative.
#[inline(always)]
pub fn reduce128(x: u128) -> u64 {
    let lo = x as u64;
    let hi = (x >> 64) as u64;
    let hi_hi = hi >> 32;
    let hi_lo = hi & EPSILON;
    // lo − hi_hi (2^96 ≡ −1); a borrow wraps by 2^64 ≡ EPSILON.
    let (mut t0, borrow) = lo.overflowing_sub(hi_hi);
    if borrow {
        t0 = t0.wrapping_sub(EPSILON);
    }
    // + hi_lo · (2^32 − 1), which fits in 64 bits.
    let t1 = hi_lo * EPSILON;
    let (mut r, carry) = t0.overflowing_add(t1);
    if carry {
        r = r.wrapping_add(EPSILON);
    }
    if r >= Q { r - Q } else { r }
}

/// The centred representative of `v` in `(−q/2, q/2]`, as a signed integer.
#[inline(always)]
pub fn centred(v: u64) -> i128 {
    if v > Q / 2 {
        i128::from(v) - i128::from(Q)
    } else {
        i128::from(v)
    }
}

/// `v mod q` for a signed 64-bit value.
#[inline(always)]
pub fn from_i64(v: i64) -> u64 {
    if v >= 0 {
        v as u64 % Q
    } else {
        sub(0, v.unsigned_abs() % Q)
    }
}

/// Adds `rhs` into `acc` element-wise modulo q.
pub fn add_assign(acc: &mut [u64], rhs: &[u64]) {
    for (a, &b) in acc.iter_mut().zip(rhs) {
        *a = add(*a, b);
    }
}

/// Bytes of keystream drawn per refill of a [`UniformSampler`].
const BUFFER_BYTES: usize = 4096;

/// Uniform values mod q from a ChaCha20 keystream by rejection sampling: a 64-bit word at or
/// above q (probability 2^-32) is discarded, so no value is more likely than another (plain
/// reduction would double the chance of the 2^32 − 1 smallest values).
pub struct UniformSampler {
    stream: Keystream,
    buf: Box<[u8; BUFFER_BYTES]>,
    pos: usize,
}

impl core::fmt::Debug for UniformSampler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("UniformSampler(..)")
    }
}

impl UniformSampler {
    /// The sampler for the keystream of `seed`.
    pub fn new(seed: &[u8; 32]) -> Self {
        Self {
            stream: Keystream::new(seed),
            buf: Box::new([0u8; BUFFER_BYTES]),
            pos: BUFFER_BYTES,
        }
    }

    /// The next raw 64-bit little-endian word of the keystream.
    #[inline]
    pub fn next_word(&mut self) -> u64 {
        if self.pos == BUFFER_BYTES {
            self.stream.fill(&mut self.buf[..]);
            self.pos = 0;
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
        self.pos += 8;
        u64::from_le_bytes(w)
    }

    /// The next uniform value mod q.
    #[inline]
    pub fn next_mod_q(&mut self) -> u64 {
        loop {
            let w = self.next_word();
            if w < Q {
                return w;
            }
        }
    }

    /// Fills `out` with uniform values mod q.
    pub fn fill_mod_q(&mut self, out: &mut [u64]) {
        for v in out {
            *v = self.next_mod_q();
        }
    }
}

impl Drop for UniformSampler {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_is_the_goldilocks_prime() {
        assert_eq!(u128::from(Q), (1u128 << 64) - (1u128 << 32) + 1);
        assert_eq!((1u128 << 64) % u128::from(Q), u128::from(EPSILON));
    }

    #[test]
    fn reduction_matches_u128_remainder() {
        let mut s = UniformSampler::new(&[3; 32]);
        let edge = [0, 1, EPSILON, Q - 1, Q - 2, 1 << 63, u64::MAX >> 1];
        for i in 0..20_000 {
            let (a, b) = if i < 49 {
                (edge[i % 7], edge[i / 7])
            } else {
                (s.next_mod_q(), s.next_mod_q())
            };
            let want = (u128::from(a) * u128::from(b) % u128::from(Q)) as u64;
            assert_eq!(mul(a, b), want, "{a} * {b}");
            assert_eq!(
                add(a, b) as u128,
                (u128::from(a) + u128::from(b)) % u128::from(Q)
            );
            assert_eq!(add(sub(a, b), b), a);
        }
        assert_eq!(reduce128(u128::MAX), (u128::MAX % u128::from(Q)) as u64);
    }

    #[test]
    fn sampler_is_deterministic_canonical_and_seed_dependent() {
        let mut a = vec![0u64; 4096];
        let mut b = vec![0u64; 4096];
        UniformSampler::new(&[1; 32]).fill_mod_q(&mut a);
        UniformSampler::new(&[1; 32]).fill_mod_q(&mut b);
        assert_eq!(a, b);
        assert!(a.iter().all(|&v| v < Q));
        UniformSampler::new(&[2; 32]).fill_mod_q(&mut b);
        assert_ne!(a, b);
        // Uniform over the whole range: the top bit is set about half the time.
        let high = a.iter().filter(|&&v| v >= 1 << 63).count();
        assert!((1800..2300).contains(&high), "{high}");
    }

    #[test]
    fn signed_values_map_and_centre() {
        assert_eq!(from_i64(-1), Q - 1);
        assert_eq!(centred(Q - 5), -5);
        assert_eq!(from_i64(i64::MIN), Q - (1u64 << 63));
    }
}
