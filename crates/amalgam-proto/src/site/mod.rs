//! The site state machine (spec §5.1): Bonawitz et al. 2017 rounds 0-4, client side.
//!
//! One type per state; a transition first *verifies* the incoming message against the
//! borrowed state (yielding a zero-sized proof value on success), then *consumes* the state to
//! build the next one. Verification failures therefore leave the state unchanged; only the
//! spec's abort conditions (an equivocating survivor set) move the site to `Aborted`.
//!
//! This file holds the types (context, session, proofs, states) and the [`Site`] driver that
//! dispatches each download; `states` holds each state's verify/advance transition code and
//! `snapshot` the persisted form (spec §8).

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use rand_core::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::codec::Decode;
use crate::crypto::kdf::masking_round_context;
use crate::crypto::share_box::SharePair;
use crate::crypto::sign;
use crate::error::{Error, Misbehaviour, Misuse, Sender};
use crate::messages::*;
use crate::params::{Manifest, RoundParams, SiteId};
use crate::phase::Phase;
use crate::roles::SiteRole;

mod snapshot;
mod states;

pub use snapshot::SiteRestore;

/// Immutable context of one site in one round.
struct Ctx {
    params: RoundParams,
    manifest: Manifest,
    round: u64,
    id: SiteId,
    identity: SigningKey,
    /// The caller's opaque commitment to manifest and model (spec §4.1).
    context_digest: [u8; 32],
    round_context: [u8; 32],
}

impl Ctx {
    fn agg(kind: Misbehaviour) -> Error {
        Error::peer(Sender::Aggregator, kind)
    }

    /// |set ∩ N[self]| (closed neighbourhood).
    fn closed_count<'a>(&self, set: impl IntoIterator<Item = &'a SiteId>) -> usize {
        set.into_iter()
            .filter(|&&v| v == self.id || self.params.are_neighbours(self.id, v))
            .count()
    }
}

/// Public keys a peer advertised in round 0.
#[derive(Clone, PartialEq, Eq, Debug)]
struct PeerKeys {
    c_pk: [u8; 32],
    s_pk: [u8; 32],
}

/// The session: its id and U1 with the advertised keys.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Session {
    id: [u8; 32],
    peers: BTreeMap<SiteId, PeerKeys>,
}

/// Whether an X25519 public key is of small order (its product with a clamped scalar is 0).
pub(crate) fn is_low_order(pk: &[u8; 32]) -> bool {
    x25519_dalek::x25519([0x55; 32], *pk) == [0u8; 32]
}

// --- proofs (zero-sized, only constructible by the verifying functions) ----------------------

/// Proof: a KeysBroadcast was verified (manifest, signatures, freshness, distinct keys, counts).
struct AdvertsVerified(());
/// Proof: every routed share authenticated and came from a neighbour in U1.
struct SharesVerified(());
/// Proof: the survivor set is acceptable to sign.
struct SurvivorsChecked(());
/// Proof: at least t survivors signed exactly the set this site signed.
struct ConsistencyVerified(());

// --- states ----------------------------------------------------------------------------------

struct AwaitingKeys {
    c_sk: StaticSecret,
    s_sk: StaticSecret,
    input: Zeroizing<Vec<u64>>,
    advert: AdvertiseKeys,
}

struct AwaitingShares {
    c_sk: StaticSecret,
    s_sk: StaticSecret,
    input: Zeroizing<Vec<u64>>,
    b_seed: Zeroizing<[u8; 32]>,
    session: Session,
    own: SharePair,
}

struct AwaitingSurvivors {
    session: Session,
    /// Shares this site holds, by owner (including its own).
    held: BTreeMap<SiteId, SharePair>,
}

struct AwaitingUnmask {
    session: Session,
    held: BTreeMap<SiteId, SharePair>,
    /// The survivor set U3 this site signed.
    survivors: Vec<SiteId>,
}

enum State {
    Ready,
    AwaitingKeys(AwaitingKeys),
    AwaitingShares(AwaitingShares),
    AwaitingSurvivors(AwaitingSurvivors),
    AwaitingUnmask(AwaitingUnmask),
    Finished,
    Aborted(Error),
}

impl State {
    fn phase(&self) -> Phase {
        match self {
            State::Ready | State::AwaitingKeys(_) => Phase::AdvertiseKeys,
            State::AwaitingShares(_) => Phase::ShareKeys,
            State::AwaitingSurvivors(_) => Phase::MaskedInput,
            State::AwaitingUnmask(_) => Phase::ConsistencyCheck,
            State::Finished => Phase::Finished,
            State::Aborted(_) => Phase::Aborted,
        }
    }
}

