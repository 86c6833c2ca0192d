//! The fallback routes (spec `service.md` §9). The member comes from the connection's verified
//! client certificate, never from a header: sites get the upload route, decryptors of the
//! round's committee get the relay, signature and release routes (each other role: 403
//! `auth.wrong-role`), every member may read the statement and the result.

use std::sync::Arc;
use std::time::Duration;

use amalgam_net::fallback_api as fapi;
use amalgam_net::{Problem, ProblemCode, api};
use amalgam_proto::SiteId;
use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::service::FallbackService;
use crate::consortium::{ConsortiumView, MemberRole};
use crate::http::{ApiError, Peer};

/// Length of an encoded `StatementSignature`: header, member, signature.
pub const SIGNATURE_LEN: usize = 4 + 1 + 64;

/// Shared state of the fallback routes.
#[derive(Clone)]
pub struct FallbackApp {
    /// The fallback service.
    pub service: FallbackService,
    /// The consortium (roles).
    pub consortium: Arc<dyn ConsortiumView>,
    /// Plain-HTTP development mode: every fallback route is closed.
    pub insecure: bool,
}

impl core::fmt::Debug for FallbackApp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FallbackApp").finish_non_exhaustive()
    }
}

type ApiResult = Result<Response, ApiError>;

fn problem(code: ProblemCode, detail: impl Into<String>) -> ApiError {
    ApiError(Problem::new(code, detail))
}

impl FallbackApp {
    fn key(&self, peer: Peer) -> Result<[u8; 32], ApiError> {
        if self.insecure {
            return Err(problem(
                ProblemCode::InsecureMode,
                "insecure mode authenticates nobody: fallback routes are closed",
            ));
        }
        let key = peer.0.ok_or_else(|| {
            problem(
                ProblemCode::AuthNoClientCert,
                "this route needs the member's client certificate",
            )
        })?;
        if self.consortium.role_of(&key).is_none() {
            return Err(problem(ProblemCode::AuthUnknownPeer, "key is not a member"));
        }
        Ok(key)
    }

    fn site(&self, peer: Peer) -> Result<SiteId, ApiError> {
        let key = self.key(peer)?;
        match self.consortium.role_of(&key) {
            Some(MemberRole::Site(id)) => Ok(id),
            _ => Err(problem(
                ProblemCode::AuthWrongRole,
                "only sites may use this route",
            )),
        }
    }

    async fn decryptor(&self, peer: Peer, round: u64) -> Result<usize, ApiError> {
        let key = self.key(peer)?;
        let wrong_role = || {
            problem(
                ProblemCode::AuthWrongRole,
                "only the round's committee members may use this route",
            )
        };
        // The role first: a site must not learn from 404 vs 403 which fallback rounds exist.
        if !matches!(self.consortium.role_of(&key), Some(MemberRole::Decryptor)) {
            return Err(wrong_role());
        }
        self.service
            .with_round(round, |st| st.member_index(&key))
            .await?
            .ok_or_else(wrong_role)
    }
}

