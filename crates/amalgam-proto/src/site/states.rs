//! The transitions of the site's protocol states (spec §5.1 S1-S4), one `impl` per state.
//!
//! Kept apart from the driver in the parent module so each round's checks and outputs read on
//! their own: `verify` borrows the state and returns a proof, `advance` (or `reveal`) consumes
//! the state and the proof to build the next state and the upload.

use std::collections::{BTreeMap, BTreeSet};

use x25519_dalek::PublicKey;

use super::{
    AdvertsVerified, AwaitingKeys, AwaitingShares, AwaitingSurvivors, AwaitingUnmask,
    ConsistencyVerified, Ctx, Fail, PeerKeys, Session, SharesVerified, SurvivorsChecked,
    canonical_x25519, is_low_order,
};
use crate::codec::Encode;
use crate::cohort;
use crate::crypto::kdf;
use crate::crypto::share_box::{self, SharePair};
use crate::crypto::{shamir, sign};
use crate::error::{Error, Misbehaviour, Sender};
use crate::masking::{MaskSign, MaskTerm, mask_and_pack};
use crate::messages::*;
use crate::params::SiteId;
use crate::phase::Phase;
use zeroize::Zeroizing;

impl AwaitingKeys {
    /// Spec §5.1 S1 checks.
    pub(super) fn verify(
        &self,
        ctx: &Ctx,
        m: &KeysBroadcast,
    ) -> Result<(Session, AdvertsVerified), Error> {
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
            if !seen_keys.insert(canonical_x25519(&a.c_pk))
                || !seen_keys.insert(canonical_x25519(&a.s_pk))
            {
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

    /// Spec §5.1 S1: b, Shamir shares of s_sk and b for `N[u]` ∩ U1, encrypted. b and both
    /// polynomials come from the round seed, so handling the same broadcast again (after a
    /// restore) gives the same bytes: same key, same nonce, same plaintext.
    pub(super) fn advance(
        self,
        ctx: &Ctx,
        (session, _proof): (Session, AdvertsVerified),
    ) -> (AwaitingShares, ShareKeys) {
        let p = &ctx.params;
        let (rc, round, id) = (&ctx.round_context, ctx.round, ctx.id);
        let b_seed = self.seed.b_seed(rc, round, id);
        let c_sk = self.seed.c_sk(rc, round, id);
        let s_sk = self.seed.s_sk(rc, round, id);
        let holders: Vec<SiteId> = session
            .peers
            .keys()
            .copied()
            .filter(|&v| v == ctx.id || p.are_neighbours(ctx.id, v))
            .collect();
        let xs: Vec<u8> = holders.iter().map(|h| h.share_x()).collect();
        let s_bytes = Zeroizing::new(s_sk.to_bytes());
        let mut s_rng = self.seed.shamir_rng(rc, round, id, true);
        let mut b_rng = self.seed.shamir_rng(rc, round, id, false);
        // Holders are distinct manifest indices (< 255) and 1 <= t <= holders: split cannot fail.
        #[allow(clippy::expect_used)]
        let s_shares =
            shamir::split(&s_bytes, p.t(), &xs, &mut s_rng).expect("valid share coordinates");
        #[allow(clippy::expect_used)]
        let b_shares =
            shamir::split(&b_seed, p.t(), &xs, &mut b_rng).expect("valid share coordinates");
        let mut own = None;
        let mut shares = Vec::with_capacity(holders.len());
        for ((v, s), b) in holders.iter().zip(s_shares).zip(b_shares) {
            let pair = SharePair { s: s.y, b: b.y };
            if *v == ctx.id {
                own = Some(pair);
                continue;
            }
            let peer = &session.peers[v];
            let shared = c_sk.diffie_hellman(&PublicKey::from(peer.c_pk));
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
            seed: self.seed,
            input: self.input,
            session,
            own,
        };
        (next, msg)
    }
}

impl AwaitingShares {
    /// Spec §5.1 S2 checks.
    pub(super) fn verify(
        &self,
        ctx: &Ctx,
        m: &RoutedShares,
    ) -> Result<(BTreeMap<SiteId, SharePair>, SharesVerified), Error> {
        let p = &ctx.params;
        let c_sk = self.seed.c_sk(&ctx.round_context, ctx.round, ctx.id);
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
            let shared = c_sk.diffie_hellman(&PublicKey::from(peer.c_pk));
            let key = kdf::share_key(&self.session.id, shared.as_bytes(), *from, ctx.id);
            let pair =
                share_box::open(&key, &self.session.id, ctx.round, *from, ctx.id, ct).ok_or(
                    Error::peer(Sender::Site(*from), Misbehaviour::ShareAuthentication),
                )?;
            received.insert(*from, pair);
        }
        cohort::check_mask_set(p, received.len())?;
        Ok((received, SharesVerified(())))
    }

    /// Spec §5.1 S2: y = x + PRG(b) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv) mod 2^B.
    pub(super) fn advance(
        self,
        ctx: &Ctx,
        (mut held, _proof): (BTreeMap<SiteId, SharePair>, SharesVerified),
    ) -> (AwaitingSurvivors, MaskedInput) {
        let p = &ctx.params;
        let sid = &self.session.id;
        let (rc, round, id) = (&ctx.round_context, ctx.round, ctx.id);
        let b_seed = self.seed.b_seed(rc, round, id);
        let s_sk = self.seed.s_sk(rc, round, id);
        let mut terms = Vec::with_capacity(held.len() + 1);
        terms.push(MaskTerm {
            key: kdf::self_mask_key(sid, &b_seed, p, ctx.round, ctx.id),
            sign: MaskSign::Add,
        });
        for v in held.keys() {
            let peer = &self.session.peers[v];
            let shared = s_sk.diffie_hellman(&PublicKey::from(peer.s_pk));
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
    pub(super) fn verify(&self, ctx: &Ctx, m: &SurvivorSet) -> Result<SurvivorsChecked, Error> {
        cohort::check_survivor_set(
            &ctx.params,
            ctx.id,
            |v| self.session.peers.contains_key(&v),
            |v| self.held.contains_key(&v),
            &m.survivors,
        )?;
        Ok(SurvivorsChecked(()))
    }

    /// Spec §5.1 S3: sign (session id, U3). The site will never sign another set this round.
    pub(super) fn advance(
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
    /// abort: the aggregator equivocated), they reach the quorum Q (and t in `N[u]`), and the
    /// cohort rule still holds (spec §6.1 R3) — checked here, right before revealing.
    pub(super) fn verify(&self, ctx: &Ctx, m: &UnmaskRequest) -> Result<ConsistencyVerified, Fail> {
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
        let signers: Vec<SiteId> = m.signatures.iter().map(|(s, _)| *s).collect();
        cohort::check_quorum(p, ctx.id, self.session.peers.len(), &signers)
            .map_err(Fail::Reject)?;
        cohort::check_cohort(p, ctx.id, &self.survivors, Phase::ConsistencyCheck)
            .map_err(Fail::Reject)?;
        Ok(ConsistencyVerified(()))
    }

    /// Spec §5.1 S4: b-shares for held owners in U3, s_sk-shares for held owners not in U3.
    pub(super) fn reveal(
        &self,
        ctx: &Ctx,
        _proof: ConsistencyVerified,
    ) -> Result<UnmaskShares, Error> {
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
