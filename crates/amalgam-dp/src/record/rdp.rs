//! Rényi DP of the Poisson-subsampled Gaussian at integer orders, and its composition.
//!
//! One step: each record is in the batch with probability q, the clipped (and grid-rounded)
//! per-record contributions are summed and Gaussian noise of multiplier z = σ/Δ is added.
//! Under add/remove-one adjacency the RDP at integer order α ≥ 2 is (Mironov, Talwar, Zhang
//! 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", arXiv:1908.10530, §3)
//!
//! ```text
//! ε(α) = ln A_α / (α − 1),   A_α = Σ_{i=0}^{α} C(α, i) (1 − q)^{α−i} q^i exp((i² − i) / (2z²)).
//! ```
//!
//! It is computed here as ln A_α = ln(1 + B_α) with B_α = A_α − 1 = Σ_{i≥2} C(α, i) (1 − q)^{α−i}
//! q^i expm1((i² − i)/(2z²)) (the i = 0, 1 terms of A_α sum with the rest of the binomial
//! expansion to exactly 1): every term of B_α is non-negative, so its log-sum-exp loses nothing
//! to cancellation, and for large z, where A_α − 1 is far below one ulp of 1, the tiny RDP is
//! still computed to full relative precision (summing A_α directly, as dp_accounting does,
//! leaves only rounding noise there). q = 1 is the plain Gaussian, α/(2z²); q = 0 costs 0.
//!
//! protocol-spec/record-dp.md explains why the same values hold exactly for the discrete
//! Gaussian on a grid that Amalgam samples. RDP composes by addition at each order (Mironov
//! 2017, Proposition 1), so a run of k identical steps is k times one step.

use crate::error::RecordAccountError;
use crate::record::orders::{RdpOrders, check_order, log_binomial_row};

/// Refuses a sampling rate outside [0, 1] (NaN included).
pub(crate) fn check_rate(q: f64) -> Result<(), RecordAccountError> {
    if (0.0..=1.0).contains(&q) {
        Ok(())
    } else {
        Err(RecordAccountError::SamplingRate(q))
    }
}

/// Refuses a noise multiplier that is not finite and positive.
pub(crate) fn check_multiplier(z: f64) -> Result<(), RecordAccountError> {
    if z.is_finite() && z > 0.0 {
        Ok(())
    } else {
        Err(RecordAccountError::NoiseMultiplier(z))
    }
}

/// ln(eˣ − 1) for x > 0, without overflow for large x.
fn ln_expm1(x: f64) -> f64 {
    if x > 40.0 {
        x + (-(-x).exp()).ln_1p()
    } else {
        x.exp_m1().ln()
    }
}

/// ln(1 + eˡ), without overflow for large l.
fn ln_1p_exp(l: f64) -> f64 {
    if l > 0.0 {
        l + (-l).exp().ln_1p()
    } else {
        l.exp().ln_1p()
    }
}

/// RDP at one order given its log-binomial row (inputs already validated).
fn rdp_at(q: f64, z: f64, alpha: u32, log_binomials: &[f64]) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    let a = f64::from(alpha);
    if q == 1.0 {
        return a / (2.0 * z * z);
    }
    let (ln_q, ln_1mq) = (q.ln(), (-q).ln_1p());
    let two_z2 = 2.0 * z * z;
    let terms = (2..=alpha).map(|i| {
        let fi = f64::from(i);
        log_binomials[i as usize]
            + fi * ln_q
            + (a - fi) * ln_1mq
            + ln_expm1(fi * (fi - 1.0) / two_z2)
    });
    let max = terms.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return 0.0;
    }
    if max == f64::INFINITY {
        return f64::INFINITY;
    }
    let ln_b = max + terms.map(|t| (t - max).exp()).sum::<f64>().ln();
    ln_1p_exp(ln_b) / (a - 1.0)
}

/// RDP ε(α) of one step of the Poisson-subsampled Gaussian with sampling rate `q` and noise
/// multiplier `z` = σ/Δ, at integer order `order` ∈ [2, 1024], under add/remove-one adjacency.
/// May be +∞ when z is so small that z² underflows.
pub fn rdp_sampled_gaussian(q: f64, z: f64, order: u32) -> Result<f64, RecordAccountError> {
    check_rate(q)?;
    check_multiplier(z)?;
    check_order(order)?;
    Ok(rdp_at(q, z, order, &log_binomial_row(order)))
}

/// An RDP curve: ε(α) at each order of an order set.
#[derive(Debug, Clone, PartialEq)]
pub struct RdpCurve {
    orders: Vec<u32>,
    values: Vec<f64>,
}

impl RdpCurve {
    /// The curve of `steps` steps of the Poisson-subsampled Gaussian (rate `q`, multiplier `z`)
    /// over `orders`: `steps` times the one-step curve.
    pub fn sampled_gaussian(
        orders: &RdpOrders,
        q: f64,
        z: f64,
        steps: u64,
    ) -> Result<Self, RecordAccountError> {
        check_rate(q)?;
        check_multiplier(z)?;
        if steps == 0 {
            return Err(RecordAccountError::NoSteps);
        }
        let k = steps as f64;
        Ok(Self {
            orders: orders.orders().to_vec(),
            values: orders
                .rows()
                .map(|(alpha, row)| k * rdp_at(q, z, alpha, row))
                .collect(),
        })
    }

    /// Sequential composition: the curves add at each order. Both must be over the same orders.
    pub fn compose(&self, other: &Self) -> Result<Self, RecordAccountError> {
        if self.orders != other.orders {
            return Err(RecordAccountError::OrdersMismatch);
        }
        Ok(Self {
            orders: self.orders.clone(),
            values: self
                .values
                .iter()
                .zip(&other.values)
                .map(|(a, b)| a + b)
                .collect(),
        })
    }

    /// The orders, increasing.
    pub fn orders(&self) -> &[u32] {
        &self.orders
    }

    /// ε(α) at each order, in the order of [`Self::orders`].
    pub fn values(&self) -> &[f64] {
        &self.values
    }
}
