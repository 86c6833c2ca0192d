//! Error types (spec `secagg.md` §9 "Error codes").
//!
//! Following rustls, every protocol error says who is at fault: a peer that misbehaved
//! ([`Error::PeerMisbehaved`], naming the sender), a message that does not decode
//! ([`Error::Decode`], naming the sender and the field), a round that cannot finish
//! ([`Error::NotEnoughSites`], with needed/got), or local misuse ([`Error::Misuse`]).
//! Unless the error is [`Error::Aborted`] (or a site's [`Misbehaviour`] that the spec marks as
//! aborting), a rejected message leaves the state machine exactly as it was.

use core::fmt;

use crate::params::SiteId;
use crate::phase::Phase;

/// The party a message came from (or claims to come from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sender {
    /// A site, by its index in the consortium manifest.
    Site(SiteId),
    /// A site index that is not in the manifest (Sybil or garbage).
    UnknownSite(u16),
    /// The aggregator (messages sent to sites).
    Aggregator,
    /// The caller itself (snapshots, local inputs).
    Local,
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sender::Site(id) => write!(f, "{id}"),
            Sender::UnknownSite(i) => write!(f, "unknown site index {i}"),
            Sender::Aggregator => f.write_str("aggregator"),
            Sender::Local => f.write_str("local caller"),
        }
    }
}

/// Decoding failure of untrusted bytes: which field, which bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside `field`.
    #[error("truncated in field `{field}`: needed {needed} bytes, {remaining} left")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// Bytes left over after a complete value.
    #[error("{count} trailing bytes after `{after}`")]
    TrailingBytes {
        /// The value that was complete.
        after: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// A declared length or count outside its bound.
    #[error("field `{field}` declares {declared}, allowed {min}..={max}")]
    LengthOutOfBounds {
        /// Field holding the length or count.
        field: &'static str,
        /// The declared value.
        declared: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// The two magic bytes are wrong.
    #[error("bad magic {found:02x?}, expected \"AG\"")]
    BadMagic {
        /// What was found.
        found: [u8; 2],
    },
    /// Unsupported version byte.
    #[error("unsupported version {found}, this implementation speaks {supported}")]
    UnsupportedVersion {
        /// What was found.
        found: u8,
        /// What is supported.
        supported: u8,
    },
    /// Message type byte not known at all.
    #[error("unknown message type 0x{found:02x}")]
    UnknownMessageType {
        /// What was found.
        found: u8,
    },
    /// A known message type, but not the one expected here.
    #[error("message type 0x{found:02x} where 0x{expected:02x} was expected")]
    UnexpectedMessageType {
        /// The expected type.
        expected: u8,
        /// The type found.
        found: u8,
    },
    /// A field whose value is not allowed (non-canonical, out of range, bad key...).
    #[error("invalid value in field `{field}`: {reason}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// Why it is invalid.
        reason: &'static str,
    },
}

