//! A site that missed a result follows the aggregator only along the chain it recomputes
//! (site-agent.md §5/§6). The aggregator's best moves against a site behind the chain at a
//! round k >= 1: skip a round id, withhold a published result, or bind the round to a model
//! M* whose served bytes hash to the bound digest but that no chain of published results
//! gives. In each the site declines before its charge; with the published results it
//! catches up and completes the round with everyone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use amalgam_proto::Phase;
use amalgam_site::model::{model_bytes, model_digest};
use amalgam_site::statements::DeclineReason;
use amalgam_site::testing::MemoryTransport;
use amalgam_site::{
    Download, RoundOutcome, RoundResult, SyntheticTrainer, Transport, TransportError,
};
use common::Fixture;

/// The aggregator's face towards one site.
struct Face {
    inner: MemoryTransport,
    /// Rounds whose result is withheld (never published to this site).
    withheld: BTreeSet<u64>,
    /// Rounds the aggregator says have no result (aborted, or never opened).
    no_result: BTreeSet<u64>,
    /// A round bound (for this site) to this model, bytes and digest consistent.
    bind: Option<(u64, Vec<f32>)>,
    /// Declines and summaries are kept here rather than sent to the honest hub (the rounds
    /// this face lies about were never opened there).
    local: bool,
}

impl Face {
    fn honest(inner: MemoryTransport) -> Self {
        Self {
            inner,
            withheld: BTreeSet::new(),
            no_result: BTreeSet::new(),
            bind: None,
            local: false,
        }
    }
}

impl Transport for Face {
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
        if self.local {
            return Ok(());
        }
        self.inner.decline(r, b)
    }
    fn upload_summary(&mut self, r: u64, b: &[u8]) -> Result<(), TransportError> {
        if self.local {
            return Ok(());
        }
        self.inner.upload_summary(r, b)
    }
    fn latest_summary(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        self.inner.latest_summary()
    }
    fn round_model(&mut self, r: u64) -> Result<Option<[u8; 32]>, TransportError> {
        match &self.bind {
            Some((k, m)) if *k == r => Ok(Some(model_digest(m))),
            _ => self.inner.round_model(r),
        }
    }
    fn model(&mut self, r: u64) -> Result<Option<Vec<u8>>, TransportError> {
        match &self.bind {
            Some((k, m)) if *k == r => Ok(Some(model_bytes(m))),
            _ => self.inner.model(r),
        }
    }
    fn result(&mut self, r: u64, w: Duration) -> Result<Option<RoundResult>, TransportError> {
        if self.withheld.contains(&r) {
            std::thread::sleep(w.min(Duration::from_millis(50)));
            return Ok(None);
        }
        if self.no_result.contains(&r) {
            return Err(TransportError::Refused {
                code: "round.closed".into(),
                detail: "round aborted".into(),
            });
        }
        self.inner.result(r, w)
    }
}

/// Runs `round` at site 0 alone over `face`, asserting a decline with no charge and no change
/// to its model.
fn declines(f: &mut Fixture, round: u64, mut face: Face, case: &str) {
    let agent = f.agents[0].as_mut().unwrap();
    let entries = agent.ledger().anchor().entries;
    let before = agent.model().1;
    let mut trainer = SyntheticTrainer {
        seed: [0; 32],
        norm: 0.8,
    };
    let out = agent.run_round(&mut face, &mut trainer, round);
    assert!(
        matches!(
            out,
            Ok(RoundOutcome::Declined(DeclineReason::ModelMismatch))
        ),
        "{case}: {out:?}"
    );
    assert_eq!(agent.ledger().anchor().entries, entries, "{case}: charged");
    assert_eq!(agent.model().1, before, "{case}: model moved");
}

/// A model no chain of published results gives.
fn off_chain(len: usize) -> Vec<f32> {
    (0..len).map(|i| 0.25 - i as f32).collect()
}

#[test]
fn a_site_behind_the_chain_adopts_only_the_model_it_recomputes() {
    let mut f = Fixture::with(5, 4, |_, mut r| {
        r.phase_timeout_ms = 2000;
        r
    });
    let len = f.rules.model_len;
    for o in f.run_plain(0) {
        assert!(matches!(o, Ok(RoundOutcome::Completed { .. })), "{o:?}");
    }
    // Round 1: site 0's result is withheld; the others finish on model_2.
    let out = f.run(1, |f, i| {
        let mut face = Face::honest(f.hub.transport(i));
        if i == 0 {
            face.withheld.insert(1);
        }
        face
    });
    for o in &out[1..] {
        assert!(matches!(o, Ok(RoundOutcome::Completed { .. })), "{o:?}");
    }
    assert!(!matches!(out[0], Ok(RoundOutcome::Completed { .. })));
    let model_2 = model_digest(&f.hub.model());
    assert_ne!(f.agents[0].as_ref().unwrap().model().1, model_2);

    // Withheld result: round 2 bound to the honest model_2 or to an off-chain M*; either
    // way site 0 cannot prove it and declines.
    for (round, m) in [(2, f.hub.model()), (3, off_chain(len))] {
        let mut face = Face::honest(f.hub.transport(0));
        face.withheld.insert(1);
        face.no_result.insert(2);
        face.bind = Some((round, m));
        face.local = true;
        declines(&mut f, round, face, "withheld result");
    }
    // Result published, but the round bound to M* (its bytes hash to the bound digest).
    let mut face = Face::honest(f.hub.transport(0));
    face.no_result.extend([2, 3]);
    face.bind = Some((4, off_chain(len)));
    face.local = true;
    declines(&mut f, 4, face, "off-chain model with the result published");

    // The honest round: site 0 recomputes model_2 from the published result of round 1
    // (rounds 2..4 had none) and completes round 5 with everyone, on the hub's model.
    let out = f.run(5, |f, i| {
        let mut face = Face::honest(f.hub.transport(i));
        face.no_result.extend([2, 3, 4]);
        face
    });
    let model_6 = model_digest(&f.hub.model());
    assert_ne!(model_6, model_2);
    for o in &out {
        match o {
            Ok(RoundOutcome::Completed { model_digest, .. }) => assert_eq!(*model_digest, model_6),
            o => panic!("honest round did not complete: {o:?}"),
        }
    }

    // Skipped id: round 6 never opened, round 7 bound to M*; site 0 keeps model_6, declines.
    let mut face = Face::honest(f.hub.transport(0));
    face.no_result.insert(6);
    face.bind = Some((7, off_chain(len)));
    face.local = true;
    declines(&mut f, 7, face, "skipped round id");
    assert_eq!(f.agents[0].as_ref().unwrap().model().1, model_6);
}
