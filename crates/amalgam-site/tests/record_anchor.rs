//! The record ledger's anchor leaves the plant (record-dp.md §8): it is published in every
//! signed summary, and the site checks its record ledger against the aggregator's copy
//! before each charge, so an operator who restores or deletes both the record ledger and the
//! anchor the site kept in its own state directory is refused all the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use amalgam_dp::ledger::record::{
    RecordLedger, RecordLedgerError, RecordMechanism, RecordPolicy, dataset_id, record_ledger_path,
};
use amalgam_dp::params::{Delta, Epsilon};
use amalgam_dp::sampler::SamplerKind;
use amalgam_site::record::RecordDp;
use amalgam_site::statements::LedgerSummary;
use amalgam_site::{
    AgentError, GlobalModel, Permits, RecordCharge, RoundInfo, RoundOutcome, SyntheticTrainer,
    TrainError, TrainOutput, Trainer, Transport,
};
use common::Fixture;

const Q: f64 = 0.05;
const Z: f64 = 1.2;

/// The synthetic update with exactly the granted record charge.
struct RecordTrainer(SyntheticTrainer);

impl Trainer for RecordTrainer {
    fn train(
        &mut self,
        global: GlobalModel<'_>,
        round: &RoundInfo,
        permits: &Permits,
    ) -> Result<TrainOutput, TrainError> {
        let grant = permits
            .record
            .ok_or_else(|| TrainError::Failed("no record permit".into()))?;
        let mut out = self.0.train(global, round, permits)?;
        out.record_charge = Some(RecordCharge {
            steps: grant.request.steps,
            sample_rate: grant.request.q,
            noise_multiplier: grant.request.noise_multiplier,
            mechanism: grant.request.mechanism,
        });
        Ok(out)
    }
}

fn trainer(i: u16) -> Box<dyn Trainer> {
    let inner = SyntheticTrainer {
        seed: [i as u8; 32],
        norm: 0.8,
    };
    if i == 0 {
        Box::new(RecordTrainer(inner))
    } else {
        Box::new(inner)
    }
}

fn record_policy() -> RecordPolicy {
    RecordPolicy {
        dataset: dataset_id(&amalgam_dp::ledger::record::DatasetName::new("plant-0").unwrap()),
        max_records: 1000,
        epsilon_cap: Epsilon::new(10.0).unwrap(),
        delta: Delta::new(1e-5).unwrap(),
    }
}

fn ledger_path(root: &Path) -> PathBuf {
    let p = record_ledger_path(&root.join("records"), &record_policy().dataset);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    p
}

/// Reopens site 0 from its state directory and enables record DP on the ledger file.
fn reopen_enabled(f: &mut Fixture) -> Result<(), AgentError> {
    f.reopen(0);
    let ledger = RecordLedger::open(&ledger_path(f.root.path()), f.key(0), record_policy())?;
    f.agents[0].as_mut().unwrap().enable_record_dp(RecordDp {
        ledger,
        q: Q,
        noise_multiplier: Z,
        mechanism: RecordMechanism::with_multiplier(1.0, 1e-4, 8, SamplerKind::Fast, Z),
        data: amalgam_dp::ledger::record::data_version(b"plant 0 rows", 1000),
    })
}

/// The sealed file in which the site keeps the record ledger's anchor.
fn kept_anchor_file(dir: &Path) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".anchor.sealed") {
                return Some(p);
            }
        }
    }
    None
}

fn completed(r: &Result<RoundOutcome, AgentError>) -> bool {
    matches!(r, Ok(RoundOutcome::Completed { .. }))
}

/// Two record runs; returns the fixture after round 1 has been backed up (ledger file and
/// kept anchor) and round 2 has been charged.
fn two_runs_with_backup() -> (Fixture, Vec<u8>, Vec<u8>, PathBuf) {
    let mut f = Fixture::new(5, 4);
    reopen_enabled(&mut f).unwrap();
    assert!(completed(
        &f.run_trained(1, |f, i| f.hub.transport(i), trainer)[0]
    ));
    let kept = kept_anchor_file(&f.dir(0)).expect("the site keeps a record anchor");
    let ledger_copy = std::fs::read(ledger_path(f.root.path())).unwrap();
    let kept_copy = std::fs::read(&kept).unwrap();
    assert!(completed(
        &f.run_trained(2, |f, i| f.hub.transport(i), trainer)[0]
    ));
    (f, ledger_copy, kept_copy, kept)
}

/// The published summary carries the record ledger's current anchor.
#[test]
fn the_summary_publishes_the_record_anchor() {
    let (mut f, _, _, _) = two_runs_with_backup();
    let agent = f.agents[0].as_ref().unwrap();
    let ledger = agent.record_ledger().unwrap();
    let key = f.key(0).verifying_key();
    let mut t = f.hub.transport(0);
    let bytes = t.latest_summary().unwrap().unwrap();
    let s = LedgerSummary::verify(&bytes, &key).unwrap();
    let r = s.record.expect("record anchor published");
    assert_eq!(r.dataset, record_policy().dataset);
    assert_eq!(r.ledger_id, ledger.ledger_id());
    assert_eq!(r.entries, ledger.anchor().entries as u64);
    assert_eq!(r.head, ledger.anchor().head);
    assert_eq!(r.epsilon, ledger.spent());
    // A third round still runs: the honest ledger matches its published anchor.
    reopen_enabled(&mut f).unwrap();
    assert!(completed(
        &f.run_trained(3, |f, i| f.hub.transport(i), trainer)[0]
    ));
}

