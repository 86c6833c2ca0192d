//! A federated campaign of real site agents in one process: every plant runs the site agent
//! (`amalgam_site::SiteAgent`: the ε ledger's charge, the DDG encoding with its noise, pairwise
//! masking, the next model recomputed and checked) with a [`PlantTrainer`] on its own rows,
//! against the in-memory aggregator of `amalgam_site::testing`. Only the transport differs from
//! `amalgam simulate`'s processes (no HTTPS, no event log), so the model and the ε it reaches
//! are those of the service; that makes it the driver of the ε-versus-F1 sweep, where each
//! point is a whole campaign per seed.
//!
//! Model selection follows [`crate::experiment`]: every `eval_every` rounds the global model is
//! scored by AUPRC on the plants' pooled validation rows (in a deployment those per-threshold
//! counts would themselves be summed securely), the best is kept, its threshold maximizes
//! validation F1, and the global test set is scored once.

use std::time::{Duration, Instant};

use amalgam_dp::ledger::{BudgetPolicy, RoundParams as DpRoundParams};
use amalgam_dp::params::{
    BitWidth, ClipNorm, Delta, Dimension, Epsilon, Gamma, OverflowMargin, RoundingBias, Sigma,
    SiteCount,
};
use amalgam_proto::SiteId;
use amalgam_proto::params::{
    AggregatorTrust, Colluders, Dropouts, InputBits, MinCohort, NeighbourGraph, ParamsRequest,
    RoundParams, SiteCount as ProtoSites, SumBits, SumMode, Threshold, VectorLen,
};
use amalgam_proto::sim::Consortium;
use amalgam_site::model::model_digest;
use amalgam_site::retry::RetryPolicy;
use amalgam_site::testing::Hub;
use amalgam_site::{AgentOptions, ConsortiumRules, RoundOutcome, SiteAgent};

use crate::builtin::Builtin;
use crate::data::Row;
use crate::metrics::{Report, auprc, best_threshold};
use crate::site_trainer::{PlantTrainer, SiteRecipe, Weighting};
use crate::split::Split;
use crate::train::Batch;

mod record;
pub use record::{GRID_OVER_CLIP, RecordCampaign, RecordSpent};

/// Longest campaign the driver runs (rounds).
pub const MAX_ROUNDS: u32 = 100_000;

/// What one campaign runs.
#[derive(Debug, Clone)]
pub struct SecureCampaign {
    /// The built-in model.
    pub builtin: Builtin,
    /// The local recipe.
    pub recipe: SiteRecipe,
    /// Optimizer steps per round at every plant.
    pub local_steps: u32,
    /// Rounds.
    pub rounds: u32,
    /// Server learning rate of the FedAvg step.
    pub server_lr: f64,
    /// L2 clip norm C of each plant's update.
    pub clip: f64,
    /// Central noise σ in update units (`None`: no site-level differential privacy).
    pub sigma: Option<f64>,
    /// Record-level DP-SGD at every plant, one record ledger per plant (`None`: none).
    /// Independent of `sigma`: a record-level campaign adds no site-level noise unless asked.
    pub record: Option<RecordCampaign>,
    /// δ of the site-level accounting.
    pub delta: f64,
    /// Bits per value of the encoding (and the masking sum).
    pub bits: u32,
    /// Colluding plants c the masking and the noise must tolerate (at least 1).
    pub colluders: u16,
    /// Shamir threshold t (default: the protocol's for the plant count and c).
    pub threshold: Option<u16>,
    /// Evaluate every this many rounds (and after the last).
    pub eval_every: u32,
    /// Seed of the initial weights and of the batch order without DP.
    pub seed: u64,
    /// Keep every plant's encoded (noised) update and every published model, so that a test
    /// can recompute each round's sum in the clear ([`CampaignResult::trace`]).
    pub keep_trace: bool,
}

/// Every round's encoded updates and published models (only with `keep_trace`).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// `encoded[r]`: (plant, encoded update) of round r, as each site masked it.
    pub encoded: Vec<Vec<(u16, Vec<u64>)>>,
    /// `models[r]`: the global model round r trained from (`models[rounds]`: the last one).
    pub models: Vec<Vec<f32>>,
    /// The rules every plant ran under.
    pub rules: Option<ConsortiumRules>,
}

