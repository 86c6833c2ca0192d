//! The default sampler: cumulative-distribution tables on a ChaCha20 stream.

use dashu::rational::RBig;
use rand_chacha::ChaCha20Rng;

use super::table::CdtTable;
use super::{NoiseSampler, SamplerKind};
use crate::error::SamplerError;
use crate::params::{Distance, Sigma};

/// Largest σ sampled from a single table; above it two tables are convolved.
const DIRECT_MAX_SIGMA: f64 = 256.0;

/// Smallest σ the tables are built for.
pub const MIN_SIGMA: f64 = 0.5;

/// Largest σ supported (two tables of about 1.7·10⁵ entries each).
pub const MAX_SIGMA: f64 = 1e7;

/// Convolution margin r: the parameters are chosen so that σ₁σ₂/σ ≥ r (see [`Plan`]).
const CONVOLUTION_MARGIN: f64 = 3.3;

/// How the samples are produced.
///
/// `Convolved` returns X = k·Y + Z with Y ~ N_Z(0, σ₁²), Z ~ N_Z(0, σ₂²), k a positive integer
/// and k²σ₁² + σ₂² = σ² exactly (the variances are exact rationals). Writing u = kY and
/// completing the square, P[X = x] ∝ ρ_σ(x) · Σ_{u ∈ kZ} ρ_s(u − c(x)) with s = kσ₁σ₂/σ; by
/// Poisson summation that lattice sum is constant in c up to a relative error
/// ε = 2·Σ_{m≥1} exp(−2π² (σ₁σ₂/σ)² m²), so the total-variation distance to N_Z(0, σ²) is at
/// most ε/(1 − ε). This is the convolution argument of Peikert (CRYPTO 2010, §3) and
/// Micciancio & Walter (CRYPTO 2017, §3) specialised to Z, with the smoothing term computed
/// directly. With σ₁σ₂/σ ≥ 3.3 it is below 10⁻⁹⁰.
#[derive(Clone)]
enum Plan {
    Direct(CdtTable),
    Convolved {
        coarse: CdtTable,
        multiplier: i64,
        fine: CdtTable,
    },
}

/// Discrete Gaussian samples from tables with 128-bit probabilities, driven by ChaCha20.
///
/// Throughput is two (σ ≤ 256: one) table lookups and 8-16 bytes of keystream per sample.
/// [`NoiseSampler::distance_per_sample`] is the sum of the tables' bounds (truncation and
/// rounding, see the table module) and, when convolved, the convolution bound (see `Plan`):
/// below 10⁻³⁰ for every supported σ.
pub struct FastSampler {
    sigma: Sigma,
    plan: Plan,
    distance: Distance,
    rng: ChaCha20Rng,
}

impl FastSampler {
    /// Builds the tables for N_Z(0, σ²) (a few milliseconds for large σ) and takes the stream
    /// the samples are drawn from.
    pub fn new(sigma: Sigma, rng: ChaCha20Rng) -> Result<Self, SamplerError> {
        let s = sigma.get();
        if s < MIN_SIGMA {
            return Err(SamplerError::SigmaTooSmall {
                sigma: s,
                min: MIN_SIGMA,
            });
        }
        if s > MAX_SIGMA {
            return Err(SamplerError::SigmaTooLarge {
                sigma: s,
                max: MAX_SIGMA,
            });
        }
        let too_large = || SamplerError::SigmaTooLarge {
            sigma: s,
            max: MAX_SIGMA,
        };
        let exact_sigma = RBig::try_from(s).map_err(|_| too_large())?;
        let variance = &exact_sigma * &exact_sigma;
        let (plan, distance) = if s <= DIRECT_MAX_SIGMA {
            let table = CdtTable::new(&variance).ok_or_else(too_large)?;
            let d = table.distance();
            (Plan::Direct(table), d)
        } else {
            // σ₂ = s₀ with s₀² = 1.1·r·σ, k = ⌊√(σ² − s₀²)/s₀⌋ ≥ 1, σ₁² = (σ² − s₀²)/k² ≥ s₀²,
            // hence σ₁σ₂/σ ≥ s₀²/σ = 1.1·r.
            let s0 = (1.1 * CONVOLUTION_MARGIN * s).sqrt();
            let fine_sd = RBig::try_from(s0).map_err(|_| too_large())?;
            let fine_var = &fine_sd * &fine_sd;
            let k = ((s * s - s0 * s0).sqrt() / s0).floor().max(1.0);
            let k_exact = RBig::from(k as u64);
            let coarse_var = (&variance - &fine_var) / (&k_exact * &k_exact);
            let coarse = CdtTable::new(&coarse_var).ok_or_else(too_large)?;
            let fine = CdtTable::new(&fine_var).ok_or_else(too_large)?;
            let sigma1 = coarse_var.to_f64().value().sqrt();
            let r = sigma1 * s0 / s;
            let e1 = (-2.0 * std::f64::consts::PI.powi(2) * r * r).exp();
            // 2·Σ_{m≥1} e1^{m²} ≤ 2·e1/(1 − e1³) since m² ≥ 3m − 2 for m ≥ 1.
            let eps = 2.0 * e1 / (1.0 - e1 * e1 * e1);
            let d = coarse.distance() + fine.distance() + eps / (1.0 - eps);
            (
                Plan::Convolved {
                    coarse,
                    multiplier: k as i64,
                    fine,
                },
                d,
            )
        };
        let distance = Distance::new(distance).map_err(|_| too_large())?;
        Ok(Self {
            sigma,
            plan,
            distance,
            rng,
        })
    }
}

impl NoiseSampler for FastSampler {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Fast
    }

    fn sigma(&self) -> Sigma {
        self.sigma
    }

    fn distance_per_sample(&self) -> Distance {
        self.distance
    }

    fn fill(&mut self, out: &mut [i64]) -> Result<(), SamplerError> {
        let rng = &mut self.rng;
        match &self.plan {
            Plan::Direct(table) => {
                for slot in out.iter_mut() {
                    *slot = table.sample(rng);
                }
            }
            Plan::Convolved {
                coarse,
                multiplier,
                fine,
            } => {
                for slot in out.iter_mut() {
                    *slot = multiplier * coarse.sample(rng) + fine.sample(rng);
                }
            }
        }
        Ok(())
    }
}
