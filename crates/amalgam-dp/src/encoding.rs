//! The DDG encoding of one plant's update and the decoding of the aggregate
//! (KLS21 Algorithms 1 and 2; TFF `DistributedDpSumFactory` with rotation type "hd").
//!
//! Encode: L2 clip to C → rotate ([`Rotation`]) → multiply by γ → conditional randomized
//! rounding (retry until the rounded norm is within [`rounded_norm_bound`]) → add discrete
//! Gaussian noise → reduce modulo 2^b into `u64` values in [0, 2^b) for the masking protocol.
//! Decode the modular sum: centre to (−2^(b−1), 2^(b−1)] → divide by γ → inverse rotation →
//! optionally divide by the number of contributors.

use rand_chacha::ChaCha20Rng;
use rand_core::Rng;

use crate::error::{EncodeError, ParamError};
use crate::ledger::RoundPermit;
use crate::params::{BitWidth, ClipNorm, Dimension, Gamma, RoundingBias, Sensitivity, SiteCount};
use crate::rotation::{Rotation, RotationSeed};
use crate::sampler::NoiseSampler;
use crate::scaling::rounded_norm_bound;

/// How many times conditional rounding may be retried before the encoder gives up (TFF's
/// `max_tries`). With β ≤ e^(−1/2) each try fails with probability ≤ β, so 1000 failures in a
/// row have probability below 10⁻²¹⁷ unless the input breaks the clip bound.
pub const MAX_ROUNDING_TRIES: u32 = 1000;

/// Everything the encoding of one round depends on (all public).
#[derive(Debug, Clone, Copy)]
pub struct EncodingParams {
    /// L2 clip norm C.
    pub clip: ClipNorm,
    /// Scale factor γ.
    pub gamma: Gamma,
    /// Bit width b of the modular sum.
    pub bits: BitWidth,
    /// Length d of the update.
    pub dim: Dimension,
    /// Conditional rounding bias β.
    pub beta: RoundingBias,
    /// Public per-round rotation seed.
    pub rotation_seed: RotationSeed,
}

/// One round's discrete Gaussian noise, drawn under the round's permit and used once.
pub struct RoundNoise {
    round_id: u64,
    values: Vec<i64>,
}

/// Encoder and decoder for one round's parameters.
#[derive(Debug, Clone)]
pub struct DdgCodec {
    params: EncodingParams,
    rotation: Rotation,
    bound: Sensitivity,
}

/// Scales `x` to L2 norm at most `clip` (unchanged when already within).
pub fn clip_l2(x: &[f64], clip: ClipNorm) -> Vec<f64> {
    let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > clip.get() {
        let factor = clip.get() / norm;
        x.iter().map(|v| v * factor).collect()
    } else {
        x.to_vec()
    }
}

