//! `amalgam simulate --record-dp`: record-level DP-SGD inside every plant process
//! (`protocol-spec/record-dp.md` §8). The harness declares each plant's record count N_i in
//! advance (it wrote the plant file), passes the public expected batch q·N_i to the site, and
//! after the campaign audits each plant's record ledger under that plant's identity key: the
//! report's record-level ε is the verified ledger's, not the site's word.

use std::path::{Path, PathBuf};

use amalgam_report::RecordRow;
use amalgam_train::split::Split;

use super::setup::{Paths, Setup};
use crate::Failure;

/// The record-level flags of `simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordFlags {
    /// Train every plant with record-level DP-SGD, charged to a record ledger per plant.
    #[arg(long)]
    pub record_dp: bool,
    /// Record-level ε cap of each plant's dataset (`--record-dp`).
    #[arg(long)]
    pub record_epsilon: Option<f64>,
    /// Record-level δ; at most 1/(10·N_i) for every plant's record count N_i.
    #[arg(long, default_value_t = 1e-6)]
    pub record_delta: f64,
    /// Poisson sampling rate q of each local step.
    #[arg(long, default_value_t = 0.01)]
    pub record_q: f64,
    /// Per-example clip norm C_rec.
    #[arg(long, default_value_t = 1.0)]
    pub record_clip: f64,
}

/// Validated record-level settings.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The cap ε.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// q.
    pub q: f64,
    /// C_rec.
    pub clip: f64,
}

/// Checks the flags alone (before any file is read). `dropouts`: whether a plant may skip a
/// round, which the record mode refuses: a site restarted for its later rounds calibrates σ
/// for those rounds only, so its first segment would spend the whole cap and the ledger would
/// refuse the rejoin.
pub fn options(f: &RecordFlags, dropouts: bool) -> Result<Option<RecordOptions>, Failure> {
    if !f.record_dp {
        if f.record_epsilon.is_some() {
            return Err(Failure::usage("--record-epsilon needs --record-dp"));
        }
        return Ok(None);
    }
    let Some(epsilon) = f.record_epsilon else {
        return Err(Failure::usage("--record-dp needs --record-epsilon E"));
    };
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(Failure::usage(format!(
            "--record-epsilon {epsilon} must be positive"
        )));
    }
    if !(f.record_delta.is_finite() && f.record_delta > 0.0 && f.record_delta < 1.0) {
        return Err(Failure::usage(format!(
            "--record-delta {} must be in (0, 1)",
            f.record_delta
        )));
    }
    if !(f.record_q.is_finite() && f.record_q > 0.0 && f.record_q <= 1.0) {
        return Err(Failure::usage(format!(
            "--record-q {} must be in (0, 1]",
            f.record_q
        )));
    }
    if !(f.record_clip.is_finite() && f.record_clip > 0.0) {
        return Err(Failure::usage(format!(
            "--record-clip {} must be positive",
            f.record_clip
        )));
    }
    if dropouts {
        return Err(Failure::usage(
            "--record-dp cannot be combined with --dropout-rate or --drop: a plant restarted \
             after a skipped round would calibrate its noise for its remaining rounds only",
        ));
    }
    Ok(Some(RecordOptions {
        epsilon,
        delta: f.record_delta,
        q: f.record_q,
        clip: f.record_clip,
    }))
}

/// Refuses a split where some plant's δ is above 1/(10·N_i) or whose expected batch q·N_i is
/// under one record; runs before anything is written.
pub fn check_split(r: &RecordOptions, split: &Split) -> Result<(), Failure> {
    for (i, p) in split.plants.iter().enumerate() {
        let n = p.train.len() as f64;
        let limit = 1.0 / (10.0 * n);
        if r.delta > limit {
            return Err(Failure::usage(format!(
                "--record-delta {:e} is above 1/(10·N) = {limit:e} for plant {i} (N = {} \
                 training records): use a smaller δ",
                r.delta,
                p.train.len()
            )));
        }
        if r.q * n < 1.0 {
            return Err(Failure::usage(format!(
                "plant {i} has N = {} training records: its expected batch q·N = {} is under one \
                 record; raise --record-q",
                p.train.len(),
                r.q * n
            )));
        }
    }
    Ok(())
}

/// Plant `p`'s record ledger directory.
pub fn ledger_dir(paths: &Paths, p: usize) -> PathBuf {
    paths.work.join("records").join(format!("site-{p}"))
}

/// The record flags of plant `p`'s `site run`; `records` is the N_i the harness declared.
pub fn site_args(r: &RecordOptions, paths: &Paths, p: usize, records: usize) -> Vec<String> {
    vec![
        "--record-dp".into(),
        "--record-epsilon".into(),
        r.epsilon.to_string(),
        "--record-delta".into(),
        r.delta.to_string(),
        "--record-q".into(),
        r.q.to_string(),
        "--record-clip".into(),
        r.clip.to_string(),
        "--record-expected-batch".into(),
        (r.q * records as f64).to_string(),
        "--record-ledgers".into(),
        ledger_dir(paths, p).display().to_string(),
        "--record-dataset".into(),
        dataset_name(p),
        "--record-max-records".into(),
        records.to_string(),
    ]
}

/// Plant `p`'s declared dataset name.
fn dataset_name(p: usize) -> String {
    format!("plant-{p}")
}

fn ledger_path(paths: &Paths, p: usize) -> Result<PathBuf, Failure> {
    let name = amalgam_dp::ledger::record::DatasetName::new(&dataset_name(p))
        .map_err(|e| Failure::failed(e.to_string()))?;
    let id = amalgam_dp::ledger::record::dataset_id(&name);
    Ok(amalgam_dp::ledger::record::record_ledger_path(
        &ledger_dir(paths, p),
        &id,
    ))
}

