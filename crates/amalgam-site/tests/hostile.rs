//! A malicious aggregator's moves against the budget rules and the site's liveness: a result
//! withheld, refused (410) or unreachable after the charge counts against the abort cap and
//! deletes the round's secrets; an excluded site still follows the model chain; round ids
//! above the campaign's last one and rounds bound to no model are refused before any charge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use amalgam_proto::Phase;
use amalgam_site::statements::DeclineReason;
use amalgam_site::testing::MemoryTransport;
use amalgam_site::{AgentError, Download, RoundOutcome, RoundResult, Transport, TransportError};
use common::Fixture;

/// What the aggregator does wrong towards one site.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Runs the round to its end and never publishes the result.
    WithholdResult,
    /// Answers the result with 410 round.closed.
    ClosedResult,
    /// Stops answering downloads and the result (every retry exhausted).
    Unreachable,
    /// Answers the round's model binding with 404.
    NoModel,
    /// Publishes the result with this site left out of the contributors (no model digest
    /// stated, as over HTTPS), shrinking n in the FedAvg step.
    DropSelf(u16),
    /// None.
    Honest,
}

struct Faulty {
    inner: MemoryTransport,
    fault: Fault,
}

fn busy() -> TransportError {
    TransportError::Retry { retry_after: None }
}

impl Transport for Faulty {
    fn upload(&mut self, round: u64, phase: Phase, body: &[u8]) -> Result<(), TransportError> {
        self.inner.upload(round, phase, body)
    }
    fn download(&mut self, r: u64, p: Phase, w: Duration) -> Result<Download, TransportError> {
        if self.fault == Fault::Unreachable && p > Phase::AdvertiseKeys {
            return Err(busy());
        }
        self.inner.download(r, p, w)
    }
    fn mine_latest(&mut self, r: u64) -> Result<Option<Vec<u8>>, TransportError> {
        self.inner.mine_latest(r)
    }
    fn decline(&mut self, r: u64, b: &[u8]) -> Result<(), TransportError> {
        self.inner.decline(r, b)
    }
    fn upload_summary(&mut self, r: u64, b: &[u8]) -> Result<(), TransportError> {
        self.inner.upload_summary(r, b)
    }
    fn latest_summary(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        self.inner.latest_summary()
    }
    fn round_model(&mut self, r: u64) -> Result<Option<[u8; 32]>, TransportError> {
        if self.fault == Fault::NoModel {
            return Ok(None);
        }
        self.inner.round_model(r)
    }
    fn result(&mut self, r: u64, w: Duration) -> Result<Option<RoundResult>, TransportError> {
        match self.fault {
            Fault::WithholdResult => {
                std::thread::sleep(w.min(Duration::from_millis(50)));
                Ok(None)
            }
            Fault::ClosedResult => Err(TransportError::Refused {
                code: "round.closed".into(),
                detail: "round aborted".into(),
            }),
            Fault::Unreachable => Err(busy()),
            Fault::DropSelf(me) => Ok(self.inner.result(r, w)?.map(|mut res| {
                res.contributors.retain(|&s| s != me);
                res.model_digest = None;
                res
            })),
            Fault::NoModel | Fault::Honest => self.inner.result(r, w),
        }
    }
}

/// Five sites with an abort cap of one and a short phase wait.
fn capped() -> Fixture {
    let mut f = Fixture::with(5, 4, |_, mut r| {
        r.max_aborted_rounds = 1;
        r.phase_timeout_ms = 600;
        r
    });
    f.rules.max_aborted_rounds = 1;
    f
}

fn round_dir_exists(f: &Fixture, i: u16, round: u64) -> bool {
    f.dir(i)
        .join("sealed")
        .join(format!("round-{round}"))
        .exists()
}

/// The attack: run each round to Unmasking (the noised sum is learnt), never publish.
/// Every repeat is charged to ε; it must also count towards `max_aborted_rounds`.
#[test]
fn a_withheld_result_counts_against_the_abort_cap_and_deletes_the_round_secrets() {
    let mut f = capped();
    let out = f.run(1, |f, i| Faulty {
        inner: f.hub.transport(i),
        fault: Fault::WithholdResult,
    });
    assert!(
        out.iter().all(|r| matches!(r, Err(AgentError::Timeout(1)))),
        "{out:?}"
    );
    for i in 0..5u16 {
        let agent = f.agents[usize::from(i)].as_ref().unwrap();
        assert_eq!(agent.aborted_rounds(), 1, "site {i}");
        assert!(
            !round_dir_exists(&f, i, 1),
            "site {i} kept round 1's secrets"
        );
    }
    // The count is on disk: reopened, the sites decline the next round without a charge.
    for i in 0..5u16 {
        f.reopen(i);
    }
    let out = f.run_plain(2);
    assert!(
        out.iter().all(|r| matches!(
            r,
            Ok(RoundOutcome::Declined(DeclineReason::AbortCapReached))
        )),
        "{out:?}"
    );
    for i in 0..5u16 {
        assert_eq!(f.audit(i).accepted, 1, "site {i}: only round 1 was charged");
    }
}

