//! Round parameters as validated newtypes (spec §7), and the consortium manifest.
//!
//! Every number is checked once, when it is built; a [`RoundParams`] only exists if the whole
//! set is safe. Unsafe sets are refused with a [`ParamError`] that says why.

use core::fmt;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::codec::{Decode, Encode, Reader, Writer};
use crate::error::{DecodeError, ParamError};

/// Most sites a round can have: Shamir shares live in GF(256), x-coordinates 1..=255.
pub const MAX_SITES: u16 = 255;
/// Longest vector a round can carry (2^24 elements; 128 MiB of u64 words).
pub const MAX_VECTOR_LEN: u32 = 1 << 24;

/// A site's index in the consortium manifest (0-based). Its Shamir x-coordinate is index + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteId(pub u16);

impl SiteId {
    /// The index as usize.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Shamir x-coordinate of shares held by this site (never 0).
    pub fn share_x(self) -> u8 {
        // Bounded by MAX_SITES - 1 = 254 wherever a SiteId was validated against params.
        (self.0 as u8).wrapping_add(1)
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "site {}", self.0)
    }
}

/// Number of sites n in the manifest, 2..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteCount(u16);

impl SiteCount {
    /// Validates 2 <= n <= 255.
    pub fn new(n: u16) -> Result<Self, ParamError> {
        if !(2..=MAX_SITES).contains(&n) {
            return Err(ParamError::SiteCount {
                n: n.into(),
                min: 2,
                max: MAX_SITES.into(),
            });
        }
        Ok(Self(n))
    }
    /// n.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// Shamir threshold t >= 1 (checked against n and the graph by [`RoundParams`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u16);

impl Threshold {
    /// Validates t >= 1.
    pub fn new(t: u16) -> Result<Self, ParamError> {
        if t == 0 {
            return Err(ParamError::ThresholdZero);
        }
        Ok(Self(t))
    }
    /// t.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// Minimum cohort: a sum over fewer sites is refused (policy value, >= 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MinCohort(u16);

impl MinCohort {
    /// Validates m >= 2.
    pub fn new(m: u16) -> Result<Self, ParamError> {
        if m < 2 {
            return Err(ParamError::MinCohortTooSmall { m });
        }
        Ok(Self(m))
    }
    /// m.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// Input bits b: inputs are integers in [0, 2^b), 1..=64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InputBits(u8);

impl InputBits {
    /// Validates 1 <= b <= 64.
    pub fn new(b: u8) -> Result<Self, ParamError> {
        if !(1..=64).contains(&b) {
            return Err(ParamError::InputBits { b });
        }
        Ok(Self(b))
    }
    /// b.
    pub fn get(self) -> u8 {
        self.0
    }
    /// Largest allowed input, 2^b - 1.
    pub fn max_value(self) -> u64 {
        mask_bits(self.0)
    }
}

/// Sum bits B: sums are computed mod 2^B, 1..=64; also the packed width of masked inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SumBits(u8);

impl SumBits {
    /// Validates 1 <= B <= 64.
    pub fn new(bits: u8) -> Result<Self, ParamError> {
        if !(1..=64).contains(&bits) {
            return Err(ParamError::SumBits { bits });
        }
        Ok(Self(bits))
    }
    /// B.
    pub fn get(self) -> u8 {
        self.0
    }
    /// 2^B - 1.
    pub fn mask(self) -> u64 {
        mask_bits(self.0)
    }
    /// Whether arithmetic runs in u32 words (B <= 32) rather than u64 words.
    pub fn uses_u32_words(self) -> bool {
        self.0 <= 32
    }
}

/// 2^bits - 1 for bits in 1..=64.
pub(crate) fn mask_bits(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// How sums are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SumMode {
    /// The sum of n inputs must never wrap: B >= b + ceil(log2 n).
    Exact,
    /// The caller's encoding is modular by design (DP crate): B = b.
    Modular,
}

/// Vector length d, 1..=[`MAX_VECTOR_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VectorLen(u32);

impl VectorLen {
    /// Validates 1 <= d <= MAX_VECTOR_LEN.
    pub fn new(d: u32) -> Result<Self, ParamError> {
        if d == 0 || d > MAX_VECTOR_LEN {
            return Err(ParamError::VectorLen {
                d: d.into(),
                max: MAX_VECTOR_LEN.into(),
            });
        }
        Ok(Self(d))
    }
    /// d.
    pub fn get(self) -> u32 {
        self.0
    }
    /// d as usize.
    pub fn len(self) -> usize {
        self.0 as usize
    }
    /// Never empty (d >= 1); present for API symmetry.
    pub fn is_empty(self) -> bool {
        false
    }
}

/// Which pairs of sites share masks and key shares (spec §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NeighbourGraph {
    /// Every pair (Bonawitz et al. 2017).
    Complete,
    /// SecAgg+ (Bell et al. 2020): the k-regular Harary graph H(k, n) over manifest order:
    /// i and j are neighbours iff their circular distance is at most k/2. k even, 2 <= k <= n-2.
    Harary {
        /// Degree k.
        k: u16,
    },
}

/// The raw request for a parameter set, made of individually validated newtypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamsRequest {
    /// n.
    pub sites: SiteCount,
    /// t.
    pub threshold: Threshold,
    /// Minimum cohort.
    pub min_cohort: MinCohort,
    /// b.
    pub input_bits: InputBits,
    /// B.
    pub sum_bits: SumBits,
    /// Exact or modular sums.
    pub sum_mode: SumMode,
    /// d.
    pub vector_len: VectorLen,
    /// Complete or Harary.
    pub graph: NeighbourGraph,
}

/// A validated, safe parameter set for one masking round (spec §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoundParams {
    sites: SiteCount,
    threshold: Threshold,
    min_cohort: MinCohort,
    input_bits: InputBits,
    sum_bits: SumBits,
    sum_mode: SumMode,
    vector_len: VectorLen,
    graph: NeighbourGraph,
}