/// Every plant's record-level row, from its ledger audited under its identity key (refused
/// on any finding, or when its policy is not the one the harness declared).
pub fn rows(
    r: &RecordOptions,
    paths: &Paths,
    s: &Setup,
    declared: &[usize],
) -> Result<Vec<RecordRow>, Failure> {
    let mut out = Vec::new();
    for (p, &n) in declared.iter().enumerate() {
        let path = ledger_path(paths, p)?;
        let key = s.site_keys[p].verifying_key();
        let site = u16::try_from(p).unwrap_or(u16::MAX);
        let sec = crate::report_record::section(&path, &key, site)?;
        check_declared(&path, &sec, r, n)?;
        out.push(RecordRow {
            plant: site,
            dataset: sec.dataset,
            records: sec.records,
            delta: sec.delta,
            epsilon_cap: sec.epsilon_cap,
            epsilon_spent: sec.epsilon_spent,
            q: r.q,
            clip: r.clip,
            noise_multipliers: sec.mechanisms.iter().map(|m| m.1).collect(),
            runs: sec.runs,
            steps: sec.steps,
            ledger_head: sec.head,
        });
    }
    Ok(out)
}

/// The ledger's policy and runs must be the campaign's: N_i as declared, the flags' ε and δ,
/// every run at the flags' q.
fn check_declared(
    path: &Path,
    sec: &crate::report_record::RecordSection,
    r: &RecordOptions,
    n: usize,
) -> Result<(), Failure> {
    let bad = |why: String| Failure::failed(format!("{}: {why}", path.display()));
    if sec.records != n as u64 || sec.max_records != n as u64 || sec.data_versions != 1 {
        return Err(bad(format!(
            "records {} (at most {}, {} data versions) in the ledger, {n} declared in one file",
            sec.records, sec.max_records, sec.data_versions
        )));
    }
    if sec.epsilon_cap != r.epsilon || sec.delta != r.delta {
        return Err(bad("its cap or δ is not the campaign's".into()));
    }
    if sec.mechanisms.iter().any(|m| m.0 != r.q) {
        return Err(bad("a run at another q than the campaign's".into()));
    }
    if sec.runs == 0 {
        return Err(bad("no run was charged".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> RecordFlags {
        RecordFlags {
            record_dp: true,
            record_epsilon: Some(8.0),
            record_delta: 1e-6,
            record_q: 0.05,
            record_clip: 1.0,
        }
    }

    #[test]
    fn record_flags_are_checked_before_anything_runs() {
        assert!(options(&flags(), false).unwrap().is_some());
        let mut f = flags();
        f.record_epsilon = None;
        assert_eq!(options(&f, false).map_err(|e| e.code).unwrap_err(), 2);
        for (q, d, c) in [
            (0.0, 1e-6, 1.0),
            (1.5, 1e-6, 1.0),
            (0.1, 0.0, 1.0),
            (0.1, 1e-6, -1.0),
        ] {
            let f = RecordFlags {
                record_q: q,
                record_delta: d,
                record_clip: c,
                ..flags()
            };
            assert!(options(&f, false).is_err(), "{q} {d} {c}");
        }
        // A plant restarted after a skipped round would calibrate for fewer rounds.
        let e = options(&flags(), true).unwrap_err();
        assert!(e.message.contains("--dropout-rate"), "{}", e.message);
        // --record-epsilon alone is a mistake, not silently ignored.
        let f = RecordFlags {
            record_dp: false,
            ..flags()
        };
        assert!(options(&f, false).is_err());
    }

    fn split_of(sizes: &[usize]) -> Split {
        Split {
            test: Vec::new(),
            plants: sizes
                .iter()
                .map(|&n| amalgam_train::split::PlantRows {
                    train: (0..n).collect(),
                    validation: Vec::new(),
                    held_out: Vec::new(),
                    owned_modes: Vec::new(),
                })
                .collect(),
        }
    }

    /// δ must be at most 1/(10·N_i) at every plant: the plant with the most records decides,
    /// and the refusal names it and its N.
    #[test]
    fn the_largest_plant_bounds_delta_and_is_named() {
        let r = RecordOptions {
            epsilon: 8.0,
            delta: 1e-4,
            q: 0.05,
            clip: 1.0,
        };
        // 1/(10·1000) = 1e-4: exactly at the limit is accepted.
        assert!(check_split(&r, &split_of(&[500, 1000, 800])).is_ok());
        let e = check_split(&r, &split_of(&[500, 1001, 800])).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message.contains("plant 1") && e.message.contains("N = 1001"),
            "{}",
            e.message
        );
        // q·N under one record is refused too.
        let tiny = RecordOptions { delta: 1e-6, ..r };
        assert!(check_split(&tiny, &split_of(&[10])).is_err());
    }

    #[test]
    fn expected_batch_is_q_times_the_declared_count() {
        let r = options(&flags(), false).unwrap().unwrap();
        let paths = Paths {
            work: PathBuf::from("/w"),
        };
        let a = site_args(&r, &paths, 2, 1000);
        let i = a
            .iter()
            .position(|s| s == "--record-expected-batch")
            .unwrap();
        assert_eq!(a[i + 1].parse::<f64>().unwrap(), 50.0);
        let j = a.iter().position(|s| s == "--record-ledgers").unwrap();
        assert_eq!(a[j + 1], "/w/records/site-2");
    }
}
