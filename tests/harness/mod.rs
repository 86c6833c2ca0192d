//! Recorded rounds and state rebuilding (see the crate docs).

pub mod fuzz;

use amalgam_proto::aggregator::{AggregateOutput, Aggregator};
use amalgam_proto::codec::Decode;
use amalgam_proto::messages::{ToAggregator, ToSite};
use amalgam_proto::params::SiteId;
use amalgam_proto::phase::Phase;
use amalgam_proto::sim::{self, Consortium, Direction, Envelope, SimConfig};
use amalgam_proto::site::{RoundLog, SiteRestore, SiteSnapshot, Timestamp};
use amalgam_proto::{Error, Site};

/// Phases in protocol order.
pub const PHASES: [Phase; 5] = [
    Phase::AdvertiseKeys,
    Phase::ShareKeys,
    Phase::MaskedInput,
    Phase::ConsistencyCheck,
    Phase::Unmasking,
];

/// One simulated round with its full transcript.
#[derive(Debug)]
pub struct RecordedRound {
    /// The configuration it ran with.
    pub config: SimConfig,
    /// Its consortium (identities derived from the seed).
    pub consortium: Consortium,
    /// Every envelope, in order.
    pub transcript: Vec<Envelope>,
    /// The aggregator's result.
    pub output: Result<AggregateOutput, Error>,
}

impl RecordedRound {
    /// Runs and records `config`.
    pub fn record(config: SimConfig) -> Self {
        #[allow(clippy::expect_used)]
        let consortium =
            Consortium::generate(config.params.n(), &config.seed).expect("valid consortium");
        #[allow(clippy::expect_used)]
        let report = sim::run(config.clone()).expect("valid simulation");
        Self {
            config,
            consortium,
            transcript: report.transcript,
            output: report.output,
        }
    }

    /// Uploads of `phase`, in order.
    pub fn uploads(&self, phase: Phase) -> impl Iterator<Item = &Envelope> {
        self.transcript
            .iter()
            .filter(move |e| e.direction == Direction::ToAggregator && e.phase == phase)
    }

    /// Downloads that open `phase` (sent when the previous phase closed).
    pub fn downloads(&self, phase: Phase) -> impl Iterator<Item = &Envelope> {
        self.transcript
            .iter()
            .filter(move |e| e.direction == Direction::ToSite && e.phase == phase)
    }

    /// A fresh aggregator that has received and closed every phase before `phase` (so it is
    /// collecting `phase`). Rejected uploads are skipped, as in the recording.
    pub fn aggregator_at(&self, phase: Phase) -> Result<Aggregator, Error> {
        let mut agg = Aggregator::new(
            self.config.params,
            self.consortium.manifest().clone(),
            self.config.round,
        )?;
        for p in PHASES.iter().copied().take_while(|p| *p < phase) {
            for env in self.uploads(p) {
                let _ = agg.receive_bytes(env.site, &env.bytes);
            }
            agg.close_phase()?;
        }
        Ok(agg)
    }

    /// A fresh site `id` (same identity and RNG as in the recording) that has started and
    /// handled every download before `phase`: it awaits the download that opens `phase`.
    pub fn site_at(&self, id: SiteId, phase: Phase) -> Result<Site, Error> {
        let mut site = Site::new(
            self.config.params,
            self.consortium.manifest().clone(),
            self.config.round,
            self.consortium.identity(id).clone(),
            sim::sim_timeout(),
            &mut RoundLog::new(),
        )?;
        let mut rng = sim::site_rng(&self.config.seed, id);
        let out = site.start(
            self.config.inputs[id.index()].clone(),
            sim::sim_time(Phase::AdvertiseKeys),
            &mut rng,
        )?;
        sim::persist_and_release(&site, out)?;
        for env in self
            .transcript
            .iter()
            .filter(|e| e.direction == Direction::ToSite && e.site == id && e.phase < phase)
        {
            site.answer_bytes(&env.bytes)?;
        }
        Ok(site)
    }

    /// What restoring a snapshot of site `id` needs.
    pub fn restore_ctx(&self, id: SiteId) -> SiteRestore {
        SiteRestore {
            identity: self.consortium.identity(id).clone(),
            manifest: self.consortium.manifest().clone(),
        }
    }
}

/// The time tests run at: inside every simulated deadline.
pub const NOW: Timestamp = Timestamp(10);

/// Driving a site the way a service does: handle the download, persist the new state, then
/// release the upload.
pub trait Answer {
    /// Handles `msg` at [`NOW`] and returns the released upload.
    fn answer(&mut self, msg: ToSite) -> Result<ToAggregator, Error>;
    /// [`Answer::answer`] on encoded bytes.
    fn answer_bytes(&mut self, bytes: &[u8]) -> Result<ToAggregator, Error>;
    /// The persisted state (what a service writes to disk before sending).
    fn persisted(&self) -> SiteSnapshot;
}

impl Answer for Site {
    fn answer(&mut self, msg: ToSite) -> Result<ToAggregator, Error> {
        let out = self.handle(msg, NOW)?;
        Ok(sim::persist_and_release(self, out)?.0)
    }

    fn answer_bytes(&mut self, bytes: &[u8]) -> Result<ToAggregator, Error> {
        let msg = ToSite::from_bytes(bytes, self.params())
            .map_err(|e| Error::decode(amalgam_proto::Sender::Aggregator, e))?;
        self.answer(msg)
    }

    fn persisted(&self) -> SiteSnapshot {
        self.snapshot()
    }
}