/// A site's state machine for one round.
pub struct Site {
    ctx: Ctx,
    state: State,
}

impl core::fmt::Debug for Site {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Site")
            .field("id", &self.ctx.id)
            .field("round", &self.ctx.round)
            .field("state", &self.state_name())
            .finish_non_exhaustive()
    }
}

impl Site {
    /// A site for `round`, identified by `identity` (must be in `manifest`), with the manifest
    /// digest as context digest (no model binding; see [`Site::with_context_digest`]).
    pub fn new(
        params: RoundParams,
        manifest: Manifest,
        round: u64,
        identity: SigningKey,
    ) -> Result<Self, Error> {
        let context_digest = manifest.digest();
        Self::with_context_digest(params, manifest, context_digest, round, identity)
    }

    /// A site whose round context binds the caller's `context_digest` (spec §4.1: a
    /// commitment to the consortium manifest and the model being trained).
    pub fn with_context_digest(
        params: RoundParams,
        manifest: Manifest,
        context_digest: [u8; 32],
        round: u64,
        identity: SigningKey,
    ) -> Result<Self, Error> {
        manifest.check(&params)?;
        let id = manifest
            .index_of(&identity.verifying_key())
            .ok_or(Misuse::Other(
                "identity key is not in the consortium manifest",
            ))?;
        let round_context = masking_round_context(&context_digest, &params, round);
        Ok(Self {
            ctx: Ctx {
                params,
                manifest,
                round,
                id,
                identity,
                context_digest,
                round_context,
            },
            state: State::Ready,
        })
    }

    /// This site's id.
    pub fn id(&self) -> SiteId {
        self.ctx.id
    }

    /// The round parameters.
    pub fn params(&self) -> &RoundParams {
        &self.ctx.params
    }

    /// The round number.
    pub fn round(&self) -> u64 {
        self.ctx.round
    }

