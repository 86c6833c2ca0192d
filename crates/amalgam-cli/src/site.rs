//! `amalgam site run`: the site agent against an aggregator over mutual TLS
//! (`protocol-spec/site-agent.md`).
//!
//! Exit status: 0 ok, 1 failed, 3 timeout, 4 authentication, 5 unreachable, 6 budget exceeded
//! (over the ε cap or the abort cap: the site declined).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amalgam_consortium::{EpochHighWater, IdentityKey, SignedManifest};
use amalgam_net::fallback_api::fallback_round_of;
use amalgam_site::fallback::FallbackTransport;
use amalgam_site::http::HttpTransport;
use amalgam_site::statements::DeclineReason;
use amalgam_site::{
    AgentError, AgentOptions, ConsortiumRules, RoundOutcome, SiteAgent, SyntheticTrainer, Trainer,
    TransportError,
};

use crate::Failure;

/// `amalgam site …`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start and never moved around: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Join the consortium's rounds: train, charge the ledger, mask, compute the next model.
    Run(RunArgs),
    /// Check what would stop this site from taking part: rows of problem and how to fix it.
    Doctor(crate::doctor::Args),
}

/// `amalgam site run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The co-signed consortium manifest.
    #[arg(long)]
    manifest: PathBuf,
    /// This site's identity key file.
    #[arg(long)]
    key: PathBuf,
    /// The state directory (created 0700).
    #[arg(long)]
    state: PathBuf,
    /// The aggregator, `https://host:port`.
    #[arg(long)]
    aggregator: String,
    /// Rounds to take part in before exiting.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// The campaign's initial weights (little-endian f32 values in parameter order); only
    /// read when the state directory is new, and checked against the campaign's digest.
    #[arg(long)]
    initial_model: Option<PathBuf>,
    /// Train with the deterministic synthetic trainer seeded with this hex value (end-to-end
    /// tests and dry runs). Exactly one of this and `--data`.
    #[arg(long)]
    synthetic_trainer: Option<String>,
    /// Train the manifest's built-in model on this plant's CSV (AI4I schema). Exactly one of
    /// this and `--synthetic-trainer`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The built-in model to train (must be the one the manifest pins; default: that one).
    #[arg(long)]
    model_builtin: Option<String>,
    /// Seed of the batch order when the campaign has no differential privacy (default: drawn
    /// from the OS; under DP the order is always drawn from the OS).
    #[arg(long)]
    train_seed: Option<u64>,
    /// Longest wait for the aggregator to open a round, seconds.
    #[arg(long, default_value_t = 600)]
    wait_for_round: u64,
    /// Record-level DP-SGD (`--record-dp --record-epsilon E --record-delta D`).
    #[command(flatten)]
    record: crate::record_dp::RecordArgs,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

fn agent_failure(e: AgentError) -> Failure {
    fail(e.exit_code() as u8, e.to_string())
}

