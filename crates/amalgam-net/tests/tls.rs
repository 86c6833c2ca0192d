//! Handshake tests: members are accepted by key equality only, the aggregator by its signed
//! binding only, and every refusal is the specific one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use amalgam_net::tls::{
    self, AggregatorPin, PinError, PinnedAggregatorVerifier, binding::binding_message,
};
use ed25519_dalek::{Signer, SigningKey};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::prelude::{FromDer, X509Certificate};

const DIGEST: [u8; 32] = [7; 32];
const FAR: u64 = 4_000_000_000;

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn member(i: u8) -> tls::TlsIdentity {
    tls::member_identity(&tls::ed25519_pkcs8_from_seed(&[i; 32])).unwrap()
}

fn aggregator(id: &SigningKey, not_after: u64) -> tls::TlsIdentity {
    tls::aggregator_identity(&DIGEST, not_after, |m| id.sign(m).to_bytes()).unwrap()
}

fn pin(id: &SigningKey) -> AggregatorPin {
    AggregatorPin {
        identity: id.verifying_key(),
        consortium_digest: DIGEST,
    }
}

fn spki_of(der: &[u8]) -> Vec<u8> {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.tbs_certificate.subject_pki.raw.to_vec()
}

/// Runs one handshake and a one-byte exchange; returns (server result with peer key, client result).
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: rustls::ClientConfig,
) -> (Result<Option<[u8; 32]>, String>, Result<(), String>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let srv = tokio::spawn(async move {
        let mut s = acceptor.accept(a).await.map_err(|e| e.to_string())?;
        let peer = s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| tls::member_key_of_cert(c).unwrap());
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        s.write_all(&buf).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        Ok(peer)
    });
    let cli = async move {
        let name = ServerName::try_from("aggregator.invalid").unwrap();
        let mut c =
            connector.connect(name, b).await.map_err(
                |e| match amalgam_net::tls::is_pin_mismatch(&e) {
                    Some(p) => format!("PIN:{p:?}"),
                    None => e.to_string(),
                },
            )?;
        c.write_all(b"x").await.map_err(|e| e.to_string())?;
        c.flush().await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1];
        c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok(())
    };
    let client_res = cli.await;
    let server_res = srv.await.unwrap();
    (server_res, client_res)
}

#[tokio::test]
async fn member_accepted_by_key_equality_and_learned_from_connection() {
    amalgam_net::install_crypto_provider();
    let agg = key(100);
    let members: Vec<[u8; 32]> = (1..=3).map(|i| key(i).verifying_key().to_bytes()).collect();
    let server = tls::server_config(&aggregator(&agg, FAR), members).unwrap();
    let client = tls::client_config(&member(2), pin(&agg)).unwrap();
    let (s, c) = handshake(server, client).await;
    assert_eq!(c, Ok(()));
    assert_eq!(s.unwrap(), Some(key(2).verifying_key().to_bytes()));
}

#[tokio::test]
async fn unknown_member_key_fails_the_handshake() {
    let agg = key(100);
    let members: Vec<[u8; 32]> = (1..=3).map(|i| key(i).verifying_key().to_bytes()).collect();
    let server = tls::server_config(&aggregator(&agg, FAR), members).unwrap();
    let client = tls::client_config(&member(9), pin(&agg)).unwrap();
    let (s, c) = handshake(server, client).await;
    let err = s.unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("unknown issuer"),
        "{err}"
    );
    assert!(c.is_err());
}

#[tokio::test]
async fn anonymous_client_is_refused_at_the_handshake() {
    let agg = key(100);
    let server = tls::server_config(
        &aggregator(&agg, FAR),
        vec![key(1).verifying_key().to_bytes()],
    )
    .unwrap();
    let client = tls::anonymous_client_config(pin(&agg)).unwrap();
    let (s, _) = handshake(server, client).await;
    // The server aborts the handshake; the client may already have sent its Finished.
    let err = s.unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn wrong_pinned_key_is_a_pin_mismatch() {
    let agg = key(100);
    let server = tls::server_config(
        &aggregator(&agg, FAR),
        vec![key(1).verifying_key().to_bytes()],
    )
    .unwrap();
    let client = tls::client_config(&member(1), pin(&key(101))).unwrap();
    let (_, c) = handshake(server, client).await;
    assert_eq!(c, Err(format!("PIN:{:?}", PinError::BadSignature)));
}

#[test]
fn expired_binding_refused() {
    let agg = key(100);
    let id = aggregator(&agg, 1_000);
    let v = PinnedAggregatorVerifier::new(pin(&agg), tls::provider());
    assert_eq!(v.check(&id.chain[0], 999), Ok(()));
    assert_eq!(
        v.check(&id.chain[0], 1_000),
        Err(PinError::Expired {
            not_after: 1_000,
            now: 1_000
        })
    );
}

#[test]
fn binding_for_another_spki_or_consortium_refused() {
    let agg = key(100);
    let v = PinnedAggregatorVerifier::new(pin(&agg), tls::provider());
    // A genuine binding, lifted onto a certificate over another TLS key.
    let genuine = aggregator(&agg, FAR);
    let genuine_spki = spki_of(&genuine.chain[0]);
    let transplanted = tls::aggregator_identity(&DIGEST, FAR, |_| {
        agg.sign(&binding_message(&DIGEST, &genuine_spki, FAR))
            .to_bytes()
    })
    .unwrap();
    assert_eq!(v.check(&genuine.chain[0], 0), Ok(()));
    assert_eq!(
        v.check(&transplanted.chain[0], 0),
        Err(PinError::BadSignature)
    );
    // A binding for another consortium.
    let other = tls::aggregator_identity(&[8; 32], FAR, |m| agg.sign(m).to_bytes()).unwrap();
    assert_eq!(v.check(&other.chain[0], 0), Err(PinError::BadSignature));
    // A member certificate (no binding) presented as the aggregator.
    assert_eq!(v.check(&member(1).chain[0], 0), Err(PinError::NoBinding));
}

#[test]
fn binding_extension_tamper_is_refused() {
    let agg = key(100);
    let v = PinnedAggregatorVerifier::new(pin(&agg), tls::provider());
    let id = aggregator(&agg, FAR);
    let der = id.chain[0].as_ref().to_vec();
    // Extending not_after in the extension breaks the signature (or the certificate parse).
    let na = FAR.to_be_bytes();
    let pos = der
        .windows(9)
        .position(|w| w[0] == 1 && w[1..] == na)
        .unwrap();
    let mut tampered = der.clone();
    tampered[pos + 8] ^= 1;
    let tampered = rustls_pki_types::CertificateDer::from(tampered);
    assert!(v.check(&tampered, 0).is_err());
}

#[test]
fn no_resumption_no_early_data() {
    let agg = key(100);
    let s = tls::server_config(&aggregator(&agg, FAR), vec![]).unwrap();
    assert_eq!(s.max_early_data_size, 0);
    assert_eq!(s.send_tls13_tickets, 0);
    let c = tls::client_config(&member(1), pin(&agg)).unwrap();
    assert!(!c.enable_early_data);
}

#[test]
fn member_certificate_carries_the_identity_key() {
    let c = member(5);
    assert_eq!(
        tls::member_key_of_cert(&c.chain[0]).unwrap(),
        key(5).verifying_key().to_bytes()
    );
    // The aggregator's TLS key is a fresh key, not its identity key.
    let agg = key(100);
    let a = aggregator(&agg, FAR);
    assert_ne!(
        tls::member_key_of_cert(&a.chain[0]).unwrap(),
        agg.verifying_key().to_bytes()
    );
}