/// Why a campaign could not run.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// A parameter is out of range.
    #[error("{0}")]
    Config(String),
    /// A plant's agent or trainer failed.
    #[error("plant {plant}, round {round}: {message}")]
    Plant {
        /// The plant.
        plant: usize,
        /// The round.
        round: u64,
        /// What failed.
        message: String,
    },
    /// Evaluation failed.
    #[error("evaluation: {0}")]
    Eval(String),
}

/// One round as the harness saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundStat {
    /// Round id.
    pub round: u64,
    /// Plants whose input is in the sum.
    pub survivors: u16,
    /// Validation AUPRC of the global model after the round (evaluated rounds only).
    pub val_auprc: Option<f64>,
    /// Wall time of the round.
    pub seconds: f64,
}

/// The protocol figures a campaign ran under (the report prints them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Protocol {
    /// Shamir threshold t.
    pub threshold: u16,
    /// Colluders c tolerated.
    pub colluders: u16,
    /// Minimum cohort m.
    pub min_cohort: u16,
    /// Honest contributors the noise is calibrated for, n_min = m − c.
    pub n_min: u16,
}

/// The outcome of a campaign.
#[derive(Debug, Clone)]
pub struct CampaignResult {
    /// Figures of the selected global model on the global test set.
    pub test: Report,
    /// The round after which the selected model was published.
    pub best_round: u64,
    /// Largest site-level ε any plant's ledger spent (`None`: no site-level DP).
    pub epsilon: Option<f64>,
    /// What the record-level setting spent (`None`: no record-level DP).
    pub record: Option<RecordSpent>,
    /// Per round.
    pub rounds: Vec<RoundStat>,
    /// The selected weights.
    pub weights: Vec<f32>,
    /// The protocol's figures.
    pub protocol: Protocol,
    /// With `keep_trace`: what each round encoded and published.
    pub trace: Trace,
    /// Set when a plant's local training failed (diverged) and the campaign ended early.
    pub stopped: Option<Stopped>,
}

/// Why a campaign ended before its last round.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stopped {
    /// The round whose training failed (not completed).
    pub round: u64,
    /// The first plant that failed.
    pub plant: usize,
    /// The trainer's message.
    pub message: String,
}

fn config(what: impl Into<String>) -> CampaignError {
    CampaignError::Config(what.into())
}

fn bad(name: &str, e: impl std::fmt::Display) -> CampaignError {
    config(format!("{name}: {e}"))
}

fn eval_err(e: impl std::fmt::Display) -> CampaignError {
    CampaignError::Eval(e.to_string())
}

