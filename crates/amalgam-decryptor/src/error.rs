//! Why a committee member refused or failed.

use amalgam_he::HeError;
use amalgam_net::client::ClientError;
use amalgam_store::StoreError;

/// A decryptor failure. Refusals name the rule; none carries a seed, a sum or a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptorError {
    /// The member already signed another statement for this round: nothing is signed.
    #[error("round {round}: another statement is already recorded; refusing to sign a second")]
    SecondStatement {
        /// The round.
        round: u64,
    },
    /// The fallback library refused (admission, statement checks, quorum).
    #[error("fallback protocol refused: {0} (code {code})", code = .0.code())]
    Protocol(#[from] HeError),
    /// The statement store or vault failed (or refused a truncated database).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The aggregator could not be reached or refused the request.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The aggregator answered something this member cannot use.
    #[error("aggregator answer refused: {0}")]
    Answer(String),
    /// The round ended (aborted or finished without this member's release).
    #[error("round {round} ended: {why}")]
    Ended {
        /// The round.
        round: u64,
        /// The aggregator's public reason.
        why: String,
    },
    /// The round id is not a fallback round id (below 2^32: a masking round). A member never
    /// signs for it, whatever the aggregator asks.
    #[error("round {round} is a masking round id; only ids at or above 2^32 are fallback rounds")]
    NotAFallbackRound {
        /// The round.
        round: u64,
    },
    /// The member's own copy of the manifest forbids fallback rounds: it serves none, whatever
    /// the aggregator asks.
    #[error("the manifest's fallback policy forbids fallback rounds; round {round} is not served")]
    PolicyForbids {
        /// The round.
        round: u64,
    },
    /// The aggregator holds another certificate of this member for the period: a second box
    /// key was drawn for it; this one must not be used.
    #[error("another certificate of this member is stored for the period: {0}")]
    KeyConflict(String),
    /// The round's setup could not be derived.
    #[error("round setup: {0}")]
    Setup(String),
}