/// A parameter set (or one parameter) refused, with the reason (spec §7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// n outside 2..=255 (GF(256) Shamir: x-coordinates 1..=255).
    #[error("site count {n} outside {min}..={max} (Shamir over GF(256) has 255 nonzero points)")]
    SiteCount {
        /// Requested n.
        n: u64,
        /// Minimum.
        min: u64,
        /// Maximum.
        max: u64,
    },
    /// t = 0.
    #[error("threshold must be at least 1")]
    ThresholdZero,
    /// t above the number of share holders.
    #[error(
        "threshold {t} exceeds the {holders} share holders of a neighbourhood: nothing could ever be recovered"
    )]
    ThresholdAboveHolders {
        /// Requested t.
        t: u16,
        /// Share holders per secret (n for the complete graph, k+1 for Harary).
        holders: u16,
    },
    /// Safety rule 2t > H + c violated (spec §7 P4): t is too low for the colluders tolerated.
    #[error(
        "threshold {t} is unsafe with {holders} share holders and {colluders} tolerated colluders: safety needs 2t > H + c = {holders} + {colluders}, i.e. t >= {min}; otherwise a malicious aggregator with the colluders collects both shares of one honest site from two groups (Bonawitz et al. 2017 §6.2)"
    )]
    ThresholdTooLow {
        /// Requested t.
        t: u16,
        /// Share holders H (n, or k+1 for Harary).
        holders: u16,
        /// Tolerated colluding sites c.
        colluders: u16,
        /// Smallest safe t, ⌊(H + c)/2⌋ + 1.
        min: u16,
    },
    /// c = 0: the parameter set would tolerate no colluding site.
    #[error(
        "the parameter set tolerates no colluding site (c = 0); every set must tolerate at least one (c >= 1), with t >= ⌊(H + c)/2⌋ + 1"
    )]
    NoColluderTolerated,
    /// Liveness rule t <= H − f violated: f dropouts in one holder set make a secret unrecoverable.
    #[error(
        "threshold {t} is not live with {holders} share holders and {dropouts} tolerated dropouts: liveness needs t <= H - f = {holders} - {dropouts}"
    )]
    ThresholdNotLive {
        /// Requested t.
        t: u16,
        /// Share holders H.
        holders: u16,
        /// Tolerated dropouts f.
        dropouts: u16,
    },
    /// Liveness rule Q <= n − f violated for the signature quorum Q = ⌊(n + c)/2⌋ + 1.
    #[error(
        "signature quorum Q = ⌊(n + c)/2⌋ + 1 = {quorum} (n = {n}, c = {colluders}) is not live with {dropouts} tolerated dropouts: liveness needs Q <= n - f = {n} - {dropouts}"
    )]
    QuorumNotLive {
        /// Q computed with |U1| = n.
        quorum: u16,
        /// n.
        n: u16,
        /// c.
        colluders: u16,
        /// f.
        dropouts: u16,
    },
    /// Harary mode requested while the aggregator is not trusted to follow the protocol.
    #[error(
        "Harary (SecAgg+) mode with k = {k} is refused against a malicious aggregator: it can show different survivor views or trim routing and unmask partial sums; use the complete graph (about one extra second of ChaCha20 per site per round at d = 2^20, n <= 255), or the curious-aggregator model"
    )]
    HararyNeedsCuriousAggregator {
        /// k.
        k: u16,
    },
    /// Harary mode: more colluders than the ring's connectivity can absorb.
    #[error(
        "Harary degree k = {k} tolerates at most k - 1 = {max} colluders (the survivor graph's vertex connectivity is at most k), got c = {colluders}"
    )]
    HararyTooManyColluders {
        /// k.
        k: u16,
        /// c.
        colluders: u16,
        /// k − 1.
        max: u16,
    },
    /// Minimum cohort below 2.
    #[error("minimum cohort {m} < 2: a sum over one site is that site's input")]
    MinCohortTooSmall {
        /// Requested minimum cohort.
        m: u16,
    },
    /// Minimum cohort too small for the colluders: a cohort of c + 1 holds one honest site,
    /// whose input the colluders read off the sum.
    #[error(
        "minimum cohort {m} with {colluders} tolerated colluders: every cohort needs at least two honest sites, m >= c + 2 = {needed}"
    )]
    MinCohortBelowColluders {
        /// Minimum cohort.
        m: u16,
        /// c.
        colluders: u16,
        /// c + 2.
        needed: u16,
    },
    /// Minimum cohort below t.
    #[error("minimum cohort {m} is below the threshold {t}")]
    MinCohortBelowThreshold {
        /// Minimum cohort.
        m: u16,
        /// Threshold.
        t: u16,
    },
    /// Minimum cohort above n.
    #[error("minimum cohort {m} exceeds the site count {n}")]
    MinCohortAboveSites {
        /// Minimum cohort.
        m: u16,
        /// Site count.
        n: u16,
    },
    /// b outside 1..=64.
    #[error("input bits {b} outside 1..=64")]
    InputBits {
        /// Requested b.
        b: u8,
    },
    /// B outside 1..=64.
    #[error("sum bits {bits} outside 1..=64 (sums are computed in u64 words)")]
    SumBits {
        /// Requested B.
        bits: u8,
    },
    /// B < b.
    #[error("sum bits {sum_bits} below input bits {input_bits}: inputs would not fit")]
    SumBitsBelowInputBits {
        /// B.
        sum_bits: u8,
        /// b.
        input_bits: u8,
    },
    /// Exact sums asked but the sum of n inputs could wrap.
    #[error(
        "exact sums need B >= b + ceil(log2 n) = {needed}, got B = {sum_bits}: the sum of {n} inputs of {input_bits} bits could wrap"
    )]
    ExactSumMayWrap {
        /// b.
        input_bits: u8,
        /// n.
        n: u16,
        /// B.
        sum_bits: u8,
        /// b + ceil(log2 n).
        needed: u8,
    },
    /// Modular sums need B = b.
    #[error(
        "modular sums need B = b (the encoding is modular by design), got B = {sum_bits}, b = {input_bits}"
    )]
    ModularNeedsEqualBits {
        /// B.
        sum_bits: u8,
        /// b.
        input_bits: u8,
    },
    /// d outside 1..=MAX_VECTOR_LEN.
    #[error("vector length {d} outside 1..={max}")]
    VectorLen {
        /// Requested d.
        d: u64,
        /// Maximum.
        max: u64,
    },
    /// Harary degree not usable.
    #[error("Harary degree k = {k} with n = {n}: {reason}")]
    HararyDegree {
        /// k.
        k: u16,
        /// n.
        n: u16,
        /// Why.
        reason: &'static str,
    },
    /// Manifest size differs from n.
    #[error("manifest lists {got} identities, parameters say n = {n}")]
    ManifestSize {
        /// n.
        n: u16,
        /// Manifest length.
        got: usize,
    },
    /// The same identity twice in the manifest.
    #[error("manifest identity {index} duplicates an earlier one")]
    DuplicateIdentity {
        /// Manifest index.
        index: usize,
    },
    /// A weak / invalid identity key in the manifest.
    #[error("manifest identity {index} is not a valid strong Ed25519 key")]
    BadIdentity {
        /// Manifest index.
        index: usize,
    },
}

