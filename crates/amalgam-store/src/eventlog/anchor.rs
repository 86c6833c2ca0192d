//! The event log's anchor file, `<db>.anchor`: the head (sequence number and row hash) this
//! writer committed, kept outside the database so that a log edited with its hash chain
//! recomputed, cut at the tail, extended, or stripped of its write-ahead log no longer
//! matches it.
//!
//! A commit is bracketed by two atomic writes: before it, `committed = old head, pending =
//! new head`; after it, `committed = new head`. At open the log's head must equal `committed`
//! or `pending` (a crash on either side of the commit); anything shorter is
//! [`StoreError::Truncated`], anything else [`StoreError::AnchorMismatch`]. The file is not
//! secret and carries no key: whoever can rewrite it along with the database defeats it,
//! which is why the server also puts [`super::EventLogHandle::head`] into signed records.
//!
//! File: `MAGIC ‖ committed seq (u64 BE) ‖ committed hash ‖ flag ‖ pending seq ‖ pending
//! hash ‖ SHA-256(all before)[..8]`, the checksum only catching a damaged file.

use std::path::PathBuf;

use crate::crypto::sha256;
use crate::error::{Result, StoreError};
use crate::fs::{atomic_write, read_bounded};

const MAGIC: &[u8; 8] = b"AMANCH\x00\x01";
const LEN: usize = 8 + 40 + 1 + 40 + 8;

/// A chain head: sequence number and row hash (0 and zeros for the empty log).
pub(crate) type Head = (u64, [u8; 32]);

/// What the anchor file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AnchorState {
    pub committed: Head,
    pub pending: Option<Head>,
}

/// The anchor file of one log.
#[derive(Debug)]
pub(crate) struct Anchor {
    path: PathBuf,
}

fn put_head(out: &mut Vec<u8>, head: &Head) {
    out.extend_from_slice(&head.0.to_be_bytes());
    out.extend_from_slice(&head.1);
}

fn get_head(b: &[u8]) -> Head {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&b[..8]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&b[8..40]);
    (u64::from_be_bytes(seq), hash)
}

fn encode(state: &AnchorState) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEN);
    out.extend_from_slice(MAGIC);
    put_head(&mut out, &state.committed);
    match &state.pending {
        Some(p) => {
            out.push(1);
            put_head(&mut out, p);
        }
        None => out.extend_from_slice(&[0; 41]),
    }
    let check = sha256(&out);
    out.extend_from_slice(&check[..8]);
    out
}

impl Anchor {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn mismatch(&self, seq: u64, what: &'static str) -> StoreError {
        StoreError::AnchorMismatch {
            path: self.path.clone(),
            seq,
            what,
        }
    }

    /// The recorded state; `None` when there is no file.
    pub(crate) fn load(&self) -> Result<Option<AnchorState>> {
        let bytes = match read_bounded(&self.path, LEN as u64, "anchor file") {
            Ok(b) => b,
            Err(StoreError::TooLarge { .. }) => return Err(self.mismatch(0, "anchor file damaged")),
            Err(e) => return Err(e),
        };
        let Some(bytes) = bytes else { return Ok(None) };
        if bytes.len() != LEN || !bytes.starts_with(MAGIC) || !matches!(bytes[48], 0 | 1) {
            return Err(self.mismatch(0, "anchor file damaged"));
        }
        let state = AnchorState {
            committed: get_head(&bytes[8..48]),
            pending: (bytes[48] == 1).then(|| get_head(&bytes[49..89])),
        };
        if encode(&state) != bytes {
            return Err(self.mismatch(0, "anchor file checksum mismatch"));
        }
        Ok(Some(state))
    }

    /// Replaces the file atomically (fsynced, directory fsynced).
    pub(crate) fn store(&self, state: &AnchorState) -> Result<()> {
        Ok(atomic_write(&self.path, &encode(state), 0o600)?)
    }

    /// Checks the log's verified `head` against the file at open and, if it is accepted,
    /// records it as committed. An empty log without a file is a new log.
    pub(crate) fn check_at_open(&self, head: Head) -> Result<()> {
        let state = match self.load()? {
            Some(s) => s,
            None if head.0 == 0 => AnchorState {
                committed: head,
                pending: None,
            },
            None => return Err(self.mismatch(head.0, "anchor file missing for a non-empty log")),
        };
        let ok = head == state.committed || state.pending == Some(head);
        if !ok {
            if head.0 < state.committed.0 {
                return Err(StoreError::Truncated {
                    path: self.path.clone(),
                    found: head.0,
                    anchored: state.committed.0,
                });
            }
            let what = if head.0 == state.committed.0 {
                "row hash differs from the anchored head (rows rewritten)"
            } else {
                "log extends past the anchored head (rows not committed by this writer)"
            };
            return Err(self.mismatch(head.0, what));
        }
        if state.pending.is_some() || self.load()?.is_none() {
            self.store(&AnchorState {
                committed: head,
                pending: None,
            })?;
        }
        Ok(())
    }
}
