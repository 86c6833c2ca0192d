//! The agent's failures, each with the process exit code the CLI uses.

use crate::model::ModelError;
use crate::rules::RulesError;
use crate::statements::StatementError;
use crate::trainer::TrainError;
use crate::transport::TransportError;

/// Why the agent could not run a round (a decline is not an error: see
/// [`crate::RoundOutcome::Declined`]).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The aggregator holds a message this site signed in `round` that local state does not
    /// have: the state was restored from an older copy. The round is refused and the
    /// high-water mark moved past it.
    #[error(
        "round {round}: the aggregator holds a later message from this site than its local state; \
         the state was restored from an older copy (round refused, high-water mark moved)"
    )]
    RolledBack {
        /// The round.
        round: u64,
    },
    /// The local ledger is behind (or forked from) the last summary this site uploaded.
    #[error("the local epsilon ledger is behind the last summary this site uploaded: {0}")]
    LedgerBehind(String),
    /// The round id was used before by this site.
    #[error("round {round} is at or below this site's high-water mark {high_water}")]
    RoundReused {
        /// The round.
        round: u64,
        /// The mark.
        high_water: u64,
    },
    /// The aggregator does not state the model it binds the round to (no 200 for the
    /// round): the model-binding check cannot run, so the round is not joined.
    #[error("round {0}: the aggregator does not state the model this round is bound to")]
    RoundNotBound(u64),
    /// The round id is above the manifest's `max_round`: no round of the campaign has it.
    #[error("round {round} is above the campaign's last round id {max_round}")]
    RoundOutOfRange {
        /// The round.
        round: u64,
        /// The manifest's largest round id.
        max_round: u64,
    },
    /// The manifest's fallback policy forbids fallback rounds: the site never takes part in one.
    #[error("round {0}: the manifest's fallback policy forbids fallback rounds")]
    FallbackForbidden(u64),
    /// A fallback round was asked for with an id that is not a fallback round id (or a
    /// masking round with a fallback id).
    #[error("round {0} is not a round id of this scheme")]
    WrongScheme(u64),
    /// The fallback round's setup is not the one this site derives from the manifest and the
    /// round id (another round, vector length, bit width, directory or model).
    #[error("round {round}: the fallback setup is refused: {reason}")]
    FallbackSetup {
        /// The round.
        round: u64,
        /// Why.
        reason: String,
    },
    /// The homomorphic fallback refused an operation.
    #[error(transparent)]
    He(#[from] amalgam_he::HeError),
    /// A phase deadline passed: the round was abandoned.
    #[error("round {0}: a phase deadline passed; the round was abandoned")]
    Timeout(u64),
    /// Transport failure.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Ledger failure.
    #[error(transparent)]
    Ledger(#[from] amalgam_dp::ledger::LedgerError),
    /// Record-ledger failure (over the record cap, a restored or replaced ledger, a bad
    /// parameter).
    #[error(transparent)]
    RecordLedger(#[from] amalgam_dp::ledger::record::RecordLedgerError),
    /// A trainer's record-level run is not the run its permit covers.
    #[error("record-level run refused: {0}")]
    RecordRun(String),
    /// Encoding failure.
    #[error(transparent)]
    Encode(#[from] amalgam_dp::error::EncodeError),
    /// DP parameter failure.
    #[error(transparent)]
    Param(#[from] amalgam_dp::error::ParamError),
    /// Protocol failure.
    #[error(transparent)]
    Proto(#[from] amalgam_proto::Error),
    /// Sealed state, high-water mark or file-system failure.
    #[error(transparent)]
    Store(#[from] amalgam_store::StoreError),
    /// Training failure.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Model step failure.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Inconsistent consortium rules.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// A signed statement from the aggregator does not verify.
    #[error(transparent)]
    Statement(#[from] StatementError),
    /// The published result is inconsistent with the round (nothing was applied).
    #[error("the aggregator's result is refused: {0}")]
    BadResult(&'static str),
    /// Local state is malformed.
    #[error("local state {0} is malformed")]
    BadState(&'static str),
}

impl AgentError {
    /// Exit code: 1 failed, 3 timeout, 4 authentication, 5 unreachable.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Timeout(_) => 3,
            AgentError::Transport(TransportError::Auth(_)) => 4,
            AgentError::Transport(TransportError::Unreachable(_))
            | AgentError::Transport(TransportError::Retry { .. }) => 5,
            _ => 1,
        }
    }
}
