//! Key rotation: the old key signs the new one, and the statement travels inside the epoch
//! that makes the new key a member (spec consortium.md §5).
//!
//! The same statement is what a site agent hands to its ε ledgers: amalgam-dp's
//! `Ledger::rotate_key` appends an entry signed by the old key with the new key's signature
//! inside, so an auditor follows the key change without trusting the manifest. Re-issuing a
//! manifest never resets a ledger.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::key::IdentityKey;
use crate::labels;

/// "Member `name` of `consortium` replaces `old_key` with `new_key` from `epoch` on", signed
/// by `old_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationStatement {
    /// The member's name (unchanged by the rotation).
    pub name: String,
    /// The epoch in which the new key takes effect.
    pub epoch: u64,
    /// The key being retired.
    #[serde(with = "crate::model::hex_key")]
    pub old_key: VerifyingKey,
    /// Its replacement (a member of `epoch`).
    #[serde(with = "crate::model::hex_key")]
    pub new_key: VerifyingKey,
    /// Signature by `old_key` over [`RotationStatement::message`].
    #[serde(with = "crate::model::hex64")]
    pub signature: [u8; 64],
}

impl RotationStatement {
    /// The signed message: label ‖ len(consortium) ‖ consortium ‖ len(name) ‖ name ‖ epoch ‖
    /// old key ‖ new key (lengths u32 big-endian, epoch u64 big-endian).
    pub fn message(
        consortium: &str,
        name: &str,
        epoch: u64,
        old_key: &VerifyingKey,
        new_key: &VerifyingKey,
    ) -> Vec<u8> {
        let mut m = labels::KEY_ROTATION.to_vec();
        for s in [consortium, name] {
            m.extend_from_slice(&(s.len() as u32).to_be_bytes());
            m.extend_from_slice(s.as_bytes());
        }
        m.extend_from_slice(&epoch.to_be_bytes());
        m.extend_from_slice(old_key.as_bytes());
        m.extend_from_slice(new_key.as_bytes());
        m
    }

    /// The old key's statement for `new_key`.
    pub fn sign(
        old: &IdentityKey,
        consortium: &str,
        name: &str,
        epoch: u64,
        new_key: VerifyingKey,
    ) -> Self {
        let old_key = old.verifying_key();
        let signature = old
            .sign(&Self::message(consortium, name, epoch, &old_key, &new_key))
            .to_bytes();
        Self {
            name: name.to_string(),
            epoch,
            old_key,
            new_key,
            signature,
        }
    }

    /// Whether the old key signed exactly this statement (`verify_strict`).
    pub fn verify(&self, consortium: &str) -> bool {
        if self.old_key.is_weak() || self.old_key == self.new_key {
            return false;
        }
        let msg = Self::message(
            consortium,
            &self.name,
            self.epoch,
            &self.old_key,
            &self.new_key,
        );
        self.old_key
            .verify_strict(&msg, &Signature::from_bytes(&self.signature))
            .is_ok()
    }
}
