//! Fallback re-runs over real mutually authenticated HTTPS: an in-process aggregator serving
//! the masking and fallback routes under a co-signed manifest, five site agents each over its
//! own `HttpTransport`, and the committee's four decryptor agents. Masking round 0 is forced to
//! abort after every site's charge (each site's ShareKeys upload is lost and the phase closed);
//! its re-run `FALLBACK_ROUND_BASE + 0` then completes, or is refused. Every party derives the
//! re-run's setup from the manifest and the committee's period certificates, which the
//! members post to the aggregator and the sites fetch from it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amalgam_consortium::fallback::{fallback_setup, issue_certificate, period_of};
use amalgam_consortium::period_key::PeriodCertificate;
use amalgam_consortium::testing::{TestConsortium, consortium};
use amalgam_decryptor::{DecryptorAgent, Member, Patience, SetupFn};
use amalgam_dp::ledger::audit::audit_file;
use amalgam_dp::ledger::ledger_file_name;
use amalgam_he::RoundSetup;
use amalgam_he::decryptor::member_secrets_from_bytes;
use amalgam_net::fallback_api::FALLBACK_ROUND_BASE;
use amalgam_net::tls;
use amalgam_proto::Phase;
use amalgam_server::consortium::ConsortiumView;
use amalgam_server::events::MemoryStore;
use amalgam_server::fallback::http::{FallbackApp, fallback_router};
use amalgam_server::fallback::{CertifiedFallback, FallbackService};
use amalgam_server::http::{App, router};
use amalgam_server::listen::{ListenLimits, serve_tls};
use amalgam_server::{Service, ServiceConfig};
use amalgam_site::fallback::{FallbackPoll, FallbackTransport};
use amalgam_site::http::HttpTransport;
use amalgam_site::model::{model_digest, next_model};
use amalgam_site::retry::RetryPolicy;
use amalgam_site::statements::DeclineReason;
use amalgam_site::transport::{Download, RoundResult};
use amalgam_site::{
    AgentError, AgentOptions, ConsortiumRules, GlobalModel, Permits, RoundInfo, RoundOutcome,
    SiteAgent, SyntheticTrainer, TrainError, TrainOutput, Trainer, Transport, TransportError,
};

const SITES: usize = 5;
const MEMBERS: usize = 4;
const DIM: u64 = 6;
/// The re-run of masking round 0.
const ROUND: u64 = FALLBACK_ROUND_BASE;

/// Encoded updates each site's agent produced, by (site, round).
type Encoded = Arc<Mutex<Vec<(usize, u64, Vec<u64>)>>>;

/// The aggregator, the consortium and everything a party derives from it.
struct Net {
    rt: tokio::runtime::Runtime,
    service: Service,
    fallback: FallbackService,
    fallback_log: MemoryStore,
    base: String,
    tc: TestConsortium,
    rules: ConsortiumRules,
    model: Vec<f32>,
    setups: SetupFn,
    root: tempfile::TempDir,
    encoded: Encoded,
}

/// Box secrets of the committee members (their identity keys are the manifest's).
fn box_seed(j: usize) -> [u8; 32] {
    [0xB0 + j as u8; 32]
}

fn member_seed(tc: &TestConsortium, j: usize) -> [u8; 32] {
    tc.decryptors[j].to_ledger_key().to_bytes()
}

/// Member `j`'s certificate of its box key for the key period of `ROUND`.
fn certificate(tc: &TestConsortium, j: usize, box_secret: [u8; 32]) -> PeriodCertificate {
    let secrets = member_secrets_from_bytes(member_seed(tc, j), box_secret);
    let period = period_of(&tc.verified, ROUND).unwrap();
    issue_certificate(&tc.verified, &secrets, period).unwrap()
}

/// The setup every party derives for a fallback round: `fallback_setup` from the manifest,
/// the members' period certificates and the model round 0 was bound to.
fn setup_fn(tc: &TestConsortium, model: [u8; 32]) -> SetupFn {
    let manifest = tc.verified.clone();
    let certs: Vec<PeriodCertificate> = (0..MEMBERS)
        .map(|j| certificate(tc, j, box_seed(j)))
        .collect();
    Arc::new(move |round| {
        fallback_setup(&manifest, round, &[(0, model)], &certs).map_err(|e| e.to_string())
    })
}

fn config() -> ServiceConfig {
    ServiceConfig {
        phase_seconds: 600,
        restart_grace_seconds: 60,
        workers: 2,
        queue: 64,
        metrics_site_labels: false,
    }
}

/// Starts the aggregator for a consortium with (`decryptors` > 0) or without a committee,
/// masking round 0 open on the initial model; the fallback cohort closes at 5 uploads.
fn start(seed: u64, decryptors: usize) -> Net {
    start_posting(seed, decryptors, decryptors)
}

