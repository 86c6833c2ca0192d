//! Key-additive RLWE encryption (KAHE), spec he-fallback.md §4.
//!
//! Per round, site i holds a key k_i, uniform in Z_q^N, kept in the NTT domain (the NTT is a
//! bijection, so a uniform vector there is a uniform key). For chunk j every party derives the
//! public mask M_j itself from the round context — uniform in the NTT domain, never received from
//! anyone (an aggregator choosing M_j = 0 would read every input). A body is
//!
//! `c_j = NTT⁻¹(M_j ⊙ k_i) + e_j + Δ·x_j  (mod q)`
//!
//! with e_j rounded Gaussian. Bodies add and keys add, so
//! `Σ_i c_j − NTT⁻¹(M_j ⊙ Σ_i k_i) = Σ e + Δ·Σ x`, which [`decode_sum`] rounds to `Σ x` after
//! checking that every residual is within the cohort's noise bound, every value within
//! `K·(2^b − 1)`, and the check chunk zero. NTT⁻¹ is tfhe's `core_crypto` negacyclic NTT
//! (`Ntt64`, unnormalised backward transform — the missing 1/N factor is absorbed into the key,
//! which stays uniform).

use sha2::{Digest, Sha256};
use tfhe::core_crypto::commons::math::ntt::ntt64::Ntt64;
use tfhe::core_crypto::prelude::{CiphertextModulus, Polynomial, PolynomialSize};
use zeroize::{Zeroize, Zeroizing};

use crate::error::HeError;
use crate::field::{self, Q, UniformSampler};
use crate::gaussian::fill_noise;
use crate::params::{KaheParams, N, SIGMA};

/// The NTT plan for (N, q), cached by tfhe.
fn ntt() -> Ntt64 {
    // q is an NTT-friendly prime below 2^64; tfhe refuses only power-of-two moduli here.
    #[allow(clippy::expect_used)]
    let modulus = CiphertextModulus::<u64>::try_new(u128::from(Q)).expect("q < 2^64");
    Ntt64::new(modulus, PolynomialSize(N))
}

/// `out += NTT⁻¹(prod)` (consumes `prod` as scratch).
fn add_backward(out: &mut [u64], prod: &mut [u64]) {
    let plan = ntt();
    plan.as_view().add_backward(
        Polynomial::from_container(out).as_mut_view(),
        Polynomial::from_container(prod).as_mut_view(),
    );
}

/// The seed of public mask M_j: `H("amalgam/v2/kahe-mask" ‖ round_context ‖ j)`.
fn mask_seed(round_context: &[u8; 32], chunk: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"amalgam/v2/kahe-mask");
    h.update(round_context);
    h.update((chunk as u64).to_be_bytes());
    h.finalize().into()
}

/// Derives the public mask M_j of chunk `chunk` (NTT domain, uniform mod q).
pub fn public_mask(round_context: &[u8; 32], chunk: usize, out: &mut [u64]) {
    UniformSampler::new(&mask_seed(round_context, chunk)).fill_mod_q(&mut out[..N]);
}

/// A KAHE key (a site's k_i, a piece, or a cohort sum) in the NTT domain; wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyVector(Zeroizing<Vec<u64>>);

impl core::fmt::Debug for KeyVector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KeyVector(..)")
    }
}

impl KeyVector {
    /// The zero key (identity of key addition).
    pub fn zero() -> Self {
        Self(Zeroizing::new(vec![0; N]))
    }

    /// The PRG expansion of a 32-byte piece seed: N uniform values mod q by rejection sampling.
    pub fn expand(seed: &[u8; 32]) -> Self {
        let mut v = Zeroizing::new(vec![0u64; N]);
        UniformSampler::new(seed).fill_mod_q(&mut v);
        Self(v)
    }

    /// Wraps N canonical values (a released piece sum); refuses anything else.
    pub fn from_values(values: Vec<u64>) -> Result<Self, HeError> {
        let v = Zeroizing::new(values);
        if v.len() != N {
            return Err(HeError::LengthMismatch {
                what: "key vector",
                expected: N,
                got: v.len(),
            });
        }
        if v.iter().any(|&x| x >= Q) {
            return Err(HeError::BadPieceSum {
                piece: 0,
                reason: "non-canonical value",
            });
        }
        Ok(Self(v))
    }

    /// Adds another key (keys add like bodies).
    pub fn add_assign(&mut self, other: &KeyVector) {
        field::add_assign(&mut self.0, &other.0);
    }

    /// The values (NTT domain).
    pub fn values(&self) -> &[u64] {
        &self.0
    }

    fn negated(&self) -> Self {
        Self(Zeroizing::new(
            self.0.iter().map(|&v| field::sub(0, v)).collect(),
        ))
    }
}

