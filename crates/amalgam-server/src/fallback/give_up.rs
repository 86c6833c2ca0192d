//! The campaign's give-up of a re-run, kept in the fallback log (spec `service.md` §9): when
//! the re-run of aborted masking round r has not opened in time (the committee's certificates
//! are missing), the campaign carries model_r over and the fallback service logs a public
//! `Summary` event with phase [`PH_RERUN_GIVEN_UP`] under the re-run's round id, before round
//! r+1 opens. From then on that re-run never opens, restarts included: a crash between the
//! give-up and round r+1's log entry, or a give-up of the campaign's last round, cannot let a
//! restarted aggregator publish a second model_{r+1}.
//!
//! A log holding the give-up of a re-run that opened (either order) is refused at replay: the
//! service never writes one.

use crate::events::{Event, EventKind, NewEvent};
use crate::replay::ReplayError;

/// Event phase of a give-up (a public `Summary` event with no sender and an empty body).
pub const PH_RERUN_GIVEN_UP: u8 = 0x46;

/// The event that records the give-up of fallback round `round` (the re-run's id).
pub fn event(round: u64) -> NewEvent {
    NewEvent {
        round,
        kind: EventKind::Summary,
        phase: PH_RERUN_GIVEN_UP,
        sender: None,
        body: Vec::new(),
        response: None,
    }
}

/// Whether `e` records a give-up.
pub fn is_event(e: &Event) -> bool {
    e.kind == EventKind::Summary && e.phase == PH_RERUN_GIVEN_UP
}

/// Checks a logged give-up's form: a fallback round id, no sender, an empty body.
pub fn check(e: &Event) -> Result<(), ReplayError> {
    let err = |reason: &str| ReplayError {
        seq: e.seq,
        reason: reason.into(),
    };
    if !amalgam_net::fallback_api::is_fallback_round(e.round) || e.round == super::keys::KEYS_ROUND
    {
        return Err(err("re-run give-up for a round that is not a re-run"));
    }
    if e.sender.is_some() || !e.body.is_empty() || e.response.is_some() {
        return Err(err("malformed re-run give-up"));
    }
    Ok(())
}
