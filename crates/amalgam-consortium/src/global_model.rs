//! The global model chain, computed the same way by the aggregator and by every site:
//! model_{r+1} from model_r and round r's published sum, decoded with the campaign's DDG
//! parameters, with a fixed operation order (one pass in parameter order, no parallel
//! reduction), and its digest over the canonical little-endian f32 bytes.
//!
//! One implementation for both sides is the point: a site compares the digest the aggregator
//! binds the next round to with its own computation, so any divergence in float order would
//! read as an attack.

use amalgam_dp::encoding::{DdgCodec, EncodingParams};
use amalgam_dp::rotation::RotationSeed;
use sha2::{Digest, Sha256};

use crate::VerifiedManifest;

/// Domain of [`model_digest`].
const MODEL_DOMAIN: &[u8] = b"amalgam/v1/model/f32le\0";

/// SHA-256 over the domain, the element count (u64 LE) and each value's LE bytes in order.
pub fn model_digest(values: &[f32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(MODEL_DOMAIN);
    h.update((values.len() as u64).to_le_bytes());
    for v in values {
        h.update(v.to_le_bytes());
    }
    h.finalize().into()
}

/// Why a model step (or a model's bytes) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The decoded sum is shorter than the model.
    #[error("decoded sum has {got} values, the model {expected}")]
    Length {
        /// Model length.
        expected: usize,
        /// Sum length.
        got: usize,
    },
    /// No contributor: the mean is undefined.
    #[error("no contributor in the round")]
    NoContributors,
    /// A value is NaN or infinite.
    #[error("model value {0} is not finite")]
    NotFinite(usize),
    /// The published sum does not decode under the campaign's encoding.
    #[error("published sum does not decode: {0}")]
    Decode(String),
    /// Model bytes of the wrong length (canonical form: 4 bytes per parameter, nothing else).
    #[error("model bytes: {got} bytes, the campaign's {params} parameters need {expected}")]
    Bytes {
        /// The parameter count.
        params: usize,
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

/// FedAvg with a server learning rate, uniform weights: for each i in order,
/// w'_i = f32(f64(w_i) + lr · (s_i / n)), where s is the decoded (noisy) sum of clipped
/// updates, padded beyond the model length (the padding is ignored).
pub fn fedavg_step(
    model: &[f32],
    decoded_sum: &[f64],
    contributors: usize,
    server_lr: f64,
) -> Result<Vec<f32>, ModelError> {
    if decoded_sum.len() < model.len() {
        return Err(ModelError::Length {
            expected: model.len(),
            got: decoded_sum.len(),
        });
    }
    if contributors == 0 {
        return Err(ModelError::NoContributors);
    }
    let n = contributors as f64;
    let mut out = Vec::with_capacity(model.len());
    for (i, (w, s)) in model.iter().zip(decoded_sum).enumerate() {
        let v = (f64::from(*w) + server_lr * (s / n)) as f32;
        if !v.is_finite() {
            return Err(ModelError::NotFinite(i));
        }
        out.push(v);
    }
    Ok(out)
}

/// model_{r+1}: decodes round r's published modular `sum` with round r's `encoding` (the DP
/// decode every site uses) and takes the FedAvg step over `contributors` sites.
pub fn next_model(
    encoding: EncodingParams,
    model: &[f32],
    sum: &[u64],
    contributors: usize,
    server_lr: f64,
) -> Result<Vec<f32>, ModelError> {
    let codec = DdgCodec::new(encoding).map_err(|e| ModelError::Decode(e.to_string()))?;
    let decoded = codec
        .decode_sum(sum)
        .map_err(|e| ModelError::Decode(e.to_string()))?;
    fedavg_step(model, &decoded, contributors, server_lr)
}

/// Round `round`'s DDG encoding parameters under `manifest` (DP policy and the round's public
/// rotation seed, [`VerifiedManifest::hadamard_seed`]).
pub fn encoding_params(manifest: &VerifiedManifest, round: u64) -> EncodingParams {
    let dp = manifest.dp_round_params();
    EncodingParams {
        clip: dp.clip,
        gamma: dp.gamma,
        bits: dp.bits,
        dim: dp.dim,
        beta: dp.beta,
        rotation_seed: RotationSeed(manifest.hadamard_seed(round)),
    }
}

/// The canonical bytes of a model: each value's little-endian f32 bytes in parameter order
/// (the initial-weights file format and the body of the model route).
pub fn model_bytes(values: &[f32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(values.len().saturating_mul(4));
    for v in values {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// Parses canonical model bytes of exactly `params` parameters (untrusted input: the length
/// is checked before anything is read). A NaN or an infinity is refused with
/// [`ModelError::NotFinite`] (its index): no step [`fedavg_step`] takes can produce one, and a
/// NaN has many bit patterns, so accepting them would let two byte strings stand for one model.
pub fn model_from_bytes(bytes: &[u8], params: usize) -> Result<Vec<f32>, ModelError> {
    let expected = params.saturating_mul(4);
    if bytes.len() != expected {
        return Err(ModelError::Bytes {
            params,
            expected,
            got: bytes.len(),
        });
    }
    bytes
        .chunks_exact(4)
        .enumerate()
        .map(|(i, c)| {
            let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if v.is_finite() {
                Ok(v)
            } else {
                Err(ModelError::NotFinite(i))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn step_and_digest() {
        let m = [1.0f32, 2.0];
        let next = fedavg_step(&m, &[2.0, -4.0, 99.0], 2, 0.5).unwrap();
        assert_eq!(next, vec![1.5, 1.0]);
        assert_ne!(model_digest(&m), model_digest(&next));
        // -0.0 and 0.0 differ in bytes: the digest is over bytes, not values.
        assert_ne!(model_digest(&[0.0]), model_digest(&[-0.0]));
        assert!(fedavg_step(&m, &[1.0], 1, 1.0).is_err());
        assert!(fedavg_step(&m, &[1.0, 1.0], 0, 1.0).is_err());
    }

    #[test]
    fn model_bytes_are_strict() {
        let m = [1.5f32, -0.0, f32::MIN_POSITIVE];
        let b = model_bytes(&m);
        assert_eq!(b.len(), 12);
        let back = model_from_bytes(&b, 3).unwrap();
        assert_eq!(model_digest(&back), model_digest(&m));
        assert!(matches!(
            model_from_bytes(&b[..11], 3),
            Err(ModelError::Bytes { got: 11, .. })
        ));
        assert!(model_from_bytes(&b, 2).is_err());
    }

    /// The aggregator and the sites may run on machines with different thread counts: the
    /// step is computed on 1 and on 2 threads (two steps concurrently, each on its own
    /// thread) from the same inputs and every digest is bit-identical.
    #[cfg(feature = "test-support")]
    #[test]
    fn next_model_is_bit_identical_across_threads() {
        let c = crate::testing::consortium(3, 5, 0, 64);
        let enc = encoding_params(&c.verified, 7);
        let d = usize::try_from(enc.dim.padded()).unwrap();
        let mask = (1u64 << enc.bits.get()) - 1;
        let sum: Vec<u64> = (0..d as u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & mask)
            .collect();
        let model: Vec<f32> = (0..64).map(|i| i as f32 * 0.01 - 0.3).collect();
        let one = model_digest(&next_model(enc, &model, &sum, 5, 0.7).unwrap());
        let spawn = |enc: EncodingParams, model: Vec<f32>, sum: Vec<u64>| {
            std::thread::spawn(move || {
                model_digest(&next_model(enc, &model, &sum, 5, 0.7).unwrap())
            })
        };
        let a = spawn(enc, model.clone(), sum.clone());
        let b = spawn(encoding_params(&c.verified, 7), model.clone(), sum.clone());
        assert_eq!(a.join().unwrap(), one);
        assert_eq!(b.join().unwrap(), one);
        // Another round's rotation gives another model: the test can fail.
        let other = model_digest(
            &next_model(encoding_params(&c.verified, 8), &model, &sum, 5, 0.7).unwrap(),
        );
        assert_ne!(other, one);
    }
}
