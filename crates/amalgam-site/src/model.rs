//! The global model chain as every site computes it: model_{r+1} from model_r and the
//! published, decoded sum, with a fixed operation order, and its digest over the canonical
//! little-endian f32 bytes. A site checks the model the aggregator serves against its own.

use sha2::{Digest, Sha256};

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

/// Why a model step was refused.
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
}
