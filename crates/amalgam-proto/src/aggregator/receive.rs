//! Validating and recording uploads ([`Aggregator::receive`]).
//!
//! Every check runs against the borrowed state before anything is recorded, so a rejected
//! upload leaves the aggregator unchanged. Kept apart from phase closing: this is the only
//! place that judges what a site sent.

use std::collections::BTreeSet;

use super::{Aggregator, State, site_err};
use crate::codec::Decode;
use crate::crypto::sign;
use crate::error::{Error, Misbehaviour, Sender};
use crate::messages::*;
use crate::params::SiteId;
use crate::site::{canonical_x25519, is_low_order};

impl Aggregator {
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
                let (c, s) = (canonical_x25519(&m.c_pk), canonical_x25519(&m.s_pk));
                if c == s
                    || adverts.values().any(|a| {
                        [canonical_x25519(&a.c_pk), canonical_x25519(&a.s_pk)]
                            .iter()
                            .any(|k| *k == c || *k == s)
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
}
