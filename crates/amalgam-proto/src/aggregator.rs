//! The aggregator state machine (spec §5.2): collects each phase's uploads, closes a phase
//! with whoever has answered (dropouts), routes shares, runs the consistency check and
//! unmasks the sum. It holds no secret: everything it learns, a curious aggregator may know.
//!
//! `receive` validates an upload completely against the borrowed state before recording it,
//! so a rejected upload changes nothing. `close_phase` either advances (returning what to send
//! to whom) or fails with [`Error::NotEnoughSites`] and changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::codec::{Decode, Encode, Reader, Writer, msg_type};
use crate::crypto::kdf::{self, round_context};
use crate::crypto::shamir::{self, SecretShare};
use crate::crypto::sign;
use crate::error::{DecodeError, Error, Misbehaviour, Sender};
use crate::masking::{MaskSign, MaskTerm, unmask_sum};
use crate::messages::*;
use crate::params::{Manifest, RoundParams, SiteId};
use crate::phase::Phase;
use crate::roles::{AggregatorRole, AggregatorStep, Snapshot};
use crate::site::is_low_order;

/// The result of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateOutput {
    /// Σ x_u mod 2^B over the contributors, d elements.
    pub sum: Vec<u64>,
    /// U3: the sites whose inputs are in the sum, ascending.
    pub contributors: Vec<SiteId>,
    /// Sites that advertised keys (U1) but are not in the sum, ascending.
    pub dropped: Vec<SiteId>,
}

struct Ctx {
    params: RoundParams,
    manifest: Manifest,
    round: u64,
    round_context: [u8; 32],
}

