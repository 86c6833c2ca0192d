//! The homomorphic fallback in `amalgam serve` (`protocol-spec/service.md` §9,
//! `site-agent.md` §7): where the manifest allows it and names a committee, the aggregator
//! keeps a second event log (`<db>.fallback`), mounts the fallback and committee-key routes,
//! and opens the re-run `FALLBACK_ROUND_BASE + r` of every masking round `r` that aborted,
//! as soon as the period's committee certificates are stored (until then it waits for them,
//! at most `--rerun-open-wait` seconds: then the campaign gives the re-run up, the give-up is
//! committed to the fallback log, the model carries over, and no process opens the re-run
//! afterwards).
//! The re-run's setup comes from `CertifiedFallback`: the manifest, the stored certificates
//! and the model round `r` was bound to, the derivation every site and member runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amalgam_consortium::VerifiedManifest;
use amalgam_net::ProblemCode;
use amalgam_net::fallback_api::fallback_round_of;
use amalgam_proto::{AggregateOutput, SiteId};
use amalgam_server::campaign::{GiveUpFuture, ReRunEnd, ReRunFuture, ReRuns};
use amalgam_server::consortium::ConsortiumView;
use amalgam_server::events::open_sqlite;
use amalgam_server::fallback::http::{FallbackApp, fallback_router};
use amalgam_server::fallback::state::FallbackEnd;
use amalgam_server::fallback::{CertifiedFallback, FallbackService};
use amalgam_server::{Service, ServiceConfig};

use crate::Failure;

/// Model digests masking rounds were bound to, as the masking service reports them.
type Bound = Arc<Mutex<BTreeMap<u64, [u8; 32]>>>;

/// The lock the re-run opener, the campaign's give-up and `--round`'s open hold from their
/// check to their commit: a re-run is either opened or given up, never both, and never
/// opened once a later masking round exists. (The give-up itself is in the fallback log.)
pub type ReRunGate = Arc<tokio::sync::Mutex<()>>;

/// Whether `manifest` runs fallback re-runs: the policy allows them and a committee exists.
pub fn enabled(manifest: &VerifiedManifest) -> bool {
    manifest.fallback().allowed
        && manifest.committee().is_some()
        && !manifest.decryptors().is_empty()
}

/// Copies the masking rounds' bound models into `bound` (only hex digests of 32 bytes).
async fn learn(service: &Service, bound: &Bound) -> Vec<u64> {
    let Ok(st) = service.status().await else {
        return Vec::new();
    };
    let mut aborted = Vec::new();
    let mut map = bound
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for r in &st.rounds {
        if let Some(d) = hex::decode(&r.model_digest)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
        {
            map.insert(r.round, d);
        }
        if r.phase == "aborted" {
            aborted.push(r.round);
        }
    }
    aborted
}

/// The fallback service over its own log next to `db`, and the routes to merge.
pub async fn start(
    manifest: &Arc<VerifiedManifest>,
    service: &Service,
    db: &Path,
    config: ServiceConfig,
) -> Result<(FallbackService, ReRunGate, axum::Router), Failure> {
    let bound: Bound = Arc::new(Mutex::new(BTreeMap::new()));
    // Replayed fallback rounds need their bound models before the service starts.
    learn(service, &bound).await;
    let path = db.with_file_name(format!(
        "{}.fallback",
        db.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("events.db")
    ));
    let (log, _writer) = open_sqlite(&path).map_err(|e| Failure::failed(e.to_string()))?;
    let lookup = bound.clone();
    let setups = CertifiedFallback {
        manifest: (**manifest).clone(),
        bound_model: Box::new(move |r| {
            lookup
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&r)
                .copied()
        }),
        // The cohort closes as soon as every site uploaded, else at the deadline.
        target: Some(manifest.sites().len()),
    };
    let view: Arc<dyn ConsortiumView> = manifest.clone();
    let fallback = FallbackService::start(view.clone(), Arc::new(setups), Arc::new(log), config)
        .map_err(|e| Failure::failed(format!("fallback log {path:?}: {e}")))?;
    let routes = fallback_router(FallbackApp {
        service: fallback.clone(),
        consortium: view,
        insecure: false,
    });
    let gate: ReRunGate = Arc::default();
    tokio::spawn(open_reruns(
        service.clone(),
        fallback.clone(),
        bound,
        gate.clone(),
    ));
    Ok((fallback, gate, routes))
}