/// The rules every plant's agent runs under, and the protocol figures (t, c, m, n_min).
fn rules(
    c: &SecureCampaign,
    consortium: &Consortium,
    plants: u16,
    initial: &[f32],
) -> Result<(ConsortiumRules, Protocol), CampaignError> {
    let dim = Dimension::new(initial.len() as u64).map_err(|e| bad("model length", e))?;
    let padded = u32::try_from(dim.padded()).map_err(|e| bad("model length", e))?;
    let t = c
        .threshold
        .unwrap_or_else(|| amalgam_proto::params::default_threshold(plants, c.colluders));
    let bits = u8::try_from(c.bits).map_err(|e| bad("bits", e))?;
    let p = |e: amalgam_proto::ParamError| bad("protocol", e);
    // The same construction as a manifest's: minimum cohort t, tolerated dropouts n − t.
    let params = RoundParams::new(ParamsRequest {
        sites: ProtoSites::new(plants).map_err(p)?,
        threshold: Threshold::new(t).map_err(p)?,
        min_cohort: MinCohort::new(t).map_err(p)?,
        input_bits: InputBits::new(bits).map_err(p)?,
        sum_bits: SumBits::new(bits).map_err(p)?,
        sum_mode: SumMode::Modular,
        vector_len: VectorLen::new(padded).map_err(p)?,
        graph: NeighbourGraph::Complete,
        colluders: Colluders::new(c.colluders).map_err(p)?,
        dropouts: Dropouts::new(plants.saturating_sub(t)),
        trust: AggregatorTrust::Malicious,
    })
    .map_err(p)?;
    let min_cohort = params.min_cohort().get();
    let colluders = params.c() as u16;
    let n_min = min_cohort.saturating_sub(colluders).max(1);
    let clip = ClipNorm::new(c.clip).map_err(|e| bad("clip", e))?;
    let (policy, local_sigma) = match c.sigma {
        Some(s) => (
            BudgetPolicy::site_level(
                // The sweep measures what a campaign spends; it does not stop at a cap.
                Epsilon::new(1e12).map_err(|e| bad("cap", e))?,
                Delta::new(c.delta).map_err(|e| bad("delta", e))?,
            )
            .map_err(|e| bad("policy", e))?,
            Sigma::new(s / f64::from(n_min).sqrt()).map_err(|e| bad("sigma", e))?,
        ),
        // No noise is drawn under policy none; σ only sizes γ.
        None => (
            BudgetPolicy::no_privacy(),
            Sigma::new(c.clip * 1e-3).map_err(|e| bad("sigma", e))?,
        ),
    };
    let bit_width = BitWidth::new(c.bits).map_err(|e| bad("bits", e))?;
    let sites = SiteCount::new(u32::from(plants)).map_err(|e| bad("plants", e))?;
    let gamma: Gamma = amalgam_dp::scaling::choose_gamma(
        bit_width,
        sites,
        clip,
        local_sigma,
        dim.padded(),
        OverflowMargin::from_probability(1e-6).map_err(|e| bad("margin", e))?,
    )
    .map_err(|e| bad("gamma", e))?;
    let dp = DpRoundParams {
        min_cohort: SiteCount::new(u32::from(min_cohort)).map_err(|e| bad("cohort", e))?,
        colluders: u32::from(colluders),
        n_cohort: sites,
        clip,
        gamma,
        bits: bit_width,
        local_sigma,
        dim,
        beta: RoundingBias::recommended(),
    };
    let rules = ConsortiumRules {
        consortium_digest: consortium.manifest().digest(),
        epoch: 1,
        manifest: consortium.manifest().clone(),
        params,
        dp,
        policy,
        phase_timeout_ms: 60_000,
        max_round: u64::from(c.rounds),
        // An abort ends the campaign (the driver stops at any outcome but completion).
        max_aborted_rounds: 1,
        fallback_allowed: false,
        campaign_digest: model_digest(initial),
        local_steps: c.local_steps,
        server_lr: c.server_lr,
        weights: amalgam_site::model::AggregationWeights::Uniform,
        model_len: initial.len(),
        initial_weights_digest: Some(model_digest(initial)),
        // Masking only: no fallback setup in the in-process campaign.
        verified: None,
    };
    let protocol = Protocol {
        threshold: t,
        colluders,
        min_cohort,
        n_min,
    };
    Ok((rules, protocol))
}

/// Pooled rows of `idx` as a batch with its labels.
fn pooled(rows: &[Row], idx: &[usize], builtin: &Builtin) -> (Batch, Vec<bool>) {
    let refs: Vec<&Row> = idx.iter().map(|&i| &rows[i]).collect();
    let labels: Vec<bool> = refs.iter().map(|r| r.failure).collect();
    let f = builtin.spec.features;
    (Batch::new(&f.matrix(&refs), &labels, f.dim()), labels)
}

