//! What the agent needs from the aggregator, independent of how it is reached: in memory
//! against `amalgam_proto::Aggregator` in tests ([`crate::testing`]), over mutually
//! authenticated HTTPS in production. Every method is one request; retries with jittered
//! backoff and `Retry-After` are the agent's ([`crate::retry`]), so a re-send carries the
//! identical bytes.

use std::time::Duration;

use amalgam_proto::Phase;

/// A download poll's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Download {
    /// The message for this site (canonical `ToSite` bytes).
    Message(Vec<u8>),
    /// The phase has not closed yet: ask again (after `retry_after` if given).
    NotYet {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The phase closed without this site (it is not in the set): nothing will come.
    Excluded,
    /// The round was aborted.
    Aborted,
}

/// The published result of a finished round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundResult {
    /// Σ of the contributors' encoded inputs mod 2^b.
    pub sum: Vec<u64>,
    /// Contributing site ids, ascending.
    pub contributors: Vec<u16>,
    /// Digest of model_{r+1} as the aggregator serves it, when it states one with the result
    /// (it is checked again against the next round's bound model digest).
    pub model_digest: Option<[u8; 32]>,
}

/// Transport failures, each mapped to an exit code by the CLI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Temporarily unavailable (503, connection reset): retry after the hint.
    #[error("aggregator busy or unreachable for now")]
    Retry {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The aggregator cannot be reached at all.
    #[error("aggregator unreachable: {0}")]
    Unreachable(String),
    /// Authentication failed (pin mismatch, unknown client).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The aggregator refused the request (a problem code and its public detail).
    #[error("aggregator refused: {code}: {detail}")]
    Refused {
        /// Stable problem code.
        code: String,
        /// Public detail.
        detail: String,
    },
    /// The answer does not decode.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// The aggregator as the site agent sees it (one authenticated site per instance).
pub trait Transport: Send {
    /// Uploads this site's message answering `phase` of `round`. Identical re-sends are
    /// answered like the first; a different one for the same phase is refused.
    fn upload(&mut self, round: u64, phase: Phase, body: &[u8]) -> Result<(), TransportError>;
    /// Long-polls (up to `wait`) for this site's download after `phase` of `round` closed.
    fn download(
        &mut self,
        round: u64,
        phase: Phase,
        wait: Duration,
    ) -> Result<Download, TransportError>;
    /// The latest message this site sent in `round`, as the aggregator stored it (the
    /// rollback check: `GET /v1/rounds/{r}/mine/latest`).
    fn mine_latest(&mut self, round: u64) -> Result<Option<Vec<u8>>, TransportError>;
    /// Sends a signed decline of `round` (before AdvertiseKeys).
    fn decline(&mut self, round: u64, body: &[u8]) -> Result<(), TransportError>;
    /// Uploads the signed ledger summary after `round`.
    fn upload_summary(&mut self, round: u64, body: &[u8]) -> Result<(), TransportError>;
    /// The last ledger summary this site uploaded, as the aggregator holds it.
    fn latest_summary(&mut self) -> Result<Option<Vec<u8>>, TransportError>;
    /// Every ledger summary of this site the aggregator holds (masking and fallback). The
    /// site checks its ledger against each one, so which is the latest is never decided by a
    /// label the aggregator writes. Defaults to [`Self::latest_summary`] alone.
    fn summaries(&mut self) -> Result<Vec<Vec<u8>>, TransportError> {
        Ok(self.latest_summary()?.into_iter().collect())
    }
    /// The model digest the aggregator binds `round` to (`None` when it does not know the
    /// round yet).
    fn round_model(&mut self, round: u64) -> Result<Option<[u8; 32]>, TransportError>;
    /// Long-polls (up to `wait`) for the published result of `round`.
    fn result(&mut self, round: u64, wait: Duration)
    -> Result<Option<RoundResult>, TransportError>;
    /// The canonical bytes of the global model the aggregator binds `round` to
    /// (`GET /v1/rounds/{r}/model`; `None` when it does not serve one). Untrusted: the agent
    /// adopts them only if they hash to the round's bound digest.
    fn model(&mut self, _round: u64) -> Result<Option<Vec<u8>>, TransportError> {
        Ok(None)
    }
}
