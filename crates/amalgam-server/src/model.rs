//! The model digest each round is bound to (through the protocol's context digest).
//!
//! Round 1 uses the campaign's initial weights digest; round r+1 the digest of the model
//! computed from round r's published sum. That computation belongs to the consortium crate's
//! model module; until it exists the digest of each later round is an input given per round
//! ([`ModelChain::set`]), and a round whose digest is unknown cannot open.

use std::collections::BTreeMap;

/// Model digests by round.
#[derive(Debug, Clone)]
pub struct ModelChain {
    digests: BTreeMap<u64, [u8; 32]>,
}

impl ModelChain {
    /// A chain whose round 1 is the campaign's `initial` digest.
    pub fn new(initial: [u8; 32]) -> Self {
        Self {
            digests: BTreeMap::from([(1, initial)]),
        }
    }

    /// Records round `round`'s digest (computed elsewhere from round − 1's result). Refuses
    /// to change a digest already set.
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

    /// Round `round`'s digest, if known.
    pub fn digest(&self, round: u64) -> Option<[u8; 32]> {
        self.digests.get(&round).copied()
    }
}
