//! The set-up of `amalgam simulate`, all inside the work directory: the plant files (training
//! rows only; the harness keeps each plant's validation and held-out rows), the built-in
//! model's initial weights, one identity key per party, and the consortium manifest signed by
//! every member (one operator holds every key here).

use std::path::{Path, PathBuf};

use amalgam_consortium::model::*;
use amalgam_consortium::{IdentityKey, SignedManifest, VerifiedManifest};
use amalgam_dp::params::{
    BitWidth, ClipNorm, Delta, Dimension, Epsilon, OverflowMargin, RoundingBias, Sigma, SiteCount,
};
use amalgam_train::builtin::{BUILTIN_NAMES, Builtin, builtin, parameter_list_digest};
use amalgam_train::campaign::Recipe;
use amalgam_train::data::Row;
use amalgam_train::plant_files::{TEST_FILE_NAME, data_lines, plant_file_name, write_rows};
use amalgam_train::split::{Split, SplitConfig, split};
use amalgam_train::train::OptimizerKind;

use super::Options;
use crate::Failure;

/// Everything the campaign needs, on disk and in memory.
pub struct Setup {
    /// The data set's rows (indices of `split` point into it).
    pub rows: Vec<Row>,
    /// The split the plant files were written from.
    pub split: Split,
    /// The built-in model the recipe names.
    pub builtin: Builtin,
    /// Its initial weights (flat order).
    pub initial: Vec<f32>,
    /// The verified manifest.
    pub manifest: VerifiedManifest,
    /// Plant `i`'s key (the harness reads the aggregator's API with plant 0's).
    pub site_keys: Vec<IdentityKey>,
    /// Local optimizer steps per round (the manifest's `local_epochs`).
    pub local_steps: u32,
}

/// Paths inside the work directory.
pub struct Paths {
    /// The work directory.
    pub work: PathBuf,
}

impl Paths {
    /// The signed manifest.
    pub fn manifest(&self) -> PathBuf {
        self.work.join("consortium.signed")
    }
    /// The initial weights.
    pub fn initial(&self) -> PathBuf {
        self.work.join("initial.bin")
    }
    /// Plant files.
    pub fn plants(&self) -> PathBuf {
        self.work.join("plants")
    }
    /// Plant `i`'s training file.
    pub fn plant_file(&self, i: usize) -> PathBuf {
        self.plants().join(plant_file_name(i))
    }
    /// Key directory of plant `i`.
    pub fn site_key_dir(&self, i: usize) -> PathBuf {
        self.work.join("keys").join(format!("site-{i}"))
    }
    /// Key directory of the aggregator.
    pub fn aggregator_key_dir(&self) -> PathBuf {
        self.work.join("keys").join("aggregator")
    }
    /// State directory of plant `i` (created by `site run` itself).
    pub fn state(&self, i: usize) -> PathBuf {
        self.work.join("state").join(format!("site-{i}"))
    }
    /// The aggregator's event log.
    pub fn db(&self) -> PathBuf {
        self.work.join("aggregator.db")
    }
    /// Children's stderr.
    pub fn log(&self, name: &str) -> PathBuf {
        self.work.join("logs").join(format!("{name}.stderr"))
    }
}

/// The built-in model whose architecture, features, loss weight and momentum are the
/// recipe's: the manifest pins a built-in by name, and the site trainer takes those values
/// from the built-in, so a recipe that differs from every built-in cannot be run.
pub fn builtin_of(recipe: &Recipe) -> Result<Builtin, Failure> {
    BUILTIN_NAMES
        .iter()
        .filter_map(|n| builtin(n).ok())
        .find(|b| {
            b.spec == recipe.model
                && b.pos_weight == recipe.local.pos_weight
                && (recipe.local.optimizer == OptimizerKind::Adam
                    || b.momentum == recipe.local.momentum)
        })
        .ok_or_else(|| {
            Failure::usage(format!(
                "the config's model ({:?}, pos_weight {}, momentum {}) is none of the built-in \
                 models ({}); a campaign pins a built-in by name",
                recipe.model,
                recipe.local.pos_weight,
                recipe.local.momentum,
                BUILTIN_NAMES.join(", ")
            ))
        })
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::failed(format!("{}: {e}", path.display()))
}

