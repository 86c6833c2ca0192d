//! Verification of the event log's rows: the whole chain at open, and each row read while
//! open against the chain this process knows (verified at open or committed since), so that
//! a row rewritten in the file with its hashes recomputed is not served.

use super::chain::{RowMeta, row_meta, tampered};
use super::log::{EventLog, ROW_COLUMNS};
use super::types::Event;
use crate::error::Result;

impl EventLog {
    /// Walks every row in order: sequence numbers 1.. without gaps and each row hash equal
    /// to the recomputed chain. Returns the head and every row's (hash, round).
    #[allow(clippy::type_complexity)]
    pub(super) fn verify_chain(&self) -> Result<(u64, [u8; 32], Vec<([u8; 32], u64)>)> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {ROW_COLUMNS} FROM events ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        let (mut seq, mut prev, mut chain) = (0u64, [0u8; 32], Vec::new());
        while let Some(row) = rows.next()? {
            let (meta, stored) = row_meta(row)?;
            Self::check_link(seq, &prev, &meta, &stored)?;
            seq = meta.seq;
            prev = stored;
            chain.push((stored, meta.round));
        }
        Ok((seq, prev, chain))
    }

    pub(super) fn check_link(
        prev_seq: u64,
        prev: &[u8; 32],
        meta: &RowMeta,
        stored: &[u8; 32],
    ) -> Result<()> {
        if meta.seq != prev_seq + 1 {
            return Err(tampered(
                prev_seq + 1,
                "row missing (gap in sequence numbers)",
            ));
        }
        if meta.chain_hash(prev) != *stored {
            return Err(tampered(meta.seq, "row hash does not match the chain"));
        }
        Ok(())
    }

    /// Checks a row read back against the chain this process verified or committed: its
    /// recomputed hash must equal the known hash of its sequence number, chained from the
    /// known predecessor. A row rewritten with its hashes recomputed is refused.
    pub(super) fn check_known(&self, meta: &RowMeta, stored: &[u8; 32]) -> Result<()> {
        let known = usize::try_from(meta.seq - 1)
            .ok()
            .and_then(|i| self.chain.get(i))
            .ok_or_else(|| tampered(meta.seq, "row was not committed by this writer"))?;
        let prev = match meta.seq {
            1 => [0; 32],
            s => self.chain[(s - 2) as usize].0,
        };
        if *stored != known.0 || meta.chain_hash(&prev) != known.0 {
            return Err(tampered(
                meta.seq,
                "row differs from the chain this writer committed",
            ));
        }
        Ok(())
    }

    /// The first of `expected` sequence numbers missing from `found` (both ascending).
    pub(super) fn first_missing(
        expected: impl Iterator<Item = u64>,
        found: &[Event],
    ) -> Option<u64> {
        let mut found = found.iter().map(|e| e.seq).peekable();
        for seq in expected {
            if found.peek() == Some(&seq) {
                found.next();
            } else {
                return Some(seq);
            }
        }
        None
    }

    /// Checks that row `seq` exists and carries `hash` (an anchor kept elsewhere).
    pub(crate) fn verify_anchor(&self, seq: u64, hash: &[u8; 32]) -> Result<()> {
        if seq == 0 {
            return Ok(());
        }
        if seq > self.head_seq {
            return Err(tampered(
                self.head_seq + 1,
                "log ends before the anchored row (truncated)",
            ));
        }
        if self.chain[(seq - 1) as usize].0 != *hash {
            return Err(tampered(seq, "row hash differs from the anchor"));
        }
        Ok(())
    }
}
