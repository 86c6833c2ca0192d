//! Validated newtypes for every number that carries privacy or encoding meaning.
//!
//! Each value is checked once, when it is built, so that the rest of the crate can rely on it
//! (a `Sigma` is finite and positive, a `Delta` lies in (0, 1), ...). Constructors return a
//! [`ParamError`] that names the parameter and the rule it broke.

use serde::{Deserialize, Serialize};

use crate::error::ParamError;

/// Defines a validated newtype over a number: the struct (serde goes through the checked
/// conversions, so decoding revalidates), `new`, which applies the rule, `get`, and the
/// `TryFrom`/`From` conversions. Attributes given before the struct (its doc, extra derives) are
/// kept; further associated items go in a separate `impl` block.
///
/// The `positive` and `non_negative` forms are the finite, > 0 and finite, >= 0 `f64` cases
/// (`non_negative` adds a `ZERO` constant).
macro_rules! validated_newtype {
    (positive $(#[$attr:meta])* $name:ident, $label:literal) => {
        validated_newtype! {
            $(#[$attr])*
            pub struct $name(f64 as "f64");
            /// Validates that the value is finite and strictly positive.
            new(value) if value.is_finite() && value > 0.0,
                else { name: $label, value: value, rule: "finite and > 0" }
            /// The validated value.
            get;
        }
    };
    (non_negative $(#[$attr:meta])* $name:ident, $label:literal) => {
        validated_newtype! {
            $(#[$attr])*
            pub struct $name(f64 as "f64");
            /// Validates that the value is finite and not negative.
            new(value) if value.is_finite() && value >= 0.0,
                else { name: $label, value: value, rule: "finite and >= 0" }
            /// The validated value.
            get;
        }

        impl $name {
            /// Zero.
            pub const ZERO: Self = Self(0.0);
        }
    };
    (
        $(#[$attr:meta])*
        pub struct $name:ident($inner:ty as $repr:tt);
        $(#[$new_doc:meta])*
        new($arg:ident) if $valid:expr,
            else { name: $label:literal, value: $value:expr, rule: $rule:literal }
        $(#[$get_doc:meta])*
        get;
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(try_from = $repr, into = $repr)]
        pub struct $name($inner);

        impl $name {
            $(#[$new_doc])*
            pub fn new($arg: $inner) -> Result<Self, ParamError> {
                if $valid {
                    Ok(Self($arg))
                } else {
                    Err(ParamError::OutOfRange { name: $label, value: $value, rule: $rule })
                }
            }
            $(#[$get_doc])*
            pub fn get(self) -> $inner {
                self.0
            }
        }

        impl TryFrom<$inner> for $name {
            type Error = ParamError;
            fn try_from(value: $inner) -> Result<Self, ParamError> {
                Self::new(value)
            }
        }

        impl From<$name> for $inner {
            fn from(value: $name) -> $inner {
                value.0
            }
        }
    };
}

validated_newtype!(
    positive
    /// L2 norm bound C every update is clipped to, in the update's own units.
    ClipNorm,
    "clip norm C"
);
validated_newtype!(
    positive
    /// A standard deviation of Gaussian noise (the domain is said where it is used).
    Sigma,
    "sigma"
);
validated_newtype!(
    positive
    /// Scale factor γ: the rotated update is multiplied by γ before rounding to integers, so the
    /// rounding granularity in update units is 1/γ (TFF calls 1/γ "gamma"; here γ is the scale).
    Gamma,
    "scale factor gamma"
);
validated_newtype!(
    positive
    /// An L2 sensitivity Δ₂ (in the domain the noise is added in).
    Sensitivity,
    "L2 sensitivity"
);
validated_newtype!(
    non_negative
    /// zero-Concentrated DP parameter ρ (Bun & Steinke 2016, Definition 1.1).
    Rho,
    "rho"
);
validated_newtype!(
    non_negative
    /// Privacy-loss bound ε of (ε, δ)-DP.
    Epsilon,
    "epsilon"
);
validated_newtype!(
    non_negative
    /// A statistical (total-variation) distance bound, as added to δ.
    Distance,
    "statistical distance"
);

validated_newtype! {
    /// Failure probability δ of (ε, δ)-DP, in the open interval (0, 1).
    pub struct Delta(f64 as "f64");
    /// Validates 0 < δ < 1.
    new(value) if value.is_finite() && value > 0.0 && value < 1.0,
        else { name: "delta", value: value, rule: "0 < delta < 1" }
    /// The validated value.
    get;
}

validated_newtype! {
    /// Conditional randomized rounding bias β ∈ [0, 1) (KLS21 §4.1): rounding is retried until the
    /// rounded vector's norm is within the bound that holds with probability ≥ 1 − β. β = 0 means
    /// plain randomized rounding with the deterministic bound C + √d/γ.
    pub struct RoundingBias(f64 as "f64");
    /// Validates 0 ≤ β < 1.
    new(value) if value.is_finite() && (0.0..1.0).contains(&value),
        else { name: "rounding bias beta", value: value, rule: "0 <= beta < 1" }
    /// The validated value.
    get;
}

impl RoundingBias {
    /// No conditioning: the deterministic norm bound is used.
    pub const NONE: Self = Self(0.0);

    /// The value KLS21 recommends, e^(−1/2).
    pub fn recommended() -> Self {
        Self((-0.5f64).exp())
    }
}

validated_newtype! {
    /// Bit width b of each wrapped coordinate: values live in [0, 2^b) and the secure sum is taken
    /// modulo 2^b. Limited to 52 so every value of the signed range is exact in an f64.
    #[derive(Eq, Ord)]
    pub struct BitWidth(u32 as "u32");
    /// Validates 2 ≤ b ≤ 52.
    new(bits) if (2..=Self::MAX).contains(&bits),
        else { name: "bit width b", value: f64::from(bits), rule: "2 <= b <= 52" }
    /// The validated width.
    get;
}

impl BitWidth {
    /// Largest supported width.
    pub const MAX: u32 = 52;

    /// The modulus 2^b.
    pub fn modulus(self) -> u64 {
        1u64 << self.0
    }
}

validated_newtype! {
    /// A number of plants (cohort size, fewest survivors n_min), at least 1.
    #[derive(Eq, Ord)]
    pub struct SiteCount(u32 as "u32");
    /// Validates n ≥ 1.
    new(n) if n >= 1,
        else { name: "site count", value: 0.0, rule: ">= 1" }
    /// The validated count.
    get;
}

validated_newtype! {
    /// Length of a model update before padding, 1 ≤ d ≤ 2^30 (padding to a power of two must fit).
    #[derive(Eq, Ord)]
    pub struct Dimension(u64 as "u64");
    /// Validates 1 ≤ d ≤ 2^30.
    new(d) if (1..=Self::MAX).contains(&d),
        else { name: "dimension d", value: d as f64, rule: "1 <= d <= 2^30" }
    /// The validated length.
    get;
}

impl Dimension {
    /// Largest supported length.
    pub const MAX: u64 = 1 << 30;

    /// The padded length the Hadamard rotation works on: the next power of two.
    pub fn padded(self) -> u64 {
        self.0.next_power_of_two()
    }
}

/// n_min of a round, where DP meets the protocol: the fewest plants whose noise is certainly in
/// a released sum and unknown to the coalition, i.e. the protocol's minimum cohort m (no sum
/// over fewer survivors is ever released) minus the c colluding plants it tolerates (a colluder
/// can subtract its own share). Each plant adds σ/√n_min, so the sum carries at least σ of
/// noise no coalition member knows. Refuses c ≥ m: no honest noise would remain. The ledger
/// records m and c with every charge and the audit recomputes n_min from them.
pub fn n_min_for(min_cohort: SiteCount, colluders: u32) -> Result<SiteCount, ParamError> {
    check_cohort("minimum cohort m", min_cohort)?;
    let honest = min_cohort.get().saturating_sub(colluders);
    SiteCount::new(honest).map_err(|_| ParamError::OutOfRange {
        name: "minimum cohort minus tolerated colluders",
        value: f64::from(min_cohort.get()) - f64::from(colluders),
        rule: ">= 1",
    })
}

/// Largest cohort (minimum cohort m, or plants contributing noise) a round may name: far above
/// any consortium of plants, and a bound on the work of the accountant's τ term, which sums
/// n − 1 terms (an unbounded count would let one request stall the ledger for minutes).
pub const MAX_COHORT: u32 = 65_535;

/// Refuses a cohort above [`MAX_COHORT`].
pub fn check_cohort(name: &'static str, n: SiteCount) -> Result<(), ParamError> {
    if n.get() > MAX_COHORT {
        return Err(ParamError::OutOfRange {
            name,
            value: f64::from(n.get()),
            rule: "<= 65535",
        });
    }
    Ok(())
}

/// How many standard deviations of the aggregate must fit in the b-bit range (TFF's `k_stddevs`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct OverflowMargin(f64);

impl OverflowMargin {
    /// A margin given directly as a number of standard deviations k > 0.
    pub fn from_stddevs(k: f64) -> Result<Self, ParamError> {
        if k.is_finite() && k > 0.0 {
            Ok(Self(k))
        } else {
            Err(ParamError::OutOfRange {
                name: "overflow margin k",
                value: k,
                rule: "finite and > 0",
            })
        }
    }

    /// The margin for a per-coordinate two-sided overflow probability p ∈ (0, 1) of a normal
    /// aggregate: k = √2 · erfc⁻¹(p), solved by bisection on `libm::erfc` (TFF's
    /// `_clip_prob_to_num_stddevs`).
    pub fn from_probability(p: f64) -> Result<Self, ParamError> {
        if !(p.is_finite() && p > 0.0 && p < 1.0) {
            return Err(ParamError::OutOfRange {
                name: "overflow probability",
                value: p,
                rule: "0 < p < 1",
            });
        }
        // erfc is decreasing on [0, ∞); erfc(0) = 1 > p and erfc(40) underflows to 0 < p.
        let (mut lo, mut hi) = (0.0f64, 40.0f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if libm::erfc(mid) > p {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Self::from_stddevs(std::f64::consts::SQRT_2 * hi)
    }

    /// The number of standard deviations k.
    pub fn stddevs(self) -> f64 {
        self.0
    }
}

/// Neighbouring relation between datasets (here: between consortium inputs in one round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Adjacency {
    /// One plant's update is added or removed (zeroed): sensitivity is the clipped norm bound.
    ZeroOut,
    /// One plant's update is replaced by another: sensitivity doubles, so ρ is 4×.
    ReplaceOne,
}

impl Adjacency {
    /// Factor applied to the sensitivity: 1 for zero-out, 2 for replace-one (so 4× the ρ).
    pub fn sensitivity_factor(self) -> f64 {
        match self {
            Adjacency::ZeroOut => 1.0,
            Adjacency::ReplaceOne => 2.0,
        }
    }
    /// Stable code used in the ledger's canonical encoding.
    pub fn code(self) -> u8 {
        match self {
            Adjacency::ZeroOut => 0,
            Adjacency::ReplaceOne => 1,
        }
    }
    /// Inverse of [`Adjacency::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Adjacency::ZeroOut),
            1 => Some(Adjacency::ReplaceOne),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_reject_out_of_range_values() {
        assert!(ClipNorm::new(0.0).is_err());
        assert!(ClipNorm::new(f64::NAN).is_err());
        assert!(Sigma::new(-1.0).is_err());
        assert!(Delta::new(1.0).is_err());
        assert!(Delta::new(0.0).is_err());
        assert!(RoundingBias::new(1.0).is_err());
        assert!(BitWidth::new(53).is_err());
        assert!(BitWidth::new(1).is_err());
        assert!(SiteCount::new(0).is_err());
        assert!(Dimension::new(0).is_err());
        assert!(Dimension::new(Dimension::MAX + 1).is_err());
        assert!(Rho::new(f64::INFINITY).is_err());
        assert!(Epsilon::new(-0.1).is_err());
        assert!(ClipNorm::new(1.5).is_ok());
        assert_eq!(Dimension::new(5).map(Dimension::padded).ok(), Some(8));
    }

    #[test]
    fn overflow_probability_inverts_erfc() {
        for p in [1e-2, 1e-4, 1e-8, 1e-12] {
            let k = OverflowMargin::from_probability(p)
                .map(OverflowMargin::stddevs)
                .unwrap();
            let back = libm::erfc(k / std::f64::consts::SQRT_2);
            assert!((back / p - 1.0).abs() < 1e-9, "p={p} k={k} back={back}");
        }
        // The classic 3.89 standard deviations for 1e-4 (TFF's default modclip probability).
        let k = OverflowMargin::from_probability(1e-4).unwrap().stddevs();
        assert!((k - 3.8906).abs() < 1e-3);
    }

    #[test]
    fn n_min_is_the_minimum_cohort_less_the_colluders() {
        let m = SiteCount::new(5).unwrap();
        assert_eq!(n_min_for(m, 0).unwrap().get(), 5);
        assert_eq!(n_min_for(m, 2).unwrap().get(), 3);
        assert!(n_min_for(m, 5).is_err());
        assert!(n_min_for(m, u32::MAX).is_err());
    }

    #[test]
    fn serde_revalidates_on_decode() {
        assert!(serde_json::from_str::<Sigma>("-3.0").is_err());
        assert!(serde_json::from_str::<BitWidth>("60").is_err());
        let s: Sigma = serde_json::from_str("2.5").unwrap();
        assert_eq!(s.get(), 2.5);
    }
}