/// [`start`], with only the first `posted` members posting their certificates.
fn start_posting(seed: u64, decryptors: usize, posted: usize) -> Net {
    amalgam_net::install_crypto_provider();
    let tc = consortium(seed, SITES, decryptors, DIM);
    let model = vec![0.25f32; DIM as usize];
    let mut rules = ConsortiumRules::from_manifest(&tc.verified).unwrap();
    rules.initial_weights_digest = Some(model_digest(&model));
    // A site gives up a result at most this long after its last upload.
    rules.phase_timeout_ms = 60_000;
    let setups: SetupFn = if decryptors > 0 {
        setup_fn(&tc, model_digest(&model))
    } else {
        Arc::new(|_: u64| -> Result<RoundSetup, String> { Err("no committee".into()) })
    };
    let digest = tc.verified.consortium_digest();
    let view: Arc<dyn ConsortiumView> = Arc::new(tc.verified.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .unwrap();
    let fallback_log = MemoryStore::new();
    let (service, fallback, addr) = rt.block_on(async {
        let service = Service::start(view.clone(), Arc::new(MemoryStore::new()), config()).unwrap();
        let fallback = start_fallback(&tc, model_digest(&model), &fallback_log);
        let identity =
            tls::aggregator_identity(&digest, 4_000_000_000, |m| tc.aggregator.sign(m).to_bytes())
                .unwrap();
        let tls_config = tls::server_config(&identity, view.member_keys()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = router(App {
            service: service.clone(),
            insecure: false,
        })
        .merge(fallback_router(FallbackApp {
            service: fallback.clone(),
            consortium: view.clone(),
            insecure: false,
        }));
        tokio::spawn(serve_tls(
            listener,
            tls_config,
            routes,
            ListenLimits::default(),
        ));
        service.open_round(0, model_digest(&model)).await.unwrap();
        (service, fallback, addr)
    });
    let net = Net {
        rt,
        service,
        fallback,
        fallback_log,
        base: format!("https://{addr}"),
        tc,
        rules,
        model,
        setups,
        root: tempfile::tempdir().unwrap(),
        encoded: Arc::new(Mutex::new(Vec::new())),
    };
    // The committee posts its certificates through the aggregator, ahead of the period.
    for j in 0..posted {
        let bytes = certificate(&net.tc, j, box_seed(j)).to_bytes();
        let r = net.post_key(j, &bytes);
        assert_eq!(r.status, 200, "{:?}", r.problem());
    }
    net
}

/// The fallback service over `log` (a restart is a second call on the same log). It derives
/// each round's setup as the sites do, from the manifest, the certificates the members posted
/// and the model masking round 0 was bound to (`model`).
fn start_fallback(tc: &TestConsortium, model: [u8; 32], log: &MemoryStore) -> FallbackService {
    let view: Arc<dyn ConsortiumView> = Arc::new(tc.verified.clone());
    FallbackService::start(
        view,
        Arc::new(CertifiedFallback {
            manifest: tc.verified.clone(),
            bound_model: Box::new(move |r| (r == 0).then_some(model)),
            target: Some(SITES),
        }),
        Arc::new(log.clone()),
        config(),
    )
    .unwrap()
}

fn options() -> AgentOptions {
    AgentOptions {
        retry: RetryPolicy {
            base: Duration::from_millis(5),
            max: Duration::from_millis(200),
            attempts: 20,
        },
        poll_wait: Duration::from_secs(2),
    }
}

fn net_policy() -> amalgam_net::client::RetryPolicy {
    amalgam_net::client::RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(5),
        max: Duration::from_millis(100),
        timeout: Duration::from_secs(30),
        max_body: 1 << 24,
    }
}

fn trainer(i: usize) -> SyntheticTrainer {
    SyntheticTrainer {
        seed: [i as u8; 32],
        norm: 0.5,
    }
}

impl Net {
    fn dir(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("s{i}"))
    }

    fn agent(&self, i: usize, rules: &ConsortiumRules) -> SiteAgent {
        let mut agent = SiteAgent::open(
            &self.dir(i),
            self.tc.sites[i].to_ledger_key(),
            rules.clone(),
            &self.model,
            options(),
        )
        .unwrap();
        let sink = self.encoded.clone();
        agent.set_encoded_observer(Box::new(move |r, v| {
            sink.lock().unwrap().push((i, r, v.to_vec()))
        }));
        agent
    }

    fn transport(&self, i: usize) -> HttpTransport {
        HttpTransport::new(
            &self.base,
            &self.tc.sites[i],
            &self.tc.verified,
            net_policy(),
        )
        .unwrap()
    }

    /// The encoded update site `i` produced for `round` (the last one, if several).
    fn encoded(&self, i: usize, round: u64) -> Vec<u64> {
        self.encoded
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(s, r, _)| *s == i && *r == round)
            .map(|(_, _, v)| v.clone())
            .expect("an encoded update")
    }

    /// Accepted charges in site `i`'s ledger (its agent must be dropped: the file is locked).
    fn charges(&self, i: usize) -> usize {
        let path = self.dir(i).join(ledger_file_name(self.rules.policy.unit));
        let report = audit_file(
            &path,
            &self.tc.sites[i].to_ledger_key().verifying_key(),
            &[],
        )
        .unwrap();
        // Audited without anchors: only `Unanchored` may be reported.
        assert!(
            report
                .findings
                .iter()
                .all(|f| matches!(f, amalgam_dp::ledger::audit::Finding::Unanchored)),
            "{:?}",
            report.findings
        );
        report.accepted
    }

    /// Every site runs masking round 0; each ShareKeys upload is lost, the phase is closed and
    /// the round aborts after every site's charge. Returns the agents.
    fn abort_masking_round(&self, rules: &ConsortiumRules) -> Vec<SiteAgent> {
        let lost = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..SITES)
            .map(|i| {
                let mut agent = self.agent(i, rules);
                let mut t = LoseShareKeys {
                    inner: self.transport(i),
                    lost: lost.clone(),
                };
                std::thread::spawn(move || {
                    let out = agent.run_round(&mut t, &mut trainer(i), 0);
                    (agent, out)
                })
            })
            .collect();
        while lost.load(Ordering::SeqCst) < SITES {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.rt.block_on(self.service.close_phase_now(0)).unwrap();
        handles
            .into_iter()
            .map(|h| {
                let (agent, out) = h.join().unwrap();
                assert_eq!(out.unwrap(), RoundOutcome::Aborted);
                assert_eq!(agent.aborted_rounds(), 1);
                agent
            })
            .collect()
    }

    /// An mTLS client of the member with identity seed `seed`.
    fn client(&self, seed: &[u8; 32]) -> amalgam_net::client::ApiClient {
        let pin = tls::AggregatorPin {
            identity: self.tc.aggregator.verifying_key(),
            consortium_digest: self.tc.verified.consortium_digest(),
        };
        let id = tls::member_identity(&tls::ed25519_pkcs8_from_seed(seed)).unwrap();
        let _g = self.rt.enter();
        amalgam_net::client::ApiClient::new(
            &self.base,
            tls::client_config(&id, pin).unwrap(),
            net_policy(),
        )
        .unwrap()
    }

    /// Member `j` posts certificate bytes (`POST /v1/committee/keys`).
    fn post_key(&self, j: usize, bytes: &[u8]) -> amalgam_net::client::ApiResponse {
        let client = self.client(&member_seed(&self.tc, j));
        self.rt
            .block_on(client.post(amalgam_net::fallback_api::COMMITTEE_KEYS, bytes.to_vec()))
            .unwrap()
    }

    /// The committee: four decryptor agents serving fallback round `ROUND`.
    fn spawn_committee(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let pin = tls::AggregatorPin {
            identity: self.tc.aggregator.verifying_key(),
            consortium_digest: self.tc.verified.consortium_digest(),
        };
        (0..MEMBERS)
            .map(|j| {
                let seed = member_seed(&self.tc, j);
                let db = self.root.path().join(format!("m{j}.db"));
                let member = Member::open(&db, j, seed, box_seed(j)).unwrap();
                let id = tls::member_identity(&tls::ed25519_pkcs8_from_seed(&seed)).unwrap();
                let client = {
                    let _g = self.rt.enter();
                    amalgam_net::client::ApiClient::new(
                        &self.base,
                        tls::client_config(&id, pin.clone()).unwrap(),
                        net_policy(),
                    )
                    .unwrap()
                };
                let mut agent = DecryptorAgent::new(
                    member,
                    client,
                    self.setups.clone(),
                    true,
                    Patience {
                        long_poll: Duration::from_secs(5),
                        poll: Duration::from_millis(50),
                        max_polls: 1200,
                    },
                );
                self.rt.spawn(async move {
                    agent.serve_round(ROUND).await.unwrap();
                })
            })
            .collect()
    }

    /// Opens the re-run of masking round 0 at the aggregator (it checks that round 0 aborted).
    fn open_rerun(&self) -> Result<u64, amalgam_net::Problem> {
        self.rt.block_on(self.fallback.open_rerun(&self.service, 0))
    }

    fn run_fallback(
        &self,
        agent: &mut SiteAgent,
        t: &mut (impl Transport + FallbackTransport),
        i: usize,
    ) -> Result<RoundOutcome, AgentError> {
        agent.run_fallback_round(t, &mut trainer(i), ROUND)
    }

    /// The exact sum of the sites' encoded updates of `round`.
    fn plain_sum(&self, round: u64) -> Vec<u64> {
        let mut sum = vec![0u64; self.rules.params.d()];
        for i in 0..SITES {
            for (a, x) in sum.iter_mut().zip(self.encoded(i, round)) {
                *a += x;
            }
        }
        sum
    }

    fn published(&self) -> amalgam_net::fallback_api::FallbackResult {
        self.rt
            .block_on(self.fallback.result(ROUND, Duration::from_secs(1)))
            .unwrap()
            .expect("a published result")
    }

    /// What the aggregator holds from site `i` in `ROUND` (its digest).
    fn held(&self, i: usize) -> Option<[u8; 32]> {
        self.transport(i).fallback_mine(ROUND).unwrap()
    }
}

