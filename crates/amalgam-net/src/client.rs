//! An HTTP client for the aggregator API over the pinned mutual-TLS configuration, with
//! retries: connection failures, 5xx, 503 and 425 are retried with jittered exponential
//! backoff (or the server's `Retry-After`, capped), re-sending the identical bytes — the
//! server's idempotency makes a repeated upload harmless. Other 4xx are final.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::problem::Problem;

/// Retry behaviour.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total (at least 1).
    pub attempts: u32,
    /// First backoff.
    pub base: Duration,
    /// Largest backoff, and cap on an honoured `Retry-After`.
    pub max: Duration,
    /// Per-request timeout (covers long-polls: keep it above the wait).
    pub timeout: Duration,
    /// Largest response body read.
    pub max_body: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
            timeout: Duration::from_secs(90),
            max_body: 1 << 30,
        }
    }
}

/// A client error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server is not the pinned aggregator.
    #[error("{0}")]
    PinMismatch(crate::tls::PinError),
    /// Transport failure after every retry.
    #[error("transport: {0}")]
    Transport(#[source] reqwest::Error),
    /// The response body exceeded the policy's bound.
    #[error("response body exceeds {max} bytes")]
    BodyTooLarge {
        /// The bound.
        max: usize,
    },
    /// The client could not be built.
    #[error("client configuration: {0}")]
    Build(String),
}

impl ClientError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        match crate::tls::is_pin_mismatch(&e) {
            Some(p) => ClientError::PinMismatch(p),
            None => ClientError::Transport(e),
        }
    }
}

/// A response: status, selected headers, body.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// `Retry-After` seconds, if sent.
    pub retry_after: Option<u64>,
    /// The phase deadline header (Unix ms), if sent.
    pub deadline_ms: Option<u64>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// The problem document of an error response.
    pub fn problem(&self) -> Option<Problem> {
        if self.status.is_success() {
            None
        } else {
            Problem::from_json(&self.body)
        }
    }
}

/// The API client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    policy: RetryPolicy,
}

impl ApiClient {
    /// A client for `base` (`https://host:port`) over `tls` (from [`crate::tls::client_config`]).
    pub fn new(
        base: &str,
        tls: rustls::ClientConfig,
        policy: RetryPolicy,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .timeout(policy.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            policy,
        })
    }

    /// A plain-HTTP client for loopback development (`--insecure`): refuses other URLs.
    pub fn insecure(base: &str, policy: RetryPolicy) -> Result<Self, ClientError> {
        crate::insecure::require_loopback_url(base)
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(policy.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            policy,
        })
    }

    /// `GET path`, with retries.
    pub async fn get(&self, path: &str) -> Result<ApiResponse, ClientError> {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with `body` (binary), with retries re-sending the identical bytes.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> Result<ApiResponse, ClientError> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// One request, no retry.
    pub async fn once(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<ApiResponse, ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(b.to_vec());
        }
        let mut resp = req.send().await.map_err(ClientError::from_reqwest)?;
        let status = resp.status();
        let header_u64 = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let retry_after = header_u64(reqwest::header::RETRY_AFTER.as_str());
        let deadline_ms = header_u64(crate::api::HEADER_DEADLINE);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(ClientError::from_reqwest)? {
            if body.len() + chunk.len() > self.policy.max_body {
                return Err(ClientError::BodyTooLarge {
                    max: self.policy.max_body,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(ApiResponse {
            status,
            retry_after,
            deadline_ms,
            body,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ApiResponse, ClientError> {
        let attempts = self.policy.attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= attempts;
            match self.once(method.clone(), path, body.as_deref()).await {
                Ok(r) if retryable(r.status) && !last => {
                    let wait = r
                        .retry_after
                        .map(Duration::from_secs)
                        .unwrap_or_else(|| backoff(&self.policy, attempt));
                    tokio::time::sleep(wait.min(self.policy.max)).await;
                }
                Ok(r) => return Ok(r),
                Err(ClientError::Transport(e))
                    if !last && (e.is_connect() || e.is_timeout() || e.is_request()) =>
                {
                    tracing::debug!(attempt, "transport error, retrying: {e}");
                    tokio::time::sleep(backoff(&self.policy, attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn retryable(s: StatusCode) -> bool {
    s == StatusCode::SERVICE_UNAVAILABLE || s == StatusCode::TOO_EARLY || s.is_server_error()
}

/// Full-jitter exponential backoff: uniform in [0, min(max, base·2^(attempt-1))].
fn backoff(p: &RetryPolicy, attempt: u32) -> Duration {
    let exp = p
        .base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(p.max);
    let millis = u64::try_from(exp.as_millis()).unwrap_or(u64::MAX);
    let r = getrandom::u64().unwrap_or(0);
    Duration::from_millis(if millis == 0 { 0 } else { r % (millis + 1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_by_cap() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
            ..RetryPolicy::default()
        };
        for attempt in 1..40 {
            assert!(backoff(&p, attempt) <= Duration::from_millis(500));
        }
        assert!(backoff(&p, 1) <= Duration::from_millis(100));
    }

    #[test]
    fn retry_classes() {
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable(StatusCode::TOO_EARLY));
        assert!(!retryable(StatusCode::CONFLICT));
        assert!(!retryable(StatusCode::PAYLOAD_TOO_LARGE));
    }
}
