//! Sites that compute as they go: each runs `amalgam_proto::Site` (key agreement, Shamir
//! shares, masking and packing, signatures) and talks to the aggregator over its own mutual-TLS
//! client, uploading each phase's message and long-polling for the next download — the
//! round a deployment runs, with the sites in this process.

use amalgam_net::api::{self, RoundResult};
use amalgam_net::client::ApiClient;
use amalgam_proto::codec::Encode;
use amalgam_proto::site::RoundLog;
use amalgam_proto::{Manifest, Phase, RoundParams, Site, sim};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The masking phases in order.
pub const PHASES: [Phase; 5] = [
    Phase::AdvertiseKeys,
    Phase::ShareKeys,
    Phase::MaskedInput,
    Phase::ConsistencyCheck,
    Phase::Unmasking,
];

/// What every site of a round shares.
#[derive(Clone)]
pub struct RoundSetup {
    /// Parameters.
    pub params: RoundParams,
    /// Manifest.
    pub manifest: Manifest,
    /// Context digest (consortium and model).
    pub context: [u8; 32],
    /// Round id.
    pub round: u64,
}

/// One site's whole round: `input` masked and uploaded through every phase. Its CPU work runs
/// on the blocking pool, as a site agent's would run beside its network task.
pub async fn site_round(
    setup: RoundSetup,
    identity: SigningKey,
    client: ApiClient,
    input: Vec<u64>,
    rng_seed: [u8; 32],
) -> Result<(), String> {
    let started = tokio::task::spawn_blocking(move || {
        let mut log = RoundLog::new();
        let mut site = Site::with_context_digest(
            setup.params,
            setup.manifest.clone(),
            setup.context,
            setup.round,
            identity,
            sim::sim_timeout(),
            &mut log,
        )
        .map_err(|e| e.to_string())?;
        let mut rng = ChaCha20Rng::from_seed(rng_seed);
        let out = site
            .start(input, sim::sim_time(Phase::AdvertiseKeys), &mut rng)
            .map_err(|e| e.to_string())?;
        let (up, _snap) = sim::persist_and_release(&site, out).map_err(|e| e.to_string())?;
        Ok::<_, String>((site, up.to_bytes()))
    })
    .await
    .map_err(|e| e.to_string())?;
    let (mut site, mut upload) = started?;
    for phase in PHASES {
        let path = api::masking_path(setup.round, phase).ok_or("phase without a route")?;
        let r = client
            .post(&path, upload)
            .await
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("{phase} upload: {} {:?}", r.status, r.problem()));
        }
        if phase == Phase::Unmasking {
            return Ok(());
        }
        let r = client
            .get(&format!("{path}?wait=60"))
            .await
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("{phase} download: {} {:?}", r.status, r.problem()));
        }
        let handled = tokio::task::spawn_blocking(move || {
            let out = site
                .handle_bytes(&r.body, sim::sim_time(phase))
                .map_err(|e| e.to_string())?;
            let (up, _snap) = sim::persist_and_release(&site, out).map_err(|e| e.to_string())?;
            Ok::<_, String>((site, up.to_bytes()))
        })
        .await
        .map_err(|e| e.to_string())?;
        (site, upload) = handled?;
    }
    Ok(())
}

/// The round's result by long-poll (one download), with its size on the wire.
pub async fn fetch_result(client: &ApiClient, round: u64) -> Result<(RoundResult, usize), String> {
    let r = client
        .get(&format!("{}?wait=60", api::result_path(round)))
        .await
        .map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("result: {} {:?}", r.status, r.problem()));
    }
    let parsed = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    Ok((parsed, r.body.len()))
}
