//! The campaign runs itself: round 0 is bound to the campaign's initial weights; when round r
//! ends the aggregator computes model_{r+1} from round r's published sum (or keeps model_r when
//! r aborted) with the consortium's one implementation (`amalgam_consortium::global_model`, the
//! code every site runs) and opens round r+1 bound to its digest, until the campaign has its
//! completed rounds or reaches the manifest's last round id.
//!
//! Every decision is in the event log: each round's `RoundOpen` holds its model digest and
//! each `RoundEnd` the published result. After a restart [`resume`] recomputes the chain from
//! the initial weights and the logged results and refuses a log whose bound digests differ.

use std::sync::Arc;
use std::time::Duration;

use amalgam_consortium::global_model::model_digest;
use amalgam_proto::AggregateOutput;

use crate::round::RoundEnd;
use crate::service::Service;

/// What the aggregator needs of the campaign (implemented for `VerifiedManifest`).
pub trait CampaignRules: Send + Sync + 'static {
    /// Digest of the initial weights the campaign pins.
    fn initial_digest(&self) -> [u8; 32];
    /// Number of parameters.
    fn model_len(&self) -> usize;
    /// Completed rounds the campaign wants.
    fn rounds(&self) -> u64;
    /// Largest round id (aborted rounds consume ids).
    fn max_round(&self) -> u64;
    /// model_{r+1} from model_r and round `round`'s result.
    fn next_model(
        &self,
        round: u64,
        model: &[f32],
        result: &AggregateOutput,
    ) -> Result<Vec<f32>, String>;
}

/// Why the campaign could not run or continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CampaignError {
    /// The initial weights are not the ones the campaign pins.
    #[error("initial weights: {0}")]
    InitialWeights(String),
    /// The event log's rounds are not this campaign's chain.
    #[error("event log is not this campaign's model chain: {0}")]
    Chain(String),
    /// model_{r+1} could not be computed from round r's result.
    #[error("round {round}: next model: {reason}")]
    Step {
        /// The round whose result failed.
        round: u64,
        /// Why.
        reason: String,
    },
    /// The service refused an operation.
    #[error("service: {0}")]
    Service(String),
}

/// Where the campaign stands.
#[derive(Debug, Clone)]
pub struct Position {
    /// The latest round (opened or to open next).
    pub round: u64,
    /// Its model (model_round).
    pub model: Vec<f32>,
    /// Whether that round is already open in the service.
    pub opened: bool,
    /// Rounds finished so far.
    pub completed: u64,
}

fn step(
    rules: &dyn CampaignRules,
    round: u64,
    model: Vec<f32>,
    end: &RoundEnd,
    completed: &mut u64,
) -> Result<Vec<f32>, CampaignError> {
    match end {
        RoundEnd::Finished(out) => {
            *completed += 1;
            rules
                .next_model(round, &model, out)
                .map_err(|reason| CampaignError::Step { round, reason })
        }
        RoundEnd::Aborted(_) => Ok(model),
    }
}

/// Checks the initial weights and replays the chain over the rounds the service already
/// holds (ids 0, 1, ... without a gap, each bound to the model this computation gives).
pub async fn resume(
    service: &Service,
    rules: &dyn CampaignRules,
    initial: Vec<f32>,
) -> Result<Position, CampaignError> {
    if initial.len() != rules.model_len() {
        return Err(CampaignError::InitialWeights(format!(
            "{} values, the campaign has {} parameters",
            initial.len(),
            rules.model_len()
        )));
    }
    if model_digest(&initial) != rules.initial_digest() {
        return Err(CampaignError::InitialWeights(
            "their digest is not the campaign's initial weights digest".into(),
        ));
    }
    let mut pos = Position {
        round: 0,
        model: initial,
        opened: false,
        completed: 0,
    };
    for (i, r) in service.round_ids().into_iter().enumerate() {
        if r != i as u64 {
            return Err(CampaignError::Chain(format!(
                "round {r} is in the log but round {i} is not"
            )));
        }
        if pos.opened {
            return Err(CampaignError::Chain(format!(
                "round {r} opened while round {} had not ended",
                pos.round
            )));
        }
        let (bound, end) = service
            .with_round(r, |st| (st.model_digest(), st.end().cloned()))
            .await
            .map_err(|p| CampaignError::Service(p.to_string()))?;
        if bound != model_digest(&pos.model) {
            return Err(CampaignError::Chain(format!(
                "round {r} is bound to another model than the chain computes"
            )));
        }
        service
            .publish_model(r, &pos.model)
            .map_err(CampaignError::Chain)?;
        pos.round = r;
        match end {
            Some(end) => {
                let model = std::mem::take(&mut pos.model);
                pos.model = step(rules, r, model, &end, &mut pos.completed)?;
                pos.round = r + 1;
            }
            None => pos.opened = true,
        }
    }
    Ok(pos)
}

/// Runs the campaign from `pos` until it is complete: waits for the open round to end,
/// computes the next model, opens the next round. Returns where it ended: the first round
/// id it did not open and the final model (model_{that round}).
pub async fn run(
    service: Service,
    rules: Arc<dyn CampaignRules>,
    mut pos: Position,
) -> Result<Position, CampaignError> {
    loop {
        if !pos.opened {
            if pos.completed >= rules.rounds() || pos.round > rules.max_round() {
                tracing::info!(completed = pos.completed, "campaign complete");
                return Ok(pos);
            }
            service
                .publish_model(pos.round, &pos.model)
                .map_err(CampaignError::Chain)?;
            service
                .open_round(pos.round, model_digest(&pos.model))
                .await
                .map_err(|p| CampaignError::Service(p.to_string()))?;
            tracing::info!(round = pos.round, "round opened");
            pos.opened = true;
        }
        let end = service
            .wait_end(pos.round, Duration::from_secs(60))
            .await
            .map_err(|p| CampaignError::Service(p.to_string()))?;
        let Some(end) = end else { continue };
        let model = std::mem::take(&mut pos.model);
        pos.model = step(rules.as_ref(), pos.round, model, &end, &mut pos.completed)?;
        pos.round += 1;
        pos.opened = false;
    }
}

/// [`resume`] then [`run`] on a spawned task (inside a tokio runtime).
pub async fn start(
    service: Service,
    rules: Arc<dyn CampaignRules>,
    initial: Vec<f32>,
) -> Result<tokio::task::JoinHandle<Result<Position, CampaignError>>, CampaignError> {
    let pos = resume(&service, rules.as_ref(), initial).await?;
    Ok(tokio::spawn(run(service, rules, pos)))
}
