//! Parameters of an HE round and the noise-budget check that refuses sets that could fail to
//! decrypt.
//!
//! The lattice parameters are fixed: they are the encryption half of Zama's 128-bit compact
//! public-key parameter set (LWE dimension 2048, TUniform(17) noise, native modulus 2^64). What a
//! consortium chooses is the input width `b`, the largest cohort `K_max` and the vector length;
//! from those follows the plaintext width `P = b + ceil(log2 K_max)` and the scaling factor
//! `Δ = 2^(64-P)`. A sum of `K_max` inputs of `b` bits fits in `P` bits, so the aggregate never
//! wraps; the remaining `64 - P` bits must absorb the encryption noise of `K_max` ciphertexts.

use amalgam_proto::codec::{Decode, Encode, Reader, Writer};
use amalgam_proto::{DecodeError, InputBits, VectorLen};

use crate::error::HeError;
use crate::noise::NoiseBudget;

/// LWE dimension of the compact public key, equal to the polynomial size of the ring.
pub const LWE_DIMENSION: usize = 2048;

/// Values carried by one compact ciphertext list: one polynomial mask serves this many bodies.
pub const VALUES_PER_LIST: usize = LWE_DIMENSION;

/// log2 of the TUniform noise bound: every noise sample lies in `[-2^17, 2^17]`.
pub const NOISE_BOUND_LOG2: u32 = 17;

/// Largest input width accepted; wider inputs leave no room for noise at any cohort size.
pub const MAX_INPUT_BITS: u32 = 32;

/// Largest cohort an HE round may be dimensioned for: every site has a 16-bit manifest index.
pub const MAX_SITES: u32 = u16::MAX as u32;

/// Validated parameters of HE rounds: input width, largest cohort and vector length, with the
/// derived plaintext width. Constructed only through [`HeParams::new`], which runs the noise
/// budget check, so every value of this type decrypts correctly with overwhelming probability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeParams {
    input_bits: u32,
    max_sites: u32,
    vector_len: u32,
    plaintext_bits: u32,
}

impl HeParams {
    /// Validates `(b, K_max, d)` and derives `P = b + ceil(log2 K_max)`; refuses, with the
    /// numbers, any set whose worst-case noise after `K_max` additions could exceed `Δ/2`.
    /// The vector length (at most 2^24, [`VectorLen`]) bounds every ciphertext a round decodes.
    pub fn new(
        input_bits: InputBits,
        max_sites: u32,
        vector_len: VectorLen,
    ) -> Result<Self, HeError> {
        let input_bits = u32::from(input_bits.get());
        if input_bits > MAX_INPUT_BITS {
            return Err(HeError::InputBitsOutOfRange {
                input_bits,
                max: MAX_INPUT_BITS,
            });
        }
        if !(2..=MAX_SITES).contains(&max_sites) {
            return Err(HeError::MaxSitesOutOfRange {
                max_sites,
                max: MAX_SITES,
            });
        }
        let vector_len = vector_len.get();
        let plaintext_bits = input_bits + ceil_log2(max_sites);
        let budget = NoiseBudget::for_sites(max_sites, plaintext_bits);
        if !budget.fits() {
            return Err(HeError::NoiseBudgetTooSmall {
                plaintext_bits,
                max_sites,
                noise_log2: budget.bound_log2(),
                half_delta_log2: budget.half_delta_log2(),
            });
        }
        Ok(Self {
            input_bits,
            max_sites,
            vector_len,
            plaintext_bits,
        })
    }

    /// Input width `b`: each site's values lie in `[0, 2^b)`.
    pub fn input_bits(&self) -> u32 {
        self.input_bits
    }

    /// Largest number of contributions one aggregate may hold.
    pub fn max_sites(&self) -> u32 {
        self.max_sites
    }

    /// Number of values in every vector of a round.
    pub fn vector_len(&self) -> u32 {
        self.vector_len
    }

    /// Plaintext width `P = b + ceil(log2 K_max)`.
    pub fn plaintext_bits(&self) -> u32 {
        self.plaintext_bits
    }

    /// log2 of the scaling factor `Δ = 2^(64-P)`.
    pub fn delta_log2(&self) -> u32 {
        64 - self.plaintext_bits
    }

    /// Number of polynomial masks per vector: `ceil(d / 2048)`.
    pub fn list_count(&self) -> usize {
        (self.vector_len as usize).div_ceil(VALUES_PER_LIST)
    }

    /// Number of `u64` words of one encrypted vector: one mask per 2048 values plus one body per
    /// value.
    pub fn ciphertext_words(&self) -> usize {
        self.list_count() * LWE_DIMENSION + self.vector_len as usize
    }
}

impl Encode for HeParams {
    /// Input width `b` (u8), largest cohort `K_max` (u32), vector length `d` (u32); embedded in
    /// configurations and snapshots, so no header. `P` is derived, not sent.
    fn encode(&self, w: &mut Writer) {
        w.u8(self.input_bits as u8);
        w.u32(self.max_sites);
        w.u32(self.vector_len);
    }
}

impl Decode for HeParams {
    type Context = ();
    const NAME: &'static str = "HeParams";

