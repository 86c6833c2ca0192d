//! The DDG encoding of one plant's update and the decoding of the aggregate
//! (KLS21 Algorithms 1 and 2; TFF `DistributedDpSumFactory` with rotation type "hd").
//!
//! Encode: L2 clip to C → rotate ([`Rotation`]) → multiply by γ → conditional randomized
//! rounding (retry until the rounded norm is within [`rounded_norm_bound`]) → add discrete
//! Gaussian noise → reduce modulo 2^b into `u64` values in [0, 2^b) for the masking protocol.
//!
//! The only way to an encoded update is [`DdgCodec::draw_noise`], which consumes the ledger's
//! single-use [`RoundPermit`], then [`DdgCodec::encode`], which consumes the drawn noise: one
//! permit, one noise draw, one [`EncodedUpdate`]. The noise and rounding streams are the
//! crate's own (OS-seeded ChaCha20, independent keys); the noise, the rounded update and the
//! streams are wiped on drop. The caller persists the encoded update (sealed) before any upload
//! derived from it leaves, and a retry re-sends bytes built from the persisted update
//! ([`crate::ledger::Ledger::seal_update`] / [`crate::ledger::Ledger::reload_update`], which
//! authenticates the bytes and checks the charge); nothing can re-draw.
//! Decode the modular sum: centre to (−2^(b−1), 2^(b−1)] → divide by γ → inverse rotation →
//! optionally divide by the number of contributors.

use chacha20::ChaCha20Rng;
use rand_core::Rng;
use zeroize::Zeroizing;

use crate::error::{EncodeError, ParamError};
use crate::ledger::audit::Anchor;
use crate::ledger::{PermitNoise, PolicyKind, RoundPermit, RoundRequest};
use crate::params::{BitWidth, ClipNorm, Dimension, Gamma, RoundingBias, Sensitivity, SiteCount};
use crate::rotation::{Rotation, RotationSeed};
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

/// One round's noise, drawn once under the round's permit (which the draw consumed), and the
/// round's rounding-coin stream. Neither `Clone` nor `Copy`; wiped on drop. Noise does not
/// depend on the update, so a site may draw it while it trains.
pub struct DrawnNoise {
    request: RoundRequest,
    anchor: Anchor,
    ledger_id: [u8; 32],
    policy_kind: PolicyKind,
    values: Zeroizing<Vec<i64>>,
    rounding: ChaCha20Rng,
}

/// The noised, encoded update of one round: values in [0, 2^b), produced once. Persist it
/// (sealed) before any upload derived from it leaves. Wiped on drop.
pub struct EncodedUpdate {
    ledger_id: [u8; 32],
    anchor: Anchor,
    policy_kind: PolicyKind,
    round_id: u64,
    round_context: [u8; 32],
    bits: BitWidth,
    values: Zeroizing<Vec<u64>>,
}

// Every secret field wipes itself on drop (`Zeroizing`, `chacha20`'s generator); the ledger
// id, policy kind and round identifiers are public.
impl zeroize::ZeroizeOnDrop for DrawnNoise {}
impl zeroize::ZeroizeOnDrop for EncodedUpdate {}

/// Magic of [`EncodedUpdate::to_bytes`].
const UPDATE_MAGIC: &[u8; 8] = b"AMDPUPD2";