/// ceil(log2 n) for n >= 1.
pub fn ceil_log2(n: u16) -> u8 {
    if n <= 1 {
        0
    } else {
        (16 - (n - 1).leading_zeros()) as u8
    }
}

impl RoundParams {
    /// Validates the whole set (spec §7, rules P1-P8).
    pub fn new(req: ParamsRequest) -> Result<Self, ParamError> {
        let n = req.sites.get();
        let t = req.threshold.get();
        let m = req.min_cohort.get();
        let b = req.input_bits.get();
        let big_b = req.sum_bits.get();
        // P1: graph.
        let holders = match req.graph {
            NeighbourGraph::Complete => n,
            NeighbourGraph::Harary { k } => {
                if k % 2 != 0 {
                    return Err(ParamError::HararyDegree {
                        k,
                        n,
                        reason: "k must be even",
                    });
                }
                if k < 2 {
                    return Err(ParamError::HararyDegree {
                        k,
                        n,
                        reason: "k must be at least 2",
                    });
                }
                if k > n.saturating_sub(2) {
                    return Err(ParamError::HararyDegree {
                        k,
                        n,
                        reason: "k must be at most n-2 (use the complete graph)",
                    });
                }
                k + 1
            }
        };
        // P2: t <= holders (otherwise no secret is ever recoverable).
        if t > holders {
            return Err(ParamError::ThresholdAboveHolders { t, holders });
        }
        // P3: active model, t > holders / 2.
        let min_t = holders / 2 + 1;
        if t < min_t {
            return Err(ParamError::ThresholdTooLow {
                t,
                holders,
                min: min_t,
            });
        }
        // P4: cohort.
        if m < t {
            return Err(ParamError::MinCohortBelowThreshold { m, t });
        }
        if m > n {
            return Err(ParamError::MinCohortAboveSites { m, n });
        }
        // P5/P6: widths.
        if big_b < b {
            return Err(ParamError::SumBitsBelowInputBits {
                sum_bits: big_b,
                input_bits: b,
            });
        }
        match req.sum_mode {
            SumMode::Exact => {
                let needed = u16::from(b) + u16::from(ceil_log2(n));
                if u16::from(big_b) < needed {
                    return Err(ParamError::ExactSumMayWrap {
                        input_bits: b,
                        n,
                        sum_bits: big_b,
                        needed: needed.min(255) as u8,
                    });
                }
            }
            SumMode::Modular => {
                if big_b != b {
                    return Err(ParamError::ModularNeedsEqualBits {
                        sum_bits: big_b,
                        input_bits: b,
                    });
                }
            }
        }
        Ok(Self {
            sites: req.sites,
            threshold: req.threshold,
            min_cohort: req.min_cohort,
            input_bits: req.input_bits,
            sum_bits: req.sum_bits,
            sum_mode: req.sum_mode,
            vector_len: req.vector_len,
            graph: req.graph,
        })
    }

