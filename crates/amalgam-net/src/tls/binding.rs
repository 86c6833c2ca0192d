//! The aggregator pin: the manifest pins the aggregator's Ed25519 *identity* key; its TLS key
//! is separate and renewable. The identity key signs a binding
//!
//! ```text
//! "amalgam/v1/tls-binding" ‖ consortium_digest[32] ‖ SHA-256(TLS cert SPKI DER)[32] ‖ not_after u64 BE
//! ```
//!
//! carried in the TLS certificate as a non-critical extension ([`BINDING_OID`]) whose value is
//! `0x01 ‖ not_after u64 BE (Unix seconds) ‖ signature[64]`. Renewing the TLS certificate
//! needs a new binding signature from the identity key, not a re-signed manifest.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// OID of the binding extension (Amalgam's private arc).
pub const BINDING_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 58888, 1, 1];
/// Domain separation of the binding signature.
pub const BINDING_DOMAIN: &[u8] = b"amalgam/v1/tls-binding";
/// Version byte of the extension value.
pub const BINDING_VERSION: u8 = 1;
/// Encoded length of the extension value.
pub const BINDING_LEN: usize = 1 + 8 + 64;

/// Why the aggregator's certificate was refused. Every variant means the server is not the
/// aggregator the manifest pins: probable TLS interception, or a misconfigured aggregator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// The certificate does not parse.
    #[error("pin mismatch (probable TLS interception): certificate does not parse")]
    Unparsable,
    /// No binding extension.
    #[error("pin mismatch (probable TLS interception): certificate carries no identity binding")]
    NoBinding,
    /// The extension is not a well-formed binding.
    #[error("pin mismatch (probable TLS interception): malformed identity binding: {0}")]
    Malformed(&'static str),
    /// The signature does not verify under the pinned key (other key, other consortium, or
    /// other TLS key).
    #[error(
        "pin mismatch (probable TLS interception): binding not signed by the pinned aggregator key for this certificate and consortium"
    )]
    BadSignature,
    /// The binding is past its `not_after`.
    #[error(
        "aggregator identity binding expired at {not_after} (now {now}): the aggregator must renew it"
    )]
    Expired {
        /// Binding expiry, Unix seconds.
        not_after: u64,
        /// Verification time, Unix seconds.
        now: u64,
    },
}

/// The decoded binding extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsBinding {
    /// Expiry, Unix seconds.
    pub not_after: u64,
    /// Ed25519 signature of the identity key over [`binding_message`].
    pub signature: [u8; 64],
}

/// The bytes the identity key signs.
pub fn binding_message(consortium_digest: &[u8; 32], spki_der: &[u8], not_after: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(BINDING_DOMAIN.len() + 72);
    m.extend_from_slice(BINDING_DOMAIN);
    m.extend_from_slice(consortium_digest);
    m.extend_from_slice(&Sha256::digest(spki_der));
    m.extend_from_slice(&not_after.to_be_bytes());
    m
}

impl TlsBinding {
    /// Extension value bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(BINDING_LEN);
        v.push(BINDING_VERSION);
        v.extend_from_slice(&self.not_after.to_be_bytes());
        v.extend_from_slice(&self.signature);
        v
    }

    /// Strict decoding: exact length, known version.
    pub fn decode(bytes: &[u8]) -> Result<Self, PinError> {
        if bytes.len() != BINDING_LEN {
            return Err(PinError::Malformed("wrong length"));
        }
        if bytes[0] != BINDING_VERSION {
            return Err(PinError::Malformed("unknown version"));
        }
        let mut na = [0u8; 8];
        na.copy_from_slice(&bytes[1..9]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[9..]);
        Ok(Self {
            not_after: u64::from_be_bytes(na),
            signature,
        })
    }
}

/// What a client pins: the aggregator's identity key and the consortium it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatorPin {
    /// The aggregator's Ed25519 identity key from the verified manifest.
    pub identity: VerifyingKey,
    /// The verified manifest's consortium digest.
    pub consortium_digest: [u8; 32],
}

impl AggregatorPin {
    /// Checks `binding` for a certificate whose SPKI is `spki_der`, at `now` (Unix seconds).
    pub fn check(&self, spki_der: &[u8], binding: &TlsBinding, now: u64) -> Result<(), PinError> {
        let msg = binding_message(&self.consortium_digest, spki_der, binding.not_after);
        let sig = Signature::from_bytes(&binding.signature);
        self.identity
            .verify_strict(&msg, &sig)
            .map_err(|_| PinError::BadSignature)?;
        if now >= binding.not_after {
            return Err(PinError::Expired {
                not_after: binding.not_after,
                now,
            });
        }
        Ok(())
    }
}
