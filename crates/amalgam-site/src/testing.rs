//! An in-memory aggregator (`amalgam_proto::Aggregator` behind a mutex) and a [`Transport`]
//! to it, so that whole rounds of real site agents run in one process. It closes a phase
//! once every expected site has answered, declined or gone away; tests can force an abort
//! or serve a wrong model. Not a server: no authentication, no persistence.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use amalgam_proto::codec::Encode;
use amalgam_proto::{Aggregator, AggregatorStep, Phase, SiteId};

use crate::model::model_digest;
use crate::rules::ConsortiumRules;
use crate::statements::LedgerSummary;
use crate::transport::{Download, RoundResult, Transport, TransportError};

struct HubRound {
    agg: Aggregator,
    /// The phase being collected.
    open: Phase,
    /// Sites expected to answer the open phase.
    expected: BTreeSet<u16>,
    /// Uploads per (phase, site).
    uploads: BTreeMap<(Phase, u16), Vec<u8>>,
    /// Each site's latest upload.
    latest: BTreeMap<u16, Vec<u8>>,
    /// Downloads per (closed phase, site).
    downloads: BTreeMap<(Phase, u16), Vec<u8>>,
    closed: BTreeSet<Phase>,
    result: Option<Result<RoundResult, ()>>,
}

struct HubState {
    rules: ConsortiumRules,
    model: Vec<f32>,
    rounds: BTreeMap<u64, HubRound>,
    declines: BTreeMap<u64, BTreeSet<u16>>,
    gone: BTreeMap<u64, BTreeSet<u16>>,
    summaries: BTreeMap<u16, Vec<u8>>,
    abort_at: BTreeMap<u64, Phase>,
    wrong_model: bool,
}

/// The shared in-memory aggregator.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<(Mutex<HubState>, Condvar)>,
}

impl core::fmt::Debug for Hub {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Hub")
    }
}

fn refused(code: &str, detail: impl Into<String>) -> TransportError {
    TransportError::Refused {
        code: code.into(),
        detail: detail.into(),
    }
}

