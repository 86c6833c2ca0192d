//! `consortium init`: the declarative draft. Every number all sites must agree on is written
//! here, resolved (σ from a target ε, γ from the bit width), so that signing fixes bit-identical
//! values for everyone.

use std::path::PathBuf;

use amalgam_consortium::draft;
use amalgam_consortium::model::*;
use amalgam_consortium::{SignedManifest, fingerprint};
use amalgam_dp::params::{
    BitWidth, ClipNorm, Delta, Dimension, Epsilon, OverflowMargin, RoundingBias, Sigma, SiteCount,
};

use super::read_public_key;
use crate::Failure;

/// Options of `consortium init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where to write the draft.
    #[arg(long, default_value = "consortium.toml")]
    out: PathBuf,
    /// Write the next epoch's draft from this signed manifest instead (policy flags ignored).
    #[arg(long)]
    from: Option<PathBuf>,
    /// Replace an existing draft file.
    #[arg(long)]
    force: bool,
    /// Consortium identifier.
    #[arg(long, default_value = "amalgam-consortium")]
    consortium: String,
    /// The aggregator's pinned identity: 64 hex digits, identity.pub, or its key directory.
    #[arg(long)]
    aggregator_key: Option<String>,
    /// The aggregator's member name.
    #[arg(long, default_value = "aggregator")]
    aggregator_name: String,
    /// The aggregator's organisation.
    #[arg(long)]
    aggregator_org: Option<String>,
    /// Shamir threshold t (for the final number of sites).
    #[arg(long)]
    threshold: Option<u16>,
    /// Colluding sites tolerated c (count unverified identities here).
    #[arg(long, default_value_t = 1)]
    colluders: u16,
    /// Dropouts tolerated f.
    #[arg(long, default_value_t = 0)]
    dropouts: u16,
    /// Minimum cohort m (default t).
    #[arg(long)]
    min_cohort: Option<u16>,
    /// Neighbour graph: complete or harary:K.
    #[arg(long, default_value = "complete")]
    graph: String,
    /// Aggregator trust model: malicious or curious.
    #[arg(long, default_value = "malicious")]
    trust: String,
    /// L2 clip norm C.
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Central noise standard deviation σ in update units (else calibrated from --epsilon).
    #[arg(long)]
    sigma: Option<f64>,
    /// Target ε over the campaign's rounds, used to calibrate σ when --sigma is not given.
    #[arg(long, default_value_t = 10.0)]
    epsilon: f64,
    /// Cumulative ε cap of every site's ledger (default the target ε).
    #[arg(long)]
    epsilon_cap: Option<f64>,
    /// δ.
    #[arg(long, default_value_t = 1e-6)]
    delta: f64,
    /// No differential privacy (ledgers record ε = ∞).
    #[arg(long)]
    no_privacy: bool,
    /// Bit width b of the wrapped encoding.
    #[arg(long, default_value_t = 20)]
    bits: u32,
    /// Conditional rounding bias β.
    #[arg(long, default_value_t = 0.0)]
    beta: f64,
    /// Most sites the consortium will have (γ is chosen so their sum fits in b bits).
    #[arg(long, default_value_t = 16)]
    max_sites: u32,
    /// Allow the homomorphic fallback (needs --committee).
    #[arg(long)]
    fallback: bool,
    /// Decryptor committee numbers T_C,Q,C_D.
    #[arg(long)]
    committee: Option<String>,
    /// Rounds per decryptor key period (1..=1048576): each member's box key is valid for one
    /// period of this many rounds, then destroyed.
    #[arg(long, default_value_t = DEFAULT_KEY_PERIOD_ROUNDS)]
    key_period_rounds: u32,
    /// Campaign identifier.
    #[arg(long, default_value = "campaign-1")]
    campaign: String,
    /// Model: builtin:NAME or torchscript:SHA256HEX.
    #[arg(long, required_unless_present = "from")]
    model: Option<String>,
    /// SHA-256 (hex) of the parameter list (name, shape, dtype, order).
    #[arg(long, required_unless_present = "from")]
    param_list_digest: Option<String>,
    /// Number of trainable values d.
    #[arg(long, required_unless_present = "from")]
    params: Option<u64>,
    /// SHA-256 (hex) of the initial weights.
    #[arg(long, required_unless_present = "from")]
    initial_weights_digest: Option<String>,
    /// Local epochs per round.
    #[arg(long, default_value_t = 1)]
    local_epochs: u32,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch_size: u32,
    /// Optimiser: sgd or adam.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Local learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// FedProx μ (0 = FedAvg).
    #[arg(long, default_value_t = 0.0)]
    mu: f64,
    /// Server learning rate.
    #[arg(long, default_value_t = 1.0)]
    server_lr: f64,
    /// Server momentum. Not implemented by the model step: serve and site run refuse a
    /// manifest with any value other than 0.
    #[arg(long, default_value_t = 0.0)]
    server_momentum: f64,
    /// Rounds in the campaign.
    #[arg(long, default_value_t = 100)]
    rounds: u32,
    /// Aggregation weights: uniform; declared (a public weight per site, set when each is
    /// approved with `--declared-weight`); or noised (DP-FedAvg: each site's private example
    /// count n enters as w = min(n / n_cap, 1) inside its clipped, noised vector).
    #[arg(long, default_value = "uniform")]
    weight_mode: String,
    /// n_cap of `--weight-mode noised`: the example count at which a site weighs 1
    /// (default 1000).
    #[arg(long)]
    n_cap: Option<u32>,
    /// κ of `--weight-mode noised`, 0 < κ ≤ C (default C / 2).
    #[arg(long)]
    kappa: Option<f64>,
    /// The divisor's floor under `--weight-mode noised`, in [m/2, m] (default m/2, m the
    /// minimum cohort).
    #[arg(long)]
    weight_floor: Option<f64>,
    /// Shortest phase deadline, seconds.
    #[arg(long, default_value_t = 10)]
    min_phase_secs: u32,
    /// Longest phase deadline, seconds.
    #[arg(long, default_value_t = 3600)]
    max_phase_secs: u32,
    /// Rounds a campaign may abort.
    #[arg(long, default_value_t = 5)]
    max_aborted_rounds: u32,
}