    /// Decodes and re-runs every check of [`HeParams::new`], the noise budget included.
    fn decode(r: &mut Reader<'_>, _: &()) -> Result<Self, DecodeError> {
        let refused = |field| {
            move |_| DecodeError::InvalidValue {
                field,
                reason: "refused parameter",
            }
        };
        let b = InputBits::new(r.u8("he_params.b")?).map_err(refused("he_params.b"))?;
        let k = r.u32("he_params.max_sites")?;
        let d = VectorLen::new(r.u32("he_params.d")?).map_err(refused("he_params.d"))?;
        HeParams::new(b, k, d).map_err(|_| DecodeError::InvalidValue {
            field: "he_params",
            reason: "refused parameter set (range or noise budget)",
        })
    }
}

/// `ceil(log2 x)` for `x >= 1`.
pub(crate) fn ceil_log2(x: u32) -> u32 {
    if x <= 1 {
        0
    } else {
        32 - (x - 1).leading_zeros()
    }
}

/// Shorthand used by tests, benches and tools: builds the newtypes and then [`HeParams`].
pub fn he_params(input_bits: u8, max_sites: u32, vector_len: u32) -> Result<HeParams, HeError> {
    let b = InputBits::new(input_bits).map_err(|_| HeError::InputBitsOutOfRange {
        input_bits: input_bits.into(),
        max: MAX_INPUT_BITS,
    })?;
    let d = VectorLen::new(vector_len).map_err(|_| HeError::VectorLenOutOfRange {
        vector_len,
        max: amalgam_proto::params::MAX_VECTOR_LEN,
    })?;
    HeParams::new(b, max_sites, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_width_is_input_plus_cohort_bits() {
        let p = he_params(16, 1000, 10).unwrap();
        assert_eq!(p.plaintext_bits(), 16 + 10);
        let p = he_params(16, 1024, 10).unwrap();
        assert_eq!(p.plaintext_bits(), 26);
        let p = he_params(16, 1025, 10).unwrap();
        assert_eq!(p.plaintext_bits(), 27);
    }

    #[test]
    fn layout_counts_one_mask_per_list() {
        let p = he_params(16, 100, 2049).unwrap();
        assert_eq!(p.list_count(), 2);
        assert_eq!(p.ciphertext_words(), 2 * 2048 + 2049);
    }

    #[test]
    fn sixteen_bit_inputs_fit_up_to_sixteen_thousand_sites() {
        let mut k = 2;
        while k <= 1 << 14 {
            assert!(he_params(16, k, 1).is_ok(), "K_max = {k}");
            k *= 2;
        }
        // At 2^15 sites the noise bound (2^33.0) passes Δ/2 = 2^32.
        assert!(matches!(
            he_params(16, 1 << 15, 1),
            Err(HeError::NoiseBudgetTooSmall { .. })
        ));
    }

    #[test]
    fn widest_input_for_a_thousand_sites_is_twenty_two_bits() {
        assert_eq!(he_params(22, 1024, 1).unwrap().plaintext_bits(), 32);
        assert!(he_params(23, 1024, 1).is_err());
    }

    #[test]
    fn refuses_sets_whose_noise_could_reach_half_delta() {
        // 32-bit inputs with a thousand sites leave 22 bits for noise that needs ~31.
        let err = he_params(32, 1000, 1).unwrap_err();
        match err {
            HeError::NoiseBudgetTooSmall {
                plaintext_bits,
                noise_log2,
                half_delta_log2,
                ..
            } => {
                assert_eq!(plaintext_bits, 42);
                assert!(noise_log2 > half_delta_log2 as f64);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("2^"));
    }

    #[test]
    fn encoding_round_trips_and_decoding_rechecks_the_budget() {
        let p = he_params(16, 1000, 4096).unwrap();
        let bytes = p.to_bytes();
        assert_eq!(bytes, [16, 0, 0, 0x03, 0xe8, 0, 0, 0x10, 0]);
        assert_eq!(HeParams::from_bytes(&bytes, &()).unwrap(), p);
        let mut too_wide = bytes.clone();
        too_wide[0] = 32;
        assert!(matches!(
            HeParams::from_bytes(&too_wide, &()),
            Err(DecodeError::InvalidValue {
                field: "he_params",
                ..
            })
        ));
        assert!(matches!(
            HeParams::from_bytes(&bytes[..8], &()),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn refuses_out_of_range_inputs() {
        assert!(matches!(
            he_params(0, 10, 1),
            Err(HeError::InputBitsOutOfRange { .. })
        ));
        assert!(matches!(
            he_params(8, 1, 1),
            Err(HeError::MaxSitesOutOfRange { .. })
        ));
        assert!(matches!(
            he_params(8, 10, 0),
            Err(HeError::VectorLenOutOfRange { .. })
        ));
        assert!(matches!(
            he_params(8, 10, (1 << 24) + 1),
            Err(HeError::VectorLenOutOfRange { .. })
        ));
        assert!(matches!(
            he_params(8, MAX_SITES + 1, 1),
            Err(HeError::MaxSitesOutOfRange { .. })
        ));
    }
}
