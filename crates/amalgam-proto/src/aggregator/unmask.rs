//! Recovery and unmasking (spec §5.2 A4), the last step of a round.
//!
//! The only code that reconstructs secrets from revealed shares, so it lives on its own: each
//! recovered secret is checked against its commitment or advertised key before use. Recovery
//! is robust: with more than t shares, wrong ones are corrected or left out, and their revealers
//! are named in [`AggregateOutput::blamed`] only where provable (spec §4.6).

use std::collections::{BTreeMap, BTreeSet};

use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::{AggregateOutput, Ctx, Routing, Session};
use crate::crypto::kdf;
use crate::crypto::shamir::{self, SecretShare};
use crate::error::{Error, Misuse};
use crate::masking::{MaskSign, MaskTerm, unmask_sum};
use crate::messages::*;
use crate::params::SiteId;
use crate::phase::Phase;

/// Spec §5.2 A4: recover b of every survivor and s_sk of every dropped peer of a survivor,
/// check each against its commitment / advertised key, and remove the masks.
pub(super) fn unmask(
    ctx: &Ctx,
    session: &Session,
    routing: &Routing,
    masked: &BTreeMap<SiteId, MaskedInput>,
    survivors: &[SiteId],
    responses: &BTreeMap<SiteId, UnmaskShares>,
) -> Result<AggregateOutput, Error> {
    let p = &ctx.params;
    let t = p.t();
    // Every survivor's upload is summed: a missing one is a broken state, never skipped.
    if survivors.iter().any(|u| !masked.contains_key(u)) {
        return Err(Misuse::InconsistentState("a survivor has no stored masked input").into());
    }
    // Index revealed shares by owner.
    let mut b_by_owner: BTreeMap<SiteId, Vec<SecretShare>> = BTreeMap::new();
    let mut s_by_owner: BTreeMap<SiteId, Vec<SecretShare>> = BTreeMap::new();
    let mut blamed = BTreeSet::new();
    let holder_of = |x: u8| SiteId(u16::from(x).wrapping_sub(1));
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
        let commitment = routing
            .commitments
            .get(u)
            .copied()
            .ok_or(Misuse::InconsistentState("a survivor has no b commitment"))?;
        let shares = &suspects_last(b_by_owner.get(u), &blamed);
        let b = shamir::recover_robust(t, p.c(), shares, |b| {
            bool::from(kdf::b_commitment(sid, *u, b).ct_eq(&commitment))
        })
        .map_err(|_| unrecoverable(*u, shares.len()))?;
        blamed.extend(b.bad_x.iter().map(|&x| holder_of(x)));
        terms.push(MaskTerm {
            key: kdf::self_mask_key(sid, &b.secret, p, ctx.round, *u),
            sign: MaskSign::Subtract,
        });
    }
    for (v, peers) in &dropped_peers {
        let advertised =
            session
                .adverts
                .get(v)
                .map(|a| a.s_pk)
                .ok_or(Misuse::InconsistentState(
                    "a dropped peer has no advertisement",
                ))?;
        let shares = &suspects_last(s_by_owner.get(v), &blamed);
        let s_sk = shamir::recover_robust(t, p.c(), shares, |s| {
            bool::from(
                PublicKey::from(&StaticSecret::from(*s))
                    .to_bytes()
                    .ct_eq(&advertised),
            )
        })
        .map_err(|_| unrecoverable(*v, shares.len()))?;
        blamed.extend(s_sk.bad_x.iter().map(|&x| holder_of(x)));
        let s_sk = StaticSecret::from(*s_sk.secret);
        for u in peers {
            let adv = session
                .adverts
                .get(u)
                .ok_or(Misuse::InconsistentState("a survivor has no advertisement"))?;
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
        blamed: blamed.into_iter().collect(),
    })
}

/// The shares of one owner with those of already blamed revealers moved to the end: a revealer
/// that lied about one owner most likely lies about all, and with its shares outside the first
/// t the robust search succeeds at its first try instead of searching again for each owner.
fn suspects_last(shares: Option<&Vec<SecretShare>>, blamed: &BTreeSet<SiteId>) -> Vec<SecretShare> {
    let mut out: Vec<SecretShare> = shares.cloned().unwrap_or_default();
    out.sort_by_key(|s| blamed.contains(&SiteId(u16::from(s.x).wrapping_sub(1))));
    out
}

/// No t of the revealed shares of `owner` meet its commitment or advertised key. Either the
/// owner dealt bad shares or more than `revealed − t` revealers lied; the shares alone cannot
/// say which, so nobody is named. The phase stays open: more responses may still recover it.
fn unrecoverable(owner: SiteId, revealed: usize) -> Error {
    Error::Unrecoverable { owner, revealed }
}