fn usage<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Failure {
    move |e| Failure::usage(format!("{what}: {e}"))
}

fn digest(what: &'static str, text: &str) -> Result<[u8; 32], Failure> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut b)
        .map_err(|_| Failure::usage(format!("{what} must be 64 hex digits (SHA-256)")))?;
    Ok(b)
}

/// Runs `consortium init`.
pub fn run(a: &InitArgs) -> Result<(), Failure> {
    if a.out.exists() && !a.force {
        return Err(Failure::failed(format!(
            "{} exists; pass --force to replace the draft",
            a.out.display()
        )));
    }
    let body = match &a.from {
        Some(path) => {
            let current = SignedManifest::read(path)?.verify()?;
            draft::next_epoch(&current)
        }
        None => fresh(a)?,
    };
    draft::write_draft(&a.out, &body)?;
    println!("draft {} (epoch {}) written", a.out.display(), body.epoch);
    for m in &body.members {
        println!("  {} ({}) {}", m.name, m.organisation, fingerprint(&m.key));
    }
    Ok(())
}

fn fresh(a: &InitArgs) -> Result<ManifestBody, Failure> {
    let need = |v: &Option<String>, flag: &str| {
        v.clone()
            .ok_or_else(|| Failure::usage(format!("{flag} is required (or use --from)")))
    };
    let aggregator_key = read_public_key(&need(&a.aggregator_key, "--aggregator-key")?)?;
    let aggregator_org = need(&a.aggregator_org, "--aggregator-org")?;
    let threshold = a
        .threshold
        .ok_or_else(|| Failure::usage("--threshold is required (or use --from)"))?;
    let min_cohort = a.min_cohort.unwrap_or(threshold);
    let graph = match a.graph.as_str() {
        "complete" => Graph::Complete,
        other => match other.strip_prefix("harary:").map(str::parse) {
            Some(Ok(k)) => Graph::Harary { k },
            _ => return Err(Failure::usage("--graph must be complete or harary:K")),
        },
    };
    let trust = match a.trust.as_str() {
        "malicious" => Trust::Malicious,
        "curious" => Trust::Curious,
        _ => return Err(Failure::usage("--trust must be malicious or curious")),
    };
    let clip = ClipNorm::new(a.clip).map_err(usage("--clip"))?;
    let delta = Delta::new(a.delta).map_err(usage("--delta"))?;
    let target = Epsilon::new(a.epsilon).map_err(usage("--epsilon"))?;
    let (sigma, target_epsilon) = match a.sigma {
        Some(s) => (Sigma::new(s).map_err(usage("--sigma"))?, None),
        None => {
            // Gaussian calibration of the noise multiplier over the campaign; the ledger's
            // accounting (with the DDG terms) remains the binding number and enforces the cap.
            let z = amalgam_dp::accountant::calibrate_noise_multiplier(target, delta, a.rounds)
                .map_err(usage("calibrating sigma from --epsilon"))?;
            (
                Sigma::new(z.get() * clip.get()).map_err(usage("sigma"))?,
                Some(target),
            )
        }
    };
    let budget = if a.no_privacy {
        DpBudget::None
    } else {
        DpBudget::Capped {
            epsilon_cap: Epsilon::new(a.epsilon_cap.unwrap_or(a.epsilon))
                .map_err(usage("--epsilon-cap"))?,
            delta,
        }
    };
    let bits = BitWidth::new(a.bits).map_err(usage("--bits"))?;
    let beta = RoundingBias::new(a.beta).map_err(usage("--beta"))?;
    let dim = Dimension::new(
        a.params
            .ok_or_else(|| Failure::usage("--params is required"))?,
    )
    .map_err(usage("--params"))?;
    let n_min = u32::from(min_cohort)
        .saturating_sub(u32::from(a.colluders))
        .max(1);
    let local = Sigma::new(sigma.get() / f64::from(n_min).sqrt()).map_err(usage("sigma"))?;
    let gamma = amalgam_dp::scaling::choose_gamma(
        bits,
        SiteCount::new(a.max_sites).map_err(usage("--max-sites"))?,
        clip,
        local,
        dim.padded(),
        OverflowMargin::from_probability(1e-6).map_err(usage("overflow margin"))?,
    )
    .map_err(usage("choosing gamma"))?;
    let committee = match &a.committee {
        None => None,
        Some(text) => {
            let v: Vec<u16> = text
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<Result<_, _>>()
                .map_err(usage("--committee T_C,Q,C_D"))?;
            match v[..] {
                [threshold, quorum, corrupt] => Some(CommitteePolicy {
                    threshold,
                    quorum,
                    corrupt,
                    key_period_rounds: a.key_period_rounds,
                }),
                _ => return Err(Failure::usage("--committee takes T_C,Q,C_D")),
            }
        }
    };
    let model = match need(&a.model, "--model")?.split_once(':') {
        Some(("builtin", name)) => ModelRef::Builtin { name: name.into() },
        Some(("torchscript", hex)) => ModelRef::Torchscript {
            digest: digest("--model torchscript:", hex)?,
        },
        _ => {
            return Err(Failure::usage(
                "--model must be builtin:NAME or torchscript:SHA256",
            ));
        }
    };
    let optimizer = match a.optimizer.as_str() {
        "sgd" => Optimizer::Sgd,
        "adam" => Optimizer::Adam,
        _ => return Err(Failure::usage("--optimizer must be sgd or adam")),
    };
    let weight_mode = match a.weight_mode.as_str() {
        "uniform" => WeightMode::Uniform,
        "declared" => WeightMode::Declared,
        "noised" => WeightMode::Noised,
        _ => {
            return Err(Failure::usage(
                "--weight-mode must be uniform, declared or noised",
            ));
        }
    };
    if weight_mode != WeightMode::Noised
        && (a.n_cap.is_some() || a.kappa.is_some() || a.weight_floor.is_some())
    {
        return Err(Failure::usage(
            "--n-cap, --kappa and --weight-floor need --weight-mode noised",
        ));
    }
    Ok(ManifestBody {
        consortium: a.consortium.clone(),
        epoch: 1,
        prev_digest: None,
        max_aborted_rounds: a.max_aborted_rounds,
        protocol: ProtocolPolicy {
            threshold,
            colluders: a.colluders,
            dropouts: a.dropouts,
            min_cohort,
            graph,
            trust,
        },
        committee,
        dp: DpPolicy {
            unit: PrivacyUnit::SiteUpdatePerRound,
            budget,
            clip,
            sigma,
            target_epsilon,
            bits,
            gamma,
            beta,
        },
        fallback: FallbackPolicy {
            allowed: a.fallback,
        },
        deadlines: DeadlineBounds {
            min_secs: a.min_phase_secs,
            max_secs: a.max_phase_secs,
        },
        campaign: Campaign {
            id: a.campaign.clone(),
            model,
            parameter_list_digest: digest(
                "--param-list-digest",
                &need(&a.param_list_digest, "--param-list-digest")?,
            )?,
            parameter_count: dim,
            initial_weights_digest: digest(
                "--initial-weights-digest",
                &need(&a.initial_weights_digest, "--initial-weights-digest")?,
            )?,
            training: TrainingConfig {
                local_epochs: a.local_epochs,
                batch_size: a.batch_size,
                optimizer,
                learning_rate: a.lr,
                mu: a.mu,
                server_lr: a.server_lr,
                server_momentum: a.server_momentum,
                rounds: a.rounds,
            },
            weight_mode,
            declared_weights: Default::default(),
            noised_weights: (weight_mode == WeightMode::Noised).then(|| NoisedWeightPolicy {
                n_cap: a.n_cap.unwrap_or(1000),
                kappa: a.kappa.unwrap_or(clip.get() / 2.0),
                floor: a.weight_floor.unwrap_or(f64::from(min_cohort) / 2.0),
            }),
        },
        members: vec![Member {
            name: a.aggregator_name.clone(),
            organisation: aggregator_org,
            roles: vec![Role::Aggregator],
            key: aggregator_key,
        }],
        rotations: Vec::new(),
    })
}