impl Hub {
    /// An aggregator for the consortium `rules`, starting from `initial_model`.
    pub fn new(rules: ConsortiumRules, initial_model: Vec<f32>) -> Self {
        Self {
            inner: Arc::new((
                Mutex::new(HubState {
                    rules,
                    model: initial_model,
                    rounds: BTreeMap::new(),
                    declines: BTreeMap::new(),
                    gone: BTreeMap::new(),
                    summaries: BTreeMap::new(),
                    abort_at: BTreeMap::new(),
                    wrong_model: false,
                }),
                Condvar::new(),
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Aborts `round` when `phase` closes.
    pub fn abort_at(&self, round: u64, phase: Phase) {
        self.lock().abort_at.insert(round, phase);
    }

    /// Serves a model digest that is not the FedAvg step of the published sum.
    pub fn serve_wrong_model(&self) {
        self.lock().wrong_model = true;
    }

    /// A transport for site `site`.
    pub fn transport(&self, site: u16) -> MemoryTransport {
        MemoryTransport {
            hub: self.clone(),
            site,
            drop_before: None,
        }
    }

    /// The published result of `round`, if it finished.
    pub fn result(&self, round: u64) -> Option<RoundResult> {
        self.lock()
            .rounds
            .get(&round)
            .and_then(|r| r.result.clone())
            .and_then(Result::ok)
    }

    /// The sites that declined `round`.
    pub fn declines(&self, round: u64) -> BTreeSet<u16> {
        self.lock()
            .declines
            .get(&round)
            .cloned()
            .unwrap_or_default()
    }

    /// The current model (after the last finished round).
    pub fn model(&self) -> Vec<f32> {
        self.lock().model.clone()
    }

    fn notify(&self) {
        self.inner.1.notify_all();
    }
}

impl HubState {
    /// The model digest the hub binds new rounds to (a wrong one once the chain moved past
    /// the initial model, when told to serve a wrong model).
    fn served_digest(&self) -> [u8; 32] {
        let wrong = self.wrong_model
            && self
                .rounds
                .values()
                .any(|r| matches!(r.result, Some(Ok(_))));
        let mut digest = model_digest(&self.model);
        if wrong {
            digest[0] ^= 1;
        }
        digest
    }

    fn round(&mut self, round: u64) -> Result<&mut HubRound, TransportError> {
        if !self.rounds.contains_key(&round) {
            let ctx = self.rules.context_digest(&model_digest(&self.model));
            let agg = Aggregator::with_context_digest(
                self.rules.params,
                self.rules.manifest.clone(),
                ctx,
                round,
            )
            .map_err(|e| refused("round.unknown", e.to_string()))?;
            let expected = (0..self.rules.manifest.len() as u16).collect();
            self.rounds.insert(
                round,
                HubRound {
                    agg,
                    open: Phase::AdvertiseKeys,
                    expected,
                    uploads: BTreeMap::new(),
                    latest: BTreeMap::new(),
                    downloads: BTreeMap::new(),
                    closed: BTreeSet::new(),
                    result: None,
                },
            );
        }
        self.rounds
            .get_mut(&round)
            .ok_or_else(|| refused("round.unknown", "no such round"))
    }

    /// Closes the open phase of `round` while every expected site has answered.
    fn try_close(&mut self, round: u64) -> Result<(), TransportError> {
        let declined = self.declines.get(&round).cloned().unwrap_or_default();
        let gone = self.gone.get(&round).cloned().unwrap_or_default();
        let abort_at = self.abort_at.get(&round).copied();
        let wrong = self.wrong_model;
        let encoding = self.rules.encoding(round);
        let server_lr = self.rules.server_lr;
        let weights = self.rules.weights.clone();
        let model = self.model.clone();
        let r = self.round(round)?;
        if r.result.is_some() {
            return Ok(());
        }
        let waiting = r
            .expected
            .iter()
            .filter(|s| !declined.contains(s) && !gone.contains(s))
            .any(|s| !r.uploads.contains_key(&(r.open, *s)));
        if waiting {
            return Ok(());
        }
        let phase = r.open;
        r.closed.insert(phase);
        if abort_at == Some(phase) {
            r.result = Some(Err(()));
            return Ok(());
        }
        match r.agg.close_phase() {
            Ok(AggregatorStep::Send(list)) => {
                r.expected = list.iter().map(|(to, _)| to.0).collect();
                for (to, msg) in list {
                    r.downloads.insert((phase, to.0), msg.to_bytes());
                }
                r.open = r.agg.phase();
            }
            Ok(AggregatorStep::Finished(out)) => {
                let contributors: Vec<u16> = out.contributors.iter().map(|s| s.0).collect();
                let next = weights
                    .step(encoding, &model, &out.sum, &contributors, server_lr)
                    .ok();
                let Some(next) = next else {
                    r.result = Some(Err(()));
                    return Ok(());
                };
                let mut digest = model_digest(&next);
                if wrong {
                    digest[0] ^= 1;
                }
                r.result = Some(Ok(RoundResult {
                    sum: out.sum,
                    contributors: out.contributors.iter().map(|s| s.0).collect(),
                    model_digest: Some(digest),
                }));
                self.model = next;
            }
            Err(_) => r.result = Some(Err(())),
        }
        Ok(())
    }
}

/// One site's connection to the [`Hub`].
#[derive(Debug)]
pub struct MemoryTransport {
    hub: Hub,
    site: u16,
    drop_before: Option<Phase>,
}

impl MemoryTransport {
    /// The site goes away (sends nothing more, in any round) from `phase` on.
    pub fn drop_before(mut self, phase: Phase) -> Self {
        self.drop_before = Some(phase);
        self
    }
}

impl Transport for MemoryTransport {
    fn upload(&mut self, round: u64, phase: Phase, body: &[u8]) -> Result<(), TransportError> {
        let mut st = self.hub.lock();
        if self.drop_before.is_some_and(|p| phase >= p) {
            st.gone.entry(round).or_default().insert(self.site);
            st.try_close(round)?;
            drop(st);
            self.hub.notify();
            return Err(TransportError::Unreachable("site went away".into()));
        }
        let r = st.round(round)?;
        match r.uploads.get(&(phase, self.site)) {
            Some(prev) if prev.as_slice() == body => return Ok(()),
            Some(_) => {
                return Err(refused(
                    "peer.duplicate",
                    "different message for this phase",
                ));
            }
            None => {}
        }
        if r.open != phase || r.result.is_some() {
            return Err(refused("round.wrong-phase", format!("{phase} is not open")));
        }
        r.agg
            .receive_bytes(SiteId(self.site), body)
            .map_err(|e| refused("protocol.refused", e.to_string()))?;
        r.uploads.insert((phase, self.site), body.to_vec());
        r.latest.insert(self.site, body.to_vec());
        st.try_close(round)?;
        drop(st);
        self.hub.notify();
        Ok(())
    }

    fn download(
        &mut self,
        round: u64,
        phase: Phase,
        wait: Duration,
    ) -> Result<Download, TransportError> {
        let mut st = self.hub.lock();
        let deadline = std::time::Instant::now() + wait;
        loop {
            let r = st.round(round)?;
            if let Some(bytes) = r.downloads.get(&(phase, self.site)) {
                return Ok(Download::Message(bytes.clone()));
            }
            if matches!(r.result, Some(Err(()))) {
                return Ok(Download::Aborted);
            }
            if r.closed.contains(&phase) {
                return Ok(Download::Excluded);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(Download::NotYet { retry_after: None });
            }
            st = self
                .hub
                .inner
                .1
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn mine_latest(&mut self, round: u64) -> Result<Option<Vec<u8>>, TransportError> {
        let st = self.hub.lock();
        Ok(st
            .rounds
            .get(&round)
            .and_then(|r| r.latest.get(&self.site).cloned()))
    }

    fn decline(&mut self, round: u64, body: &[u8]) -> Result<(), TransportError> {
        let mut st = self.hub.lock();
        let key = st
            .rules
            .manifest
            .key(SiteId(self.site))
            .copied()
            .ok_or_else(|| refused("auth.unknown-peer", "not a site"))?;
        let ctx = st.rules.context_digest(&st.served_digest());
        let sig = ed25519_dalek::Signature::from_slice(body)
            .map_err(|_| refused("body.malformed", "a decline is a 64-byte signature"))?;
        key.verify_strict(&amalgam_net::api::decline_message(&ctx, round), &sig)
            .map_err(|_| refused("body.malformed", "decline signature"))?;
        if st
            .round(round)?
            .uploads
            .keys()
            .any(|(_, s)| *s == self.site)
        {
            return Err(refused(
                "round.wrong-phase",
                "declines come before AdvertiseKeys",
            ));
        }
        st.declines.entry(round).or_default().insert(self.site);
        st.try_close(round)?;
        drop(st);
        self.hub.notify();
        Ok(())
    }

    fn upload_summary(&mut self, _round: u64, body: &[u8]) -> Result<(), TransportError> {
        let mut st = self.hub.lock();
        let key = st
            .rules
            .manifest
            .key(SiteId(self.site))
            .copied()
            .ok_or_else(|| refused("auth.unknown-peer", "not a site"))?;
        LedgerSummary::verify(body, &key).map_err(|e| refused("body.malformed", e.to_string()))?;
        st.summaries.insert(self.site, body.to_vec());
        Ok(())
    }

    fn round_model(&mut self, round: u64) -> Result<Option<[u8; 32]>, TransportError> {
        let mut st = self.hub.lock();
        let digest = st.served_digest();
        st.round(round)?;
        Ok(Some(digest))
    }

    fn latest_summary(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        Ok(self.hub.lock().summaries.get(&self.site).cloned())
    }

    fn result(
        &mut self,
        round: u64,
        wait: Duration,
    ) -> Result<Option<RoundResult>, TransportError> {
        let mut st = self.hub.lock();
        let deadline = std::time::Instant::now() + wait;
        loop {
            match st.rounds.get(&round).and_then(|r| r.result.clone()) {
                Some(Ok(res)) => return Ok(Some(res)),
                Some(Err(())) => return Err(refused("round.closed", "round aborted")),
                None => {}
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            st = self
                .hub
                .inner
                .1
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}