/// How a peer misbehaved. The sender is carried by [`Error::PeerMisbehaved`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misbehaviour {
    /// Message for another round number.
    #[error("message for round {got}, this is round {expected}")]
    WrongRound {
        /// This round.
        expected: u64,
        /// Round in the message.
        got: u64,
    },
    /// Message not acceptable in the current phase.
    #[error("{message} message in phase {phase}")]
    WrongPhase {
        /// Current phase.
        phase: Phase,
        /// What arrived.
        message: &'static str,
    },
    /// A second message of this kind from the same sender.
    #[error("duplicate message")]
    Duplicate,
    /// The sender is not in the manifest.
    #[error("identity not in the consortium manifest")]
    UnknownIdentity,
    /// The sender is in the manifest but not in this phase's participant set.
    #[error("not a participant of this phase")]
    NotParticipant,
    /// Signature does not verify (missing, forged, or over other bytes).
    #[error("signature does not verify")]
    BadSignature,
    /// A field contradicts the protocol state (wrong set, wrong recipient, wrong size...).
    #[error("{0}")]
    Invalid(&'static str),
    /// An encrypted share addressed to / coming from a site that is not a neighbour.
    #[error("share concerns site {0}, which is not a neighbour")]
    NotNeighbour(SiteId),
    /// Encrypted share fails authentication (tampered in transit, or bad sender).
    #[error("encrypted share does not authenticate")]
    ShareAuthentication,
    /// Two round-0 advertisements carry the same public key.
    #[error("public key reused")]
    KeyReuse,
    /// Survivor set inconsistent with what this site signed (equivocation): aborts.
    #[error("inconsistent survivor set: signature of {0} is not over the set this site signed")]
    InconsistentSurvivors(SiteId),
    /// Aggregator asked for both the self-mask share and the key share of one site: aborts.
    #[error("asked for both shares of {0}")]
    BothSharesRequested(SiteId),
    /// A secret recovered from revealed shares does not match its public key / commitment.
    #[error("recovered secret of {0} does not match its advertised key or commitment")]
    RecoveredSecretMismatch(SiteId),
    /// A download for a phase this site already answered, different from the one it answered
    /// (the identical download gets the identical upload again).
    #[error("a different {message} for a phase this site already answered")]
    ConflictingRedelivery {
        /// The message that arrived.
        message: &'static str,
    },
    /// An input element outside [0, 2^b).
    #[error("element {index} outside [0, 2^{bits})")]
    InputOutOfRange {
        /// Element index.
        index: usize,
        /// b.
        bits: u8,
    },
}

