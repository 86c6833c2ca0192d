//! The integer Rényi orders the record-level accountant evaluates, with their exact
//! log-binomial rows.
//!
//! The Mironov–Talwar–Zhang moment at order α is a sum of α + 1 terms weighted by C(α, i).
//! The binomials are computed exactly as big integers and rounded once to `f64` (C(1024, 512)
//! ≈ 4.5·10³⁰⁶ still fits), so ln C(α, i) is within one rounding of the exact value, with no
//! `lgamma` and no error that grows along the row. The rows are built once per order set.

use std::sync::OnceLock;

use dashu::integer::UBig;

use crate::error::RecordAccountError;

/// Largest supported order: the largest α whose central binomial C(α, α/2) fits in an `f64`
/// with room to spare (C(1030, 515) would overflow).
pub const MAX_ORDER: u32 = 1024;

/// A validated, strictly increasing set of integer Rényi orders in [2, [`MAX_ORDER`]], each
/// with its row ln C(α, 0..=α).
#[derive(Debug, Clone, PartialEq)]
pub struct RdpOrders {
    orders: Vec<u32>,
    log_binomials: Vec<Vec<f64>>,
}

impl RdpOrders {
    /// Validates `orders` (non-empty, strictly increasing, each an integer in [2, 1024]) and
    /// builds their log-binomial rows.
    pub fn new(orders: &[u32]) -> Result<Self, RecordAccountError> {
        if orders.is_empty() {
            return Err(RecordAccountError::Orders("the list is empty"));
        }
        for &order in orders {
            check_order(order)?;
        }
        if orders.windows(2).any(|w| w[0] >= w[1]) {
            return Err(RecordAccountError::Orders(
                "each order must be larger than the one before",
            ));
        }
        Ok(Self {
            orders: orders.to_vec(),
            log_binomials: orders.iter().map(|&a| log_binomial_row(a)).collect(),
        })
    }

    /// The dense default set: every integer from 2 to 64, then steps of 4 to 128, 8 to 256,
    /// 16 to 512 and 32 to 1024 (127 orders). Low orders decide ε in the usual DP-SGD regime
    /// (ε of a few units), where the optimum moves by less than one order between neighbouring
    /// parameters, so they are taken one by one; high orders matter only for small ε, where the
    /// curve is flat and coarse steps cost little. Built once.
    pub fn dense() -> &'static Self {
        static DENSE: OnceLock<RdpOrders> = OnceLock::new();
        DENSE.get_or_init(|| {
            let orders = dense_orders();
            let log_binomials = orders.iter().map(|&a| log_binomial_row(a)).collect();
            Self {
                orders,
                log_binomials,
            }
        })
    }

    /// The orders, increasing.
    pub fn orders(&self) -> &[u32] {
        &self.orders
    }

    /// Number of orders.
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    /// Always false: an order set is never empty.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    /// (order, ln C(order, 0..=order)) pairs.
    pub(crate) fn rows(&self) -> impl Iterator<Item = (u32, &[f64])> {
        self.orders
            .iter()
            .copied()
            .zip(self.log_binomials.iter().map(Vec::as_slice))
    }
}

/// The list behind [`RdpOrders::dense`].
fn dense_orders() -> Vec<u32> {
    (2..=64)
        .chain((68..=128).step_by(4))
        .chain((136..=256).step_by(8))
        .chain((272..=512).step_by(16))
        .chain((544..=1024).step_by(32))
        .collect()
}

/// Refuses an order outside [2, [`MAX_ORDER`]].
pub(crate) fn check_order(order: u32) -> Result<(), RecordAccountError> {
    if (2..=MAX_ORDER).contains(&order) {
        Ok(())
    } else {
        Err(RecordAccountError::Order {
            order,
            max: MAX_ORDER,
        })
    }
}

/// ln C(α, i) for i = 0..=α: exact big-integer binomials (C(α, i) = C(α, i−1)·(α−i+1)/i, the
/// division exact), each rounded once to `f64` then to its logarithm; the row is symmetric.
pub(crate) fn log_binomial_row(alpha: u32) -> Vec<f64> {
    let n = alpha as usize;
    let mut row = vec![0.0f64; n + 1];
    let mut c = UBig::ONE;
    for i in 1..=n / 2 {
        c = c * UBig::from(alpha - i as u32 + 1) / UBig::from(i as u32);
        let log = c.to_f64().value().ln();
        row[i] = log;
        row[n - i] = log;
    }
    row
}
