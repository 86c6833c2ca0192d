//! One deployment: a consortium whose identities derive from a seed drawn from the OS, the
//! aggregator's TLS identity bound to it, and an in-process aggregator on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amalgam_net::client::{ApiClient, RetryPolicy};
use amalgam_net::tls::{self, AggregatorPin};
use amalgam_proto::sim::Consortium;
use amalgam_proto::{RoundParams, SiteId};
use amalgam_server::consortium::{ConsortiumView, DeadlineBounds, StaticConsortium};
use amalgam_server::events::EventStore;
use amalgam_server::http::{App, router};
use amalgam_server::listen::{ListenLimits, serve_tls};
use amalgam_server::{Service, ServiceConfig};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

/// The model digest every measured round is bound to.
pub const MODEL: [u8; 32] = [0x4d; 32];

/// 32 bytes from the operating system's generator: the seed of a run's identities, so that no
/// key is fixed in the code.
pub fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut seed) {
        panic!("no OS randomness: {e}");
    }
    seed
}

fn derive(seed: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"amalgam/v1/bench/");
    h.update(label);
    h.update(seed);
    h.finalize().into()
}

/// A consortium of `params.n()` sites and its aggregator, all keys derived from one seed (a
/// load generator and the aggregator process it drives agree on them through that seed).
pub struct Deployment {
    /// The seed everything derives from.
    pub seed: [u8; 32],
    /// The sites' identities and manifest.
    pub sites: Consortium,
    /// The aggregator's identity key (its TLS certificate is bound to it).
    pub agg: SigningKey,
    /// What the server runs under.
    pub consortium: Arc<StaticConsortium>,
    /// The parameters of every round.
    pub params: RoundParams,
}

impl Deployment {
    /// The deployment of `params` derived from `seed`.
    pub fn new(params: RoundParams, seed: [u8; 32]) -> Self {
        let sites = match Consortium::generate(params.n(), &derive(&seed, b"sites")) {
            Ok(c) => c,
            Err(e) => panic!("consortium refused: {e}"),
        };
        let consortium = Arc::new(StaticConsortium {
            digest: derive(&seed, b"consortium"),
            epoch: 1,
            manifest: sites.manifest().clone(),
            params,
            decryptors: vec![],
            bounds: DeadlineBounds {
                min_s: 1,
                max_s: 3600,
            },
        });
        Self {
            seed,
            agg: SigningKey::from_bytes(&derive(&seed, b"aggregator")),
            sites,
            consortium,
            params,
        }
    }

    /// The protocol context digest of rounds on [`MODEL`].
    pub fn context(&self) -> [u8; 32] {
        self.consortium.context_digest(&MODEL)
    }

    /// What site clients pin.
    pub fn pin(&self) -> AggregatorPin {
        AggregatorPin {
            identity: self.agg.verifying_key(),
            consortium_digest: self.consortium.digest,
        }
    }

    /// Site `id`'s identity key.
    pub fn site_key(&self, id: SiteId) -> SigningKey {
        self.sites.identity(id).clone()
    }

    /// The server's mutual-TLS configuration (certificate bound to the aggregator key,
    /// clients verified against the manifest).
    pub fn server_tls(&self) -> Arc<rustls::ServerConfig> {
        amalgam_net::install_crypto_provider();
        let identity = match tls::aggregator_identity(&self.consortium.digest, 4_000_000_000, |m| {
            self.agg.sign(m).to_bytes()
        }) {
            Ok(i) => i,
            Err(e) => panic!("aggregator identity: {e}"),
        };
        match tls::server_config(&identity, self.consortium.member_keys()) {
            Ok(c) => c,
            Err(e) => panic!("server TLS: {e}"),
        }
    }

    /// Site `id`'s API client for `base`: its own client certificate, the pinned aggregator,
    /// one attempt per request (a failure is a failed measurement, not something to retry).
    pub fn client(&self, base: &str, id: SiteId) -> ApiClient {
        amalgam_net::install_crypto_provider();
        let key = self.sites.identity(id);
        let built = tls::member_identity(&tls::ed25519_pkcs8_from_seed(&key.to_bytes()))
            .map_err(|e| e.to_string())
            .and_then(|ident| tls::client_config(&ident, self.pin()).map_err(|e| e.to_string()))
            .and_then(|cfg| {
                let policy = RetryPolicy {
                    attempts: 1,
                    ..RetryPolicy::default()
                };
                ApiClient::new(base, cfg, policy).map_err(|e| e.to_string())
            });
        match built {
            Ok(c) => c,
            Err(e) => panic!("site client: {e}"),
        }
    }
}

/// The service settings of a measured aggregator: phases never time out (every site answers),
/// the worker pool is the machine's cores, and the queue holds every site's request at once.
pub fn service_config(n: usize) -> ServiceConfig {
    ServiceConfig {
        phase_seconds: 3600,
        restart_grace_seconds: 60,
        workers: std::thread::available_parallelism().map_or(2, |p| p.get()),
        queue: 4 * n + 64,
        metrics_site_labels: false,
    }
}

/// Listener bounds for `n` simulated sites that all connect from 127.0.0.1 (the default
/// per-address cap of 16 is meant for sites behind distinct addresses).
pub fn listen_limits(n: usize) -> ListenLimits {
    ListenLimits {
        max_connections: 4 * n + 64,
        max_per_ip: 4 * n + 64,
        handshake_timeout: Duration::from_secs(30),
        header_timeout: Duration::from_secs(300),
    }
}

/// A serving aggregator.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The service (open rounds, metrics).
    pub service: Service,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// `https://addr`.
    pub fn base(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops serving and waits for the service to wind down.
    pub async fn stop(self) {
        self.service.shutdown().await;
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Starts the aggregator of `dep` on `store` (replaying whatever it holds) and serves the API,
/// plus `extra` routes (the floor), over mutual TLS on 127.0.0.1:`port` (0: any).
pub async fn start(
    dep: &Deployment,
    store: Arc<dyn EventStore>,
    extra: Option<axum::Router>,
    port: u16,
) -> Running {
    let service = match Service::start(
        dep.consortium.clone(),
        store,
        service_config(dep.params.n()),
    ) {
        Ok(s) => s,
        Err(e) => panic!("service start: {e}"),
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("local address: {e}"),
    };
    let mut app = router(App {
        service: service.clone(),
        insecure: false,
    });
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    let task = tokio::spawn(serve_tls(
        listener,
        dep.server_tls(),
        app,
        listen_limits(dep.params.n()),
    ));
    Running {
        addr,
        service,
        task,
    }
}
