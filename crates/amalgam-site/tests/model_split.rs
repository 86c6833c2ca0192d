//! The model-inconsistency attack: the aggregator shows one global model to some sites and
//! another to the rest, to run them on different models (and learn how one update reacts to
//! two models). Searched over which sites get the second model (by default one, two and all
//! but one of the five; every non-empty subset under `--ignored`) and when (the digest a round is bound to, or the digest stated with the
//! previous round's result). In every case the sites shown the other model detect it, set
//! their persistent mismatch flag and never complete a round on it; the others stay on the
//! honest chain. With one site lied to, the four others are a threshold and must complete
//! (no abort or timeout accepted). Lies at a round k >= 1 to a site behind the chain are in
//! `catch_up.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use amalgam_proto::Phase;
use amalgam_site::model::{model_bytes, model_digest};
use amalgam_site::statements::DeclineReason;
use amalgam_site::testing::MemoryTransport;
use amalgam_site::{AgentError, Download, RoundOutcome, RoundResult, Transport, TransportError};
use common::Fixture;

/// When the aggregator shows the other model.
#[derive(Clone, Copy, Debug, PartialEq)]
enum When {
    /// Round 0 is bound (for these sites) to another model than the initial weights.
    Bind,
    /// Round 0's result states (to these sites) another model_1 than the sum gives.
    Statement,
}

/// The other model, served consistently (digest and bytes agree).
fn other_model(len: usize) -> Vec<f32> {
    (0..len).map(|i| 0.5 - i as f32).collect()
}

/// The aggregator's face towards one site: honest, or showing the other model.
struct Split {
    inner: MemoryTransport,
    lie: Option<When>,
    len: usize,
}

impl Transport for Split {
    fn upload(&mut self, round: u64, phase: Phase, body: &[u8]) -> Result<(), TransportError> {
        self.inner.upload(round, phase, body)
    }
    fn download(&mut self, r: u64, p: Phase, w: Duration) -> Result<Download, TransportError> {
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
        if self.lie == Some(When::Bind) && r == 0 {
            return Ok(Some(model_digest(&other_model(self.len))));
        }
        self.inner.round_model(r)
    }
    fn model(&mut self, r: u64) -> Result<Option<Vec<u8>>, TransportError> {
        if self.lie == Some(When::Bind) && r == 0 {
            return Ok(Some(model_bytes(&other_model(self.len))));
        }
        self.inner.model(r)
    }
    fn result(&mut self, r: u64, w: Duration) -> Result<Option<RoundResult>, TransportError> {
        let res = self.inner.result(r, w)?;
        if self.lie == Some(When::Statement) && r == 0 {
            return Ok(res.map(|mut res| {
                res.model_digest = Some(model_digest(&other_model(self.len)));
                res
            }));
        }
        Ok(res)
    }
}

/// Sites shown the other model must never complete a round; the rest follow the honest chain.
fn check(
    when: When,
    split: u8,
    f: &Fixture,
    out: &[Result<RoundOutcome, AgentError>],
    lie_round: bool,
) {
    let honest = model_digest(&f.hub.model());
    for (i, o) in out.iter().enumerate() {
        let lied_to = split & (1 << i) != 0;
        let case = format!("{when:?}, split {split:05b}, site {i}, lie round {lie_round}: {o:?}");
        match (lied_to, lie_round, when) {
            // Its decline is signed over the context it was shown, which the honest part of
            // the aggregator refuses; either way the flag is set (checked the next round).
            (true, true, When::Bind) => ensure(
                matches!(
                    o,
                    Ok(RoundOutcome::Declined(DeclineReason::ModelMismatch))
                        | Err(AgentError::Transport(TransportError::Refused { .. }))
                ),
                &case,
            ),
            (true, false, _) => ensure(
                matches!(o, Ok(RoundOutcome::Declined(DeclineReason::ModelMismatch))),
                &case,
            ),
            (true, true, When::Statement) => {
                ensure(matches!(o, Ok(RoundOutcome::ModelMismatch)), &case)
            }
            (false, _, _) => match o {
                Ok(RoundOutcome::Completed { model_digest, .. }) => {
                    ensure(*model_digest == honest, &case)
                }
                // Too few sites were left to finish (a site shown the other model never
                // joins; the in-memory aggregator has no deadline to close without it): the
                // attack cost a round, no more.
                Ok(RoundOutcome::Aborted) | Err(AgentError::Timeout(_)) => ensure(
                    split.count_ones() > 1 || (lie_round && when == When::Bind),
                    &case,
                ),
                _ => ensure(false, &case),
            },
        }
        if !lied_to && let Some(a) = f.agents[i].as_ref() {
            ensure(a.model().1 == honest, &format!("{case}: model"));
        }
    }
}

/// Fails with the case named (printed first: the panic message alone is not always shown).
fn ensure(ok: bool, case: &str) {
    if !ok {
        eprintln!("attack not refused: {case}");
        panic!("attack not refused: {case}");
    }
}

fn attack(when: When, splits: &[u8]) {
    for &split in splits {
        let mut f = Fixture::with(5, 4, |_, mut r| {
            r.phase_timeout_ms = 2000;
            r
        });
        let len = f.rules.model_len;
        let face = move |f: &Fixture, i: u16| Split {
            inner: f.hub.transport(i),
            lie: (split & (1 << i) != 0).then_some(when),
            len,
        };
        let out = f.run(0, face);
        check(when, split, &f, &out, true);
        // The next round, shown honestly to everyone: the flag keeps the lied-to sites out.
        let out = f.run(1, |f, i| Split {
            inner: f.hub.transport(i),
            lie: None,
            len,
        });
        check(when, split, &f, &out, false);
    }
}

/// The representative splits run by default: one site, two sites, all but one shown the
/// other model. The full sweep (31 splits × 2) takes minutes on a loaded machine and runs
/// with `cargo test -- --ignored`.
const SPLITS: [u8; 3] = [0b00001, 0b00011, 0b01111];

#[test]
fn two_bound_models_are_detected_by_every_site_shown_the_other() {
    attack(When::Bind, &SPLITS);
}

#[test]
fn two_stated_next_models_are_detected_by_every_site_shown_the_other() {
    attack(When::Statement, &SPLITS);
}

#[test]
#[ignore = "full sweep over every split, minutes; run with --ignored"]
fn every_split_of_two_bound_models_is_detected() {
    attack(When::Bind, &(1u8..32).collect::<Vec<_>>());
}

#[test]
#[ignore = "full sweep over every split, minutes; run with --ignored"]
fn every_split_of_two_stated_next_models_is_detected() {
    attack(When::Statement, &(1u8..32).collect::<Vec<_>>());
}
