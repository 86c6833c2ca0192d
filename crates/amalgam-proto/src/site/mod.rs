//! The site state machine (spec §5.1): Bonawitz et al. 2017 rounds 0-4, client side.
//!
//! One type per state; a transition first *verifies* the incoming message against the
//! borrowed state (yielding a zero-sized proof value on success), then *consumes* the state to
//! build the next one. Verification failures therefore leave the state unchanged; only the
//! spec's abort conditions (an equivocating survivor set) move the site to `Aborted`.
//!
//! Crash safety (spec §8.1): all of a round's randomness comes from one [`RoundSeed`] drawn in
//! [`Site::start`] and kept in the state, so every transition is a pure function of (state,
//! download); the site keeps the download it answered last and the upload it answered with,
//! so a re-delivered identical download gets the identical bytes and a different one for that
//! phase is refused; every wait has a persisted deadline, past which the site abandons the
//! round; a [`RoundLog`] refuses round ids used before; and uploads leave only through
//! [`Outgoing::release`] against a snapshot of the new state.
//!
//! This file holds the types (context, session, proofs, states) and the [`Site`] driver that
//! dispatches each download; `states` holds each state's verify/advance transition code,
//! `durable` the persistence types and `snapshot` the persisted form (spec §8).

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use x25519_dalek::PublicKey;
use zeroize::Zeroizing;

use crate::codec::{Decode, Encode};
use crate::crypto::kdf::masking_round_context;
use crate::crypto::round_seed::RoundSeed;
use crate::crypto::share_box::SharePair;
use crate::crypto::sign;
use crate::error::{Error, Misbehaviour, Misuse, Sender};
use crate::messages::*;
use crate::params::{Manifest, RoundParams, SiteId};
use crate::phase::Phase;
use crate::roles::SiteRole;

mod durable;
mod snapshot;
mod states;

use durable::StateVersion;
pub use durable::{Outgoing, PhaseTimeout, RoundLog, SiteSnapshot, Timestamp};
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
    timeout: PhaseTimeout,
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

/// The canonical form of an X25519 public key (spec §4.3): the u-coordinate reduced mod
/// p = 2^255 − 19 with bit 255 cleared. X25519 ignores bit 255 and reduces u mod p, so keys
/// that differ only there are the same key: the reuse checks compare canonical forms.
pub(crate) fn canonical_x25519(pk: &[u8; 32]) -> [u8; 32] {
    let mut u = *pk;
    u[31] &= 0x7f;
    // u >= p exactly when u = p + r, r in 0..19: bytes 0xed+r, 0xff x 30, 0x7f.
    if u[31] == 0x7f && u[1..31].iter().all(|&b| b == 0xff) && u[0] >= 0xed {
        let r = u[0] - 0xed;
        u = [0; 32];
        u[0] = r;
    }
    u
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
    seed: RoundSeed,
    input: Zeroizing<Vec<u64>>,
    advert: AdvertiseKeys,
}

struct AwaitingShares {
    /// Kept until the masked input is kept: c_sk, s_sk and b are derived from it.
    seed: RoundSeed,
    input: Zeroizing<Vec<u64>>,
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
    /// The deadline of a wait passed: the round is given up (spec §8.1).
    Abandoned,
}

impl State {
    fn phase(&self) -> Phase {
        match self {
            State::Ready | State::AwaitingKeys(_) => Phase::AdvertiseKeys,
            State::AwaitingShares(_) => Phase::ShareKeys,
            State::AwaitingSurvivors(_) => Phase::MaskedInput,
            State::AwaitingUnmask(_) => Phase::ConsistencyCheck,
            State::Finished => Phase::Finished,
            State::Aborted(_) | State::Abandoned => Phase::Aborted,
        }
    }

    /// Whether the site is waiting for a download (and so has a deadline).
    fn is_waiting(&self) -> bool {
        matches!(
            self,
            State::AwaitingKeys(_)
                | State::AwaitingShares(_)
                | State::AwaitingSurvivors(_)
                | State::AwaitingUnmask(_)
        )
    }
}

/// The last exchange: the download answered (its SHA-256, none for `start`) and the upload
/// sent for it, kept so that a re-delivery gets the identical bytes.
#[derive(Clone)]
struct Answered {
    download: Option<[u8; 32]>,
    /// Which download message `download` was (its name), to refuse a different one.
    download_name: Option<&'static str>,
    upload: ToAggregator,
}

