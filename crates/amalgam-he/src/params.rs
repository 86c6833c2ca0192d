//! KAHE parameters, validated once (spec he-fallback.md §3).
//!
//! Ring Z_q[X]/(X^N + 1) with N = 2048 and the prime q = 2^64 − 2^32 + 1; rounded Gaussian noise
//! σ = 2^16 per site; plaintext scale Δ = ⌊q / 2^P⌋ with P = b + ⌈log2 K_max⌉, so the sum of
//! K_max inputs of b bits never wraps. A parameter set is accepted only if the deterministic
//! noise bound of K_max bodies stays below Δ/2, so an honest sum always decodes.

use amalgam_proto::DecodeError;
use amalgam_proto::codec::{Decode, Encode, Reader, Writer};

use crate::error::HeError;
use crate::field::Q;
use crate::gaussian::noise_bound;

/// Ring dimension N (values per chunk). N = 1024 would be broken at this q.
pub const N: usize = 2048;
/// Standard deviation σ of each site's rounded Gaussian noise (2^16).
pub const SIGMA: f64 = 65536.0;
/// Largest input width b.
pub const MAX_INPUT_BITS: u32 = 32;
/// Largest cohort K_max (site ids are 16-bit).
pub const MAX_SITES: u32 = 65_535;
/// Largest vector length d (2^24 values, 128 MiB of bodies per site).
pub const MAX_VECTOR_LEN: u32 = 1 << 24;

/// A validated KAHE parameter set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KaheParams {
    input_bits: u32,
    max_sites: u32,
    vector_len: u32,
}

fn ceil_log2(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

fn range(name: &'static str, value: u32, min: u32, max: u32) -> Result<(), HeError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(HeError::ParamOutOfRange {
            name,
            value: value.into(),
            min: min.into(),
            max: max.into(),
        })
    }
}

impl KaheParams {
    /// Validates `b` (input bits), `K_max` (largest cohort) and `d` (vector length).
    pub fn new(input_bits: u32, max_sites: u32, vector_len: u32) -> Result<Self, HeError> {
        range("input_bits", input_bits, 1, MAX_INPUT_BITS)?;
        range("max_sites", max_sites, 1, MAX_SITES)?;
        range("vector_len", vector_len, 1, MAX_VECTOR_LEN)?;
        let p = Self {
            input_bits,
            max_sites,
            vector_len,
        };
        let budget = u128::from(noise_bound(SIGMA)) * u128::from(max_sites);
        if budget >= u128::from(p.delta() / 2) {
            return Err(HeError::NoiseBudgetTooSmall {
                plaintext_bits: p.plaintext_bits(),
                max_sites,
            });
        }
        Ok(p)
    }

    /// Input width b.
    pub fn input_bits(&self) -> u32 {
        self.input_bits
    }

    /// Largest cohort K_max.
    pub fn max_sites(&self) -> u32 {
        self.max_sites
    }

    /// Vector length d.
    pub fn vector_len(&self) -> usize {
        self.vector_len as usize
    }

    /// Plaintext width P = b + ⌈log2 K_max⌉.
    pub fn plaintext_bits(&self) -> u32 {
        self.input_bits + ceil_log2(self.max_sites)
    }

    /// Scale Δ = ⌊q / 2^P⌋.
    pub fn delta(&self) -> u64 {
        Q >> self.plaintext_bits()
    }

    /// Data chunks ⌈d / N⌉.
    pub fn data_chunks(&self) -> usize {
        self.vector_len().div_ceil(N)
    }

    /// All chunks: the data chunks, plus one all-zero check chunk when d ≤ N (with a single
    /// chunk a lying decryptor could otherwise shift the sum by any Δ-multiple undetected).
    pub fn chunks(&self) -> usize {
        self.data_chunks() + usize::from(self.data_chunks() == 1)
    }

    /// Words of KAHE bodies per site (`chunks · N`).
    pub fn body_len(&self) -> usize {
        self.chunks() * N
    }

    /// The deterministic bound on the noise of a sum of `cohort` honest bodies.
    pub fn noise_budget(&self, cohort: usize) -> u64 {
        noise_bound(SIGMA).saturating_mul(cohort as u64)
    }
}

impl Encode for KaheParams {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.input_bits);
        w.u32(self.max_sites);
        w.u32(self.vector_len);
    }
}

impl Decode for KaheParams {
    type Context = ();
    const NAME: &'static str = "KaheParams";
    fn decode(r: &mut Reader<'_>, _: &()) -> Result<Self, DecodeError> {
        let b = r.u32("input_bits")?;
        let k = r.u32("max_sites")?;
        let d = r.u32("vector_len")?;
        Self::new(b, k, d).map_err(|_| DecodeError::InvalidValue {
            field: "kahe_params",
            reason: "parameter set refused",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousand_sites_of_sixteen_bits_fit_and_wide_inputs_do_not() {
        let p = KaheParams::new(16, 1000, 100).unwrap();
        assert_eq!(p.plaintext_bits(), 26);
        assert_eq!(p.chunks(), 2, "one data chunk and the check chunk");
        assert_eq!(KaheParams::new(16, 1000, 4097).unwrap().chunks(), 3);
        assert!(matches!(
            KaheParams::new(32, 65_535, 10),
            Err(HeError::NoiseBudgetTooSmall { .. })
        ));
        assert!(KaheParams::new(0, 10, 10).is_err());
        assert!(KaheParams::new(16, 10, 0).is_err());
    }

    #[test]
    fn largest_cohorts_are_the_ones_the_spec_states() {
        for (b, k) in [
            (8, 65_535),
            (16, 15_291),
            (20, 3_822),
            (22, 1_911),
            (24, 955),
            (32, 59),
        ] {
            assert!(KaheParams::new(b, k, 1).is_ok(), "b = {b}, K = {k}");
            if k < MAX_SITES {
                assert!(
                    KaheParams::new(b, k + 1, 1).is_err(),
                    "b = {b}, K = {}",
                    k + 1
                );
            }
        }
    }

    #[test]
    fn params_round_trip_and_refuse_bad_sets() {
        let p = KaheParams::new(20, 300, 5000).unwrap();
        assert_eq!(KaheParams::from_bytes(&p.to_bytes(), &()).unwrap(), p);
        let bad = KaheParams {
            input_bits: 32,
            max_sites: 65_535,
            vector_len: 1,
        };
        assert!(KaheParams::from_bytes(&bad.to_bytes(), &()).is_err());
    }
}