impl EncodedUpdate {
    /// The identity of the ledger that charged it ([`crate::ledger::Ledger::ledger_id`]).
    pub fn ledger_id(&self) -> &[u8; 32] {
        &self.ledger_id
    }
    /// The kind of policy it was charged under.
    pub fn policy_kind(&self) -> PolicyKind {
        self.policy_kind
    }
    /// The charging ledger's anchor just after the round's charge: put it in the signed
    /// upload, so the aggregator can publish it with the round.
    pub fn anchor(&self) -> Anchor {
        self.anchor
    }
    /// Refuses an update charged to another ledger than `ledger_id` or under another kind of
    /// policy than `expected`: the consumer (the service that masks and uploads it) states
    /// which ledger and which kind of round it expects, so an update made through a side
    /// ledger under policy `none` is never uploaded as a private one.
    pub fn check_origin(
        &self,
        ledger_id: &[u8; 32],
        expected: PolicyKind,
    ) -> Result<(), EncodeError> {
        if self.policy_kind != expected {
            return Err(EncodeError::PolicyKindMismatch {
                expected,
                found: self.policy_kind,
            });
        }
        if &self.ledger_id != ledger_id {
            return Err(EncodeError::OtherLedger);
        }
        Ok(())
    }
    /// The round it was drawn for.
    pub fn round_id(&self) -> u64 {
        self.round_id
    }
    /// The round context the charge recorded.
    pub fn round_context(&self) -> &[u8; 32] {
        &self.round_context
    }
    /// The values the protocol masks.
    pub fn values(&self) -> &[u64] {
        &self.values
    }
    /// Canonical bytes for persistence: `magic | ledger_id [32] | policy_kind u8 | round_id u64
    /// | round_context [32] | bits u32 | count u32 | anchor_entries u64 | anchor_head [32] |
    /// values u64 LE`.
    pub(crate) fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(129 + 8 * self.values.len()));
        out.extend_from_slice(UPDATE_MAGIC);
        out.extend_from_slice(&self.ledger_id);
        out.push(self.policy_kind.code());
        out.extend_from_slice(&self.round_id.to_le_bytes());
        out.extend_from_slice(&self.round_context);
        out.extend_from_slice(&self.bits.get().to_le_bytes());
        out.extend_from_slice(&(self.values.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.anchor.entries as u64).to_le_bytes());
        out.extend_from_slice(&self.anchor.head);
        for v in self.values.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }
    /// Strict inverse of [`EncodedUpdate::to_bytes`]: exact length, a valid width, every value
    /// below 2^b, at most 2^30 values. Private: bytes from outside come back only through
    /// [`crate::ledger::Ledger::reload_update`], which checks the seal and the charge first.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, EncodeError> {
        let bad = |why: &'static str| EncodeError::BadPersistedUpdate(why);
        let header = 8 + 32 + 1 + 8 + 32 + 4 + 4 + 8 + 32;
        if bytes.len() < header || &bytes[..8] != UPDATE_MAGIC {
            return Err(bad("bad magic or short header"));
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut ledger_id = [0u8; 32];
        ledger_id.copy_from_slice(&bytes[8..40]);
        let policy_kind = PolicyKind::from_code(bytes[40]).ok_or(bad("policy kind"))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[41..49]);
        let mut round_context = [0u8; 32];
        round_context.copy_from_slice(&bytes[49..81]);
        let bits = BitWidth::new(u32_at(81)).map_err(|_| bad("bit width"))?;
        let count = u64::from(u32_at(85));
        let mut entries = [0u8; 8];
        entries.copy_from_slice(&bytes[89..97]);
        let entries = usize::try_from(u64::from_le_bytes(entries)).map_err(|_| bad("anchor"))?;
        let mut head = [0u8; 32];
        head.copy_from_slice(&bytes[97..129]);
        if count > Dimension::MAX || (bytes.len() - header) as u64 != 8 * count {
            return Err(bad("length"));
        }
        let mut values = Zeroizing::new(Vec::with_capacity(count as usize));
        for chunk in bytes[header..].chunks_exact(8) {
            let mut v = [0u8; 8];
            v.copy_from_slice(chunk);
            let v = u64::from_le_bytes(v);
            if v >= bits.modulus() {
                return Err(bad("value not below 2^b"));
            }
            values.push(v);
        }
        Ok(Self {
            ledger_id,
            anchor: Anchor { entries, head },
            policy_kind,
            round_id: u64::from_le_bytes(id),
            round_context,
            bits,
            values,
        })
    }
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

