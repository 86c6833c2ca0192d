//! The aggregator role of an HE round: verify and add signed contributions, holding no key.
//!
//! Synchronous rounds close when the driver says (a deadline, or everybody answered). An
//! asynchronous round (plants with intermittent connectivity) also closes itself as soon as a
//! target count of contributions is reached; the driver closes it at its deadline otherwise.
//! Either way the round only produces an aggregate if the minimum cohort contributed.
//!
//! The driver keeps each accepted contribution's [`crate::messages::MaskAttestation`]
//! ([`SignedContribution::mask_attestation`]) to forward to the decryptor with the claim; the
//! bodies of single contributions never leave the aggregator.

use std::collections::BTreeSet;
use std::convert::Infallible;

use amalgam_proto::codec::{Decode, Encode, Reader, Writer};
use amalgam_proto::{AggregatorRole, AggregatorStep, DecodeError, SiteId, Snapshot};

use crate::ciphertext::CiphertextSum;
use crate::consortium::HeConsortium;
use crate::error::HeError;
use crate::fallback::HePlan;
use crate::messages::{AggregateClaim, SignedContribution};
use crate::wire::SNAPSHOT_HE_AGGREGATOR;

/// When an HE round stops accepting contributions by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// Only when the driver closes it (at its deadline).
    OnDeadline,
    /// At the deadline or as soon as this many contributions arrived, whichever is first.
    OnTargetOrDeadline(u32),
}

/// Aggregator state of one HE round.
pub struct HeAggregator {
    consortium: HeConsortium,
    round: u64,
    closing: Closing,
    sum: CiphertextSum,
    contributors: BTreeSet<SiteId>,
    invited: Option<BTreeSet<SiteId>>,
    finished: bool,
}

impl HeAggregator {
    /// Opens a round. A target must lie between the minimum cohort and the maximum cohort.
    pub fn new(consortium: HeConsortium, round: u64, closing: Closing) -> Result<Self, HeError> {
        if let Closing::OnTargetOrDeadline(target) = closing {
            let (min, max) = (
                consortium.min_cohort() as u32,
                consortium.params().max_sites(),
            );
            if target < min || target > max {
                return Err(HeError::TargetOutOfRange { target, min, max });
            }
        }
        let sum = CiphertextSum::zero(consortium.params());
        Ok(Self {
            consortium,
            round,
            closing,
            sum,
            contributors: BTreeSet::new(),
            invited: None,
            finished: false,
        })
    }

    /// Opens the round a [`HePlan`] describes: only its invited sites may contribute (an HE
    /// re-run after a masking abort runs among the remaining sites only).
    pub fn for_plan(consortium: HeConsortium, plan: &HePlan) -> Result<Self, HeError> {
        for &site in &plan.invited {
            consortium.sites().key(site)?;
        }
        let mut agg = Self::new(consortium, plan.round, plan.closing)?;
        agg.invited = Some(plan.invited.clone());
        Ok(agg)
    }

    /// Whether an asynchronous round reached its target (it then accepts nothing more).
    pub fn target_reached(&self) -> bool {
        matches!(self.closing, Closing::OnTargetOrDeadline(t) if self.contributors.len() >= t as usize)
    }

    /// Number of contributions added so far.
    pub fn contributions(&self) -> usize {
        self.contributors.len()
    }
}

impl AggregatorRole for HeAggregator {
    type Upload = SignedContribution;
    type Download = Infallible;
    type Output = AggregateClaim;
    type Error = HeError;

    /// Checks round, manifest membership, key, duplicate and signature, then adds. On error
    /// nothing changes.
    fn receive(&mut self, c: SignedContribution) -> Result<(), HeError> {
        if self.finished || self.target_reached() {
            return Err(HeError::RoundClosed { round: self.round });
        }
        let identity = self
            .consortium
            .check_origin(c.round, self.round, c.site, &c.key)?;
        if self.invited.as_ref().is_some_and(|i| !i.contains(&c.site)) {
            return Err(HeError::NotInvited { site: c.site.0 });
        }
        if self.contributors.contains(&c.site) {
            return Err(HeError::DuplicateContribution { site: c.site.0 });
        }
        c.verify(identity)?;
        self.sum.add(&c.ciphertext, self.consortium.params())?;
        self.contributors.insert(c.site);
        Ok(())
    }

