//! Crash safety of a site (spec §8.1, the persistence rule): the caller's clock, the phase
//! deadline, the record of used round ids, and the typed path from a transition to the wire.
//!
//! A transition never hands out upload bytes directly. It returns an [`Outgoing`], which
//! [`Outgoing::release`] turns into the upload only against a [`SiteSnapshot`] of the state
//! that transition produced: "persist the new state, then send" is the only way the types
//! allow (rustls style). Writing the snapshot bytes durably before releasing is the
//! driver's part of the rule; the crate cannot see the disk.

use zeroize::Zeroizing;

use crate::codec::{Reader, Writer, msg_type};
use crate::error::{DecodeError, Error, Misuse, Sender};
use crate::messages::ToAggregator;

/// Milliseconds since the Unix epoch, as the caller's clock reads it. The crate reads no
/// clock (sans-IO): every call that may hit a deadline is passed the current time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `self + timeout`, saturating.
    pub fn after(self, timeout: PhaseTimeout) -> Timestamp {
        Timestamp(self.0.saturating_add(timeout.millis()))
    }
}

/// How long a site waits for each download before it abandons the round, in milliseconds
/// (1 ms ..= 7 days). Site policy, persisted with the site's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseTimeout(u64);

impl PhaseTimeout {
    /// Longest allowed wait: a week (a round that takes longer is a new round).
    pub const MAX_MILLIS: u64 = 7 * 24 * 3600 * 1000;

    /// A timeout of `millis` milliseconds.
    pub fn from_millis(millis: u64) -> Result<Self, Error> {
        if millis == 0 || millis > Self::MAX_MILLIS {
            return Err(Misuse::Other("phase timeout must be 1 ms ..= 7 days").into());
        }
        Ok(Self(millis))
    }

    /// The timeout in milliseconds.
    pub fn millis(self) -> u64 {
        self.0
    }
}

/// The high-water mark of round ids a site has used, persisted by the driver across rounds.
///
/// [`crate::Site::new`] refuses a round id at or below the mark and raises the mark to it, so
/// no round id (and so no round context, session or derived key) is ever used twice by one
/// site; a restore of an old round below the mark is refused. The driver must store the
/// updated log ([`RoundLog::to_bytes`]) before the first upload of the new round leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoundLog {
    high_water: Option<u64>,
    /// The latest state step ([`SiteSnapshot::step`]) recorded for the high-water round.
    step: u8,
}

impl RoundLog {
    /// A site that has used no round id yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest round id used, if any.
    pub fn high_water(&self) -> Option<u64> {
        self.high_water
    }

    /// Claims `round` for a new round: refused if at or below the mark.
    pub(crate) fn claim(&mut self, round: u64) -> Result<(), Error> {
        if let Some(high_water) = self.high_water
            && round <= high_water
        {
            return Err(Misuse::RoundReused { round, high_water }.into());
        }
        self.high_water = Some(round);
        self.step = 0;
        Ok(())
    }

    /// Raises the mark to at least `round` (a restored or abandoned round), and for the
    /// high-water round the step to at least `step`.
    pub(crate) fn observe(&mut self, round: u64, step: u8) {
        match self.high_water {
            Some(h) if h > round => {}
            Some(h) if h == round => self.step = self.step.max(step),
            _ => {
                self.high_water = Some(round);
                self.step = step;
            }
        }
    }

    /// Refuses restoring a snapshot of round `round` at `step` when a later step of that
    /// round has been recorded.
    pub(crate) fn check_restore(&self, round: u64, step: u8) -> Result<(), Error> {
        if self.high_water == Some(round) && step < self.step {
            return Err(Misuse::StaleSnapshot {
                round,
                step,
                recorded: self.step,
            }
            .into());
        }
        Ok(())
    }

    /// Records that `snapshot` was durably stored: a later restore of an earlier state of
    /// the same round is then refused ([`Misuse::StaleSnapshot`]). Call it after storing the
    /// snapshot's bytes and store the log ([`RoundLog::to_bytes`]) before releasing the upload.
    pub fn record(&mut self, snapshot: &SiteSnapshot) -> Result<(), Error> {
        if let Some(high_water) = self.high_water
            && snapshot.round < high_water
        {
            return Err(Misuse::RoundReused {
                round: snapshot.round,
                high_water,
            }
            .into());
        }
        self.observe(snapshot.round, snapshot.step);
        Ok(())
    }

    /// The latest state step recorded for the high-water round (0 if none).
    pub fn step(&self) -> u8 {
        self.step
    }

    /// Canonical encoding: header (type [`msg_type::SITE_ROUND_LOG`]), flag u8, mark u64,
    /// step u8 (0 with flag 0).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.header(msg_type::SITE_ROUND_LOG);
        match self.high_water {
            None => {
                w.u8(0);
                w.u64(0);
            }
            Some(h) => {
                w.u8(1);
                w.u64(h);
            }
        }
        w.u8(self.step);
        w.into_bytes()
    }

    /// Strict inverse of [`RoundLog::to_bytes`] (untrusted bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let local = |e| Error::decode(Sender::Local, e);
        let mut r = Reader::new(bytes);
        r.expect_header(msg_type::SITE_ROUND_LOG).map_err(local)?;
        let flag = r.u8("round_log.flag").map_err(local)?;
        let mark = r.u64("round_log.high_water").map_err(local)?;
        let step = r.u8("round_log.step").map_err(local)?;
        r.finish("RoundLog").map_err(local)?;
        if (flag == 0 && step != 0) || step > MAX_STEP {
            return Err(local(DecodeError::InvalidValue {
                field: "round_log.step",
                reason: "not 0 without a mark, or above the last state tag",
            }));
        }
        let high_water = match (flag, mark) {
            (0, 0) => None,
            (1, h) => Some(h),
            _ => {
                return Err(local(DecodeError::InvalidValue {
                    field: "round_log.flag",
                    reason: "not 0 (with mark 0) or 1",
                }));
            }
        };
        Ok(Self { high_water, step })
    }
}

