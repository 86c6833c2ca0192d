//! Shared test fixtures and byte utilities.
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

/// The spec's chain hash (persistence.md §2.2) of one row read from a raw connection: what
/// an attacker with write access to the files recomputes after editing a row.
pub fn recompute_row_hash(c: &rusqlite::Connection, seq: i64, prev: &[u8; 32]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    type Row = (
        i64,
        i64,
        i64,
        Option<i64>,
        i64,
        i64,
        Vec<u8>,
        Option<Vec<u8>>,
    );
    let (round, kind, phase, sender, storage, len, digest, response): Row = c
        .query_row(
            "SELECT round, kind, phase, sender, storage, body_len, body_sha256, response
             FROM events WHERE seq = ?1",
            [seq],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )
        .unwrap();
    let mut h = Sha256::new();
    h.update(b"amalgam-store/event/v1");
    h.update(prev);
    h.update((seq as u64).to_be_bytes());
    h.update((round as u64).to_be_bytes());
    h.update((kind as u32).to_be_bytes());
    h.update([phase as u8]);
    match sender {
        Some(s) => {
            h.update([1]);
            h.update((s as u32).to_be_bytes());
        }
        None => h.update([0; 5]),
    }
    h.update([storage as u8]);
    h.update((len as u64).to_be_bytes());
    h.update(&digest);
    match response {
        Some(r) => {
            h.update([1]);
            h.update((r.len() as u64).to_be_bytes());
            h.update(Sha256::digest(&r));
        }
        None => h.update([0; 41]),
    }
    h.finalize().into()
}

/// Recomputes and stores `row_hash` for rows `from..` (the triggers must be gone): the
/// forger's fix-up after editing row `from`.
pub fn rehash_from(c: &rusqlite::Connection, from: i64) {
    let max: i64 = c
        .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))
        .unwrap();
    let mut prev: [u8; 32] = if from == 1 {
        [0; 32]
    } else {
        c.query_row(
            "SELECT row_hash FROM events WHERE seq = ?1",
            [from - 1],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .unwrap()
        .try_into()
        .unwrap()
    };
    for seq in from..=max {
        let h = recompute_row_hash(c, seq, &prev);
        c.execute(
            "UPDATE events SET row_hash = ?1 WHERE seq = ?2",
            rusqlite::params![h.as_slice(), seq],
        )
        .unwrap();
        prev = h;
    }
}
