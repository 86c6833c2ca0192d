//! The site snapshot (spec §8): the persisted form of a [`Site`] and how to restore it.
//!
//! Separate from the state machine because it is a codec, not protocol logic: it writes each
//! state's fields after the shared preamble and re-checks them (ranges, ascending ids, the
//! kind, sender and round of the kept upload) on restore, since snapshot bytes are untrusted
//! input. Restoring also applies the persistence rule (spec §8.1): a round below the site's
//! high-water mark is refused, and a round whose persisted deadline has passed is abandoned.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use super::durable::{PhaseTimeout, RoundLog, Timestamp};
use super::{
    Answered, AwaitingKeys, AwaitingShares, AwaitingSurvivors, AwaitingUnmask, PeerKeys, Session,
    Site, State,
};
use crate::codec::{Decode, Encode, Reader, Writer, msg_type};
use crate::crypto::round_seed::RoundSeed;
use crate::crypto::share_box::SharePair;
use crate::error::{DecodeError, Error, Misbehaviour, Misuse, Sender};
use crate::messages::ToAggregator;
use crate::params::{Manifest, RoundParams, SiteId};
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
    let mut v = Zeroizing::new(Vec::with_capacity(r.capacity(d, 8)));
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

fn read_seed(r: &mut Reader<'_>) -> Result<RoundSeed, DecodeError> {
    Ok(RoundSeed::from_bytes(Zeroizing::new(
        r.array("round_seed")?,
    )))
}

/// State tags of the snapshot layout.
const TAG_READY: u8 = 0;
const TAG_ABORTED: u8 = 6;
const TAG_ABANDONED: u8 = 7;

/// The download each waiting state has answered last, and the upload it answered with
/// (by tag: 1 AwaitingKeys ... 5 Finished).
fn answered_kinds(tag: u8) -> (Option<&'static str>, &'static str) {
    match tag {
        1 => (None, "AdvertiseKeys"),
        2 => (Some("KeysBroadcast"), "ShareKeys"),
        3 => (Some("RoutedShares"), "MaskedInput"),
        4 => (Some("SurvivorSet"), "ConsistencySignature"),
        _ => (Some("UnmaskRequest"), "UnmaskShares"),
    }
}

impl Site {
    /// Serializes the complete state: preamble, site, timeout, state tag, the deadline of a
    /// wait, the state's fields, then the kept exchange (download digest, upload bytes).
    /// The state tag of spec §8; it only grows within a round, so it orders a round's states.
    pub(super) fn state_tag(&self) -> u8 {
        match &self.state {
            State::Ready => TAG_READY,
            State::AwaitingKeys(_) => 1,
            State::AwaitingShares(_) => 2,
            State::AwaitingSurvivors(_) => 3,
            State::AwaitingUnmask(_) => 4,
            State::Finished => 5,
            State::Aborted(_) => TAG_ABORTED,
            State::Abandoned => TAG_ABANDONED,
        }
    }

    pub(super) fn encode_state(&self) -> Zeroizing<Vec<u8>> {
        let mut w = write_preamble(
            msg_type::SITE_SNAPSHOT,
            &self.ctx.params,
            &self.ctx.manifest,
            &self.ctx.context_digest,
            self.ctx.round,
        );
        w.u16(self.ctx.id.0);
        w.u64(self.ctx.timeout.millis());
        let tag = self.state_tag();
        w.u8(tag);
        if let Some(d) = self.deadline {
            w.u64(d.0);
        }
        match &self.state {
            State::AwaitingKeys(s) => {
                w.bytes(s.seed.as_bytes());
                write_input(&mut w, &s.input);
            }
            State::AwaitingShares(s) => {
                w.bytes(s.seed.as_bytes());
                write_input(&mut w, &s.input);
                write_session(&mut w, &s.session);
                w.bytes(s.own.s.as_ref());
                w.bytes(s.own.b.as_ref());
            }
            State::AwaitingSurvivors(s) => {
                write_session(&mut w, &s.session);
                write_held(&mut w, &s.held);
            }
            State::AwaitingUnmask(s) => {
                write_session(&mut w, &s.session);
                write_held(&mut w, &s.held);
                w.count(s.survivors.len());
                for id in &s.survivors {
                    w.u16(id.0);
                }
            }
            State::Ready | State::Finished | State::Aborted(_) | State::Abandoned => {}
        }
        if (1..=5).contains(&tag)
            && let Some(a) = &self.answered
        {
            if let Some(d) = a.download {
                w.bytes(&d);
            }
            a.upload.encode(&mut w);
        }
        Zeroizing::new(w.into_bytes())
    }

