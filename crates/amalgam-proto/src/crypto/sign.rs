//! Ed25519 identity signatures (spec §4.8), always verified with `verify_strict`.
//!
//! A site → aggregator message is signed over
//! `SIG_MESSAGE || context (32) || SHA-256(body)`, where `body` is the message's canonical
//! encoding up to (excluding) the signature and `context` is the round context for
//! AdvertiseKeys and the session id afterwards. The consistency signature is over
//! `SIG_CONSISTENCY || session_id || encoding(survivor set)`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::labels;
use crate::params::SiteId;

fn message_input(context: &[u8; 32], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(labels::SIG_MESSAGE.len() + 64);
    m.extend_from_slice(labels::SIG_MESSAGE);
    m.extend_from_slice(context);
    m.extend_from_slice(&Sha256::digest(body));
    m
}

/// Signs a message body.
pub fn sign_message(key: &SigningKey, context: &[u8; 32], body: &[u8]) -> [u8; 64] {
    key.sign(&message_input(context, body)).to_bytes()
}

/// Verifies a message body signature (strict).
pub fn verify_message(key: &VerifyingKey, context: &[u8; 32], body: &[u8], sig: &[u8; 64]) -> bool {
    key.verify_strict(&message_input(context, body), &Signature::from_bytes(sig))
        .is_ok()
}

/// Canonical encoding of a survivor set: u32 count || ascending u16 ids.
pub fn survivor_set_bytes(set: &[SiteId]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + 2 * set.len());
    v.extend_from_slice(&(set.len() as u32).to_be_bytes());
    for id in set {
        v.extend_from_slice(&id.0.to_be_bytes());
    }
    v
}

fn consistency_input(session_id: &[u8; 32], set: &[SiteId]) -> Vec<u8> {
    let mut m = Vec::with_capacity(labels::SIG_CONSISTENCY.len() + 36 + 2 * set.len());
    m.extend_from_slice(labels::SIG_CONSISTENCY);
    m.extend_from_slice(session_id);
    m.extend_from_slice(&survivor_set_bytes(set));
    m
}

/// Signs the survivor set (consistency check).
pub fn sign_survivors(key: &SigningKey, session_id: &[u8; 32], set: &[SiteId]) -> [u8; 64] {
    key.sign(&consistency_input(session_id, set)).to_bytes()
}

/// Verifies a survivor-set signature (strict).
pub fn verify_survivors(
    key: &VerifyingKey,
    session_id: &[u8; 32],
    set: &[SiteId],
    sig: &[u8; 64],
) -> bool {
    key.verify_strict(
        &consistency_input(session_id, set),
        &Signature::from_bytes(sig),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_context_and_body() {
        let sk = SigningKey::from_bytes(&[1; 32]);
        let vk = sk.verifying_key();
        let sig = sign_message(&sk, &[2; 32], b"body");
        assert!(verify_message(&vk, &[2; 32], b"body", &sig));
        assert!(!verify_message(&vk, &[3; 32], b"body", &sig));
        assert!(!verify_message(&vk, &[2; 32], b"bodz", &sig));
        let set = [SiteId(0), SiteId(2)];
        let s = sign_survivors(&sk, &[2; 32], &set);
        assert!(verify_survivors(&vk, &[2; 32], &set, &s));
        assert!(!verify_survivors(&vk, &[2; 32], &[SiteId(0)], &s));
        assert!(
            !verify_message(&vk, &[2; 32], &survivor_set_bytes(&set), &s),
            "labels separate"
        );
    }
}