fn digest(msg: &ToSite) -> [u8; 32] {
    Sha256::digest(msg.to_bytes()).into()
}

/// A site's state machine for one round.
pub struct Site {
    ctx: Ctx,
    state: State,
    /// When the current wait ends (persisted); `None` when not waiting.
    deadline: Option<Timestamp>,
    answered: Option<Answered>,
    /// This instance's tag and transition count; ties an [`Outgoing`] to its [`SiteSnapshot`].
    version: StateVersion,
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
    /// digest as context digest (no model binding; see [`Site::with_context_digest`]). Claims
    /// `round` in `rounds`: a round id at or below its high-water mark is refused
    /// ([`Misuse::RoundReused`]); persist `rounds` before the first upload leaves.
    pub fn new(
        params: RoundParams,
        manifest: Manifest,
        round: u64,
        identity: SigningKey,
        timeout: PhaseTimeout,
        rounds: &mut RoundLog,
    ) -> Result<Self, Error> {
        let context_digest = manifest.digest();
        Self::with_context_digest(
            params,
            manifest,
            context_digest,
            round,
            identity,
            timeout,
            rounds,
        )
    }

    /// A site whose round context binds the caller's `context_digest` (spec §4.1: a
    /// commitment to the consortium manifest and the model being trained). Claims `round` in
    /// `rounds` as [`Site::new`] does.
    pub fn with_context_digest(
        params: RoundParams,
        manifest: Manifest,
        context_digest: [u8; 32],
        round: u64,
        identity: SigningKey,
        timeout: PhaseTimeout,
        rounds: &mut RoundLog,
    ) -> Result<Self, Error> {
        let site = Self::build(params, manifest, context_digest, round, identity, timeout)?;
        rounds.claim(round)?;
        Ok(site)
    }

    /// The state machine before any round-id bookkeeping (shared with restore).
    fn build(
        params: RoundParams,
        manifest: Manifest,
        context_digest: [u8; 32],
        round: u64,
        identity: SigningKey,
        timeout: PhaseTimeout,
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
                timeout,
            },
            state: State::Ready,
            deadline: None,
            answered: None,
            version: StateVersion::fresh(),
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

