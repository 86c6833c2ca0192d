//! Discrete Gaussian noise N_Z(0, σ²) (Canonne, Kamath, Steinke 2020, Definition 1), two ways.
//!
//! * [`FastSampler`] (the default): cumulative-distribution tables with 128-bit probabilities,
//!   convolved for large σ (Micciancio & Walter, CRYPTO 2017), driven by a ChaCha20 CSPRNG that the
//!   sampler seeds itself from the operating system.
//!   It is not exact: [`NoiseSampler::distance_per_sample`] states a bound on its total-variation
//!   distance from N_Z(0, σ²), which the accountant adds to δ.
//! * [`ExactSampler`]: opendp's `sample_discrete_gaussian` (CKS20 Algorithm 3), exact, drawing
//!   from OpenSSL's `RAND_priv_bytes`. It is the auditors' reference and the statistical tests
//!   compare the fast sampler against it; at 15-30 µs per sample it is too slow for model-sized
//!   vectors.
//!
//! Noise depends only on σ, never on the update, so a site may draw it while it trains.

mod exact;
mod fast;
mod table;
#[cfg(test)]
mod whitebox;

pub use exact::ExactSampler;
pub use fast::{FastSampler, MAX_SIGMA as FAST_MAX_SIGMA, MIN_SIGMA as FAST_MIN_SIGMA};

use serde::{Deserialize, Serialize};

use crate::error::SamplerError;
use crate::params::{Distance, Sigma};

/// Which sampler drew a round's noise (recorded in the ledger). The default is `Fast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SamplerKind {
    /// Table sampler on ChaCha20 ([`FastSampler`]).
    #[default]
    Fast,
    /// opendp's exact sampler ([`ExactSampler`]).
    Exact,
}

impl SamplerKind {
    /// Stable code used in the ledger's canonical encoding.
    pub fn code(self) -> u8 {
        match self {
            SamplerKind::Fast => 0,
            SamplerKind::Exact => 1,
        }
    }
    /// Inverse of [`SamplerKind::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(SamplerKind::Fast),
            1 => Some(SamplerKind::Exact),
            _ => None,
        }
    }
}

/// A source of i.i.d. discrete Gaussian samples of one fixed σ.
pub trait NoiseSampler {
    /// Which implementation this is.
    fn kind(&self) -> SamplerKind;
    /// The σ of N_Z(0, σ²) the samples follow.
    fn sigma(&self) -> Sigma;
    /// Upper bound on the total-variation distance between one sample and N_Z(0, σ²); over m
    /// independent samples the distance is at most m times this (union bound over a coupling).
    fn distance_per_sample(&self) -> Distance;
    /// Overwrites `out` with independent samples.
    fn fill(&mut self, out: &mut [i64]) -> Result<(), SamplerError>;
}

/// The per-sample total-variation bound of the sampler of `kind` at σ, computed by the crate
/// from the sampler's construction (tables, truncation, convolution), never declared by a
/// caller. The ledger records it with each charge, the draw checks the sampler against it and
/// the audit recomputes it.
pub fn distance_bound(kind: SamplerKind, sigma: Sigma) -> Result<Distance, SamplerError> {
    match kind {
        SamplerKind::Fast => fast::fast_distance(sigma),
        SamplerKind::Exact => Ok(Distance::ZERO),
    }
}

/// Builds the sampler of `kind` for N_Z(0, σ²) on a fresh OS-seeded stream (the exact sampler
/// draws from OpenSSL's `RAND_priv_bytes`).
pub(crate) fn build(
    kind: SamplerKind,
    sigma: Sigma,
) -> Result<Box<dyn NoiseSampler>, SamplerError> {
    Ok(match kind {
        SamplerKind::Fast => Box::new(FastSampler::new(sigma)?),
        SamplerKind::Exact => Box::new(ExactSampler::new(sigma)?),
    })
}

/// [`build`] with the fast sampler on a seeded stream: tests and test vectors only.
#[cfg(any(test, feature = "test-vectors"))]
pub(crate) fn build_seeded(
    kind: SamplerKind,
    sigma: Sigma,
    seed: [u8; 32],
) -> Result<Box<dyn NoiseSampler>, SamplerError> {
    Ok(match kind {
        SamplerKind::Fast => Box::new(FastSampler::from_seed(sigma, seed)?),
        SamplerKind::Exact => Box::new(ExactSampler::new(sigma)?),
    })
}
