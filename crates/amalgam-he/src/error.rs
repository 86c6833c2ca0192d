//! Errors of the HE fallback. Each says what went wrong and [`HeError::fault`] says who is at
//! fault, as rustls does. What goes back to a peer is only [`HeError::code`]: a fixed number per
//! variant, never a value that depends on a key, a seed, the noise or a plaintext.

use amalgam_proto::DecodeError;
use thiserror::Error;

/// Who caused an error: the remote party, an incompatibility between honest parties, or the
/// local caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A peer sent something malformed, unauthenticated or out of policy.
    Peer,
    /// Both sides are well-formed but disagree (parameters, committee, round).
    Incompatible,
    /// The local caller misused the API.
    LocalMisuse,
}

/// Every failure of the HE fallback. Fields carry only public numbers (sizes, ids, indices of
/// public structures); a decode failure of the aggregate names no position and no residual.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeError {
    /// A parameter outside its allowed range.
    #[error("parameter `{name}` = {value} is outside {min}..={max}")]
    ParamOutOfRange {
        /// The parameter.
        name: &'static str,
        /// The requested value.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// The parameters could fail to decode an honest sum: the noise of `max_sites` bodies reaches Δ/2.
    #[error(
        "parameters refused: P = {plaintext_bits} bits leaves no room for the noise of {max_sites} bodies"
    )]
    NoiseBudgetTooSmall {
        /// Plaintext width P.
        plaintext_bits: u32,
        /// Largest cohort.
        max_sites: u32,
    },
    /// The committee parameters break a safety rule (stated in `rule`).
    #[error("committee (c = {c}, t_c = {t}, Q = {q}, c_d = {corrupt}) refused: {rule}")]
    CommitteeRule {
        /// Committee size c.
        c: usize,
        /// Piece threshold t_c.
        t: usize,
        /// Signature quorum Q.
        q: usize,
        /// Corrupt decryptors tolerated c_d.
        corrupt: usize,
        /// The rule that fails.
        rule: &'static str,
    },
    /// An identity or box key that is weak, a duplicate or badly signed.
    #[error("key {index} of the {what} is {reason}")]
    BadKey {
        /// Which list.
        what: &'static str,
        /// Position in it.
        index: usize,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A site input value does not fit in the input width.
    #[error("input value at index {index} does not fit in {input_bits} bits")]
    ValueOutOfRange {
        /// Position in the vector (the value is the site's secret and is not repeated).
        index: usize,
        /// Input width b.
        input_bits: u32,
    },
    /// A vector of the wrong length.
    #[error("length mismatch in {what}: expected {expected}, got {got}")]
    LengthMismatch {
        /// What was measured.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Received length.
        got: usize,
    },
    /// Bytes that do not decode (truncated, trailing, bad header, invalid field).
    #[error("malformed input: {0}")]
    Decode(#[from] DecodeError),
    /// A message for another round context (other round, manifest, committee or parameters).
    #[error("message is bound to another round context")]
    WrongRound,
    /// The round id was already used by this party (in its persisted round record): a second
    /// instance for one round id could sign a second cohort or draw a second key.
    #[error("round {round} was already used by this party")]
    RoundReused {
        /// The round id (public).
        round: u64,
    },
    /// A site id outside the directory.
    #[error("site {site} is not in the site directory")]
    UnknownSite {
        /// The id.
        site: u16,
    },
    /// A committee member index outside the committee.
    #[error("decryptor {member} is not a committee member")]
    UnknownMember {
        /// The index.
        member: usize,
    },
    /// A signature that does not verify.
    #[error("bad signature on {what} from {signer}")]
    BadSignature {
        /// The message.
        what: &'static str,
        /// Who it claims to come from (site or member index).
        signer: usize,
    },
    /// A seed box that does not open under its bindings.
    #[error("seed box from site {site} does not open")]
    BoxDoesNotOpen {
        /// The sender.
        site: u16,
    },
    /// A seed that does not match the piece commitment the site signed.
    #[error("seed of piece {piece} from site {site} does not match its signed commitment")]
    CommitmentMismatch {
        /// The sender.
        site: u16,
        /// The piece id.
        piece: usize,
    },
    /// The same seed value arrived from two sites (a copied piece).
    #[error("sites {first} and {second} sent the same seed")]
    RepeatedSeed {
        /// The first site.
        first: u16,
        /// The second site.
        second: u16,
    },
    /// A second upload from a site, or a site listed twice.
    #[error("site {site} appears twice")]
    DuplicateSite {
        /// The site.
        site: u16,
    },
    /// A cohort outside `m..=K_max`.
    #[error("cohort of {size} sites is outside {min}..={max}")]
    CohortSize {
        /// Its size.
        size: usize,
        /// Minimum cohort m.
        min: usize,
        /// Maximum cohort K_max.
        max: usize,
    },
    /// A cohort statement names a site this party holds no (or a different) upload for.
    #[error("cohort names site {site} whose upload is not the one admitted here")]
    UploadNotAdmitted {
        /// The site.
        site: u16,
    },
    /// This decryptor already signed a different statement for the round.
    #[error("a different cohort statement is already signed for this round")]
    OtherStatementSigned,
    /// Release asked before this decryptor signed, or for a statement it did not sign.
    #[error("no signed statement for this round matches")]
    NotSigned,
    /// Fewer than Q distinct committee signatures on the identical statement.
    #[error("{got} valid committee signatures on the statement, quorum is {quorum}")]
    NoQuorum {
        /// Valid distinct signatures.
        got: usize,
        /// Quorum Q.
        quorum: usize,
    },
    /// Seeds of this round were deleted at its deadline.
    #[error("seeds of this round were deleted at its deadline")]
    Expired,
    /// The model digest is not one of the last s published models.
    #[error("upload trained on a model outside the accepted window")]
    StaleModel,
    /// A piece sum that is not held by its sender, or a second one that disagrees.
    #[error("piece {piece}: {reason}")]
    BadPieceSum {
        /// The piece id.
        piece: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two holders released different sums for one piece: one of them lies.
    #[error("holders {first} and {second} released different sums for piece {piece}")]
    InconsistentPieceSum {
        /// The piece.
        piece: usize,
        /// One holder.
        first: usize,
        /// The other holder.
        second: usize,
    },
    /// Not every piece has a released sum yet.
    #[error("{missing} pieces have no released sum yet")]
    PiecesMissing {
        /// How many are missing.
        missing: usize,
    },
    /// The aggregate does not decode under the released key sum (wrong key, a malformed upload
    /// in the cohort, or tampering). Deliberately carries no position, phase or residual.
    #[error("the aggregate does not decode to a valid sum")]
    SumInvalid,
    /// The operation does not fit the role's current state.
    #[error("not allowed now: {0}")]
    WrongState(&'static str),
}

impl HeError {
    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            Self::ParamOutOfRange { .. }
            | Self::NoiseBudgetTooSmall { .. }
            | Self::CommitteeRule { .. }
            | Self::BadKey { .. }
            | Self::ValueOutOfRange { .. }
            | Self::WrongState(_)
            | Self::Expired => Fault::LocalMisuse,
            Self::WrongRound | Self::StaleModel | Self::RoundReused { .. } => Fault::Incompatible,
            _ => Fault::Peer,
        }
    }

    /// The error code sent to a peer: one fixed number per variant, nothing else.
    pub fn code(&self) -> u16 {
        match self {
            Self::ParamOutOfRange { .. } => 1,
            Self::NoiseBudgetTooSmall { .. } => 2,
            Self::CommitteeRule { .. } => 3,
            Self::BadKey { .. } => 4,
            Self::ValueOutOfRange { .. } => 5,
            Self::LengthMismatch { .. } => 6,
            Self::Decode(_) => 7,
            Self::WrongRound => 8,
            Self::RoundReused { .. } => 9,
            Self::UnknownSite { .. } => 10,
            Self::UnknownMember { .. } => 11,
            Self::BadSignature { .. } => 12,
            Self::BoxDoesNotOpen { .. } => 13,
            Self::CommitmentMismatch { .. } => 14,
            Self::RepeatedSeed { .. } => 15,
            Self::DuplicateSite { .. } => 16,
            Self::CohortSize { .. } => 17,
            Self::UploadNotAdmitted { .. } => 18,
            Self::OtherStatementSigned => 19,
            Self::NotSigned => 20,
            Self::NoQuorum { .. } => 21,
            Self::Expired => 22,
            Self::StaleModel => 23,
            Self::BadPieceSum { .. } => 24,
            Self::InconsistentPieceSum { .. } => 25,
            Self::PiecesMissing { .. } => 26,
            Self::SumInvalid => 27,
            Self::WrongState(_) => 28,
        }
    }
}
