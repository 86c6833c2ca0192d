//! Record-level DP through the site agent: the record permit is charged to the dataset's
//! ledger before training, the trainer must run exactly the granted run, a full record
//! budget declines the round before either budget is spent, and a restored or replaced
//! record ledger is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use amalgam_dp::ledger::record::{
    RecordLedger, RecordLedgerError, RecordMechanism, RecordPolicy, audit_record_file, dataset_id,
    record_ledger_path,
};
use amalgam_dp::params::{Delta, Epsilon};
use amalgam_dp::record::record_epsilon;
use amalgam_dp::sampler::SamplerKind;
use amalgam_site::record::RecordDp;
use amalgam_site::statements::DeclineReason;
use amalgam_site::{
    AgentError, GlobalModel, Permits, RecordCharge, RoundInfo, RoundOutcome, SyntheticTrainer,
    TrainError, TrainOutput, Trainer,
};
use common::Fixture;

const Q: f64 = 0.05;
const Z: f64 = 1.2;

/// The synthetic update, with the record charge the grant allows (`extra` steps added: a
/// trainer that runs more than its permit).
struct RecordTrainer {
    inner: SyntheticTrainer,
    extra: u32,
}

impl Trainer for RecordTrainer {
    fn train(
        &mut self,
        global: GlobalModel<'_>,
        round: &RoundInfo,
        permits: &Permits,
    ) -> Result<TrainOutput, TrainError> {
        let grant = permits
            .record
            .ok_or_else(|| TrainError::Failed("no record permit before training".into()))?;
        let mut out = self.inner.train(global, round, permits)?;
        out.record_charge = Some(RecordCharge {
            steps: grant.request.steps + self.extra,
            sample_rate: grant.request.q,
            noise_multiplier: grant.request.noise_multiplier,
            mechanism: grant.request.mechanism,
        });
        Ok(out)
    }
}

fn trainer(i: u16, extra: u32) -> Box<dyn Trainer> {
    let inner = SyntheticTrainer {
        seed: [i as u8; 32],
        norm: 0.8,
    };
    if i == 0 {
        Box::new(RecordTrainer { inner, extra })
    } else {
        Box::new(inner)
    }
}

fn record_policy(cap: f64) -> RecordPolicy {
    RecordPolicy {
        dataset: dataset_id(&amalgam_dp::ledger::record::DatasetName::new("plant-0").unwrap()),
        max_records: 1000,
        epsilon_cap: Epsilon::new(cap).unwrap(),
        delta: Delta::new(1e-5).unwrap(),
    }
}

fn ledger_path(root: &Path) -> PathBuf {
    let p = record_ledger_path(&root.join("records"), &record_policy(1.0).dataset);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    p
}

fn one_run() -> f64 {
    record_epsilon(Q, Z, 10, Delta::new(1e-5).unwrap())
        .unwrap()
        .epsilon
}

fn enable(f: &mut Fixture, cap: f64) -> Result<(), AgentError> {
    let path = ledger_path(f.root.path());
    let ledger = RecordLedger::open(&path, f.key(0), record_policy(cap))?;
    f.agents[0].as_mut().unwrap().enable_record_dp(RecordDp {
        ledger,
        q: Q,
        noise_multiplier: Z,
        mechanism: RecordMechanism::with_multiplier(1.0, 1e-4, 8, SamplerKind::Fast, Z),
        data: amalgam_dp::ledger::record::data_version(b"plant 0 rows", 1000),
    })
}

#[test]
fn the_run_is_charged_before_training_and_a_full_record_budget_declines() {
    let mut f = Fixture::new(5, 4);
    // Room for one run of 10 steps, not two.
    let two_runs = record_epsilon(Q, Z, 20, Delta::new(1e-5).unwrap())
        .unwrap()
        .epsilon;
    assert!(two_runs > one_run());
    let cap = (one_run() + two_runs) / 2.0;
    enable(&mut f, cap).unwrap();
    let out = f.run_trained(1, |f, i| f.hub.transport(i), |i| trainer(i, 0));
    assert!(
        matches!(out[0], Ok(RoundOutcome::Completed { .. })),
        "{:?}",
        out[0]
    );
    let spent = f.agents[0]
        .as_ref()
        .unwrap()
        .record_ledger()
        .unwrap()
        .spent();
    assert_eq!(spent, one_run());
    let out = f.run_trained(2, |f, i| f.hub.transport(i), |i| trainer(i, 0));
    assert!(
        matches!(
            out[0],
            Ok(RoundOutcome::Declined(DeclineReason::RecordBudgetExceeded))
        ),
        "{:?}",
        out[0]
    );
    assert!(f.hub.declines(2).contains(&0));
    assert!(
        f.encoded(0, 2).is_none(),
        "no noise drawn for a declined round"
    );
    assert_eq!(f.hub.result(2).unwrap().contributors, vec![1, 2, 3, 4]);
    // Neither budget was spent on round 2.
    let agent = f.agents[0].take().unwrap();
    assert_eq!(agent.record_ledger().unwrap().spent(), spent);
    drop(agent);
    let report = f.audit(0);
    assert_eq!((report.accepted, report.refused), (1, 0));
    let record = audit_record_file(&ledger_path(f.root.path()), None, &[]).unwrap();
    assert!(record.is_clean(), "{:?}", record.findings);
    assert_eq!((record.runs.len(), record.steps), (1, 10));
    assert_eq!(record.epsilon_total, one_run());
}

#[test]
fn a_trainer_that_runs_more_steps_than_its_permit_is_refused() {
    let mut f = Fixture::new(5, 4);
    enable(&mut f, 10.0).unwrap();
    let out = f.run_trained(1, |f, i| f.hub.transport(i), |i| trainer(i, 1));
    assert!(
        matches!(&out[0], Err(AgentError::RecordRun(m)) if m.contains("11 steps")),
        "{:?}",
        out[0]
    );
    assert!(
        f.encoded(0, 1).is_none(),
        "nothing encoded from the refused run"
    );
    // The permit was used up whole: its steps are not refunded.
    let ledger = f.agents[0].as_ref().unwrap().record_ledger().unwrap();
    assert_eq!(ledger.spent(), one_run());
}

#[test]
fn a_plain_trainer_under_record_dp_is_refused() {
    let mut f = Fixture::new(5, 4);
    enable(&mut f, 10.0).unwrap();
    let out = f.run_plain(1);
    assert!(
        matches!(&out[0], Err(AgentError::RecordRun(_))),
        "{:?}",
        out[0]
    );
}

#[test]
fn a_restored_or_replaced_record_ledger_is_refused() {
    let mut f = Fixture::new(5, 4);
    let path = ledger_path(f.root.path());
    enable(&mut f, 10.0).unwrap();
    // The copy an operator might restore: before any run.
    f.reopen(0);
    std::fs::copy(&path, path.with_extension("bak")).unwrap();
    enable(&mut f, 10.0).unwrap();
    let out = f.run_trained(1, |f, i| f.hub.transport(i), |i| trainer(i, 0));
    assert!(matches!(out[0], Ok(RoundOutcome::Completed { .. })));
    f.reopen(0);
    std::fs::copy(path.with_extension("bak"), &path).unwrap();
    assert!(matches!(
        enable(&mut f, 10.0),
        Err(AgentError::RecordLedger(RecordLedgerError::BehindAnchor(_)))
    ));
    // Deleted and started afresh: another ledger of the same dataset.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        enable(&mut f, 10.0),
        Err(AgentError::RecordRun(_))
    ));
}