#[cfg(any(test, feature = "test-vectors"))]
type TestSeedsOrNone = crate::entropy::TestSeeds;
#[cfg(not(any(test, feature = "test-vectors")))]
type TestSeedsOrNone = core::convert::Infallible;

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

    /// Refuses an update of the wrong length or with a non-finite coordinate. [`Self::encode`]
    /// checks this too; calling it before the draw keeps a malformed update from spending a
    /// permit.
    pub fn check_update(&self, update: &[f64]) -> Result<(), EncodeError> {
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
        Ok(())
    }

    /// Clip, rotate, scale and conditionally round `update` to integers (no noise yet).
    /// `rng` drives the rounding coins. Private: an encoding is only made under a permit.
    fn quantize(
        &self,
        update: &[f64],
        rng: &mut ChaCha20Rng,
    ) -> Result<Zeroizing<Vec<i64>>, EncodeError> {
        self.check_update(update)?;
        let clipped = Zeroizing::new(clip_l2(update, self.params.clip));
        let gamma = self.params.gamma.get();
        let mut scaled = Zeroizing::new(self.rotation.forward(&clipped));
        scaled.iter_mut().for_each(|v| *v *= gamma);
        let floors: Zeroizing<Vec<f64>> =
            Zeroizing::new(scaled.iter().map(|v| v.floor()).collect());
        let bound = self.bound.get();
        let mut rounded = Zeroizing::new(vec![0i64; scaled.len()]);
        for _ in 0..MAX_ROUNDING_TRIES {
            let mut norm_sq: u128 = 0;
            for ((slot, &s), &f) in rounded.iter_mut().zip(scaled.iter()).zip(floors.iter()) {
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
    fn wrap(&self, quantized: &[i64], noise: &[i64]) -> Result<Zeroizing<Vec<u64>>, EncodeError> {
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
        Ok(Zeroizing::new(
            quantized
                .iter()
                .zip(noise)
                .map(|(&q, &z)| (q.wrapping_add(z) as u64) & mask)
                .collect(),
        ))
    }

    /// Refuses a round whose parameters are not this codec's.
    fn check_request(&self, r: &RoundRequest) -> Result<(), EncodeError> {
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

    /// Draws the round's noise (D samples) under `permit`, which it consumes, from a sampler
    /// the crate builds itself on a fresh OS-seeded stream, of the kind and σ (γ·σ_local) the
    /// ledger charged, and checks the sampler's distance bound against the charged one. Under
    /// policy `none` the noise is zero. `expected` is the kind of round the caller means to run:
    /// a permit charged under another kind (a side ledger under policy `none` where a private
    /// round is due) is refused, as is, before drawing, a permit whose parameters are not this
    /// codec's (the permit is spent either way: it was a charge).
    pub fn draw_noise(
        &self,
        permit: RoundPermit,
        expected: PolicyKind,
    ) -> Result<DrawnNoise, EncodeError> {
        self.draw(permit, expected, None)
    }

    /// [`Self::draw_noise`] on seeded streams, for tests and test vectors only.
    #[cfg(any(test, feature = "test-vectors"))]
    pub fn draw_noise_seeded(
        &self,
        permit: RoundPermit,
        expected: PolicyKind,
        seeds: crate::entropy::TestSeeds,
    ) -> Result<DrawnNoise, EncodeError> {
        self.draw(permit, expected, Some(seeds))
    }

    fn draw(
        &self,
        permit: RoundPermit,
        expected: PolicyKind,
        #[cfg_attr(not(any(test, feature = "test-vectors")), allow(unused_variables))]
        seeds: Option<TestSeedsOrNone>,
    ) -> Result<DrawnNoise, EncodeError> {
        let request = *permit.request();
        // Both the kind the ledger recorded and the noise the permit carries must be the
        // expected ones: no noiseless draw under a private expectation.
        let found = match (permit.policy_kind(), permit.noise()) {
            (PolicyKind::Private, PermitNoise::Gaussian { .. }) => PolicyKind::Private,
            _ => PolicyKind::NoPrivacy,
        };
        if found != expected {
            return Err(EncodeError::PolicyKindMismatch { expected, found });
        }
        self.check_request(&request)?;
        let mut values = Zeroizing::new(vec![0i64; self.padded_len()]);
        if let PermitNoise::Gaussian {
            scaled_sigma,
            distance,
        } = permit.noise()
        {
            #[cfg(any(test, feature = "test-vectors"))]
            let built = match seeds {
                Some(s) => crate::sampler::build_seeded(request.sampler, *scaled_sigma, s.noise),
                None => crate::sampler::build(request.sampler, *scaled_sigma),
            };
            #[cfg(not(any(test, feature = "test-vectors")))]
            let built = crate::sampler::build(request.sampler, *scaled_sigma);
            let mut sampler = built?;
            if sampler.sigma() != *scaled_sigma {
                return Err(EncodeError::PermitMismatch {
                    what: "noise sigma",
                });
            }
            if sampler.distance_per_sample() != *distance {
                return Err(EncodeError::PermitMismatch {
                    what: "sampler distance",
                });
            }
            sampler.fill(&mut values)?;
        }
        #[cfg(any(test, feature = "test-vectors"))]
        let rounding = match seeds {
            Some(s) => <ChaCha20Rng as rand_core::SeedableRng>::from_seed(s.rounding),
            None => crate::entropy::os_stream()?,
        };
        #[cfg(not(any(test, feature = "test-vectors")))]
        let rounding = crate::entropy::os_stream()?;
        // The permit is consumed here: it goes out of scope with this call.
        let permit_ledger_id = &permit.ledger_id().to_owned();
        let anchor = permit.anchor();
        let _spent = permit;
        Ok(DrawnNoise {
            request,
            anchor,
            ledger_id: *permit_ledger_id,
            policy_kind: found,
            values,
            rounding,
        })
    }

    /// Quantizes `update` with the round's rounding coins and adds the drawn noise, consuming
    /// it: the round's one encoded update.
    pub fn encode(
        &self,
        mut noise: DrawnNoise,
        update: &[f64],
    ) -> Result<EncodedUpdate, EncodeError> {
        self.check_request(&noise.request)?;
        let quantized = self.quantize(update, &mut noise.rounding)?;
        let values = self.wrap(&quantized, &noise.values)?;
        Ok(EncodedUpdate {
            ledger_id: noise.ledger_id,
            anchor: noise.anchor,
            policy_kind: noise.policy_kind,
            round_id: noise.request.round_id,
            round_context: noise.request.round_context,
            bits: self.params.bits,
            values,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::RotationSeed;

    #[test]
    fn wrapping_then_centring_is_the_identity_on_the_signed_range() {
        let codec = DdgCodec::new(EncodingParams {
            clip: ClipNorm::new(1.0).unwrap_or_else(|e| panic!("{e}")),
            gamma: Gamma::new(1.0).unwrap_or_else(|e| panic!("{e}")),
            bits: BitWidth::new(8).unwrap_or_else(|e| panic!("{e}")),
            dim: Dimension::new(4).unwrap_or_else(|e| panic!("{e}")),
            beta: RoundingBias::NONE,
            rotation_seed: RotationSeed([0; 32]),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let q = vec![-128, 127, -1, 0];
        let wrapped = codec.wrap(&q, &[0; 4]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(codec.centre(&wrapped), Ok(q));
        // One past the edge wraps to the other end.
        let over = codec
            .wrap(&[128, -129, 0, 0], &[0; 4])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(codec.centre(&over), Ok(vec![-128, 127, 0, 0]));
    }
}
