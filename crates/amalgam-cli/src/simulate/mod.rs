//! `amalgam simulate`: a whole federated campaign through real processes on one machine
//! (`protocol-spec/training.md` §12). The harness splits the data into plant files, writes the
//! built-in model's initial weights, makes an identity key per party and the manifest every
//! member signs (one operator holds every key: a single-operator simulation, no separation of
//! duties), runs `amalgam serve` and one `amalgam site run --data` per plant as children,
//! follows the rounds from outside (survivors, ε per plant, loss and F1 of the global model
//! on the pooled validation rows, which the harness computes itself: sites never send them),
//! compares the federated model with fine-tuned, local-only and centralized models on the same
//! test rows, and writes `report.json` (`amalgam_report::SimulationReport`).

mod campaign;
mod children;
mod compare;
mod record;
mod setup;
mod weights;

use std::path::PathBuf;

use amalgam_proto::params::{
    AggregatorTrust, Colluders, Dropouts, InputBits, MinCohort, NeighbourGraph, ParamsRequest,
    RoundParams, SiteCount, SumBits, SumMode, Threshold, VectorLen, default_threshold,
};
use amalgam_train::campaign::Recipe;
use amalgam_train::split::SplitKind;
use clap::ValueEnum;

use crate::Failure;
use crate::train::SplitArg;

/// The privacy setting of the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Privacy {
    /// No differential privacy: every ledger records ε = ∞ (updates are still clipped).
    None,
    /// Site-level DP (one plant's whole update per round), σ from `--sigma`.
    Site,
}

/// Options of `amalgam simulate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Campaign recipe (TOML, as `amalgam experiment` reads); its model must be a built-in's.
    #[arg(long, default_value = "configs/campaign-default.toml")]
    config: PathBuf,
    /// Rounds (default: the recipe's `federated.rounds`).
    #[arg(long)]
    rounds: Option<u32>,
    /// CSV in the AI4I schema.
    #[arg(long, default_value = "data/ai4i2020.csv")]
    data: PathBuf,
    /// Number of plants (each a site process).
    #[arg(long, default_value_t = 8)]
    plants: u16,
    /// How rows are dealt to plants.
    #[arg(long, value_enum, default_value = "type")]
    split: SplitArg,
    /// Share of a mode's failures at its own plants (`--split mode`).
    #[arg(long, default_value_t = 0.85)]
    major_share: f64,
    /// Split seed (public: it only deals the rows).
    #[arg(long, default_value_t = 0)]
    split_seed: u64,
    /// Seed of the initial weights (public), of the no-privacy batch order, of the dropout
    /// schedule and of the comparison models.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Privacy setting: `none`, or `site` with `--sigma`.
    #[arg(long, value_enum, default_value = "none")]
    privacy: Privacy,
    /// Central noise standard deviation σ, in update units (`--privacy site`).
    #[arg(long)]
    sigma: Option<f64>,
    /// L2 clip norm C of a site's update.
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// δ of the ε figures (`--privacy site`).
    #[arg(long, default_value_t = 1e-6)]
    delta: f64,
    /// Cap on each plant's cumulative ε (`--privacy site`); a site over it declines.
    #[arg(long, default_value_t = 1000.0)]
    epsilon_cap: f64,
    /// Bits b per value of the upload.
    #[arg(long, default_value_t = 20)]
    bits: u32,
    /// Colluding sites c tolerated (at least 1).
    #[arg(long, default_value_t = 1)]
    colluders: u16,
    /// Shamir threshold t (2t > n + c); default max(⌊2n/3⌋ + 1, ⌊(n + c)/2⌋ + 1). The
    /// tolerated dropouts are n − t, at least 1.
    #[arg(long)]
    threshold: Option<u16>,
    /// Share of plants that skip each round (drawn from `--seed`; at most n − t per round).
    #[arg(long, default_value_t = 0.0)]
    dropout_rate: f64,
    /// Plant P skips round R (`P:R`, repeatable), on top of `--dropout-rate`.
    #[arg(long = "drop", value_name = "PLANT:ROUND")]
    drops: Vec<String>,
    /// Length of a protocol phase, seconds. A phase closes early once everyone answered; a
    /// round with a skipping plant waits its first phase out.
    #[arg(long, default_value_t = 20)]
    phase_seconds: u64,
    /// Work directory (default: a fresh one under the system's temporary directory, removed
    /// after a successful run unless `--keep`).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the temporary work directory.
    #[arg(long)]
    keep: bool,
    /// Where `report.json`, the page (`index.html`, `plots/`) and the TorchScript export of
    /// the federated model (`global_model.pt`) go.
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// The ε-versus-F1 points of an `amalgam sweep --out FILE` (repeatable: one file per
    /// sweep), shown on the report's curve; this run adds no point of its own.
    #[arg(long = "curve", value_name = "SWEEP_JSON")]
    curves: Vec<PathBuf>,
    /// A record-level curve (`amalgam sweep --record-epsilons ... --out FILE`, e.g.
    /// configs/record-dp-curve.json), shown as its own plot and table.
    #[arg(long, value_name = "CURVE_JSON")]
    record_curve: Option<PathBuf>,
    /// Record-level DP-SGD inside each plant (`--record-dp --record-epsilon E`).
    #[command(flatten)]
    record: record::RecordFlags,
    /// The aggregation weights (`--weight-mode`).
    #[command(flatten)]
    weights: weights::WeightFlags,
}

