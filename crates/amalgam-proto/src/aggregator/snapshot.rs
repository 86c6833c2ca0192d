//! The aggregator snapshot (spec §8): the persisted form of an [`Aggregator`], so a restarted
//! aggregator finishes its round.
//!
//! Separate from the state machine because it is a codec, not protocol logic. A snapshot
//! stores only the signed uploads the aggregator accepted, phase by phase, plus the values it
//! derived from them (session id, survivor set) as a cross-check. Restoring never trusts a
//! stored field: it *replays* the uploads into a fresh aggregator through [`Aggregator::receive`]
//! and [`Aggregator::close_phase`], so every signature is verified again, the session id is
//! recomputed from the advertisements, the routing and survivor set are derived again (so
//! survivors = senders of the stored masked inputs, and U3 ⊆ U2 ⊆ U1), and the stored derived
//! values must equal the recomputed ones. A finished round stores the Unmasking-phase uploads
//! as well, and restore recomputes the output and compares it with the stored one. A tampered
//! snapshot is refused with the reason.

use std::collections::BTreeMap;

use super::{AggregateOutput, Aggregator, State};
use crate::codec::{Decode, Encode, Reader, Writer, msg_type};
use crate::error::{DecodeError, Error, Sender};
use crate::messages::*;
use crate::params::{Manifest, RoundParams, SiteId};
use crate::phase::Phase;
use crate::roles::{AggregatorStep, Snapshot};
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
) -> Result<Vec<M>, DecodeError> {
    let n = r.count(field, 0, p.n())?;
    let mut out = Vec::with_capacity(r.capacity(n, 1));
    let mut last: Option<SiteId> = None;
    for _ in 0..n {
        let m = M::decode(r, p)?;
        next_member(p, &mut last, sender(&m), field)?;
        out.push(m);
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
    let mut out: Vec<SiteId> = Vec::with_capacity(r.capacity(n, 2));
    let mut last = None;
    for _ in 0..n {
        out.push(next_member(p, &mut last, SiteId(r.u16(field)?), field)?);
    }
    Ok(out)
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
) -> Result<Vec<(SiteId, SignatureBytes)>, DecodeError> {
    let n = r.count("signatures.count", 0, p.n())?;
    let mut out = Vec::with_capacity(r.capacity(n, 66));
    let mut last: Option<SiteId> = None;
    for _ in 0..n {
        let signer = SiteId(r.u16("signatures.signer")?);
        let v = next_member(p, &mut last, signer, "signatures.signer")?;
        out.push((v, r.array("signatures.signature")?));
    }
    Ok(out)
}

/// The output of a finished round (contributors, dropped, blamed, sum), decoded only to be
/// compared with the recomputed one.
fn read_output(r: &mut Reader<'_>, p: &RoundParams) -> Result<AggregateOutput, DecodeError> {
    let contributors = read_ids(r, p, "contributors")?;
    let dropped = read_ids(r, p, "dropped")?;
    let blamed = read_ids(r, p, "blamed")?;
    let d = r.count("sum.count", p.d(), p.d())?;
    let mut sum = Vec::with_capacity(r.capacity(d, 8));
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
    Ok(AggregateOutput {
        sum,
        contributors,
        dropped,
        blamed,
    })
}

/// What a snapshot holds: the accepted uploads of every phase reached, and the derived values
/// to cross-check.
#[derive(Default)]
struct Stored {
    adverts: Vec<AdvertiseKeys>,
    session_id: Option<[u8; 32]>,
    shares: Vec<ShareKeys>,
    masked: Vec<MaskedInput>,
    survivors: Option<Vec<SiteId>>,
    signatures: Vec<(SiteId, SignatureBytes)>,
    responses: Vec<UnmaskShares>,
}

/// A stored field does not match what replaying the stored uploads derives.
fn tampered(reason: &'static str) -> Error {
    Error::decode(
        Sender::Local,
        DecodeError::InvalidValue {
            field: "aggregator snapshot",
            reason,
        },
    )
}

/// Replays `stored` into `agg` (fresh, collecting keys) up to `phase`: every upload goes
/// through `receive` and every earlier phase through `close_phase`, exactly as it first did.
fn replay(agg: &mut Aggregator, phase: Phase, stored: Stored) -> Result<(), Error> {
    let local = |e: Error| -> Error {
        match e {
            Error::Decode { .. } => e,
            other => Error::SnapshotRefused(Box::new(other)),
        }
    };
    for m in stored.adverts {
        agg.receive(ToAggregator::AdvertiseKeys(m)).map_err(local)?;
    }
    if phase == Phase::AdvertiseKeys {
        return Ok(());
    }
    agg.close_phase().map_err(local)?;
    if agg.session_id() != stored.session_id {
        return Err(tampered(
            "session id does not match the stored advertisements",
        ));
    }
    for m in stored.shares {
        agg.receive(ToAggregator::ShareKeys(m)).map_err(local)?;
    }
    if phase == Phase::ShareKeys {
        return Ok(());
    }
    agg.close_phase().map_err(local)?;
    for m in stored.masked {
        agg.receive(ToAggregator::MaskedInput(m)).map_err(local)?;
    }
    if phase == Phase::MaskedInput {
        return Ok(());
    }
    let AggregatorStep::Send(sends) = agg.close_phase().map_err(local)? else {
        return Err(tampered("round finished while replaying the masked inputs"));
    };
    let derived: Vec<SiteId> = sends.iter().map(|(v, _)| *v).collect();
    if Some(derived) != stored.survivors {
        return Err(tampered(
            "survivor set is not the senders of the stored masked inputs",
        ));
    }
    let round = agg.ctx.round;
    for (sender, signature) in stored.signatures {
        let m = ConsistencySignature {
            round,
            sender,
            signature,
        };
        agg.receive(ToAggregator::ConsistencySignature(m))
            .map_err(local)?;
    }
    if phase == Phase::ConsistencyCheck {
        return Ok(());
    }
    agg.close_phase().map_err(local)?;
    for m in stored.responses {
        agg.receive(ToAggregator::UnmaskShares(m)).map_err(local)?;
    }
    Ok(())
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
                write_msgs(&mut w, session.adverts.values());
                w.bytes(&session.id);
                write_msgs(&mut w, shares.values());
            }
            State::CollectingMasked {
                session,
                routing,
                masked,
            } => {
                write_msgs(&mut w, session.adverts.values());
                w.bytes(&session.id);
                write_msgs(&mut w, routing.signed.values());
                write_msgs(&mut w, masked.values());
            }
            State::CollectingSignatures {
                session,
                routing,
                masked,
                survivors,
                signatures,
            } => {
                write_msgs(&mut w, session.adverts.values());
                w.bytes(&session.id);
                write_msgs(&mut w, routing.signed.values());
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
                write_msgs(&mut w, session.adverts.values());
                w.bytes(&session.id);
                write_msgs(&mut w, routing.signed.values());
                write_msgs(&mut w, masked.values());
                write_ids(&mut w, survivors.iter());
                write_sigs(&mut w, signatures);
                write_msgs(&mut w, responses.values());
            }
            State::Finished(done) => {
                write_msgs(&mut w, done.session.adverts.values());
                w.bytes(&done.session.id);
                write_msgs(&mut w, done.routing.signed.values());
                write_msgs(&mut w, done.masked.values());
                write_ids(&mut w, done.survivors.iter());
                write_sigs(&mut w, &done.signatures);
                write_msgs(&mut w, done.responses.values());
                let out = &done.out;
                write_ids(&mut w, out.contributors.iter());
                write_ids(&mut w, out.dropped.iter());
                write_ids(&mut w, out.blamed.iter());
                w.count(out.sum.len());
                for x in &out.sum {
                    w.u64(*x);
                }
            }
        }
        w.into_bytes()
    }

    /// Decodes, then replays the stored uploads (see the module docs): a snapshot whose
    /// uploads, signatures or derived values do not check is refused. A refusal caused by a
    /// stored upload is reported as [`Error::SnapshotRefused`] wrapping the upload's own error.
    fn restore(bytes: &[u8], manifest: &Manifest) -> Result<Self, Error> {
        let local = |e| Error::decode(Sender::Local, e);
        let mut r = Reader::new(bytes);
        let (params, context_digest, round) =
            read_preamble(&mut r, msg_type::AGGREGATOR_SNAPSHOT, manifest).map_err(local)?;
        let mut agg =
            Aggregator::with_context_digest(params, manifest.clone(), context_digest, round)?;
        let p = &params;
        let phase = Phase::from_code(r.u8("phase").map_err(local)?).ok_or(local(
            DecodeError::InvalidValue {
                field: "phase",
                reason: "unknown phase",
            },
        ))?;
        if phase == Phase::Aborted {
            return Err(local(DecodeError::InvalidValue {
                field: "phase",
                reason: "aggregator never aborts",
            }));
        }
        let stored = (|| -> Result<Stored, DecodeError> {
            let mut s = Stored {
                adverts: read_msgs(&mut r, p, "adverts", |m: &AdvertiseKeys| m.sender)?,
                ..Stored::default()
            };
            if phase >= Phase::ShareKeys {
                s.session_id = Some(r.array("session.id")?);
                s.shares = read_msgs(&mut r, p, "shares", |m: &ShareKeys| m.sender)?;
            }
            if phase >= Phase::MaskedInput {
                s.masked = read_msgs(&mut r, p, "masked", |m: &MaskedInput| m.sender)?;
            }
            if phase >= Phase::ConsistencyCheck {
                s.survivors = Some(read_ids(&mut r, p, "survivors")?);
                s.signatures = read_sigs(&mut r, p)?;
            }
            if phase >= Phase::Unmasking {
                s.responses = read_msgs(&mut r, p, "responses", |m: &UnmaskShares| m.sender)?;
            }
            Ok(s)
        })()
        .map_err(local)?;
        let out = if phase == Phase::Finished {
            Some(read_output(&mut r, p).map_err(local)?)
        } else {
            None
        };
        r.finish("AggregatorSnapshot").map_err(local)?;
        match out {
            None => replay(&mut agg, phase, stored)?,
            Some(out) => {
                // Recompute the output from the stored responses; the stored one must match.
                replay(&mut agg, Phase::Unmasking, stored)?;
                agg.close_phase()
                    .map_err(|e| Error::SnapshotRefused(Box::new(e)))?;
                if agg.output() != Some(&out) {
                    return Err(tampered(
                        "stored output is not what the stored responses give",
                    ));
                }
            }
        }
        Ok(agg)
    }
}
