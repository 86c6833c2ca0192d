//! `amalgam serve`: the aggregator. Verifies the manifest against the epoch high water,
//! checks that `--key` is the aggregator identity the manifest pins, makes a fresh TLS key
//! bound to it, replays the event log and serves the API; prints `READY https://<addr>` on
//! stdout once listening (logs go to stderr, JSON when stdout is not a terminal).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amalgam_consortium::{EpochHighWater, IdentityKey, SignedManifest, VerifiedManifest};
use amalgam_net::insecure::require_loopback_bind;
use amalgam_net::tls;
use amalgam_server::consortium::ConsortiumView;
use amalgam_server::events::open_sqlite;
use amalgam_server::http::{App, metrics_router, router};
use amalgam_server::listen::{ListenLimits, serve_plain, serve_tls};
use amalgam_server::{Service, ServiceConfig};

use crate::Failure;

/// Lifetime of the TLS certificate's identity binding; renewed by restarting (a new TLS key).
const BINDING_DAYS: u64 = 30;

/// `amalgam serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The co-signed consortium manifest.
    #[arg(long, required_unless_present = "openapi")]
    manifest: Option<PathBuf>,
    /// The aggregator's identity key file (must be the manifest's aggregator).
    #[arg(long, required_unless_present = "openapi")]
    key: Option<PathBuf>,
    /// The event log (SQLite; `<db>.lock` stops a second aggregator).
    #[arg(long, required_unless_present = "openapi")]
    db: Option<PathBuf>,
    /// API listen address (port 0 picks one; the READY line names it).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// `/healthz` and `/metrics` listen address (loopback by default).
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics_listen: SocketAddr,
    /// Per-site labels on metrics (off by default: lateness is information).
    #[arg(long)]
    metrics_site_labels: bool,
    /// Run the manifest's campaign from these initial weights (little-endian f32 values in
    /// parameter order; their digest must be the campaign's): round 0 opens on them, each
    /// later round on the model the previous round's sum produced, until the campaign ends.
    #[arg(long, conflicts_with_all = ["round", "model_digest"])]
    initial_model: Option<PathBuf>,
    /// Open this round if the log does not have it yet (a single round, for tests and
    /// manual operation; superseded by `--initial-model`).
    #[arg(long)]
    round: Option<u64>,
    /// Hex model digest of `--round` (round 1 defaults to the campaign's initial weights).
    #[arg(long)]
    model_digest: Option<String>,
    /// Length of each phase, seconds (clamped into the manifest's bounds).
    #[arg(long, default_value_t = 300)]
    phase_seconds: u64,
    /// With the fallback on: how long the campaign waits, seconds, for the re-run of an
    /// aborted round to open (it opens once the committee's certificates are stored) before
    /// it gives the re-run up and carries the model over. A site waits until a later round
    /// opens, or at most twice its `--wait-for-round` (600 s by default).
    #[arg(long, default_value_t = 600)]
    rerun_open_wait: u64,
    /// Concurrent connections accepted from one peer IP address (1..=512). Every party of
    /// `amalgam simulate` connects from 127.0.0.1, so it raises this.
    #[arg(long, default_value_t = 16)]
    max_connections_per_ip: usize,
    /// Plain HTTP on loopback for development: serves only status and time; no member route.
    #[arg(long)]
    insecure: bool,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    openapi: bool,
}

/// Logs to stderr (JSON when stdout is not a terminal); shared with `decryptor serve`.
pub(crate) fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stdout().is_terminal() {
        let _ = builder.try_init();
    } else {
        let _ = builder.json().try_init();
    }
}

fn load(args: &Args) -> Result<(VerifiedManifest, IdentityKey, PathBuf), Failure> {
    let (Some(m), Some(k), Some(db)) = (&args.manifest, &args.key, &args.db) else {
        return Err(Failure::usage("--manifest, --key and --db are required"));
    };
    let hw_path = db.with_extension("epoch");
    let hw = EpochHighWater::load(&hw_path)?;
    let key = IdentityKey::load(k)?;
    let me = key.verifying_key();
    let manifest = SignedManifest::read(m)?.verify_for(&me, hw.as_ref())?;
    EpochHighWater::accept(&hw_path, &manifest, &me)?;
    if key.verifying_key() != manifest.aggregator().key {
        return Err(Failure {
            code: 4,
            message: format!(
                "{} is not the aggregator identity the manifest pins",
                k.display()
            ),
        });
    }
    Ok((manifest, key, db.clone()))
}

