//! Record-level DP at the site: the dataset's record ledger and the run parameters every local
//! run of this campaign is charged with (site-agent.md §3.1).
//!
//! Per round, in order: before the site-level charge the agent asks the record ledger whether
//! the run fits ([`amalgam_dp::ledger::record::RecordLedger::check`]) and declines the round
//! with [`crate::statements::DeclineReason::RecordBudgetExceeded`] if not, so neither budget
//! is spent; after the site-level charge it takes the record permit (the charge on disk)
//! before the first training step, hands the trainer the consumed grant in [`Permits`], and
//! refuses a trainer whose reported charge is not exactly the granted run.
//!
//! The ledger is per dataset, not per campaign; the agent keeps, sealed in its own state, the
//! ledger's identity and the anchor after its last charge, and refuses a ledger file that is
//! behind it (an older copy restored) or another ledger of the same dataset (the file deleted
//! and started afresh).
//!
//! [`Permits`]: crate::trainer::Permits

use amalgam_dp::ledger::audit::Anchor;
use amalgam_dp::ledger::record::{
    DataVersion, RecordGrant, RecordLedger, RecordMechanism, RecordRunRequest,
};
use amalgam_net::summary::RecordAnchor;
use sha2::{Digest, Sha256};

use crate::error::AgentError;
use crate::trainer::RecordCharge;

/// A dataset's record ledger and the per-run parameters of this campaign.
#[derive(Debug)]
pub struct RecordDp {
    /// The dataset's ledger.
    pub ledger: RecordLedger,
    /// Poisson sampling rate q of every step.
    pub q: f64,
    /// z = σ/Δ of every step.
    pub noise_multiplier: f64,
    /// The mechanism every run uses (C, γ, σ, d, sampler), charged with it: the ledger refuses
    /// a z above its σ/Δ.
    pub mechanism: RecordMechanism,
    /// The data file the trainer holds (its digest and N), recorded in every charge.
    pub data: DataVersion,
}

/// The run id of `round` of the campaign: a run is charged once, and every (consortium,
/// campaign, round) names a different run.
pub fn record_run_id(
    consortium_digest: &[u8; 32],
    campaign_digest: &[u8; 32],
    round: u64,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"amalgam/v1/site/record-run");
    h.update(consortium_digest);
    h.update(campaign_digest);
    h.update(round.to_be_bytes());
    h.finalize().into()
}

/// The name under which the agent keeps, sealed, the one record dataset id it charges.
pub(crate) const KEPT_DATASET: &str = "record-dataset.id";

/// The name of the kept anchor of `dataset` in the agent's own store.
pub(crate) fn kept_anchor_name(dataset: &[u8; 32]) -> String {
    format!("record-{}.anchor", hex::encode(&dataset[..16]))
}

/// `ledger_id [32] | entries u64 BE | head [32]`.
pub(crate) fn encode_kept(ledger_id: &[u8; 32], anchor: &Anchor) -> Vec<u8> {
    let mut b = Vec::with_capacity(72);
    b.extend_from_slice(ledger_id);
    b.extend_from_slice(&(anchor.entries as u64).to_be_bytes());
    b.extend_from_slice(&anchor.head);
    b
}

/// Strict decoding of [`encode_kept`].
pub(crate) fn decode_kept(b: &[u8]) -> Result<([u8; 32], Anchor), AgentError> {
    let bad = || AgentError::BadState("kept record-ledger anchor");
    if b.len() != 72 {
        return Err(bad());
    }
    let id: [u8; 32] = b[..32].try_into().map_err(|_| bad())?;
    let entries = u64::from_be_bytes(b[32..40].try_into().map_err(|_| bad())?);
    let head: [u8; 32] = b[40..].try_into().map_err(|_| bad())?;
    Ok((
        id,
        Anchor {
            entries: usize::try_from(entries).map_err(|_| bad())?,
            head,
        },
    ))
}

impl RecordDp {
    /// The record ledger's anchor to publish in the round's signed summary.
    pub(crate) fn published_anchor(&self) -> RecordAnchor {
        let a = self.ledger.anchor();
        RecordAnchor {
            dataset: self.ledger.policy().dataset,
            ledger_id: self.ledger.ledger_id(),
            entries: a.entries as u64,
            head: a.head,
            epsilon: self.ledger.spent(),
        }
    }

    /// Refuses this ledger against a record anchor a signed summary published: for the same
    /// dataset, another ledger id is a ledger deleted and started afresh, and a ledger behind
    /// the anchor (or forked from it) is an older copy restored. An anchor of another dataset
    /// is this site's earlier record dataset in this consortium: the same records under a new
    /// name would start a second budget, so it is refused too. A changed data file under the
    /// same name is the same dataset (record-dp.md §8).
    pub(crate) fn check_published(&self, published: &RecordAnchor) -> Result<(), AgentError> {
        if published.dataset != self.ledger.policy().dataset {
            return Err(AgentError::RecordRun(format!(
                "this site's published summaries anchor record dataset {}; one site charges one record dataset in a consortium (another --record-dataset name for the same records would start a second budget)",
                hex::encode(published.dataset)
            )));
        }
        if published.ledger_id != self.ledger.ledger_id() {
            return Err(AgentError::RecordRun(
                "this dataset's record ledger is not the one this site's published summary \
                 anchors (was it deleted and started afresh?)"
                    .into(),
            ));
        }
        let anchor = Anchor {
            entries: usize::try_from(published.entries).map_err(|_| {
                AgentError::RecordRun("the published record anchor's entry count".into())
            })?,
            head: published.head,
        };
        self.ledger.check_anchor(&anchor)?;
        Ok(())
    }

    /// The run request of one round.
    pub(crate) fn request(&self, run_id: [u8; 32], steps: u32) -> RecordRunRequest {
        RecordRunRequest {
            run_id,
            q: self.q,
            noise_multiplier: self.noise_multiplier,
            steps,
            data: self.data,
            mechanism: self.mechanism,
        }
    }
}

/// Refuses a trainer's reported charge that is not exactly the granted run (or is missing).
pub(crate) fn check_reported(
    grant: Option<&RecordGrant>,
    reported: Option<&RecordCharge>,
) -> Result<(), AgentError> {
    match (grant, reported) {
        (None, None) => Ok(()),
        (Some(g), Some(r))
            if r.steps == g.request.steps
                && r.sample_rate == g.request.q
                && r.noise_multiplier == g.request.noise_multiplier
                && r.mechanism == g.request.mechanism =>
        {
            Ok(())
        }
        (Some(_), None) => Err(AgentError::RecordRun(
            "the trainer ran without record-level DP under a record permit".into(),
        )),
        (None, Some(_)) => Err(AgentError::RecordRun(
            "the trainer reports a record-level charge no record ledger took".into(),
        )),
        (Some(g), Some(r)) => Err(AgentError::RecordRun(format!(
            "the trainer ran {} steps at q = {}, z = {}, {:?}; the permit covers {} steps at \
             q = {}, z = {}, {:?}",
            r.steps,
            r.sample_rate,
            r.noise_multiplier,
            r.mechanism,
            g.request.steps,
            g.request.q,
            g.request.noise_multiplier,
            g.request.mechanism
        ))),
    }
}
