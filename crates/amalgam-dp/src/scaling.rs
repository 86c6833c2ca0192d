//! Choice of the scale factor γ and the sensitivity of the rounded, scaled update.

use crate::error::{ParamError, ScaleError};
use crate::params::{
    BitWidth, ClipNorm, Gamma, OverflowMargin, RoundingBias, Sensitivity, Sigma, SiteCount,
};

/// Upper limit on γ (TFF's `MAX_SCALE_FACTOR`): larger factors gain nothing in rounding error
/// and only push integers toward overflow.
pub const MAX_GAMMA: f64 = 1e6;

/// Picks γ so that k standard deviations of every coordinate of the noisy, quantized sum of n
/// updates fit in the b-bit range, treating the rotated aggregate as subgaussian (KLS21 §4.2 and
/// §4.4; TFF `distributed_dp._heuristic_scale_factor` with flatness ρ = 1). With g = 1/γ the
/// rounding granularity, it solves
///
///   2^b = 2k · √( c²n²/D + (g²/4 + σ²)·n ) / g
///
/// for g: g² = (c²n²/D + nσ²) / ((2^b/2k)² − n/4). Here c is the clip norm, D the padded
/// dimension and σ the local noise standard deviation in update units.
///
/// Refuses, naming which: b < log₂ n (the count of contributors does not fit), and
/// 2^(2b) < n·k² (rounding noise alone would overflow: TFF's same check).
pub fn choose_gamma(
    bits: BitWidth,
    sites: SiteCount,
    clip: ClipNorm,
    local_sigma: Sigma,
    padded_dim: u64,
    margin: OverflowMargin,
) -> Result<Gamma, ScaleError> {
    let b = bits.get();
    let n = f64::from(sites.get());
    if f64::from(b) < n.log2() {
        return Err(ScaleError::BitsBelowLog2Sites {
            bits: b,
            sites: sites.get(),
        });
    }
    let k = margin.stddevs();
    let range = bits.modulus() as f64;
    if range * range < n * k * k {
        return Err(ScaleError::OverflowLikely {
            bits: b,
            sites: sites.get(),
            stddevs: k,
        });
    }
    let denominator = (range / (2.0 * k)).powi(2) - n / 4.0;
    if denominator <= 0.0 {
        return Err(ScaleError::OverflowLikely {
            bits: b,
            sites: sites.get(),
            stddevs: k,
        });
    }
    let c = clip.get();
    let d = padded_dim.max(1) as f64;
    let sigma = local_sigma.get();
    let granularity = ((c * c * n * n / d + n * sigma * sigma) / denominator).sqrt();
    let gamma = (1.0 / granularity).min(MAX_GAMMA);
    Ok(Gamma::new(gamma)?)
}

/// L2 norm bound of the conditionally rounded, scaled update (KLS21 Theorem 1 / §4.1; TFF
/// `discretization.inflated_l2_norm_bound`), in the integer domain. With c' = γ·C and D the
/// padded dimension:
///
/// * always: ‖round(y)‖ ≤ ‖y‖ + ‖round(y) − y‖ ≤ c' + √D;
/// * with β > 0, conditional rounding retries until
///   ‖round(y)‖² ≤ c'² + D/4 + √(2 ln(1/β))·(c' + √D/2);
///
/// the bound is the smaller of the two. The encoder enforces it on every rounded vector, so it
/// is a hard sensitivity bound for zero-out adjacency (the accountant's Δ).
pub fn rounded_norm_bound(
    clip: ClipNorm,
    gamma: Gamma,
    beta: RoundingBias,
    padded_dim: u64,
) -> Result<Sensitivity, ParamError> {
    let c = clip.get() * gamma.get();
    let d = padded_dim.max(1) as f64;
    let bound_1 = c + d.sqrt();
    let bound = if beta.get() > 0.0 {
        let bound_2 =
            (c * c + d / 4.0 + (2.0 * (1.0 / beta.get()).ln()).sqrt() * (c + 0.5 * d.sqrt()))
                .sqrt();
        bound_1.min(bound_2)
    } else {
        bound_1
    };
    Sensitivity::new(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn margin() -> OverflowMargin {
        OverflowMargin::from_probability(1e-4).unwrap()
    }

    #[test]
    fn gamma_solves_the_heuristic_equation() {
        let (b, n, c, s, d) = (16, 10, 1.0, 0.3, 1 << 16);
        let g = choose_gamma(
            BitWidth::new(b).unwrap(),
            SiteCount::new(n).unwrap(),
            ClipNorm::new(c).unwrap(),
            Sigma::new(s).unwrap(),
            d,
            margin(),
        )
        .unwrap()
        .get();
        let k = margin().stddevs();
        let (n, d) = (f64::from(n), d as f64);
        let gran = 1.0 / g;
        let rhs = 2.0 * k * ((c * n).powi(2) / d + (gran * gran / 4.0 + s * s) * n).sqrt() / gran;
        assert!((rhs / 2f64.powi(b as i32) - 1.0).abs() < 1e-9, "rhs={rhs}");
    }

    #[test]
    fn refuses_too_few_bits_for_the_sites_and_likely_overflow() {
        let args = |b: u32, n: u32| {
            choose_gamma(
                BitWidth::new(b).unwrap(),
                SiteCount::new(n).unwrap(),
                ClipNorm::new(1.0).unwrap(),
                Sigma::new(1.0).unwrap(),
                1024,
                margin(),
            )
        };
        assert!(matches!(
            args(4, 17),
            Err(ScaleError::BitsBelowLog2Sites { bits: 4, sites: 17 })
        ));
        // b = 3 covers 8 sites, but 2^6 = 64 < 8·3.89² ≈ 121: a wrap is likely.
        assert!(matches!(
            args(3, 8),
            Err(ScaleError::OverflowLikely {
                bits: 3,
                sites: 8,
                ..
            })
        ));
        assert!(args(16, 100).is_ok());
    }

    #[test]
    fn norm_bound_takes_the_smaller_of_the_two_bounds() {
        let clip = ClipNorm::new(1.0).unwrap();
        let gamma = Gamma::new(100.0).unwrap();
        let plain = rounded_norm_bound(clip, gamma, RoundingBias::NONE, 1024)
            .unwrap()
            .get();
        assert!((plain - (100.0 + 32.0)).abs() < 1e-12);
        let conditional = rounded_norm_bound(clip, gamma, RoundingBias::recommended(), 1024)
            .unwrap()
            .get();
        let expected = (100.0f64.powi(2) + 256.0 + 1.0 * (100.0 + 16.0)).sqrt();
        assert!((conditional - expected).abs() < 1e-9);
        assert!(conditional < plain);
    }
}