    /// Rebuilds a site from [`Site::snapshot`] bytes at time `now` (spec §8.1).
    ///
    /// Refused: bytes that do not decode or check, another identity or manifest, and a round
    /// below the high-water mark of `rounds` (the site has moved on: [`Misuse::RoundReused`]).
    /// A round whose persisted deadline has passed is restored *abandoned*
    /// ([`Site::is_abandoned`]): it accepts nothing more. `rounds` is raised to the round.
    pub fn restore(
        bytes: &[u8],
        ctx: &SiteRestore,
        now: Timestamp,
        rounds: &mut RoundLog,
    ) -> Result<Self, Error> {
        let local = |e| Error::decode(Sender::Local, e);
        let mut r = Reader::new(bytes);
        let (params, context_digest, round) =
            read_preamble(&mut r, msg_type::SITE_SNAPSHOT, &ctx.manifest).map_err(local)?;
        let id = SiteId(r.u16("site").map_err(local)?);
        let timeout =
            PhaseTimeout::from_millis(r.u64("timeout").map_err(local)?).map_err(|_| {
                local(DecodeError::InvalidValue {
                    field: "timeout",
                    reason: "outside 1 ms ..= 7 days",
                })
            })?;
        let mut site = Site::build(
            params,
            ctx.manifest.clone(),
            context_digest,
            round,
            ctx.identity.clone(),
            timeout,
        )?;
        if site.ctx.id != id {
            return Err(Misuse::IdentityMismatch(id).into());
        }
        if let Some(high_water) = rounds.high_water()
            && round < high_water
        {
            return Err(Misuse::RoundReused { round, high_water }.into());
        }
        let p = &site.ctx.params;
        let (state, deadline, answered) = (|| -> Result<_, DecodeError> {
            let tag = r.u8("state")?;
            if tag > TAG_ABANDONED {
                return Err(DecodeError::InvalidValue {
                    field: "state",
                    reason: "unknown state tag",
                });
            }
            let waiting = (1..=4).contains(&tag);
            let deadline = if waiting {
                Some(Timestamp(r.u64("deadline")?))
            } else {
                None
            };
            let mut advert_slot = None;
            let state = match tag {
                TAG_READY => State::Ready,
                1 => {
                    let seed = read_seed(&mut r)?;
                    let input = read_input(&mut r, p)?;
                    advert_slot = Some((seed, input));
                    State::Ready // replaced below, once the kept advertisement is read
                }
                2 => State::AwaitingShares(AwaitingShares {
                    seed: read_seed(&mut r)?,
                    input: read_input(&mut r, p)?,
                    session: read_session(&mut r, p)?,
                    own: read_pair(&mut r)?,
                }),
                3 => State::AwaitingSurvivors(AwaitingSurvivors {
                    session: read_session(&mut r, p)?,
                    held: read_held(&mut r, p)?,
                }),
                4 => {
                    let session = read_session(&mut r, p)?;
                    let held = read_held(&mut r, p)?;
                    let n = r.count("survivors.count", 1, p.n())?;
                    let mut survivors: Vec<SiteId> = Vec::with_capacity(r.capacity(n, 2));
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
                TAG_ABORTED => State::Aborted(Error::peer(
                    Sender::Local,
                    Misbehaviour::Invalid("aborted before the snapshot was taken"),
                )),
                _ => State::Abandoned,
            };
            let mut answered = None;
            if (1..=5).contains(&tag) {
                let (download_name, upload_name) = answered_kinds(tag);
                let download = match download_name {
                    Some(_) => Some(r.array::<32>("answered.download")?),
                    None => None,
                };
                let upload = ToAggregator::decode(&mut r, p)?;
                if upload.name() != upload_name || upload.sender() != id || upload.round() != round
                {
                    return Err(DecodeError::InvalidValue {
                        field: "answered.upload",
                        reason: "not this site's upload for this state",
                    });
                }
                answered = Some(Answered {
                    download,
                    download_name,
                    upload,
                });
            }
            let state = match (advert_slot, &answered) {
                (Some((seed, input)), Some(a)) => {
                    let ToAggregator::AdvertiseKeys(advert) = &a.upload else {
                        return Err(DecodeError::InvalidValue {
                            field: "answered.upload",
                            reason: "not an advertisement",
                        });
                    };
                    State::AwaitingKeys(AwaitingKeys {
                        seed,
                        input,
                        advert: advert.clone(),
                    })
                }
                _ => state,
            };
            Ok((state, deadline, answered))
        })()
        .map_err(local)?;
        r.finish("SiteSnapshot").map_err(local)?;
        site.state = state;
        site.deadline = deadline;
        site.answered = answered;
        let step = site.state_tag();
        rounds.check_restore(round, step)?;
        rounds.observe(round, step);
        if site.deadline.is_some_and(|d| now >= d) {
            let _ = site.abandon();
        }
        Ok(site)
    }
}