/// Reads the CSV (bounded, strict) and splits it; nothing is written.
pub fn read_and_split(o: &Options) -> Result<(String, Vec<Row>, Split), Failure> {
    let len = std::fs::metadata(&o.data).map_err(io(&o.data))?.len();
    if len > amalgam_train::data::MAX_FILE_BYTES {
        return Err(Failure::failed(format!(
            "{}: {len} bytes, over the limit of {}",
            o.data.display(),
            amalgam_train::data::MAX_FILE_BYTES
        )));
    }
    let bytes = std::fs::read(&o.data).map_err(io(&o.data))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Failure::failed(format!("{}: not UTF-8", o.data.display())))?;
    let (_, rows) =
        data_lines(&text).map_err(|e| Failure::failed(format!("{}: {e}", o.data.display())))?;
    let cfg = SplitConfig {
        plants: usize::from(o.plants),
        kind: o.split,
        major_share: o.major_share,
        seed: o.split_seed,
        ..SplitConfig::default()
    };
    let s = split(&rows, &cfg).map_err(|e| Failure::usage(e.to_string()))?;
    if let Some(p) = s.plants.iter().position(|p| p.train.is_empty()) {
        return Err(Failure::failed(format!(
            "plant {p} has no training row: use fewer plants or more data"
        )));
    }
    Ok((text, rows, s))
}

/// Writes the plant files, the initial weights, the keys and the signed manifest.
pub fn write(
    o: &Options,
    paths: &Paths,
    text: &str,
    rows: Vec<Row>,
    split: Split,
) -> Result<Setup, Failure> {
    let (lines, _) = data_lines(text).map_err(|e| Failure::failed(e.to_string()))?;
    let dir = paths.plants();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    for (i, p) in split.plants.iter().enumerate() {
        write_rows(&paths.plant_file(i), &lines, &p.train)
            .map_err(|e| Failure::failed(e.to_string()))?;
        for (what, idx) in [("validation", &p.validation), ("held-out", &p.held_out)] {
            write_rows(&dir.join(format!("plant-{i}.{what}.csv")), &lines, idx)
                .map_err(|e| Failure::failed(e.to_string()))?;
        }
    }
    write_rows(&dir.join(TEST_FILE_NAME), &lines, &split.test)
        .map_err(|e| Failure::failed(e.to_string()))?;
    for sub in ["logs", "state"] {
        let d = paths.work.join(sub);
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }

    let b = builtin_of(&o.recipe)?;
    let (model, initial) = b.init(o.seed).map_err(|e| Failure::failed(e.to_string()))?;
    let list = parameter_list_digest(&model).map_err(|e| Failure::failed(e.to_string()))?;
    let path = paths.initial();
    if path.exists() {
        return Err(Failure::failed(format!("{} exists", path.display())));
    }
    amalgam_store::atomic_write(&path, &amalgam_site::model::model_bytes(&initial), 0o644)
        .map_err(io(&path))?;

    let aggregator = IdentityKey::generate_os()?;
    aggregator.save(&paths.aggregator_key_dir())?;
    let mut site_keys = Vec::new();
    for i in 0..split.plants.len() {
        let k = IdentityKey::generate_os()?;
        k.save(&paths.site_key_dir(i))?;
        site_keys.push(k);
    }

    // One local epoch of the recipe is one pass over a plant's training rows; every site runs
    // the same public step count (training.md §11): the mean plant's passes.
    let mean_rows = split.plants.iter().map(|p| p.train.len()).sum::<usize>() / split.plants.len();
    let batch = o.recipe.local.batch_size.max(1);
    let passes = mean_rows.div_ceil(batch).max(1);
    let local_steps = u32::try_from(passes.saturating_mul(o.recipe.local.epochs))
        .unwrap_or(u32::MAX)
        .min(amalgam_train::site_trainer::MAX_LOCAL_STEPS);

    let body = body(o, &b, &initial, list, local_steps, &aggregator, &site_keys)?;
    let mut signed = SignedManifest::from_body(body)?;
    signed.sign_as(&aggregator)?;
    for k in &site_keys {
        signed.sign_as(k)?;
    }
    let manifest = signed.verify()?;
    signed.write(&paths.manifest())?;
    Ok(Setup {
        rows,
        split,
        builtin: b,
        initial,
        manifest,
        site_keys,
        local_steps,
    })
}