    /// Convenience: complete graph, exact sums with B = b + ceil(log2 n), min cohort = t.
    pub fn exact(n: u16, t: u16, b: u8, d: u32) -> Result<Self, ParamError> {
        let sites = SiteCount::new(n)?;
        let input_bits = InputBits::new(b)?;
        let sum_bits = SumBits::new(b.saturating_add(ceil_log2(n)))?;
        Self::new(ParamsRequest {
            sites,
            threshold: Threshold::new(t)?,
            min_cohort: MinCohort::new(t.max(2))?,
            input_bits,
            sum_bits,
            sum_mode: SumMode::Exact,
            vector_len: VectorLen::new(d)?,
            graph: NeighbourGraph::Complete,
        })
    }

    /// Convenience: complete graph, modular sums with B = b, min cohort = t.
    pub fn modular(n: u16, t: u16, b: u8, d: u32) -> Result<Self, ParamError> {
        Self::new(ParamsRequest {
            sites: SiteCount::new(n)?,
            threshold: Threshold::new(t)?,
            min_cohort: MinCohort::new(t.max(2))?,
            input_bits: InputBits::new(b)?,
            sum_bits: SumBits::new(b)?,
            sum_mode: SumMode::Modular,
            vector_len: VectorLen::new(d)?,
            graph: NeighbourGraph::Complete,
        })
    }

    /// The same set with another graph / cohort / etc., re-validated.
    pub fn request(&self) -> ParamsRequest {
        ParamsRequest {
            sites: self.sites,
            threshold: self.threshold,
            min_cohort: self.min_cohort,
            input_bits: self.input_bits,
            sum_bits: self.sum_bits,
            sum_mode: self.sum_mode,
            vector_len: self.vector_len,
            graph: self.graph,
        }
    }

    /// n.
    pub fn sites(&self) -> SiteCount {
        self.sites
    }
    /// n as usize.
    pub fn n(&self) -> usize {
        usize::from(self.sites.get())
    }
    /// t.
    pub fn threshold(&self) -> Threshold {
        self.threshold
    }
    /// t as usize.
    pub fn t(&self) -> usize {
        usize::from(self.threshold.get())
    }
    /// Minimum cohort.
    pub fn min_cohort(&self) -> MinCohort {
        self.min_cohort
    }
    /// b.
    pub fn input_bits(&self) -> InputBits {
        self.input_bits
    }
    /// B.
    pub fn sum_bits(&self) -> SumBits {
        self.sum_bits
    }
    /// Exact or modular.
    pub fn sum_mode(&self) -> SumMode {
        self.sum_mode
    }
    /// d.
    pub fn vector_len(&self) -> VectorLen {
        self.vector_len
    }
    /// d as usize.
    pub fn d(&self) -> usize {
        self.vector_len.len()
    }
    /// The neighbour graph.
    pub fn graph(&self) -> NeighbourGraph {
        self.graph
    }

    /// Share holders of one site's secrets: n (complete) or k+1 (Harary, closed neighbourhood).
    pub fn holders(&self) -> usize {
        match self.graph {
            NeighbourGraph::Complete => self.n(),
            NeighbourGraph::Harary { k } => usize::from(k) + 1,
        }
    }

    /// Whether `a` and `b` are distinct neighbours.
    pub fn are_neighbours(&self, a: SiteId, b: SiteId) -> bool {
        let n = self.sites.get();
        if a == b || a.0 >= n || b.0 >= n {
            return false;
        }
        match self.graph {
            NeighbourGraph::Complete => true,
            NeighbourGraph::Harary { k } => {
                let diff = a.0.abs_diff(b.0);
                diff.min(n - diff) <= k / 2
            }
        }
    }

    /// Whether `id` is a valid index for this round.
    pub fn contains(&self, id: SiteId) -> bool {
        id.0 < self.sites.get()
    }

    /// The open neighbourhood of `id`, ascending.
    pub fn neighbours(&self, id: SiteId) -> Vec<SiteId> {
        (0..self.sites.get())
            .map(SiteId)
            .filter(|&v| self.are_neighbours(id, v))
            .collect()
    }

    /// Length in bytes of a bit-packed vector: ceil(d * B / 8).
    pub fn packed_len(&self) -> usize {
        (self.d() * usize::from(self.sum_bits.get())).div_ceil(8)
    }
}

impl Encode for RoundParams {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.sites.get());
        w.u16(self.threshold.get());
        w.u16(self.min_cohort.get());
        w.u8(self.input_bits.get());
        w.u8(self.sum_bits.get());
        w.u8(match self.sum_mode {
            SumMode::Exact => 0,
            SumMode::Modular => 1,
        });
        w.u32(self.vector_len.get());
        match self.graph {
            NeighbourGraph::Complete => {
                w.u8(0);
                w.u16(0);
            }
            NeighbourGraph::Harary { k } => {
                w.u8(1);
                w.u16(k);
            }
        }
    }
}

