//! The HTTP API (spec `service.md` §4) over axum: routing, authentication of the member from
//! its connection (never from a header), bounded bodies and problem+json errors.

use std::time::Duration;

use amalgam_net::api::{self, Anchors, ServerTime};
use amalgam_net::problem::PROBLEM_JSON;
use amalgam_net::{Problem, ProblemCode};
use amalgam_proto::{Phase, SiteId};
use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::{BodyExt, Limited};

use crate::consortium::MemberRole;
use crate::limits::MAX_SIGNED_BODY;
use crate::round::DownloadView;
use crate::service::{Service, now_ms};

/// The authenticated member of a connection: the raw Ed25519 key of its verified client
/// certificate, set by the TLS listener per connection; `None` without a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub Option<[u8; 32]>);

/// Shared handler state.
#[derive(Debug, Clone)]
pub struct App {
    /// The service.
    pub service: Service,
    /// Plain-HTTP development mode: member routes refused.
    pub insecure: bool,
}

/// A problem as an HTTP response.
pub struct ApiError(pub Problem);

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        ApiError(p)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let p = self.0;
        let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, p.to_json()).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = p.retry_after_s {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

type ApiResult = Result<Response, ApiError>;

impl App {
    fn refuse(&self, p: Problem) -> ApiError {
        self.service.metrics().reject(p.code);
        ApiError(p)
    }

    fn member(&self, peer: Peer) -> Result<MemberRole, ApiError> {
        if self.insecure {
            return Err(self.refuse(Problem::new(
                ProblemCode::InsecureMode,
                "insecure mode authenticates nobody: member routes are closed",
            )));
        }
        let key = peer.0.ok_or_else(|| {
            self.refuse(Problem::new(
                ProblemCode::AuthNoClientCert,
                "this route needs the member's client certificate",
            ))
        })?;
        self.service.consortium().role_of(&key).ok_or_else(|| {
            self.refuse(Problem::new(
                ProblemCode::AuthUnknownPeer,
                "key is not a member",
            ))
        })
    }

    fn site(&self, peer: Peer) -> Result<SiteId, ApiError> {
        match self.member(peer)? {
            MemberRole::Site(id) => Ok(id),
            MemberRole::Decryptor => Err(self.refuse(Problem::new(
                ProblemCode::AuthWrongRole,
                "only sites may use this route",
            ))),
        }
    }
}

fn parse_round(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().map_err(|_| {
        ApiError(Problem::new(
            ProblemCode::BadRequest,
            "round must be an unsigned integer",
        ))
    })
}

fn parse_phase(s: &str) -> Result<Phase, ApiError> {
    api::phase_from_segment(s)
        .ok_or_else(|| ApiError(Problem::new(ProblemCode::BadRequest, "unknown phase")))
}

fn parse_wait(q: Option<String>) -> Duration {
    let secs = q
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("wait="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        .min(api::MAX_WAIT_S);
    Duration::from_secs(secs)
}

/// Reads at most `max` bytes of `body`: 413 from the declared length before reading, or as
/// soon as the stream passes the bound (nothing beyond it is buffered). Shared by the masking
/// and fallback routers, which each report the refusal their own way.
pub(crate) async fn read_bounded_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<Vec<u8>, Problem> {
    let too_large = || {
        Problem::new(
            ProblemCode::BodyTooLarge,
            format!("body exceeds the {max}-byte bound of this route and round"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(Problem::new(
            ProblemCode::BodyMalformed,
            "body could not be read",
        )),
    }
}

/// [`read_bounded_body`], a refusal counted in the masking router's metrics.
async fn read_bounded(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<Vec<u8>, ApiError> {
    read_bounded_body(headers, body, max)
        .await
        .map_err(|p| app.refuse(p))
}

fn bytes_response(
    status: StatusCode,
    body: Vec<u8>,
    deadline: Option<u64>,
    content_type: &'static str,
) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(d) = deadline {
        r.headers_mut()
            .insert(api::HEADER_DEADLINE, HeaderValue::from(d));
    }
    r
}

async fn upload(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Path((round, phase)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let site = app.site(peer)?;
    let round = parse_round(&round)?;
    let phase = parse_phase(&phase)?;
    let max = app
        .service
        .max_upload(round, phase)
        .await
        .map_err(|p| app.refuse(p))?;
    let bytes = read_bounded(&app, &headers, body, max).await?;
    let (resp, k) = app
        .service
        .upload_counted(round, site, phase, bytes)
        .await?;
    let r = bytes_response(StatusCode::OK, resp, None, "application/json");
    Ok(crate::fault::after_response(r, k))
}

async fn download(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Path((round, phase)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let site = app.site(peer)?;
    let round = parse_round(&round)?;
    let phase = parse_phase(&phase)?;
    let (view, deadline) = app
        .service
        .download(round, site, phase, parse_wait(q))
        .await
        .map_err(|p| app.refuse(p))?;
    Ok(match view {
        DownloadView::Ready(b) => {
            app.service.metrics().bytes_out.inc_by(b.len() as u64);
            bytes_response(
                StatusCode::OK,
                b,
                Some(deadline),
                "application/octet-stream",
            )
        }
        DownloadView::NothingForYou => bytes_response(
            StatusCode::NO_CONTENT,
            Vec::new(),
            Some(deadline),
            "application/octet-stream",
        ),
        DownloadView::NotYet => {
            let mut r = ApiError(
                Problem::new(ProblemCode::NotYet, "the phase has not closed yet").retry_after(1),
            )
            .into_response();
            r.headers_mut()
                .insert(api::HEADER_DEADLINE, HeaderValue::from(deadline));
            r
        }
        DownloadView::Closed => {
            return Err(app.refuse(Problem::new(
                ProblemCode::RoundClosed,
                "the round aborted before this phase closed",
            )));
        }
        DownloadView::Shredded => {
            return Err(app.refuse(Problem::new(
                ProblemCode::RoundShredded,
                "the round ended and its messages were erased; its result stays available",
            )));
        }
    })
}

/// `GET /v1/rounds/{r}/model`: model_r's canonical bytes and digest, for any member.
async fn model(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
) -> ApiResult {
    app.member(peer)?;
    let round = parse_round(&round)?;
    let digest = app
        .service
        .with_round(round, |st| st.model_digest())
        .await
        .map_err(|p| app.refuse(p))?;
    let Some(bytes) = app.service.model_bytes(round) else {
        return Err(app.refuse(Problem::new(
            ProblemCode::ModelUnavailable,
            format!("the model of round {round} is not held here"),
        )));
    };
    let mut r = bytes_response(
        StatusCode::OK,
        bytes.as_ref().clone(),
        None,
        "application/octet-stream",
    );
    if let Ok(v) = HeaderValue::from_str(&hex::encode(digest)) {
        r.headers_mut().insert(api::HEADER_MODEL_DIGEST, v);
    }
    Ok(r)
}

async fn result(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    app.member(peer)?;
    let round = parse_round(&round)?;
    match app
        .service
        .result(round, parse_wait(q))
        .await
        .map_err(|p| app.refuse(p))?
    {
        Some(r) => Ok(Json(r).into_response()),
        None => {
            let status = app.service.round_status(round).await?;
            if let Some(reason) = status.aborted {
                Err(app.refuse(Problem::new(
                    ProblemCode::RoundClosed,
                    format!("the round aborted: {reason}"),
                )))
            } else {
                Err(ApiError(
                    Problem::new(ProblemCode::NotYet, "the round has not finished").retry_after(1),
                ))
            }
        }
    }
}

async fn mine_latest(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
) -> ApiResult {
    let site = app.site(peer)?;
    let round = parse_round(&round)?;
    let latest = app
        .service
        .with_round(round, |st| st.latest_of(site).map(<[u8]>::to_vec))
        .await
        .map_err(|p| app.refuse(p))?;
    Ok(match latest {
        Some(b) => bytes_response(StatusCode::OK, b, None, "application/octet-stream"),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn signed_post(
    app: &App,
    peer: Peer,
    round: &str,
    headers: &HeaderMap,
    body: Body,
    decline: bool,
) -> ApiResult {
    let site = app.site(peer)?;
    let round = parse_round(round)?;
    let bytes = read_bounded(app, headers, body, MAX_SIGNED_BODY).await?;
    let resp = if decline {
        app.service.decline(round, site, bytes).await?
    } else {
        app.service.summary(round, site, bytes).await?
    };
    Ok(bytes_response(
        StatusCode::OK,
        resp,
        None,
        "application/json",
    ))
}

async fn summary(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    signed_post(&app, peer, &round, &headers, body, false).await
}

async fn decline(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    signed_post(&app, peer, &round, &headers, body, true).await
}

async fn anchors(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Path(site): Path<String>,
) -> ApiResult {
    app.member(peer)?;
    let site = site.parse::<u16>().map_err(|_| {
        ApiError(Problem::new(
            ProblemCode::BadRequest,
            "site must be an index",
        ))
    })?;
    let summaries = app
        .service
        .anchors(SiteId(site))
        .await
        .map_err(|p| app.refuse(p))?
        .into_iter()
        .map(|(r, b)| (r, hex::encode(b)))
        .collect();
    Ok(Json(Anchors { site, summaries }).into_response())
}

async fn round_status(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
) -> ApiResult {
    app.member(peer)?;
    let round = parse_round(&round)?;
    let s = app
        .service
        .round_status(round)
        .await
        .map_err(|p| app.refuse(p))?;
    let mut r = Json(&s).into_response();
    if let Some(d) = s.deadline_ms {
        r.headers_mut()
            .insert(api::HEADER_DEADLINE, HeaderValue::from(d));
    }
    Ok(r)
}

/// Status and time need a member certificate: participation counts per phase are
/// sensitive. Insecure mode (loopback development only) authenticates nobody and serves them.
fn member_or_loopback_dev(app: &App, peer: Peer) -> Result<(), ApiError> {
    if app.insecure {
        return Ok(());
    }
    app.member(peer).map(|_| ())
}

async fn status(State(app): State<App>, Extension(peer): Extension<Peer>) -> ApiResult {
    member_or_loopback_dev(&app, peer)?;
    let status = app.service.status().await.map_err(|p| app.refuse(p))?;
    Ok(Json(status).into_response())
}

async fn time(State(app): State<App>, Extension(peer): Extension<Peer>) -> ApiResult {
    member_or_loopback_dev(&app, peer)?;
    Ok(Json(ServerTime { unix_ms: now_ms() }).into_response())
}

async fn not_found() -> ApiError {
    ApiError(Problem::new(ProblemCode::NotFound, "no such route"))
}

/// The API router (main listener). The listener adds the connection's [`Peer`].
pub fn router(app: App) -> Router {
    Router::new()
        .route(api::STATUS, get(status))
        .route(api::TIME, get(time))
        .route(api::ROUND, get(round_status))
        .route(api::MASKING_PHASE, get(download).post(upload))
        .route(api::RESULT, get(result))
        .route(api::MINE_LATEST, get(mine_latest))
        .route(api::SUMMARY, axum::routing::post(summary))
        .route(api::DECLINE, axum::routing::post(decline))
        .route(api::MODEL, get(model))
        .route(api::ANCHORS, get(anchors))
        .fallback(not_found)
        .with_state(app)
}

/// The metrics router (`/healthz`, `/metrics`), for the separate loopback listener.
pub fn metrics_router(service: Service) -> Router {
    Router::new()
        .route(api::HEALTHZ, get(|| async { "ok\n" }))
        .route(
            api::METRICS,
            get(|State(s): State<Service>| async move {
                let mut r = s.metrics().encode().into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                r
            }),
        )
        .with_state(service)
}
