//! Decryption of a round aggregate: one negacyclic product per 2048 values, removal of the
//! deterministic bias of binary encryption randomness, rounding, and a per-value noise check.
//!
//! A sum of `K` honest ciphertexts has phase `Δ·Σm + E_pk(Σ r_k) + centred noise`. Each `r_k` is
//! uniform on {0,1}^2048 with mean 1/2, so `E_pk(Σ r_k)` has mean `(K/2)·E_pk(1)`, a vector the
//! key holder computes once from `e_pk` ([`crate::keys::DecryptionKey`]). Subtracting it leaves a
//! centred residual that the budget of [`crate::noise`] bounds; a value whose residual exceeds
//! that bound, or whose decoded sum exceeds `K·(2^b - 1)`, can only come from a malformed
//! contribution (or another key) and the whole aggregate is refused.

use zeroize::Zeroize;

use crate::ciphertext::CiphertextSum;
use crate::error::HeError;
use crate::keys::DecryptionKey;
use crate::noise::NoiseBudget;
use crate::params::{HeParams, LWE_DIMENSION, VALUES_PER_LIST};
use crate::ring::list_phases;

/// Whether decoding subtracts the bias of the binary encryption randomness. Only
/// [`BiasRemoval::Skip`] exists to demonstrate, in tests and benchmarks, that the bias matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasRemoval {
    /// Subtract `(K/2)·E_pk(1)` (what the decryptor always does).
    Apply,
    /// Decode the raw phases; sums of many sites then decode wrongly.
    Skip,
}

/// Decrypts an aggregate of `sum.sites()` contributions into the exact sums, or refuses it.
pub fn decrypt_sum(
    key: &DecryptionKey,
    params: &HeParams,
    sum: &CiphertextSum,
) -> Result<Vec<u64>, HeError> {
    let mut phases = sum_phases(key, params, sum)?;
    let values = decode(key, params, sum.sites(), &phases, BiasRemoval::Apply);
    // Phases minus the released sums are the residual noise, which depends on the secret.
    phases.zeroize();
    values
}

/// Raw phases `body_j - <X^j·mask, s>` of every value of the aggregate.
pub fn sum_phases(
    key: &DecryptionKey,
    params: &HeParams,
    sum: &CiphertextSum,
) -> Result<Vec<u64>, HeError> {
    if sum.len() != params.vector_len() as usize || sum.words().len() != params.ciphertext_words() {
        return Err(HeError::LengthMismatch {
            expected: params.vector_len() as usize,
            got: sum.len(),
        });
    }
    let mut phases = vec![0u64; sum.len()];
    let mut scratch = vec![0u64; LWE_DIMENSION];
    let masks = sum.masks().chunks_exact(LWE_DIMENSION);
    let bodies = sum.bodies().chunks(VALUES_PER_LIST);
    for ((mask, bodies), out) in masks.zip(bodies).zip(phases.chunks_mut(VALUES_PER_LIST)) {
        list_phases(mask, bodies, key.secret_words(), &mut scratch, out);
    }
    scratch.zeroize();
    Ok(phases)
}

/// Rounds phases to `P`-bit sums after (optionally) removing the bias of `sites` contributions,
/// refusing any value whose residual noise or magnitude is impossible for honest inputs.
pub fn decode(
    key: &DecryptionKey,
    params: &HeParams,
    sites: u32,
    phases: &[u64],
    bias: BiasRemoval,
) -> Result<Vec<u64>, HeError> {
    let budget = NoiseBudget::for_sites(sites.max(1), params.plaintext_bits());
    let bound = budget.bound();
    let delta_log = params.delta_log2();
    let half_delta = 1u64 << (delta_log - 1);
    let max_sum = u64::from(sites) * ((1u64 << params.input_bits()) - 1);
    let unit = key.bias_unit();
    let mut out = Vec::with_capacity(phases.len());
    for (index, &phase) in phases.iter().enumerate() {
        let corrected = match bias {
            BiasRemoval::Apply => {
                // |unit| <= 2^28 and sites <= 2^20: the product fits in i64.
                let b = (i64::from(sites) * unit[index % VALUES_PER_LIST]) >> 1;
                phase.wrapping_sub(b as u64)
            }
            BiasRemoval::Skip => phase,
        };
        let value = corrected.wrapping_add(half_delta) >> delta_log;
        let residual = corrected.wrapping_sub(value << delta_log) as i64;
        if residual.unsigned_abs() > bound {
            return Err(HeError::NoiseBudgetExceeded {
                index,
                residual_log2: (residual.unsigned_abs() as f64).log2(),
                bound_log2: budget.bound_log2(),
                sites,
            });
        }
        if value > max_sum {
            return Err(HeError::SumOutOfRange {
                index,
                value,
                max: max_sum,
            });
        }
        out.push(value);
    }
    Ok(out)
}