fn read_model(path: &Path, len: usize) -> Result<Vec<f32>, Failure> {
    let max = (len as u64).saturating_mul(4);
    let meta = std::fs::metadata(path).map_err(|e| Failure::failed(format!("{path:?}: {e}")))?;
    if meta.len() != max {
        return Err(Failure::failed(format!(
            "{path:?} holds {} bytes; the campaign's {len} f32 values need {max}",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Failure::failed(format!("{path:?}: {e}")))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Runs the subcommand; `config` is the `--config` file, read only by `doctor`.
pub fn run(args: &Args, config: Option<&Path>) -> Result<(), Failure> {
    match &args.command {
        Command::Run(a) => run_rounds(a),
        Command::Doctor(a) => crate::doctor::run(a, &crate::config::Config::load(config, true)?),
    }
}

fn run_rounds(a: &RunArgs) -> Result<(), Failure> {
    if a.data.is_some() == a.synthetic_trainer.is_some() {
        return Err(Failure::usage(
            "pass exactly one trainer: --data PLANT.csv (the plant's rows) or \
             --synthetic-trainer HEX (dry run)",
        ));
    }
    if a.model_builtin.is_some() && a.data.is_none() {
        return Err(Failure::usage("--model-builtin needs --data"));
    }
    if a.record.record_dp && a.data.is_none() {
        return Err(Failure::usage(
            "--record-dp trains the plant's rows: it needs --data",
        ));
    }
    amalgam_net::install_crypto_provider();
    let identity = IdentityKey::load(&a.key)?;
    let hw_path = a.state.join("epoch.highwater");
    if !a.state.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&a.state)
            .map_err(|e| Failure::failed(format!("{:?}: {e}", a.state)))?;
    }
    let high_water = EpochHighWater::load(&hw_path)?;
    let me = identity.verifying_key();
    let manifest = SignedManifest::read(&a.manifest)?.verify_for(&me, high_water.as_ref())?;
    EpochHighWater::accept(&hw_path, &manifest, &me)?;
    let rules = ConsortiumRules::from_manifest(&manifest)?;
    // The site's own manifest decides whether it follows re-runs, never the aggregator.
    let fallback = rules.fallback_allowed;
    let initial = match &a.initial_model {
        Some(p) => read_model(p, rules.model_len)?,
        None => vec![0.0; rules.model_len],
    };
    let record = a.record.record_dp.then(|| crate::plant::RecordRequest {
        args: &a.record,
        state: &a.state,
        steps: u64::from(a.rounds) * u64::from(rules.local_steps),
    });
    let (trainer, record) = match (&a.data, &a.synthetic_trainer) {
        (Some(data), _) => {
            let seed = match a.train_seed {
                Some(s) => s,
                None => {
                    let mut b = [0u8; 8];
                    getrandom::fill(&mut b)
                        .map_err(|_| Failure::failed("no OS randomness for the batch order"))?;
                    u64::from_le_bytes(b)
                }
            };
            crate::plant::plant_trainer(&manifest, data, a.model_builtin.as_deref(), seed, record)?
        }
        (None, seed) => (
            synthetic_trainer(seed.as_deref().unwrap_or_default())?,
            None,
        ),
    };
    let mut agent = SiteAgent::open(
        &a.state.join("agent"),
        identity.to_ledger_key(),
        rules,
        &initial,
        AgentOptions::default(),
    )
    .map_err(agent_failure)?;
    if let Some((charged, q, z)) = record {
        enable_record_dp(&mut agent, &identity, charged, q, z)?;
    }
    // Crash tests only (feature `fault-points`): the harness's view of each encoded update.
    if let Some(observer) = amalgam_site::fault::encoded_observer_from_env() {
        agent.set_encoded_observer(observer);
    }
    let mut transport = HttpTransport::new(
        &a.aggregator,
        &identity,
        &manifest,
        amalgam_net::client::RetryPolicy::default(),
    )
    .map_err(|e| agent_failure(e.into()))?;
    // A round interrupted by a crash is resumed first (its state is on disk; the high-water
    // mark is already at it, so it is not found among the rounds above it).
    let mut resume = agent.unfinished_round().map_err(agent_failure)?;
    let mut trainer = Timed {
        inner: trainer,
        spent: Duration::ZERO,
    };
    // A fallback re-run interrupted by a crash is finished before anything else.
    if let Some(fr) = agent.unfinished_fallback_round().map_err(agent_failure)? {
        let outcome = agent
            .run_fallback_round(&mut transport, &mut trainer, fr)
            .map_err(agent_failure)?;
        println!("round {fr}: {outcome:?}");
    }
    for _ in 0..a.rounds {
        let round = match resume.take() {
            Some(r) => r,
            None => next_round(&mut transport, &agent, a.wait_for_round)?,
        };
        trainer.spent = Duration::ZERO;
        let started = Instant::now();
        let outcome = agent
            .run_round(&mut transport, &mut trainer, round)
            .map_err(agent_failure)?;
        println!("round {round}: {outcome:?}");
        let outcome = match outcome {
            RoundOutcome::Aborted if fallback => follow_rerun(
                &mut agent,
                &mut transport,
                &mut trainer,
                round,
                a.wait_for_round,
            )?
            .unwrap_or(RoundOutcome::Aborted),
            o => o,
        };
        println!(
            "{}",
            stats_line(round, &agent, trainer.spent, started.elapsed())
        );
        match outcome {
            RoundOutcome::Declined(
                DeclineReason::BudgetExceeded | DeclineReason::AbortCapReached,
            ) => {
                return Err(fail(6, format!("round {round}: declined, budget exceeded")));
            }
            RoundOutcome::Declined(DeclineReason::RecordBudgetExceeded) => {
                return Err(fail(
                    6,
                    format!(
                        "round {round}: declined, the record-level epsilon cap would be exceeded"
                    ),
                ));
            }
            RoundOutcome::Declined(DeclineReason::ModelMismatch) | RoundOutcome::ModelMismatch => {
                return Err(Failure::failed(format!(
                    "round {round}: the aggregator's model is not the one this site computed"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A trainer that adds up the time spent in the wrapped one (the `stats` line's `train_s`).
struct Timed {
    inner: Box<dyn Trainer>,
    spent: Duration,
}

impl Trainer for Timed {
    fn train(
        &mut self,
        global: amalgam_site::GlobalModel<'_>,
        round: &amalgam_site::RoundInfo,
        permits: &amalgam_site::Permits,
    ) -> Result<amalgam_site::TrainOutput, amalgam_site::TrainError> {
        let t = Instant::now();
        let out = self.inner.train(global, round, permits);
        self.spent += t.elapsed();
        out
    }
}

/// `stats round=R train_s=T encode_s=E mask_s=M persist_s=P total_s=S epsilon=E entries=N
/// head=HEX`: after each round, the time spent training, in DP encoding and decoding, in the
/// masking protocol's computation, sealing and writing state, and in the whole round (the
/// rest is HTTP and waiting), and the ledger's cumulative ε (`inf` without privacy), entry
/// count and head hash (the anchor an auditor checks). All of it is the site's own public or
/// local information; `amalgam simulate` reads it for its report.
fn stats_line(round: u64, agent: &SiteAgent, train: Duration, total: Duration) -> String {
    let ledger = agent.ledger();
    let epsilon = match ledger.spent() {
        Ok(e) if e.get().is_finite() => format!("{}", e.get()),
        Ok(_) => "inf".to_owned(),
        Err(_) => "unknown".to_owned(),
    };
    let anchor = ledger.anchor();
    let t = agent.round_timing();
    format!(
        "stats round={round} train_s={:.6} encode_s={:.6} mask_s={:.6} persist_s={:.6} total_s={:.6} epsilon={epsilon} entries={} head={}",
        train.as_secs_f64(),
        t.encoding.as_secs_f64(),
        t.masking.as_secs_f64(),
        t.persistence.as_secs_f64(),
        total.as_secs_f64(),
        anchor.entries,
        hex::encode(anchor.head)
    )
}

/// Follows the fallback re-run of aborted masking round `round` once the aggregator opens
/// it (site-agent.md §7), waiting until a later masking round opens or at most twice
/// `wait_s`; `None` when none opened.
fn follow_rerun(
    agent: &mut SiteAgent,
    t: &mut HttpTransport,
    trainer: &mut dyn Trainer,
    round: u64,
    wait_s: u64,
) -> Result<Option<RoundOutcome>, Failure> {
    let Some(fr) = fallback_round_of(round) else {
        return Ok(None);
    };
    let start = Instant::now();
    // Twice the aggregator's default open wait: the aggregator gives a re-run up after
    // `--rerun-open-wait` (600 s by default) from its own start of waiting, so a site that
    // timed out at the same moment could leave just before a late re-run opened.
    let patience = Duration::from_secs(wait_s.saturating_mul(2));
    loop {
        // The status first: a later masking round seen before an `unknown` answer proves the
        // re-run was given up (the aggregator never opens one after a later round,
        // service.md §9), so waiting longer gains nothing.
        let later = t.status().ok().and_then(|st| {
            st.rounds
                .iter()
                .map(|r| r.round)
                .find(|&id| id > round && fallback_round_of(id).is_some())
        });
        match t.fallback_mine(fr) {
            Ok(_) => break,
            Err(TransportError::Refused { code, .. }) if code == "round.unknown" => {}
            Err(TransportError::Retry { .. }) => {}
            Err(e) => return Err(agent_failure(e.into())),
        }
        if let Some(later) = later {
            println!("round {fr}: not opened (round {later} opened)");
            return Ok(None);
        }
        if start.elapsed() > patience {
            println!("round {fr}: not opened");
            return Ok(None);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let outcome = agent
        .run_fallback_round(t, trainer, fr)
        .map_err(agent_failure)?;
    println!("round {fr}: {outcome:?}");
    Ok(Some(outcome))
}

/// Opens the dataset's record ledger and charges every local run to it.
fn enable_record_dp(
    agent: &mut SiteAgent,
    identity: &IdentityKey,
    charged: crate::record_dp::Charged,
    q: f64,
    z: f64,
) -> Result<(), Failure> {
    use amalgam_dp::ledger::record::RecordLedger;
    let ledger = RecordLedger::open(&charged.path, identity.to_ledger_key(), charged.policy)
        .map_err(|e| Failure::failed(format!("{}: {e}", charged.path.display())))?;
    let p = ledger.policy();
    println!(
        "record-level DP: dataset {} (this file: N = {} records, sha256 {}; at most {} \
         records), cap epsilon = {} at delta = {:e}, spent {}; q = {q}, C_rec = {}, sigma = {}, z = {z} (calibrated {}), {:?} sampler; \
         ledger {}",
        hex::encode(p.dataset),
        charged.data.records,
        hex::encode(charged.data.file),
        p.max_records,
        p.epsilon_cap.get(),
        p.delta.get(),
        ledger.spent(),
        charged.clip,
        charged.sigma,
        charged.calibrated,
        charged.mechanism.sampler,
        charged.path.display()
    );
    agent
        .enable_record_dp(amalgam_site::record::RecordDp {
            ledger,
            q,
            noise_multiplier: z,
            mechanism: charged.mechanism,
            data: charged.data,
        })
        .map_err(agent_failure)
}

/// The deterministic synthetic trainer seeded with up to 64 hex digits.
fn synthetic_trainer(seed: &str) -> Result<Box<dyn Trainer>, Failure> {
    let mut seed_bytes = [0u8; 32];
    hex::decode_to_slice(format!("{seed:0>64}"), &mut seed_bytes)
        .map_err(|_| Failure::usage("--synthetic-trainer takes up to 64 hex digits"))?;
    Ok(Box::new(SyntheticTrainer {
        seed: seed_bytes,
        norm: 0.5,
    }))
}

/// The lowest round the aggregator has open above this site's high-water mark. A skipped
/// id does not move the model: the agent recomputes it from published results and declines
/// a round bound to any other (site-agent.md §5). The next round usually opens right after
/// the last one's result, so the status is polled after 100 ms first, then ever more slowly
/// up to every 2 s.
fn next_round(t: &mut HttpTransport, agent: &SiteAgent, wait_s: u64) -> Result<u64, Failure> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let last = agent.last_round().map_err(agent_failure)?;
        let status = t.status().map_err(|e| agent_failure(e.into()))?;
        if let Some(r) = status
            .rounds
            .iter()
            .filter(|r| last.is_none_or(|l| r.round > l))
            .filter(|r| r.phase != "finished" && r.phase != "aborted")
            .map(|r| r.round)
            .min()
        {
            return Ok(r);
        }
        if start.elapsed() > Duration::from_secs(wait_s) {
            return Err(fail(3, "no round opened in time"));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