    /// The phase whose download the site is waiting for (`AdvertiseKeys` before start).
    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// Name of the internal state (for logs).
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Ready => "Ready",
            State::AwaitingKeys(_) => "AwaitingKeys",
            State::AwaitingShares(_) => "AwaitingShares",
            State::AwaitingSurvivors(_) => "AwaitingSurvivors",
            State::AwaitingUnmask(_) => "AwaitingUnmask",
            State::Finished => "Finished",
            State::Aborted(_) => "Aborted",
        }
    }

    /// The session id, once round 0 is complete.
    pub fn session_id(&self) -> Option<[u8; 32]> {
        match &self.state {
            State::AwaitingShares(s) => Some(s.session.id),
            State::AwaitingSurvivors(s) => Some(s.session.id),
            State::AwaitingUnmask(s) => Some(s.session.id),
            _ => None,
        }
    }

    /// Round 0 (spec §5.1 S0): checks the input, draws fresh c and s key pairs, signs them.
    pub fn start<R: CryptoRng + ?Sized>(
        &mut self,
        input: Vec<u64>,
        rng: &mut R,
    ) -> Result<ToAggregator, Error> {
        let input = Zeroizing::new(input);
        if !matches!(self.state, State::Ready) {
            return Err(Misuse::WrongPhase {
                call: "start",
                phase: self.phase(),
            }
            .into());
        }
        let p = &self.ctx.params;
        if input.len() != p.d() {
            return Err(Misuse::InputLength {
                expected: p.d(),
                got: input.len(),
            }
            .into());
        }
        let max = p.input_bits().max_value();
        if let Some(index) = input.iter().position(|&x| x > max) {
            return Err(Misuse::InputOutOfRange {
                index,
                bits: p.input_bits().get(),
            }
            .into());
        }
        let c_sk = StaticSecret::random_from_rng(&mut *rng);
        let s_sk = StaticSecret::random_from_rng(&mut *rng);
        let mut advert = AdvertiseKeys {
            round: self.ctx.round,
            sender: self.ctx.id,
            c_pk: PublicKey::from(&c_sk).to_bytes(),
            s_pk: PublicKey::from(&s_sk).to_bytes(),
            signature: [0; 64],
        };
        advert.signature =
            sign::sign_message(&self.ctx.identity, &self.ctx.round_context, &advert.body());
        let out = ToAggregator::AdvertiseKeys(advert.clone());
        self.state = State::AwaitingKeys(AwaitingKeys {
            c_sk,
            s_sk,
            input,
            advert,
        });
        Ok(out)
    }

    /// Decodes and handles one download (errors name the aggregator for undecodable bytes).
    pub fn handle_bytes<R: CryptoRng + ?Sized>(
        &mut self,
        bytes: &[u8],
        rng: &mut R,
    ) -> Result<Option<ToAggregator>, Error> {
        let msg = ToSite::from_bytes(bytes, &self.ctx.params)
            .map_err(|e| Error::decode(Sender::Aggregator, e))?;
        self.handle(msg, rng)
    }

    /// Handles one download. On `Err` the state is unchanged, except for abort conditions
    /// (after which every call returns [`Error::Aborted`]).
    pub fn handle<R: CryptoRng + ?Sized>(
        &mut self,
        msg: ToSite,
        rng: &mut R,
    ) -> Result<Option<ToAggregator>, Error> {
        if let State::Aborted(e) = &self.state {
            return Err(Error::Aborted(Box::new(e.clone())));
        }
        if msg.round() != self.ctx.round {
            return Err(Ctx::agg(Misbehaviour::WrongRound {
                expected: self.ctx.round,
                got: msg.round(),
            }));
        }
        let ctx = &self.ctx;
        match (&self.state, &msg) {
            (State::AwaitingKeys(s), ToSite::KeysBroadcast(m)) => {
                let verified = s.verify(ctx, m)?;
                let State::AwaitingKeys(s) = std::mem::replace(&mut self.state, State::Finished)
                else {
                    return Err(Misuse::Other("state changed during verification").into());
                };
                let (next, out) = s.advance(ctx, verified, rng);
                self.state = State::AwaitingShares(next);
                Ok(Some(ToAggregator::ShareKeys(out)))
            }
            (State::AwaitingShares(s), ToSite::RoutedShares(m)) => {
                let verified = s.verify(ctx, m)?;
                let State::AwaitingShares(s) = std::mem::replace(&mut self.state, State::Finished)
                else {
                    return Err(Misuse::Other("state changed during verification").into());
                };
                let (next, out) = s.advance(ctx, verified);
                self.state = State::AwaitingSurvivors(next);
                Ok(Some(ToAggregator::MaskedInput(out)))
            }
            (State::AwaitingSurvivors(s), ToSite::SurvivorSet(m)) => {
                let proof = s.verify(ctx, m)?;
                let State::AwaitingSurvivors(s) =
                    std::mem::replace(&mut self.state, State::Finished)
                else {
                    return Err(Misuse::Other("state changed during verification").into());
                };
                let (next, out) = s.advance(ctx, m.survivors.clone(), proof);
                self.state = State::AwaitingUnmask(next);
                Ok(Some(ToAggregator::ConsistencySignature(out)))
            }
            (State::AwaitingUnmask(s), ToSite::UnmaskRequest(m)) => match s.verify(ctx, m) {
                Ok(proof) => {
                    let out = s.reveal(ctx, proof)?;
                    self.state = State::Finished;
                    Ok(Some(ToAggregator::UnmaskShares(out)))
                }
                Err(Fail::Reject(e)) => Err(e),
                Err(Fail::Abort(e)) => {
                    self.state = State::Aborted(e.clone());
                    Err(e)
                }
            },
            _ => Err(Ctx::agg(Misbehaviour::WrongPhase {
                phase: self.phase(),
                message: msg.name(),
            })),
        }
    }
}

enum Fail {
    Reject(Error),
    Abort(Error),
}

impl SiteRole for Site {
    type Input = Vec<u64>;
    type Upload = ToAggregator;
    type Download = ToSite;
    type Error = Error;

    fn site_id(&self) -> SiteId {
        self.ctx.id
    }

    fn start<R: CryptoRng + ?Sized>(
        &mut self,
        input: Vec<u64>,
        rng: &mut R,
    ) -> Result<ToAggregator, Error> {
        Site::start(self, input, rng)
    }

    fn handle<R: CryptoRng + ?Sized>(
        &mut self,
        download: ToSite,
        rng: &mut R,
    ) -> Result<Option<ToAggregator>, Error> {
        Site::handle(self, download, rng)
    }

    fn is_done(&self) -> bool {
        matches!(self.state, State::Finished | State::Aborted(_))
    }
}