/// Attack (a): restore the record ledger and the kept anchor as they were after round 1.
/// The kept copy agrees with the restored ledger, so only the published anchor can tell.
#[test]
fn restoring_the_record_ledger_and_the_kept_anchor_is_refused() {
    let (mut f, ledger_copy, kept_copy, kept) = two_runs_with_backup();
    let path = ledger_path(f.root.path());
    f.agents[0] = None;
    std::fs::write(&path, &ledger_copy).unwrap();
    std::fs::write(&kept, &kept_copy).unwrap();
    reopen_enabled(&mut f).expect("the local copies agree with each other");
    let before = f.agents[0]
        .as_ref()
        .unwrap()
        .record_ledger()
        .unwrap()
        .spent();
    let out = f.run_trained(3, |f, i| f.hub.transport(i), trainer);
    assert!(
        matches!(
            out[0],
            Err(AgentError::RecordLedger(RecordLedgerError::BehindAnchor(_)))
        ),
        "{:?}",
        out[0]
    );
    let after = f.agents[0]
        .as_ref()
        .unwrap()
        .record_ledger()
        .unwrap()
        .spent();
    assert_eq!(before, after, "nothing charged on the restored ledger");
}

/// Attack (b): delete the record ledger and the kept anchor; a fresh ledger starts at zero.
#[test]
fn deleting_the_record_ledger_and_the_kept_anchor_is_refused() {
    let (mut f, _, _, kept) = two_runs_with_backup();
    f.agents[0] = None;
    std::fs::remove_file(ledger_path(f.root.path())).unwrap();
    std::fs::remove_file(&kept).unwrap();
    reopen_enabled(&mut f).expect("nothing local remembers the old ledger");
    assert_eq!(
        f.agents[0]
            .as_ref()
            .unwrap()
            .record_ledger()
            .unwrap()
            .spent(),
        0.0
    );
    let out = f.run_trained(3, |f, i| f.hub.transport(i), trainer);
    assert!(
        matches!(&out[0], Err(AgentError::RecordRun(m)) if m.contains("published")),
        "{:?}",
        out[0]
    );
}

/// Site 0 enabled on a fresh ledger of another dataset name: the same records under a new
/// `--record-dataset`.
fn reopen_renamed(f: &mut Fixture) -> Result<(), AgentError> {
    f.reopen(0);
    let mut policy = record_policy();
    policy.dataset = dataset_id(&amalgam_dp::ledger::record::DatasetName::new("renamed").unwrap());
    let path = record_ledger_path(&f.root.path().join("records"), &policy.dataset);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let ledger = RecordLedger::open(&path, f.key(0), policy)?;
    f.agents[0].as_mut().unwrap().enable_record_dp(RecordDp {
        ledger,
        q: Q,
        noise_multiplier: Z,
        mechanism: RecordMechanism::with_multiplier(1.0, 1e-4, 8, SamplerKind::Fast, Z),
        data: amalgam_dp::ledger::record::data_version(b"plant 0 rows", 1000),
    })
}

/// Attack (c): keep the old ledger, declare the same records under another dataset name (a
/// fresh ledger, a fresh cap). The kept dataset id refuses it at once; with every kept
/// record file deleted too, the published summaries, which anchor the first dataset, refuse
/// the round before anything is charged.
#[test]
fn declaring_the_same_records_under_another_dataset_name_is_refused() {
    let (mut f, _, _, _) = two_runs_with_backup();
    f.agents[0] = None;
    assert!(
        matches!(reopen_renamed(&mut f), Err(AgentError::RecordRun(m)) if m.contains("charged record dataset")),
    );
    f.agents[0] = None;
    let mut stack = vec![f.dir(0)];
    let mut removed = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if name.starts_with("record-") && name.ends_with(".sealed") {
                std::fs::remove_file(&p).unwrap();
                removed += 1;
            }
        }
    }
    assert_eq!(removed, 2, "the kept anchor and the kept dataset id");
    reopen_renamed(&mut f).expect("nothing local remembers the first dataset");
    let out = f.run_trained(3, |f, i| f.hub.transport(i), trainer);
    assert!(
        matches!(&out[0], Err(AgentError::RecordRun(m)) if m.contains("published summaries anchor record dataset")),
        "{:?}",
        out[0]
    );
    assert_eq!(
        f.agents[0]
            .as_ref()
            .unwrap()
            .record_ledger()
            .unwrap()
            .spent(),
        0.0,
        "nothing charged to the renamed dataset"
    );
}
