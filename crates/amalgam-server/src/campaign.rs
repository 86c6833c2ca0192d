//! The campaign runs itself: round 0 is bound to the campaign's initial weights; when round r
//! ends the aggregator computes model_{r+1} from round r's published sum (or keeps model_r when
//! r aborted) with the consortium's one implementation (`amalgam_consortium::global_model`, the
//! code every site runs) and opens round r+1 bound to its digest, until the campaign has its
//! completed rounds or reaches the manifest's last round id.
//!
//! With the homomorphic fallback on ([`ReRuns`], `amalgam serve` where the manifest allows it),
//! an aborted round r is not carried over at once: the campaign waits for the end of its
//! re-run 2^32 + r (which the aggregator opens once the committee's certificates are stored),
//! and model_{r+1} is computed from the re-run's sum (reduced mod 2^b, with the fallback round's
//! encoding), as every site that took part computes it; a re-run that aborted carries model_r
//! over. The re-run's end is in the fallback log, so a restart recomputes the same chain.
//! A re-run that has not opened after [`ReRuns::open_wait`] (the committee's certificates
//! are still missing) is given up ([`ReRuns::give_up`]): model_r carries over and round r+1
//! opens on it, so a committee that never certifies cannot stall the campaign. The give-up is
//! committed (the fallback log) before round r+1 opens, and the re-run never opens after it,
//! restarts included: a restarted campaign reads it back ([`ReRunEnd::GivenUp`]) and carries
//! model_r over without waiting again. A log where round r+1 follows an aborted round r whose
//! re-run never opened is that chain; one where the re-run opened and round r+1 opened before
//! it ended is not.
//!
//! Every decision is in the event log: each round's `RoundOpen` holds its model digest and
//! each `RoundEnd` the published result. After a restart [`resume`] recomputes the chain from
//! the initial weights and the logged results and refuses a log whose bound digests differ.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// How the fallback re-run of an aborted masking round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReRunEnd {
    /// Published: the fallback round id and its sum (reduced mod 2^b) and cohort.
    Published {
        /// The fallback round id (its encoding gives model_{r+1}).
        round: u64,
        /// The sum mod 2^b and the contributors, as a masking round publishes them.
        output: AggregateOutput,
    },
    /// Aborted: model_r carries over.
    Aborted,
    /// Given up before it opened ([`ReRuns::give_up`], kept across restarts): model_r
    /// carries over.
    GivenUp,
}

/// A future of [`ReRuns::wait_end`].
pub type ReRunFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<ReRunEnd>, String>> + Send + 'a>>;

/// A future of [`ReRuns::give_up`].
pub type GiveUpFuture<'a> = Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>>;

/// The fallback re-runs a campaign follows.
pub trait ReRuns: Send + Sync + 'static {
    /// How the re-run of aborted masking round `round` ended, waiting at most `wait`; `None`:
    /// not ended (or not opened, and not given up) yet. `Err`: the re-runs' storage failed;
    /// the campaign stops (the aggregator exits, and its restart replays both logs) instead
    /// of waiting on a log that refuses everything.
    fn wait_end(&self, round: u64, wait: Duration) -> ReRunFuture<'_>;

    /// Gives up the re-run of aborted masking round `round` unless it has opened: `true`,
    /// it has not opened and never will (atomically with the opener, so the two cannot
    /// both happen; durably, so a restart never opens it either), and model_r carries over;
    /// `false`, it has opened and its end decides model_{r+1}. `Err`: the give-up could not
    /// be recorded (storage failed); the campaign stops, as for [`Self::wait_end`].
    fn give_up(&self, round: u64) -> GiveUpFuture<'_>;

    /// How long the campaign waits for a re-run to open before it gives it up.
    fn open_wait(&self) -> Duration;
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
    /// Rounds finished so far (a published re-run counts).
    pub completed: u64,
    /// An aborted round whose re-run has not ended yet (`model` is model_r until it does).
    pub rerun_pending: Option<u64>,
}

