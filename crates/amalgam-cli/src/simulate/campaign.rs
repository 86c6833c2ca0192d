//! The campaign through real processes: `amalgam serve` and one `amalgam site run --data` per
//! plant, followed round by round from outside through the aggregator's API (with plant 0's
//! key, as any member could).
//!
//! A plant that skips round r (`--dropout-rate`, `--drop`) is a site that is not running
//! then: its process runs the rounds before r (`--rounds k`) and exits; the harness starts it
//! again once round r has ended, and it rejoins at r + 1, recomputing the model it missed
//! from the published result (site-agent.md §5). The aggregator waits for it until the first
//! phase's deadline, then runs the round with the others.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use amalgam_consortium::global_model::{encoding_params, model_digest, model_from_bytes};
use amalgam_report::RoundRow;
use amalgam_site::Transport;
use amalgam_site::http::HttpTransport;
use amalgam_train::experiment::Prepared;
use amalgam_train::model::Model;

use super::Options;
use super::children::Children;
use super::setup::{Paths, Setup};
use crate::Failure;

/// What one site printed after a round (`stats` line of `site run`).
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Round.
    pub round: u64,
    /// Seconds in the trainer.
    pub train_s: f64,
    /// Seconds in DP encoding and decoding.
    pub encode_s: f64,
    /// Seconds in the masking protocol's computation.
    pub mask_s: f64,
    /// Seconds sealing and writing state.
    pub persist_s: f64,
    /// Seconds in the whole round.
    pub total_s: f64,
    /// Cumulative ε (`None`: ∞, no privacy).
    pub epsilon: Option<f64>,
    /// Ledger entries.
    pub entries: u64,
    /// Ledger head (hex).
    pub head: String,
}

/// Parses `stats round=R train_s=T encode_s=E mask_s=M persist_s=P total_s=S epsilon=E
/// entries=N head=HEX` (every duration finite and ≥ 0).
pub fn parse_stats(line: &str) -> Option<Stats> {
    let rest = line.strip_prefix("stats ")?;
    let mut f = BTreeMap::new();
    for kv in rest.split(' ') {
        let (k, v) = kv.split_once('=')?;
        f.insert(k, v);
    }
    let num = |k: &str| {
        f.get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
    };
    let epsilon = match *f.get("epsilon")? {
        "inf" => None,
        v => Some(
            v.parse::<f64>()
                .ok()
                .filter(|e| e.is_finite() && *e >= 0.0)?,
        ),
    };
    Some(Stats {
        round: f.get("round")?.parse().ok()?,
        train_s: num("train_s")?,
        encode_s: num("encode_s")?,
        mask_s: num("mask_s")?,
        persist_s: num("persist_s")?,
        total_s: num("total_s")?,
        epsilon,
        entries: f.get("entries")?.parse().ok()?,
        head: (*f.get("head")?).to_owned(),
    })
}

/// Seconds per stage, summed over sites and rounds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageSeconds {
    /// Training.
    pub train: f64,
    /// DP encoding and decoding.
    pub encode: f64,
    /// Masking computation.
    pub mask: f64,
    /// Persistence.
    pub persist: f64,
    /// Whole rounds.
    pub total: f64,
}

/// The campaign as the harness saw it.
pub struct Outcome {
    /// One row per round.
    pub rounds: Vec<RoundRow>,
    /// The global model with the best pooled-validation AUPRC, and the round after which the
    /// aggregator produced it (1-based: after round r is r + 1).
    pub best: (Vec<f32>, usize),
    /// Each plant's last `stats` line.
    pub last: Vec<Option<Stats>>,
    /// Σ over every site and round of each stage's seconds.
    pub time: StageSeconds,
}

/// Runs of consecutive rounds plant `p` takes part in: (first round, count).
fn segments(rounds: u32, skips: &[Vec<usize>], p: usize) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for r in 0..rounds {
        if skips[r as usize].contains(&p) {
            continue;
        }
        match out.last_mut() {
            Some((s, n)) if *s + *n == r => *n += 1,
            _ => out.push((r, 1)),
        }
    }
    out
}

