//! Certificates: members' self-signed certificates over their identity keys, the aggregator's
//! certificate over a fresh TLS key with the identity binding, and reading keys back.

use rcgen::{CertificateParams, CustomExtension, KeyPair, PKCS_ED25519, PublicKeyData};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use super::binding::{BINDING_LEN, BINDING_OID, TlsBinding, binding_message};
use super::{TlsError, TlsIdentity};

/// The Ed25519 algorithm OID (RFC 8410): 1.3.101.112.
const ED25519_OID: &[u64] = &[1, 3, 101, 112];

fn ed25519_keypair(pkcs8: &[u8]) -> Result<KeyPair, TlsError> {
    let der = PrivatePkcs8KeyDer::from(pkcs8);
    KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_ED25519)
        .map_err(|e| TlsError::BadIdentityKey(e.to_string()))
}

fn params(common_name: &str) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    Ok(p)
}

/// A member's TLS identity: a self-signed certificate whose SPKI is its Ed25519 identity key
/// (`pkcs8` as from `IdentityKey::to_pkcs8_der`). Validity dates are not checked by the
/// aggregator (it compares keys), so the certificate never needs renewal.
pub fn member_identity(pkcs8: &[u8]) -> Result<TlsIdentity, TlsError> {
    let kp = ed25519_keypair(pkcs8)?;
    let cert = params("amalgam member")?.self_signed(&kp)?;
    Ok(TlsIdentity::new(
        vec![cert.der().clone()],
        Zeroizing::new(pkcs8.to_vec()),
    ))
}

/// The aggregator's TLS identity: a fresh Ed25519 TLS key (OS randomness, through ring) and a
/// certificate carrying the binding signed by `sign` (the identity key's Ed25519 signature)
/// for `consortium_digest`, valid until `not_after` (Unix seconds).
pub fn aggregator_identity(
    consortium_digest: &[u8; 32],
    not_after: u64,
    sign: impl FnOnce(&[u8]) -> [u8; 64],
) -> Result<TlsIdentity, TlsError> {
    let kp = KeyPair::generate_for(&PKCS_ED25519)?;
    let spki = kp.subject_public_key_info();
    let signature = sign(&binding_message(consortium_digest, &spki, not_after));
    let value = TlsBinding {
        not_after,
        signature,
    }
    .encode();
    // The extension value is DER: an OCTET STRING holding the binding bytes.
    let mut content = Vec::with_capacity(2 + BINDING_LEN);
    content.push(0x04);
    content.push(BINDING_LEN as u8);
    content.extend_from_slice(&value);
    let mut p = params("amalgam aggregator")?;
    p.custom_extensions
        .push(CustomExtension::from_oid_content(BINDING_OID, content));
    let cert = p.self_signed(&kp)?;
    Ok(TlsIdentity::new(
        vec![cert.der().clone()],
        Zeroizing::new(kp.serialize_der()),
    ))
}

/// Parses a DER certificate strictly (no trailing bytes).
pub(crate) fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Some(cert),
        _ => None,
    }
}

/// The raw 32-byte Ed25519 public key in a certificate's SPKI, or an error if the certificate
/// does not parse or its key is not Ed25519 (RFC 8410: OID 1.3.101.112, no parameters).
pub fn member_key_of_cert(cert: &CertificateDer<'_>) -> Result<[u8; 32], TlsError> {
    let cert = parse(cert.as_ref()).ok_or(TlsError::BadCertificate("does not parse"))?;
    spki_ed25519(&cert)
}

pub(crate) fn spki_ed25519(cert: &X509Certificate<'_>) -> Result<[u8; 32], TlsError> {
    let spki = &cert.tbs_certificate.subject_pki;
    let is_ed25519 = spki
        .algorithm
        .algorithm
        .iter()
        .is_some_and(|arcs| arcs.eq(ED25519_OID.iter().copied()));
    if !is_ed25519 || spki.algorithm.parameters.is_some() {
        return Err(TlsError::BadCertificate("key is not Ed25519"));
    }
    if spki.subject_public_key.unused_bits != 0 {
        return Err(TlsError::BadCertificate("malformed Ed25519 key bits"));
    }
    <[u8; 32]>::try_from(spki.subject_public_key.data.as_ref())
        .map_err(|_| TlsError::BadCertificate("Ed25519 key is not 32 bytes"))
}

/// The binding extension's value (inside its OCTET STRING), if present exactly once.
pub(crate) fn binding_value<'a>(cert: &'a X509Certificate<'a>) -> Result<Option<&'a [u8]>, ()> {
    let mut found = None;
    for ext in cert.extensions() {
        let matches = ext
            .oid
            .iter()
            .is_some_and(|arcs| arcs.eq(BINDING_OID.iter().copied()));
        if matches {
            if found.is_some() {
                return Err(());
            }
            found = Some(ext.value);
        }
    }
    match found {
        None => Ok(None),
        Some(v)
            if v.len() == 2 + BINDING_LEN && v[0] == 0x04 && usize::from(v[1]) == BINDING_LEN =>
        {
            Ok(Some(&v[2..]))
        }
        Some(_) => Err(()),
    }
}

/// RFC 8410 PKCS#8 v1 encoding of an Ed25519 private key from its 32-byte seed (the fixed
/// 16-byte prefix, then the seed), wiped on drop. For keys held as raw seeds.
pub fn ed25519_pkcs8_from_seed(seed: &[u8; 32]) -> Zeroizing<Vec<u8>> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut v = Zeroizing::new(Vec::with_capacity(48));
    v.extend_from_slice(&PREFIX);
    v.extend_from_slice(seed);
    v
}
