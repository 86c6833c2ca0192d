//! The default sampler: cumulative-distribution tables on a ChaCha20 stream.

use std::sync::{Arc, Mutex};

use chacha20::ChaCha20Rng;
use dashu::rational::RBig;

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

/// Plans kept by [`shared_plan`]: a process uses a few σ, and a plan is at most two tables of
/// about 1.7·10⁵ 16-byte entries (σ ≤ 10⁷), so the cache holds under 50 MiB.
const PLAN_CACHE_ENTRIES: usize = 8;

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

/// Discrete Gaussian samples from tables with 128-bit probabilities, driven by the sampler's
/// own ChaCha20 stream, seeded from the operating system. The stream's key and buffered
/// keystream are wiped when the sampler is dropped (`chacha20`'s `ZeroizeOnDrop`); the tables
/// are public data.
///
/// Throughput is two (σ ≤ 256: one) table lookups and 8-16 bytes of keystream per sample.
/// [`NoiseSampler::distance_per_sample`] is the sum of the tables' bounds (truncation and
/// rounding, see the table module) and, when convolved, the convolution bound (see `Plan`):
/// below 10⁻³⁰ for every supported σ.
pub struct FastSampler {
    sigma: Sigma,
    plan: SharedPlan,
    rng: ChaCha20Rng,
}

// The stream wipes its key and buffered keystream on drop; the tables are public data.
impl zeroize::ZeroizeOnDrop for FastSampler {}

impl Plan {
    /// The tables for N_Z(0, σ²) (a few milliseconds for large σ) and the per-sample distance
    /// bound this plan guarantees. The distance is a function of σ alone: the ledger and the
    /// audit recompute it through [`super::distance_bound`] instead of trusting a caller.
    fn build(sigma: Sigma) -> Result<(Self, Distance), SamplerError> {
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
        Ok((plan, distance))
    }
}

/// A built plan and its per-sample distance, shared by every sampler of its σ.
type SharedPlan = Arc<(Plan, Distance)>;

/// Built plans by σ (its bits), oldest first, at most `capacity` of them.
struct PlanCache {
    capacity: usize,
    plans: Mutex<Vec<(u64, SharedPlan)>>,
}

impl PlanCache {
    const fn new(capacity: usize) -> Self {
        Self {
            capacity,
            plans: Mutex::new(Vec::new()),
        }
    }

    /// The plan for σ, built on first use. Built outside the lock (two threads may build the
    /// same plan; both are equal); a poisoned lock only loses the caching.
    fn get(&self, sigma: Sigma) -> Result<SharedPlan, SamplerError> {
        let key = sigma.get().to_bits();
        if let Ok(plans) = self.plans.lock()
            && let Some((_, plan)) = plans.iter().find(|(k, _)| *k == key)
        {
            return Ok(Arc::clone(plan));
        }
        let plan = Arc::new(Plan::build(sigma)?);
        if let Ok(mut plans) = self.plans.lock()
            && !plans.iter().any(|(k, _)| *k == key)
        {
            if plans.len() >= self.capacity {
                plans.remove(0);
            }
            plans.push((key, Arc::clone(&plan)));
        }
        Ok(plan)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.plans.lock().map(|p| p.len()).unwrap_or(0)
    }
}

/// The plan for σ, built once per process and shared: the tables are a deterministic function
/// of σ and public, so a sampler built per local run (a DP-SGD run, a site round) does not
/// rebuild them — milliseconds for large σ, more than the few steps it noises. Only the
/// stream is per sampler.
fn shared_plan(sigma: Sigma) -> Result<SharedPlan, SamplerError> {
    static CACHE: PlanCache = PlanCache::new(PLAN_CACHE_ENTRIES);
    CACHE.get(sigma)
}

/// The per-sample distance bound of the fast sampler at σ (see [`Plan`]).
pub(crate) fn fast_distance(sigma: Sigma) -> Result<Distance, SamplerError> {
    shared_plan(sigma).map(|p| p.1)
}

