//! Closing a phase with whoever has answered ([`Aggregator::close_phase`], spec §5.2).
//!
//! Each arm runs every check that can refuse the close on the borrowed state first, so a
//! refused close changes nothing; only then is the next state built (moving the stored uploads,
//! never copying them). Kept apart from upload validation because
//! this is where dropouts take effect and shares are routed.

use std::collections::{BTreeMap, BTreeSet};

use super::unmask::unmask;
use super::{AggregateOutput, Aggregator, Done, Routing, Session, State};
use crate::codec::Encode;
use crate::crypto::kdf;
use crate::error::Error;
use crate::messages::*;
use crate::params::SiteId;
use crate::roles::AggregatorStep;

impl Aggregator {
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
                        routing: Routing {
                            peers,
                            commitments,
                            signed: shares.clone(),
                        },
                        masked: BTreeMap::new(),
                    },
                    AggregatorStep::Send(sends),
                )
            }
            State::CollectingMasked { masked, .. } => {
                let u3: BTreeSet<SiteId> = masked.keys().copied().collect();
                ctx.check_neighbourhoods(phase, &u3)?;
                let survivors: Vec<SiteId> = u3.iter().copied().collect();
                crate::cohort::check_connectivity(&ctx.params, &survivors)?;
                let msg = ToSite::SurvivorSet(SurvivorSet {
                    round,
                    survivors: survivors.clone(),
                });
                let sends = survivors.iter().map(|&v| (v, msg.clone())).collect();
                self.collect_signatures(survivors);
                return Ok(AggregatorStep::Send(sends));
            }
            State::CollectingSignatures {
                signatures,
                session,
                ..
            } => {
                let u4: BTreeSet<SiteId> = signatures.keys().copied().collect();
                // Sites reveal only after a quorum Q of signatures (spec §5.1 S4).
                let quorum = ctx.params.quorum(session.adverts.len());
                if u4.len() < quorum {
                    return Err(Error::NotEnoughSites {
                        phase,
                        needed: quorum,
                        got: u4.len(),
                    });
                }
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
                self.collect_unmask();
                return Ok(AggregatorStep::Send(sends));
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
                self.finish(out.clone());
                return Ok(AggregatorStep::Finished(out));
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

    /// CollectingMasked → CollectingSignatures once the close is accepted. The masked uploads
    /// (n × d elements) move into the next state rather than being copied.
    fn collect_signatures(&mut self, survivors: Vec<SiteId>) {
        self.state = match self.take_state() {
            State::CollectingMasked {
                session,
                routing,
                masked,
            } => State::CollectingSignatures {
                session,
                routing,
                masked,
                survivors,
                signatures: BTreeMap::new(),
            },
            other => other,
        };
    }

    /// CollectingSignatures → CollectingUnmask once the close is accepted, moving the state.
    fn collect_unmask(&mut self) {
        self.state = match self.take_state() {
            State::CollectingSignatures {
                session,
                routing,
                masked,
                survivors,
                signatures,
            } => State::CollectingUnmask {
                session,
                routing,
                masked,
                survivors,
                signatures,
                responses: BTreeMap::new(),
            },
            other => other,
        };
    }

    /// CollectingUnmask → Finished, keeping the inputs of the output (a finished snapshot
    /// stores them so that restore can recompute the output).
    fn finish(&mut self, out: AggregateOutput) {
        self.state = match self.take_state() {
            State::CollectingUnmask {
                session,
                routing,
                masked,
                survivors,
                signatures,
                responses,
            } => State::Finished(Box::new(Done {
                session,
                routing,
                masked,
                survivors,
                signatures,
                responses,
                out,
            })),
            other => other,
        };
    }

    /// Takes the state out, leaving an empty one that the caller immediately replaces.
    fn take_state(&mut self) -> State {
        std::mem::replace(
            &mut self.state,
            State::CollectingKeys {
                adverts: BTreeMap::new(),
            },
        )
    }
}
