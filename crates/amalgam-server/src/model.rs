//! The chain of global models rounds are bound to (through the protocol's context digest).
//!
//! Round 0, the campaign's first, is bound to the campaign's initial weights; round r+1 to
//! model_{r+1}, computed by [`crate::campaign`] from model_r and round r's published sum with
//! the consortium's one implementation (`amalgam_consortium::global_model`), or to model_r
//! again when round r aborted. The digests of every round are kept; the values only of the
//! last [`KEEP_MODELS`] rounds, which the model route serves to a site that missed a result.

use std::collections::BTreeMap;
use std::sync::Arc;

use amalgam_consortium::global_model::{model_bytes, model_digest};

/// Rounds whose model values stay in memory (older ones answer 404 `model.unavailable`).
pub const KEEP_MODELS: usize = 4;

/// Model digests by round, and the canonical bytes of the latest models.
#[derive(Debug, Clone, Default)]
pub struct ModelChain {
    digests: BTreeMap<u64, [u8; 32]>,
    bytes: BTreeMap<u64, Arc<Vec<u8>>>,
}

impl ModelChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether [`ModelChain::set`] would accept `digest` for `round` (nothing changes): lets
    /// a caller refuse before it persists, and set only after the append commits.
    pub fn check(&self, round: u64, digest: &[u8; 32]) -> Result<(), String> {
        match self.digests.get(&round) {
            Some(d) if d != digest => {
                Err(format!("round {round} already has another model digest"))
            }
            _ => Ok(()),
        }
    }

    /// Records round `round`'s digest. Refuses to change a digest already set.
    pub fn set(&mut self, round: u64, digest: [u8; 32]) -> Result<(), String> {
        match self.digests.get(&round) {
            Some(d) if *d != digest => {
                Err(format!("round {round} already has another model digest"))
            }
            _ => {
                self.digests.insert(round, digest);
                Ok(())
            }
        }
    }

    /// Records round `round`'s model values (and their digest), keeping the values of the
    /// last [`KEEP_MODELS`] rounds only.
    pub fn set_model(&mut self, round: u64, values: &[f32]) -> Result<(), String> {
        self.set(round, model_digest(values))?;
        self.bytes.insert(round, Arc::new(model_bytes(values)));
        while self.bytes.len() > KEEP_MODELS {
            self.bytes.pop_first();
        }
        Ok(())
    }

    /// Round `round`'s digest, if known.
    pub fn digest(&self, round: u64) -> Option<[u8; 32]> {
        self.digests.get(&round).copied()
    }

    /// The canonical bytes of round `round`'s model, if still held.
    pub fn model_bytes(&self, round: u64) -> Option<Arc<Vec<u8>>> {
        self.bytes.get(&round).cloned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn digests_are_fixed_and_values_bounded() {
        let mut c = ModelChain::new();
        for r in 0..10u64 {
            c.set_model(r, &[r as f32]).unwrap();
        }
        assert!(c.set(3, [0; 32]).is_err());
        // check refuses the same and changes nothing.
        assert!(c.check(3, &[0; 32]).is_err());
        assert!(c.check(10, &[7; 32]).is_ok());
        assert_eq!(c.digest(10), None);
        assert_eq!(c.digest(3), Some(model_digest(&[3.0])));
        assert!(c.model_bytes(5).is_none());
        assert_eq!(c.model_bytes(9).unwrap().as_slice(), 9f32.to_le_bytes());
    }
}
