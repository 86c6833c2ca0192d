//! The two certificate verifiers: the aggregator's check of members (SPKI equality with a
//! manifest key) and the members' check of the aggregator (the signed identity binding).

use std::collections::BTreeSet;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError,
    PeerIncompatible, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::binding::{AggregatorPin, PinError, TlsBinding};
use super::certs::{binding_value, parse, spki_ed25519};

fn pin_err(e: PinError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// Whether `err` (or any error in its source chain) is a [`PinError`] from the aggregator pin:
/// the client reached a server that is not the pinned aggregator.
pub fn is_pin_mismatch(err: &(dyn std::error::Error + 'static)) -> Option<PinError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(p) = e.downcast_ref::<PinError>() {
            return Some(p.clone());
        }
        if let Some(Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))) =
            e.downcast_ref::<Error>()
            && let Some(p) = inner.downcast_ref::<PinError>()
        {
            return Some(p.clone());
        }
        // reqwest and hyper wrap the rustls error inside io::Error.
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(p) = is_pin_mismatch(inner)
        {
            return Some(p);
        }
        cur = e.source();
    }
    None
}

fn tls13_only(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    provider: &CryptoProvider,
) -> Result<HandshakeSignatureValid, Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(Error::PeerIncompatible(
            PeerIncompatible::NoSignatureSchemesInCommon,
        ));
    }
    verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// The aggregator's client-certificate verifier: accepts a certificate iff its SPKI is an
/// Ed25519 key whose raw 32 bytes equal one of the manifest's member keys. Possession of the
/// key is proved by the TLS 1.3 CertificateVerify signature, checked with the provider's
/// algorithms. Dates and the self-signature are not consulted: the key is the identity.
#[derive(Debug)]
pub struct MemberVerifier {
    keys: BTreeSet<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl MemberVerifier {
    /// A verifier for exactly `keys`.
    pub fn new(keys: Vec<[u8; 32]>, provider: Arc<CryptoProvider>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
            provider,
        }
    }
}

impl ClientCertVerifier for MemberVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // A client without a certificate fails the handshake: an unauthenticated peer never
        // reaches the HTTP layer, so it cannot hold a connection slot beyond the short
        // handshake timeout nor read the status (participation counts are sensitive).
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if !intermediates.is_empty() {
            return Err(Error::InvalidCertificate(CertificateError::BadEncoding));
        }
        let cert = parse(end_entity.as_ref())
            .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let key = spki_ed25519(&cert)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.keys.contains(&key) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("TLS 1.2 is refused: TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls13_only(message, cert, dss, &self.provider)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// A member's server-certificate verifier: accepts the aggregator's certificate iff its
/// identity binding verifies under the pinned key for this consortium and this certificate's
/// SPKI, and is unexpired. The server name is not consulted (the key is the identity).
#[derive(Debug)]
pub struct PinnedAggregatorVerifier {
    pin: AggregatorPin,
    provider: Arc<CryptoProvider>,
}

impl PinnedAggregatorVerifier {
    /// A verifier for `pin`.
    pub fn new(pin: AggregatorPin, provider: Arc<CryptoProvider>) -> Self {
        Self { pin, provider }
    }

    /// The check itself, at `now` (Unix seconds), for tests and diagnostics.
    pub fn check(&self, end_entity: &CertificateDer<'_>, now: u64) -> Result<(), PinError> {
        let cert = parse(end_entity.as_ref()).ok_or(PinError::Unparsable)?;
        let value = binding_value(&cert)
            .map_err(|()| PinError::Malformed("duplicated or mis-encoded extension"))?
            .ok_or(PinError::NoBinding)?;
        let binding = TlsBinding::decode(value)?;
        self.pin
            .check(cert.tbs_certificate.subject_pki.raw, &binding, now)
    }
}

impl ServerCertVerifier for PinnedAggregatorVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity, now.as_secs())
            .map_err(pin_err)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("TLS 1.2 is refused: TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls13_only(message, cert, dss, &self.provider)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}