/// Every `Transport` method but `upload`, passed on to `self.inner` unchanged: the test
/// transports below differ only in what they do to uploads.
macro_rules! forward_to_inner {
    () => {
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
            self.inner.round_model(r)
        }
        fn result(&mut self, r: u64, w: Duration) -> Result<Option<RoundResult>, TransportError> {
            self.inner.result(r, w)
        }
    };
}

/// Loses every ShareKeys upload (the aggregator never sees it) and counts them.
struct LoseShareKeys {
    inner: HttpTransport,
    lost: Arc<AtomicUsize>,
}

impl Transport for LoseShareKeys {
    fn upload(&mut self, round: u64, phase: Phase, body: &[u8]) -> Result<(), TransportError> {
        if phase == Phase::ShareKeys {
            self.lost.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        self.inner.upload(round, phase, body)
    }
    forward_to_inner!();
}

/// Where a [`Crashing`] transport kills the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashAt {
    /// The sealed round is on disk, the upload has not left.
    AfterPersist,
    /// The aggregator accepted the upload, the answer is lost.
    AfterSend,
    /// Never: records what is sent.
    Never,
}

/// Records every fallback upload attempted; "crashes" (a panic unwinds out of the agent, so
/// no epilogue runs: what a kill leaves on disk) at its point.
struct Crashing {
    inner: HttpTransport,
    at: CrashAt,
    sent: Vec<Vec<u8>>,
}

impl Transport for Crashing {
    fn upload(&mut self, round: u64, phase: Phase, body: &[u8]) -> Result<(), TransportError> {
        self.inner.upload(round, phase, body)
    }
    forward_to_inner!();
}

