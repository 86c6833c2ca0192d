//! The record-level accountant: DP-SGD inside one plant, where the privacy unit is one training
//! record (not the plant's whole update, which [`crate::accountant`] accounts for).
//!
//! The mechanism it accounts for: each step includes every record independently with
//! probability q (Poisson subsampling), clips each included record's gradient to L2 norm
//! C_rec, rounds it to the nearest point of the grid γ·ℤᵈ (norm then ≤ Δ = C_rec + γ√d/2,
//! [`grid_sensitivity`]), sums, and adds discrete Gaussian noise of scale σ/γ to each grid
//! coordinate; a local run is a fixed number of such steps. Neighbouring datasets differ by
//! adding or removing one record. Because neighbouring sums differ by a grid vector, the
//! integer-order Rényi moments of this mechanism equal those of the continuous Gaussian of
//! multiplier z = σ/Δ (protocol-spec/record-dp.md gives the argument and its conditions), so:
//!
//! * [`rdp`]: ε(α) of one step at integer orders (Mironov–Talwar–Zhang 2019), and
//!   composition over steps (RDP adds up);
//! * [`orders`]: the integer orders evaluated ([`RdpOrders::dense`]: 2..=64, then coarser to
//!   1024), with exact log-binomials;
//! * [`convert`]: (ε, δ) from the curve by the Canonne–Kamath–Steinke / Balle et al. 2020
//!   conversion, with the order that attained it;
//! * [`calibrate`]: the smallest z reaching a target (ε, δ, steps, q).
//!
//! opendp 0.16, which does the site-level accounting, has a `RenyiDivergence` measure and its
//! composition, but no Rényi map for any noise mechanism, no amplification by Poisson
//! subsampling and no Rényi → (ε, δ) conversion, so this accounting is computed here and checked
//! against Google's dp_accounting (tests/record_accountant.rs).

pub mod calibrate;
pub mod convert;
pub mod orders;
pub mod rdp;

pub use calibrate::{RecordCalibration, calibrate_noise_multiplier};
pub use convert::EpsilonAtOrder;
pub use orders::{MAX_ORDER, RdpOrders};
pub use rdp::{RdpCurve, rdp_sampled_gaussian};

use crate::error::{ParamError, RecordAccountError};
use crate::params::{ClipNorm, Delta, Sensitivity};

/// ε at `delta` of `steps` steps of the Poisson-subsampled Gaussian (rate `q`, multiplier `z`),
/// over the dense orders, with the order that attained it.
pub fn record_epsilon(
    q: f64,
    z: f64,
    steps: u64,
    delta: Delta,
) -> Result<EpsilonAtOrder, RecordAccountError> {
    RdpCurve::sampled_gaussian(RdpOrders::dense(), q, z, steps)?.epsilon(delta)
}

/// L2 sensitivity of one record after clipping to `clip` and rounding each of its `dim`
/// coordinates to the nearest multiple of `grid`: Δ = C_rec + γ·√d/2 (each coordinate moves by
/// at most γ/2, so the rounding error has norm at most γ√d/2; the triangle inequality does
/// the rest). The noise multiplier the accountant takes is then z = σ/Δ, not σ/C_rec.
pub fn grid_sensitivity(clip: ClipNorm, grid: f64, dim: u64) -> Result<Sensitivity, ParamError> {
    if !(grid.is_finite() && grid > 0.0) {
        return Err(ParamError::OutOfRange {
            name: "grid step gamma",
            value: grid,
            rule: "finite and > 0",
        });
    }
    if dim == 0 {
        return Err(ParamError::OutOfRange {
            name: "dimension d",
            value: 0.0,
            rule: ">= 1",
        });
    }
    Sensitivity::new(clip.get() + grid * (dim as f64).sqrt() / 2.0)
}
