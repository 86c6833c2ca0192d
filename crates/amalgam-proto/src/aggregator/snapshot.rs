//! The aggregator snapshot (spec §8): the persisted form of an [`Aggregator`], so a restarted
//! aggregator finishes its round.
//!
//! Separate from the state machine because it is a codec, not protocol logic: stored messages
//! keep their wire encoding and are re-decoded (and re-checked) on restore, since snapshot
//! bytes are untrusted input.

use std::collections::BTreeMap;

use super::{AggregateOutput, Aggregator, Routing, Session, State};
use crate::codec::{Decode, Encode, Reader, Writer, msg_type};
use crate::error::{DecodeError, Error, Sender};
use crate::messages::*;
use crate::params::{Manifest, RoundParams, SiteId};
use crate::phase::Phase;
use crate::roles::Snapshot;
use crate::snapshot_codec::{next_member, read_preamble, write_preamble};

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
        let s = next_member(p, &mut last, sender(&m), field)?;
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
    let mut last = None;
    for _ in 0..n {
        out.push(next_member(p, &mut last, SiteId(r.u16(field)?), field)?);
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
        let v = next_member(p, &mut last, SiteId(r.u16("routing.site")?), "routing.site")?;
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
        let signer = SiteId(r.u16("signatures.signer")?);
        let v = next_member(p, &mut last, signer, "signatures.signer")?;
        out.insert(v, r.array("signatures.signature")?);
    }
    Ok(out)
}

impl Snapshot for Aggregator {
    type Context = Manifest;
    type Error = Error;

    /// Versioned snapshot; holds no secret (everything in it the aggregator has seen).
    fn snapshot(&self) -> Vec<u8> {
        let mut w = write_preamble(
            msg_type::AGGREGATOR_SNAPSHOT,
            &self.ctx.params,
            &self.ctx.manifest,
            &self.ctx.context_digest,
            self.ctx.round,
        );
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
        let (params, context_digest, round) =
            read_preamble(&mut r, msg_type::AGGREGATOR_SNAPSHOT, manifest).map_err(local)?;
        let mut agg =
            Aggregator::with_context_digest(params, manifest.clone(), context_digest, round)?;
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
