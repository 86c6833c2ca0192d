//! The site snapshot (spec §8): the persisted form of a [`Site`] and how to restore it.
//!
//! Separate from the state machine because it is a codec, not protocol logic: it writes each
//! state's fields after the shared preamble and re-checks them (ranges, ascending ids) on
//! restore, since snapshot bytes are untrusted input.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::{
    AwaitingKeys, AwaitingShares, AwaitingSurvivors, AwaitingUnmask, PeerKeys, Session, Site, State,
};
use crate::codec::{Decode, Encode, Reader, Writer, msg_type};
use crate::crypto::share_box::SharePair;
use crate::error::{DecodeError, Error, Misbehaviour, Misuse, Sender};
use crate::messages::AdvertiseKeys;
use crate::params::{Manifest, RoundParams, SiteId};
use crate::roles::Snapshot;
use crate::snapshot_codec::{next_member, read_preamble, write_preamble};

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
        let sid = next_member(p, &mut last, SiteId(r.u16("session.peer")?), "session.peer")?;
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
        let sid = next_member(p, &mut last, SiteId(r.u16("held.owner")?), "held.owner")?;
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
        let mut w = write_preamble(
            msg_type::SITE_SNAPSHOT,
            &self.ctx.params,
            &self.ctx.manifest,
            &self.ctx.context_digest,
            self.ctx.round,
        );
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
        let (params, context_digest, round) =
            read_preamble(&mut r, msg_type::SITE_SNAPSHOT, &ctx.manifest).map_err(local)?;
        let id = SiteId(r.u16("site").map_err(local)?);
        let mut site = Site::with_context_digest(
            params,
            ctx.manifest.clone(),
            context_digest,
            round,
            ctx.identity.clone(),
        )?;
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