    /// Produces the aggregate claim if the minimum cohort contributed; otherwise refuses and
    /// changes nothing (the driver may wait longer, or abort the round).
    fn close_phase(&mut self) -> Result<AggregatorStep<Infallible, AggregateClaim>, HeError> {
        if self.finished {
            return Err(HeError::RoundClosed { round: self.round });
        }
        let need = self.consortium.min_cohort();
        if self.contributors.len() < need {
            return Err(HeError::CohortTooSmall {
                have: self.contributors.len(),
                need,
            });
        }
        self.finished = true;
        let sum = std::mem::replace(&mut self.sum, CiphertextSum::zero(self.consortium.params()));
        Ok(AggregatorStep::Finished(AggregateClaim {
            round: self.round,
            key: *self.consortium.key(),
            contributors: self.contributors.iter().copied().collect(),
            sum,
        }))
    }

    fn responded(&self) -> Vec<SiteId> {
        self.contributors.iter().copied().collect()
    }

    fn is_done(&self) -> bool {
        self.finished
    }
}

impl Snapshot for HeAggregator {
    type Context = HeConsortium;
    type Error = HeError;

    /// Header (type 0x72), round (u64), closing (u8 0 | 1 + target u32), finished (bool),
    /// contributor count (u32) and ids (u16, increasing), running sum. Holds no secret.
    fn snapshot(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.header(SNAPSHOT_HE_AGGREGATOR);
        w.u64(self.round);
        match self.closing {
            Closing::OnDeadline => w.u8(0),
            Closing::OnTargetOrDeadline(t) => {
                w.u8(1);
                w.u32(t);
            }
        }
        w.bool(self.finished);
        match &self.invited {
            None => w.u8(0),
            Some(invited) => {
                w.u8(1);
                write_sites(&mut w, invited);
            }
        }
        write_sites(&mut w, &self.contributors);
        self.sum.encode(&mut w);
        w.into_bytes()
    }

    /// Rebuilds the aggregator, re-validating everything against the consortium.
    fn restore(bytes: &[u8], consortium: &HeConsortium) -> Result<Self, HeError> {
        let mut r = Reader::new(bytes);
        r.expect_header(SNAPSHOT_HE_AGGREGATOR)?;
        let round = r.u64("snapshot.round")?;
        let closing = match r.u8("snapshot.closing")? {
            0 => Closing::OnDeadline,
            1 => Closing::OnTargetOrDeadline(r.u32("snapshot.target")?),
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "snapshot.closing",
                    reason: "must be 0 or 1",
                }
                .into());
            }
        };
        let finished = r.bool("snapshot.finished")?;
        let params = consortium.params();
        let invited = match r.u8("snapshot.invited")? {
            0 => None,
            1 => Some(read_sites(
                &mut r,
                consortium,
                "snapshot.invited",
                usize::from(u16::MAX),
            )?),
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "snapshot.invited",
                    reason: "must be 0 or 1",
                }
                .into());
            }
        };
        let contributors = read_sites(
            &mut r,
            consortium,
            "snapshot.contributors",
            params.max_sites() as usize,
        )?;
        let count = contributors.len();
        let sum = CiphertextSum::decode(&mut r, params)?;
        r.finish("HeAggregatorSnapshot")?;
        if sum.sites() as usize != count {
            return Err(DecodeError::InvalidValue {
                field: "sum.sites",
                reason: "differs from the contributor count",
            }
            .into());
        }
        let mut agg = Self::new(consortium.clone(), round, closing)?;
        agg.sum = sum;
        agg.contributors = contributors;
        agg.finished = finished;
        agg.invited = invited;
        Ok(agg)
    }
}

/// Count (u32) then strictly increasing site ids (u16).
fn write_sites(w: &mut Writer, sites: &BTreeSet<SiteId>) {
    w.count(sites.len());
    for s in sites {
        w.u16(s.0);
    }
}

/// Reads what [`write_sites`] wrote: at most `max` manifest sites, strictly increasing.
fn read_sites(
    r: &mut Reader<'_>,
    consortium: &HeConsortium,
    field: &'static str,
    max: usize,
) -> Result<BTreeSet<SiteId>, HeError> {
    let count = r.count(field, 0, max)?;
    let mut sites = BTreeSet::new();
    for _ in 0..count {
        let site = SiteId(r.u16(field)?);
        consortium.sites().key(site)?;
        if sites.last().is_some_and(|p| *p >= site) {
            return Err(DecodeError::InvalidValue {
                field,
                reason: "not strictly increasing",
            }
            .into());
        }
        sites.insert(site);
    }
    Ok(sites)
}