    /// The phase whose download the site is waiting for (`AdvertiseKeys` before start;
    /// `Aborted` once aborted or abandoned).
    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// When the current wait ends, if the site is waiting for a download.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.deadline
    }

    /// Whether the site gave the round up because a deadline passed.
    pub fn is_abandoned(&self) -> bool {
        matches!(self.state, State::Abandoned)
    }

    /// Whether the site has nothing more to do in this round (finished, aborted, abandoned).
    pub fn is_done(&self) -> bool {
        matches!(
            self.state,
            State::Finished | State::Aborted(_) | State::Abandoned
        )
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
            State::Abandoned => "Abandoned",
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

    /// The persisted form of the current state (spec §8), wiped on drop, with the proof an
    /// [`Outgoing`] of this state needs to be released.
    pub fn snapshot(&self) -> SiteSnapshot {
        SiteSnapshot::new(
            self.encode_state(),
            self.version,
            self.ctx.round,
            self.state_tag(),
        )
    }

    /// The last upload again (a lost upload, e.g. the advertisement, which no download
    /// re-triggers). Released like any other, against a snapshot of the current state.
    pub fn resend(&self) -> Option<Outgoing> {
        self.answered
            .as_ref()
            .map(|a| Outgoing::new(a.upload.clone(), self.version))
    }

    /// Records a transition: the new state, its deadline, the answered exchange.
    fn advance_to(&mut self, state: State, now: Timestamp, answered: Answered) -> Outgoing {
        self.deadline = state.is_waiting().then(|| now.after(self.ctx.timeout));
        self.state = state;
        self.version.bump();
        let out = Outgoing::new(answered.upload.clone(), self.version);
        self.answered = Some(answered);
        out
    }

    /// Gives the round up (deadline passed): the state and its secrets are dropped.
    fn abandon(&mut self) -> Error {
        self.state = State::Abandoned;
        self.deadline = None;
        self.answered = None;
        self.version.bump();
        Error::RoundAbandoned {
            round: self.ctx.round,
        }
    }

    /// Round 0 (spec §5.1 S0): checks the input, draws the round seed (the only randomness
    /// of the round), derives the c and s key pairs from it and signs their public keys.
    pub fn start<R: CryptoRng + ?Sized>(
        &mut self,
        input: Vec<u64>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Outgoing, Error> {
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
        let seed = RoundSeed::draw(rng);
        let (rc, round, id) = (&self.ctx.round_context, self.ctx.round, self.ctx.id);
        let mut advert = AdvertiseKeys {
            round,
            sender: id,
            c_pk: PublicKey::from(&seed.c_sk(rc, round, id)).to_bytes(),
            s_pk: PublicKey::from(&seed.s_sk(rc, round, id)).to_bytes(),
            signature: [0; 64],
        };
        advert.signature = sign::sign_message(&self.ctx.identity, rc, &advert.body());
        let upload = ToAggregator::AdvertiseKeys(advert.clone());
        let state = State::AwaitingKeys(AwaitingKeys {
            seed,
            input,
            advert,
        });
        let answered = Answered {
            download: None,
            download_name: None,
            upload,
        };
        Ok(self.advance_to(state, now, answered))
    }

    /// Decodes and handles one download (errors name the aggregator for undecodable bytes).
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Timestamp) -> Result<Outgoing, Error> {
        let msg = ToSite::from_bytes(bytes, &self.ctx.params)
            .map_err(|e| Error::decode(Sender::Aggregator, e))?;
        self.handle(msg, now)
    }

    /// Handles one download at time `now`. On `Err` the state is unchanged, except for abort
    /// conditions (after which every call returns [`Error::Aborted`]) and a passed deadline
    /// (the round is abandoned: [`Error::RoundAbandoned`]).
    ///
    /// The download answered last, delivered again byte for byte, gets the identical upload
    /// again; a different download for that phase is refused
    /// ([`Misbehaviour::ConflictingRedelivery`]).
    pub fn handle(&mut self, msg: ToSite, now: Timestamp) -> Result<Outgoing, Error> {
        match &self.state {
            State::Aborted(e) => return Err(Error::Aborted(Box::new(e.clone()))),
            State::Abandoned => {
                return Err(Error::RoundAbandoned {
                    round: self.ctx.round,
                });
            }
            _ => {}
        }
        if self.deadline.is_some_and(|d| now >= d) {
            return Err(self.abandon());
        }
        if msg.round() != self.ctx.round {
            return Err(Ctx::agg(Misbehaviour::WrongRound {
                expected: self.ctx.round,
                got: msg.round(),
            }));
        }
        let dig = digest(&msg);
        if let Some(a) = &self.answered
            && a.download_name == Some(msg.name())
        {
            if a.download == Some(dig) {
                return Ok(Outgoing::new(a.upload.clone(), self.version));
            }
            return Err(Ctx::agg(Misbehaviour::ConflictingRedelivery {
                message: msg.name(),
            }));
        }
        let ctx = &self.ctx;
        let answered = |upload| Answered {
            download: Some(dig),
            download_name: Some(msg.name()),
            upload,
        };
        let (state, upload) = match (&self.state, &msg) {
            (State::AwaitingKeys(s), ToSite::KeysBroadcast(m)) => {
                let verified = s.verify(ctx, m)?;
                let State::AwaitingKeys(s) = std::mem::replace(&mut self.state, State::Finished)
                else {
                    return Err(Misuse::Other("state changed during verification").into());
                };
                let (next, out) = s.advance(ctx, verified);
                (State::AwaitingShares(next), ToAggregator::ShareKeys(out))
            }
            (State::AwaitingShares(s), ToSite::RoutedShares(m)) => {
                let verified = s.verify(ctx, m)?;
                let State::AwaitingShares(s) = std::mem::replace(&mut self.state, State::Finished)
                else {
                    return Err(Misuse::Other("state changed during verification").into());
                };
                // The round seed (and with it c_sk, s_sk, b and the input) is dropped here,
                // wiped, once the masked input is kept in the state.
                let (next, out) = s.advance(ctx, verified);
                (
                    State::AwaitingSurvivors(next),
                    ToAggregator::MaskedInput(out),
                )
            }
            (State::AwaitingSurvivors(s), ToSite::SurvivorSet(m)) => {
                let proof = s.verify(ctx, m)?;
                let State::AwaitingSurvivors(s) =
                    std::mem::replace(&mut self.state, State::Finished)
                else {
                    return Err(Misuse::Other("state changed during verification").into());
                };
                let (next, out) = s.advance(ctx, m.survivors.clone(), proof);
                (
                    State::AwaitingUnmask(next),
                    ToAggregator::ConsistencySignature(out),
                )
            }
            (State::AwaitingUnmask(s), ToSite::UnmaskRequest(m)) => match s.verify(ctx, m) {
                Ok(proof) => {
                    let out = s.reveal(ctx, proof)?;
                    (State::Finished, ToAggregator::UnmaskShares(out))
                }
                Err(Fail::Reject(e)) => return Err(e),
                Err(Fail::Abort(e)) => {
                    self.state = State::Aborted(e.clone());
                    self.deadline = None;
                    self.answered = None;
                    self.version.bump();
                    return Err(e);
                }
            },
            _ => {
                return Err(Ctx::agg(Misbehaviour::WrongPhase {
                    phase: self.phase(),
                    message: msg.name(),
                }));
            }
        };
        let answered = answered(upload);
        Ok(self.advance_to(state, now, answered))
    }
}