/// A uniform f64 in [0, 1) from the top 53 bits of one 64-bit draw.
fn uniform_unit(rng: &mut ChaCha20Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

impl DdgCodec {
    /// A codec for `params`.
    pub fn new(params: EncodingParams) -> Result<Self, ParamError> {
        // Keeps every scaled coordinate (|y_i| ≤ γ·C) exactly representable as f64 and i64.
        let scaled_clip = params.gamma.get() * params.clip.get();
        if scaled_clip > 2f64.powi(52) {
            return Err(ParamError::OutOfRange {
                name: "gamma * clip",
                value: scaled_clip,
                rule: "<= 2^52",
            });
        }
        let rotation = Rotation::new(params.rotation_seed, params.dim);
        let bound =
            rounded_norm_bound(params.clip, params.gamma, params.beta, params.dim.padded())?;
        Ok(Self {
            params,
            rotation,
            bound,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &EncodingParams {
        &self.params
    }

    /// Length of encoded vectors, D (d padded to a power of two).
    pub fn padded_len(&self) -> usize {
        self.rotation.padded_len()
    }

    /// L2 sensitivity of one plant's contribution in the integer domain (zero-out adjacency),
    /// enforced on every rounded vector: the Δ the accountant uses.
    pub fn sensitivity(&self) -> Sensitivity {
        self.bound
    }

    /// Clip, rotate, scale and conditionally round `update` to integers (no noise yet).
    /// `rng` drives the rounding coins.
    pub fn quantize(&self, update: &[f64], rng: &mut ChaCha20Rng) -> Result<Vec<i64>, EncodeError> {
        let expected = self.params.dim.get();
        if update.len() as u64 != expected {
            return Err(EncodeError::DimensionMismatch {
                expected,
                got: update.len() as u64,
            });
        }
        if let Some(index) = update.iter().position(|v| !v.is_finite()) {
            return Err(EncodeError::NonFinite { index });
        }
        let clipped = clip_l2(update, self.params.clip);
        let gamma = self.params.gamma.get();
        let scaled: Vec<f64> = self
            .rotation
            .forward(&clipped)
            .iter()
            .map(|v| v * gamma)
            .collect();
        let floors: Vec<f64> = scaled.iter().map(|v| v.floor()).collect();
        let bound = self.bound.get();
        let mut rounded = vec![0i64; scaled.len()];
        for _ in 0..MAX_ROUNDING_TRIES {
            let mut norm_sq: u128 = 0;
            for ((slot, &s), &f) in rounded.iter_mut().zip(&scaled).zip(&floors) {
                let up = uniform_unit(rng) < s - f;
                // |s| ≤ γ·C ≤ 2^52 (checked in `new`), so the conversion is exact.
                let value = f as i64 + i64::from(up);
                *slot = value;
                norm_sq += u128::from(value.unsigned_abs()).pow(2);
            }
            // The 1e-12 margin absorbs the u128 → f64 conversion error, so an accepted vector's
            // exact norm never exceeds the sensitivity the accountant uses.
            if (norm_sq as f64) <= bound * bound * (1.0 - 1e-12) {
                return Ok(rounded);
            }
        }
        Err(EncodeError::RoundingFailed {
            tries: MAX_ROUNDING_TRIES,
            bound,
        })
    }

    /// Adds `noise` to `quantized` and reduces modulo 2^b: the values the protocol masks.
    pub fn wrap(&self, quantized: &[i64], noise: &[i64]) -> Result<Vec<u64>, EncodeError> {
        let expected = self.padded_len() as u64;
        for len in [quantized.len(), noise.len()] {
            if len as u64 != expected {
                return Err(EncodeError::DimensionMismatch {
                    expected,
                    got: len as u64,
                });
            }
        }
        let mask = self.params.bits.modulus() - 1;
        // Two's-complement wrapping arithmetic is exact modulo 2^64, hence modulo 2^b.
        Ok(quantized
            .iter()
            .zip(noise)
            .map(|(&q, &z)| (q.wrapping_add(z) as u64) & mask)
            .collect())
    }

    /// Refuses a permit whose parameters are not this codec's.
    fn check_permit(&self, permit: &RoundPermit) -> Result<(), EncodeError> {
        let r = permit.request();
        let p = &self.params;
        let mismatch = if r.clip != p.clip {
            Some("clip norm")
        } else if r.gamma != p.gamma {
            Some("scale factor")
        } else if r.bits != p.bits {
            Some("bit width")
        } else if r.dim != p.dim {
            Some("dimension")
        } else if r.beta != p.beta {
            Some("rounding bias")
        } else {
            None
        };
        mismatch.map_or(Ok(()), |what| Err(EncodeError::PermitMismatch { what }))
    }

    /// Draws the round's noise vector (D samples). Noise does not depend on the update, so a site
    /// may draw it while it trains — but only once the ledger has accepted the round, and only
    /// from a sampler of the kind and σ (γ·σ_local) the ledger accounted for.
    pub fn draw_noise(
        &self,
        permit: &RoundPermit,
        sampler: &mut dyn NoiseSampler,
    ) -> Result<RoundNoise, EncodeError> {
        self.check_permit(permit)?;
        if permit.request().sampler != sampler.kind() {
            return Err(EncodeError::PermitMismatch {
                what: "sampler kind",
            });
        }
        if permit.scaled_local_sigma().ok() != Some(sampler.sigma()) {
            return Err(EncodeError::PermitMismatch {
                what: "noise sigma",
            });
        }
        let mut values = vec![0i64; self.padded_len()];
        sampler.fill(&mut values)?;
        Ok(RoundNoise {
            round_id: permit.request().round_id,
            values,
        })
    }

    /// Quantizes `update` and adds previously drawn `noise` (consumed: noise is used once).
    pub fn encode_with_noise(
        &self,
        permit: &RoundPermit,
        update: &[f64],
        rng: &mut ChaCha20Rng,
        noise: RoundNoise,
    ) -> Result<Vec<u64>, EncodeError> {
        self.check_permit(permit)?;
        if noise.round_id != permit.request().round_id {
            return Err(EncodeError::PermitMismatch {
                what: "round of the noise",
            });
        }
        let quantized = self.quantize(update, rng)?;
        self.wrap(&quantized, &noise.values)
    }

    /// The whole client side: draw noise from `sampler`, quantize, wrap. Requires the ledger's
    /// permit for this round and refuses, before drawing any noise, when the permit's
    /// parameters or the sampler are not the ones the codec and the ledger agreed on.
    pub fn encode(
        &self,
        permit: &RoundPermit,
        update: &[f64],
        rng: &mut ChaCha20Rng,
        sampler: &mut dyn NoiseSampler,
    ) -> Result<Vec<u64>, EncodeError> {
        let noise = self.draw_noise(permit, sampler)?;
        self.encode_with_noise(permit, update, rng, noise)
    }

    /// Centres a modular sum to signed integers in [−2^(b−1), 2^(b−1)).
    pub fn centre(&self, aggregate: &[u64]) -> Result<Vec<i64>, EncodeError> {
        let modulus = self.params.bits.modulus();
        let half = modulus / 2;
        aggregate
            .iter()
            .enumerate()
            .map(|(index, &value)| {
                if value >= modulus {
                    Err(EncodeError::NotInRing {
                        index,
                        value,
                        modulus,
                    })
                } else if value >= half {
                    // value < 2^52, so both fit in i64.
                    Ok(value as i64 - modulus as i64)
                } else {
                    Ok(value as i64)
                }
            })
            .collect()
    }

    /// Decodes the modular sum of the contributions into the (noisy) sum of clipped updates.
    pub fn decode_sum(&self, aggregate: &[u64]) -> Result<Vec<f64>, EncodeError> {
        let expected = self.padded_len() as u64;
        if aggregate.len() as u64 != expected {
            return Err(EncodeError::DimensionMismatch {
                expected,
                got: aggregate.len() as u64,
            });
        }
        let gamma = self.params.gamma.get();
        let unscaled: Vec<f64> = self
            .centre(aggregate)?
            .iter()
            .map(|&v| v as f64 / gamma)
            .collect();
        Ok(self.rotation.inverse(&unscaled))
    }

    /// Decodes the modular sum into the mean over `contributors` plants.
    pub fn decode_mean(
        &self,
        aggregate: &[u64],
        contributors: SiteCount,
    ) -> Result<Vec<f64>, EncodeError> {
        let n = f64::from(contributors.get());
        Ok(self
            .decode_sum(aggregate)?
            .into_iter()
            .map(|v| v / n)
            .collect())
    }
}