/// Which state of which [`crate::Site`] instance a [`SiteSnapshot`] or an [`Outgoing`] belongs
/// to: a tag unique to the instance (drawn from a process-wide counter when the instance is
/// built or restored) and its transition count. Two instances restored from the same bytes
/// reach equal counts, so the count alone would let one instance's snapshot release the other's
/// upload; the tag cannot be forged, since neither type can be built outside this crate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct StateVersion {
    pub(crate) instance: u64,
    pub(crate) transitions: u64,
}

impl StateVersion {
    /// Version 0 of a fresh instance.
    pub(crate) fn fresh() -> Self {
        static NEXT_INSTANCE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
        Self {
            instance: NEXT_INSTANCE.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
            transitions: 0,
        }
    }

    /// The next state of the same instance.
    pub(crate) fn bump(&mut self) {
        self.transitions += 1;
    }
}

/// The persisted bytes of a site's state, wiped on drop (they hold the round's secrets:
/// store them only on the site, sealed at rest), and the proof of which state they encode.
#[derive(PartialEq, Eq)]
pub struct SiteSnapshot {
    bytes: Zeroizing<Vec<u8>>,
    version: StateVersion,
    round: u64,
    step: u8,
}

/// The highest state tag (Abandoned, spec §8).
pub(crate) const MAX_STEP: u8 = 7;

impl core::fmt::Debug for SiteSnapshot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SiteSnapshot")
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl SiteSnapshot {
    pub(crate) fn new(
        bytes: Zeroizing<Vec<u8>>,
        version: StateVersion,
        round: u64,
        step: u8,
    ) -> Self {
        Self {
            bytes,
            version,
            round,
            step,
        }
    }

    /// The round this snapshot belongs to.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The state step: the state tag of spec §8 (1 AwaitingKeys … 5 Finished, 6 Aborted,
    /// 7 Abandoned), which only grows within a round.
    pub fn step(&self) -> u8 {
        self.step
    }

    /// The bytes to store durably (then release the pending upload).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes, still wiped on drop.
    pub fn into_bytes(self) -> Zeroizing<Vec<u8>> {
        self.bytes
    }
}

/// An upload that may leave only after the state that produced it has been persisted.
#[must_use = "persist the site's new state, then release the upload"]
pub struct Outgoing {
    upload: ToAggregator,
    version: StateVersion,
}

impl core::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Outgoing")
            .field("upload", &self.upload.name())
            .finish_non_exhaustive()
    }
}

impl Outgoing {
    pub(crate) fn new(upload: ToAggregator, version: StateVersion) -> Self {
        Self { upload, version }
    }

    /// The upload, given the snapshot of the state that produced it (taken after the
    /// transition, from the same `Site` instance). A snapshot of any other state, or of
    /// another instance, is local misuse: nothing is released. This ties the upload to the
    /// right snapshot; it cannot know that the snapshot's bytes were durably stored — the
    /// driver must store them before calling this (spec §8.1).
    pub fn release(self, persisted: &SiteSnapshot) -> Result<ToAggregator, Error> {
        if persisted.version != self.version {
            return Err(Misuse::NotPersisted.into());
        }
        Ok(self.upload)
    }

    /// The name of the message waiting to be released (for logs).
    pub fn name(&self) -> &'static str {
        self.upload.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_log_refuses_reuse_and_round_trips() {
        let mut log = RoundLog::new();
        assert_eq!(RoundLog::from_bytes(&log.to_bytes()).unwrap(), log);
        log.claim(5).unwrap();
        assert!(matches!(
            log.claim(5),
            Err(Error::Misuse(Misuse::RoundReused {
                round: 5,
                high_water: 5
            }))
        ));
        assert!(log.claim(4).is_err());
        log.claim(6).unwrap();
        log.observe(3, 2);
        assert_eq!(log.high_water(), Some(6));
        assert_eq!(log.step(), 0);
        log.observe(6, 3);
        log.observe(6, 2);
        assert_eq!(log.step(), 3);
        assert!(log.check_restore(6, 2).is_err());
        assert!(log.check_restore(6, 3).is_ok());
        assert!(log.check_restore(7, 1).is_ok());
        let bytes = log.to_bytes();
        assert_eq!(RoundLog::from_bytes(&bytes).unwrap(), log);
        let mut bad = bytes.clone();
        bad[4] = 2;
        assert!(RoundLog::from_bytes(&bad).is_err());
        assert!(RoundLog::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut none_with_mark = RoundLog::new().to_bytes();
        none_with_mark[12] = 1;
        assert!(RoundLog::from_bytes(&none_with_mark).is_err());
        let mut step_without_mark = RoundLog::new().to_bytes();
        *step_without_mark.last_mut().unwrap() = 1;
        assert!(RoundLog::from_bytes(&step_without_mark).is_err());
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(PhaseTimeout::from_millis(0).is_err());
        assert!(PhaseTimeout::from_millis(PhaseTimeout::MAX_MILLIS + 1).is_err());
        let t = PhaseTimeout::from_millis(10).unwrap();
        assert_eq!(Timestamp(5).after(t), Timestamp(15));
        assert_eq!(Timestamp(u64::MAX).after(t), Timestamp(u64::MAX));
    }
}