/// Misuse of the API by the local caller (a bug in the driver, not in a peer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misuse {
    /// A method called in a phase where it is not allowed.
    #[error("`{call}` is not allowed in phase {phase}")]
    WrongPhase {
        /// The method.
        call: &'static str,
        /// The phase.
        phase: Phase,
    },
    /// Input of the wrong length.
    #[error("input has {got} elements, the round expects {expected}")]
    InputLength {
        /// d.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// Input element outside [0, 2^b).
    #[error("input element {index} is outside [0, 2^{bits})")]
    InputOutOfRange {
        /// Element index.
        index: usize,
        /// b.
        bits: u8,
    },
    /// The identity key does not match the manifest entry of this site.
    #[error("identity key does not match manifest entry {0}")]
    IdentityMismatch(SiteId),
    /// A round id at or below the site's high-water mark ([`crate::site::RoundLog`]).
    #[error(
        "round {round} is at or below this site's high-water mark {high_water}: round ids are never reused"
    )]
    RoundReused {
        /// The round asked for.
        round: u64,
        /// The highest round id the site has used.
        high_water: u64,
    },
    /// A snapshot of an earlier state of the round the [`crate::site::RoundLog`] records a
    /// later state of: restoring it would re-run a phase.
    #[error(
        "snapshot of round {round} at step {step} is older than the recorded step {recorded}: only the latest state may be restored"
    )]
    StaleSnapshot {
        /// The snapshot's round.
        round: u64,
        /// The snapshot's state step (its state tag, spec §8).
        step: u8,
        /// The latest step recorded for that round.
        recorded: u8,
    },
    /// An upload released against a snapshot of another state (see [`crate::site::Outgoing`]).
    #[error(
        "upload released without a snapshot of the state that produced it: persist that state first"
    )]
    NotPersisted,
    /// A state (restored or built) breaks one of its own invariants.
    #[error("inconsistent state: {0}")]
    InconsistentState(&'static str),
    /// Something else (described).
    #[error("{0}")]
    Other(&'static str),
}

/// Every error of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Refused parameters (incompatible or unsafe configuration).
    #[error("invalid parameters: {0}")]
    Params(#[from] ParamError),
    /// Bytes from `sender` that do not decode.
    #[error("malformed message from {sender}: {source}")]
    Decode {
        /// Who sent the bytes.
        sender: Sender,
        /// What is wrong.
        #[source]
        source: DecodeError,
    },
    /// `sender` violated the protocol.
    #[error("{sender} misbehaved: {kind}")]
    PeerMisbehaved {
        /// Who is at fault (as claimed by the message, after authentication where possible).
        sender: Sender,
        /// What they did.
        kind: Misbehaviour,
    },
    /// Too few sites to continue; the round cannot finish (never a wrong sum).
    #[error("not enough sites in phase {phase}: needed {needed}, got {got}")]
    NotEnoughSites {
        /// Phase that could not be closed.
        phase: Phase,
        /// How many were needed.
        needed: usize,
        /// How many there were.
        got: usize,
    },
    /// No t of the revealed shares of `owner` meet its b commitment or advertised key: either
    /// the owner dealt bad shares or more than `revealed` − t revealers sent wrong ones (the
    /// shares cannot tell which). Nothing changed; more responses may still recover it.
    #[error(
        "no t of the {revealed} revealed shares of {owner} agree with its commitment or advertised key"
    )]
    Unrecoverable {
        /// The site whose secret could not be recovered.
        owner: SiteId,
        /// How many shares of it were revealed.
        revealed: usize,
    },
    /// A snapshot was refused because replaying one of its stored uploads (or closing a stored
    /// phase) failed with the wrapped error: the snapshot was tampered with or corrupted.
    #[error("snapshot refused: {0}")]
    SnapshotRefused(Box<Error>),
    /// The site abandoned this round: the deadline of the phase it was waiting in passed
    /// (while running or before a restore). It accepts nothing more for the round.
    #[error("round {round} was abandoned: the deadline of its phase passed")]
    RoundAbandoned {
        /// The round.
        round: u64,
    },
    /// The survivors' graph could be cut by the tolerated colluders (vertex connectivity
    /// below c + 1): revealing would let the aggregator unmask the sum of one side (spec §6.1).
    #[error(
        "survivor graph has vertex connectivity {connectivity}, needs at least c + 1 = {needed}: {needed_minus_one} colluders could cut it and expose a partial sum"
    )]
    CohortDisconnected {
        /// Vertex connectivity of the survivors' graph.
        connectivity: usize,
        /// c + 1.
        needed: usize,
        /// c.
        needed_minus_one: usize,
    },
    /// The state machine aborted earlier and accepts nothing more.
    #[error("the round was aborted: {0}")]
    Aborted(Box<Error>),
    /// Local misuse of the API.
    #[error("local misuse: {0}")]
    Misuse(#[from] Misuse),
}