/// Encrypts `update` (d values below 2^b) under `key`: returns the bodies, `chunks · N` words.
/// The noise comes from the keystream of `noise_seed`, so a retry re-creates identical bytes.
pub fn encrypt(
    params: &KaheParams,
    round_context: &[u8; 32],
    key: &KeyVector,
    update: &[u64],
    noise_seed: &[u8; 32],
) -> Result<Vec<u64>, HeError> {
    if update.len() != params.vector_len() {
        return Err(HeError::LengthMismatch {
            what: "update",
            expected: params.vector_len(),
            got: update.len(),
        });
    }
    let limit = 1u64 << params.input_bits();
    if let Some(index) = update.iter().position(|&x| x >= limit) {
        return Err(HeError::ValueOutOfRange {
            index,
            input_bits: params.input_bits(),
        });
    }
    let delta = params.delta();
    let mut noise = UniformSampler::new(noise_seed);
    let mut bodies = vec![0u64; params.body_len()];
    let mut scratch = Zeroizing::new(vec![0u64; N]);
    for (j, chunk) in bodies.chunks_exact_mut(N).enumerate() {
        fill_noise(&mut noise, SIGMA, chunk);
        let start = (j * N).min(update.len());
        let end = ((j + 1) * N).min(update.len());
        for (c, &x) in chunk.iter_mut().zip(&update[start..end]) {
            // Δ·x < q because x < 2^b ≤ 2^P.
            *c = field::add(*c, delta * x);
        }
        public_mask(round_context, j, &mut scratch);
        for (m, &k) in scratch.iter_mut().zip(key.values()) {
            *m = field::mul(*m, k);
        }
        add_backward(chunk, &mut scratch);
    }
    scratch.zeroize();
    Ok(bodies)
}

/// Adds one site's bodies into a running sum (both canonical).
pub fn add_bodies(sum: &mut [u64], bodies: &[u64]) {
    field::add_assign(sum, bodies);
}

/// Decodes the sum of `cohort` bodies under the sum of their keys: `Σx` (d values), or
/// [`HeError::SumInvalid`] — without saying where or by how much — if any residual exceeds the
/// noise bound of `cohort` bodies, any value exceeds `cohort·(2^b − 1)`, or the check chunk or
/// the padding is not zero.
pub fn decode_sum(
    params: &KaheParams,
    round_context: &[u8; 32],
    cohort: usize,
    body_sum: &[u64],
    key_sum: &KeyVector,
) -> Result<Vec<u64>, HeError> {
    if body_sum.len() != params.body_len() {
        return Err(HeError::LengthMismatch {
            what: "body sum",
            expected: params.body_len(),
            got: body_sum.len(),
        });
    }
    let delta = params.delta();
    let budget = params.noise_budget(cohort);
    let max_value = ((1u64 << params.input_bits()) - 1).saturating_mul(cohort as u64);
    let neg = key_sum.negated();
    let d = params.vector_len();
    let mut out = Vec::with_capacity(d);
    let mut phase = vec![0u64; N];
    let mut scratch = vec![0u64; N];
    let mut valid = true;
    for (j, chunk) in body_sum.chunks_exact(N).enumerate() {
        phase.copy_from_slice(chunk);
        public_mask(round_context, j, &mut scratch);
        for (m, &k) in scratch.iter_mut().zip(neg.values()) {
            *m = field::mul(*m, k);
        }
        add_backward(&mut phase, &mut scratch);
        for (i, &ph) in phase.iter().enumerate() {
            let value = field::add(ph, delta / 2) / delta;
            let residual = field::centred(field::sub(ph, value.wrapping_mul(delta) % Q));
            let index = j * N + i;
            let expected_zero = index >= d;
            valid &= residual.unsigned_abs() <= u128::from(budget)
                && value <= max_value
                && (!expected_zero || value == 0);
            if !expected_zero {
                out.push(value);
            }
        }
    }
    if valid {
        Ok(out)
    } else {
        Err(HeError::SumInvalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> KeyVector {
        KeyVector::expand(&[seed; 32])
    }

    #[test]
    fn one_site_round_trips_and_a_wrong_key_is_detected() {
        let p = KaheParams::new(16, 4, 100).unwrap();
        let ctx = [1; 32];
        let x: Vec<u64> = (0..100).map(|i| (i * 655) % 65536).collect();
        let c = encrypt(&p, &ctx, &key(1), &x, &[2; 32]).unwrap();
        assert_eq!(c.len(), 2 * N);
        assert_eq!(decode_sum(&p, &ctx, 1, &c, &key(1)).unwrap(), x);
        assert_eq!(
            decode_sum(&p, &ctx, 1, &c, &key(3)),
            Err(HeError::SumInvalid)
        );
        assert_eq!(
            decode_sum(&p, &[9; 32], 1, &c, &key(1)),
            Err(HeError::SumInvalid)
        );
    }

    #[test]
    fn bodies_and_keys_add() {
        let p = KaheParams::new(16, 8, 5000).unwrap();
        let ctx = [4; 32];
        let mut sum = vec![0; p.body_len()];
        let mut ksum = KeyVector::zero();
        let mut want = vec![0u64; 5000];
        for s in 0..8u8 {
            let x: Vec<u64> = (0..5000u64)
                .map(|i| (i * 31 + u64::from(s) * 977) % 65536)
                .collect();
            add_bodies(
                &mut sum,
                &encrypt(&p, &ctx, &key(s), &x, &[s + 100; 32]).unwrap(),
            );
            ksum.add_assign(&key(s));
            for (w, v) in want.iter_mut().zip(&x) {
                *w += v;
            }
        }
        assert_eq!(decode_sum(&p, &ctx, 8, &sum, &ksum).unwrap(), want);
    }

    #[test]
    fn inputs_outside_the_width_are_refused() {
        let p = KaheParams::new(8, 4, 3).unwrap();
        assert_eq!(
            encrypt(&p, &[0; 32], &key(1), &[1, 256, 3], &[0; 32]),
            Err(HeError::ValueOutOfRange {
                index: 1,
                input_bits: 8
            })
        );
    }
}
