//! Fixture of the fallback tests: 5 sites, a committee of 4 decryptors (t_c = 2, Q = 3,
//! c_d = 1), an in-process HTTPS aggregator serving the masking and fallback routes, and
//! minimal site and decryptor clients driving `amalgam_he` over the real API.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use amalgam_he::decryptor::member_secrets_from_bytes;
use amalgam_he::{
    Committee, Decryptor, KaheParams, MemberRoundRecord, MemberSecrets, RoundSetup, SiteDirectory,
    SiteRound, SiteRoundLog, StatementSignature,
};
use amalgam_net::client::{ApiClient, ApiResponse, RetryPolicy};
use amalgam_net::fallback_api::{self as fapi, FALLBACK_ROUND_BASE, decode_frames};
use amalgam_net::tls::{self, AggregatorPin};
use amalgam_proto::codec::{Decode, Encode};
use amalgam_proto::{Manifest, RoundParams, SiteId};
use amalgam_server::consortium::{DeadlineBounds, StaticConsortium};
use amalgam_server::fallback::http::{FallbackApp, fallback_router};
use amalgam_server::fallback::service::FallbackLog;
use amalgam_server::fallback::{FallbackService, StaticFallback};
use amalgam_server::http::{App, router};
use amalgam_server::listen::{ListenLimits, serve_tls};
use amalgam_server::service::StartError;
use amalgam_server::{Service, ServiceConfig};
use ed25519_dalek::{Signer, SigningKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The fallback re-run of masking round 1.
pub const ROUND: u64 = FALLBACK_ROUND_BASE + 1;
pub const MODEL: (u64, [u8; 32]) = (1, [0x4d; 32]);
pub const D: u32 = 300;
pub const SITES: usize = 5;
pub const MEMBERS: usize = 4;

pub struct Fixture {
    pub sites: Vec<SigningKey>,
    pub members: Vec<([u8; 32], [u8; 32])>,
    pub agg: SigningKey,
    pub consortium: Arc<StaticConsortium>,
    pub allowed: bool,
    pub target: Option<usize>,
}

impl Fixture {
    pub fn new(allowed: bool) -> Self {
        let sites: Vec<SigningKey> = (0..SITES)
            .map(|i| SigningKey::from_bytes(&[10 + i as u8; 32]))
            .collect();
        let members: Vec<([u8; 32], [u8; 32])> = (0..MEMBERS)
            .map(|j| ([60 + j as u8; 32], [80 + j as u8; 32]))
            .collect();
        let manifest =
            Manifest::new(sites.iter().map(SigningKey::verifying_key).collect()).unwrap();
        let consortium = Arc::new(StaticConsortium {
            digest: [0xC0; 32],
            epoch: 1,
            manifest,
            params: RoundParams::exact(SITES as u16, 4, 16, 64).unwrap(),
            decryptors: members
                .iter()
                .map(|(i, _)| SigningKey::from_bytes(i).verifying_key())
                .collect(),
            bounds: DeadlineBounds {
                min_s: 1,
                max_s: 3600,
            },
        });
        Self {
            sites,
            members,
            agg: SigningKey::from_bytes(&[200; 32]),
            consortium,
            allowed,
            target: None,
        }
    }

    pub fn secrets(&self, j: usize) -> MemberSecrets {
        let (a, b) = self.members[j];
        member_secrets_from_bytes(a, b)
    }

    pub fn member_key(&self, j: usize) -> SigningKey {
        SigningKey::from_bytes(&self.members[j].0)
    }

    /// The setup every party derives for `round`.
    pub fn setup(&self, round: u64) -> RoundSetup {
        make_setup(&self.sites, &self.members, round).unwrap()
    }

    pub fn setups(&self) -> StaticFallback {
        let sites = self.sites.clone();
        let members = self.members.clone();
        StaticFallback {
            allowed: self.allowed,
            make: Box::new(move |r| make_setup(&sites, &members, r)),
            target: self.target,
        }
    }

    pub fn pin(&self) -> AggregatorPin {
        AggregatorPin {
            identity: self.agg.verifying_key(),
            consortium_digest: self.consortium.digest,
        }
    }

    pub fn config() -> ServiceConfig {
        ServiceConfig {
            phase_seconds: 3600,
            restart_grace_seconds: 60,
            workers: 2,
            queue: 64,
            metrics_site_labels: false,
        }
    }
}

fn make_setup(
    sites: &[SigningKey],
    members: &[([u8; 32], [u8; 32])],
    round: u64,
) -> Result<RoundSetup, String> {
    let keys = members
        .iter()
        .map(|(a, b)| member_secrets_from_bytes(*a, *b).certify(1))
        .collect();
    let committee = Committee::new(keys, 2, 3, 1).map_err(|e| e.to_string())?;
    let dir = SiteDirectory::new(sites.iter().map(SigningKey::verifying_key).collect())
        .map_err(|e| e.to_string())?;
    let params = KaheParams::new(16, sites.len() as u32, D).map_err(|e| e.to_string())?;
    RoundSetup::new(params, dir, committee, 2, round, vec![MODEL]).map_err(|e| e.to_string())
}

pub struct Running {
    pub addr: SocketAddr,
    pub service: Service,
    pub fallback: FallbackService,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    pin: AggregatorPin,
}

pub async fn start(fx: &Fixture, store: Arc<dyn FallbackLog>) -> Result<Running, StartError> {
    amalgam_net::install_crypto_provider();
    let service = Service::start(
        fx.consortium.clone(),
        Arc::new(amalgam_server::events::MemoryStore::new()),
        Fixture::config(),
    )?;
    let fallback = FallbackService::start(
        fx.consortium.clone(),
        Arc::new(fx.setups()),
        store,
        Fixture::config(),
    )?;
    let identity = tls::aggregator_identity(&fx.consortium.digest, 4_000_000_000, |m| {
        fx.agg.sign(m).to_bytes()
    })
    .unwrap();
    use amalgam_server::consortium::ConsortiumView;
    let tls_config = tls::server_config(&identity, fx.consortium.member_keys()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = App {
        service: service.clone(),
        insecure: false,
    };
    let fb = FallbackApp {
        service: fallback.clone(),
        consortium: fx.consortium.clone(),
        insecure: false,
    };
    let routes = router(app).merge(fallback_router(fb));
    let task = tokio::spawn(serve_tls(
        listener,
        tls_config,
        routes,
        ListenLimits::default(),
    ));
    Ok(Running {
        addr,
        service,
        fallback,
        task,
        pin: fx.pin(),
    })
}

impl Running {
    /// Opens fallback round `ROUND` the only way there is: masking round `ROUND − 2^32`
    /// opens, aborts with nobody in, and its re-run opens.
    pub async fn open_fallback(&self) -> Result<u64, amalgam_net::Problem> {
        let masking = ROUND - FALLBACK_ROUND_BASE;
        self.service.open_round(masking, MODEL.1).await?;
        self.service.close_phase_now(masking).await?;
        self.fallback.open_rerun(&self.service, masking).await
    }

    pub fn client_for(&self, key: &SigningKey) -> ApiClient {
        let id = tls::member_identity(&tls::ed25519_pkcs8_from_seed(&key.to_bytes())).unwrap();
        ApiClient::new(
            &format!("https://{}", self.addr),
            tls::client_config(&id, self.pin.clone()).unwrap(),
            RetryPolicy {
                attempts: 1,
                ..RetryPolicy::default()
            },
        )
        .unwrap()
    }

    pub async fn fingerprint(&self, round: u64) -> [u8; 32] {
        self.fallback
            .with_round(round, |s| s.fingerprint())
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        self.service.shutdown().await;
        self.task.abort();
        let _ = self.task.await;
        drop(self.service);
        drop(self.fallback);
        // Let the fallback timers observe the drop.
        tokio::task::yield_now().await;
    }
}

/// Site `i`'s upload bytes for `round` with input `x` (deterministic per seed).
pub fn site_upload(fx: &Fixture, round: u64, i: usize, x: &[u64]) -> Vec<u8> {
    let setup = fx.setup(round);
    let mut log = SiteRoundLog::new();
    let mut rng = ChaCha20Rng::seed_from_u64(1000 + i as u64);
    let sr = SiteRound::draw(&setup, &mut log, MODEL, x.to_vec(), &mut rng).unwrap();
    sr.upload(&setup, SiteId(i as u16), &fx.sites[i])
        .unwrap()
        .to_bytes()
}

pub fn inputs() -> Vec<Vec<u64>> {
    (0..SITES)
        .map(|i| {
            (0..D as u64)
                .map(|k| (k * 31 + i as u64 * 977) % 65_536)
                .collect()
        })
        .collect()
}

pub fn plain_sum(xs: &[&Vec<u64>]) -> Vec<u64> {
    let mut s = vec![0u64; D as usize];
    for x in xs {
        for (a, b) in s.iter_mut().zip(x.iter()) {
            *a += b;
        }
    }
    s
}

/// A committee member driven over the API (in-process `Decryptor`).
pub struct TestMember {
    pub j: usize,
    pub d: Decryptor,
    pub client: ApiClient,
    pub round: u64,
}

impl TestMember {
    pub fn new(fx: &Fixture, run: &Running, j: usize, round: u64) -> Self {
        let mut record = MemberRoundRecord::new();
        let d = Decryptor::new(fx.setup(round), j, fx.secrets(j), &mut record).unwrap();
        Self {
            j,
            d,
            client: run.client_for(&fx.member_key(j)),
            round,
        }
    }

    pub async fn admit_all(&mut self, fx: &Fixture) -> usize {
        let r = self
            .client
            .get(&fapi::fallback_path(self.round, "views"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.problem());
        let frames = decode_frames(&r.body, 65_535, 1 << 20).unwrap();
        let setup = fx.setup(self.round);
        for f in &frames {
            let v = amalgam_he::UploadView::from_bytes(f, &setup, self.j).unwrap();
            self.d.admit(&v).unwrap();
        }
        frames.len()
    }

    pub async fn statement(&self) -> ApiResponse {
        self.client
            .get(&(fapi::fallback_path(self.round, "statement") + "?wait=5"))
            .await
            .unwrap()
    }

    pub async fn sign(&mut self) -> ApiResponse {
        let st = self.statement().await;
        assert_eq!(st.status, 200, "{:?}", st.problem());
        let s = amalgam_he::CohortStatement::from_bytes(&st.body, &()).unwrap();
        let sig = self.d.sign(&s).unwrap().persisted();
        self.client
            .post(
                &fapi::fallback_path(self.round, "signatures"),
                sig.to_bytes(),
            )
            .await
            .unwrap()
    }

    pub async fn release(&self) -> ApiResponse {
        let st = self.statement().await;
        let s = amalgam_he::CohortStatement::from_bytes(&st.body, &()).unwrap();
        let r = self
            .client
            .get(&fapi::fallback_path(self.round, "signatures"))
            .await
            .unwrap();
        let sigs: Vec<StatementSignature> = decode_frames(&r.body, 8, 69)
            .unwrap()
            .iter()
            .map(|b| StatementSignature::from_bytes(b, &()).unwrap())
            .collect();
        let rel = self.d.release(&s, &sigs).unwrap();
        self.client
            .post(&fapi::fallback_path(self.round, "release"), rel.to_bytes())
            .await
            .unwrap()
    }
}
