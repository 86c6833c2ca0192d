//! Row metadata and the hash chain over it.
//!
//! Each row stores `row_hash = SHA-256(DOMAIN ‖ prev_row_hash ‖ row)`, where `row` is the
//! fixed-layout encoding below (sequence number, round, kind, phase, sender, storage, body
//! length and digest, response digest). The genesis `prev_row_hash` is 32 zero bytes. A
//! changed field breaks the row's own hash; a deleted row leaves a gap in the sequence
//! numbers; a row moved to another position breaks its successor's hash.

use sha2::{Digest, Sha256};

use super::types::EventKind;
use crate::crypto::sha256;

const DOMAIN: &[u8] = b"amalgam-store/event/v1";

/// How a row's body is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storage {
    /// In the row, plaintext (public kinds).
    InlinePlain = 0,
    /// In the row, sealed under the round key.
    InlineSealed = 1,
    /// In a public blob file named by the digest.
    BlobPlain = 2,
    /// In a vault blob file, sealed under the round key.
    BlobSealed = 3,
}

impl Storage {
    pub(crate) fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Storage::InlinePlain,
            1 => Storage::InlineSealed,
            2 => Storage::BlobPlain,
            3 => Storage::BlobSealed,
            _ => return None,
        })
    }

    pub(crate) fn choose(secret: bool, inline: bool) -> Self {
        match (secret, inline) {
            (false, true) => Storage::InlinePlain,
            (true, true) => Storage::InlineSealed,
            (false, false) => Storage::BlobPlain,
            (true, false) => Storage::BlobSealed,
        }
    }
}

/// Everything about a row that the chain covers.
#[derive(Debug, Clone)]
pub(crate) struct RowMeta {
    pub seq: u64,
    pub round: u64,
    pub kind: EventKind,
    pub phase: u8,
    pub sender: Option<u32>,
    pub storage: Storage,
    pub body_len: u64,
    pub body_sha256: [u8; 32],
    pub response: Option<Vec<u8>>,
}

impl RowMeta {
    /// `SHA-256(DOMAIN ‖ prev ‖ row)`.
    pub(crate) fn chain_hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update(prev);
        h.update(self.seq.to_be_bytes());
        h.update(self.round.to_be_bytes());
        h.update(self.kind.code().to_be_bytes());
        h.update([self.phase]);
        match self.sender {
            Some(s) => {
                h.update([1]);
                h.update(s.to_be_bytes());
            }
            None => h.update([0; 5]),
        }
        h.update([self.storage as u8]);
        h.update(self.body_len.to_be_bytes());
        h.update(self.body_sha256);
        match &self.response {
            Some(r) => {
                h.update([1]);
                h.update((r.len() as u64).to_be_bytes());
                h.update(sha256(r));
            }
            None => h.update([0; 41]),
        }
        h.finalize().into()
    }
}
