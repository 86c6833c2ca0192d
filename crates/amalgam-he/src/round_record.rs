//! The persisted records that keep a party from taking part in one round id twice (spec §5.7).
//!
//! Everything a party does in a round is bound to the round id through the round context, so a
//! second fresh instance of the same party for the same round id defeats every per-instance
//! rule: two fresh instances of each honest member sign S and S ∖ {v}, both quorums release and
//! k_v differences out; two fresh site instances draw two seeds for one update. Only a record
//! that outlives the instance stops this. Each constructor that starts a round takes the record
//! by `&mut`, refuses a used round id with [`HeError::RoundReused`] (code 9) and claims it; the
//! driver MUST persist the updated record before the first signature or upload of the round
//! leaves.
//!
//! Members serve overlapping asynchronous rounds, so theirs is a set of round ids (above a
//! pruned floor), not a high-water mark; a site runs one round at a time and keeps a mark.

use std::collections::BTreeSet;

use amalgam_proto::DecodeError;
use amalgam_proto::codec::{Reader, Writer};

use crate::error::HeError;
use crate::wire::{SNAPSHOT_HE_MEMBER_RECORD, SNAPSHOT_HE_SITE_LOG};

/// Most round ids a member record holds above its floor (rounds open at once, in practice
/// far fewer); [`MemberRoundRecord::prune_below`] makes room.
pub const MAX_OPEN_ROUNDS: usize = 4096;

/// A committee member's record of the rounds it has served: every round id at or above
/// `floor` that it started, and every round id below `floor` (pruned) counts as used.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct MemberRoundRecord {
    floor: u64,
    rounds: BTreeSet<u64>,
}

impl MemberRoundRecord {
    /// A member that has served no round.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `round` was used (claimed, or below the pruned floor).
    pub fn is_used(&self, round: u64) -> bool {
        round < self.floor || self.rounds.contains(&round)
    }

    /// Claims `round`: refused if used, or if the record is full. On `Err`, nothing changed.
    pub(crate) fn claim(&mut self, round: u64) -> Result<(), HeError> {
        if self.is_used(round) {
            return Err(HeError::RoundReused { round });
        }
        if self.rounds.len() >= MAX_OPEN_ROUNDS {
            return Err(HeError::WrongState(
                "member round record full: prune rounds past their deadline",
            ));
        }
        self.rounds.insert(round);
        Ok(())
    }

    /// Marks every round below `floor` used and forgets their ids (call for rounds whose
    /// deadline passed). The floor never moves down.
    pub fn prune_below(&mut self, floor: u64) {
        if floor > self.floor {
            self.floor = floor;
            self.rounds = self.rounds.split_off(&floor);
        }
    }

    /// Canonical encoding: header (type 0x77), u64 floor, u32 n, n round ids strictly
    /// ascending, each at or above the floor.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(16 + 8 * self.rounds.len());
        w.header(SNAPSHOT_HE_MEMBER_RECORD);
        w.u64(self.floor);
        w.count(self.rounds.len());
        for &r in &self.rounds {
            w.u64(r);
        }
        w.into_bytes()
    }

    /// Strict inverse of [`MemberRoundRecord::to_bytes`] (untrusted bytes): bounded count,
    /// strictly ascending ids not below the floor, no trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeError> {
        let mut r = Reader::new(bytes);
        r.expect_header(SNAPSHOT_HE_MEMBER_RECORD)?;
        let floor = r.u64("record.floor")?;
        let n = r.count("record.rounds", 0, MAX_OPEN_ROUNDS)?;
        let mut rounds = BTreeSet::new();
        let mut last: Option<u64> = None;
        for _ in 0..n {
            let round = r.u64("record.round")?;
            if round < floor || last.is_some_and(|l| l >= round) {
                return Err(DecodeError::InvalidValue {
                    field: "record.round",
                    reason: "not strictly ascending at or above the floor",
                }
                .into());
            }
            last = Some(round);
            rounds.insert(round);
        }
        r.finish("MemberRoundRecord")?;
        Ok(Self { floor, rounds })
    }
}

/// A site's high-water mark of round ids: a site starts rounds in increasing order, one at a
/// time, so the mark alone refuses every reuse.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct SiteRoundLog {
    high_water: Option<u64>,
}