impl Decode for RoundParams {
    type Context = ();
    const NAME: &'static str = "RoundParams";

    fn decode(r: &mut Reader<'_>, _: &()) -> Result<Self, DecodeError> {
        let bad = |field| {
            move |_| DecodeError::InvalidValue {
                field,
                reason: "refused parameter",
            }
        };
        let sites = SiteCount::new(r.u16("params.n")?).map_err(bad("params.n"))?;
        let threshold = Threshold::new(r.u16("params.t")?).map_err(bad("params.t"))?;
        let min_cohort =
            MinCohort::new(r.u16("params.min_cohort")?).map_err(bad("params.min_cohort"))?;
        let input_bits = InputBits::new(r.u8("params.b")?).map_err(bad("params.b"))?;
        let sum_bits = SumBits::new(r.u8("params.B")?).map_err(bad("params.B"))?;
        let sum_mode = match r.u8("params.sum_mode")? {
            0 => SumMode::Exact,
            1 => SumMode::Modular,
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "params.sum_mode",
                    reason: "must be 0 or 1",
                });
            }
        };
        let vector_len = VectorLen::new(r.u32("params.d")?).map_err(bad("params.d"))?;
        let tag = r.u8("params.graph")?;
        let k = r.u16("params.k")?;
        let graph = match (tag, k) {
            (0, 0) => NeighbourGraph::Complete,
            (1, k) => NeighbourGraph::Harary { k },
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "params.graph",
                    reason: "unknown graph or nonzero k",
                });
            }
        };
        RoundParams::new(ParamsRequest {
            sites,
            threshold,
            min_cohort,
            input_bits,
            sum_bits,
            sum_mode,
            vector_len,
            graph,
        })
        .map_err(bad("params"))
    }
}

/// The consortium manifest: the ordered list of site identities (Ed25519 public keys).
/// Only these identities count toward t and the cohort (Sybil defence); a site's index
/// here is its [`SiteId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    keys: Vec<VerifyingKey>,
}

impl Manifest {
    /// Validates: 2..=255 identities, pairwise distinct, none weak.
    pub fn new(keys: Vec<VerifyingKey>) -> Result<Self, ParamError> {
        let n = keys.len();
        if !(2..=usize::from(MAX_SITES)).contains(&n) {
            return Err(ParamError::SiteCount {
                n: n as u64,
                min: 2,
                max: MAX_SITES.into(),
            });
        }
        for (i, k) in keys.iter().enumerate() {
            if k.is_weak() {
                return Err(ParamError::BadIdentity { index: i });
            }
            if keys[..i].iter().any(|p| p.as_bytes() == k.as_bytes()) {
                return Err(ParamError::DuplicateIdentity { index: i });
            }
        }
        Ok(Self { keys })
    }

    /// Checks that the manifest fits `params` (same n).
    pub fn check(&self, params: &RoundParams) -> Result<(), ParamError> {
        if self.keys.len() != params.n() {
            return Err(ParamError::ManifestSize {
                n: params.sites().get(),
                got: self.keys.len(),
            });
        }
        Ok(())
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The identity of `id`, if it is in the manifest.
    pub fn key(&self, id: SiteId) -> Option<&VerifyingKey> {
        self.keys.get(id.index())
    }

    /// The index of an identity, if it is in the manifest.
    pub fn index_of(&self, key: &VerifyingKey) -> Option<SiteId> {
        self.keys
            .iter()
            .position(|k| k.as_bytes() == key.as_bytes())
            .map(|i| SiteId(i as u16))
    }

    /// All identities in order.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// SHA-256("amalgam/v1/manifest" || encoding) (spec §4.1).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(crate::labels::MANIFEST);
        h.update(self.to_bytes());
        h.finalize().into()
    }
}

impl Encode for Manifest {
    fn encode(&self, w: &mut Writer) {
        w.count(self.keys.len());
        for k in &self.keys {
            w.bytes(k.as_bytes());
        }
    }
}

impl Decode for Manifest {
    type Context = ();
    const NAME: &'static str = "Manifest";

