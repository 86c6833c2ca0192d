//! Errors, one enum per concern, each variant naming the problem and who caused it.

use thiserror::Error;

/// A parameter failed validation (local misuse).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ParamError {
    /// A number lies outside the range its meaning allows.
    #[error("{name} = {value} is invalid: must be {rule}")]
    OutOfRange {
        /// Which parameter.
        name: &'static str,
        /// The rejected value.
        value: f64,
        /// The rule it broke.
        rule: &'static str,
    },
}

/// The scale-factor helper refused a parameter combination (local misuse or incompatible setup).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ScaleError {
    /// 2^b cannot even hold the count of contributors.
    #[error("bit width b = {bits} is below log2(n) for n = {sites} sites: the sum cannot fit")]
    BitsBelowLog2Sites {
        /// Requested bit width.
        bits: u32,
        /// Expected number of contributing sites.
        sites: u32,
    },
    /// Even the rounding noise alone makes a modular wrap likely: 2^(2b) < n k².
    #[error(
        "bit width b = {bits} is too small for n = {sites} sites at a {stddevs:.2}-standard-deviation \
         overflow margin: modular overflow is likely (increase b, reduce n or accept a larger overflow probability)"
    )]
    OverflowLikely {
        /// Requested bit width.
        bits: u32,
        /// Expected number of contributing sites.
        sites: u32,
        /// Overflow margin in standard deviations.
        stddevs: f64,
    },
    /// The derived quantity is not a usable number.
    #[error(transparent)]
    Param(#[from] ParamError),
}

/// Encoding or decoding an update failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EncodeError {
    /// The vector's length differs from the one the parameters were built for.
    #[error("update has {got} coordinates, the round expects {expected}")]
    DimensionMismatch {
        /// Length the parameters were built for.
        expected: u64,
        /// Length given.
        got: u64,
    },
    /// A coordinate is NaN or infinite.
    #[error("coordinate {index} is not finite")]
    NonFinite {
        /// Index of the first offending coordinate.
        index: usize,
    },
    /// Conditional randomized rounding did not meet its norm bound within the allowed tries.
    #[error("conditional randomized rounding exceeded the norm bound {bound} in all {tries} tries")]
    RoundingFailed {
        /// Number of tries made.
        tries: u32,
        /// The norm bound in the scaled domain.
        bound: f64,
    },
    /// An aggregate value is not in [0, 2^b).
    #[error("aggregate coordinate {index} = {value} is not below 2^b = {modulus}")]
    NotInRing {
        /// Index of the offending coordinate.
        index: usize,
        /// The value.
        value: u64,
        /// The modulus 2^b.
        modulus: u64,
    },
    /// The round's permit does not match the codec or the sampler.
    #[error("the ledger's permit for this round does not match the encoder's {what}")]
    PermitMismatch {
        /// Which parameter differs.
        what: &'static str,
    },
    /// The permit was charged under another kind of policy than the one the caller expects
    /// (for example a permit from a ledger under policy `none` where a private round is due).
    #[error("the permit was charged under a {found:?} policy, the caller expects {expected:?}")]
    PolicyKindMismatch {
        /// What the caller expects.
        expected: crate::ledger::PolicyKind,
        /// What the permit or update carries.
        found: crate::ledger::PolicyKind,
    },
    /// The encoded update was charged to another ledger than the one the caller expects.
    #[error("the encoded update was charged to another ledger")]
    OtherLedger,
    /// Persisted encoded-update bytes are malformed.
    #[error("persisted encoded update is malformed: {0}")]
    BadPersistedUpdate(&'static str),
    /// Noise could not be drawn.
    #[error(transparent)]
    Sampler(#[from] SamplerError),
}

/// A noise sampler could not be built or could not draw.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SamplerError {
    /// σ is beyond what the fast sampler's tables are built for.
    #[error("sigma = {sigma} exceeds the fast sampler's supported maximum {max}")]
    SigmaTooLarge {
        /// Requested σ.
        sigma: f64,
        /// Supported maximum.
        max: f64,
    },
    /// σ is below what the fast sampler's tables are built for.
    #[error("sigma = {sigma} is below the fast sampler's supported minimum {min}")]
    SigmaTooSmall {
        /// Requested σ.
        sigma: f64,
        /// Supported minimum.
        min: f64,
    },
    /// The operating system's entropy source failed.
    #[error("the operating system's entropy source failed")]
    Entropy,
    /// opendp's exact sampler failed (e.g. the system entropy source).
    #[error("exact sampler failed: {0}")]
    Exact(String),
}

