//! In-memory simulation driver: n sites and an aggregator exchanging *encoded* messages,
//! with any dropout schedule and hooks to tamper with messages (spec §10). Used by the CLI
//! demo, the benches, the tests, the fuzz harness and the test-vector generator.
//!
//! Everything is deterministic in the seed: identities, per-site RNGs (ChaCha20) and, with
//! [`random_inputs`], the inputs.

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::aggregator::{AggregateOutput, Aggregator};
use crate::codec::Encode;
use crate::error::Error;
use crate::messages::ToAggregator;
use crate::params::{Manifest, RoundParams, SiteId};
use crate::phase::Phase;
use crate::roles::{AggregatorStep, Snapshot};
use crate::site::{Outgoing, PhaseTimeout, RoundLog, Site, SiteRestore, SiteSnapshot, Timestamp};

fn derive(seed: &[u8; 32], label: &[u8], i: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"amalgam/v1/sim/");
    h.update(label);
    h.update(seed);
    h.update(i.to_be_bytes());
    h.finalize().into()
}

/// A deterministic consortium: identities and their manifest.
#[derive(Clone)]
pub struct Consortium {
    identities: Vec<SigningKey>,
    manifest: Manifest,
}

impl core::fmt::Debug for Consortium {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Consortium")
            .field("sites", &self.identities.len())
            .finish_non_exhaustive()
    }
}

impl Consortium {
    /// `n` identities derived from `seed`.
    pub fn generate(n: usize, seed: &[u8; 32]) -> Result<Self, Error> {
        let identities: Vec<SigningKey> = (0..n as u64)
            .map(|i| SigningKey::from_bytes(&derive(seed, b"identity", i)))
            .collect();
        let manifest = Manifest::new(identities.iter().map(SigningKey::verifying_key).collect())?;
        Ok(Self {
            identities,
            manifest,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The identity key of `id`.
    pub fn identity(&self, id: SiteId) -> &SigningKey {
        &self.identities[id.index()]
    }
}

/// The 32-byte ChaCha20Rng seed of site `id` in a simulation seeded with `seed`.
pub fn site_seed(seed: &[u8; 32], id: SiteId) -> [u8; 32] {
    derive(seed, b"site-rng", u64::from(id.0))
}

/// Deterministic per-site RNG for `seed`: `ChaCha20Rng::from_seed(site_seed(seed, id))`.
pub fn site_rng(seed: &[u8; 32], id: SiteId) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(site_seed(seed, id))
}

/// Deterministic inputs in [0, 2^b) for every site.
pub fn random_inputs(params: &RoundParams, seed: &[u8; 32]) -> Vec<Vec<u64>> {
    let mut rng = ChaCha20Rng::from_seed(derive(seed, b"inputs", 0));
    let max = params.input_bits().max_value();
    (0..params.n())
        .map(|_| (0..params.d()).map(|_| rng.next_u64() & max).collect())
        .collect()
}

/// Σ `inputs[u]` mod 2^B over `sites`.
pub fn plaintext_sum(params: &RoundParams, inputs: &[Vec<u64>], sites: &[SiteId]) -> Vec<u64> {
    let mask = params.sum_bits().mask();
    let mut sum = vec![0u64; params.d()];
    for s in sites {
        for (acc, x) in sum.iter_mut().zip(&inputs[s.index()]) {
            *acc = acc.wrapping_add(*x) & mask;
        }
    }
    sum
}

/// The phase timeout of simulated sites: one virtual minute (the simulated clock advances one
/// millisecond per phase, so no simulated deadline passes unless a test moves the clock).
pub const SIM_TIMEOUT_MS: u64 = 60_000;

/// The virtual clock reading of phase `phase` (milliseconds: 1 + the phase's code).
pub fn sim_time(phase: Phase) -> Timestamp {
    Timestamp(1 + u64::from(phase.code()))
}

/// A simulated site's phase timeout ([`SIM_TIMEOUT_MS`]).
pub fn sim_timeout() -> PhaseTimeout {
    // SIM_TIMEOUT_MS is inside PhaseTimeout's range.
    #[allow(clippy::expect_used)]
    PhaseTimeout::from_millis(SIM_TIMEOUT_MS).expect("valid timeout")
}

/// Persists `site`'s new state (the snapshot a driver writes to disk), then releases `out`.
/// Returns the upload and the snapshot (whose bytes are wiped on drop).
pub fn persist_and_release(
    site: &Site,
    out: Outgoing,
) -> Result<(ToAggregator, SiteSnapshot), Error> {
    let snap = site.snapshot();
    let upload = out.release(&snap)?;
    Ok((upload, snap))
}

/// A site stops answering from `before` on (it sends nothing for that phase or later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropout {
    /// The site.
    pub site: SiteId,
    /// First phase whose upload it does not send.
    pub before: Phase,
}

/// Direction of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Site → aggregator.
    ToAggregator,
    /// Aggregator → site.
    ToSite,
}