/// Validated options.
pub struct Options {
    /// The recipe, rounds overridden.
    pub recipe: Recipe,
    /// SHA-256 (hex) of the recipe file's bytes.
    pub config_digest: String,
    /// Rounds.
    pub rounds: u32,
    /// The CSV.
    pub data: PathBuf,
    /// Plants.
    pub plants: u16,
    /// Split kind.
    pub split: SplitKind,
    /// Its name in the report.
    pub split_name: &'static str,
    /// `--major-share`.
    pub major_share: f64,
    /// `--split-seed`.
    pub split_seed: u64,
    /// `--seed`.
    pub seed: u64,
    /// σ under site-level DP; `None` without privacy.
    pub sigma: Option<f64>,
    /// `--clip`.
    pub clip: f64,
    /// `--delta`.
    pub delta: f64,
    /// `--epsilon-cap`.
    pub epsilon_cap: f64,
    /// `--bits`.
    pub bits: u32,
    /// (t, c, f).
    pub protocol: (u16, u16, u16),
    /// `--dropout-rate`.
    pub dropout_rate: f64,
    /// `skips[r]`: the plants that skip round r.
    pub skips: Vec<Vec<usize>>,
    /// `--phase-seconds`.
    pub phase_seconds: u64,
    /// `--out`.
    pub out: PathBuf,
    /// The curve points read from `--curve` files.
    pub curve: Vec<amalgam_report::CurvePoint>,
    /// The record-level curve read from `--record-curve`.
    pub record_curve: Option<amalgam_report::record_curve::RecordCurve>,
    /// Record-level DP-SGD settings; `None` without `--record-dp`.
    pub record: Option<record::RecordOptions>,
    /// The noised weight policy; `None` under uniform weights.
    pub noised: Option<amalgam_consortium::NoisedWeightPolicy>,
}

/// (t, c, f) of `n` plants, checked against the protocol's rules (safety 2t > n + c,
/// liveness t ≤ n − f) and required to tolerate at least one colluder and one dropout.
pub fn protocol(n: u16, c: u16, t: Option<u16>, bits: u32) -> Result<(u16, u16, u16), Failure> {
    let t = t.unwrap_or(default_threshold(n, c));
    let f = n.saturating_sub(t);
    if f == 0 {
        return Err(Failure::usage(format!(
            "{n} plants with threshold {t} tolerate no dropout: use more plants or a lower \
             --threshold"
        )));
    }
    let b = u8::try_from(bits).unwrap_or(u8::MAX);
    let refuse = |e: amalgam_proto::ParamError| Failure::usage(format!("refused parameters: {e}"));
    RoundParams::new(ParamsRequest {
        sites: SiteCount::new(n).map_err(refuse)?,
        threshold: Threshold::new(t).map_err(refuse)?,
        min_cohort: MinCohort::new(t).map_err(refuse)?,
        input_bits: InputBits::new(b).map_err(refuse)?,
        sum_bits: SumBits::new(b).map_err(refuse)?,
        sum_mode: SumMode::Modular,
        vector_len: VectorLen::new(1).map_err(refuse)?,
        graph: NeighbourGraph::Complete,
        colluders: Colluders::new(c).map_err(refuse)?,
        dropouts: Dropouts::new(f),
        trust: AggregatorTrust::Malicious,
    })
    .map_err(refuse)?;
    Ok((t, c, f))
}

