//! Fixtures: a consortium of real site agents, each with its own state directory, against
//! the in-memory aggregator.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use amalgam_dp::ledger::audit::{AuditReport, audit_file};
use amalgam_dp::ledger::{BudgetPolicy, RoundParams as DpRoundParams, ledger_file_name};
use amalgam_dp::params::{
    BitWidth, ClipNorm, Delta, Dimension, Epsilon, Gamma, RoundingBias, Sigma, SiteCount,
};
use amalgam_proto::sim::Consortium;
use amalgam_proto::{RoundParams, SiteId};
use amalgam_site::retry::RetryPolicy;
use amalgam_site::testing::Hub;
use amalgam_site::{
    AgentError, AgentOptions, ConsortiumRules, RoundOutcome, SiteAgent, SyntheticTrainer, Trainer,
    Transport,
};
use ed25519_dalek::SigningKey;

/// Model length (padded to 8 by the DP rotation).
pub const MODEL_LEN: usize = 6;
/// DP bit width = masking input and sum bits.
pub const BITS: u32 = 20;

/// Rules for `n` sites with threshold `t` (modular sums, the most colluders/dropouts t allows).
pub fn rules(n: u16, t: u16, seed: u8) -> (ConsortiumRules, Consortium) {
    let consortium = Consortium::generate(usize::from(n), &[seed; 32]).unwrap();
    let dim = Dimension::new(MODEL_LEN as u64).unwrap();
    let params = RoundParams::modular(n, t, BITS as u8, dim.padded() as u32).unwrap();
    let dp = DpRoundParams {
        min_cohort: SiteCount::new(u32::from(params.min_cohort().get())).unwrap(),
        colluders: params.c() as u32,
        n_cohort: SiteCount::new(u32::from(n)).unwrap(),
        clip: ClipNorm::new(1.0).unwrap(),
        gamma: Gamma::new(1000.0).unwrap(),
        bits: BitWidth::new(BITS).unwrap(),
        local_sigma: Sigma::new(0.5).unwrap(),
        dim,
        beta: RoundingBias::recommended(),
    };
    let rules = ConsortiumRules {
        consortium_digest: consortium.manifest().digest(),
        epoch: 1,
        manifest: consortium.manifest().clone(),
        params,
        dp,
        policy: policy(1e6),
        phase_timeout_ms: 60_000,
        max_round: 1000,
        max_aborted_rounds: 3,
        fallback_allowed: false,
        campaign_digest: [5; 32],
        local_steps: 10,
        server_lr: 1.0,
        weights: amalgam_site::model::AggregationWeights::Uniform,
        model_len: MODEL_LEN,
        initial_weights_digest: Some(amalgam_site::model::model_digest(&initial_model())),
        verified: None,
    };
    (rules, consortium)
}

/// A site-level policy with cap `eps`.
pub fn policy(eps: f64) -> BudgetPolicy {
    BudgetPolicy::site_level(Epsilon::new(eps).unwrap(), Delta::new(1e-6).unwrap()).unwrap()
}

/// Fast retries: the in-memory aggregator answers at once.
pub fn options() -> AgentOptions {
    AgentOptions {
        retry: RetryPolicy {
            base: Duration::from_millis(1),
            max: Duration::from_millis(20),
            attempts: 5,
        },
        poll_wait: Duration::from_millis(200),
    }
}

/// The initial model.
pub fn initial_model() -> Vec<f32> {
    (0..MODEL_LEN).map(|i| i as f32 * 0.25).collect()
}

/// (site, round, encoded update) as each site's observer saw them.
pub type Encoded = std::sync::Arc<std::sync::Mutex<Vec<(u16, u64, Vec<u64>)>>>;

/// n agents with their state directories, the hub, and what each encoded per round.
pub struct Fixture {
    pub rules: ConsortiumRules,
    pub consortium: Consortium,
    pub hub: Hub,
    pub root: tempfile::TempDir,
    pub agents: Vec<Option<SiteAgent>>,
    /// Each site's own rules (a site may keep a stricter cap).
    pub site_rules: Vec<ConsortiumRules>,
    pub encoded: Encoded,
}

impl Fixture {
    pub fn new(n: u16, t: u16) -> Self {
        Self::with(n, t, |_, r| r)
    }