impl FallbackTransport for Crashing {
    fn committee_keys(&mut self, period: u64) -> Result<Vec<Vec<u8>>, TransportError> {
        self.inner.committee_keys(period)
    }
    fn fallback_upload(&mut self, round: u64, body: &[u8]) -> Result<(), TransportError> {
        self.sent.push(body.to_vec());
        if self.at == CrashAt::AfterPersist {
            panic!("simulated crash after persist");
        }
        self.inner.fallback_upload(round, body)?;
        if self.at == CrashAt::AfterSend {
            panic!("simulated crash after send");
        }
        Ok(())
    }
    fn fallback_mine(&mut self, round: u64) -> Result<Option<[u8; 32]>, TransportError> {
        self.inner.fallback_mine(round)
    }
    fn fallback_result(
        &mut self,
        round: u64,
        wait: Duration,
    ) -> Result<FallbackPoll, TransportError> {
        self.inner.fallback_result(round, wait)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Runs the fallback round at every site (site `i` crashing at `crash[i]` once, then
/// restarted on its state directory) with the committee; returns each site's outcome and the
/// upload bytes each attempt sent.
fn complete_fallback(
    net: &Net,
    agents: Vec<SiteAgent>,
    crash: [CrashAt; SITES],
) -> Vec<(RoundOutcome, Vec<Vec<u8>>)> {
    let committee = net.spawn_committee();
    let outs = std::thread::scope(|s| {
        let handles: Vec<_> = agents
            .into_iter()
            .enumerate()
            .map(|(i, mut agent)| {
                s.spawn(move || {
                    let mut t = Crashing {
                        inner: net.transport(i),
                        at: crash[i],
                        sent: Vec::new(),
                    };
                    if crash[i] != CrashAt::Never {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            net.run_fallback(&mut agent, &mut t, i)
                        }));
                        assert!(r.is_err(), "no crash");
                        drop(agent);
                        agent = net.agent(i, &net.rules);
                        assert_eq!(agent.unfinished_fallback_round().unwrap(), Some(ROUND));
                        t.at = CrashAt::Never;
                    }
                    let out = net.run_fallback(&mut agent, &mut t, i).unwrap();
                    assert_eq!(agent.unfinished_fallback_round().unwrap(), None);
                    (out, t.sent)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    for c in committee {
        net.rt.block_on(c).unwrap();
    }
    outs
}

/// The digest of the next model every site must have computed from `sum` with FedAvg
/// divisor `divisor` (the cohort size under uniform weights).
fn expected_next(net: &Net, sum: &[u64], divisor: f64) -> [u8; 32] {
    let mask = (1u64 << net.rules.dp.bits.get()) - 1;
    let reduced: Vec<u64> = sum.iter().map(|v| v & mask).collect();
    let next = next_model(
        net.rules.encoding(ROUND),
        &net.model,
        &reduced,
        divisor,
        net.rules.server_lr,
    )
    .unwrap();
    model_digest(&next)
}

#[test]
fn an_aborted_masking_round_completes_through_the_fallback_with_a_second_charge() {
    let net = start(31, MEMBERS);
    let agents = net.abort_masking_round(&net.rules);
    net.open_rerun().unwrap();
    // A copy of site 2's state from before its fallback charge, restored at the end.
    let old = net.root.path().join("s2-old");
    copy_dir(&net.dir(2), &old);
    let outs = complete_fallback(&net, agents, [CrashAt::Never; SITES]);

    let res = net.published();
    assert_eq!(res.contributors, vec![0, 1, 2, 3, 4]);
    assert_eq!(res.sum, net.plain_sum(ROUND));
    let next = expected_next(&net, &res.sum, SITES as f64);
    for (i, (out, sent)) in outs.iter().enumerate() {
        assert_eq!(
            out,
            &RoundOutcome::FallbackCompleted {
                contributors: vec![0, 1, 2, 3, 4],
                model_digest: next,
            }
        );
        assert_eq!(sent.len(), 1);
        // Fresh noise: the re-run's update is not the aborted round's.
        assert_ne!(net.encoded(i, ROUND), net.encoded(i, 0), "site {i}");
        // The masking round and its re-run: one charge each.
        assert_eq!(net.charges(i), 2, "site {i}");
        assert_eq!(net.held(i), Some(sha(&sent[0])));
    }

    // The model chain continues from the fallback result.
    let agent = net.agent(0, &net.rules);
    assert_eq!(agent.model().1, next);
    assert_eq!(agent.aborted_rounds(), 1);
    drop(agent);

    // Site 2 restored from the older copy: the aggregator holds its upload, local state does
    // not know it, so the round is refused before any charge and the mark moves past it.
    std::fs::remove_dir_all(net.dir(2)).unwrap();
    std::fs::rename(&old, net.dir(2)).unwrap();
    let mut agent = net.agent(2, &net.rules);
    let mut t = net.transport(2);
    let r = net.run_fallback(&mut agent, &mut t, 2);
    assert!(
        matches!(r, Err(AgentError::RolledBack { round: ROUND })),
        "{r:?}"
    );
    assert_eq!(agent.last_fallback_round().unwrap(), Some(ROUND));
    let r = net.run_fallback(&mut agent, &mut t, 2);
    assert!(matches!(r, Err(AgentError::RolledBack { .. })), "{r:?}");
    drop(agent);
    assert_eq!(net.charges(2), 1);
    net.rt.block_on(net.service.shutdown());
}

#[test]
fn a_site_killed_after_persist_or_after_send_resends_identical_bytes_charged_once() {
    let net = start(32, MEMBERS);
    let agents = net.abort_masking_round(&net.rules);
    net.open_rerun().unwrap();
    let crash = [
        CrashAt::AfterPersist,
        CrashAt::AfterSend,
        CrashAt::Never,
        CrashAt::Never,
        CrashAt::Never,
    ];
    let outs = complete_fallback(&net, agents, crash);
    let res = net.published();
    assert_eq!(res.sum, net.plain_sum(ROUND));
    for (i, (out, sent)) in outs.iter().enumerate() {
        assert!(
            matches!(out, RoundOutcome::FallbackCompleted { .. }),
            "{out:?}"
        );
        // One encoded update (one noise draw) per site for the re-run.
        let draws = net
            .encoded
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, r, _)| *s == i && *r == ROUND)
            .count();
        assert_eq!(draws, 1, "site {i}");
        if crash[i] == CrashAt::Never {
            assert_eq!(sent.len(), 1);
        } else {
            assert_eq!(sent.len(), 2, "site {i}");
            assert_eq!(sent[0], sent[1], "site {i} re-sent other bytes");
        }
        assert_eq!(net.held(i), Some(sha(&sent[0])));
        assert_eq!(net.charges(i), 2, "site {i}");
    }
    net.rt.block_on(net.service.shutdown());
}

/// Dies while training, after the charge and before anything is sealed.
struct KilledWhileTraining;

impl Trainer for KilledWhileTraining {
    fn train(
        &mut self,
        _: GlobalModel<'_>,
        _: &RoundInfo,
        _: &Permits,
    ) -> Result<TrainOutput, TrainError> {
        panic!("killed while training")
    }
}

#[test]
fn a_crash_between_the_charge_and_the_seal_counts_against_the_abort_cap() {
    let net = start(35, MEMBERS);
    let mut agents = net.abort_masking_round(&net.rules);
    net.open_rerun().unwrap();
    let mut agent = agents.swap_remove(0);
    assert_eq!(agent.aborted_rounds(), 1);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        agent.run_fallback_round(&mut net.transport(0), &mut KilledWhileTraining, ROUND)
    }));
    assert!(r.is_err(), "no crash");
    drop(agent);
    // Charged twice (masking round 0 and the re-run), nothing sealed or sent.
    assert_eq!(net.charges(0), 2);
    assert_eq!(net.held(0), None);
    let mut agent = net.agent(0, &net.rules);
    assert_eq!(agent.unfinished_fallback_round().unwrap(), None);
    // The charged attempt is counted: two aborted rounds, though none concluded.
    assert_eq!(agent.aborted_rounds(), 2);
    // The restarted site cannot run the same id again, and no third charge is taken.
    let r = net.run_fallback(&mut agent, &mut net.transport(0), 0);
    assert!(matches!(r, Err(AgentError::RoundReused { .. })), "{r:?}");
    assert_eq!(agent.aborted_rounds(), 2);
    drop(agent);
    assert_eq!(net.charges(0), 2);
    net.rt.block_on(net.service.shutdown());
}

#[test]
fn a_policy_without_the_fallback_refuses_it_at_the_site_and_the_aggregator() {
    let net = start(33, 0);
    assert!(!net.rules.fallback_allowed);
    let agents = net.abort_masking_round(&net.rules);
    // The aggregator does not open the re-run either.
    let e = net.open_rerun().unwrap_err();
    assert_eq!(e.code, amalgam_net::ProblemCode::BadRequest, "{e:?}");
    assert!(e.detail.contains("forbids"), "{e:?}");
    for (i, mut agent) in agents.into_iter().enumerate() {
        let mut t = net.transport(i);
        let r = net.run_fallback(&mut agent, &mut t, i);
        assert!(
            matches!(r, Err(AgentError::FallbackForbidden(ROUND))),
            "{r:?}"
        );
        assert_eq!(agent.last_fallback_round().unwrap(), None);
        drop(agent);
        assert_eq!(net.charges(i), 1, "site {i}");
    }
    net.rt.block_on(net.service.shutdown());
}

#[test]
fn the_abort_cap_refuses_the_rerun_before_any_charge() {
    let net = start(34, MEMBERS);
    let mut rules = net.rules.clone();
    rules.max_aborted_rounds = 1;
    let agents = net.abort_masking_round(&rules);
    net.open_rerun().unwrap();
    for (i, mut agent) in agents.into_iter().enumerate() {
        let mut t = net.transport(i);
        let r = net.run_fallback(&mut agent, &mut t, i);
        assert_eq!(
            r.unwrap(),
            RoundOutcome::Declined(DeclineReason::AbortCapReached)
        );
        assert_eq!(agent.last_fallback_round().unwrap(), None);
        drop(agent);
        assert_eq!(net.charges(i), 1, "site {i}");
        assert_eq!(net.held(i), None);
    }
    // A masking round id is not a fallback round, whatever the policy.
    let mut agent = net.agent(0, &net.rules);
    // The re-run of a round whose model this site does not hold (it holds round 1's) is
    // refused before the setup is even derived, and nothing is charged.
    let r = agent.run_fallback_round(&mut net.transport(0), &mut trainer(0), ROUND + 2);
    assert!(
        matches!(&r, Err(AgentError::FallbackSetup { round, .. }) if *round == ROUND + 2),
        "{r:?}"
    );
    assert_eq!(agent.last_fallback_round().unwrap(), None);
    let r = agent.run_fallback_round(&mut net.transport(0), &mut trainer(0), 1);
    assert!(matches!(r, Err(AgentError::WrongScheme(1))), "{r:?}");
    net.rt.block_on(net.service.shutdown());
}

fn sha(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

/// Every `FallbackTransport` method but `committee_keys`, `fallback_mine` and
/// `fallback_result`, passed on to `self.inner` unchanged.
macro_rules! forward_upload_to_inner {
    () => {
        fn fallback_upload(&mut self, r: u64, b: &[u8]) -> Result<(), TransportError> {
            self.inner.fallback_upload(r, b)
        }
    };
}

/// A lying aggregator: it hides the site's accepted fallback upload from the rollback check
/// (`fallback/mine` answers "none"), and may relay other committee certificates.
struct Lying {
    inner: HttpTransport,
    hide_mine: bool,
    /// Replaces the relayed certificates, if set.
    keys: Option<Vec<Vec<u8>>>,
    /// Loses every result poll (the aggregator unreachable), if set.
    lose_results: bool,
}

impl Lying {
    fn new(inner: HttpTransport) -> Self {
        Self {
            inner,
            hide_mine: false,
            keys: None,
            lose_results: false,
        }
    }
}

impl Transport for Lying {
    fn upload(&mut self, round: u64, phase: Phase, body: &[u8]) -> Result<(), TransportError> {
        self.inner.upload(round, phase, body)
    }
    forward_to_inner!();
}

impl FallbackTransport for Lying {
    fn committee_keys(&mut self, period: u64) -> Result<Vec<Vec<u8>>, TransportError> {
        match &self.keys {
            Some(k) => Ok(k.clone()),
            None => self.inner.committee_keys(period),
        }
    }
    fn fallback_mine(&mut self, round: u64) -> Result<Option<[u8; 32]>, TransportError> {
        if self.hide_mine {
            return Ok(None);
        }
        self.inner.fallback_mine(round)
    }
    fn fallback_result(
        &mut self,
        round: u64,
        wait: Duration,
    ) -> Result<FallbackPoll, TransportError> {
        if self.lose_results {
            return Err(TransportError::Unreachable("connection reset".into()));
        }
        self.inner.fallback_result(round, wait)
    }
    forward_upload_to_inner!();
}

#[test]
fn a_site_restored_from_before_its_fallback_charge_is_refused_though_its_upload_is_hidden() {
    let net = start(36, MEMBERS);
    let agents = net.abort_masking_round(&net.rules);
    net.open_rerun().unwrap();
    let old = net.root.path().join("s2-old");
    copy_dir(&net.dir(2), &old);
    let outs = complete_fallback(&net, agents, [CrashAt::Never; SITES]);
    assert!(
        outs.iter()
            .all(|(o, _)| matches!(o, RoundOutcome::FallbackCompleted { .. }))
    );
    // Every site uploaded its signed summary of the fallback round: its latest anchor now.
    for i in 0..SITES {
        let bytes = net.transport(i).latest_summary().unwrap().unwrap();
        let s = amalgam_site::statements::LedgerSummary::verify(
            &bytes,
            &net.tc.sites[i].verifying_key(),
        )
        .unwrap();
        assert_eq!((s.round, s.site), (ROUND, i as u16));
    }
    // Site 2 restored from before its fallback charge; the aggregator hides the upload it
    // holds, so the rollback check sees nothing. The summary anchor still shows the ledger
    // behind: refused before any charge, and the fallback mark moves past the round.
    std::fs::remove_dir_all(net.dir(2)).unwrap();
    std::fs::rename(&old, net.dir(2)).unwrap();
    let mut agent = net.agent(2, &net.rules);
    let mut t = Lying::new(net.transport(2));
    t.hide_mine = true;
    let r = net.run_fallback(&mut agent, &mut t, 2);
    assert!(matches!(r, Err(AgentError::LedgerBehind(_))), "{r:?}");
    assert_eq!(agent.last_fallback_round().unwrap(), Some(ROUND));
    // The masking mark did not move to a fallback id: masking rounds stay open to the site.
    drop(agent);
    assert_eq!(net.charges(2), 1);
    net.rt.block_on(net.service.shutdown());
}

#[test]
fn committee_certificates_the_aggregator_relays_are_checked_by_the_site_before_any_charge() {
    let net = start(37, MEMBERS);
    let mut agents = net.abort_masking_round(&net.rules);
    net.open_rerun().unwrap();
    let honest: Vec<Vec<u8>> = (0..MEMBERS)
        .map(|j| certificate(&net.tc, j, box_seed(j)).to_bytes())
        .collect();
    // The aggregator's own box key in member 0's certificate (it cannot sign for member 0).
    let mut own_key = honest.clone();
    let mut forged = certificate(&net.tc, 0, box_seed(0));
    forged.box_key = certificate(&net.tc, 1, [0xEE; 32]).box_key;
    own_key[0] = forged.to_bytes();
    let mut missing = honest.clone();
    missing.pop();
    let mut duplicate = honest.clone();
    duplicate[3] = honest[2].clone();
    let mut extra = honest.clone();
    extra.push(honest[0].clone());
    let garbage = vec![vec![0u8; amalgam_consortium::period_key::ENCODED_LEN]];
    let mut agent = agents.swap_remove(0);
    for (what, keys) in [
        ("own key", own_key),
        ("missing", missing),
        ("duplicate", duplicate),
        ("extra", extra),
        ("garbage", garbage),
    ] {
        let mut t = Lying::new(net.transport(0));
        t.keys = Some(keys);
        let r = net.run_fallback(&mut agent, &mut t, 0);
        assert!(
            matches!(&r, Err(AgentError::FallbackSetup { round: ROUND, .. })),
            "{what}: {r:?}"
        );
        assert_eq!(agent.last_fallback_round().unwrap(), None, "{what}");
    }
    assert_eq!(agent.aborted_rounds(), 1);
    drop(agent);
    assert_eq!(net.charges(0), 1);
    assert_eq!(net.held(0), None);
    net.rt.block_on(net.service.shutdown());
}

#[test]
fn committee_keys_are_verified_stored_before_the_answer_and_replayed() {
    let net = start(38, MEMBERS);
    let period = period_of(&net.tc.verified, ROUND).unwrap();
    let honest: Vec<Vec<u8>> = (0..MEMBERS)
        .map(|j| certificate(&net.tc, j, box_seed(j)).to_bytes())
        .collect();
    let code = |r: &amalgam_net::client::ApiResponse| r.problem().map(|p| p.code.as_str());
    // An identical re-post: 200 with the same answer, nothing new stored.
    let events = net.fallback_log.events().len();
    let first = net.post_key(1, &honest[1]);
    let again = net.post_key(1, &honest[1]);
    assert_eq!(first.status, 200, "{:?}", first.problem());
    assert_eq!(again.status, 200);
    assert_eq!(first.body, again.body);
    assert_eq!(net.fallback_log.events().len(), events);
    // A second box key for (member 0, the period): 409, the stored one stays.
    let other = certificate(&net.tc, 0, [0xEE; 32]).to_bytes();
    let r = net.post_key(0, &other);
    assert_eq!(r.status, 409);
    assert_eq!(code(&r), Some("committee.key-conflict"));
    // The member's own client reports it as a key conflict, and reads the period back.
    let member = net.client(&member_seed(&net.tc, 0));
    let e = net
        .rt
        .block_on(amalgam_decryptor::keys::post_certificate(&member, &other))
        .unwrap_err();
    assert!(
        matches!(e, amalgam_decryptor::DecryptorError::KeyConflict(_)),
        "{e:?}"
    );
    net.rt
        .block_on(amalgam_decryptor::keys::post_certificate(
            &member, &honest[0],
        ))
        .unwrap();
    let fetched = net
        .rt
        .block_on(amalgam_decryptor::keys::fetch_certificates(&member, period))
        .unwrap();
    assert_eq!(fetched, honest);
    // Another member's certificate, a forged signature, a wrong consortium, garbage: 422.
    let mut bad_sig = honest[2].clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    let mut wrong_consortium = honest[2].clone();
    wrong_consortium[5] ^= 1;
    for (j, body) in [
        (1, honest[2].clone()),
        (2, bad_sig),
        (2, wrong_consortium),
        (2, vec![7u8; amalgam_consortium::period_key::ENCODED_LEN]),
        (2, Vec::new()),
    ] {
        let r = net.post_key(j, &body);
        assert_eq!(r.status, 422, "{:?}", r.problem());
        assert_eq!(code(&r), Some("committee.key-invalid"));
    }
    // A period after the campaign's last one serves no round: refused, so one decryptor
    // cannot fill the log and memory with certificates for ever later periods.
    let last = amalgam_server::fallback::keys::last_period(&net.tc.verified).unwrap();
    let secrets = member_secrets_from_bytes(member_seed(&net.tc, 2), box_seed(2));
    for p in [last + 1, u64::MAX / 2] {
        let future = issue_certificate(&net.tc.verified, &secrets, p).unwrap();
        let r = net.post_key(2, &future.to_bytes());
        assert_eq!(r.status, 422, "period {p}: {:?}", r.problem());
        assert_eq!(code(&r), Some("committee.key-invalid"));
    }
    // Oversized: 413 before anything is read into memory past the bound.
    let r = net.post_key(2, &vec![0u8; 4096]);
    assert_eq!(r.status, 413, "{:?}", r.problem());
    // A site may not post one.
    let site = net.client(&net.tc.sites[0].to_ledger_key().to_bytes());
    let r = net
        .rt
        .block_on(site.post(amalgam_net::fallback_api::COMMITTEE_KEYS, honest[0].clone()))
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(net.fallback_log.events().len(), events);
    // Every member's certificate of the period, in member order; none of another period.
    let fetched = net.transport(3).committee_keys(period).unwrap();
    assert_eq!(fetched, honest);
    assert!(
        net.transport(3)
            .committee_keys(period + 1)
            .unwrap()
            .is_empty()
    );
    // A restart replays them from the log.
    let restarted = {
        let _g = net.rt.enter();
        start_fallback(&net.tc, model_digest(&net.model), &net.fallback_log)
    };
    let framed = net.rt.block_on(restarted.committee_keys(period)).unwrap();
    assert_eq!(framed, amalgam_net::fallback_api::encode_frames(&honest));
    net.rt.block_on(net.service.shutdown());
}

#[test]
fn a_late_result_is_picked_up_by_a_restarted_site_from_its_kept_sealed_round() {
    let net = start(39, MEMBERS);
    let agents = net.abort_masking_round(&net.rules);
    net.open_rerun().unwrap();
    // Every site uploads, then loses the aggregator before the result: the round is kept.
    let mut sent = Vec::new();
    for (i, mut agent) in agents.into_iter().enumerate() {
        let mut t = Lying::new(net.transport(i));
        t.lose_results = true;
        let r = net.run_fallback(&mut agent, &mut t, i);
        assert!(matches!(r, Err(AgentError::Transport(_))), "{r:?}");
        assert_eq!(agent.unfinished_fallback_round().unwrap(), Some(ROUND));
        assert_eq!(agent.aborted_rounds(), 2, "site {i}");
        sent.push(net.held(i).expect("the upload was accepted"));
    }
    // The committee finishes the round after the sites gave up.
    let committee = net.spawn_committee();
    for c in committee {
        net.rt.block_on(c).unwrap();
    }
    let res = net.published();
    let next = expected_next(&net, &res.sum, SITES as f64);
    // Restarted, each site resumes its sealed round, re-sends the same upload (no new
    // noise, no new charge) and applies the late result.
    for (i, held) in sent.iter().enumerate() {
        let mut agent = net.agent(i, &net.rules);
        let mut t = net.transport(i);
        let out = net.run_fallback(&mut agent, &mut t, i).unwrap();
        assert_eq!(
            out,
            RoundOutcome::FallbackCompleted {
                contributors: vec![0, 1, 2, 3, 4],
                model_digest: next,
            }
        );
        assert_eq!(agent.unfinished_fallback_round().unwrap(), None);
        assert_eq!(agent.aborted_rounds(), 1, "site {i}");
        assert_eq!(agent.model().1, next);
        drop(agent);
        assert_eq!(net.held(i), Some(*held));
        assert_eq!(net.charges(i), 2, "site {i}");
        let draws = net
            .encoded
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, r, _)| *s == i && *r == ROUND)
            .count();
        assert_eq!(draws, 1, "site {i}");
    }
    net.rt.block_on(net.service.shutdown());
}