impl Error {
    /// Shorthand for [`Error::PeerMisbehaved`].
    pub fn peer(sender: Sender, kind: Misbehaviour) -> Self {
        Error::PeerMisbehaved { sender, kind }
    }

    /// Shorthand for [`Error::Decode`].
    pub fn decode(sender: Sender, source: DecodeError) -> Self {
        Error::Decode { sender, source }
    }

    /// The party at fault, if a peer is.
    pub fn sender(&self) -> Option<Sender> {
        match self {
            Error::Decode { sender, .. } | Error::PeerMisbehaved { sender, .. } => Some(*sender),
            Error::Aborted(inner) => inner.sender(),
            _ => None,
        }
    }

    /// A stable short code for this error (spec §9), for logs and test vectors.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Params(_) => "params",
            Error::Decode { source, .. } => match source {
                DecodeError::Truncated { .. } => "decode.truncated",
                DecodeError::TrailingBytes { .. } => "decode.trailing_bytes",
                DecodeError::LengthOutOfBounds { .. } => "decode.length_out_of_bounds",
                DecodeError::BadMagic { .. } => "decode.bad_magic",
                DecodeError::UnsupportedVersion { .. } => "decode.unsupported_version",
                DecodeError::UnknownMessageType { .. } => "decode.unknown_message_type",
                DecodeError::UnexpectedMessageType { .. } => "decode.unexpected_message_type",
                DecodeError::InvalidValue { .. } => "decode.invalid_value",
            },
            Error::PeerMisbehaved { kind, .. } => match kind {
                Misbehaviour::WrongRound { .. } => "peer.wrong_round",
                Misbehaviour::WrongPhase { .. } => "peer.wrong_phase",
                Misbehaviour::Duplicate => "peer.duplicate",
                Misbehaviour::UnknownIdentity => "peer.unknown_identity",
                Misbehaviour::NotParticipant => "peer.not_participant",
                Misbehaviour::BadSignature => "peer.bad_signature",
                Misbehaviour::Invalid(_) => "peer.invalid",
                Misbehaviour::NotNeighbour(_) => "peer.not_neighbour",
                Misbehaviour::ShareAuthentication => "peer.share_authentication",
                Misbehaviour::KeyReuse => "peer.key_reuse",
                Misbehaviour::InconsistentSurvivors(_) => "peer.inconsistent_survivors",
                Misbehaviour::BothSharesRequested(_) => "peer.both_shares_requested",
                Misbehaviour::RecoveredSecretMismatch(_) => "peer.recovered_secret_mismatch",
                Misbehaviour::InputOutOfRange { .. } => "peer.input_out_of_range",
                Misbehaviour::ConflictingRedelivery { .. } => "peer.conflicting_redelivery",
            },
            Error::NotEnoughSites { .. } => "not_enough_sites",
            Error::Unrecoverable { .. } => "unrecoverable",
            Error::SnapshotRefused(_) => "snapshot_refused",
            Error::RoundAbandoned { .. } => "round_abandoned",
            Error::CohortDisconnected { .. } => "cohort_disconnected",
            Error::Aborted(_) => "aborted",
            Error::Misuse(_) => "misuse",
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = core::result::Result<T, E>;