enum Fail {
    Reject(Error),
    Abort(Error),
}

/// A download and the caller's clock reading when it arrived (the [`SiteRole`] download of
/// the masking site, which needs the time for its deadline).
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The download.
    pub message: ToSite,
    /// The current time.
    pub now: Timestamp,
}

/// The masking site's input to [`SiteRole::start`]: the vector and the current time.
#[derive(Debug, Clone)]
pub struct RoundInput {
    /// One element per vector position, each in [0, 2^b).
    pub input: Vec<u64>,
    /// The current time.
    pub now: Timestamp,
}

impl SiteRole for Site {
    type Input = RoundInput;
    type Upload = Outgoing;
    type Download = Delivery;
    type Error = Error;

    fn site_id(&self) -> SiteId {
        self.ctx.id
    }

    fn start<R: CryptoRng + ?Sized>(
        &mut self,
        input: RoundInput,
        rng: &mut R,
    ) -> Result<Outgoing, Error> {
        Site::start(self, input.input, input.now, rng)
    }

    /// The round's randomness was drawn in `start`: `rng` is not used.
    fn handle<R: CryptoRng + ?Sized>(
        &mut self,
        download: Delivery,
        _rng: &mut R,
    ) -> Result<Option<Outgoing>, Error> {
        Site::handle(self, download.message, download.now).map(Some)
    }

    fn is_done(&self) -> bool {
        Site::is_done(self)
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_x25519;

    #[test]
    fn x25519_aliases_have_one_canonical_form() {
        let mut k = [0x42u8; 32];
        k[31] = 0x12;
        let mut high = k;
        high[31] |= 0x80;
        assert_eq!(canonical_x25519(&high), canonical_x25519(&k));
        assert_eq!(canonical_x25519(&k), k, "a canonical key is unchanged");
        // p + 5 and 5 (u is taken mod p), with and without bit 255.
        let mut p_plus_5 = [0xffu8; 32];
        p_plus_5[0] = 0xed + 5;
        p_plus_5[31] = 0x7f;
        let mut five = [0u8; 32];
        five[0] = 5;
        assert_eq!(canonical_x25519(&p_plus_5), five);
        p_plus_5[31] = 0xff;
        assert_eq!(canonical_x25519(&p_plus_5), five);
        // p − 1 is canonical.
        let mut p_minus_1 = [0xffu8; 32];
        p_minus_1[0] = 0xec;
        p_minus_1[31] = 0x7f;
        assert_eq!(canonical_x25519(&p_minus_1), p_minus_1);
        // And X25519 agrees: both forms give the same shared secret.
        let sk = x25519_dalek::StaticSecret::from([9u8; 32]);
        let a = sk.diffie_hellman(&x25519_dalek::PublicKey::from(k));
        let b = sk.diffie_hellman(&x25519_dalek::PublicKey::from(high));
        assert_eq!(a.as_bytes(), b.as_bytes());
    }
}