#[test]
fn the_aggregator_opens_a_rerun_only_on_the_whole_committee_s_stored_certificates() {
    let net = start_posting(40, MEMBERS, MEMBERS - 1);
    let _agents = net.abort_masking_round(&net.rules);
    // Member 3 has not posted its certificate: no setup, the re-run does not open.
    let e = net.open_rerun().unwrap_err();
    assert_eq!(e.code, amalgam_net::ProblemCode::BadRequest, "{e:?}");
    assert!(e.detail.contains("no certificate for member 3"), "{e:?}");
    let r = net.post_key(3, &certificate(&net.tc, 3, box_seed(3)).to_bytes());
    assert_eq!(r.status, 200, "{:?}", r.problem());
    assert_eq!(net.open_rerun().unwrap(), ROUND);
    net.rt.block_on(net.service.shutdown());
}

/// A malicious aggregator offers the re-run of a masking round that completed: every site
/// holds model_1 = FedAvg of round 0, exactly as after an abort it would hold model_0 as
/// model_1's stand-in. The site knows round 0 did not abort here and refuses before deriving a
/// setup or charging: a second release of its data for round 0 (and a model chain moved off
/// the other sites') is never made.
#[test]
fn the_rerun_of_a_round_that_completed_is_refused_before_any_charge() {
    let net = start(37, MEMBERS);
    let handles: Vec<_> = (0..SITES)
        .map(|i| {
            let mut agent = net.agent(i, &net.rules);
            let mut t = net.transport(i);
            std::thread::spawn(move || {
                let out = agent.run_round(&mut t, &mut trainer(i), 0);
                (agent, out)
            })
        })
        .collect();
    let agents: Vec<SiteAgent> = handles
        .into_iter()
        .map(|h| {
            let (agent, out) = h.join().unwrap();
            assert!(matches!(out, Ok(RoundOutcome::Completed { .. })), "{out:?}");
            agent
        })
        .collect();
    for (i, mut agent) in agents.into_iter().enumerate() {
        let before = agent.model().1;
        let mut t = net.transport(i);
        let r = agent.run_fallback_round(&mut t, &mut trainer(i), ROUND);
        assert!(
            matches!(&r, Err(AgentError::FallbackSetup { reason, .. }) if reason.contains("did not abort")),
            "site {i}: {r:?}"
        );
        assert_eq!(agent.model().1, before, "site {i}: the model moved");
        assert_eq!(agent.last_fallback_round().unwrap(), None);
        assert_eq!(agent.aborted_rounds(), 0);
        drop(agent);
        assert_eq!(
            net.charges(i),
            1,
            "site {i}: charged for the refused re-run"
        );
    }
    net.rt.block_on(net.service.shutdown());
}

