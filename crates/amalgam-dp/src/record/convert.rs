//! From an RDP curve to (ε, δ)-DP.
//!
//! For each order α with RDP value r, the mechanism is (ε_α, δ)-DP with
//!
//! ```text
//! ε_α = r + ln((α − 1)/α) − (ln δ + ln α)/(α − 1)
//! ```
//!
//! (Canonne, Kamath, Steinke 2020, "The Discrete Gaussian for Differential Privacy",
//! Proposition 12; Balle, Barthe, Gaboardi, Hsu, Sato 2020, "Hypothesis Testing
//! Interpretations and Rényi Differential Privacy", Theorem 21), and ε is the minimum over the
//! orders. This is the conversion of dp_accounting's `RdpAccountant.get_epsilon_and_optimal_order`,
//! including its two special cases: an order with δ² > 1 − e^{−r} gives ε = 0 (the KL
//! divergence is at most the Rényi divergence r of any order α > 1, and by Bretagnolle–Huber the
//! total-variation distance is at most √(1 − e^{−KL}) < δ, which is (0, δ)-DP), and the result
//! is clamped at 0. The adjacency is whatever the curve was computed for: for
//! [`crate::record::RdpCurve::sampled_gaussian`], add/remove of one record.

use crate::error::RecordAccountError;
use crate::params::Delta;
use crate::record::rdp::RdpCurve;

/// An ε and the Rényi order that attained it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpsilonAtOrder {
    /// The smallest ε over the orders (finite, ≥ 0).
    pub epsilon: f64,
    /// The order that attained it (the lowest one on a tie).
    pub order: u32,
}

/// ε at one order, +∞ where the order gives no finite bound.
fn epsilon_at_order(alpha: u32, rdp: f64, delta: f64) -> f64 {
    if rdp.is_nan() || rdp == f64::INFINITY {
        return f64::INFINITY;
    }
    if delta * delta + (-rdp).exp_m1() > 0.0 {
        return 0.0;
    }
    let a = f64::from(alpha);
    rdp + (-1.0 / a).ln_1p() - (delta.ln() + a.ln()) / (a - 1.0)
}

impl RdpCurve {
    /// The smallest ε at `delta` over the curve's orders, and the order that attained it.
    /// Refused (`Unbounded`) when every order gives +∞.
    pub fn epsilon(&self, delta: Delta) -> Result<EpsilonAtOrder, RecordAccountError> {
        let d = delta.get();
        let mut best: Option<EpsilonAtOrder> = None;
        for (&order, &rdp) in self.orders().iter().zip(self.values()) {
            let epsilon = epsilon_at_order(order, rdp, d);
            if best.is_none_or(|b| epsilon < b.epsilon) {
                best = Some(EpsilonAtOrder { epsilon, order });
            }
        }
        match best {
            Some(b) if b.epsilon.is_finite() => Ok(EpsilonAtOrder {
                epsilon: b.epsilon.max(0.0),
                order: b.order,
            }),
            _ => Err(RecordAccountError::Unbounded { delta: d }),
        }
    }
}
