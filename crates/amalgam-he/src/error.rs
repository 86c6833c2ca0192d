//! Errors of the HE fallback. Each says what went wrong with the numbers involved, and
//! [`HeError::fault`] says who is at fault, as rustls does.

use amalgam_proto::DecodeError;
use thiserror::Error;

/// Who caused an error: the remote party, an incompatibility between honest parties, or the
/// local caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A peer (site, aggregator) sent something malformed, unauthenticated or out of policy.
    Peer,
    /// Both sides are well-formed but disagree (key, version, parameters).
    Incompatible,
    /// The local caller misused the API.
    LocalMisuse,
}

/// Every failure of the HE fallback.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum HeError {
    /// Input width outside `1..=max`.
    #[error("input width {input_bits} bits is outside 1..={max}")]
    InputBitsOutOfRange {
        /// The requested width.
        input_bits: u32,
        /// The largest supported width.
        max: u32,
    },
    /// Largest cohort outside `2..=max`.
    #[error("maximum cohort {max_sites} is outside 2..={max}")]
    MaxSitesOutOfRange {
        /// The requested cohort size.
        max_sites: u32,
        /// The largest supported cohort.
        max: u32,
    },
    /// Vector length outside `1..=max`.
    #[error("vector length {vector_len} is outside 1..={max}")]
    VectorLenOutOfRange {
        /// The requested length.
        vector_len: u32,
        /// The largest supported length.
        max: u32,
    },
    /// The parameter set could fail to decrypt: noise of `max_sites` ciphertexts reaches `Δ/2`.
    #[error(
        "parameters refused: P = {plaintext_bits} bits leaves Δ/2 = 2^{half_delta_log2}, but the \
         noise of {max_sites} summed ciphertexts reaches 2^{noise_log2:.2} (failure bound 2^-80)"
    )]
    NoiseBudgetTooSmall {
        /// Plaintext width `P`.
        plaintext_bits: u32,
        /// Largest cohort.
        max_sites: u32,
        /// log2 of the noise bound.
        noise_log2: f64,
        /// log2 of `Δ/2`.
        half_delta_log2: u32,
    },
    /// A plaintext value does not fit in the input width.
    #[error("input value at index {index} does not fit in {input_bits} bits")]
    ValueOutOfRange {
        /// Position in the vector (the value itself is the site's secret and is not repeated).
        index: usize,
        /// Input width `b`.
        input_bits: u32,
    },
    /// A vector or ciphertext has the wrong number of values.
    #[error("length mismatch: expected {expected} values, got {got}")]
    LengthMismatch {
        /// Expected number of values.
        expected: usize,
        /// Received number of values.
        got: usize,
    },
    /// Bytes that do not decode (truncated, trailing, bad header, invalid field).
    #[error("malformed input: {0}")]
    Decode(#[from] DecodeError),
    /// A ciphertext or aggregate was made under another public key.
    #[error("public key mismatch: expected fingerprint {expected}, got {got}")]
    KeyMismatch {
        /// Hex fingerprint expected (pinned or held).
        expected: String,
        /// Hex fingerprint received.
        got: String,
    },
    /// After bias removal a value's residual noise exceeds the budget: a contribution was
    /// malformed, tampered with, or made under another key. Nothing is released.
    #[error(
        "residual noise 2^{residual_log2:.2} at index {index} exceeds the bound 2^{bound_log2:.2} \
         for {sites} sites: aggregate refused"
    )]
    NoiseBudgetExceeded {
        /// Position of the first offending value.
        index: usize,
        /// log2 of its residual.
        residual_log2: f64,
        /// log2 of the bound.
        bound_log2: f64,
        /// Number of summed contributions.
        sites: u32,
    },
    /// A decrypted sum exceeds what `sites` honest inputs of `b` bits can reach.
    #[error(
        "decrypted sum {value} at index {index} exceeds the largest honest sum {max}: aggregate refused"
    )]
    SumOutOfRange {
        /// Position of the first offending value.
        index: usize,
        /// The decoded value.
        value: u64,
        /// `K·(2^b - 1)`.
        max: u64,
    },
    /// Adding one more ciphertext would exceed the cohort the parameters were checked for.
    #[error("aggregate already holds {sites} contributions, the parameters allow {max_sites}")]
    TooManyContributions {
        /// Contributions already summed.
        sites: u32,
        /// Largest cohort.
        max_sites: u32,
    },
    /// A site's signature does not verify under its manifest identity key.
    #[error("signature of site {site} does not verify")]
    BadSignature {
        /// Manifest index of the claimed signer.
        site: u16,
    },
    /// The minimum cohort is larger than an aggregate may be or than the manifest.
    #[error("minimum cohort {min_cohort} exceeds {limit} ({what})")]
    MinCohortTooLarge {
        /// Requested minimum cohort.
        min_cohort: u32,
        /// The limit it exceeds.
        limit: u32,
        /// Which limit: the parameters' maximum cohort or the manifest size.
        what: &'static str,
    },
    /// The manifest holds a weak (small-order) or repeated identity key.
    #[error("manifest entry {index} is {reason}")]
    BadIdentity {
        /// Index of the offending entry.
        index: usize,
        /// "weak" or "a duplicate".
        reason: &'static str,
    },
    /// The manifest is empty or larger than 16-bit site ids allow.
    #[error("manifest has {sites} sites, allowed 1..={max}")]
    ManifestSize {
        /// Number of entries.
        sites: usize,
        /// Largest manifest.
        max: usize,
    },
    /// A message names a site that is not in the manifest.
    #[error("site {site} is not in the consortium manifest")]
    UnknownSite {
        /// The claimed site id.
        site: u16,
    },
    /// A message belongs to another round.
    #[error("message for round {got}, this is round {expected}")]
    WrongRound {
        /// The current round.
        expected: u64,
        /// The message's round.
        got: u64,
    },
    /// A site contributed twice to the same round.
    #[error("site {site} already contributed to this round")]
    DuplicateContribution {
        /// The repeating site.
        site: u16,
    },
    /// The round accepts nothing more (target reached, or closed).
    #[error("round {round} is closed to contributions")]
    RoundClosed {
        /// The round.
        round: u64,
    },
    /// Fewer distinct signed contributions than the minimum cohort.
    #[error("cohort too small: {have} contributions, the minimum cohort is {need}")]
    CohortTooSmall {
        /// Contributions present.
        have: usize,
        /// Minimum cohort.
        need: usize,
    },
    /// The decryptor already decrypted (or refused after decrypting) this round.
    #[error("round {round} was already decrypted; each round is decrypted at most once")]
    AlreadyDecrypted {
        /// The round.
        round: u64,
    },
    /// The aggregate's contributor list differs from the attested contributions.
    #[error(
        "aggregate names {claimed} contributors, {attested} were attested, and the lists differ"
    )]
    ContributorMismatch {
        /// Contributors named by the aggregator.
        claimed: usize,
        /// Contributions attested to the decryptor.
        attested: usize,
    },
    /// The aggregate's mask sum is not the sum of the attested masks.
    #[error("aggregate mask word {index} is not the sum of the attested masks")]
    MaskSumMismatch {
        /// First differing word.
        index: usize,
    },
    /// An asynchronous round's target count is outside the cohort bounds.
    #[error("target count {target} outside {min}..={max}")]
    TargetOutOfRange {
        /// Requested target.
        target: u32,
        /// Minimum cohort.
        min: u32,
        /// Maximum cohort.
        max: u32,
    },
    /// A masking abort that an HE re-run does not cure (anything but too few sites).
    #[error("masking round aborted with `{cause}`: not re-run with HE")]
    NoFallback {
        /// Error code of the masking abort.
        cause: &'static str,
    },
    /// A contribution from a site not invited to this round (HE re-run among survivors).
    #[error("site {site} is not among the sites invited to this round")]
    NotInvited {
        /// The uninvited site.
        site: u16,
    },
    /// Persisted decryptor state does not end at the last published audit head: it was rolled
    /// back or replaced, and resuming from it could decrypt a round twice.
    #[error("decryptor state does not end at the published audit head (rolled back or replaced)")]
    AuditRollback,
    /// A key file could not be written or read.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// Path involved.
        path: String,
        /// Operating-system error text.
        reason: String,
    },
}

