//! The aggregator state machine (spec §5.2): collects each phase's uploads, closes a phase
//! with whoever has answered (dropouts), routes shares, runs the consistency check and
//! unmasks the sum. It holds no secret: everything it learns, a curious aggregator may know.
//!
//! `receive` validates an upload completely against the borrowed state before recording it,
//! so a rejected upload changes nothing. `close_phase` either advances (returning what to send
//! to whom) or fails with [`Error::NotEnoughSites`] and changes nothing.
//!
//! This file holds the types (context, session, routing, states) and the read-only accessors;
//! `receive` validates uploads, `close_phase` moves between phases, `unmask` recovers the
//! secrets and removes the masks (spec §5.2 A4), and `snapshot` is the persisted form (spec §8).

use std::collections::{BTreeMap, BTreeSet};

use crate::crypto::kdf::masking_round_context;
use crate::error::{Error, Misbehaviour, Sender};
use crate::messages::*;
use crate::params::{Manifest, RoundParams, SiteId};
use crate::phase::Phase;
use crate::roles::{AggregatorRole, AggregatorStep};

mod close_phase;
mod receive;
mod snapshot;
mod unmask;

/// The result of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateOutput {
    /// Σ x_u mod 2^B over the contributors, d elements.
    pub sum: Vec<u64>,
    /// U3: the sites whose inputs are in the sum, ascending.
    pub contributors: Vec<SiteId>,
    /// Sites that advertised keys (U1) but are not in the sum, ascending.
    pub dropped: Vec<SiteId>,
    /// Revealers of shares provably off the polynomial their owner dealt (spec §4.6: named
    /// only when t + c shares support that polynomial), ascending: each lied, or its owner
    /// dealt it a wrong share. Wrong shares never change the sum.
    pub blamed: Vec<SiteId>,
}

struct Ctx {
    params: RoundParams,
    manifest: Manifest,
    round: u64,
    /// The caller's opaque commitment to manifest and model (spec §4.1).
    context_digest: [u8; 32],
    round_context: [u8; 32],
}

impl Ctx {
    fn closed_count<'a>(&self, u: SiteId, set: impl IntoIterator<Item = &'a SiteId>) -> usize {
        set.into_iter()
            .filter(|&&v| v == u || self.params.are_neighbours(u, v))
            .count()
    }

    /// Smallest |`N[u]` ∩ set| over u in set, and the requirement t (Harary-aware).
    fn check_neighbourhoods(&self, phase: Phase, set: &BTreeSet<SiteId>) -> Result<(), Error> {
        let m = usize::from(self.params.min_cohort().get());
        if set.len() < m {
            return Err(Error::NotEnoughSites {
                phase,
                needed: m,
                got: set.len(),
            });
        }
        let t = self.params.t();
        if let Some(got) = set.iter().map(|&u| self.closed_count(u, set)).min()
            && got < t
        {
            return Err(Error::NotEnoughSites {
                phase,
                needed: t,
                got,
            });
        }
        Ok(())
    }
}

/// Round-0 data kept for the whole round.
struct Session {
    id: [u8; 32],
    /// U1's advertisements.
    adverts: BTreeMap<SiteId, AdvertiseKeys>,
}

/// After ShareKeys: who holds whose shares.
struct Routing {
    /// For v in U2: M_v, the senders whose shares were routed to v (v's pairwise-mask peers).
    peers: BTreeMap<SiteId, BTreeSet<SiteId>>,
    /// b commitments of U2.
    commitments: BTreeMap<SiteId, [u8; 32]>,
    /// The signed ShareKeys uploads of U2 this routing was derived from, kept so that a
    /// restore re-verifies them and derives the routing again instead of trusting it.
    signed: BTreeMap<SiteId, ShareKeys>,
}

enum State {
    CollectingKeys {
        adverts: BTreeMap<SiteId, AdvertiseKeys>,
    },
    CollectingShares {
        session: Session,
        shares: BTreeMap<SiteId, ShareKeys>,
    },
    CollectingMasked {
        session: Session,
        routing: Routing,
        masked: BTreeMap<SiteId, MaskedInput>,
    },
    CollectingSignatures {
        session: Session,
        routing: Routing,
        masked: BTreeMap<SiteId, MaskedInput>,
        survivors: Vec<SiteId>,
        signatures: BTreeMap<SiteId, SignatureBytes>,
    },
    CollectingUnmask {
        session: Session,
        routing: Routing,
        masked: BTreeMap<SiteId, MaskedInput>,
        survivors: Vec<SiteId>,
        signatures: BTreeMap<SiteId, SignatureBytes>,
        responses: BTreeMap<SiteId, UnmaskShares>,
    },
    /// The output, with everything it was computed from, so that a snapshot of a finished
    /// round is self-checking too: restore recomputes the output and compares (spec §8.2).
    Finished(Box<Done>),
}