/// Declared weights through the homomorphic fallback: with weights 5/1/2/1/1 by site id the
/// re-run's model is the published sum divided by Σw / max w = 2 (not the count 5) at every
/// site, so the fallback path steps with the same divisor as the masking path.
#[test]
fn a_fallback_rerun_steps_with_the_declared_weights() {
    use amalgam_site::model::AggregationWeights;
    let net = start(37, MEMBERS);
    let mut rules = net.rules.clone();
    rules.weights = AggregationWeights::Declared(vec![5, 1, 2, 1, 1]);
    let agents = net.abort_masking_round(&rules);
    net.open_rerun().unwrap();
    let outs = complete_fallback(&net, agents, [CrashAt::Never; SITES]);
    let res = net.published();
    assert_eq!(res.contributors, vec![0, 1, 2, 3, 4]);
    assert_eq!(res.sum, net.plain_sum(ROUND));
    let divisor = rules.weights.divisor(&res.contributors).unwrap();
    assert_eq!(divisor, 2.0);
    let weighted = expected_next(&net, &res.sum, divisor);
    assert_ne!(weighted, expected_next(&net, &res.sum, SITES as f64));
    for (out, _) in &outs {
        assert_eq!(
            out,
            &RoundOutcome::FallbackCompleted {
                contributors: vec![0, 1, 2, 3, 4],
                model_digest: weighted,
            }
        );
    }
    net.rt.block_on(net.service.shutdown());
}