impl HeError {
    /// Who is at fault for this error.
    pub fn fault(&self) -> Fault {
        match self {
            Self::InputBitsOutOfRange { .. }
            | Self::MaxSitesOutOfRange { .. }
            | Self::VectorLenOutOfRange { .. }
            | Self::NoiseBudgetTooSmall { .. }
            | Self::ValueOutOfRange { .. }
            | Self::KeyFile { .. }
            | Self::MinCohortTooLarge { .. }
            | Self::BadIdentity { .. }
            | Self::ManifestSize { .. }
            | Self::TargetOutOfRange { .. }
            | Self::NoFallback { .. }
            | Self::AuditRollback => Fault::LocalMisuse,
            Self::Decode(DecodeError::UnsupportedVersion { .. }) | Self::KeyMismatch { .. } => {
                Fault::Incompatible
            }
            Self::LengthMismatch { .. }
            | Self::Decode(_)
            | Self::NoiseBudgetExceeded { .. }
            | Self::SumOutOfRange { .. }
            | Self::BadSignature { .. }
            | Self::UnknownSite { .. }
            | Self::NotInvited { .. }
            | Self::WrongRound { .. }
            | Self::DuplicateContribution { .. }
            | Self::RoundClosed { .. }
            | Self::CohortTooSmall { .. }
            | Self::AlreadyDecrypted { .. }
            | Self::ContributorMismatch { .. }
            | Self::MaskSumMismatch { .. }
            | Self::TooManyContributions { .. } => Fault::Peer,
        }
    }