impl FastSampler {
    /// Takes the shared tables for N_Z(0, σ²) (built on first use) and seeds the sampler's own
    /// ChaCha20 stream from the operating system. No caller can choose, share or replay the stream.
    pub fn new(sigma: Sigma) -> Result<Self, SamplerError> {
        Self::with_stream(sigma, crate::entropy::os_stream()?)
    }

    /// A sampler on the stream seeded with `seed`: replayable, so only for tests and test
    /// vectors (feature `test-vectors`, which no release build enables).
    #[cfg(any(test, feature = "test-vectors"))]
    pub fn from_seed(sigma: Sigma, seed: [u8; 32]) -> Result<Self, SamplerError> {
        use rand_core::SeedableRng;
        Self::with_stream(sigma, ChaCha20Rng::from_seed(seed))
    }

    fn with_stream(sigma: Sigma, rng: ChaCha20Rng) -> Result<Self, SamplerError> {
        Ok(Self {
            sigma,
            plan: shared_plan(sigma)?,
            rng,
        })
    }

    /// The exact output pmf of this sampler's tables (and their convolution), for the
    /// white-box test.
    #[cfg(test)]
    pub(crate) fn output_pmf(&self) -> (i64, Vec<f64>) {
        self.plan.0.pmf()
    }
}

#[cfg(test)]
impl Plan {
    /// The exact output pmf of the tables (and their convolution).
    fn pmf(&self) -> (i64, Vec<f64>) {
        match self {
            Plan::Direct(t) => t.pmf(),
            Plan::Convolved {
                coarse,
                multiplier,
                fine,
            } => {
                let (c_lo, c) = coarse.pmf();
                let (f_lo, f) = fine.pmf();
                let k = *multiplier;
                let lo = k * c_lo + f_lo;
                let width = (k as usize) * (c.len() - 1) + f.len();
                let mut out = vec![0.0f64; width];
                for (i, &pc) in c.iter().enumerate() {
                    let base = (k as usize) * i;
                    for (j, &pf) in f.iter().enumerate() {
                        out[base + j] += pc * pf;
                    }
                }
                (lo, out)
            }
        }
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
        self.plan.1
    }

    fn fill(&mut self, out: &mut [i64]) -> Result<(), SamplerError> {
        let rng = &mut self.rng;
        match &self.plan.0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_at_one_sigma_share_the_tables_but_not_the_stream() {
        let sigma = Sigma::new(1234.5).unwrap();
        let mut a = FastSampler::new(sigma).unwrap();
        let mut b = FastSampler::new(sigma).unwrap();
        assert!(Arc::ptr_eq(&a.plan, &b.plan), "the tables were rebuilt");
        let (fresh, distance) = Plan::build(sigma).unwrap();
        assert_eq!(a.distance_per_sample(), distance);
        assert_eq!(a.output_pmf(), fresh.pmf(), "the shared tables are not σ's");
        let (mut x, mut y) = (vec![0i64; 64], vec![0i64; 64]);
        a.fill(&mut x).unwrap();
        b.fill(&mut y).unwrap();
        assert_ne!(x, y, "two samplers replayed one stream");
        let other = FastSampler::new(Sigma::new(3.0).unwrap()).unwrap();
        assert!(!Arc::ptr_eq(&a.plan, &other.plan));
        assert_ne!(a.output_pmf(), other.output_pmf());
    }

    #[test]
    fn the_plan_cache_is_bounded_and_evicts_the_oldest() {
        let cache = PlanCache::new(3);
        let sigma = |i: u32| Sigma::new(2.0 + f64::from(i) / 7.0).unwrap();
        let first = cache.get(sigma(0)).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get(sigma(0)).unwrap()));
        for i in 1..6 {
            cache.get(sigma(i)).unwrap();
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.len(), 3);
        let rebuilt = cache.get(sigma(0)).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &rebuilt),
            "the oldest plan was not evicted"
        );
        assert_eq!(first.0.pmf(), rebuilt.0.pmf());
        assert!(
            cache.get(Sigma::new(0.1).unwrap()).is_err(),
            "σ below the tables' range"
        );
        assert_eq!(cache.len(), 3, "a refused σ took a slot");
    }
}
