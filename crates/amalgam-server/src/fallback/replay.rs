//! Restart of the fallback rounds from their event log. A round that is still open (its
//! ciphertexts are in the vault) is replayed through the same methods that served the
//! requests: a fresh `HeAggregator` re-verifies every upload signature and re-adds the bodies,
//! every signature and release is checked again, every close is re-executed, and the produced
//! events must equal the logged ones byte for byte. A round whose secret bodies were shredded
//! (it ended) keeps its digests and responses, re-verifies its public statement and
//! signatures, and reads its end from the public record. The campaign's give-ups of re-runs
//! that never opened ([`super::give_up`]) are read back too.

use std::collections::{BTreeMap, BTreeSet};

use amalgam_proto::SiteId;

use super::give_up;
use super::setup::FallbackSetups;
use super::state::{DECRYPTOR_SENDER, FallbackRound, KIND_RELEASE, PH_SITE_SUMMARY};
use crate::consortium::DeadlineBounds;
use crate::events::{Event, EventKind, NewEvent, as_new};
use crate::replay::ReplayError;
use crate::round::Window;

fn err(e: &Event, reason: impl Into<String>) -> ReplayError {
    ReplayError {
        seq: e.seq,
        reason: reason.into(),
    }
}

fn member_of(e: &Event) -> Result<usize, ReplayError> {
    e.sender
        .and_then(|s| s.checked_sub(DECRYPTOR_SENDER))
        .and_then(|m| usize::try_from(m).ok())
        .ok_or_else(|| err(e, "missing or out-of-range decryptor"))
}

fn same(produced: &[NewEvent], logged: &[Event], at: &Event) -> Result<(), ReplayError> {
    if produced.len() > logged.len() {
        return Err(err(at, "log ends inside a decision"));
    }
    for (p, l) in produced.iter().zip(logged) {
        if *p != as_new(l) {
            return Err(err(l, "logged event differs from the replayed decision"));
        }
    }
    Ok(())
}

fn site_of(e: &Event) -> Result<SiteId, ReplayError> {
    e.sender
        .and_then(|s| u16::try_from(s).ok())
        .map(SiteId)
        .ok_or_else(|| err(e, "missing or out-of-range sender"))
}

/// What the fallback log holds once replayed.
pub struct Replayed {
    /// Every fallback round that opened.
    pub rounds: BTreeMap<u64, FallbackRound>,
    /// The fallback round ids whose re-run the campaign gave up (never opened).
    pub given_up: BTreeSet<u64>,
}

/// Rebuilds every fallback round from `events` (the rounds' events only: committee key
/// events are the caller's, [`super::keys::is_key_event`], replayed first into `keys`: a
/// period's certificates never change once stored, so a round opens on the same setup). Site summaries, which a site
/// uploads after the round ended, are re-verified (signature, consortium `consortium`, round,
/// site) wherever they stand.
pub fn replay(
    setups: &dyn FallbackSetups,
    keys: &super::keys::CommitteeKeys,
    bounds: DeadlineBounds,
    consortium: &[u8; 32],
    events: &[Event],
) -> Result<Replayed, ReplayError> {
    let shredded: BTreeSet<u64> = events
        .iter()
        .filter(|e| e.shredded)
        .map(|e| e.round)
        .collect();
    let mut rounds: BTreeMap<u64, FallbackRound> = BTreeMap::new();
    let mut given_up: BTreeSet<u64> = BTreeSet::new();
    let mut i = 0;
    while i < events.len() {
        let e = &events[i];
        if give_up::is_event(e) {
            give_up::check(e)?;
            if rounds.contains_key(&e.round) {
                return Err(err(e, "re-run given up after it opened"));
            }
            if !given_up.insert(e.round) {
                return Err(err(e, "re-run given up twice"));
            }
            i += 1;
            continue;
        }
        if e.kind == EventKind::RoundOpen {
            if rounds.contains_key(&e.round) {
                return Err(err(e, "round opened twice"));
            }
            if given_up.contains(&e.round) {
                return Err(err(e, "re-run opened after it was given up"));
            }
            let window = e
                .body
                .get(..16)
                .and_then(Window::decode)
                .ok_or_else(|| err(e, "malformed RoundOpen body"))?;
            let (st, ev) = FallbackRound::open(setups, keys, bounds, e.round, window)
                .map_err(|r| err(e, r))?;
            same(&[ev], &events[i..], e)?;
            rounds.insert(e.round, st);
            i += 1;
            continue;
        }
        if super::keys::is_key_event(e) {
            i += 1;
            continue;
        }
        let st = rounds
            .get_mut(&e.round)
            .ok_or_else(|| err(e, "event for a round that was never opened"))?;
        if e.kind == EventKind::Summary && e.phase == PH_SITE_SUMMARY {
            let produced = st
                .site_summary(site_of(e)?, &e.body, consortium, 0)
                .map_err(|p| err(e, format!("stored summary refused on replay: {}", p.detail)))?
                .events;
            if produced.is_empty() {
                return Err(err(e, "logged event replays as a repeat"));
            }
            same(&produced, &events[i..], e)?;
            i += 1;
            continue;
        }
        if st.end().is_some() {
            return Err(err(e, "event after the round ended"));
        }
        if shredded.contains(&e.round) {
            st.restore_shredded(e.kind, e.sender, &e.body, e.body_sha256, e.response.clone())
                .map_err(|r| err(e, r))?;
            i += 1;
            continue;
        }
        let produced = match e.kind {
            EventKind::Upload => {
                let site = site_of(e)?;
                st.upload(site, &e.body)
                    .map_err(|p| err(e, format!("stored upload refused on replay: {}", p.detail)))?
                    .events
            }
            EventKind::Summary => {
                st.signature(member_of(e)?, &e.body)
                    .map_err(|p| {
                        err(
                            e,
                            format!("stored signature refused on replay: {}", p.detail),
                        )
                    })?
                    .events
            }
            EventKind::Other(KIND_RELEASE) => {
                st.release(member_of(e)?, &e.body)
                    .map_err(|p| err(e, format!("stored release refused on replay: {}", p.detail)))?
                    .events
            }
            EventKind::PhaseClose => {
                let next = e
                    .body
                    .get(..16)
                    .and_then(Window::decode)
                    .ok_or_else(|| err(e, "malformed close"))?;
                st.close(next, false)
                    .map_err(|r| err(e, format!("stored close fails on replay: {r}")))?
            }
            EventKind::RoundEnd => {
                let w = st.window();
                st.close(w, true)
                    .map_err(|r| err(e, format!("stored abort does not replay: {r}")))?
            }
            _ => return Err(err(e, "event out of place")),
        };
        if produced.is_empty() {
            return Err(err(e, "logged event replays as a repeat"));
        }
        same(&produced, &events[i..], e)?;
        i += produced.len();
    }
    Ok(Replayed { rounds, given_up })
}
