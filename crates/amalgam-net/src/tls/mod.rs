//! TLS configurations: mutual TLS 1.3 where the server accepts exactly the consortium
//! members' identity keys and the client accepts exactly the aggregator its manifest pins.
//!
//! No certificate authority is involved: both sides compare keys. Session resumption and
//! 0-RTT are off, so every connection runs a full handshake with a fresh client signature
//! (there is no early data to replay, spec `service.md` §3).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

pub mod binding;
mod certs;
mod verifiers;

pub use binding::{AggregatorPin, PinError, TlsBinding};
pub use certs::{
    aggregator_identity, ed25519_pkcs8_from_seed, member_identity, member_key_of_cert,
};
pub use verifiers::{MemberVerifier, PinnedAggregatorVerifier, is_pin_mismatch};

/// Errors building TLS material or configurations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The identity key's PKCS#8 bytes are not an Ed25519 key.
    #[error("identity key is not an Ed25519 PKCS#8 key: {0}")]
    BadIdentityKey(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    CertGen(#[from] rcgen::Error),
    /// A certificate does not parse or carries no acceptable key.
    #[error("certificate refused: {0}")]
    BadCertificate(&'static str),
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain and its private key (PKCS#8), ready for a rustls configuration.
pub struct TlsIdentity {
    /// End-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    key: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl TlsIdentity {
    pub(crate) fn new(chain: Vec<CertificateDer<'static>>, key: Zeroizing<Vec<u8>>) -> Self {
        Self { chain, key }
    }

    /// A copy of the private key for rustls (which takes ownership).
    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.to_vec()))
    }
}

/// The one crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The aggregator's server configuration: TLS 1.3, its bound certificate, client certificates
/// checked by [`MemberVerifier`] against `member_keys` (raw Ed25519 public keys). Client
/// certificates are mandatory: a client without one, or with one over any other key, fails
/// the handshake.
pub fn server_config(
    identity: &TlsIdentity,
    member_keys: Vec<[u8; 32]>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = MemberVerifier::new(member_keys, provider.clone());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(identity.chain.clone(), identity.private_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// A member's client configuration: TLS 1.3, its identity certificate, the aggregator
/// accepted only through [`PinnedAggregatorVerifier`]. No resumption, no early data.
pub fn client_config(
    identity: &TlsIdentity,
    pin: AggregatorPin,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = PinnedAggregatorVerifier::new(pin, provider.clone());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(identity.chain.clone(), identity.private_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_early_data = false;
    Ok(config)
}

/// A client configuration with the pin but without a client certificate: for tests of the
/// server's refusal and for unauthenticated probes of `/v1/time`-like routes.
pub fn anonymous_client_config(pin: AggregatorPin) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = PinnedAggregatorVerifier::new(pin, provider.clone());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}