/// One encoded message in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// For uploads, the phase they answer; for downloads, the phase whose uploads they ask for.
    pub phase: Phase,
    /// Direction.
    pub direction: Direction,
    /// The site sending (upload) or receiving (download).
    pub site: SiteId,
    /// The encoded message.
    pub bytes: Vec<u8>,
}

/// What a hook decides about an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver (possibly modified).
    Deliver,
    /// Lose it.
    Drop,
}

/// A hook that may inspect, modify or drop every envelope.
pub type Hook = Box<dyn FnMut(&mut Envelope) -> Verdict>;

/// Configuration of one simulated round.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Parameters.
    pub params: RoundParams,
    /// Round number.
    pub round: u64,
    /// Seed for identities and RNGs.
    pub seed: [u8; 32],
    /// One input vector per site.
    pub inputs: Vec<Vec<u64>>,
    /// Dropout schedule.
    pub dropouts: Vec<Dropout>,
    /// Snapshot and restore every state machine after each phase (persistence test).
    pub snapshot_between_phases: bool,
}

impl SimConfig {
    /// Config with random inputs and no dropouts.
    pub fn new(params: RoundParams, round: u64, seed: [u8; 32]) -> Self {
        let inputs = random_inputs(&params, &seed);
        Self {
            params,
            round,
            seed,
            inputs,
            dropouts: Vec::new(),
            snapshot_between_phases: false,
        }
    }

    /// Adds a dropout.
    pub fn drop_site(mut self, site: u16, before: Phase) -> Self {
        self.dropouts.push(Dropout {
            site: SiteId(site),
            before,
        });
        self
    }

    fn drops_before(&self, site: SiteId, phase: Phase) -> bool {
        self.dropouts
            .iter()
            .any(|d| d.site == site && d.before <= phase)
    }
}

/// What happened in a simulated round.
#[derive(Debug)]
pub struct SimReport {
    /// The aggregator's output or the error that ended the round.
    pub output: Result<AggregateOutput, Error>,
    /// Errors raised by sites (the site then sends nothing more).
    pub site_errors: Vec<(SiteId, Error)>,
    /// Uploads the aggregator rejected, by sending site.
    pub aggregator_errors: Vec<(SiteId, Error)>,
    /// Every envelope, in order, after hooks.
    pub transcript: Vec<Envelope>,
}

impl SimReport {
    /// Whether the output (if any) equals the plaintext sum over its contributors.
    pub fn sum_is_exact(&self, params: &RoundParams, inputs: &[Vec<u64>]) -> bool {
        match &self.output {
            Ok(out) => out.sum == plaintext_sum(params, inputs, &out.contributors),
            Err(_) => true,
        }
    }
}

/// The simulation: a consortium, its sites and the aggregator.
pub struct Simulation {
    config: SimConfig,
    consortium: Consortium,
    sites: Vec<Site>,
    rngs: Vec<ChaCha20Rng>,
    rounds: Vec<RoundLog>,
    failed: Vec<bool>,
    aggregator: Aggregator,
    hook: Option<Hook>,
}

