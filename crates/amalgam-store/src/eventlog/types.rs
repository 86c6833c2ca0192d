//! The event log's public value types.

/// What an event records. The server owns the meaning of each body; the log only decides
/// which bodies are round secrets (encrypted under the round key and shredded with it) and
/// which are the public record (kept after shredding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An accepted upload from `sender` (secret; unique per round, phase, sender).
    Upload,
    /// A phase-close decision (public: survivor sets, deadlines).
    PhaseClose,
    /// The exact bytes served to recipient `sender` (secret; unique per round, phase,
    /// recipient, so that a re-delivery is byte-identical).
    Download,
    /// A round was opened (public).
    RoundOpen,
    /// A round ended (public).
    RoundEnd,
    /// A round's released summary (public).
    Summary,
    /// Anything else the server records; treated as secret, since the log cannot know.
    Other(u16),
}

impl EventKind {
    /// The stored code: 1..=6 for the named kinds, `0x1_0000 + x` for `Other(x)`.
    pub fn code(self) -> u32 {
        match self {
            EventKind::Upload => 1,
            EventKind::PhaseClose => 2,
            EventKind::Download => 3,
            EventKind::RoundOpen => 4,
            EventKind::RoundEnd => 5,
            EventKind::Summary => 6,
            EventKind::Other(x) => 0x1_0000 + u32::from(x),
        }
    }

    /// The kind of a stored code; `None` for codes this build never writes.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => EventKind::Upload,
            2 => EventKind::PhaseClose,
            3 => EventKind::Download,
            4 => EventKind::RoundOpen,
            5 => EventKind::RoundEnd,
            6 => EventKind::Summary,
            c if c >= 0x1_0000 => EventKind::Other(u16::try_from(c - 0x1_0000).ok()?),
            _ => return None,
        })
    }

    /// Whether bodies of this kind are round secrets (vault-encrypted, shredded with the
    /// round): uploads, downloads and unknown kinds.
    pub fn is_secret(self) -> bool {
        matches!(
            self,
            EventKind::Upload | EventKind::Download | EventKind::Other(_)
        )
    }
}

/// An event to append. `Debug` shows body and response lengths only: a body may be a round
/// secret (a fallback ciphertext, a piece-sum release) and must not reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The round it belongs to (at most `i64::MAX`).
    pub round: u64,
    /// What it records.
    pub kind: EventKind,
    /// The protocol phase.
    pub phase: u8,
    /// The uploading site (uploads) or the recipient (downloads); required for both.
    pub sender: Option<u32>,
    /// The exact bytes (an upload as received, a download as served).
    pub body: Vec<u8>,
    /// The response the server sent for an upload, kept for idempotent re-sends.
    pub response: Option<Vec<u8>>,
}

/// A stored, verified event. `Debug` redacts the body and response as [`NewEvent`]'s does.
#[derive(Clone, PartialEq, Eq)]
pub struct Event {
    /// Its sequence number (1, 2, 3... with no gaps).
    pub seq: u64,
    /// Its round.
    pub round: u64,
    /// What it records.
    pub kind: EventKind,
    /// The protocol phase.
    pub phase: u8,
    /// The sender (uploads) or recipient (downloads).
    pub sender: Option<u32>,
    /// The body, checked against `body_sha256`; empty when `shredded`.
    pub body: Vec<u8>,
    /// SHA-256 of the body (kept after shredding).
    pub body_sha256: [u8; 32],
    /// The stored response, if any.
    pub response: Option<Vec<u8>>,
    /// True when the body was a round secret and its round was shredded: `body` is empty
    /// and only its digest remains.
    pub shredded: bool,
}

impl core::fmt::Debug for NewEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NewEvent")
            .field("round", &self.round)
            .field("kind", &self.kind)
            .field("phase", &self.phase)
            .field("sender", &self.sender)
            .field("body_len", &self.body.len())
            .field("response_len", &self.response.as_ref().map(Vec::len))
            .finish()
    }
}

impl core::fmt::Debug for Event {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Event")
            .field("seq", &self.seq)
            .field("round", &self.round)
            .field("kind", &self.kind)
            .field("phase", &self.phase)
            .field("sender", &self.sender)
            .field("body_len", &self.body.len())
            .field("body_sha256", &hex::encode(self.body_sha256))
            .field("response_len", &self.response.as_ref().map(Vec::len))
            .field("shredded", &self.shredded)
            .finish()
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    /// A secret body never reaches `Debug` output.
    #[test]
    fn debug_redacts_bodies_and_responses() {
        let secret = vec![0xAB; 40];
        let e = NewEvent {
            round: 1,
            kind: EventKind::Upload,
            phase: 0,
            sender: Some(2),
            body: secret.clone(),
            response: Some(vec![0xCD; 8]),
        };
        let out = format!("{e:?}");
        assert!(out.contains("body_len: 40"), "{out}");
        assert!(!out.contains("171") && !out.contains("205"), "{out}");
        let s = Event {
            seq: 1,
            round: 1,
            kind: EventKind::Upload,
            phase: 0,
            sender: Some(2),
            body: secret,
            body_sha256: [0; 32],
            response: None,
            shredded: false,
        };
        let out = format!("{s:?}");
        assert!(
            out.contains("body_len: 40") && !out.contains("171"),
            "{out}"
        );
    }
}

/// What the log holds for an upload key: enough to answer an identical re-send with the
/// original response, and a different one with a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpload {
    /// The upload's sequence number.
    pub seq: u64,
    /// SHA-256 of the stored body.
    pub body_sha256: [u8; 32],
    /// The response stored with it.
    pub response: Option<Vec<u8>>,
}

/// Limits and checks for an event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogOptions {
    /// Bodies up to this many bytes live in their row; longer ones in a blob file named by
    /// their SHA-256 (keeping megabyte uploads out of SQLite's write-ahead log).
    pub inline_max: usize,
    /// Largest body accepted ([`crate::StoreError::TooLarge`] above).
    pub max_body: usize,
    /// Largest stored response.
    pub max_response: usize,
    /// Most events in one `append_batch`.
    pub max_batch: usize,
    /// Accept a directory on a network file system (tests and deliberate setups only).
    pub allow_network_fs: bool,
}

impl Default for EventLogOptions {
    fn default() -> Self {
        Self {
            inline_max: 16 * 1024,
            max_body: 64 * 1024 * 1024,
            max_response: 64 * 1024,
            max_batch: 4096,
            allow_network_fs: false,
        }
    }
}

/// The durability settings an open log runs with, read back from SQLite (for tests and
/// `doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `PRAGMA journal_mode` ("wal").
    pub journal_mode: String,
    /// `PRAGMA synchronous` (2 = FULL).
    pub synchronous: i64,
    /// `PRAGMA foreign_keys`.
    pub foreign_keys: bool,
}

/// Largest meta key, in bytes.
pub const MAX_META_KEY: usize = 128;
/// Largest meta value, in bytes.
pub const MAX_META_VALUE: usize = 64 * 1024;
/// Largest nonce, in bytes.
pub const MAX_NONCE: usize = 64;