#[test]
fn a_410_on_the_result_and_exhausted_retries_count_as_aborts() {
    for fault in [Fault::ClosedResult, Fault::Unreachable] {
        let mut f = capped();
        // Site 0 meets the fault, the others a well-behaved aggregator.
        let out = f.run(1, |f, i| Faulty {
            inner: f.hub.transport(i),
            fault: if i == 0 { fault } else { Fault::Honest },
        });
        assert!(out[0].is_err(), "{fault:?}: {:?}", out[0]);
        let agent = f.agents[0].as_ref().unwrap();
        assert_eq!(agent.aborted_rounds(), 1, "{fault:?}");
        assert!(!round_dir_exists(&f, 0, 1), "{fault:?}: secrets kept");
        let mut t = f.hub.transport(0);
        let mut trainer = amalgam_site::FixedUpdateTrainer {
            update: vec![0.0; common::MODEL_LEN],
        };
        let r = f.agents[0]
            .as_mut()
            .unwrap()
            .run_round(&mut t, &mut trainer, 2);
        assert!(
            matches!(
                r,
                Ok(RoundOutcome::Declined(DeclineReason::AbortCapReached))
            ),
            "{fault:?}: {r:?}"
        );
    }
}

/// Liveness: an excluded (dropped-out) site still fetches the round's result, steps its
/// model, and joins the next round instead of declining it as a model mismatch forever.
#[test]
fn a_site_excluded_in_a_round_participates_in_the_next() {
    let mut f = Fixture::new(5, 4);
    let out = f.run(1, |f, i| {
        let t = f.hub.transport(i);
        if i == 4 {
            t.drop_before(Phase::Unmasking)
        } else {
            t
        }
    });
    assert!(out[4].is_err(), "{:?}", out[4]);
    let result = f.hub.result(1).unwrap();
    let agent = f.agents[4].as_ref().unwrap();
    assert_eq!(Some(agent.model().1), result.model_digest);
    // It holds the published result: the round is not an abort.
    assert_eq!(agent.aborted_rounds(), 0);
    let out = f.run_plain(2);
    assert!(
        out.iter()
            .all(|r| matches!(r, Ok(RoundOutcome::Completed { .. }))),
        "{out:?}"
    );
    assert_eq!(f.hub.result(2).unwrap().contributors, vec![0, 1, 2, 3, 4]);
}

/// The aggregator lists round u64::MAX: refused before anything, and the agent-wide state
/// (record, model) does not live in any round's namespace that a round could delete.
#[test]
fn a_round_above_max_round_is_refused_and_agent_state_is_outside_every_round() {
    let mut f = Fixture::new(5, 4);
    let mut t = f.hub.transport(0);
    let mut trainer = amalgam_site::FixedUpdateTrainer {
        update: vec![0.0; common::MODEL_LEN],
    };
    let agent = f.agents[0].as_mut().unwrap();
    for round in [u64::MAX, 1001] {
        let r = agent.run_round(&mut t, &mut trainer, round);
        assert!(
            matches!(
                r,
                Err(AgentError::RoundOutOfRange {
                    max_round: 1000,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    // Nothing moved: no high-water mark, no charge.
    assert_eq!(agent.last_round().unwrap(), None);
    assert!(
        !f.dir(0)
            .join("sealed")
            .join(format!("round-{}", u64::MAX))
            .exists()
    );
    assert_eq!(f.audit(0).accepted, 0);
    let out = f.run_plain(1);
    assert!(
        out.iter()
            .all(|r| matches!(r, Ok(RoundOutcome::Completed { .. }))),
        "{out:?}"
    );
    // Every round's directory may go; the agent reopens with its model.
    let digest = f.agents[0].as_ref().unwrap().model().1;
    f.agents[0] = None;
    let sealed = f.dir(0).join("sealed");
    if sealed.exists() {
        std::fs::remove_dir_all(&sealed).unwrap();
    }
    f.reopen(0);
    assert_eq!(f.agents[0].as_ref().unwrap().model().1, digest);
}

/// A round whose model binding the aggregator does not state (404) is not joined: the
/// binding check cannot be skipped, and there is no charge.
#[test]
fn a_round_bound_to_no_model_is_refused_before_the_charge() {
    let mut f = Fixture::new(5, 4);
    let mut t = Faulty {
        inner: f.hub.transport(0),
        fault: Fault::NoModel,
    };
    let mut trainer = amalgam_site::FixedUpdateTrainer {
        update: vec![0.0; common::MODEL_LEN],
    };
    let r = f.agents[0]
        .as_mut()
        .unwrap()
        .run_round(&mut t, &mut trainer, 1);
    assert!(matches!(r, Err(AgentError::RoundNotBound(1))), "{r:?}");
    assert_eq!(f.audit(0).accepted, 0);
}

#[test]
fn a_contributor_list_without_this_site_is_refused_and_counts_as_an_abort() {
    let mut f = capped();
    let out = f.run(1, |f, i| Faulty {
        inner: f.hub.transport(i),
        fault: if i == 0 {
            Fault::DropSelf(0)
        } else {
            Fault::Honest
        },
    });
    assert!(
        matches!(out[0], Err(AgentError::BadResult(_))),
        "{:?}",
        out[0]
    );
    let (_, digest) = f.agents[0].as_ref().unwrap().model();
    assert_eq!(
        digest,
        amalgam_site::model::model_digest(&common::initial_model())
    );
    assert_eq!(f.agents[0].as_ref().unwrap().aborted_rounds(), 1);
}