/// Runs the command.
pub fn run(args: &Args) -> Result<(), Failure> {
    if args.openapi {
        println!("{}", amalgam_server::openapi::json());
        return Ok(());
    }
    amalgam_net::install_crypto_provider();
    init_logs();
    if args.insecure {
        require_loopback_bind(&args.listen).map_err(|e| Failure::usage(e.to_string()))?;
    }
    require_loopback_bind(&args.metrics_listen)
        .map_err(|e| Failure::usage(format!("metrics listener: {e} (metrics stay on loopback)")))?;
    if !(1..=ListenLimits::default().max_connections).contains(&args.max_connections_per_ip) {
        return Err(Failure::usage(
            "--max-connections-per-ip must be 1..=512 (the listener's total)",
        ));
    }
    let (manifest, key, db) = load(args)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::failed(e.to_string()))?;
    runtime.block_on(serve(args, manifest, key, db))
}

async fn serve(
    args: &Args,
    manifest: VerifiedManifest,
    key: IdentityKey,
    db: PathBuf,
) -> Result<(), Failure> {
    // A weight mode the model step cannot apply (noised) is refused before anything starts.
    manifest
        .aggregation_weights()
        .map_err(|e| Failure::failed(format!("the manifest's campaign: {e}")))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let digest = manifest.consortium_digest();
    let identity = tls::aggregator_identity(&digest, now + BINDING_DAYS * 86_400, |m| {
        key.sign(m).to_bytes()
    })
    .map_err(|e| Failure::failed(e.to_string()))?;
    drop(key);
    let manifest = Arc::new(manifest);
    let member_keys = manifest.member_keys();
    let initial = manifest.campaign().initial_weights_digest;
    let (log, _writer) = open_sqlite(&db).map_err(|e| Failure::failed(e.to_string()))?;
    let config = ServiceConfig {
        phase_seconds: args.phase_seconds,
        metrics_site_labels: args.metrics_site_labels,
        ..ServiceConfig::default()
    };
    let service = Service::start(manifest.clone(), Arc::new(log), config.clone())
        .map_err(|e| Failure::failed(e.to_string()))?;
    // The homomorphic fallback (never in plain-HTTP mode: it authenticates nobody).
    let (fallback, fallback_routes) = if crate::serve_fallback::enabled(&manifest) && !args.insecure
    {
        let (f, g, r) = crate::serve_fallback::start(&manifest, &service, &db, config).await?;
        (Some((f, g)), Some(r))
    } else {
        (None, None)
    };
    let mut campaign = None;
    if let Some(path) = &args.initial_model {
        use amalgam_server::campaign::{self, CampaignRules};
        let len = CampaignRules::model_len(manifest.as_ref());
        let initial = read_initial(path, len)?;
        let rules: Arc<dyn CampaignRules> = manifest.clone();
        // With the fallback on, an aborted round's model comes from its re-run.
        let reruns = fallback.clone().map(|(fallback, gate)| {
            Arc::new(crate::serve_fallback::FollowReRuns {
                fallback,
                service: service.clone(),
                bits: manifest.dp_policy().bits.get(),
                gate,
                open_wait: Duration::from_secs(args.rerun_open_wait),
            }) as Arc<dyn campaign::ReRuns>
        });
        campaign = Some(
            campaign::start_with(service.clone(), rules, initial, reruns)
                .await
                .map_err(|e| Failure::failed(e.to_string()))?,
        );
    }
    if let Some(r) = args.round {
        let model = match (&args.model_digest, r) {
            (Some(h), _) => {
                let v = hex::decode(h).map_err(|_| Failure::usage("--model-digest is not hex"))?;
                <[u8; 32]>::try_from(v.as_slice())
                    .map_err(|_| Failure::usage("--model-digest is not 32 bytes"))?
            }
            (None, 1) => initial,
            (None, _) => {
                return Err(Failure::usage(
                    "--model-digest is required for rounds after 1",
                ));
            }
        };
        // Under the re-run opener's lock: the opener's "no later round" check and this
        // open cannot interleave, so a re-run of an earlier round and round r never both open.
        let _gate = match &fallback {
            Some((_, gate)) => Some(gate.lock().await),
            None => None,
        };
        if service.round_status(r).await.is_err() {
            // Nor while the re-run of an earlier round is open: its end gives model_r.
            if let Some((fb, _)) = &fallback {
                for k in service.round_ids().into_iter().filter(|&k| k < r) {
                    let Some(fr) = amalgam_net::fallback_api::fallback_round_of(k) else {
                        continue;
                    };
                    if let Ok(false) = fb.with_round(fr, |st| st.end().is_some()).await {
                        return Err(Failure::failed(format!(
                            "--round {r}: the fallback re-run of round {k} (round {fr}) is still \
                             open; open round {r} after it ended, on the model its sum gives"
                        )));
                    }
                }
            }
            service
                .open_round(r, model)
                .await
                .map_err(|p| Failure::failed(p.to_string()))?;
        }
    }
    let api = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::failed(format!("{}: {e}", args.listen)))?;
    let metrics = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|e| Failure::failed(format!("{}: {e}", args.metrics_listen)))?;
    let api_addr = api
        .local_addr()
        .map_err(|e| Failure::failed(e.to_string()))?;
    let metrics_addr = metrics
        .local_addr()
        .map_err(|e| Failure::failed(e.to_string()))?;
    let limits = ListenLimits {
        max_per_ip: args.max_connections_per_ip,
        ..ListenLimits::default()
    };
    let app = App {
        service: service.clone(),
        insecure: args.insecure,
    };
    let api_task = if args.insecure {
        tokio::spawn(serve_plain(api, router(app), limits))
    } else {
        let tls = tls::server_config(&identity, member_keys)
            .map_err(|e| Failure::failed(e.to_string()))?;
        let mut routes = router(app);
        if let Some(f) = fallback_routes {
            routes = routes.merge(f);
        }
        tokio::spawn(serve_tls(api, tls, routes, limits))
    };
    let metrics_task = tokio::spawn(serve_plain(
        metrics,
        metrics_router(service.clone()),
        limits,
    ));
    let scheme = if args.insecure { "http" } else { "https" };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "READY {scheme}://{api_addr}");
    let _ = writeln!(out, "METRICS http://{metrics_addr}");
    let _ = out.flush();
    tracing::info!(%api_addr, %metrics_addr, epoch = manifest.epoch(), "aggregator serving");
    let campaign_task = async {
        match campaign {
            Some(t) => t.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = api_task => Err(Failure::failed(format!("API listener stopped: {r:?}"))),
        r = campaign_task => match r {
            // The campaign is complete; its rounds stay served until the operator stops.
            Ok(Ok(_)) => {
                let _ = tokio::signal::ctrl_c().await;
                service.shutdown().await;
                Ok(())
            }
            Ok(Err(e)) => Err(Failure::failed(e.to_string())),
            Err(e) => Err(Failure::failed(format!("campaign task: {e}"))),
        },
        r = metrics_task => Err(Failure::failed(format!("metrics listener stopped: {r:?}"))),
        _ = tokio::signal::ctrl_c() => {
            service.shutdown().await;
            Ok(())
        }
    }
}

/// Reads the initial weights file: exactly 4 bytes per parameter (checked on the file's
/// size before reading), canonical little-endian f32.
fn read_initial(path: &std::path::Path, len: usize) -> Result<Vec<f32>, Failure> {
    let want = (len as u64).saturating_mul(4);
    let meta = std::fs::metadata(path).map_err(|e| Failure::failed(format!("{path:?}: {e}")))?;
    if meta.len() != want {
        return Err(Failure::failed(format!(
            "{path:?} holds {} bytes; the campaign's {len} f32 values need {want}",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Failure::failed(format!("{path:?}: {e}")))?;
    amalgam_consortium::global_model::model_from_bytes(&bytes, len)
        .map_err(|e| Failure::failed(format!("{path:?}: {e}")))
}
