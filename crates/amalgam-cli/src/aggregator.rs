//! The operator commands' connection to the aggregator: mutual TLS under the member's identity
//! key with the aggregator pinned by the verified manifest (or plain HTTP on loopback with
//! `--insecure`, which serves only `/v1/status` and `/v1/time`). Failures map to the exit
//! statuses of `main.rs`: 4 authentication (pin mismatch, refused member, 401/403), 5
//! unreachable.

use std::path::Path;
use std::time::Duration;

use amalgam_consortium::{IdentityKey, SignedManifest, VerifiedManifest};
use amalgam_net::api;
use amalgam_net::client::{ApiClient, ApiResponse, ClientError, RetryPolicy};
use amalgam_net::tls::{AggregatorPin, client_config, member_identity};

use crate::Failure;

/// Largest answer read from the small JSON routes (status, round, anchors, time).
pub const MAX_SMALL: usize = 1 << 20;

/// A verified manifest and the member key that verified it.
pub struct Member {
    /// The manifest, verified as this member's.
    pub manifest: VerifiedManifest,
    /// The member's identity key.
    pub identity: IdentityKey,
}

impl Member {
    /// Loads `key` and verifies `manifest` as that member's (signatures, rules, listed).
    pub fn load(manifest: &Path, key: &Path) -> Result<Self, Failure> {
        let identity = IdentityKey::load(key)?;
        let manifest =
            SignedManifest::read(manifest)?.verify_for(&identity.verifying_key(), None)?;
        Ok(Self { manifest, identity })
    }

    /// This member's site index, if it is a site.
    pub fn site(&self) -> Option<u16> {
        self.manifest.site_index(&self.identity.verifying_key())
    }
}

/// A blocking client over its own runtime.
pub struct Aggregator {
    rt: tokio::runtime::Runtime,
    client: ApiClient,
    /// The base URL, for messages.
    pub url: String,
}

/// The retry policy of a read command: a few quick attempts, then the error is reported.
fn policy(max_body: usize) -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(100),
        max: Duration::from_secs(2),
        timeout: Duration::from_secs(20),
        max_body,
    }
}

/// Classifies a client error: 4 for a pin mismatch or a handshake the aggregator refused
/// (this key is not a member of the consortium it serves), 5 for a host that does not answer.
pub fn client_failure(url: &str, e: &ClientError) -> Failure {
    match e {
        ClientError::PinMismatch(p) => Failure::with(
            4,
            format!("{url}: {p} (the server is not the aggregator the manifest pins)"),
        ),
        ClientError::Transport(t) => {
            let chain = error_chain(t);
            if chain.contains("alert") || chain.contains("certificate") || chain.contains("tls") {
                Failure::with(
                    4,
                    format!("{url}: TLS handshake refused (is this key a member?): {chain}"),
                )
            } else {
                Failure::with(5, format!("{url}: unreachable: {chain}"))
            }
        }
        other => Failure::failed(format!("{url}: {other}")),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

impl Aggregator {
    /// A client to `url` for `member`, or plain HTTP on loopback when `insecure`.
    pub fn connect(
        url: &str,
        member: &Member,
        insecure: bool,
        max_body: usize,
    ) -> Result<Self, Failure> {
        if !insecure && !url.starts_with("https://") {
            return Err(Failure::usage(format!(
                "{url}: the aggregator is https://host:port (plain http only with --insecure, on loopback)"
            )));
        }
        amalgam_net::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::failed(e.to_string()))?;
        let client = {
            let _guard = rt.enter();
            if insecure {
                ApiClient::insecure(url, policy(max_body))
                    .map_err(|e| Failure::usage(e.to_string()))?
            } else {
                let tls_identity = member_identity(&member.identity.to_pkcs8_der())
                    .map_err(|e| Failure::failed(e.to_string()))?;
                let pin = AggregatorPin {
                    identity: member.manifest.aggregator().key,
                    consortium_digest: member.manifest.consortium_digest(),
                };
                let tls = client_config(&tls_identity, pin)
                    .map_err(|e| Failure::failed(e.to_string()))?;
                ApiClient::new(url, tls, policy(max_body))
                    .map_err(|e| Failure::usage(format!("{url}: {e}")))?
            }
        };
        Ok(Self {
            rt,
            client,
            url: url.to_string(),
        })
    }

    /// `GET path`; transport failures classified, the answer returned whatever its status.
    pub fn get(&self, path: &str) -> Result<ApiResponse, Failure> {
        self.rt
            .block_on(self.client.get(path))
            .map_err(|e| client_failure(&self.url, &e))
    }

    /// `GET path` that must answer 2xx with JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        let r = self.get(path)?;
        if !r.status.is_success() {
            return Err(refusal(&self.url, path, &r));
        }
        serde_json::from_slice(&r.body)
            .map_err(|e| Failure::failed(format!("{}{path}: malformed answer: {e}", self.url)))
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Result<api::ServiceStatus, Failure> {
        self.json(api::STATUS)
    }
}

/// A non-success answer: 401/403 → 4, anything else → 1, with the problem's code and detail
/// (escaped and bounded: the text comes from the aggregator).
pub fn refusal(url: &str, path: &str, r: &ApiResponse) -> Failure {
    let status = r.status.as_u16();
    let what = r.problem().map_or_else(
        || format!("HTTP {status}"),
        |p| {
            format!(
                "{} ({status}): {}",
                amalgam_site::http::printable_detail(p.code.as_str()),
                amalgam_site::http::printable_detail(&p.detail)
            )
        },
    );
    let code = if status == 401 || status == 403 { 4 } else { 1 };
    Failure::with(code, format!("{url}{path}: {what}"))
}