/// Runs one campaign of `split`'s plants on `rows`.
pub fn run_secure_campaign(
    rows: &[Row],
    split: &Split,
    c: &SecureCampaign,
) -> Result<CampaignResult, CampaignError> {
    if c.rounds == 0 || c.rounds > MAX_ROUNDS {
        return Err(config(format!("rounds must be 1..={MAX_ROUNDS}")));
    }
    if c.eval_every == 0 {
        return Err(config("eval_every must be at least 1"));
    }
    let plants = u16::try_from(split.plants.len()).map_err(|_| config("too many plants"))?;
    tch::set_num_threads(1);
    let (mut model, initial) = c.builtin.init(c.seed).map_err(eval_err)?;
    // Fresh identities from the OS for every campaign: the simulation holds every key, but no
    // key is ever derived from a public seed.
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| config(format!("OS randomness: {e}")))?;
    let consortium = Consortium::generate(usize::from(plants), &seed)
        .map_err(|e| config(format!("consortium: {e}")))?;
    let (rules, protocol) = rules(c, &consortium, plants, &initial)?;
    let hub = Hub::new(rules.clone(), initial.clone());
    let state = tempfile::tempdir().map_err(|e| config(format!("state directory: {e}")))?;
    let options = AgentOptions {
        retry: RetryPolicy {
            base: Duration::from_millis(1),
            max: Duration::from_millis(20),
            attempts: 5,
        },
        poll_wait: Duration::from_millis(200),
    };
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, u16, Vec<u64>)>::new()));
    let mut trace = Trace::default();
    if c.keep_trace {
        trace.models.push(initial.clone());
        trace.rules = Some(rules.clone());
    }
    let total_steps = u64::from(c.rounds) * u64::from(c.local_steps);
    let calibrated = c
        .record
        .as_ref()
        .map(|r| record::calibrate(r, total_steps, initial.len()).map(|cal| (*r, cal)))
        .transpose()?;
    let mut parties = Vec::with_capacity(split.plants.len());
    for (i, plant) in split.plants.iter().enumerate() {
        let plant_err = |e: &dyn std::fmt::Display| CampaignError::Plant {
            plant: i,
            round: 0,
            message: e.to_string(),
        };
        let own: Vec<Row> = plant.train.iter().map(|&k| rows[k].clone()).collect();
        let trainer = PlantTrainer::new(
            &c.builtin,
            &own,
            c.recipe,
            Weighting::Uniform,
            c.seed ^ ((i as u64 + 1) << 32),
        )
        .map_err(|e| plant_err(&e))?;
        let key = consortium.identity(SiteId(i as u16)).clone();
        let (trainer, record_dp) = match &calibrated {
            None => (trainer, None),
            Some((r, cal)) => {
                let ledger_key = key.clone();
                let (t, dp) = record::enable(
                    r,
                    cal,
                    trainer,
                    move |path, policy| {
                        amalgam_dp::ledger::record::RecordLedger::open(path, ledger_key, policy)
                    },
                    &state.path().join("records"),
                    i,
                    c.seed,
                    c.rounds,
                    c.local_steps,
                )?;
                (t, Some(dp))
            }
        };
        let mut agent = SiteAgent::open(
            &state.path().join(format!("plant-{i}")),
            key,
            rules.clone(),
            &initial,
            options,
        )
        .map_err(|e| plant_err(&e))?;
        if let Some(dp) = record_dp {
            agent.enable_record_dp(dp).map_err(|e| plant_err(&e))?;
        }
        if c.keep_trace {
            let sink = seen.clone();
            agent.set_encoded_observer(Box::new(move |round, values| {
                if let Ok(mut v) = sink.lock() {
                    v.push((round, i as u16, values.to_vec()));
                }
            }));
        }
        parties.push((agent, trainer));
    }
    let val_idx: Vec<usize> = split
        .plants
        .iter()
        .flat_map(|p| p.validation.iter().copied())
        .collect();
    let (val, val_labels) = pooled(rows, &val_idx, &c.builtin);
    let mut best = (f64::NEG_INFINITY, initial.clone(), 0u64);
    let mut stats = Vec::with_capacity(c.rounds as usize);
    let mut stopped: Option<Stopped> = None;
    for round in 0..u64::from(c.rounds) {
        let start = Instant::now();
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = parties
                .iter_mut()
                .enumerate()
                .map(|(i, (agent, trainer))| {
                    let mut transport = hub.transport(i as u16);
                    scope.spawn(move || agent.run_round(&mut transport, trainer, round))
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut survivors = None;
        for (i, o) in outcomes.into_iter().enumerate() {
            let fail = |message: String| CampaignError::Plant {
                plant: i,
                round,
                message,
            };
            match o {
                Err(_) => return Err(fail("the agent's thread panicked".into())),
                // Noise accumulated in the global model can make local training diverge;
                // the campaign ends there and the best checkpoint so far is scored.
                Ok(Err(amalgam_site::AgentError::Train(e))) => {
                    stopped.get_or_insert(Stopped {
                        round,
                        plant: i,
                        message: e.to_string(),
                    });
                }
                Ok(Err(e)) => return Err(fail(e.to_string())),
                Ok(Ok(RoundOutcome::Completed { contributors, .. })) => {
                    survivors = Some(contributors.len() as u16)
                }
                Ok(Ok(RoundOutcome::Declined(
                    amalgam_site::statements::DeclineReason::BudgetExceeded,
                ))) => {
                    return Err(fail(
                        "the plant's ledger refused the charge: cumulative ε would pass the cap \
                         or what the noise sampler's share of δ allows (raise σ or run fewer rounds)"
                            .into(),
                    ));
                }
                Ok(Ok(RoundOutcome::Declined(
                    amalgam_site::statements::DeclineReason::RecordBudgetExceeded,
                ))) => {
                    return Err(fail(
                        "the plant's record ledger refused the local run: its epsilon cap \
                         would be exceeded"
                            .into(),
                    ));
                }
                Ok(Ok(other)) => return Err(fail(format!("round ended {other:?}"))),
            }
        }
        if stopped.is_some() {
            break;
        }
        let global = hub.model();
        if c.keep_trace {
            trace.models.push(global.clone());
        }
        let last = round + 1 == u64::from(c.rounds);
        let val_auprc = if (round + 1) % u64::from(c.eval_every) == 0 || last {
            model.set_from_flat(&global).map_err(eval_err)?;
            let a = auprc(&val_labels, &model.predict(&val.x).map_err(eval_err)?);
            if a > best.0 {
                best = (a, global.clone(), round);
            }
            Some(a)
        } else {
            None
        };
        stats.push(RoundStat {
            round,
            survivors: survivors.unwrap_or(0),
            val_auprc,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let epsilon = match c.sigma {
        None => None,
        Some(_) => {
            let mut worst = 0.0f64;
            for (agent, _) in &parties {
                let spent = agent.ledger().spent().map_err(eval_err)?.get();
                worst = worst.max(spent);
            }
            Some(worst)
        }
    };
    let record = match &calibrated {
        None => None,
        Some((_, cal)) => {
            let mut worst = 0.0f64;
            let mut charged = cal.z;
            for (agent, trainer) in &parties {
                if let Some(l) = agent.record_ledger() {
                    worst = worst.max(l.spent());
                }
                if let Some(m) = trainer.record_mechanism(c.local_steps) {
                    charged = m.noise_multiplier;
                }
            }
            Some(RecordSpent {
                epsilon_spent: worst,
                noise_multiplier: charged,
                calibrated: cal.z,
                sigma: cal.sigma,
            })
        }
    };
    if c.keep_trace {
        let mut all = seen.lock().map(|v| v.clone()).unwrap_or_default();
        all.sort();
        trace.encoded = (0..stats.len() as u64)
            .map(|r| {
                all.iter()
                    .filter(|(round, _, _)| *round == r)
                    .map(|(_, site, v)| (*site, v.clone()))
                    .collect()
            })
            .collect();
    }
    model.set_from_flat(&best.1).map_err(eval_err)?;
    let threshold = best_threshold(&val_labels, &model.predict(&val.x).map_err(eval_err)?);
    let (test, _) = pooled(rows, &split.test, &c.builtin);
    let scores = model.predict(&test.x).map_err(eval_err)?;
    let test_rows: Vec<&Row> = split.test.iter().map(|&i| &rows[i]).collect();
    Ok(CampaignResult {
        test: Report::new(&test_rows, &scores, threshold),
        best_round: best.2,
        epsilon,
        record,
        rounds: stats,
        weights: best.1,
        protocol,
        trace,
        stopped,
    })
}
