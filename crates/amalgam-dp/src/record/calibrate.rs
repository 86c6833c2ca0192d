//! The smallest noise multiplier that keeps a record-level run within a target (ε, δ).
//!
//! ε is non-increasing in z: every term of A_α decreases in z at every order, the conversion is
//! increasing in each order's RDP, and a minimum of non-increasing functions is non-increasing.
//! So a bisection that keeps `lo` with ε(lo) > target and `hi` with ε(hi) ≤ target converges to
//! the threshold from above, and returning `hi` never returns a z whose ε exceeds the target.
//! (The clamp at 0 and the total-variation case of the conversion keep this: each order's
//! clamped ε is non-decreasing in its RDP.) ε is continuous in z except at that case: as
//! z → ∞ it falls towards the conversion's floor over the orders (about 0.0058 at δ = 10⁻⁶, set
//! by order 1024) and jumps to 0 once δ² > 1 − e^{−r(2)}, so a target below that floor is met
//! only by a very large z, with ε = 0.

use crate::error::RecordAccountError;
use crate::params::{Delta, Epsilon};
use crate::record::convert::EpsilonAtOrder;
use crate::record::orders::RdpOrders;
use crate::record::rdp::{RdpCurve, check_rate};

/// Smallest noise multiplier searched.
pub const Z_FLOOR: f64 = 1e-2;
/// Largest noise multiplier searched.
pub const Z_CEILING: f64 = 1e5;
/// The bisection stops when hi/lo ≤ 1 + `Z_RELATIVE_TOLERANCE`: the returned z is at most that
/// far (relatively) above the exact threshold, over the dense orders.
pub const Z_RELATIVE_TOLERANCE: f64 = 1e-9;

/// A calibrated noise multiplier and the guarantee it gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordCalibration {
    /// z = σ/Δ, the smallest (to [`Z_RELATIVE_TOLERANCE`]) with ε ≤ the target.
    pub noise_multiplier: f64,
    /// ε at that z (≤ the target) and the order that attained it.
    pub epsilon: EpsilonAtOrder,
}

/// ε of `steps` steps at (q, z), +∞ where no order gives a finite bound.
fn epsilon_or_infinity(
    q: f64,
    z: f64,
    steps: u64,
    delta: Delta,
) -> Result<EpsilonAtOrder, RecordAccountError> {
    let curve = RdpCurve::sampled_gaussian(RdpOrders::dense(), q, z, steps)?;
    match curve.epsilon(delta) {
        Err(RecordAccountError::Unbounded { .. }) => Ok(EpsilonAtOrder {
            epsilon: f64::INFINITY,
            order: 0,
        }),
        other => other,
    }
}

/// The smallest noise multiplier z ∈ [[`Z_FLOOR`], [`Z_CEILING`]] such that `steps` steps of the
/// Poisson-subsampled Gaussian at rate `q` are (`target`, `delta`)-DP (add/remove of one
/// record, dense orders), by bisection on ln z to a relative [`Z_RELATIVE_TOLERANCE`].
/// Refused when even the ceiling misses the target, and when the floor already meets it (the
/// smallest such z is then below the range: q = 0 always is).
pub fn calibrate_noise_multiplier(
    target: Epsilon,
    delta: Delta,
    steps: u64,
    q: f64,
) -> Result<RecordCalibration, RecordAccountError> {
    check_rate(q)?;
    if steps == 0 {
        return Err(RecordAccountError::NoSteps);
    }
    let t = target.get();
    let at_ceiling = epsilon_or_infinity(q, Z_CEILING, steps, delta)?;
    if at_ceiling.epsilon > t {
        return Err(RecordAccountError::CalibrationAboveRange {
            target: t,
            delta: delta.get(),
            q,
            steps,
            ceiling: Z_CEILING,
        });
    }
    if epsilon_or_infinity(q, Z_FLOOR, steps, delta)?.epsilon <= t {
        return Err(RecordAccountError::CalibrationBelowRange {
            target: t,
            floor: Z_FLOOR,
        });
    }
    let (mut lo, mut hi, mut at_hi) = (Z_FLOOR, Z_CEILING, at_ceiling);
    while hi / lo > 1.0 + Z_RELATIVE_TOLERANCE {
        let mid = (lo * hi).sqrt();
        // The geometric mean of two floats this close can round onto an end: stop there.
        if mid <= lo || mid >= hi {
            break;
        }
        let at_mid = epsilon_or_infinity(q, mid, steps, delta)?;
        if at_mid.epsilon > t {
            lo = mid;
        } else {
            (hi, at_hi) = (mid, at_mid);
        }
    }
    Ok(RecordCalibration {
        noise_multiplier: hi,
        epsilon: at_hi,
    })
}
