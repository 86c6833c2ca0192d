//! Shared test helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use amalgam_store::{EventKind, NewEvent};

/// An upload event of `body` from `sender`.
pub fn upload(round: u64, phase: u8, sender: u32, body: Vec<u8>) -> NewEvent {
    NewEvent {
        round,
        kind: EventKind::Upload,
        phase,
        sender: Some(sender),
        response: Some(format!("ok:{round}:{phase}:{sender}").into_bytes()),
        body,
    }
}

/// A public event of `kind`.
pub fn public(round: u64, kind: EventKind, phase: u8, body: Vec<u8>) -> NewEvent {
    NewEvent {
        round,
        kind,
        phase,
        sender: None,
        body,
        response: None,
    }
}

/// A download served to `recipient`.
pub fn download(round: u64, phase: u8, recipient: u32, body: Vec<u8>) -> NewEvent {
    NewEvent {
        round,
        kind: EventKind::Download,
        phase,
        sender: Some(recipient),
        body,
        response: None,
    }
}

/// Deterministic filler bytes, distinct per `tag`.
pub fn bytes(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(tag))
        .collect()
}

/// Flips one bit of the file at `offset`.
pub fn flip(path: &std::path::Path, offset: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[offset] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

/// Index of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