/// A number in [0, 1) drawn from (seed, round, plant): the dropout schedule is public and
/// reproducible, and has nothing to do with any secret.
fn uniform(seed: u64, round: u32, plant: usize) -> f64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"amalgam/v1/simulate/dropout");
    h.update(seed.to_le_bytes());
    h.update(round.to_le_bytes());
    h.update((plant as u64).to_le_bytes());
    let d: [u8; 32] = h.finalize().into();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Which plants skip each round: the explicit `--drop`s, then each other plant with
/// probability `rate`, at most `f` per round (later plants in the draw give way).
fn schedule(
    rounds: u32,
    plants: u16,
    f: u16,
    rate: f64,
    seed: u64,
    drops: &[String],
) -> Result<Vec<Vec<usize>>, Failure> {
    let n = usize::from(plants);
    let mut skips = vec![Vec::new(); rounds as usize];
    for d in drops {
        let bad = || Failure::usage(format!("--drop {d}: expected PLANT:ROUND"));
        let (p, r) = d.split_once(':').ok_or_else(bad)?;
        let (p, r): (usize, u32) = (p.parse().map_err(|_| bad())?, r.parse().map_err(|_| bad())?);
        if p >= n || r >= rounds {
            return Err(Failure::usage(format!(
                "--drop {d}: plant must be below {n} and round below {rounds}"
            )));
        }
        let s = &mut skips[r as usize];
        if !s.contains(&p) {
            s.push(p);
        }
        if s.len() > usize::from(f) {
            return Err(Failure::usage(format!(
                "--drop: round {r} loses more plants than the {f} dropouts the parameters tolerate"
            )));
        }
    }
    for (r, s) in skips.iter_mut().enumerate() {
        for p in 0..n {
            if s.len() < usize::from(f) && !s.contains(&p) && uniform(seed, r as u32, p) < rate {
                s.push(p);
            }
        }
        s.sort_unstable();
    }
    Ok(skips)
}