/// Opens the re-run of each aborted masking round once; a round whose period certificates
/// are not all stored yet is tried again on the next pass, until the campaign gives it up
/// or a later masking round opens.
async fn open_reruns(service: Service, fallback: FallbackService, bound: Bound, gate: ReRunGate) {
    let mut done: BTreeSet<u64> = BTreeSet::new();
    loop {
        for r in learn(&service, &bound).await {
            if done.contains(&r) {
                continue;
            }
            // Held until the open commits, so `give_up` sees either the open or nothing.
            let held = gate.lock().await;
            // Given up, or a later round opened on model_r: never opened now (the service
            // refuses it too); one already open stays open.
            let given_up = fallback.rerun_given_up(r).await.unwrap_or(false);
            if given_up || service.round_ids().into_iter().any(|id| id > r) {
                done.insert(r);
                continue;
            }
            match fallback.open_rerun(&service, r).await {
                Ok(round) => {
                    tracing::info!(masking_round = r, round, "fallback re-run opened");
                    done.insert(r);
                }
                Err(p) if p.code == ProblemCode::PeerDuplicate => {
                    done.insert(r);
                }
                Err(p) => tracing::debug!(masking_round = r, detail = %p.detail, "re-run waits"),
            }
            drop(held);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The campaign's view of the re-runs: how the re-run of an aborted round ended, its exact
/// sum reduced mod 2^b (the sum masking would have published).
pub struct FollowReRuns {
    /// The fallback service.
    pub fallback: FallbackService,
    /// The masking service (a last attempt to open the re-run before giving it up).
    pub service: Service,
    /// Input bits b.
    pub bits: u32,
    /// The lock shared with the opener and `--round`.
    pub gate: ReRunGate,
    /// How long a re-run may take to open before the campaign gives it up.
    pub open_wait: Duration,
}

impl ReRuns for FollowReRuns {
    fn wait_end(&self, round: u64, wait: Duration) -> ReRunFuture<'_> {
        Box::pin(async move {
            let Some(fr) = fallback_round_of(round) else {
                return Ok(None);
            };
            let failed = || "the fallback log failed; restart the aggregator".to_string();
            if self.fallback.storage_failed() {
                return Err(failed());
            }
            // Given up before a restart: the re-run never opens, model_r carries over.
            if matches!(self.fallback.rerun_given_up(round).await, Ok(true)) {
                return Ok(Some(ReRunEnd::GivenUp));
            }
            let end = match self
                .fallback
                .wait_for(fr, wait, |st| st.end().cloned())
                .await
            {
                Ok(Some(end)) => end,
                Ok(None) => return Ok(None),
                Err(_) if self.fallback.storage_failed() => return Err(failed()),
                // Not opened yet (the committee's certificates are missing): ask again later.
                Err(_) => {
                    tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                    return Ok(None);
                }
            };
            let mask = 1u64.checked_shl(self.bits).map_or(u64::MAX, |m| m - 1);
            Ok(Some(match end {
                FallbackEnd::Finished(res) => ReRunEnd::Published {
                    round: fr,
                    output: AggregateOutput {
                        sum: res.sum.iter().map(|v| v & mask).collect(),
                        contributors: res.contributors.iter().map(|&c| SiteId(c)).collect(),
                        dropped: Vec::new(),
                        blamed: Vec::new(),
                    },
                },
                FallbackEnd::Aborted(_) => ReRunEnd::Aborted,
            }))
        })
    }

    fn give_up(&self, round: u64) -> GiveUpFuture<'_> {
        Box::pin(async move {
            let _held = self.gate.lock().await;
            let opened = match fallback_round_of(round) {
                Some(fr) => match self.fallback.with_round(fr, |_| ()).await {
                    Ok(()) => true,
                    Err(p) if p.code == ProblemCode::RoundUnknown => false,
                    // Its state cannot be read (storage failed): never give up blind, and
                    // stop the campaign rather than wait on a log that refuses everything.
                    Err(p) => return Err(format!("fallback re-run state: {}", p.detail)),
                },
                // No re-run id exists for it: there is nothing to open.
                None => false,
            };
            if opened {
                return Ok(false);
            }
            // A last attempt under the lock: certificates stored since the opener's last pass
            // must not lose the re-run to the deadline.
            match self.fallback.open_rerun(&self.service, round).await {
                Ok(fr) => {
                    tracing::info!(masking_round = round, round = fr, "fallback re-run opened");
                    Ok(false)
                }
                Err(p) if p.code == ProblemCode::PeerDuplicate => Ok(false),
                // Committed to the fallback log before round r+1 can open on model_r; not
                // recorded (storage failed): never given up without the record, the campaign
                // stops instead.
                Err(p) => {
                    let given_up = self
                        .fallback
                        .give_up_rerun(round)
                        .await
                        .map_err(|e| format!("re-run give-up not recorded: {}", e.detail))?;
                    tracing::debug!(masking_round = round, detail = %p.detail, given_up, "re-run give-up");
                    Ok(given_up)
                }
            }
        })
    }

    fn open_wait(&self) -> Duration {
        self.open_wait
    }
}
