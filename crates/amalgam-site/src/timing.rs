//! Where a site's round time goes, measured by the agent itself: DP encoding (noise draw,
//! weighting, clip, rotation, rounding, and the decode and model step of the published sum),
//! masking (the protocol core's CPU: key agreement, PRG expansion, Shamir, message building)
//! and persistence (sealing and fsync-ing state before anything leaves). Training is the
//! trainer's own; what remains of a round is HTTP and waiting for the other parties. Only
//! durations, never content: `site run` prints them in its `stats` line for the report's
//! time shares.

use std::time::{Duration, Instant};

/// The time a round spent in each of the agent's own stages (training excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundTiming {
    /// DP encoding and decoding.
    pub encoding: Duration,
    /// The masking protocol's computation.
    pub masking: Duration,
    /// Sealing and writing state.
    pub persistence: Duration,
}

/// The stage a measured span counts toward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Encoding,
    Masking,
    Persistence,
}

impl RoundTiming {
    /// Adds the time since `since` to `stage`.
    pub(crate) fn add(&mut self, stage: Stage, since: Instant) {
        let slot = match stage {
            Stage::Encoding => &mut self.encoding,
            Stage::Masking => &mut self.masking,
            Stage::Persistence => &mut self.persistence,
        };
        *slot = slot.saturating_add(since.elapsed());
    }

    /// Runs `f`, counting its time toward `stage`.
    pub(crate) fn time<T>(&mut self, stage: Stage, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.add(stage, t);
        out
    }
}