impl Ctx {
    fn closed_count<'a>(&self, u: SiteId, set: impl IntoIterator<Item = &'a SiteId>) -> usize {
        set.into_iter()
            .filter(|&&v| v == u || self.params.are_neighbours(u, v))
            .count()
    }

    /// Smallest |N[u] ∩ set| over u in set, and the requirement t (Harary-aware).
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
    Finished(AggregateOutput),
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
    /// An aggregator for `round` over the consortium `manifest`.
    pub fn new(params: RoundParams, manifest: Manifest, round: u64) -> Result<Self, Error> {
        manifest.check(&params)?;
        let round_context = round_context(&manifest, &params, round);
        Ok(Self {
            ctx: Ctx {
                params,
                manifest,
                round,
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
            State::Finished(o) => Some(o),
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

    /// Decodes and receives one upload; undecodable bytes are blamed on `from` (the
    /// transport-authenticated sender).
    pub fn receive_bytes(&mut self, from: SiteId, bytes: &[u8]) -> Result<(), Error> {
        let msg = ToAggregator::from_bytes(bytes, &self.ctx.params)
            .map_err(|e| Error::decode(Sender::Site(from), e))?;
        self.receive(msg)
    }

    /// Receives one upload. Checks, in order: the sender is in the manifest, the round, the
    /// phase, duplicates, participation, the signature, then the content. On `Err` nothing changed.
    pub fn receive(&mut self, msg: ToAggregator) -> Result<(), Error> {
        let ctx = &self.ctx;
        let from = msg.sender();
        let Some(key) = ctx.manifest.key(from).filter(|_| ctx.params.contains(from)) else {
            return Err(Error::peer(
                Sender::UnknownSite(from.0),
                Misbehaviour::UnknownIdentity,
            ));
        };
        if msg.round() != ctx.round {
            return Err(site_err(
                from,
                Misbehaviour::WrongRound {
                    expected: ctx.round,
                    got: msg.round(),
                },
            ));
        }
        let phase = self.phase();
        match (&mut self.state, msg) {
            (State::CollectingKeys { adverts }, ToAggregator::AdvertiseKeys(m)) => {
                if adverts.contains_key(&from) {
                    return Err(site_err(from, Misbehaviour::Duplicate));
                }
                if !sign::verify_message(key, &ctx.round_context, &m.body(), &m.signature) {
                    return Err(site_err(from, Misbehaviour::BadSignature));
                }
                if is_low_order(&m.c_pk) || is_low_order(&m.s_pk) {
                    return Err(site_err(
                        from,
                        Misbehaviour::Invalid("low-order X25519 public key"),
                    ));
                }
                if m.c_pk == m.s_pk
                    || adverts.values().any(|a| {
                        [a.c_pk, a.s_pk]
                            .iter()
                            .any(|k| *k == m.c_pk || *k == m.s_pk)
                    })
                {
                    return Err(site_err(from, Misbehaviour::KeyReuse));
                }
                adverts.insert(from, m);
                Ok(())
            }
            (State::CollectingShares { session, shares }, ToAggregator::ShareKeys(m)) => {
                if shares.contains_key(&from) {
                    return Err(site_err(from, Misbehaviour::Duplicate));
                }
                if !session.adverts.contains_key(&from) {
                    return Err(site_err(from, Misbehaviour::NotParticipant));
                }
                if !sign::verify_message(key, &session.id, &m.body(), &m.signature) {
                    return Err(site_err(from, Misbehaviour::BadSignature));
                }
                // Recipients must be exactly N(from) ∩ U1, ascending (the decoder checked order).
                for (to, _) in &m.shares {
                    if !ctx.params.are_neighbours(from, *to) {
                        return Err(site_err(from, Misbehaviour::NotNeighbour(*to)));
                    }
                    if !session.adverts.contains_key(to) {
                        return Err(site_err(
                            from,
                            Misbehaviour::Invalid("share for a site outside U1"),
                        ));
                    }
                }
                let expected = session
                    .adverts
                    .keys()
                    .filter(|&&v| ctx.params.are_neighbours(from, v))
                    .count();
                if m.shares.len() != expected {
                    return Err(site_err(
                        from,
                        Misbehaviour::Invalid("missing share for a neighbour in U1"),
                    ));
                }
                shares.insert(from, m);
                Ok(())
            }
            (
                State::CollectingMasked {
                    session,
                    routing,
                    masked,
                },
                ToAggregator::MaskedInput(m),
            ) => {
                if masked.contains_key(&from) {
                    return Err(site_err(from, Misbehaviour::Duplicate));
                }
                if !routing.peers.contains_key(&from) {
                    return Err(site_err(from, Misbehaviour::NotParticipant));
                }
                if !sign::verify_message(key, &session.id, &m.body(), &m.signature) {
                    return Err(site_err(from, Misbehaviour::BadSignature));
                }
                masked.insert(from, m);
                Ok(())
            }
            (
                State::CollectingSignatures {
                    session,
                    survivors,
                    signatures,
                    ..
                },
                ToAggregator::ConsistencySignature(m),
            ) => {
                if signatures.contains_key(&from) {
                    return Err(site_err(from, Misbehaviour::Duplicate));
                }
                if survivors.binary_search(&from).is_err() {
                    return Err(site_err(from, Misbehaviour::NotParticipant));
                }
                if !sign::verify_survivors(key, &session.id, survivors, &m.signature) {
                    return Err(site_err(from, Misbehaviour::BadSignature));
                }
                signatures.insert(from, m.signature);
                Ok(())
            }
            (
                State::CollectingUnmask {
                    session,
                    routing,
                    survivors,
                    signatures,
                    responses,
                    ..
                },
                ToAggregator::UnmaskShares(m),
            ) => {
                if responses.contains_key(&from) {
                    return Err(site_err(from, Misbehaviour::Duplicate));
                }
                if !signatures.contains_key(&from) {
                    return Err(site_err(from, Misbehaviour::NotParticipant));
                }
                if !sign::verify_message(key, &session.id, &m.body(), &m.signature) {
                    return Err(site_err(from, Misbehaviour::BadSignature));
                }
                // Exactly: b-shares for (M_from ∩ U3) ∪ {from}, s-shares for M_from \ U3.
                let held = routing
                    .peers
                    .get(&from)
                    .map(|s| s.iter().copied())
                    .into_iter()
                    .flatten()
                    .chain([from]);
                let (want_b, want_s): (Vec<SiteId>, Vec<SiteId>) = held
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .partition(|v| survivors.binary_search(v).is_ok());
                let got_b: Vec<SiteId> = m.b_shares.iter().map(|(o, _)| *o).collect();
                let got_s: Vec<SiteId> = m.s_shares.iter().map(|(o, _)| *o).collect();
                if got_b != want_b || got_s != want_s {
                    return Err(site_err(
                        from,
                        Misbehaviour::Invalid("revealed shares do not match the survivor set"),
                    ));
                }
                responses.insert(from, m);
                Ok(())
            }
            (State::Finished(_), m) => Err(site_err(
                from,
                Misbehaviour::WrongPhase {
                    phase,
                    message: m.name(),
                },
            )),
            (_, m) => Err(site_err(
                from,
                Misbehaviour::WrongPhase {
                    phase,
                    message: m.name(),
                },
            )),
        }
    }

    /// Closes the current phase with whoever has answered (spec §5.2). On `Err`, nothing changed.
    pub fn close_phase(&mut self) -> Result<AggregatorStep<ToSite, AggregateOutput>, Error> {
        let round = self.ctx.round;
        let ctx = &self.ctx;
        let phase = self.phase();
        // Compute the next state (borrowing), then swap it in.
        let (next, step) = match &self.state {
            State::CollectingKeys { adverts } => {
                let u1: BTreeSet<SiteId> = adverts.keys().copied().collect();
                ctx.check_neighbourhoods(phase, &u1)?;
                let list: Vec<AdvertiseKeys> = adverts.values().cloned().collect();
                let encoded: Vec<Vec<u8>> = list.iter().map(Encode::to_bytes).collect();
                let id = kdf::session_id(&ctx.round_context, encoded.iter().map(Vec::as_slice));
                let msg = ToSite::KeysBroadcast(KeysBroadcast {
                    round,
                    adverts: list,
                });
                let sends = u1.iter().map(|&v| (v, msg.clone())).collect();
                let session = Session {
                    id,
                    adverts: adverts.clone(),
                };
                (
                    State::CollectingShares {
                        session,
                        shares: BTreeMap::new(),
                    },
                    AggregatorStep::Send(sends),
                )
            }
            State::CollectingShares { session, shares } => {
                let u2: BTreeSet<SiteId> = shares.keys().copied().collect();
                ctx.check_neighbourhoods(phase, &u2)?;
                let mut inbox: BTreeMap<SiteId, Vec<(SiteId, ShareCiphertext)>> =
                    u2.iter().map(|&v| (v, Vec::new())).collect();
                for (from, m) in shares {
                    for (to, ct) in &m.shares {
                        if let Some(list) = inbox.get_mut(to) {
                            list.push((*from, *ct));
                        }
                    }
                }
                let peers = inbox
                    .iter()
                    .map(|(v, l)| (*v, l.iter().map(|(f, _)| *f).collect()))
                    .collect();
                let commitments = shares.iter().map(|(v, m)| (*v, m.b_commitment)).collect();
                let sends = inbox
                    .into_iter()
                    .map(|(v, shares)| (v, ToSite::RoutedShares(RoutedShares { round, shares })))
                    .collect();
                let session = Session {
                    id: session.id,
                    adverts: session.adverts.clone(),
                };
                (
                    State::CollectingMasked {
                        session,
                        routing: Routing { peers, commitments },
                        masked: BTreeMap::new(),
                    },
                    AggregatorStep::Send(sends),
                )
            }
            State::CollectingMasked {
                session,
                routing,
                masked,
            } => {
                let u3: BTreeSet<SiteId> = masked.keys().copied().collect();
                ctx.check_neighbourhoods(phase, &u3)?;
                let survivors: Vec<SiteId> = u3.iter().copied().collect();
                let msg = ToSite::SurvivorSet(SurvivorSet {
                    round,
                    survivors: survivors.clone(),
                });
                let sends = survivors.iter().map(|&v| (v, msg.clone())).collect();
                (
                    State::CollectingSignatures {
                        session: Session {
                            id: session.id,
                            adverts: session.adverts.clone(),
                        },
                        routing: Routing {
                            peers: routing.peers.clone(),
                            commitments: routing.commitments.clone(),
                        },
                        masked: masked.clone(),
                        survivors,
                        signatures: BTreeMap::new(),
                    },
                    AggregatorStep::Send(sends),
                )
            }
            State::CollectingSignatures {
                session,
                routing,
                masked,
                survivors,
                signatures,
            } => {
                let u4: BTreeSet<SiteId> = signatures.keys().copied().collect();
                let t = ctx.params.t();
                let got = u4
                    .iter()
                    .map(|&u| ctx.closed_count(u, &u4))
                    .min()
                    .unwrap_or(0);
                if got < t {
                    return Err(Error::NotEnoughSites {
                        phase,
                        needed: t,
                        got,
                    });
                }
                let msg = ToSite::UnmaskRequest(UnmaskRequest {
                    round,
                    signatures: signatures.iter().map(|(k, v)| (*k, *v)).collect(),
                });
                let sends = u4.iter().map(|&v| (v, msg.clone())).collect();
                (
                    State::CollectingUnmask {
                        session: Session {
                            id: session.id,
                            adverts: session.adverts.clone(),
                        },
                        routing: Routing {
                            peers: routing.peers.clone(),
                            commitments: routing.commitments.clone(),
                        },
                        masked: masked.clone(),
                        survivors: survivors.clone(),
                        signatures: signatures.clone(),
                        responses: BTreeMap::new(),
                    },
                    AggregatorStep::Send(sends),
                )
            }
            State::CollectingUnmask {
                session,
                routing,
                masked,
                survivors,
                responses,
                ..
            } => {
                let out = unmask(ctx, session, routing, masked, survivors, responses)?;
                (State::Finished(out.clone()), AggregatorStep::Finished(out))
            }
            State::Finished(_) => {
                return Err(crate::error::Misuse::WrongPhase {
                    call: "close_phase",
                    phase,
                }
                .into());
            }
        };
        self.state = next;
        Ok(step)
    }
}

/// Spec §5.2 A4: recover b of every survivor and s_sk of every dropped peer of a survivor,
/// check each against its commitment / advertised key, and remove the masks.
fn unmask(
    ctx: &Ctx,
    session: &Session,
    routing: &Routing,
    masked: &BTreeMap<SiteId, MaskedInput>,
    survivors: &[SiteId],
    responses: &BTreeMap<SiteId, UnmaskShares>,
) -> Result<AggregateOutput, Error> {
    let p = &ctx.params;
    let t = p.t();
    // Index revealed shares by owner.
    let mut b_by_owner: BTreeMap<SiteId, Vec<SecretShare>> = BTreeMap::new();
    let mut s_by_owner: BTreeMap<SiteId, Vec<SecretShare>> = BTreeMap::new();
    for (holder, m) in responses {
        for (owner, y) in &m.b_shares {
            b_by_owner.entry(*owner).or_default().push(SecretShare {
                x: holder.share_x(),
                y: Zeroizing::new(*y),
            });
        }
        for (owner, y) in &m.s_shares {
            s_by_owner.entry(*owner).or_default().push(SecretShare {
                x: holder.share_x(),
                y: Zeroizing::new(*y),
            });
        }
    }
    // Dropped peers whose pairwise masks remain: D = (∪ M_u for u in U3) \ U3.
    let mut dropped_peers: BTreeMap<SiteId, Vec<SiteId>> = BTreeMap::new();
    for u in survivors {
        for v in routing.peers.get(u).into_iter().flatten() {
            if survivors.binary_search(v).is_err() {
                dropped_peers.entry(*v).or_default().push(*u);
            }
        }
    }
    // Feasibility first (needed/got), then recovery.
    let phase = Phase::Unmasking;
    for u in survivors {
        let got = b_by_owner.get(u).map_or(0, Vec::len);
        if got < t {
            return Err(Error::NotEnoughSites {
                phase,
                needed: t,
                got,
            });
        }
    }
    for v in dropped_peers.keys() {
        let got = s_by_owner.get(v).map_or(0, Vec::len);
        if got < t {
            return Err(Error::NotEnoughSites {
                phase,
                needed: t,
                got,
            });
        }
    }
    let sid = &session.id;
    let mut terms = Vec::new();
    for u in survivors {
        let commitment = routing.commitments.get(u).copied().unwrap_or([0; 32]);
        let shares = b_by_owner.get(u).map_or(&[][..], Vec::as_slice);
        let b = shamir::recover_checked(t, shares, |b| {
            bool::from(kdf::b_commitment(sid, *u, b).ct_eq(&commitment))
        })
        .map_err(|_| site_err(*u, Misbehaviour::RecoveredSecretMismatch(*u)))?;
        terms.push(MaskTerm {
            key: kdf::self_mask_key(sid, &b, p, ctx.round, *u),
            sign: MaskSign::Subtract,
        });
    }
    for (v, peers) in &dropped_peers {
        let advertised = session.adverts.get(v).map_or([0; 32], |a| a.s_pk);
        let shares = s_by_owner.get(v).map_or(&[][..], Vec::as_slice);
        let s_sk = shamir::recover_checked(t, shares, |s| {
            bool::from(
                PublicKey::from(&StaticSecret::from(*s))
                    .to_bytes()
                    .ct_eq(&advertised),
            )
        })
        .map_err(|_| site_err(*v, Misbehaviour::RecoveredSecretMismatch(*v)))?;
        let s_sk = StaticSecret::from(*s_sk);
        for u in peers {
            let Some(adv) = session.adverts.get(u) else {
                continue;
            };
            let shared = s_sk.diffie_hellman(&PublicKey::from(adv.s_pk));
            let key = kdf::pair_mask_key(sid, shared.as_bytes(), p, ctx.round, *u, *v);
            // u added +PRG if v > u, −PRG if v < u: remove it.
            let sign = if *v > *u {
                MaskSign::Subtract
            } else {
                MaskSign::Add
            };
            terms.push(MaskTerm { key, sign });
        }
    }
    let packed: Vec<&[u8]> = survivors
        .iter()
        .filter_map(|u| masked.get(u))
        .map(|m| m.packed.as_slice())
        .collect();
    let sum = unmask_sum(&packed, &terms, p.sum_bits(), p.d());
    let dropped = session
        .adverts
        .keys()
        .copied()
        .filter(|v| survivors.binary_search(v).is_err())
        .collect();
    Ok(AggregateOutput {
        sum,
        contributors: survivors.to_vec(),
        dropped,
    })
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

// --- snapshot (spec §8) ----------------------------------------------------------------------

fn write_msgs<'a, M: Encode + 'a>(w: &mut Writer, msgs: impl ExactSizeIterator<Item = &'a M>) {
    w.count(msgs.len());
    for m in msgs {
        m.encode(w);
    }
}

fn read_msgs<M: Decode<Context = RoundParams>>(
    r: &mut Reader<'_>,
    p: &RoundParams,
    field: &'static str,
    sender: impl Fn(&M) -> SiteId,
) -> Result<BTreeMap<SiteId, M>, DecodeError> {
    let n = r.count(field, 0, p.n())?;
    let mut out = BTreeMap::new();
    let mut last: Option<SiteId> = None;
    for _ in 0..n {
        let m = M::decode(r, p)?;
        let s = sender(&m);
        if !p.contains(s) || last.is_some_and(|l| l >= s) {
            return Err(DecodeError::InvalidValue {
                field,
                reason: "sender out of range or not ascending",
            });
        }
        last = Some(s);
        out.insert(s, m);
    }
    Ok(out)
}

fn write_ids<'a>(w: &mut Writer, ids: impl ExactSizeIterator<Item = &'a SiteId>) {
    w.count(ids.len());
    for i in ids {
        w.u16(i.0);
    }
}

fn read_ids(
    r: &mut Reader<'_>,
    p: &RoundParams,
    field: &'static str,
) -> Result<Vec<SiteId>, DecodeError> {
    let n = r.count(field, 0, p.n())?;
    let mut out: Vec<SiteId> = Vec::with_capacity(n);
    for _ in 0..n {
        let s = SiteId(r.u16(field)?);
        if !p.contains(s) || out.last().is_some_and(|l| *l >= s) {
            return Err(DecodeError::InvalidValue {
                field,
                reason: "out of range or not ascending",
            });
        }
        out.push(s);
    }
    Ok(out)
}

fn write_session(w: &mut Writer, s: &Session) {
    w.bytes(&s.id);
    write_msgs(w, s.adverts.values());
}

fn write_routing(w: &mut Writer, r: &Routing) {
    w.count(r.peers.len());
    for (v, peers) in &r.peers {
        w.u16(v.0);
        w.bytes(&r.commitments.get(v).copied().unwrap_or([0; 32]));
        write_ids(w, peers.iter());
    }
}

fn read_routing(r: &mut Reader<'_>, p: &RoundParams) -> Result<Routing, DecodeError> {
    let n = r.count("routing.count", 0, p.n())?;
    let mut peers = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    let mut last: Option<SiteId> = None;
    for _ in 0..n {
        let v = SiteId(r.u16("routing.site")?);
        if !p.contains(v) || last.is_some_and(|l| l >= v) {
            return Err(DecodeError::InvalidValue {
                field: "routing.site",
                reason: "out of range or not ascending",
            });
        }
        last = Some(v);
        commitments.insert(v, r.array("routing.commitment")?);
        peers.insert(v, read_ids(r, p, "routing.peers")?.into_iter().collect());
    }
    Ok(Routing { peers, commitments })
}

fn write_sigs(w: &mut Writer, sigs: &BTreeMap<SiteId, SignatureBytes>) {
    w.count(sigs.len());
    for (k, s) in sigs {
        w.u16(k.0);
        w.bytes(s);
    }
}

fn read_sigs(
    r: &mut Reader<'_>,
    p: &RoundParams,
) -> Result<BTreeMap<SiteId, SignatureBytes>, DecodeError> {
    let n = r.count("signatures.count", 0, p.n())?;
    let mut out = BTreeMap::new();
    let mut last: Option<SiteId> = None;
    for _ in 0..n {
        let v = SiteId(r.u16("signatures.signer")?);
        if !p.contains(v) || last.is_some_and(|l| l >= v) {
            return Err(DecodeError::InvalidValue {
                field: "signatures.signer",
                reason: "out of range or not ascending",
            });
        }
        last = Some(v);
        out.insert(v, r.array("signatures.signature")?);
    }
    Ok(out)
}

impl Snapshot for Aggregator {
    type Context = Manifest;
    type Error = Error;

    /// Versioned snapshot; holds no secret (everything in it the aggregator has seen).
    fn snapshot(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.header(msg_type::AGGREGATOR_SNAPSHOT);
        self.ctx.params.encode(&mut w);
        w.bytes(&self.ctx.manifest.digest());
        w.u64(self.ctx.round);
        w.u8(self.phase().code());
        match &self.state {
            State::CollectingKeys { adverts } => write_msgs(&mut w, adverts.values()),
            State::CollectingShares { session, shares } => {
                write_session(&mut w, session);
                write_msgs(&mut w, shares.values());
            }
            State::CollectingMasked {
                session,
                routing,
                masked,
            } => {
                write_session(&mut w, session);
                write_routing(&mut w, routing);
                write_msgs(&mut w, masked.values());
            }
            State::CollectingSignatures {
                session,
                routing,
                masked,
                survivors,
                signatures,
            } => {
                write_session(&mut w, session);
                write_routing(&mut w, routing);
                write_msgs(&mut w, masked.values());
                write_ids(&mut w, survivors.iter());
                write_sigs(&mut w, signatures);
            }
            State::CollectingUnmask {
                session,
                routing,
                masked,
                survivors,
                signatures,
                responses,
            } => {
                write_session(&mut w, session);
                write_routing(&mut w, routing);
                write_msgs(&mut w, masked.values());
                write_ids(&mut w, survivors.iter());
                write_sigs(&mut w, signatures);
                write_msgs(&mut w, responses.values());
            }
            State::Finished(out) => {
                write_ids(&mut w, out.contributors.iter());
                write_ids(&mut w, out.dropped.iter());
                w.count(out.sum.len());
                for x in &out.sum {
                    w.u64(*x);
                }
            }
        }
        w.into_bytes()
    }

    fn restore(bytes: &[u8], manifest: &Manifest) -> Result<Self, Error> {
        let local = |e| Error::decode(Sender::Local, e);
        let mut r = Reader::new(bytes);
        r.expect_header(msg_type::AGGREGATOR_SNAPSHOT)
            .map_err(local)?;
        let params = RoundParams::decode(&mut r, &()).map_err(local)?;
        let digest: [u8; 32] = r.array("manifest_digest").map_err(local)?;
        if digest != manifest.digest() {
            return Err(local(DecodeError::InvalidValue {
                field: "manifest_digest",
                reason: "snapshot is for another manifest",
            }));
        }
        let round = r.u64("round").map_err(local)?;
        let mut agg = Aggregator::new(params, manifest.clone(), round)?;
        let p = &agg.ctx.params;
        let read_session = |r: &mut Reader<'_>| -> Result<Session, DecodeError> {
            let id = r.array("session.id")?;
            let adverts = read_msgs(r, p, "session.adverts", |m: &AdvertiseKeys| m.sender)?;
            Ok(Session { id, adverts })
        };
        let state = (|| -> Result<State, DecodeError> {
            let phase = Phase::from_code(r.u8("phase")?).ok_or(DecodeError::InvalidValue {
                field: "phase",
                reason: "unknown phase",
            })?;
            Ok(match phase {
                Phase::AdvertiseKeys => State::CollectingKeys {
                    adverts: read_msgs(&mut r, p, "adverts", |m: &AdvertiseKeys| m.sender)?,
                },
                Phase::ShareKeys => State::CollectingShares {
                    session: read_session(&mut r)?,
                    shares: read_msgs(&mut r, p, "shares", |m: &ShareKeys| m.sender)?,
                },
                Phase::MaskedInput => State::CollectingMasked {
                    session: read_session(&mut r)?,
                    routing: read_routing(&mut r, p)?,
                    masked: read_msgs(&mut r, p, "masked", |m: &MaskedInput| m.sender)?,
                },
                Phase::ConsistencyCheck => State::CollectingSignatures {
                    session: read_session(&mut r)?,
                    routing: read_routing(&mut r, p)?,
                    masked: read_msgs(&mut r, p, "masked", |m: &MaskedInput| m.sender)?,
                    survivors: read_ids(&mut r, p, "survivors")?,
                    signatures: read_sigs(&mut r, p)?,
                },
                Phase::Unmasking => State::CollectingUnmask {
                    session: read_session(&mut r)?,
                    routing: read_routing(&mut r, p)?,
                    masked: read_msgs(&mut r, p, "masked", |m: &MaskedInput| m.sender)?,
                    survivors: read_ids(&mut r, p, "survivors")?,
                    signatures: read_sigs(&mut r, p)?,
                    responses: read_msgs(&mut r, p, "responses", |m: &UnmaskShares| m.sender)?,
                },
                Phase::Finished => {
                    let contributors = read_ids(&mut r, p, "contributors")?;
                    let dropped = read_ids(&mut r, p, "dropped")?;
                    let d = r.count("sum.count", p.d(), p.d())?;
                    let mut sum = Vec::with_capacity(d);
                    for _ in 0..d {
                        let x = r.u64("sum")?;
                        if x > p.sum_bits().mask() {
                            return Err(DecodeError::InvalidValue {
                                field: "sum",
                                reason: "element >= 2^B",
                            });
                        }
                        sum.push(x);
                    }
                    State::Finished(AggregateOutput {
                        sum,
                        contributors,
                        dropped,
                    })
                }
                Phase::Aborted => {
                    return Err(DecodeError::InvalidValue {
                        field: "phase",
                        reason: "aggregator never aborts",
                    });
                }
            })
        })()
        .map_err(local)?;
        r.finish("AggregatorSnapshot").map_err(local)?;
        agg.state = state;
        Ok(agg)
    }
}
