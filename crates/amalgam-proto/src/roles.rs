//! Scheme-agnostic roles (libprio style, spec §2).
//!
//! A secure-aggregation scheme is a pair of state machines: a [`SiteRole`] that turns one
//! input into uploads, driven by downloads from the aggregator, and an [`AggregatorRole`]
//! that collects uploads and, phase by phase, either sends downloads back or produces the
//! round's output. Pairwise masking ([`crate::Site`], [`crate::Aggregator`]) is one scheme;
//! the homomorphic fallback (one-shot: one encrypted upload per site, an aggregate whose key a
//! committee of [`DecryptorRole`] members releases) is another. Both are sans-IO: no clock, no
//! sockets, no OS randomness — the caller passes a [`CryptoRng`] and decides when a phase
//! closes (deadlines are the driver's business).
//!
//! Error contract for implementors: a method returning `Err` leaves the state machine
//! unchanged, unless the state machine reports that it aborted (then it accepts nothing more).

use rand_core::CryptoRng;

use crate::params::SiteId;

/// What the aggregator does after closing a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregatorStep<D, O> {
    /// Send each listed site its download; the next phase is open.
    Send(Vec<(SiteId, D)>),
    /// The round is complete.
    Finished(O),
}

/// A site's side of a secure-aggregation scheme.
pub trait SiteRole {
    /// The private input of one round (e.g. a vector of integers in [0, 2^b)).
    type Input;
    /// Site → aggregator message.
    type Upload;
    /// Aggregator → site message.
    type Download;
    /// Error type.
    type Error: core::error::Error;

    /// This site's identity (index in the consortium manifest).
    fn site_id(&self) -> SiteId;

    /// Starts the round with the site's input; returns the first upload.
    fn start<R: CryptoRng + ?Sized>(
        &mut self,
        input: Self::Input,
        rng: &mut R,
    ) -> Result<Self::Upload, Self::Error>;

    /// Handles one download from the aggregator; returns the upload to send, if any.
    fn handle<R: CryptoRng + ?Sized>(
        &mut self,
        download: Self::Download,
        rng: &mut R,
    ) -> Result<Option<Self::Upload>, Self::Error>;

    /// Whether the site has nothing more to do in this round (finished or aborted).
    fn is_done(&self) -> bool;
}

/// The aggregator's side of a secure-aggregation scheme.
pub trait AggregatorRole {
    /// Site → aggregator message.
    type Upload;
    /// Aggregator → site message.
    type Download;
    /// The round's result (the sum, or for the fallback an encrypted aggregate).
    type Output;
    /// Error type.
    type Error: core::error::Error;

    /// Accepts one upload into the current phase. On `Err`, nothing changed.
    fn receive(&mut self, upload: Self::Upload) -> Result<(), Self::Error>;

    /// Closes the current phase with whoever has answered (this is how dropouts happen).
    /// On `Err` (e.g. too few sites), nothing changed: the driver may wait longer or give up.
    fn close_phase(&mut self) -> Result<AggregatorStep<Self::Download, Self::Output>, Self::Error>;

    /// Sites whose uploads were accepted in the current phase so far.
    fn responded(&self) -> Vec<SiteId>;

    /// Whether the round has produced its output or aborted.
    fn is_done(&self) -> bool;
}

/// A member of the committee that holds the homomorphic fallback's per-round key pieces
/// (masking has none): it admits what sites sent it, signs at most one cohort statement per
/// round, and releases its per-piece cohort sums only after a quorum signed that statement.
pub trait DecryptorRole {
    /// What a site sent this member (forwarded by the aggregator).
    type Upload;
    /// The cohort statement of a round.
    type Statement;
    /// A member's signature on a statement.
    type Signature;
    /// The signature together with the state that must be persisted before it is sent.
    type Pending;
    /// What the member releases for the signed statement.
    type Release;
    /// Error type.
    type Error: core::error::Error;

    /// Admits one upload. On `Err`, nothing changed.
    fn admit(&mut self, upload: &Self::Upload) -> Result<(), Self::Error>;

    /// Signs `statement` if it passes every check and no other statement was signed this
    /// round. On `Err`, nothing changed.
    fn sign(&mut self, statement: &Self::Statement) -> Result<Self::Pending, Self::Error>;

    /// Releases for the signed statement once `signatures` hold a quorum on it.
    fn release(
        &self,
        statement: &Self::Statement,
        signatures: &[Self::Signature],
    ) -> Result<Self::Release, Self::Error>;
}

/// Persistence of a role between requests (the libprio/Janus "continuation" pattern):
/// versioned bytes in the crate codec, decoded as untrusted input. For roles whose state
/// holds no secret; the masking [`crate::Site`] has its own `snapshot`/`restore`, whose
/// bytes are wiped on drop and whose restore needs the clock and the site's round log.
pub trait Snapshot: Sized {
    /// What restoring needs besides the bytes (e.g. the identity key, the manifest).
    type Context: ?Sized;
    /// Error type.
    type Error: core::error::Error;

    /// Serializes the complete state.
    fn snapshot(&self) -> Vec<u8>;

    /// Rebuilds the state machine from [`Snapshot::snapshot`] bytes.
    fn restore(bytes: &[u8], ctx: &Self::Context) -> Result<Self, Self::Error>;
}