    fn decode(r: &mut Reader<'_>, _: &()) -> Result<Self, DecodeError> {
        let n = r.count("manifest.count", 2, usize::from(MAX_SITES))?;
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            let b = r.array::<32>("manifest.key")?;
            keys.push(
                VerifyingKey::from_bytes(&b).map_err(|_| DecodeError::InvalidValue {
                    field: "manifest.key",
                    reason: "not a valid Ed25519 point",
                })?,
            );
        }
        Manifest::new(keys).map_err(|_| DecodeError::InvalidValue {
            field: "manifest",
            reason: "duplicate or weak identity",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_log2_values() {
        assert_eq!(ceil_log2(1), 0);
        assert_eq!(ceil_log2(2), 1);
        assert_eq!(ceil_log2(3), 2);
        assert_eq!(ceil_log2(4), 2);
        assert_eq!(ceil_log2(5), 3);
        assert_eq!(ceil_log2(255), 8);
    }

    #[test]
    fn refuses_unsafe_sets_with_reason() {
        assert!(matches!(
            RoundParams::exact(10, 5, 16, 8),
            Err(ParamError::ThresholdTooLow { min: 6, .. })
        ));
        assert!(RoundParams::exact(10, 6, 16, 8).is_ok());
        assert!(matches!(
            RoundParams::exact(10, 11, 16, 8),
            Err(ParamError::ThresholdAboveHolders { .. })
        ));
        assert!(matches!(SumBits::new(65), Err(ParamError::SumBits { .. })));
        assert!(matches!(
            RoundParams::exact(10, 6, 62, 8),
            Err(ParamError::SumBits { .. })
        ));
        let mut req = RoundParams::exact(10, 6, 16, 8).unwrap().request();
        req.sum_bits = SumBits::new(19).unwrap();
        assert!(matches!(
            RoundParams::new(req),
            Err(ParamError::ExactSumMayWrap { needed: 20, .. })
        ));
        req.sum_bits = SumBits::new(15).unwrap();
        assert!(matches!(
            RoundParams::new(req),
            Err(ParamError::SumBitsBelowInputBits { .. })
        ));
        req.sum_bits = SumBits::new(18).unwrap();
        req.sum_mode = SumMode::Modular;
        assert!(matches!(
            RoundParams::new(req),
            Err(ParamError::ModularNeedsEqualBits { .. })
        ));
        let mut req = RoundParams::exact(10, 6, 16, 8).unwrap().request();
        req.min_cohort = MinCohort::new(5).unwrap();
        assert!(matches!(
            RoundParams::new(req),
            Err(ParamError::MinCohortBelowThreshold { .. })
        ));
        req.min_cohort = MinCohort::new(11).unwrap();
        assert!(matches!(
            RoundParams::new(req),
            Err(ParamError::MinCohortAboveSites { .. })
        ));
        assert!(MinCohort::new(1).is_err());
        assert!(VectorLen::new(0).is_err());
        assert!(VectorLen::new(MAX_VECTOR_LEN + 1).is_err());
        let msg = RoundParams::exact(10, 5, 16, 8).unwrap_err().to_string();
        assert!(msg.contains("malicious aggregator"), "{msg}");
    }

    #[test]
    fn harary_rules() {
        let mut req = RoundParams::exact(12, 7, 8, 4).unwrap().request();
        req.graph = NeighbourGraph::Harary { k: 4 };
        // holders = 5, t = 7 > 5.
        assert!(matches!(
            RoundParams::new(req),
            Err(ParamError::ThresholdAboveHolders { .. })
        ));
        req.threshold = Threshold::new(2).unwrap();
        req.min_cohort = MinCohort::new(2).unwrap();
        assert!(matches!(
            RoundParams::new(req),
            Err(ParamError::ThresholdTooLow { min: 3, .. })
        ));
        req.threshold = Threshold::new(3).unwrap();
        req.min_cohort = MinCohort::new(3).unwrap();
        let p = RoundParams::new(req).unwrap();
        assert_eq!(
            p.neighbours(SiteId(0)),
            vec![SiteId(1), SiteId(2), SiteId(10), SiteId(11)]
        );
        req.graph = NeighbourGraph::Harary { k: 3 };
        assert!(matches!(
            RoundParams::new(req),
            Err(ParamError::HararyDegree { .. })
        ));
        req.graph = NeighbourGraph::Harary { k: 12 };
        assert!(matches!(
            RoundParams::new(req),
            Err(ParamError::HararyDegree { .. })
        ));
    }

    #[test]
    fn params_round_trip() {
        let p = RoundParams::modular(7, 4, 20, 1000).unwrap();
        let b = p.to_bytes();
        assert_eq!(RoundParams::from_bytes(&b, &()).unwrap(), p);
        let mut bad = b.clone();
        bad[3] = 1; // t = 1 with n = 7: unsafe
        assert!(RoundParams::from_bytes(&bad, &()).is_err());
    }
}