/// The accountant could not produce a guarantee.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AccountError {
    /// An opendp constructor or map failed.
    #[error("opendp: {0}")]
    OpenDp(String),
    /// The samplers' statistical distance eats too much of δ.
    #[error(
        "sampler distance {distance:e} over the whole run needs more than half of delta = {delta:e}"
    )]
    SamplerDistanceTooLarge {
        /// Total distance over all samples of the run.
        distance: f64,
        /// The target δ.
        delta: f64,
    },
    /// No σ in the search range reaches the target ε.
    #[error("no sigma in [{low}, {high}] reaches epsilon = {target}")]
    CalibrationFailed {
        /// Target ε.
        target: f64,
        /// Lower end searched.
        low: f64,
        /// Upper end searched.
        high: f64,
    },
    /// No rounds to account for.
    #[error("nothing to account: zero rounds")]
    NoRounds,
    /// A parameter is invalid.
    #[error(transparent)]
    Param(#[from] ParamError),
}

impl From<opendp::error::Error> for AccountError {
    fn from(e: opendp::error::Error) -> Self {
        AccountError::OpenDp(format!(
            "{:?}: {}",
            e.variant,
            e.message.unwrap_or_default()
        ))
    }
}

/// The record-level (DP-SGD) accountant refused its inputs or could not produce a guarantee.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RecordAccountError {
    /// The Poisson sampling rate q is not a probability.
    #[error("sampling rate q = {0} is invalid: must be in [0, 1]")]
    SamplingRate(f64),
    /// The noise multiplier z = σ/Δ is not a finite positive number.
    #[error("noise multiplier z = {0} is invalid: must be finite and > 0")]
    NoiseMultiplier(f64),
    /// A run of zero steps has nothing to account for.
    #[error("steps = 0: a local run has at least one noisy step")]
    NoSteps,
    /// A Rényi order outside the integers the accountant supports.
    #[error("Rényi order {order} is invalid: must be an integer in [2, {max}]")]
    Order {
        /// The rejected order.
        order: u32,
        /// Largest supported order.
        max: u32,
    },
    /// An order set that is empty, unsorted or repeats an order.
    #[error("Rényi orders must be a non-empty, strictly increasing list ({0})")]
    Orders(&'static str),
    /// Two curves over different order sets cannot be composed.
    #[error("cannot compose RDP curves over different order sets")]
    OrdersMismatch,
    /// No order gives a finite ε (the RDP is infinite at every order).
    #[error("no Rényi order gives a finite epsilon at delta = {delta:e}")]
    Unbounded {
        /// The target δ.
        delta: f64,
    },
    /// Even the largest noise multiplier searched does not reach the target.
    #[error(
        "no noise multiplier up to {ceiling} reaches epsilon = {target} at delta = {delta:e} \
         (q = {q}, {steps} steps)"
    )]
    CalibrationAboveRange {
        /// Target ε.
        target: f64,
        /// Target δ.
        delta: f64,
        /// Sampling rate.
        q: f64,
        /// Steps.
        steps: u64,
        /// Largest z searched.
        ceiling: f64,
    },
    /// The smallest noise multiplier searched already meets the target, so the smallest one
    /// that does is below the range (for example q = 0, which costs nothing).
    #[error(
        "the smallest noise multiplier searched, {floor}, already meets epsilon = {target}: \
         the calibrated value is below the search range"
    )]
    CalibrationBelowRange {
        /// Target ε.
        target: f64,
        /// Smallest z searched.
        floor: f64,
    },
}