fn parse_round(s: &str) -> Result<u64, ApiError> {
    let r = s
        .parse::<u64>()
        .map_err(|_| problem(ProblemCode::BadRequest, "round must be an unsigned integer"))?;
    if !fapi::is_fallback_round(r) {
        return Err(problem(
            ProblemCode::RoundWrongScheme,
            format!("round {r} is a masking round id"),
        ));
    }
    Ok(r)
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

/// [`crate::http::read_bounded_body`], the refusal answered as is.
async fn read_bounded(headers: &HeaderMap, body: Body, max: usize) -> Result<Vec<u8>, ApiError> {
    crate::http::read_bounded_body(headers, body, max)
        .await
        .map_err(ApiError)
}

fn binary(body: Vec<u8>) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

fn json_bytes(body: Vec<u8>) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn not_yet(what: &str) -> ApiError {
    ApiError(
        Problem::new(ProblemCode::NotYet, format!("{what} is not available yet")).retry_after(1),
    )
}

async fn upload(
    State(app): State<FallbackApp>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let site = app.site(peer)?;
    let round = parse_round(&round)?;
    let max = app.service.with_round(round, |st| st.upload_len()).await?;
    let bytes = read_bounded(&headers, body, max).await?;
    Ok(json_bytes(app.service.upload(round, site, bytes).await?))
}

/// The authenticated site's own accepted upload digest (the site's rollback check).
async fn mine(
    State(app): State<FallbackApp>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
) -> ApiResult {
    let site = app.site(peer)?;
    let round = parse_round(&round)?;
    match app
        .service
        .with_round(round, |st| st.upload_digest(site))
        .await?
    {
        Some(sha) => Ok(Json(fapi::FallbackMine {
            round,
            sha256: hex::encode(sha),
        })
        .into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn views(
    State(app): State<FallbackApp>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
) -> ApiResult {
    let round = parse_round(&round)?;
    let member = app.decryptor(peer, round).await?;
    Ok(binary(
        app.service
            .with_round(round, |st| st.views(member))
            .await??,
    ))
}

async fn statement(
    State(app): State<FallbackApp>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    app.key(peer)?;
    let round = parse_round(&round)?;
    match app
        .service
        .wait_for(round, parse_wait(q), |st| {
            st.statement_bytes()
                .map(<[u8]>::to_vec)
                .map(Ok)
                .or_else(|| st.end().map(|_| Err(())))
        })
        .await?
    {
        Some(Ok(b)) => Ok(binary(b)),
        Some(Err(())) => Err(problem(
            ProblemCode::RoundClosed,
            "the round ended before its cohort closed",
        )),
        None => Err(not_yet("the cohort statement")),
    }
}

async fn signatures_get(
    State(app): State<FallbackApp>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
) -> ApiResult {
    let round = parse_round(&round)?;
    app.decryptor(peer, round).await?;
    Ok(binary(
        app.service.with_round(round, |st| st.signatures()).await?,
    ))
}

async fn signatures_post(
    State(app): State<FallbackApp>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let round = parse_round(&round)?;
    let member = app.decryptor(peer, round).await?;
    let bytes = read_bounded(&headers, body, SIGNATURE_LEN).await?;
    Ok(json_bytes(
        app.service.signature(round, member, bytes).await?,
    ))
}

async fn release(
    State(app): State<FallbackApp>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let round = parse_round(&round)?;
    let member = app.decryptor(peer, round).await?;
    let max = app
        .service
        .with_round(round, |st| st.max_release_len())
        .await?;
    let bytes = read_bounded(&headers, body, max).await?;
    Ok(json_bytes(app.service.release(round, member, bytes).await?))
}

async fn result(
    State(app): State<FallbackApp>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    app.key(peer)?;
    let round = parse_round(&round)?;
    if let Some(r) = app.service.result(round, parse_wait(q)).await? {
        return Ok(Json(r).into_response());
    }
    let aborted = app
        .service
        .with_round(round, |st| match st.end() {
            Some(super::state::FallbackEnd::Aborted(r)) => Some(r.clone()),
            _ => None,
        })
        .await?;
    match aborted {
        Some(r) => Err(problem(
            ProblemCode::RoundClosed,
            format!("the round aborted: {r}"),
        )),
        None => Err(not_yet("the result")),
    }
}

/// A site's signed ledger summary after a fallback round (its anchor for the next charge).
async fn summary(
    State(app): State<FallbackApp>,
    Extension(peer): Extension<Peer>,
    Path(round): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let site = app.site(peer)?;
    let round = parse_round(&round)?;
    let bytes = read_bounded(&headers, body, amalgam_net::summary::LedgerSummary::LEN).await?;
    Ok(json_bytes(
        app.service.site_summary(round, site, bytes).await?,
    ))
}

/// A site's stored fallback summaries (any member may read them, as the masking anchors).
async fn anchors(
    State(app): State<FallbackApp>,
    Extension(peer): Extension<Peer>,
    Path(site): Path<String>,
) -> ApiResult {
    app.key(peer)?;
    let site = site
        .parse::<u16>()
        .map_err(|_| problem(ProblemCode::BadRequest, "site must be an index"))?;
    let summaries = app
        .service
        .anchors(SiteId(site))
        .await?
        .into_iter()
        .map(|(r, b)| (r, hex::encode(b)))
        .collect();
    Ok(Json(api::Anchors { site, summaries }).into_response())
}

/// A decryptor's own key-period certificate.
async fn committee_key_post(
    State(app): State<FallbackApp>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let key = app.key(peer)?;
    if !matches!(app.consortium.role_of(&key), Some(MemberRole::Decryptor)) {
        return Err(problem(
            ProblemCode::AuthWrongRole,
            "only decryptors post committee keys",
        ));
    }
    let bytes = read_bounded(&headers, body, fapi::MAX_COMMITTEE_KEY_BODY).await?;
    Ok(json_bytes(
        app.service.post_committee_key(key, bytes).await?,
    ))
}

/// Every stored certificate of `?period=p`.
async fn committee_keys(
    State(app): State<FallbackApp>,
    Extension(peer): Extension<Peer>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    app.key(peer)?;
    let period = q
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("period="))
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            problem(
                ProblemCode::BadRequest,
                "?period= must be an unsigned integer",
            )
        })?;
    Ok(binary(app.service.committee_keys(period).await?))
}

/// The fallback routes, to be merged into the main router (the listener adds [`Peer`]).
pub fn fallback_router(app: FallbackApp) -> Router {
    Router::new()
        .route(fapi::FALLBACK_UPLOAD, post(upload))
        .route(fapi::FALLBACK_MINE, get(mine))
        .route(fapi::FALLBACK_VIEWS, get(views))
        .route(fapi::FALLBACK_STATEMENT, get(statement))
        .route(
            fapi::FALLBACK_SIGNATURES,
            get(signatures_get).post(signatures_post),
        )
        .route(fapi::FALLBACK_RELEASE, post(release))
        .route(fapi::FALLBACK_RESULT, get(result))
        .route(fapi::FALLBACK_SUMMARY, post(summary))
        .route(fapi::FALLBACK_ANCHORS, get(anchors))
        .route(
            fapi::COMMITTEE_KEYS,
            get(committee_keys).post(committee_key_post),
        )
        .with_state(app)
}