    /// `tweak` may change one site's rules (its own, stricter ε cap).
    pub fn with(n: u16, t: u16, tweak: impl Fn(u16, ConsortiumRules) -> ConsortiumRules) -> Self {
        let (rules, consortium) = rules(n, t, 3);
        let hub = Hub::new(rules.clone(), initial_model());
        let root = tempfile::tempdir().unwrap();
        let encoded = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut f = Self {
            rules,
            consortium,
            hub,
            root,
            agents: Vec::new(),
            site_rules: Vec::new(),
            encoded,
        };
        for i in 0..n {
            let r = tweak(i, f.rules.clone());
            let agent = f.open_with(i, r.clone());
            f.agents.push(Some(agent));
            f.site_rules.push(r);
        }
        f
    }

    pub fn dir(&self, i: u16) -> PathBuf {
        self.root.path().join(format!("site-{i}"))
    }

    pub fn key(&self, i: u16) -> SigningKey {
        self.consortium.identity(SiteId(i)).clone()
    }

    pub fn open_with(&self, i: u16, rules: ConsortiumRules) -> SiteAgent {
        let mut agent = SiteAgent::open(
            &self.dir(i),
            self.key(i),
            rules,
            &initial_model(),
            options(),
        )
        .unwrap();
        let sink = self.encoded.clone();
        agent.set_encoded_observer(Box::new(move |round, values| {
            sink.lock().unwrap().push((i, round, values.to_vec()));
        }));
        agent
    }

    /// Reopens site `i` from its state directory.
    pub fn reopen(&mut self, i: u16) {
        self.agents[usize::from(i)] = None;
        let agent = self.open_with(i, self.site_rules[usize::from(i)].clone());
        self.agents[usize::from(i)] = Some(agent);
    }

    /// Runs `round` at every site concurrently, each over `transport(i)`.
    pub fn run<T: Transport + 'static>(
        &mut self,
        round: u64,
        transport: impl Fn(&Self, u16) -> T,
    ) -> Vec<Result<RoundOutcome, AgentError>> {
        self.run_trained(round, transport, |i| {
            Box::new(SyntheticTrainer {
                seed: [i as u8; 32],
                norm: 0.8,
            })
        })
    }

    /// Runs `round` at every site concurrently, each over `transport(i)` with `trainer(i)`.
    pub fn run_trained<T: Transport + 'static>(
        &mut self,
        round: u64,
        transport: impl Fn(&Self, u16) -> T,
        trainer: impl Fn(u16) -> Box<dyn Trainer>,
    ) -> Vec<Result<RoundOutcome, AgentError>> {
        let mut handles = Vec::new();
        for i in 0..self.agents.len() {
            let mut agent = self.agents[i].take().unwrap();
            let mut t = transport(self, i as u16);
            let mut trainer = trainer(i as u16);
            handles.push(thread::spawn(move || {
                let r = agent.run_round(&mut t, &mut *trainer, round);
                (agent, r)
            }));
        }
        let mut out = Vec::new();
        for (i, h) in handles.into_iter().enumerate() {
            let (agent, r) = h.join().unwrap();
            self.agents[i] = Some(agent);
            out.push(r);
        }
        out
    }

    /// Runs `round` over plain in-memory transports.
    pub fn run_plain(&mut self, round: u64) -> Vec<Result<RoundOutcome, AgentError>> {
        self.run(round, |f, i| f.hub.transport(i))
    }

    /// What site `i` encoded in `round`.
    pub fn encoded(&self, i: u16, round: u64) -> Option<Vec<u64>> {
        self.encoded
            .lock()
            .unwrap()
            .iter()
            .find(|(s, r, _)| *s == i && *r == round)
            .map(|(_, _, v)| v.clone())
    }

    /// Σ of the encoded updates of `sites` in `round`, mod 2^b.
    pub fn plaintext_sum(&self, round: u64, sites: &[u16]) -> Vec<u64> {
        let mask = (1u64 << BITS) - 1;
        let d = self.rules.params.d();
        let mut sum = vec![0u64; d];
        for &s in sites {
            let v = self.encoded(s, round).unwrap();
            for (a, x) in sum.iter_mut().zip(v) {
                *a = (*a + x) & mask;
            }
        }
        sum
    }

    /// Audits site `i`'s ledger (drops the agent first: the ledger is locked while open).
    pub fn audit(&mut self, i: u16) -> AuditReport {
        self.agents[usize::from(i)] = None;
        let path = self.dir(i).join(ledger_file_name(self.rules.policy.unit));
        let report = audit_file(&path, &self.key(i).verifying_key(), &[]).unwrap();
        self.reopen(i);
        report
    }
}
