//! The aggregator's fallback service as a deployment runs it: `FallbackService` on an event
//! log (replayed at start: every upload of an open round re-verified and re-added), its
//! routes over mutual TLS, and the masking service whose aborted round the fallback re-runs.

use std::net::SocketAddr;
use std::sync::Arc;

use amalgam_net::Problem;
use amalgam_net::tls;
use amalgam_server::Service;
use amalgam_server::events::MemoryStore;
use amalgam_server::fallback::FallbackService;
use amalgam_server::fallback::http::{FallbackApp, fallback_router};
use amalgam_server::fallback::service::FallbackLog;
use amalgam_server::listen::serve_tls;
use amalgam_server::service::StartError;
use ed25519_dalek::Signer;

use super::{FbDeployment, ROUND};
use crate::service::fixture::{listen_limits, service_config};

/// A serving fallback aggregator.
pub struct FbRunning {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The fallback service.
    pub fallback: FallbackService,
    masking: Service,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The fallback service of `dep` on `store`, replaying whatever it holds (no listener).
pub fn start_service(
    dep: &FbDeployment,
    store: Arc<dyn FallbackLog>,
) -> Result<FallbackService, StartError> {
    FallbackService::start(
        dep.view.clone(),
        Arc::new(dep.setups()),
        store,
        service_config(dep.n()),
    )
}

/// Starts the fallback service of `dep` on `store` and serves its routes over mutual TLS on
/// 127.0.0.1 (any port). The masking service (the aborted round the fallback re-runs) keeps
/// its log in memory: it holds nothing the fallback reads after the re-run opened.
pub async fn start(dep: &FbDeployment, store: Arc<dyn FallbackLog>) -> Result<FbRunning, String> {
    amalgam_net::install_crypto_provider();
    let masking = Service::start(
        dep.masking.clone(),
        Arc::new(MemoryStore::new()),
        service_config(dep.n()),
    )
    .map_err(|e| format!("masking service: {e}"))?;
    let fallback = start_service(dep, store).map_err(|e| format!("fallback service: {e}"))?;
    let identity = tls::aggregator_identity(&dep.view.consortium_digest(), 4_000_000_000, |m| {
        dep.agg.sign(m).to_bytes()
    })
    .map_err(|e| format!("aggregator identity: {e}"))?;
    let tls_config = tls::server_config(&identity, dep.view.member_keys())
        .map_err(|e| format!("server TLS: {e}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("address: {e}"))?;
    let routes = fallback_router(FallbackApp {
        service: fallback.clone(),
        consortium: dep.view.clone(),
        insecure: false,
    });
    let task = tokio::spawn(serve_tls(
        listener,
        tls_config,
        routes,
        listen_limits(dep.n() + super::MEMBERS),
    ));
    Ok(FbRunning {
        addr,
        fallback,
        masking,
        task,
    })
}

impl FbRunning {
    /// `https://addr`.
    pub fn base(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Whether [`ROUND`] exists in the log already (a restarted aggregator).
    pub async fn has_round(&self) -> bool {
        self.fallback.with_round(ROUND, |_| ()).await.is_ok()
    }

    /// Opens [`ROUND`] the only way there is: masking round 1 opens, aborts with nobody in,
    /// and its re-run opens.
    pub async fn open(&self) -> Result<(), Problem> {
        let masking = ROUND - amalgam_net::fallback_api::FALLBACK_ROUND_BASE;
        self.masking.open_round(masking, super::MODEL.1).await?;
        self.masking.close_phase_now(masking).await?;
        self.fallback.open_rerun(&self.masking, masking).await?;
        Ok(())
    }

    /// Stops serving and waits for both services to wind down.
    pub async fn stop(self) {
        self.masking.shutdown().await;
        self.task.abort();
        let _ = self.task.await;
        drop(self.fallback);
        tokio::task::yield_now().await;
    }
}