/// Applies the end of round `round`'s re-run to `pos` (whose model is model_round).
fn apply_rerun(
    rules: &dyn CampaignRules,
    pos: &mut Position,
    round: u64,
    end: &ReRunEnd,
) -> Result<(), CampaignError> {
    if let ReRunEnd::Published { round: fr, output } = end {
        pos.model = rules
            .next_model(*fr, &pos.model, output)
            .map_err(|reason| CampaignError::Step { round, reason })?;
        pos.completed += 1;
    }
    pos.rerun_pending = None;
    Ok(())
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
    resume_with(service, rules, initial, None).await
}

/// [`resume`], following the fallback re-runs of aborted rounds through `reruns`.
pub async fn resume_with(
    service: &Service,
    rules: &dyn CampaignRules,
    initial: Vec<f32>,
    reruns: Option<&dyn ReRuns>,
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
        rerun_pending: None,
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
        if let Some(p) = pos.rerun_pending {
            // Round r opened on model_p: the campaign gave the re-run up before it opened.
            // Giving it up now makes sure it never opens; one that opened forks the chain.
            let gave_up = match reruns {
                Some(rr) => rr.give_up(p).await.map_err(CampaignError::Service)?,
                None => false,
            };
            if !gave_up {
                return Err(CampaignError::Chain(format!(
                    "round {r} opened while the re-run of round {p} had not ended"
                )));
            }
            pos.rerun_pending = None;
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
                if let (RoundEnd::Aborted(_), Some(rr)) = (&end, reruns) {
                    pos.rerun_pending = Some(r);
                    if let Some(e) = rr
                        .wait_end(r, Duration::ZERO)
                        .await
                        .map_err(CampaignError::Service)?
                    {
                        apply_rerun(rules, &mut pos, r, &e)?;
                    }
                }
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
    pos: Position,
) -> Result<Position, CampaignError> {
    run_with(service, rules, pos, None).await
}

/// [`run`], waiting after each aborted round for the end of its re-run through `reruns`.
pub async fn run_with(
    service: Service,
    rules: Arc<dyn CampaignRules>,
    mut pos: Position,
    reruns: Option<Arc<dyn ReRuns>>,
) -> Result<Position, CampaignError> {
    // Since when the pending re-run has been waited for (this process's wait only), and
    // whether it is known to have opened (then only its end is waited for).
    let mut waiting_since: Option<Instant> = None;
    let mut known_open = false;
    loop {
        if let (Some(r), Some(rr)) = (pos.rerun_pending, &reruns) {
            let since = *waiting_since.get_or_insert_with(Instant::now);
            let wait = if known_open {
                Duration::from_secs(60)
            } else {
                let left = rr.open_wait().saturating_sub(since.elapsed());
                left.clamp(Duration::from_millis(50), Duration::from_secs(60))
            };
            match rr.wait_end(r, wait).await.map_err(CampaignError::Service)? {
                Some(end) => {
                    apply_rerun(rules.as_ref(), &mut pos, r, &end)?;
                    tracing::info!(round = r, ?end, "re-run ended");
                }
                None if known_open || since.elapsed() < rr.open_wait() => continue,
                None if rr.give_up(r).await.map_err(CampaignError::Service)? => {
                    pos.rerun_pending = None;
                    tracing::warn!(
                        round = r,
                        waited_s = since.elapsed().as_secs(),
                        "the re-run did not open (committee certificates missing); \
                         the model carries over"
                    );
                }
                None => {
                    known_open = true;
                    continue;
                }
            }
            waiting_since = None;
            known_open = false;
        }
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
        if matches!(end, RoundEnd::Aborted(_)) && reruns.is_some() {
            pos.rerun_pending = Some(pos.round);
        }
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
    start_with(service, rules, initial, None).await
}

/// [`start`], following the fallback re-runs of aborted rounds through `reruns`.
pub async fn start_with(
    service: Service,
    rules: Arc<dyn CampaignRules>,
    initial: Vec<f32>,
    reruns: Option<Arc<dyn ReRuns>>,
) -> Result<tokio::task::JoinHandle<Result<Position, CampaignError>>, CampaignError> {
    let pos = resume_with(&service, rules.as_ref(), initial, reruns.as_deref()).await?;
    Ok(tokio::spawn(run_with(service, rules, pos, reruns)))
}
