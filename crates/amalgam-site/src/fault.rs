//! Crash-test hooks of the site agent (cargo feature `fault-points`, never in release builds:
//! `amalgam_store::fault` refuses to compile the feature without debug assertions).
//!
//! Points, each reached with k = the round id (`AMALGAM_FAULT=<point>:<round>`):
//! - `after-persist-<phase>`: the sealed state that produced this phase's upload is on disk,
//!   nothing has left the site yet;
//! - `after-send-<phase>`: the aggregator acknowledged the upload (a 2xx), the agent has not
//!   polled the next download yet.
//!
//! - `after-persist-fallback` / `after-send-fallback`: the same two points of a fallback
//!   round's one upload (k = the fallback round id; [`crate::fallback`]).
//!
//! `<phase>` is the phase's API path segment (`advertise-keys`, `share-keys`, `masked-input`,
//! `consistency-check`, `unmasking`). A harness SIGKILLs the process once it prints
//! `FAULT <point> <round>` and restarts it to check the resumed agent.
//!
//! [`encoded_observer_from_env`] lets the harness see each encoded update so that it can
//! compute the plaintext sum the published one must equal: only with the feature, only when
//! `AMALGAM_TEST_ENCODED` names a file.

use amalgam_proto::Phase;

use crate::agent::EncodedObserver;

/// Reaches point `after-<what>-<phase>` of `round` (see the module doc).
pub(crate) fn site_point(what: &str, phase: Phase, round: u64) {
    #[cfg(feature = "fault-points")]
    if let Some(seg) = amalgam_net::api::phase_segment(phase) {
        amalgam_store::fault::fault_point(&format!("after-{what}-{seg}"), round);
    }
    #[cfg(not(feature = "fault-points"))]
    let _ = (what, phase, round);
}

/// Reaches point `after-<what>-fallback` of fallback round `round` (see the module doc).
pub(crate) fn fallback_point(what: &str, round: u64) {
    #[cfg(feature = "fault-points")]
    amalgam_store::fault::fault_point(&format!("after-{what}-fallback"), round);
    #[cfg(not(feature = "fault-points"))]
    let _ = (what, round);
}

/// With feature `fault-points` and `AMALGAM_TEST_ENCODED=<file>` set: an observer writing
/// `{"round": r, "values": [...]}` to that file (atomically) for each round's encoded
/// update. Otherwise `None`: a production build never writes an update out.
pub fn encoded_observer_from_env() -> Option<EncodedObserver> {
    #[cfg(feature = "fault-points")]
    {
        let path = std::path::PathBuf::from(std::env::var_os("AMALGAM_TEST_ENCODED")?);
        Some(Box::new(move |round, values| {
            let doc = serde_json::json!({ "round": round, "values": values });
            let _ = amalgam_store::atomic_write(&path, doc.to_string().as_bytes(), 0o600);
        }))
    }
    #[cfg(not(feature = "fault-points"))]
    None
}
