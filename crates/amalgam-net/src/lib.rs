//! Amalgam's transport layer, shared by the aggregator, the site agent and the decryptor
//! (normative text: `protocol-spec/service.md`).
//!
//! * [`tls`]: TLS 1.3 only, exactly one crypto provider (ring, see [`install_crypto_provider`]).
//!   Members authenticate with a self-signed certificate over their Ed25519 identity key and
//!   the aggregator accepts exactly the manifest's keys (raw 32-byte SPKI equality); the
//!   aggregator's TLS key is separate and renewable, bound to its pinned identity key by a
//!   signed certificate extension ([`tls::binding`]).
//! * [`problem`]: RFC 9457 problem+json with stable codes.
//! * [`api`]: route constants, headers and the JSON status types of the HTTP API;
//!   [`summary`]: the signed ledger summary sites post and the server verifies.
//! * [`client`]: a reqwest client over the pinned TLS configuration with retries, jittered
//!   backoff and `Retry-After`, re-sending identical bytes.
//! * [`insecure`]: the loopback-only development mode and its checks.

pub mod api;
pub mod client;
pub mod fallback_api;
pub mod insecure;
pub mod problem;
pub mod summary;
pub mod tls;

pub use problem::{Problem, ProblemCode};
pub use tls::{AggregatorPin, PinError, TlsError, TlsIdentity};

/// Installs ring as the process-wide rustls crypto provider. Every Amalgam binary calls this
/// first: rustls 0.23 panics at the first handshake when two providers are compiled in and
/// none was chosen. Every configuration built here also names ring explicitly, so the default
/// only matters to code outside this crate. Returns `false` when a provider was already
/// installed (by an earlier call: the workspace builds no other provider).
pub fn install_crypto_provider() -> bool {
    rustls::crypto::ring::default_provider()
        .install_default()
        .is_ok()
}
