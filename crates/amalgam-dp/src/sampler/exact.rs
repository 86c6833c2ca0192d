//! The auditors' reference sampler: opendp's exact discrete Gaussian.

use dashu::rational::RBig;

use super::{NoiseSampler, SamplerKind};
use crate::error::SamplerError;
use crate::params::{Distance, Sigma};

/// Exact N_Z(0, σ²) samples from opendp's `sample_discrete_gaussian` (CKS20, Algorithm 3:
/// rejection from a discrete Laplace with exact Bernoulli(exp(−x)) trials, all in rational
/// arithmetic). Its randomness comes from OpenSSL's `RAND_priv_bytes`, not from a seed, so its
/// output cannot be replayed; its distance from the target distribution is zero.
pub struct ExactSampler {
    sigma: Sigma,
    scale: RBig,
}

impl ExactSampler {
    /// A sampler for N_Z(0, σ²); σ is converted to an exact rational.
    pub fn new(sigma: Sigma) -> Result<Self, SamplerError> {
        let scale = RBig::try_from(sigma.get())
            .map_err(|e| SamplerError::Exact(format!("sigma not representable: {e:?}")))?;
        Ok(Self { sigma, scale })
    }
}

impl NoiseSampler for ExactSampler {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Exact
    }

    fn sigma(&self) -> Sigma {
        self.sigma
    }

    fn distance_per_sample(&self) -> Distance {
        Distance::ZERO
    }

    fn fill(&mut self, out: &mut [i64]) -> Result<(), SamplerError> {
        for slot in out.iter_mut() {
            let x = opendp::traits::samplers::sample_discrete_gaussian(self.scale.clone())
                .map_err(|e| SamplerError::Exact(format!("{:?}", e.variant)))?;
            *slot =
                i64::try_from(&x).map_err(|_| SamplerError::Exact("sample exceeds i64".into()))?;
        }
        Ok(())
    }
}