fn site_args(
    o: &Options,
    paths: &Paths,
    s: &Setup,
    url: &str,
    p: usize,
    rounds: u32,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "site",
        "run",
        "--manifest",
        &paths.manifest().display().to_string(),
        "--key",
        &paths
            .site_key_dir(p)
            .join("identity.key")
            .display()
            .to_string(),
        "--state",
        &paths.state(p).display().to_string(),
        "--aggregator",
        url,
        "--rounds",
        &rounds.to_string(),
        "--wait-for-round",
        &(o.phase_seconds * 6 + 300).to_string(),
        "--data",
        &paths.plant_file(p).display().to_string(),
        "--initial-model",
        &paths.initial().display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if o.sigma.is_none() {
        args.push("--train-seed".into());
        args.push(o.seed.wrapping_add(p as u64).to_string());
    }
    if let Some(r) = &o.record {
        // N_i as the harness declared it (it wrote the plant file), never re-derived.
        let records = s.split.plants.get(p).map_or(0, |pl| pl.train.len());
        args.extend(super::record::site_args(r, paths, p, records));
    }
    args
}

/// Follows the children's stdout: the READY line and each site's `stats` lines.
struct Watch {
    url: Option<String>,
    stats: Vec<BTreeMap<u64, Stats>>,
}

impl Watch {
    fn drain(&mut self, children: &Children) {
        while let Ok((who, line)) = children.lines.try_recv() {
            if who == "aggregator" {
                if let Some(u) = line.strip_prefix("READY ") {
                    self.url = Some(u.trim().to_owned());
                }
            } else if let Some(p) = who
                .strip_prefix("site-")
                .and_then(|p| p.parse::<usize>().ok())
                && let (Some(s), Some(m)) = (parse_stats(&line), self.stats.get_mut(p))
            {
                m.insert(s.round, s);
            }
        }
    }
}

fn transport_failure(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::failed(format!("{what}: {e}"))
}