fn options(a: &Args) -> Result<Options, Failure> {
    if a.plants < 2 {
        return Err(Failure::usage("--plants must be at least 2"));
    }
    let sigma = match (a.privacy, a.sigma) {
        (Privacy::None, None) => None,
        (Privacy::None, Some(_)) => {
            return Err(Failure::usage("--sigma needs --privacy site"));
        }
        (Privacy::Site, None) => {
            return Err(Failure::usage("--privacy site needs --sigma S"));
        }
        (Privacy::Site, Some(s)) if !(s.is_finite() && s > 0.0) => {
            return Err(Failure::usage(format!("--sigma {s} must be positive")));
        }
        (Privacy::Site, Some(s)) => Some(s),
    };
    if !(a.dropout_rate.is_finite() && (0.0..1.0).contains(&a.dropout_rate)) {
        return Err(Failure::usage("--dropout-rate must be in [0, 1)"));
    }
    if !(a.clip.is_finite() && a.clip > 0.0) {
        return Err(Failure::usage("--clip must be positive"));
    }
    if !(1..=3600).contains(&a.phase_seconds) {
        return Err(Failure::usage("--phase-seconds must be 1..=3600"));
    }
    let bytes = std::fs::read(&a.config)
        .map_err(|e| Failure::usage(format!("--config {}: {e}", a.config.display())))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Failure::usage(format!("--config {}: not UTF-8", a.config.display())))?;
    let mut recipe = Recipe::from_toml(text)
        .map_err(|e| Failure::usage(format!("--config {}: {e}", a.config.display())))?;
    let rounds = match a.rounds {
        Some(r) => r,
        None => u32::try_from(recipe.federated.rounds)
            .map_err(|_| Failure::usage("the recipe's rounds do not fit a campaign"))?,
    };
    if !(1..=10_000).contains(&rounds) {
        return Err(Failure::usage("--rounds must be 1..=10000"));
    }
    recipe.federated.rounds = rounds as usize;
    recipe.federated.eval_every = recipe.federated.eval_every.min(rounds as usize);
    recipe.validate().map_err(Failure::usage)?;
    setup::builtin_of(&recipe)?;
    let protocol = protocol(a.plants, a.colluders, a.threshold, a.bits)?;
    let skips = schedule(
        rounds,
        a.plants,
        protocol.2,
        a.dropout_rate,
        a.seed,
        &a.drops,
    )?;
    let (split, split_name) = match a.split {
        SplitArg::Type => (SplitKind::Type, "type"),
        SplitArg::Mode => (SplitKind::Mode, "mode"),
        SplitArg::ModeExclusive => (SplitKind::ModeExclusive, "mode-exclusive"),
    };
    if !(a.major_share.is_finite() && (0.0..=1.0).contains(&a.major_share)) {
        return Err(Failure::usage("--major-share must be in [0, 1]"));
    }
    if a.record.record_dp && a.weights.weight_mode != weights::WeightArg::Uniform {
        return Err(Failure::usage(
            "--record-dp divides each step by its public expected batch: it runs with --weight-mode uniform",
        ));
    }
    use sha2::{Digest, Sha256};
    Ok(Options {
        recipe,
        config_digest: hex::encode(Sha256::digest(&bytes)),
        rounds,
        data: a.data.clone(),
        plants: a.plants,
        split,
        split_name,
        major_share: a.major_share,
        split_seed: a.split_seed,
        seed: a.seed,
        sigma,
        clip: a.clip,
        delta: a.delta,
        epsilon_cap: a.epsilon_cap,
        bits: a.bits,
        protocol,
        dropout_rate: a.dropout_rate,
        skips,
        phase_seconds: a.phase_seconds,
        out: a.out.clone(),
        curve: read_curves(&a.curves)?,
        record_curve: match &a.record_curve {
            Some(f) => Some(
                amalgam_report::record_curve::RecordCurve::read(f)
                    .map_err(|e| Failure::usage(format!("--record-curve {e}")))?,
            ),
            None => None,
        },
        record: record::options(&a.record, a.dropout_rate > 0.0 || !a.drops.is_empty())?,
        noised: weights::policy(
            &a.weights,
            (a.plants, protocol.0, protocol.1),
            a.clip,
            sigma,
        )?,
    })
}

/// Largest sweep file `--curve` reads.
const MAX_SWEEP_BYTES: u64 = 16 << 20;

/// The points of `amalgam sweep --out` files, in order (bounded, strictly decoded).
fn read_curves(files: &[PathBuf]) -> Result<Vec<amalgam_report::CurvePoint>, Failure> {
    #[derive(serde::Deserialize)]
    struct Sweep {
        points: Vec<amalgam_report::CurvePoint>,
    }
    let mut out = Vec::new();
    for f in files {
        let bad = |why: String| Failure::usage(format!("--curve {}: {why}", f.display()));
        let len = std::fs::metadata(f).map_err(|e| bad(e.to_string()))?.len();
        if len > MAX_SWEEP_BYTES {
            return Err(bad(format!("{len} bytes, over {MAX_SWEEP_BYTES}")));
        }
        let bytes = std::fs::read(f).map_err(|e| bad(e.to_string()))?;
        let sweep: Sweep = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("not an amalgam sweep file: {e}")))?;
        if sweep.points.iter().any(|p| {
            !(p.f1.is_finite() && p.auprc.is_finite() && p.sigma.is_finite())
                || p.epsilon.is_some_and(|e| !e.is_finite())
        }) {
            return Err(bad("a point is not finite".into()));
        }
        out.extend(sweep.points);
    }
    Ok(out)
}

