//! The floor a masking round is measured against: over the same listener, connections and
//! event log, each site uploads its input packed at the round's B bits, once; the server
//! appends it to the log (or, for the unpersisted variant, does not), adds it with the same
//! packed-domain summation the aggregator uses, and serves the sum once, as the same JSON
//! result. No keys, masks, signatures or phase barriers.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amalgam_net::api::RoundResult;
use amalgam_proto::packed_sum::PackedSum;
use amalgam_proto::packing::packed_len;
use amalgam_proto::{Phase, RoundParams};
use amalgam_server::consortium::{ConsortiumView, MemberRole};
use amalgam_server::events::{EventKind, EventStore, NewEvent};
use amalgam_server::http::Peer;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use tokio::sync::watch;

/// Floor rounds are stored under `FLOOR_ROUND_BASE + round` so they never meet a masking
/// round's unique keys in a shared log.
pub const FLOOR_ROUND_BASE: u64 = 1 << 40;

struct Acc {
    round: u64,
    sum: PackedSum,
    got: BTreeSet<u16>,
    result: Option<Arc<RoundResult>>,
}

struct FloorState {
    consortium: Arc<dyn ConsortiumView>,
    params: RoundParams,
    store: Option<Arc<dyn EventStore>>,
    acc: Mutex<Acc>,
    done: watch::Sender<u64>,
}

/// `POST {prefix}/{round}` (the packed vector) and `GET {prefix}/{round}/result`, for the
/// sites of `consortium`; with `store`, each upload is appended before it is answered.
pub fn router(
    prefix: &str,
    consortium: Arc<dyn ConsortiumView>,
    params: RoundParams,
    store: Option<Arc<dyn EventStore>>,
) -> Router {
    let bits = params.sum_bits().get();
    let state = Arc::new(FloorState {
        consortium,
        params,
        store,
        acc: Mutex::new(Acc {
            round: 0,
            sum: PackedSum::new(bits, params.d()),
            got: BTreeSet::new(),
            result: None,
        }),
        done: watch::channel(0).0,
    });
    Router::new()
        .route(&format!("{prefix}/{{round}}"), post(upload))
        .route(&format!("{prefix}/{{round}}/result"), get(result))
        .with_state(state)
}

fn refuse(code: StatusCode, why: &str) -> Response {
    (code, why.to_owned()).into_response()
}

async fn upload(
    State(st): State<Arc<FloorState>>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<u64>,
    body: Body,
) -> Response {
    let Some(MemberRole::Site(id)) = peer.0.and_then(|k| st.consortium.role_of(&k)) else {
        return refuse(StatusCode::FORBIDDEN, "not a site");
    };
    let want = packed_len(st.params.d(), st.params.sum_bits().get());
    let bytes: Bytes = match axum::body::to_bytes(body, want).await {
        Ok(b) if b.len() == want => b,
        _ => return refuse(StatusCode::BAD_REQUEST, "not one packed vector"),
    };
    let st2 = st.clone();
    let done = tokio::task::spawn_blocking(move || {
        if let Some(store) = &st2.store {
            store
                .append_batch(vec![NewEvent {
                    round: FLOOR_ROUND_BASE + round,
                    kind: EventKind::Upload,
                    phase: Phase::MaskedInput.code(),
                    sender: Some(u32::from(id.0)),
                    body: bytes.to_vec(),
                    response: None,
                }])
                .map_err(|e| e.to_string())?;
        }
        let mut acc = st2.acc.lock().map_err(|_| "poisoned".to_owned())?;
        if acc.round != round {
            acc.round = round;
            acc.sum.clear(st2.params.d());
            acc.got.clear();
            acc.result = None;
        }
        if acc.got.insert(id.0) {
            acc.sum.add(&bytes);
        }
        if acc.got.len() == st2.params.n() && acc.result.is_none() {
            let mut out = vec![0u32; st2.params.d()];
            acc.sum.unpack_into(&mut out);
            acc.result = Some(Arc::new(RoundResult {
                round,
                sum: out.into_iter().map(u64::from).collect(),
                contributors: acc.got.iter().copied().collect(),
                dropped: vec![],
                blamed: vec![],
            }));
            return Ok::<bool, String>(true);
        }
        Ok(false)
    })
    .await;
    match done {
        Ok(Ok(finished)) => {
            if finished {
                st.done.send_replace(round);
            }
            (StatusCode::OK, "{}").into_response()
        }
        Ok(Err(e)) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e),
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "worker failed"),
    }
}

async fn result(
    State(st): State<Arc<FloorState>>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<u64>,
) -> Response {
    if peer.0.and_then(|k| st.consortium.role_of(&k)).is_none() {
        return refuse(StatusCode::FORBIDDEN, "not a member");
    }
    let mut rx = st.done.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|r| *r >= round)).await;
    if !matches!(waited, Ok(Ok(_))) {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "not finished");
    }
    let r = st
        .acc
        .lock()
        .ok()
        .and_then(|a| a.result.clone().filter(|r| r.round == round));
    match r {
        Some(r) => Json(r.as_ref()).into_response(),
        None => refuse(StatusCode::GONE, "a later floor round replaced it"),
    }
}