/// Runs the campaign and follows it.
pub fn run(o: &Options, paths: &Paths, s: &Setup) -> Result<Outcome, Failure> {
    let n = usize::from(o.plants);
    let rounds = o.rounds;
    let children = Children::start();
    let agg = "aggregator";
    children.spawn(
        agg,
        &[
            "serve".into(),
            "--manifest".into(),
            paths.manifest().display().to_string(),
            "--key".into(),
            paths
                .aggregator_key_dir()
                .join("identity.key")
                .display()
                .to_string(),
            "--db".into(),
            paths.db().display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--initial-model".into(),
            paths.initial().display().to_string(),
            "--phase-seconds".into(),
            o.phase_seconds.to_string(),
            // Every party connects from 127.0.0.1 here: room for each site's and the
            // harness's connections (the default, 16, is per host of a real consortium).
            "--max-connections-per-ip".into(),
            (16 * (n + 1)).min(512).to_string(),
        ],
        2,
        &paths.log(agg),
    )?;
    let mut watch = Watch {
        url: None,
        stats: vec![BTreeMap::new(); n],
    };
    let end = Instant::now() + Duration::from_secs(120);
    let url = loop {
        children.check(&[agg])?;
        watch.drain(&children);
        if let Some(u) = watch.url.clone() {
            break u;
        }
        if Instant::now() > end {
            return Err(Failure::with(
                3,
                format!(
                    "the aggregator printed no READY line in 120 s; its log: {}",
                    paths.log(agg).display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let segs: Vec<Vec<(u32, u32)>> = (0..n).map(|p| segments(rounds, &o.skips, p)).collect();
    let spawn_from = |r: u32| -> Result<(), Failure> {
        for (p, list) in segs.iter().enumerate() {
            for &(start, count) in list {
                if start == r {
                    let name = format!("site-{p}");
                    let args = site_args(o, paths, s, &url, p, count);
                    children.spawn(&name, &args, 1, &paths.log(&name))?;
                }
            }
        }
        Ok(())
    };
    spawn_from(0)?;
    eprintln!(
        "amalgam: {n} plants, {rounds} rounds of {} local steps, t = {}, c = {}, f = {}; \
         aggregator at {url}",
        s.local_steps, o.protocol.0, o.protocol.1, o.protocol.2
    );

    let policy = amalgam_net::client::RetryPolicy {
        attempts: 6,
        base: Duration::from_millis(100),
        max: Duration::from_secs(2),
        timeout: Duration::from_secs(60),
        max_body: 1 << 26,
    };
    let mut t = HttpTransport::new(&url, &s.site_keys[0], &s.manifest, policy)
        .map_err(|e| transport_failure("the harness's connection to the aggregator", e))?;
    let prepared = Prepared::new(&s.rows, &s.split, &o.recipe);
    let mut eval = Model::new(&s.builtin.spec).map_err(|e| Failure::failed(e.to_string()))?;
    let len = s.initial.len();
    let server_lr = s.manifest.campaign().training.server_lr;
    let round_wait = Duration::from_secs(o.phase_seconds * 6 + 300);

    let mut model = s.initial.clone();
    let mut rows = Vec::new();
    let mut best: (f64, Vec<f32>, usize) = (-1.0, s.initial.clone(), 0);
    let mut epsilon: Vec<Option<f64>> = vec![o.sigma.map(|_| 0.0); n];
    let mut mark = Instant::now();
    for r in 0..rounds {
        let round = u64::from(r);
        let end = Instant::now() + round_wait;
        let result = loop {
            children.check(&[agg])?;
            watch.drain(&children);
            match t.result(round, Duration::from_secs(2)) {
                Ok(Some(res)) => break res,
                Ok(None) => {}
                Err(amalgam_site::TransportError::Refused { code, .. })
                    if code == "round.unknown" =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    return Err(transport_failure(
                        &format!(
                            "round {round}: the aggregator's result ({})",
                            paths.log(agg).display()
                        ),
                        e,
                    ));
                }
            }
            if Instant::now() > end {
                return Err(Failure::with(
                    3,
                    format!(
                        "round {round} did not end in {} s; logs in {}",
                        round_wait.as_secs(),
                        paths.work.join("logs").display()
                    ),
                ));
            }
        };
        let seconds = mark.elapsed().as_secs_f64();
        mark = Instant::now();
        if r + 1 < rounds {
            spawn_from(r + 1)?;
        }
        let computed = s
            .manifest
            .aggregation_weights()
            .map_err(|e| Failure::failed(e.to_string()))?
            .step(
                encoding_params(&s.manifest, round),
                &model,
                &result.sum,
                &result.contributors,
                server_lr,
            )
            .map_err(|e| Failure::failed(format!("round {round}: the published sum: {e}")))?;
        // The model the aggregator serves for the next round must be the one its published
        // sum gives; the last round's next model is served to nobody, so it is computed.
        let next = if r + 1 < rounds {
            let end = Instant::now() + Duration::from_secs(60);
            let bytes = loop {
                match t.model(round + 1) {
                    Ok(Some(b)) => break b,
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Ok(None) => {
                        return Err(Failure::failed(format!(
                            "the aggregator serves no model for round {}",
                            round + 1
                        )));
                    }
                    Err(e) => return Err(transport_failure("the next model", e)),
                }
            };
            let served = model_from_bytes(&bytes, len)
                .map_err(|e| Failure::failed(format!("round {}: served model: {e}", round + 1)))?;
            if model_digest(&served) != model_digest(&computed) {
                return Err(Failure::failed(format!(
                    "the aggregator's model of round {} is not the one round {round}'s published \
                     sum gives",
                    round + 1
                )));
            }
            served
        } else {
            computed
        };
        // Each site prints its stats once its round is over (result fetched, summary sent).
        let expected: Vec<usize> = (0..n)
            .filter(|p| !o.skips[r as usize].contains(p))
            .collect();
        let end = Instant::now() + Duration::from_secs(60);
        while expected
            .iter()
            .any(|&p| !watch.stats[p].contains_key(&round))
            && Instant::now() < end
        {
            children.check(&[agg])?;
            watch.drain(&children);
            std::thread::sleep(Duration::from_millis(20));
        }
        for (p, e) in epsilon.iter_mut().enumerate() {
            if let Some(st) = watch.stats[p].get(&round) {
                *e = st.epsilon;
            }
        }
        let (loss, f1, auprc) = prepared
            .pooled_validation(&mut eval, &next, s.builtin.pos_weight)
            .map_err(|e| Failure::failed(e.to_string()))?;
        if auprc > best.0 {
            best = (auprc, next.clone(), r as usize + 1);
        }
        let survivors = result.contributors.len() as u16;
        eprintln!(
            "{}",
            progress(r, rounds, survivors, n, &epsilon, loss, f1, seconds)
        );
        rows.push(RoundRow {
            round,
            survivors,
            epsilon: epsilon.clone(),
            loss: Some(loss),
            val_f1: Some(f1),
            seconds,
        });
        model = next;
    }
    // Every site process ends by itself after its last round.
    let end = Instant::now() + Duration::from_secs(120);
    while !(0..n).all(|p| children.done(&format!("site-{p}"))) {
        children.check(&[agg])?;
        watch.drain(&children);
        if Instant::now() > end {
            return Err(Failure::with(3, "a site did not exit after its last round"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    watch.drain(&children);
    children.kill();
    let last = watch
        .stats
        .iter()
        .map(|m| m.values().next_back().cloned())
        .collect();
    let time = watch
        .stats
        .iter()
        .flat_map(|m| m.values())
        .fold(StageSeconds::default(), |a, s| StageSeconds {
            train: a.train + s.train_s,
            encode: a.encode + s.encode_s,
            mask: a.mask + s.mask_s,
            persist: a.persist + s.persist_s,
            total: a.total + s.total_s,
        });
    Ok(Outcome {
        rounds: rows,
        best: (best.1, best.2),
        last,
        time,
    })
}

/// One progress line: survivors, ε per plant, loss and validation F1, wall time.
#[allow(clippy::too_many_arguments)]
fn progress(
    r: u32,
    rounds: u32,
    survivors: u16,
    n: usize,
    epsilon: &[Option<f64>],
    loss: f64,
    f1: f64,
    seconds: f64,
) -> String {
    let eps = if epsilon.iter().all(Option::is_none) {
        "ε ∞ (no privacy)".to_owned()
    } else {
        let v: Vec<String> = epsilon
            .iter()
            .map(|e| e.map_or("∞".into(), |e| format!("{e:.2}")))
            .collect();
        format!("ε per plant [{}]", v.join(", "))
    };
    format!(
        "round {}/{rounds}: {survivors}/{n} plants in the sum, {eps}, validation loss {loss:.4}, \
         F1 {f1:.3}, {seconds:.1} s",
        r + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_lines_parse_and_bad_ones_are_ignored() {
        let times = "encode_s=0.125 mask_s=0.0625 persist_s=0.03125";
        let s = parse_stats(&format!(
            "stats round=3 train_s=0.25 {times} total_s=1.5 epsilon=inf entries=9 head=ab01"
        ));
        assert_eq!(
            s,
            Some(Stats {
                round: 3,
                train_s: 0.25,
                encode_s: 0.125,
                mask_s: 0.0625,
                persist_s: 0.03125,
                total_s: 1.5,
                epsilon: None,
                entries: 9,
                head: "ab01".into()
            })
        );
        let s = parse_stats(&format!(
            "stats round=0 train_s=1 {times} total_s=2 epsilon=0.5 entries=3 head=00"
        ));
        assert_eq!(s.map(|s| s.epsilon), Some(Some(0.5)));
        for bad in [
            "round 0: Completed".to_owned(),
            format!("stats round=x train_s=1 {times} total_s=2 epsilon=0.5 entries=3 head=00"),
            format!("stats round=0 train_s=1 {times} total_s=2 epsilon=-1 entries=3 head=00"),
            format!("stats round=0 train_s=1 {times} total_s=2 epsilon=NaN entries=3 head=00"),
            format!("stats round=0 train_s=1 {times} epsilon=0.5 entries=3 head=00"),
            format!("stats round=0 train_s=-1 {times} total_s=2 epsilon=0.5 entries=3 head=00"),
            "stats round=0 train_s=1 total_s=2 epsilon=0.5 entries=3 head=00".to_owned(),
        ] {
            assert_eq!(parse_stats(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_skipped_round_splits_a_plant_into_two_runs() {
        let skips = vec![vec![], vec![2], vec![], vec![1, 2], vec![]];
        assert_eq!(segments(5, &skips, 0), vec![(0, 5)]);
        assert_eq!(segments(5, &skips, 1), vec![(0, 3), (4, 1)]);
        assert_eq!(segments(5, &skips, 2), vec![(0, 1), (2, 1), (4, 1)]);
        let all = vec![vec![0]; 2];
        assert_eq!(segments(2, &all, 0), vec![]);
    }
}
