//! The ranges a noised weight policy (DP-FedAvg's n_cap, κ and floor) must satisfy, in one
//! place: the manifest's validation refuses a draft with them, and `amalgam simulate` checks
//! its flags with them before it writes any manifest, naming the flag instead of the field.

use crate::model::NoisedWeightPolicy;

/// The public numbers a noised weight policy is checked against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoisedContext {
    /// The clip norm C the joint (update, κ·w) vector is clipped to.
    pub clip: f64,
    /// The minimum cohort m.
    pub min_cohort: u16,
    /// Tolerated colluders c (n_min = max(m − c, 1)).
    pub colluders: u16,
    /// Sites in the consortium (n).
    pub sites: u16,
    /// The central noise σ, `None` without differential privacy.
    pub sigma: Option<f64>,
}

/// Which rule a noised weight policy breaks; the `Display` form uses the manifest's field
/// names.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoisedPolicyError {
    /// n_cap is 0.
    #[error("noised_weights.n_cap must be >= 1")]
    NCap,
    /// κ outside (0, C].
    #[error("noised_weights.kappa is {kappa}, it must be in (0, C = {clip}]")]
    Kappa {
        /// The κ given.
        kappa: f64,
        /// The clip norm.
        clip: f64,
    },
    /// The floor outside [m/2, m].
    #[error(
        "noised_weights.floor is {floor}, it must be in [{low}, {high}] (half the minimum \
         cohort to the minimum cohort)"
    )]
    Floor {
        /// The floor given.
        floor: f64,
        /// m / 2.
        low: f64,
        /// m.
        high: f64,
    },
    /// Under DP, the weight sum's noise exceeds the floor.
    #[error(
        "noised weights: the weight sum's noise (sigma·sqrt(n/n_min)/kappa = {noise:.3} \
         full-weight sites) exceeds the floor {floor}: the divisor would be noise; raise kappa \
         (up to C), lower sigma, or use uniform weights"
    )]
    Noise {
        /// σ·√(n / n_min) / κ.
        noise: f64,
        /// The floor given.
        floor: f64,
    },
}

/// A finite, non-negative-zero-free value.
fn plain(v: f64) -> bool {
    v.is_finite() && !(v == 0.0 && v.is_sign_negative())
}

/// Checks `n` under `ctx`: n_cap ≥ 1; 0 < κ ≤ C (a larger κ would leave the update less of
/// the clip norm than the weight it carries); a floor in [m/2, m] (the step's divisor is
/// clamped to [floor, contributor count], so a forged weight coordinate or the noise can
/// amplify the step at most count / floor ≤ 2n/m times, and a floor above m would damp every
/// small round); and under differential privacy the estimate's noise σ·√(n / n_min) / κ (in
/// full-weight sites) at most the floor, or the divisor would be noise.
pub fn check_noised_policy(
    n: &NoisedWeightPolicy,
    ctx: &NoisedContext,
) -> Result<(), NoisedPolicyError> {
    if n.n_cap == 0 {
        return Err(NoisedPolicyError::NCap);
    }
    if !(plain(n.kappa) && n.kappa > 0.0 && n.kappa <= ctx.clip) {
        return Err(NoisedPolicyError::Kappa {
            kappa: n.kappa,
            clip: ctx.clip,
        });
    }
    let m = f64::from(ctx.min_cohort);
    if !(plain(n.floor) && n.floor >= m / 2.0 && n.floor <= m) {
        return Err(NoisedPolicyError::Floor {
            floor: n.floor,
            low: m / 2.0,
            high: m,
        });
    }
    if let Some(sigma) = ctx.sigma {
        let n_min = f64::from(ctx.min_cohort.saturating_sub(ctx.colluders).max(1));
        let noise = sigma * (f64::from(ctx.sites) / n_min).sqrt() / n.kappa;
        if noise > n.floor {
            return Err(NoisedPolicyError::Noise {
                noise,
                floor: n.floor,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(sigma: Option<f64>) -> NoisedContext {
        NoisedContext {
            clip: 1.0,
            min_cohort: 6,
            colluders: 1,
            sites: 8,
            sigma,
        }
    }

    fn policy(kappa: f64, floor: f64) -> NoisedWeightPolicy {
        NoisedWeightPolicy {
            n_cap: 1000,
            kappa,
            floor,
        }
    }

    #[test]
    fn each_rule_is_refused_at_its_edge_and_accepted_inside() {
        let c = ctx(None);
        assert_eq!(check_noised_policy(&policy(1.0, 3.0), &c), Ok(()));
        assert_eq!(check_noised_policy(&policy(1.0, 6.0), &c), Ok(()));
        let zero_cap = NoisedWeightPolicy {
            n_cap: 0,
            ..policy(1.0, 3.0)
        };
        assert_eq!(
            check_noised_policy(&zero_cap, &c),
            Err(NoisedPolicyError::NCap)
        );
        for kappa in [0.0, -0.0, 1.0 + 1e-12, f64::NAN, f64::INFINITY, -1.0] {
            assert!(
                matches!(
                    check_noised_policy(&policy(kappa, 3.0), &c),
                    Err(NoisedPolicyError::Kappa { .. })
                ),
                "{kappa}"
            );
        }
        for floor in [2.999, 6.001, f64::NAN, -0.0] {
            assert!(
                matches!(
                    check_noised_policy(&policy(1.0, floor), &c),
                    Err(NoisedPolicyError::Floor { .. })
                ),
                "{floor}"
            );
        }
    }

    #[test]
    fn the_noise_rule_bites_exactly_where_the_estimate_exceeds_the_floor() {
        // σ·√(8/5)/κ: σ = 4, κ = 1 gives 5.06 sites.
        let noise = 4.0 * (8.0f64 / 5.0).sqrt();
        assert_eq!(
            check_noised_policy(&policy(1.0, 6.0), &ctx(Some(4.0))),
            Ok(())
        );
        assert!(matches!(
            check_noised_policy(&policy(1.0, 5.0), &ctx(Some(4.0))),
            Err(NoisedPolicyError::Noise { noise: n, .. }) if (n - noise).abs() < 1e-12
        ));
        // Without DP the same numbers pass: the weight sum carries no noise.
        assert_eq!(check_noised_policy(&policy(1.0, 5.0), &ctx(None)), Ok(()));
    }
}
