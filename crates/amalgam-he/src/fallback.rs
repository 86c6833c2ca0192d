//! When and how an HE round replaces or follows a masking round (`he-fallback.md` §7).
//!
//! A masking round that aborts because too few sites survive is re-run as an HE round among the
//! remaining sites: HE needs only one upload per site and no surviving peers, so the sites that
//! were still online can finish. The re-run is a new release of the same sites' data, and the
//! aborted attempt may already have disclosed masked inputs and shares, so privacy accounting
//! charges both attempts.

use std::collections::BTreeSet;

use amalgam_proto::{Error as MaskingError, SiteId};

use crate::aggregator::Closing;
use crate::consortium::HeConsortium;
use crate::error::HeError;

/// Why a round runs with HE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A masking round aborted for too few survivors.
    MaskingAborted {
        /// The aborted masking round.
        masking_round: u64,
    },
    /// Plants submit when they are online, until a deadline or a target count.
    Asynchronous,
    /// The consortium chose HE for this round.
    Policy,
}

/// What the service runs next: an HE round, who may contribute, how it closes, and how many
/// releases each contributor's privacy ledger must be charged for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HePlan {
    /// Why HE runs.
    pub reason: Reason,
    /// The HE round's number (fresh: signatures bind it).
    pub round: u64,
    /// Sites allowed to contribute (all manifest sites unless restricted).
    pub invited: BTreeSet<SiteId>,
    /// When the aggregator stops accepting.
    pub closing: Closing,
    /// Releases to charge per contributor: 2 after a masking abort, else 1.
    pub charged_attempts: u32,
}

/// Plans the HE re-run of an aborted masking round among `remaining` sites. Only an abort for
/// too few sites qualifies (a peer's misbehaviour is not cured by changing scheme), and the
/// remaining sites must be manifest members and at least the minimum cohort.
pub fn after_masking_abort(
    abort: &MaskingError,
    masking_round: u64,
    he_round: u64,
    remaining: &[SiteId],
    consortium: &HeConsortium,
) -> Result<HePlan, HeError> {
    let cause = match abort {
        MaskingError::Aborted(inner) => inner.as_ref(),
        other => other,
    };
    if !matches!(cause, MaskingError::NotEnoughSites { .. }) {
        return Err(HeError::NoFallback {
            cause: cause.code(),
        });
    }
    if he_round == masking_round {
        return Err(HeError::WrongRound {
            expected: masking_round.wrapping_add(1),
            got: he_round,
        });
    }
    let mut invited = BTreeSet::new();
    for &site in remaining {
        consortium.sites().key(site)?;
        invited.insert(site);
    }
    if invited.len() < consortium.min_cohort() {
        return Err(HeError::CohortTooSmall {
            have: invited.len(),
            need: consortium.min_cohort(),
        });
    }
    Ok(HePlan {
        reason: Reason::MaskingAborted { masking_round },
        round: he_round,
        closing: Closing::OnTargetOrDeadline(invited.len() as u32),
        invited,
        charged_attempts: 2,
    })
}