/// A fresh work directory under the system's temporary directory.
fn temp_work() -> Result<PathBuf, Failure> {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).map_err(|_| Failure::failed("no OS randomness for a temp name"))?;
    let dir = std::env::temp_dir().join(format!("amalgam-simulate-{}", hex::encode(b)));
    std::fs::create_dir(&dir).map_err(|e| Failure::failed(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// Runs `amalgam simulate`. Every flag and the recipe are checked before anything is
/// written; a failure after that keeps the work directory (it holds the children's logs).
pub fn run(a: &Args) -> Result<(), Failure> {
    let o = options(a)?;
    // The data is read and split before anything is written, too.
    let (text, rows, split) = setup::read_and_split(&o)?;
    if let Some(r) = &o.record {
        record::check_split(r, &split)?;
    }
    let (work, temporary) = match &a.work {
        Some(w) => {
            std::fs::create_dir_all(w)
                .map_err(|e| Failure::failed(format!("{}: {e}", w.display())))?;
            (w.clone(), false)
        }
        None => (temp_work()?, true),
    };
    let paths = setup::Paths { work: work.clone() };
    let started = std::time::Instant::now();
    let result = setup::write(&o, &paths, &text, rows, split)
        .and_then(|s| campaign::run(&o, &paths, &s).map(|c| (s, c)))
        .and_then(|(s, c)| compare::report(&o, &paths, &s, c, started.elapsed().as_secs_f64()));
    match result {
        Ok(path) => {
            eprintln!("amalgam: report written to {}", path.display());
            let files = amalgam_report::render_dir(&o.out)
                .map_err(|e| Failure::failed(format!("rendering the report: {e}")))?;
            for f in files {
                eprintln!("amalgam: wrote {}", f.display());
            }
            if temporary && !a.keep {
                let _ = std::fs::remove_dir_all(&work);
            } else {
                eprintln!("amalgam: work directory {}", work.display());
            }
            Ok(())
        }
        Err(mut f) => {
            f.message = format!("{} (work directory kept: {})", f.message, work.display());
            Err(f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dropout_schedule_is_reproducible_and_never_drops_more_than_f() {
        let a = schedule(200, 8, 2, 0.3, 7, &[])
            .map_err(|f| f.message)
            .unwrap();
        assert_eq!(
            a,
            schedule(200, 8, 2, 0.3, 7, &[])
                .map_err(|f| f.message)
                .unwrap()
        );
        assert_ne!(
            a,
            schedule(200, 8, 2, 0.3, 8, &[])
                .map_err(|f| f.message)
                .unwrap()
        );
        assert!(a.iter().all(|s| s.len() <= 2));
        // At rate 0.3 with 8 plants some rounds lose plants, and some lose the most allowed.
        assert!(a.iter().any(|s| s.len() == 2) && a.iter().any(|s| s.is_empty()));
        let none = schedule(50, 8, 2, 0.0, 7, &[])
            .map_err(|f| f.message)
            .unwrap();
        assert!(none.iter().all(Vec::is_empty));
        // Explicit drops are kept and count against f.
        let d = schedule(3, 4, 1, 0.9, 1, &["3:1".into()])
            .map_err(|f| f.message)
            .unwrap();
        assert_eq!(d[1], vec![3]);
        for bad in [&["3:3"][..], &["4:0"], &["0:1", "1:1"], &["x"], &["1:-1"]] {
            let drops: Vec<String> = bad.iter().map(|s| (*s).to_owned()).collect();
            assert!(schedule(3, 4, 1, 0.0, 1, &drops).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn protocol_numbers_tolerate_a_colluder_and_a_dropout() {
        assert_eq!(
            protocol(8, 1, None, 20).map_err(|f| f.message).unwrap(),
            (6, 1, 2)
        );
        assert_eq!(
            protocol(8, 3, None, 20).map_err(|f| f.message).unwrap(),
            (6, 3, 2)
        );
        assert_eq!(
            protocol(4, 1, None, 20).map_err(|f| f.message).unwrap(),
            (3, 1, 1)
        );
        // No dropout tolerated, or the safety rule 2t > n + c broken: refused.
        assert_eq!(protocol(3, 1, None, 20).map_err(|f| f.code).unwrap_err(), 2);
        assert_eq!(
            protocol(8, 1, Some(8), 20).map_err(|f| f.code).unwrap_err(),
            2
        );
        assert_eq!(
            protocol(8, 4, Some(6), 20).map_err(|f| f.code).unwrap_err(),
            2
        );
    }
}
