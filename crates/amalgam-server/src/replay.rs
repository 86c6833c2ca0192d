//! Restart: the event log is replayed into fresh rounds through the same methods that served
//! the requests, so every stored upload is verified again by a fresh `Aggregator` (signature,
//! phase, content) and every close decision is re-executed; the events each step produces must
//! equal the logged ones byte for byte (downloads included). Anything else is a tampered or
//! foreign log and the restore is refused, naming the sequence number.

use std::collections::BTreeMap;

use amalgam_proto::{Phase, SiteId};

use crate::consortium::ConsortiumView;
use crate::events::{Event, EventKind, KIND_DECLINE, NewEvent, as_new};
use crate::round::{RoundState, Window};

/// A refused restore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event log refused at sequence {seq}: {reason}")]
pub struct ReplayError {
    /// The first event that does not replay.
    pub seq: u64,
    /// Why.
    pub reason: String,
}

fn err(e: &Event, reason: impl Into<String>) -> ReplayError {
    ReplayError {
        seq: e.seq,
        reason: reason.into(),
    }
}

fn site_of(e: &Event) -> Result<SiteId, ReplayError> {
    e.sender
        .and_then(|s| u16::try_from(s).ok())
        .map(SiteId)
        .ok_or_else(|| err(e, "missing or out-of-range sender"))
}

fn same(e: &Event, produced: &[NewEvent], logged: &[Event]) -> Result<(), ReplayError> {
    if produced.len() > logged.len() {
        return Err(err(e, "log ends inside a decision"));
    }
    for (p, l) in produced.iter().zip(logged) {
        if *p != as_new(l) {
            return Err(err(l, "logged event differs from the replayed decision"));
        }
    }
    Ok(())
}

/// Rebuilds every round from `events` (already digest-checked by the store).
pub fn replay(
    consortium: &dyn ConsortiumView,
    events: &[Event],
) -> Result<BTreeMap<u64, RoundState>, ReplayError> {
    let mut rounds: BTreeMap<u64, RoundState> = BTreeMap::new();
    // Rounds whose secret bodies were shredded replay from their public record only.
    let shredded: std::collections::BTreeSet<u64> = events
        .iter()
        .filter(|e| e.shredded)
        .map(|e| e.round)
        .collect();
    // Each site's summaries must not regress, in log order (as when they were accepted).
    let mut entries = BTreeMap::new();
    let digest = consortium.consortium_digest();
    let mut i = 0;
    while i < events.len() {
        let e = &events[i];
        if e.kind == EventKind::RoundOpen {
            if rounds.contains_key(&e.round) {
                return Err(err(e, "round opened twice"));
            }
            // model digest[32] ‖ window[16]; the window's bounds are checked by `open`.
            let (digest, window) = match e.body.split_at_checked(32) {
                Some((d, w)) => (<[u8; 32]>::try_from(d).ok(), Window::decode(w)),
                None => (None, None),
            };
            let (Some(digest), Some(window)) = (digest, window) else {
                return Err(err(e, "malformed RoundOpen body"));
            };
            let (state, ev) =
                RoundState::open(consortium, e.round, digest, window).map_err(|r| err(e, r))?;
            same(e, &[ev], &events[i..])?;
            rounds.insert(e.round, state);
            i += 1;
            continue;
        }
        let state = rounds
            .get_mut(&e.round)
            .ok_or_else(|| err(e, "event for a round that was never opened"))?;
        if e.kind == EventKind::Summary {
            let site = site_of(e)?;
            let min = entries.get(&site.0).copied().unwrap_or(0);
            let a = state
                .summary(site, &e.body, &digest, min)
                .map_err(|p| err(e, format!("stored summary refused on replay: {p}")))?;
            same(e, &a.events, &events[i..])?;
            if a.events.is_empty() {
                return Err(err(e, "logged event replays as a repeat"));
            }
            if let Some(n) = state.summary_entries(site) {
                entries.insert(site.0, n);
            }
            i += 1;
            continue;
        }
        if shredded.contains(&e.round) {
            replay_shredded(state, e)?;
            i += 1;
            continue;
        }
        let produced = match e.kind {
            EventKind::Upload => {
                let phase = Phase::from_code(e.phase).ok_or_else(|| err(e, "unknown phase"))?;
                state
                    .upload(site_of(e)?, phase, &e.body)
                    .map_err(|p| err(e, format!("stored upload refused on replay: {p}")))?
                    .events
            }
            EventKind::Other(KIND_DECLINE) => {
                state
                    .decline(site_of(e)?, &e.body)
                    .map_err(|p| err(e, format!("stored decline refused on replay: {p}")))?
                    .events
            }
            EventKind::PhaseClose => {
                let next =
                    Window::decode(&e.body).ok_or_else(|| err(e, "malformed PhaseClose body"))?;
                state
                    .close(next, false)
                    .map_err(|x| err(e, format!("stored phase close fails on replay: {x}")))?
            }
            EventKind::RoundEnd => state
                .close(state.window(), true)
                .map_err(|x| err(e, format!("stored abort does not replay: {x}")))?,
            EventKind::Download
            | EventKind::RoundOpen
            | EventKind::Summary
            | EventKind::Other(_) => {
                return Err(err(e, "event out of place"));
            }
        };
        if produced.is_empty() {
            return Err(err(e, "logged event replays as a repeat"));
        }
        same(e, &produced, &events[i..])?;
        i += produced.len();
    }
    Ok(rounds)
}

/// One event of a shredded round: its uploads, downloads and declines cannot be verified
/// again (only their digests remain) and its closes cannot be re-executed; the round is
/// rebuilt from its `RoundEnd` (the published result or the abort reason) and its summaries.
fn replay_shredded(state: &mut RoundState, e: &Event) -> Result<(), ReplayError> {
    match e.kind {
        // The idempotency record survives the shred: digest and receipt, no body.
        EventKind::Upload => {
            let phase = Phase::from_code(e.phase).ok_or_else(|| err(e, "unknown phase"))?;
            state.restore_accepted(phase, site_of(e)?, e.body_sha256);
            Ok(())
        }
        EventKind::Download | EventKind::Other(KIND_DECLINE) => Ok(()),
        EventKind::PhaseClose => Window::decode(&e.body)
            .map(|_| ())
            .ok_or_else(|| err(e, "malformed PhaseClose body")),
        EventKind::RoundEnd => {
            if state.end().is_some() {
                return Err(err(e, "round ended twice"));
            }
            state.restore_shredded(&e.body).map_err(|r| err(e, r))
        }
        EventKind::Summary | EventKind::RoundOpen | EventKind::Other(_) => {
            Err(err(e, "event out of place"))
        }
    }
}