    /// Stable error code for logs, audit entries and the wire (`he-fallback.md` §6).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InputBitsOutOfRange { .. } => "he.params.input_bits",
            Self::MaxSitesOutOfRange { .. } => "he.params.max_sites",
            Self::VectorLenOutOfRange { .. } => "he.params.vector_len",
            Self::NoiseBudgetTooSmall { .. } => "he.params.noise_budget",
            Self::MinCohortTooLarge { .. } => "he.params.min_cohort",
            Self::TargetOutOfRange { .. } => "he.params.target",
            Self::BadIdentity { .. } => "he.manifest.bad_identity",
            Self::ManifestSize { .. } => "he.manifest.size",
            Self::ValueOutOfRange { .. } => "he.misuse.value_out_of_range",
            Self::KeyFile { .. } => "he.misuse.key_file",
            Self::LengthMismatch { .. } => "he.peer.length_mismatch",
            Self::Decode(_) => "he.decode",
            Self::KeyMismatch { .. } => "he.key_mismatch",
            Self::NoiseBudgetExceeded { .. } => "he.decrypt.noise_exceeded",
            Self::SumOutOfRange { .. } => "he.decrypt.sum_out_of_range",
            Self::TooManyContributions { .. } => "he.peer.too_many_contributions",
            Self::BadSignature { .. } => "he.peer.bad_signature",
            Self::UnknownSite { .. } => "he.peer.unknown_site",
            Self::WrongRound { .. } => "he.peer.wrong_round",
            Self::DuplicateContribution { .. } => "he.peer.duplicate",
            Self::RoundClosed { .. } => "he.peer.round_closed",
            Self::CohortTooSmall { .. } => "he.cohort_too_small",
            Self::AlreadyDecrypted { .. } => "he.peer.already_decrypted",
            Self::ContributorMismatch { .. } => "he.peer.contributor_mismatch",
            Self::MaskSumMismatch { .. } => "he.peer.mask_sum_mismatch",
            Self::NoFallback { .. } => "he.misuse.no_fallback",
            Self::NotInvited { .. } => "he.peer.not_invited",
            Self::AuditRollback => "he.misuse.audit_rollback",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_name_who_is_to_blame() {
        let peer = HeError::BadSignature { site: 3 };
        assert_eq!(
            (peer.fault(), peer.code()),
            (Fault::Peer, "he.peer.bad_signature")
        );
        let local = HeError::ValueOutOfRange {
            index: 1,
            input_bits: 16,
        };
        assert_eq!(local.fault(), Fault::LocalMisuse);
        let key = HeError::KeyMismatch {
            expected: "aa".into(),
            got: "bb".into(),
        };
        assert_eq!(key.fault(), Fault::Incompatible);
        let version = HeError::from(DecodeError::UnsupportedVersion {
            found: 2,
            supported: 1,
        });
        assert_eq!(
            (version.fault(), version.code()),
            (Fault::Incompatible, "he.decode")
        );
        let truncated = HeError::from(DecodeError::Truncated {
            field: "x",
            needed: 4,
            remaining: 1,
        });
        assert_eq!(truncated.fault(), Fault::Peer);
        assert!(truncated.to_string().contains("`x`"));
    }
}