fn usage<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Failure {
    move |e| Failure::usage(format!("{what}: {e}"))
}

/// The manifest body: every plant a site, the aggregator, the protocol numbers of
/// [`super::protocol`], the privacy setting and the recipe as the campaign's training.
fn body(
    o: &Options,
    b: &Builtin,
    initial: &[f32],
    list: [u8; 32],
    local_steps: u32,
    aggregator: &IdentityKey,
    sites: &[IdentityKey],
) -> Result<ManifestBody, Failure> {
    let (t, c, f) = o.protocol;
    let clip = ClipNorm::new(o.clip).map_err(usage("--clip"))?;
    let delta = Delta::new(o.delta).map_err(usage("--delta"))?;
    // Without privacy no noise is drawn; σ only enters the choice of γ, so a small one keeps
    // the rounding fine.
    let sigma = Sigma::new(o.sigma.unwrap_or(1e-3)).map_err(usage("--sigma"))?;
    let budget = match o.sigma {
        None => DpBudget::None,
        Some(_) => DpBudget::Capped {
            epsilon_cap: Epsilon::new(o.epsilon_cap).map_err(usage("--epsilon-cap"))?,
            delta,
        },
    };
    let bits = BitWidth::new(o.bits).map_err(usage("--bits"))?;
    let dim = Dimension::new(initial.len() as u64).map_err(usage("parameters"))?;
    let n_min = u32::from(t).saturating_sub(u32::from(c)).max(1);
    let local = Sigma::new(sigma.get() / f64::from(n_min).sqrt()).map_err(usage("sigma"))?;
    let gamma = amalgam_dp::scaling::choose_gamma(
        bits,
        SiteCount::new(sites.len() as u32).map_err(usage("plants"))?,
        clip,
        local,
        dim.padded(),
        OverflowMargin::from_probability(1e-6).map_err(usage("overflow margin"))?,
    )
    .map_err(usage("choosing gamma"))?;
    let r = &o.recipe;
    let mut members: Vec<Member> = sites
        .iter()
        .enumerate()
        .map(|(i, k)| Member {
            name: format!("site-{i}"),
            organisation: format!("Plant {i}"),
            roles: vec![Role::Site],
            key: k.verifying_key(),
        })
        .collect();
    members.push(Member {
        name: "aggregator".into(),
        organisation: "Aggregator".into(),
        roles: vec![Role::Aggregator],
        key: aggregator.verifying_key(),
    });
    Ok(ManifestBody {
        consortium: "amalgam-simulate".into(),
        epoch: 1,
        prev_digest: None,
        max_aborted_rounds: 5,
        protocol: ProtocolPolicy {
            threshold: t,
            colluders: c,
            dropouts: f,
            min_cohort: t,
            graph: Graph::Complete,
            trust: Trust::Malicious,
        },
        committee: None,
        dp: DpPolicy {
            unit: PrivacyUnit::SiteUpdatePerRound,
            budget,
            clip,
            sigma,
            target_epsilon: None,
            bits,
            gamma,
            beta: RoundingBias::NONE,
        },
        fallback: FallbackPolicy { allowed: false },
        deadlines: DeadlineBounds {
            min_secs: 1,
            max_secs: 3600,
        },
        campaign: Campaign {
            id: "simulate".into(),
            model: ModelRef::Builtin {
                name: b.name.into(),
            },
            parameter_list_digest: list,
            parameter_count: dim,
            initial_weights_digest: amalgam_site::model::model_digest(initial),
            training: TrainingConfig {
                local_epochs: local_steps,
                batch_size: u32::try_from(r.local.batch_size).unwrap_or(u32::MAX),
                optimizer: match r.local.optimizer {
                    OptimizerKind::Sgd => Optimizer::Sgd,
                    OptimizerKind::Adam => Optimizer::Adam,
                },
                learning_rate: r.local.lr,
                mu: r.local.prox_mu,
                server_lr: r.federated.server_lr,
                server_momentum: 0.0,
                rounds: o.rounds,
            },
            weight_mode: match o.noised {
                Some(_) => WeightMode::Noised,
                None => WeightMode::Uniform,
            },
            declared_weights: Default::default(),
            noised_weights: o.noised,
        },
        members,
        rotations: Vec::new(),
    })
}
