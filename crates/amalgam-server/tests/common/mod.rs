//! Test fixture: a 5-site consortium, an in-process HTTPS aggregator on 127.0.0.1:0 and
//! minimal site clients driving `amalgam_proto::Site` over the real API.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use amalgam_net::api;
use amalgam_net::client::{ApiClient, ApiResponse, RetryPolicy};
use amalgam_net::tls::{self, AggregatorPin};
use amalgam_proto::codec::Encode;
use amalgam_proto::site::RoundLog;
use amalgam_proto::{Manifest, Phase, RoundParams, Site, sim};
use amalgam_server::consortium::{ConsortiumView, DeadlineBounds, StaticConsortium};
use amalgam_server::events::EventStore;
use amalgam_server::http::{App, router};
use amalgam_server::listen::{ListenLimits, serve_tls};
use amalgam_server::service::StartError;
use amalgam_server::{Service, ServiceConfig};
use ed25519_dalek::{Signer, SigningKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub const ROUND: u64 = 1;
pub const MODEL: [u8; 32] = [0x4d; 32];
pub const PHASES: [Phase; 5] = [
    Phase::AdvertiseKeys,
    Phase::ShareKeys,
    Phase::MaskedInput,
    Phase::ConsistencyCheck,
    Phase::Unmasking,
];

pub struct Fixture {
    pub sites: Vec<SigningKey>,
    pub outsider: SigningKey,
    pub agg: SigningKey,
    pub consortium: Arc<StaticConsortium>,
    pub params: RoundParams,
    pub inputs: Vec<Vec<u64>>,
}

impl Fixture {
    /// Five sites, t = 4 (c = 1, f = 1).
    pub fn new() -> Self {
        Self::with(5, 4)
    }

    /// `n` sites with threshold `t` (the protocol's largest c and f for them).
    pub fn with(n: u16, t: u16) -> Self {
        let sites: Vec<SigningKey> = (0..n)
            .map(|i| SigningKey::from_bytes(&[10 + i as u8; 32]))
            .collect();
        let manifest =
            Manifest::new(sites.iter().map(SigningKey::verifying_key).collect()).unwrap();
        let params = RoundParams::exact(n, t, 16, 64).unwrap();
        let consortium = Arc::new(StaticConsortium {
            digest: [0xC0; 32],
            epoch: 1,
            manifest,
            params,
            decryptors: vec![],
            bounds: DeadlineBounds {
                min_s: 1,
                max_s: 3600,
            },
        });
        Self {
            inputs: sim::random_inputs(&params, &[3; 32]),
            sites,
            outsider: SigningKey::from_bytes(&[99; 32]),
            agg: SigningKey::from_bytes(&[200; 32]),
            consortium,
            params,
        }
    }

    pub fn pin(&self) -> AggregatorPin {
        AggregatorPin {
            identity: self.agg.verifying_key(),
            consortium_digest: self.consortium.digest,
        }
    }

    pub fn context(&self) -> [u8; 32] {
        self.consortium.context_digest(&MODEL)
    }

    pub fn config() -> ServiceConfig {
        ServiceConfig {
            // Deadlines far away: tests close phases explicitly (no timing in tests).
            phase_seconds: 3600,
            restart_grace_seconds: 60,
            workers: 2,
            queue: 64,
            metrics_site_labels: false,
        }
    }
}

pub struct Running {
    pub addr: SocketAddr,
    pub service: Service,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    pin: AggregatorPin,
}

pub async fn start(fx: &Fixture, store: Arc<dyn EventStore>) -> Result<Running, StartError> {
    start_with(fx, store, ListenLimits::default()).await
}

pub async fn start_with(
    fx: &Fixture,
    store: Arc<dyn EventStore>,
    limits: ListenLimits,
) -> Result<Running, StartError> {
    amalgam_net::install_crypto_provider();
    let service = Service::start(fx.consortium.clone(), store, Fixture::config())?;
    let identity = tls::aggregator_identity(&fx.consortium.digest, 4_000_000_000, |m| {
        fx.agg.sign(m).to_bytes()
    })
    .unwrap();
    let tls_config = tls::server_config(&identity, fx.consortium.member_keys()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = App {
        service: service.clone(),
        insecure: false,
    };
    let task = tokio::spawn(serve_tls(listener, tls_config, router(app), limits));
    Ok(Running {
        addr,
        service,
        task,
        pin: fx.pin(),
    })
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 1,
        ..RetryPolicy::default()
    }
}

impl Running {
    pub fn base(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn client_for(&self, key: &SigningKey) -> ApiClient {
        let id = tls::member_identity(&tls::ed25519_pkcs8_from_seed(&key.to_bytes())).unwrap();
        ApiClient::new(
            &self.base(),
            tls::client_config(&id, self.pin.clone()).unwrap(),
            policy(),
        )
        .unwrap()
    }

    pub fn tls_for(&self, key: &SigningKey) -> rustls::ClientConfig {
        let id = tls::member_identity(&tls::ed25519_pkcs8_from_seed(&key.to_bytes())).unwrap();
        tls::client_config(&id, self.pin.clone()).unwrap()
    }

    pub fn anonymous(&self) -> ApiClient {
        ApiClient::new(
            &self.base(),
            tls::anonymous_client_config(self.pin.clone()).unwrap(),
            policy(),
        )
        .unwrap()
    }

    /// Stops serving and waits until nothing refers to the service any more.
    pub async fn stop(self) {
        self.service.shutdown().await;
        self.task.abort();
        let _ = self.task.await;
        drop(self.service);
    }
}

pub struct TestSite {
    pub index: usize,
    pub site: Site,
    rng: ChaCha20Rng,
    pub client: ApiClient,
    pub pending: Option<Vec<u8>>,
}

impl TestSite {
    pub fn new(fx: &Fixture, run: &Running, index: usize) -> Self {
        let mut log = RoundLog::new();
        let site = Site::with_context_digest(
            fx.params,
            fx.consortium.manifest.clone(),
            fx.context(),
            ROUND,
            fx.sites[index].clone(),
            sim::sim_timeout(),
            &mut log,
        )
        .unwrap();
        Self {
            index,
            site,
            rng: ChaCha20Rng::from_seed([index as u8 + 1; 32]),
            client: run.client_for(&fx.sites[index]),
            pending: None,
        }
    }

    /// Another RNG seed (a different instance of the same site).
    pub fn reseed(&mut self, seed: [u8; 32]) {
        self.rng = ChaCha20Rng::from_seed(seed);
    }

    pub fn begin(&mut self, fx: &Fixture) -> Vec<u8> {
        let out = self
            .site
            .start(
                fx.inputs[self.index].clone(),
                sim::sim_time(Phase::AdvertiseKeys),
                &mut self.rng,
            )
            .unwrap();
        let (up, _) = sim::persist_and_release(&self.site, out).unwrap();
        let b = up.to_bytes();
        self.pending = Some(b.clone());
        b
    }

    pub fn handle(&mut self, bytes: &[u8], phase: Phase) -> Vec<u8> {
        let out = self.site.handle_bytes(bytes, sim::sim_time(phase)).unwrap();
        let (up, _) = sim::persist_and_release(&self.site, out).unwrap();
        let b = up.to_bytes();
        self.pending = Some(b.clone());
        b
    }

    pub async fn post(&self, phase: Phase, bytes: Vec<u8>) -> ApiResponse {
        self.client
            .post(&api::masking_path(ROUND, phase).unwrap(), bytes)
            .await
            .unwrap()
    }

    pub async fn fetch(&self, phase: Phase) -> ApiResponse {
        let path = format!("{}?wait=10", api::masking_path(ROUND, phase).unwrap());
        self.client.get(&path).await.unwrap()
    }
}

/// Drives a whole round; `drop_before[i]` = the first phase site i does not upload.
/// Returns the result and every download served (phase, site, bytes).
pub async fn drive(
    fx: &Fixture,
    run: &Running,
    sites: &mut [TestSite],
    drop_before: &[Option<Phase>],
    from: Phase,
) -> (api::RoundResult, Vec<(Phase, usize, Vec<u8>)>) {
    let mut downloads = Vec::new();
    let mut out = vec![false; sites.len()];
    let start = PHASES.iter().position(|p| *p == from).unwrap();
    for &phase in &PHASES[start..] {
        let mut missing = false;
        for s in sites.iter_mut() {
            let drops = drop_before[s.index].is_some_and(|d| d <= phase);
            if out[s.index] || drops {
                missing |= !out[s.index];
                out[s.index] = true;
                continue;
            }
            let bytes = match s.pending.take() {
                Some(b) => b,
                None => s.begin(fx),
            };
            let r = s.post(phase, bytes).await;
            assert_eq!(r.status, 200, "site {} {phase}: {:?}", s.index, r.problem());
        }
        if missing {
            run.service.close_phase_now(ROUND).await.unwrap();
        }
        if phase == Phase::Unmasking {
            break;
        }
        for s in sites.iter_mut() {
            if out[s.index] {
                continue;
            }
            let r = s.fetch(phase).await;
            match r.status.as_u16() {
                200 => {
                    downloads.push((phase, s.index, r.body.clone()));
                    s.handle(&r.body, phase);
                }
                204 => out[s.index] = true,
                other => panic!("site {} fetch {phase}: {other} {:?}", s.index, r.problem()),
            }
        }
    }
    let r = sites[0]
        .client
        .get(&format!("{}?wait=10", api::result_path(ROUND)))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.problem());
    (serde_json::from_slice(&r.body).unwrap(), downloads)
}

pub fn plaintext(fx: &Fixture, contributors: &[u16]) -> Vec<u64> {
    let ids: Vec<_> = contributors
        .iter()
        .map(|&i| amalgam_proto::SiteId(i))
        .collect();
    sim::plaintext_sum(&fx.params, &fx.inputs, &ids)
}