/// A finished round: the Unmasking-phase state and the output it produced.
struct Done {
    session: Session,
    routing: Routing,
    masked: BTreeMap<SiteId, MaskedInput>,
    survivors: Vec<SiteId>,
    signatures: BTreeMap<SiteId, SignatureBytes>,
    responses: BTreeMap<SiteId, UnmaskShares>,
    out: AggregateOutput,
}

/// The aggregator's state machine for one round.
pub struct Aggregator {
    ctx: Ctx,
    state: State,
}

impl core::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Aggregator")
            .field("round", &self.ctx.round)
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

fn site_err(id: SiteId, kind: Misbehaviour) -> Error {
    Error::peer(Sender::Site(id), kind)
}

impl Aggregator {
    /// An aggregator for `round` over the consortium `manifest`, with the manifest digest as
    /// context digest (see [`Aggregator::with_context_digest`]).
    pub fn new(params: RoundParams, manifest: Manifest, round: u64) -> Result<Self, Error> {
        let context_digest = manifest.digest();
        Self::with_context_digest(params, manifest, context_digest, round)
    }

    /// An aggregator whose round context binds the caller's `context_digest` (spec §4.1).
    pub fn with_context_digest(
        params: RoundParams,
        manifest: Manifest,
        context_digest: [u8; 32],
        round: u64,
    ) -> Result<Self, Error> {
        manifest.check(&params)?;
        let round_context = masking_round_context(&context_digest, &params, round);
        Ok(Self {
            ctx: Ctx {
                params,
                manifest,
                round,
                context_digest,
                round_context,
            },
            state: State::CollectingKeys {
                adverts: BTreeMap::new(),
            },
        })
    }

    /// The phase being collected.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::CollectingKeys { .. } => Phase::AdvertiseKeys,
            State::CollectingShares { .. } => Phase::ShareKeys,
            State::CollectingMasked { .. } => Phase::MaskedInput,
            State::CollectingSignatures { .. } => Phase::ConsistencyCheck,
            State::CollectingUnmask { .. } => Phase::Unmasking,
            State::Finished(_) => Phase::Finished,
        }
    }

    /// The round parameters.
    pub fn params(&self) -> &RoundParams {
        &self.ctx.params
    }

    /// The round number.
    pub fn round(&self) -> u64 {
        self.ctx.round
    }

    /// The session id, once round 0 is closed.
    pub fn session_id(&self) -> Option<[u8; 32]> {
        match &self.state {
            State::CollectingKeys { .. } | State::Finished(_) => None,
            State::CollectingShares { session, .. }
            | State::CollectingMasked { session, .. }
            | State::CollectingSignatures { session, .. }
            | State::CollectingUnmask { session, .. } => Some(session.id),
        }
    }

    /// The output, once finished.
    pub fn output(&self) -> Option<&AggregateOutput> {
        match &self.state {
            State::Finished(done) => Some(&done.out),
            _ => None,
        }
    }

    /// Sites whose uploads were accepted in the current phase.
    pub fn responded(&self) -> Vec<SiteId> {
        match &self.state {
            State::CollectingKeys { adverts } => adverts.keys().copied().collect(),
            State::CollectingShares { shares, .. } => shares.keys().copied().collect(),
            State::CollectingMasked { masked, .. } => masked.keys().copied().collect(),
            State::CollectingSignatures { signatures, .. } => signatures.keys().copied().collect(),
            State::CollectingUnmask { responses, .. } => responses.keys().copied().collect(),
            State::Finished(_) => Vec::new(),
        }
    }
}

impl AggregatorRole for Aggregator {
    type Upload = ToAggregator;
    type Download = ToSite;
    type Output = AggregateOutput;
    type Error = Error;

    fn receive(&mut self, upload: ToAggregator) -> Result<(), Error> {
        Aggregator::receive(self, upload)
    }

    fn close_phase(&mut self) -> Result<AggregatorStep<ToSite, AggregateOutput>, Error> {
        Aggregator::close_phase(self)
    }

    fn responded(&self) -> Vec<SiteId> {
        Aggregator::responded(self)
    }

    fn is_done(&self) -> bool {
        matches!(self.state, State::Finished(_))
    }
}