impl core::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Simulation")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Simulation {
    /// Builds the consortium, the sites and the aggregator.
    pub fn new(config: SimConfig) -> Result<Self, Error> {
        let n = config.params.n();
        if config.inputs.len() != n {
            return Err(
                crate::error::Misuse::Other("one input vector per site is required").into(),
            );
        }
        let consortium = Consortium::generate(n, &config.seed)?;
        let mut sites = Vec::with_capacity(n);
        let mut rounds = vec![RoundLog::new(); n];
        for (i, log) in rounds.iter_mut().enumerate() {
            let id = SiteId(i as u16);
            sites.push(Site::new(
                config.params,
                consortium.manifest.clone(),
                config.round,
                consortium.identity(id).clone(),
                sim_timeout(),
                log,
            )?);
        }
        let rngs = (0..n)
            .map(|i| site_rng(&config.seed, SiteId(i as u16)))
            .collect();
        let aggregator = Aggregator::new(config.params, consortium.manifest.clone(), config.round)?;
        Ok(Self {
            config,
            consortium,
            sites,
            rngs,
            rounds,
            failed: vec![false; n],
            aggregator,
            hook: None,
        })
    }

    /// Installs a hook called on every envelope.
    pub fn with_hook(mut self, hook: Hook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The consortium.
    pub fn consortium(&self) -> &Consortium {
        &self.consortium
    }

    /// The aggregator.
    pub fn aggregator_mut(&mut self) -> &mut Aggregator {
        &mut self.aggregator
    }

    /// A site and its RNG.
    pub fn site_mut(&mut self, id: SiteId) -> (&mut Site, &mut ChaCha20Rng) {
        (&mut self.sites[id.index()], &mut self.rngs[id.index()])
    }

    fn pass(&mut self, env: &mut Envelope) -> bool {
        match &mut self.hook {
            Some(h) => h(env) == Verdict::Deliver,
            None => true,
        }
    }

    fn upload(&mut self, report: &mut SimReport, phase: Phase, site: SiteId, bytes: Vec<u8>) {
        let mut env = Envelope {
            phase,
            direction: Direction::ToAggregator,
            site,
            bytes,
        };
        if !self.pass(&mut env) {
            return;
        }
        if let Err(e) = self.aggregator.receive_bytes(site, &env.bytes) {
            report.aggregator_errors.push((site, e));
        }
        report.transcript.push(env);
    }

    fn persist(&mut self, now: Timestamp) -> Result<(), Error> {
        let snap = self.aggregator.snapshot();
        self.aggregator = Aggregator::restore(&snap, &self.consortium.manifest)?;
        for i in 0..self.sites.len() {
            let snap = self.sites[i].snapshot();
            let ctx = SiteRestore {
                identity: self.consortium.identities[i].clone(),
                manifest: self.consortium.manifest.clone(),
            };
            self.sites[i] = Site::restore(snap.bytes(), &ctx, now, &mut self.rounds[i])?;
        }
        Ok(())
    }

    /// Runs the whole round: start, then close each phase with whoever answered.
    pub fn run(mut self) -> SimReport {
        let mut report = SimReport {
            output: Err(crate::error::Misuse::Other("round did not run").into()),
            site_errors: Vec::new(),
            aggregator_errors: Vec::new(),
            transcript: Vec::new(),
        };
        let n = self.sites.len();
        for i in 0..n {
            let id = SiteId(i as u16);
            if self.config.drops_before(id, Phase::AdvertiseKeys) {
                continue;
            }
            let input = self.config.inputs[i].clone();
            let now = sim_time(Phase::AdvertiseKeys);
            let started = self.sites[i]
                .start(input, now, &mut self.rngs[i])
                .and_then(|out| persist_and_release(&self.sites[i], out));
            match started {
                Ok((up, _)) => self.upload(&mut report, Phase::AdvertiseKeys, id, up.to_bytes()),
                Err(e) => {
                    self.failed[i] = true;
                    report.site_errors.push((id, e));
                }
            }
        }
        loop {
            if self.config.snapshot_between_phases
                && let Err(e) = self.persist(sim_time(self.aggregator.phase()))
            {
                report.output = Err(e);
                return report;
            }
            let step = match self.aggregator.close_phase() {
                Ok(s) => s,
                Err(e) => {
                    report.output = Err(e);
                    return report;
                }
            };
            match step {
                AggregatorStep::Finished(out) => {
                    report.output = Ok(out);
                    return report;
                }
                AggregatorStep::Send(list) => {
                    let phase = self.aggregator.phase();
                    for (to, msg) in list {
                        let i = to.index();
                        if self.failed[i] || self.config.drops_before(to, phase) {
                            continue;
                        }
                        let mut env = Envelope {
                            phase,
                            direction: Direction::ToSite,
                            site: to,
                            bytes: msg.to_bytes(),
                        };
                        if !self.pass(&mut env) {
                            continue;
                        }
                        let res = self.sites[i]
                            .handle_bytes(&env.bytes, sim_time(phase))
                            .and_then(|out| persist_and_release(&self.sites[i], out));
                        report.transcript.push(env);
                        match res {
                            Ok((up, _)) => self.upload(&mut report, phase, to, up.to_bytes()),
                            Err(e) => {
                                self.failed[i] = true;
                                report.site_errors.push((to, e));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Convenience: runs one round with `config`.
pub fn run(config: SimConfig) -> Result<SimReport, Error> {
    Ok(Simulation::new(config)?.run())
}