impl SiteRoundLog {
    /// A site that has used no round id.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest round id used, if any.
    pub fn high_water(&self) -> Option<u64> {
        self.high_water
    }

    /// Claims `round`: refused at or below the mark. On `Err`, nothing changed.
    pub(crate) fn claim(&mut self, round: u64) -> Result<(), HeError> {
        if self.high_water.is_some_and(|h| round <= h) {
            return Err(HeError::RoundReused { round });
        }
        self.high_water = Some(round);
        Ok(())
    }

    /// Canonical encoding: header (type 0x78), flag u8 (0: none, then mark 0; 1: set), u64 mark.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(13);
        w.header(SNAPSHOT_HE_SITE_LOG);
        w.bool(self.high_water.is_some());
        w.u64(self.high_water.unwrap_or(0));
        w.into_bytes()
    }

    /// Strict inverse of [`SiteRoundLog::to_bytes`] (untrusted bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeError> {
        let mut r = Reader::new(bytes);
        r.expect_header(SNAPSHOT_HE_SITE_LOG)?;
        let set = r.bool("log.flag")?;
        let mark = r.u64("log.high_water")?;
        r.finish("SiteRoundLog")?;
        match (set, mark) {
            (false, 0) => Ok(Self { high_water: None }),
            (true, h) => Ok(Self {
                high_water: Some(h),
            }),
            (false, _) => Err(DecodeError::InvalidValue {
                field: "log.high_water",
                reason: "a mark without the flag",
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_record_claims_once_prunes_and_round_trips() {
        let mut rec = MemberRoundRecord::new();
        rec.claim(7).unwrap();
        rec.claim(5).unwrap();
        assert_eq!(rec.claim(7), Err(HeError::RoundReused { round: 7 }));
        assert_eq!(HeError::RoundReused { round: 7 }.code(), 9);
        rec.prune_below(6);
        assert_eq!(rec.claim(5), Err(HeError::RoundReused { round: 5 }));
        assert_eq!(rec.claim(7), Err(HeError::RoundReused { round: 7 }));
        rec.claim(6).unwrap();
        let bytes = rec.to_bytes();
        assert_eq!(MemberRoundRecord::from_bytes(&bytes).unwrap(), rec);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(MemberRoundRecord::from_bytes(&trailing).is_err());
        // Unsorted ids: swap the two ids (6 and 7).
        let mut unsorted = bytes.clone();
        let n = unsorted.len();
        unsorted[n - 16..].rotate_left(8);
        assert!(MemberRoundRecord::from_bytes(&unsorted).is_err());
        // An id below the floor.
        let mut below = bytes.clone();
        below[n - 16..n - 8].copy_from_slice(&5u64.to_be_bytes());
        assert!(MemberRoundRecord::from_bytes(&below).is_err());
        // A count above the bound is refused before anything is read.
        let mut big = bytes[..12].to_vec();
        big.extend_from_slice(&(MAX_OPEN_ROUNDS as u32 + 1).to_be_bytes());
        assert!(MemberRoundRecord::from_bytes(&big).is_err());
    }

    #[test]
    fn site_log_is_a_strict_high_water_mark() {
        let mut log = SiteRoundLog::new();
        log.claim(3).unwrap();
        assert_eq!(log.claim(3), Err(HeError::RoundReused { round: 3 }));
        assert_eq!(log.claim(2), Err(HeError::RoundReused { round: 2 }));
        assert_eq!(log.high_water(), Some(3));
        let bytes = log.to_bytes();
        assert_eq!(SiteRoundLog::from_bytes(&bytes).unwrap(), log);
        assert_eq!(
            SiteRoundLog::from_bytes(&SiteRoundLog::new().to_bytes()).unwrap(),
            SiteRoundLog::new()
        );
        let mut bad = SiteRoundLog::new().to_bytes();
        *bad.last_mut().unwrap() = 1;
        assert!(SiteRoundLog::from_bytes(&bad).is_err());
        let mut trailing = bytes;
        trailing.push(0);
        assert!(SiteRoundLog::from_bytes(&trailing).is_err());
    }
}
