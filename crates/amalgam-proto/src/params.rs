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

/// Colluding sites tolerated, c >= 1: sites that share everything with a malicious
/// aggregator. A set that tolerates none is refused (spec §7 P4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Colluders(u16);

impl Colluders {
    /// Validates c >= 1.
    pub fn new(c: u16) -> Result<Self, ParamError> {
        if c == 0 {
            return Err(ParamError::NoColluderTolerated);
        }
        Ok(Self(c))
    }
    /// c.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// Dropouts tolerated, f >= 0: the round must still finish when f sites stop answering.
/// A malicious aggregator can fake up to f dropouts to leave honest sites out of the sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dropouts(u16);

impl Dropouts {
    /// Any f; checked against t, n and Q by [`RoundParams`].
    pub fn new(f: u16) -> Self {
        Self(f)
    }
    /// f.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// What the aggregator is trusted to do (fixed by the consortium manifest, bound into the
/// round context; never a driver flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregatorTrust {
    /// Honest but curious: follows the protocol, reads everything it sees.
    Curious,
    /// May deviate arbitrarily (equivocate, trim routing, fake dropouts) with c colluding sites.
    Malicious,
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
    /// c: colluding sites tolerated.
    pub colluders: Colluders,
    /// f: dropouts tolerated.
    pub dropouts: Dropouts,
    /// Curious or malicious aggregator (Harary mode needs curious).
    pub trust: AggregatorTrust,
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
    colluders: Colluders,
    dropouts: Dropouts,
    trust: AggregatorTrust,
}

/// ceil(log2 n) for n >= 1.
pub fn ceil_log2(n: u16) -> u8 {
    if n <= 1 {
        0
    } else {
        (16 - (n - 1).leading_zeros()) as u8
    }
}

/// ⌊(H + c)/2⌋ + 1: the smallest t with 2t > H + c.
pub fn min_safe_threshold(holders: u16, colluders: u16) -> u16 {
    ((u32::from(holders) + u32::from(colluders)) / 2 + 1) as u16
}

/// The default threshold for H holders and c colluders: Bonawitz's t > 2H/3, raised to the
/// safety bound when c needs more, ⌈max(⌊2H/3⌋ + 1, ⌊(H + c)/2⌋ + 1)⌉.
pub fn default_threshold(holders: u16, colluders: u16) -> u16 {
    (holders * 2 / 3 + 1).max(min_safe_threshold(holders, colluders))
}

/// Q = ⌊(u1 + c)/2⌋ + 1.
fn quorum_for(u1: usize, colluders: u16) -> usize {
    (u1 + usize::from(colluders)) / 2 + 1
}

/// The most colluders and dropouts a complete-graph threshold t (and min cohort m = t)
/// tolerates among n sites: c = min(2t − n − 1, m − 2) (from 2t > n + c and m >= c + 2),
/// f = n − t (from t <= n − f; then Q <= n − f holds too).
fn max_tolerance(n: u16, t: u16) -> Result<(Colluders, Dropouts), ParamError> {
    let by_threshold = (2 * i32::from(t) - i32::from(n) - 1).max(0) as u16;
    if by_threshold == 0 && t <= n {
        return Err(ParamError::ThresholdTooLow {
            t,
            holders: n,
            colluders: 1,
            min: min_safe_threshold(n, 1),
        });
    }
    let m = t.max(2);
    let c = by_threshold.min(m - 2);
    if c == 0 {
        return Err(ParamError::MinCohortBelowColluders {
            m,
            colluders: 1,
            needed: 3,
        });
    }
    Ok((Colluders::new(c)?, Dropouts::new(n.saturating_sub(t))))
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
        let c = req.colluders.get();
        let f = req.dropouts.get();
        // Harary mode only against a curious aggregator, and c below the ring's connectivity.
        if let NeighbourGraph::Harary { k } = req.graph {
            if req.trust == AggregatorTrust::Malicious {
                return Err(ParamError::HararyNeedsCuriousAggregator { k });
            }
            if c > k - 1 {
                return Err(ParamError::HararyTooManyColluders {
                    k,
                    colluders: c,
                    max: k - 1,
                });
            }
        }
        // P4 safety: 2t > H + c.
        let min_t = min_safe_threshold(holders, c);
        if t < min_t {
            return Err(ParamError::ThresholdTooLow {
                t,
                holders,
                colluders: c,
                min: min_t,
            });
        }
        // P4 liveness: t <= H - f and Q <= n - f (together with safety: c + 2f < H).
        if u32::from(t) + u32::from(f) > u32::from(holders) {
            return Err(ParamError::ThresholdNotLive {
                t,
                holders,
                dropouts: f,
            });
        }
        let quorum = quorum_for(usize::from(n), c) as u16;
        if u32::from(quorum) + u32::from(f) > u32::from(n) {
            return Err(ParamError::QuorumNotLive {
                quorum,
                n,
                colluders: c,
                dropouts: f,
            });
        }
        // P4: cohort.
        if m < t {
            return Err(ParamError::MinCohortBelowThreshold { m, t });
        }
        if m > n {
            return Err(ParamError::MinCohortAboveSites { m, n });
        }
        if u32::from(m) < u32::from(c) + 2 {
            return Err(ParamError::MinCohortBelowColluders {
                m,
                colluders: c,
                needed: c.saturating_add(2),
            });
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
            colluders: req.colluders,
            dropouts: req.dropouts,
            trust: req.trust,
        })
    }

    /// Convenience: complete graph, malicious aggregator, exact sums with B = b + ceil(log2 n),
    /// min cohort = t, and the most colluders and dropouts that t allows:
    /// c = 2t − n − 1 (safety), f = n − t (liveness). Refused when that c is 0.
    pub fn exact(n: u16, t: u16, b: u8, d: u32) -> Result<Self, ParamError> {
        let sites = SiteCount::new(n)?;
        let input_bits = InputBits::new(b)?;
        let sum_bits = SumBits::new(b.saturating_add(ceil_log2(n)))?;
        Self::complete_with_max_tolerance(n, t, input_bits, sum_bits, SumMode::Exact, d, sites)
    }

    /// Convenience: as [`RoundParams::exact`] but modular sums with B = b.
    pub fn modular(n: u16, t: u16, b: u8, d: u32) -> Result<Self, ParamError> {
        let sites = SiteCount::new(n)?;
        let input_bits = InputBits::new(b)?;
        let sum_bits = SumBits::new(b)?;
        Self::complete_with_max_tolerance(n, t, input_bits, sum_bits, SumMode::Modular, d, sites)
    }

    /// Convenience: SecAgg+ Harary{k} graph under a **curious** aggregator (the only model it is
    /// accepted in), threshold t, min cohort m, c colluders, f dropouts, exact sums.
    #[allow(clippy::too_many_arguments)]
    pub fn harary(
        n: u16,
        k: u16,
        t: u16,
        m: u16,
        c: u16,
        f: u16,
        b: u8,
        d: u32,
    ) -> Result<Self, ParamError> {
        Self::new(ParamsRequest {
            sites: SiteCount::new(n)?,
            threshold: Threshold::new(t)?,
            min_cohort: MinCohort::new(m)?,
            input_bits: InputBits::new(b)?,
            sum_bits: SumBits::new(b.saturating_add(ceil_log2(n)))?,
            sum_mode: SumMode::Exact,
            vector_len: VectorLen::new(d)?,
            graph: NeighbourGraph::Harary { k },
            colluders: Colluders::new(c)?,
            dropouts: Dropouts::new(f),
            trust: AggregatorTrust::Curious,
        })
    }

    fn complete_with_max_tolerance(
        n: u16,
        t: u16,
        input_bits: InputBits,
        sum_bits: SumBits,
        sum_mode: SumMode,
        d: u32,
        sites: SiteCount,
    ) -> Result<Self, ParamError> {
        let threshold = Threshold::new(t)?;
        let (colluders, dropouts) = max_tolerance(n, t)?;
        Self::new(ParamsRequest {
            sites,
            threshold,
            min_cohort: MinCohort::new(t.max(2))?,
            input_bits,
            sum_bits,
            sum_mode,
            vector_len: VectorLen::new(d)?,
            graph: NeighbourGraph::Complete,
            colluders,
            dropouts,
            trust: AggregatorTrust::Malicious,
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
            colluders: self.colluders,
            dropouts: self.dropouts,
            trust: self.trust,
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

    /// c: colluding sites tolerated.
    pub fn colluders(&self) -> Colluders {
        self.colluders
    }
    /// c as usize.
    pub fn c(&self) -> usize {
        usize::from(self.colluders.get())
    }
    /// f: dropouts tolerated.
    pub fn dropouts(&self) -> Dropouts {
        self.dropouts
    }
    /// The aggregator trust model.
    pub fn trust(&self) -> AggregatorTrust {
        self.trust
    }
    /// Signature quorum Q = ⌊(|U1| + c)/2⌋ + 1 (spec §5.1 S4): two sets of Q signers drawn
    /// from U1 share more than c sites, hence an honest one, who signs one statement only.
    pub fn quorum(&self, u1: usize) -> usize {
        quorum_for(u1, self.colluders.get())
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
        w.u16(self.colluders.get());
        w.u16(self.dropouts.get());
        w.u8(match self.trust {
            AggregatorTrust::Curious => 0,
            AggregatorTrust::Malicious => 1,
        });
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
        let colluders = Colluders::new(r.u16("params.c")?).map_err(bad("params.c"))?;
        let dropouts = Dropouts::new(r.u16("params.f")?);
        let trust = match r.u8("params.trust")? {
            0 => AggregatorTrust::Curious,
            1 => AggregatorTrust::Malicious,
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "params.trust",
                    reason: "must be 0 (curious) or 1 (malicious)",
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
            colluders,
            dropouts,
            trust,
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
        let mut keys = Vec::with_capacity(r.capacity(n, 32));
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
        assert!(matches!(
            RoundParams::exact(10, 6, 16, 8),
            Ok(p) if p.c() == 1
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
        // The message no longer presents t = H/2 + 1 as safe in general.
        assert!(msg.contains("2t > H + c"), "{msg}");
    }

    #[test]
    fn harary_rules() {
        // Refused against a malicious aggregator whatever the threshold.
        let mut req = RoundParams::harary(12, 4, 4, 6, 1, 1, 8, 4)
            .unwrap()
            .request();
        req.trust = AggregatorTrust::Malicious;
        assert_eq!(
            RoundParams::new(req),
            Err(ParamError::HararyNeedsCuriousAggregator { k: 4 })
        );
        let msg = RoundParams::new(req).unwrap_err().to_string();
        assert!(msg.contains("complete graph"), "{msg}");
        req.trust = AggregatorTrust::Curious;
        // holders = 5, t = 7 > 5.
        req.threshold = Threshold::new(7).unwrap();
        req.min_cohort = MinCohort::new(7).unwrap();
        assert!(matches!(
            RoundParams::new(req),
            Err(ParamError::ThresholdAboveHolders { .. })
        ));
        // t = 3 = k/2 + 1 (the break of the first review) tolerates no colluder: refused.
        req.threshold = Threshold::new(3).unwrap();
        assert!(matches!(
            RoundParams::new(req),
            Err(ParamError::ThresholdTooLow {
                t: 3,
                holders: 5,
                colluders: 1,
                min: 4
            })
        ));
        req.threshold = Threshold::new(4).unwrap();
        let p = RoundParams::new(req).unwrap();
        assert_eq!(
            p.neighbours(SiteId(0)),
            vec![SiteId(1), SiteId(2), SiteId(10), SiteId(11)]
        );
        // c must stay below k (the ring's connectivity).
        req.graph = NeighbourGraph::Harary { k: 2 };
        req.threshold = Threshold::new(3).unwrap();
        req.colluders = Colluders::new(2).unwrap();
        req.dropouts = Dropouts::new(0);
        assert_eq!(
            RoundParams::new(req),
            Err(ParamError::HararyTooManyColluders {
                k: 2,
                colluders: 2,
                max: 1
            })
        );
        req.colluders = Colluders::new(1).unwrap();
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
    fn colluder_and_dropout_rules_name_the_rule_and_numbers() {
        let base = RoundParams::exact(10, 7, 16, 8).unwrap();
        // exact() derives the most t allows: c = 2t - n - 1 = 3, f = n - t = 3.
        assert_eq!((base.c(), base.dropouts().get()), (3, 3));
        assert_eq!(base.quorum(10), 7);
        assert_eq!(base.quorum(8), 6);
        let mut req = base.request();
        // Safety: 2t > H + c.
        req.colluders = Colluders::new(4).unwrap();
        let e = RoundParams::new(req).unwrap_err();
        assert_eq!(
            e,
            ParamError::ThresholdTooLow {
                t: 7,
                holders: 10,
                colluders: 4,
                min: 8
            }
        );
        assert!(e.to_string().contains("2t > H + c = 10 + 4"), "{e}");
        // Liveness: t <= H - f.
        req.colluders = Colluders::new(1).unwrap();
        req.dropouts = Dropouts::new(4);
        assert_eq!(
            RoundParams::new(req),
            Err(ParamError::ThresholdNotLive {
                t: 7,
                holders: 10,
                dropouts: 4
            })
        );
        // The quorum rule Q <= n - f follows from t <= H - f (H <= n, and Q grows by at most
        // half of what n exceeds H by): check it never fires alone on small sets.
        for n in 4..=20u16 {
            for k in (2..=n - 2).step_by(2).chain([0]) {
                for t in 1..=n {
                    for c in 1..n {
                        for f in 0..n {
                            let mut r = base.request();
                            r.sites = SiteCount::new(n).unwrap();
                            r.threshold = Threshold::new(t).unwrap();
                            r.min_cohort = MinCohort::new(t.max(2)).unwrap();
                            r.sum_bits = SumBits::new(24).unwrap();
                            r.colluders = Colluders::new(c).unwrap();
                            r.dropouts = Dropouts::new(f);
                            if k > 0 {
                                r.graph = NeighbourGraph::Harary { k };
                                r.trust = AggregatorTrust::Curious;
                            }
                            let res = RoundParams::new(r);
                            assert!(
                                !matches!(res, Err(ParamError::QuorumNotLive { .. })),
                                "{r:?}"
                            );
                            if res.is_ok() {
                                // c + 2f < H is implied.
                                let h = if k > 0 { k + 1 } else { n };
                                assert!(c + 2 * f < h, "{r:?}");
                            }
                        }
                    }
                }
            }
        }
        // No colluder tolerated is refused outright, and exact() says which t would do.
        assert_eq!(Colluders::new(0), Err(ParamError::NoColluderTolerated));
        assert_eq!(
            RoundParams::exact(5, 3, 16, 8),
            Err(ParamError::ThresholdTooLow {
                t: 3,
                holders: 5,
                colluders: 1,
                min: 4
            })
        );
        assert_eq!(super::default_threshold(10, 1), 7);
        assert_eq!(super::default_threshold(10, 5), 8);
    }

    #[test]
    fn params_round_trip() {
        let p = RoundParams::modular(7, 5, 20, 1000).unwrap();
        let b = p.to_bytes();
        assert_eq!(b.len(), 21);
        assert_eq!(RoundParams::from_bytes(&b, &()).unwrap(), p);
        let mut bad = b.clone();
        bad[3] = 1; // t = 1 with n = 7: unsafe
        assert!(RoundParams::from_bytes(&bad, &()).is_err());
        let mut bad = b.clone();
        bad[16..18].copy_from_slice(&0u16.to_be_bytes()); // c = 0
        assert!(RoundParams::from_bytes(&bad, &()).is_err());
        let mut bad = b.clone();
        bad[20] = 2; // unknown trust model
        assert!(RoundParams::from_bytes(&bad, &()).is_err());
        let h = RoundParams::harary(12, 4, 4, 6, 1, 1, 8, 4).unwrap();
        let mut bad = h.to_bytes();
        assert_eq!(RoundParams::from_bytes(&bad, &()).unwrap(), h);
        bad[20] = 1; // Harary claimed under a malicious aggregator
        assert!(RoundParams::from_bytes(&bad, &()).is_err());
    }
}
