//! The site state machine (spec §5.1): Bonawitz et al. 2017 rounds 0-4, client side.
//!
//! One type per state; a transition first *verifies* the incoming message against the
//! borrowed state (yielding a zero-sized proof value on success), then *consumes* the state to
//! build the next one. Verification failures therefore leave the state unchanged; only the
//! spec's abort conditions (an equivocating survivor set) move the site to `Aborted`.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;
use rand_core::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::codec::{Decode, Encode, Reader, Writer, msg_type};
use crate::crypto::kdf::{self, round_context};
use crate::crypto::share_box::{self, SharePair};
use crate::crypto::{shamir, sign};
use crate::error::{DecodeError, Error, Misbehaviour, Misuse, Sender};
use crate::masking::{MaskSign, MaskTerm, mask_and_pack};
use crate::messages::*;
use crate::params::{Manifest, RoundParams, SiteId};
use crate::phase::Phase;
use crate::roles::{SiteRole, Snapshot};

/// Immutable context of one site in one round.
struct Ctx {
    params: RoundParams,
    manifest: Manifest,
    round: u64,
    id: SiteId,
    identity: SigningKey,
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
    /// A site for `round`, identified by `identity` (must be in `manifest`).
    pub fn new(
        params: RoundParams,
        manifest: Manifest,
        round: u64,
        identity: SigningKey,
    ) -> Result<Self, Error> {
        manifest.check(&params)?;
        let id = manifest
            .index_of(&identity.verifying_key())
            .ok_or(Misuse::Other(
                "identity key is not in the consortium manifest",
            ))?;
        let round_context = round_context(&manifest, &params, round);
        Ok(Self {
            ctx: Ctx {
                params,
                manifest,
                round,
                id,
                identity,
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

impl AwaitingKeys {
    /// Spec §5.1 S1 checks.
    fn verify(&self, ctx: &Ctx, m: &KeysBroadcast) -> Result<(Session, AdvertsVerified), Error> {
        let p = &ctx.params;
        let mut peers = BTreeMap::new();
        let mut seen_keys = BTreeSet::new();
        for a in &m.adverts {
            let key = ctx
                .manifest
                .key(a.sender)
                .filter(|_| p.contains(a.sender))
                .ok_or(Error::peer(
                    Sender::UnknownSite(a.sender.0),
                    Misbehaviour::UnknownIdentity,
                ))?;
            let who = Sender::Site(a.sender);
            if a.round != ctx.round {
                return Err(Error::peer(
                    who,
                    Misbehaviour::WrongRound {
                        expected: ctx.round,
                        got: a.round,
                    },
                ));
            }
            if !sign::verify_message(key, &ctx.round_context, &a.body(), &a.signature) {
                return Err(Error::peer(who, Misbehaviour::BadSignature));
            }
            if a.sender == ctx.id && *a != self.advert {
                return Err(Ctx::agg(Misbehaviour::Invalid(
                    "broadcast carries another advertisement for this site",
                )));
            }
            if is_low_order(&a.c_pk) || is_low_order(&a.s_pk) {
                return Err(Error::peer(
                    who,
                    Misbehaviour::Invalid("low-order X25519 public key"),
                ));
            }
            if !seen_keys.insert(a.c_pk) || !seen_keys.insert(a.s_pk) {
                return Err(Error::peer(who, Misbehaviour::KeyReuse));
            }
            peers.insert(
                a.sender,
                PeerKeys {
                    c_pk: a.c_pk,
                    s_pk: a.s_pk,
                },
            );
        }
        if !peers.contains_key(&ctx.id) {
            return Err(Ctx::agg(Misbehaviour::Invalid(
                "broadcast omits this site's advertisement",
            )));
        }
        let needed = p.min_cohort().get() as usize;
        if peers.len() < needed {
            return Err(Error::NotEnoughSites {
                phase: Phase::AdvertiseKeys,
                needed,
                got: peers.len(),
            });
        }
        let got = ctx.closed_count(peers.keys());
        if got < p.t() {
            return Err(Error::NotEnoughSites {
                phase: Phase::AdvertiseKeys,
                needed: p.t(),
                got,
            });
        }
        let encoded: Vec<Vec<u8>> = m.adverts.iter().map(Encode::to_bytes).collect();
        let id = kdf::session_id(&ctx.round_context, encoded.iter().map(Vec::as_slice));
        Ok((Session { id, peers }, AdvertsVerified(())))
    }

    /// Spec §5.1 S1: fresh b, Shamir shares of s_sk and b for N[u] ∩ U1, encrypted.
    fn advance<R: CryptoRng + ?Sized>(
        self,
        ctx: &Ctx,
        (session, _proof): (Session, AdvertsVerified),
        rng: &mut R,
    ) -> (AwaitingShares, ShareKeys) {
        let p = &ctx.params;
        let mut b_seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(b_seed.as_mut());
        let holders: Vec<SiteId> = session
            .peers
            .keys()
            .copied()
            .filter(|&v| v == ctx.id || p.are_neighbours(ctx.id, v))
            .collect();
        let xs: Vec<u8> = holders.iter().map(|h| h.share_x()).collect();
        let s_bytes = Zeroizing::new(self.s_sk.to_bytes());
        // Holders are distinct manifest indices (< 255) and 1 <= t <= holders: split cannot fail.
        #[allow(clippy::expect_used)]
        let s_shares = shamir::split(&s_bytes, p.t(), &xs, rng).expect("valid share coordinates");
        #[allow(clippy::expect_used)]
        let b_shares = shamir::split(&b_seed, p.t(), &xs, rng).expect("valid share coordinates");
        let mut own = None;
        let mut shares = Vec::with_capacity(holders.len());
        for ((v, s), b) in holders.iter().zip(s_shares).zip(b_shares) {
            let pair = SharePair { s: s.y, b: b.y };
            if *v == ctx.id {
                own = Some(pair);
                continue;
            }
            let peer = &session.peers[v];
            let shared = self.c_sk.diffie_hellman(&PublicKey::from(peer.c_pk));
            let key = kdf::share_key(&session.id, shared.as_bytes(), ctx.id, *v);
            shares.push((
                *v,
                share_box::seal(&key, &session.id, ctx.round, ctx.id, *v, &pair),
            ));
        }
        let mut msg = ShareKeys {
            round: ctx.round,
            sender: ctx.id,
            b_commitment: kdf::b_commitment(&session.id, ctx.id, &b_seed),
            shares,
            signature: [0; 64],
        };
        msg.signature = sign::sign_message(&ctx.identity, &session.id, &msg.body());
        #[allow(clippy::expect_used)]
        let own = own.expect("a site always holds its own share");
        let next = AwaitingShares {
            c_sk: self.c_sk,
            s_sk: self.s_sk,
            input: self.input,
            b_seed,
            session,
            own,
        };
        (next, msg)
    }
}

impl AwaitingShares {
    /// Spec §5.1 S2 checks.
    fn verify(
        &self,
        ctx: &Ctx,
        m: &RoutedShares,
    ) -> Result<(BTreeMap<SiteId, SharePair>, SharesVerified), Error> {
        let p = &ctx.params;
        let mut received = BTreeMap::new();
        for (from, ct) in &m.shares {
            if !p.are_neighbours(ctx.id, *from) {
                return Err(Ctx::agg(Misbehaviour::NotNeighbour(*from)));
            }
            let Some(peer) = self.session.peers.get(from) else {
                return Err(Ctx::agg(Misbehaviour::Invalid(
                    "routed share from a site outside U1",
                )));
            };
            let shared = self.c_sk.diffie_hellman(&PublicKey::from(peer.c_pk));
            let key = kdf::share_key(&self.session.id, shared.as_bytes(), *from, ctx.id);
            let pair =
                share_box::open(&key, &self.session.id, ctx.round, *from, ctx.id, ct).ok_or(
                    Error::peer(Sender::Site(*from), Misbehaviour::ShareAuthentication),
                )?;
            received.insert(*from, pair);
        }
        let got = received.len() + 1;
        if got < p.t() {
            return Err(Error::NotEnoughSites {
                phase: Phase::ShareKeys,
                needed: p.t(),
                got,
            });
        }
        Ok((received, SharesVerified(())))
    }

    /// Spec §5.1 S2: y = x + PRG(b) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv) mod 2^B.
    fn advance(
        self,
        ctx: &Ctx,
        (mut held, _proof): (BTreeMap<SiteId, SharePair>, SharesVerified),
    ) -> (AwaitingSurvivors, MaskedInput) {
        let p = &ctx.params;
        let sid = &self.session.id;
        let mut terms = Vec::with_capacity(held.len() + 1);
        terms.push(MaskTerm {
            key: kdf::self_mask_key(sid, &self.b_seed, p, ctx.round, ctx.id),
            sign: MaskSign::Add,
        });
        for v in held.keys() {
            let peer = &self.session.peers[v];
            let shared = self.s_sk.diffie_hellman(&PublicKey::from(peer.s_pk));
            let key = kdf::pair_mask_key(sid, shared.as_bytes(), p, ctx.round, ctx.id, *v);
            let sign = if *v > ctx.id {
                MaskSign::Add
            } else {
                MaskSign::Subtract
            };
            terms.push(MaskTerm { key, sign });
        }
        let packed = mask_and_pack(&self.input, &terms, p.sum_bits());
        let mut msg = MaskedInput {
            round: ctx.round,
            sender: ctx.id,
            packed,
            signature: [0; 64],
        };
        msg.signature = sign::sign_message(&ctx.identity, sid, &msg.body());
        held.insert(ctx.id, self.own);
        (
            AwaitingSurvivors {
                session: self.session,
                held,
            },
            msg,
        )
    }
}

impl AwaitingSurvivors {
    /// Spec §5.1 S3 checks.
    fn verify(&self, ctx: &Ctx, m: &SurvivorSet) -> Result<SurvivorsChecked, Error> {
        let p = &ctx.params;
        for v in &m.survivors {
            if !self.session.peers.contains_key(v) {
                return Err(Ctx::agg(Misbehaviour::Invalid(
                    "survivor set names a site outside U1",
                )));
            }
            if p.are_neighbours(ctx.id, *v) && !self.held.contains_key(v) {
                return Err(Ctx::agg(Misbehaviour::Invalid(
                    "survivor set names a neighbour whose shares this site never received",
                )));
            }
        }
        if !m.survivors.contains(&ctx.id) {
            return Err(Ctx::agg(Misbehaviour::Invalid(
                "survivor set omits this site",
            )));
        }
        let needed = usize::from(p.min_cohort().get());
        if m.survivors.len() < needed {
            return Err(Error::NotEnoughSites {
                phase: Phase::MaskedInput,
                needed,
                got: m.survivors.len(),
            });
        }
        let got = ctx.closed_count(&m.survivors);
        if got < p.t() {
            return Err(Error::NotEnoughSites {
                phase: Phase::MaskedInput,
                needed: p.t(),
                got,
            });
        }
        Ok(SurvivorsChecked(()))
    }

    /// Spec §5.1 S3: sign (session id, U3). The site will never sign another set this round.
    fn advance(
        self,
        ctx: &Ctx,
        survivors: Vec<SiteId>,
        _proof: SurvivorsChecked,
    ) -> (AwaitingUnmask, ConsistencySignature) {
        let signature = sign::sign_survivors(&ctx.identity, &self.session.id, &survivors);
        let msg = ConsistencySignature {
            round: ctx.round,
            sender: ctx.id,
            signature,
        };
        (
            AwaitingUnmask {
                session: self.session,
                held: self.held,
                survivors,
            },
            msg,
        )
    }
}

impl AwaitingUnmask {
    /// Spec §5.1 S4 checks: every signature is over exactly the set this site signed (else
    /// abort: the aggregator equivocated), and at least t of them come from N[u].
    fn verify(&self, ctx: &Ctx, m: &UnmaskRequest) -> Result<ConsistencyVerified, Fail> {
        let p = &ctx.params;
        for (signer, sig) in &m.signatures {
            if self.survivors.binary_search(signer).is_err() {
                return Err(Fail::Reject(Ctx::agg(Misbehaviour::Invalid(
                    "consistency signature from a non-survivor",
                ))));
            }
            let Some(key) = ctx.manifest.key(*signer) else {
                return Err(Fail::Reject(Error::peer(
                    Sender::UnknownSite(signer.0),
                    Misbehaviour::UnknownIdentity,
                )));
            };
            if !sign::verify_survivors(key, &self.session.id, &self.survivors, sig) {
                return Err(Fail::Abort(Ctx::agg(Misbehaviour::InconsistentSurvivors(
                    *signer,
                ))));
            }
        }
        let got = ctx.closed_count(m.signatures.iter().map(|(s, _)| s));
        if got < p.t() {
            return Err(Fail::Reject(Error::NotEnoughSites {
                phase: Phase::ConsistencyCheck,
                needed: p.t(),
                got,
            }));
        }
        Ok(ConsistencyVerified(()))
    }

    /// Spec §5.1 S4: b-shares for held owners in U3, s_sk-shares for held owners not in U3.
    fn reveal(&self, ctx: &Ctx, _proof: ConsistencyVerified) -> Result<UnmaskShares, Error> {
        let mut b_shares = Vec::new();
        let mut s_shares = Vec::new();
        for (owner, pair) in &self.held {
            if self.survivors.binary_search(owner).is_ok() {
                b_shares.push((*owner, *pair.b));
            } else {
                s_shares.push((*owner, *pair.s));
            }
        }
        // Defence in depth: the two lists are disjoint by construction; never reveal both.
        if let Some((owner, _)) = b_shares
            .iter()
            .find(|(o, _)| s_shares.iter().any(|(x, _)| x == o))
        {
            return Err(Ctx::agg(Misbehaviour::BothSharesRequested(*owner)));
        }
        let mut msg = UnmaskShares {
            round: ctx.round,
            sender: ctx.id,
            b_shares,
            s_shares,
            signature: [0; 64],
        };
        msg.signature = sign::sign_message(&ctx.identity, &self.session.id, &msg.body());
        Ok(msg)
    }
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

// --- snapshot (spec §8) ----------------------------------------------------------------------

/// What restoring a site needs besides the snapshot bytes.
pub struct SiteRestore {
    /// The site's long-term identity key (never stored in the snapshot).
    pub identity: SigningKey,
    /// The consortium manifest (the snapshot stores only its digest).
    pub manifest: Manifest,
}

fn write_session(w: &mut Writer, s: &Session) {
    w.bytes(&s.id);
    w.count(s.peers.len());
    for (id, k) in &s.peers {
        w.u16(id.0);
        w.bytes(&k.c_pk);
        w.bytes(&k.s_pk);
    }
}

fn read_session(r: &mut Reader<'_>, p: &RoundParams) -> Result<Session, DecodeError> {
    let id = r.array("session.id")?;
    let n = r.count("session.peers.count", 1, p.n())?;
    let mut peers = BTreeMap::new();
    let mut last = None;
    for _ in 0..n {
        let sid = SiteId(r.u16("session.peer")?);
        if !p.contains(sid) || last.is_some_and(|l| l >= sid) {
            return Err(DecodeError::InvalidValue {
                field: "session.peer",
                reason: "out of range or not ascending",
            });
        }
        last = Some(sid);
        peers.insert(
            sid,
            PeerKeys {
                c_pk: r.array("session.c_pk")?,
                s_pk: r.array("session.s_pk")?,
            },
        );
    }
    Ok(Session { id, peers })
}

fn write_held(w: &mut Writer, held: &BTreeMap<SiteId, SharePair>) {
    w.count(held.len());
    for (id, pair) in held {
        w.u16(id.0);
        w.bytes(pair.s.as_ref());
        w.bytes(pair.b.as_ref());
    }
}

fn read_pair(r: &mut Reader<'_>) -> Result<SharePair, DecodeError> {
    Ok(SharePair {
        s: Zeroizing::new(r.array("share.s")?),
        b: Zeroizing::new(r.array("share.b")?),
    })
}

fn read_held(
    r: &mut Reader<'_>,
    p: &RoundParams,
) -> Result<BTreeMap<SiteId, SharePair>, DecodeError> {
    let n = r.count("held.count", 1, p.n())?;
    let mut held = BTreeMap::new();
    let mut last = None;
    for _ in 0..n {
        let sid = SiteId(r.u16("held.owner")?);
        if !p.contains(sid) || last.is_some_and(|l| l >= sid) {
            return Err(DecodeError::InvalidValue {
                field: "held.owner",
                reason: "out of range or not ascending",
            });
        }
        last = Some(sid);
        held.insert(sid, read_pair(r)?);
    }
    Ok(held)
}

fn write_input(w: &mut Writer, input: &[u64]) {
    w.count(input.len());
    for x in input {
        w.u64(*x);
    }
}

fn read_input(r: &mut Reader<'_>, p: &RoundParams) -> Result<Zeroizing<Vec<u64>>, DecodeError> {
    let d = r.count("input.count", p.d(), p.d())?;
    let max = p.input_bits().max_value();
    let mut v = Zeroizing::new(Vec::with_capacity(d));
    for _ in 0..d {
        let x = r.u64("input")?;
        if x > max {
            return Err(DecodeError::InvalidValue {
                field: "input",
                reason: "element >= 2^b",
            });
        }
        v.push(x);
    }
    Ok(v)
}

fn read_secret(r: &mut Reader<'_>, field: &'static str) -> Result<StaticSecret, DecodeError> {
    let b = Zeroizing::new(r.array::<32>(field)?);
    Ok(StaticSecret::from(*b))
}

impl Snapshot for Site {
    type Context = SiteRestore;
    type Error = Error;

    /// Versioned snapshot. Contains this site's round secrets: store it only on the site,
    /// encrypted at rest.
    fn snapshot(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.header(msg_type::SITE_SNAPSHOT);
        self.ctx.params.encode(&mut w);
        w.bytes(&self.ctx.manifest.digest());
        w.u64(self.ctx.round);
        w.u16(self.ctx.id.0);
        match &self.state {
            State::Ready => w.u8(0),
            State::AwaitingKeys(s) => {
                w.u8(1);
                w.bytes(s.c_sk.as_bytes());
                w.bytes(s.s_sk.as_bytes());
                write_input(&mut w, &s.input);
                s.advert.encode(&mut w);
            }
            State::AwaitingShares(s) => {
                w.u8(2);
                w.bytes(s.c_sk.as_bytes());
                w.bytes(s.s_sk.as_bytes());
                write_input(&mut w, &s.input);
                w.bytes(s.b_seed.as_ref());
                write_session(&mut w, &s.session);
                w.bytes(s.own.s.as_ref());
                w.bytes(s.own.b.as_ref());
            }
            State::AwaitingSurvivors(s) => {
                w.u8(3);
                write_session(&mut w, &s.session);
                write_held(&mut w, &s.held);
            }
            State::AwaitingUnmask(s) => {
                w.u8(4);
                write_session(&mut w, &s.session);
                write_held(&mut w, &s.held);
                w.count(s.survivors.len());
                for id in &s.survivors {
                    w.u16(id.0);
                }
            }
            State::Finished => w.u8(5),
            State::Aborted(_) => w.u8(6),
        }
        w.into_bytes()
    }

    fn restore(bytes: &[u8], ctx: &SiteRestore) -> Result<Self, Error> {
        let local = |e| Error::decode(Sender::Local, e);
        let mut r = Reader::new(bytes);
        r.expect_header(msg_type::SITE_SNAPSHOT).map_err(local)?;
        let params = RoundParams::decode(&mut r, &()).map_err(local)?;
        let digest: [u8; 32] = r.array("manifest_digest").map_err(local)?;
        if digest != ctx.manifest.digest() {
            return Err(local(DecodeError::InvalidValue {
                field: "manifest_digest",
                reason: "snapshot is for another manifest",
            }));
        }
        let round = r.u64("round").map_err(local)?;
        let id = SiteId(r.u16("site").map_err(local)?);
        let mut site = Site::new(params, ctx.manifest.clone(), round, ctx.identity.clone())?;
        if site.ctx.id != id {
            return Err(Misuse::IdentityMismatch(id).into());
        }
        let p = &site.ctx.params;
        let state = (|| -> Result<State, DecodeError> {
            Ok(match r.u8("state")? {
                0 => State::Ready,
                1 => {
                    let c_sk = read_secret(&mut r, "c_sk")?;
                    let s_sk = read_secret(&mut r, "s_sk")?;
                    let input = read_input(&mut r, p)?;
                    let advert = AdvertiseKeys::decode(&mut r, p)?;
                    if advert.sender != id || advert.round != round {
                        return Err(DecodeError::InvalidValue {
                            field: "advert",
                            reason: "not this site's advertisement",
                        });
                    }
                    State::AwaitingKeys(AwaitingKeys {
                        c_sk,
                        s_sk,
                        input,
                        advert,
                    })
                }
                2 => {
                    let c_sk = read_secret(&mut r, "c_sk")?;
                    let s_sk = read_secret(&mut r, "s_sk")?;
                    let input = read_input(&mut r, p)?;
                    let b_seed = Zeroizing::new(r.array("b_seed")?);
                    let session = read_session(&mut r, p)?;
                    let own = read_pair(&mut r)?;
                    State::AwaitingShares(AwaitingShares {
                        c_sk,
                        s_sk,
                        input,
                        b_seed,
                        session,
                        own,
                    })
                }
                3 => State::AwaitingSurvivors(AwaitingSurvivors {
                    session: read_session(&mut r, p)?,
                    held: read_held(&mut r, p)?,
                }),
                4 => {
                    let session = read_session(&mut r, p)?;
                    let held = read_held(&mut r, p)?;
                    let n = r.count("survivors.count", 1, p.n())?;
                    let mut survivors: Vec<SiteId> = Vec::with_capacity(n);
                    for _ in 0..n {
                        let s = SiteId(r.u16("survivors")?);
                        if !p.contains(s) || survivors.last().is_some_and(|l| *l >= s) {
                            return Err(DecodeError::InvalidValue {
                                field: "survivors",
                                reason: "out of range or not ascending",
                            });
                        }
                        survivors.push(s);
                    }
                    State::AwaitingUnmask(AwaitingUnmask {
                        session,
                        held,
                        survivors,
                    })
                }
                5 => State::Finished,
                6 => State::Aborted(Error::peer(
                    Sender::Local,
                    Misbehaviour::Invalid("aborted before the snapshot was taken"),
                )),
                _ => {
                    return Err(DecodeError::InvalidValue {
                        field: "state",
                        reason: "unknown state tag",
                    });
                }
            })
        })()
        .map_err(local)?;
        r.finish("SiteSnapshot").map_err(local)?;
        site.state = state;
        Ok(site)
    }
}
