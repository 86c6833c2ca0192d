//! Protocol phases (spec §5), shared by both roles and by error messages.

use core::fmt;

/// A phase of a masking round, named after the message the aggregator is collecting
/// (Bonawitz et al. 2017, rounds 0-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Round 0: sites advertise their two X25519 public keys.
    AdvertiseKeys,
    /// Round 1: sites send encrypted Shamir shares of s_sk and b.
    ShareKeys,
    /// Round 2: sites send masked inputs.
    MaskedInput,
    /// Round 3: sites sign the survivor set.
    ConsistencyCheck,
    /// Round 4: sites reveal shares for unmasking.
    Unmasking,
    /// The round produced its output (aggregator) or the site has answered its last message.
    Finished,
    /// The round was aborted; nothing more is accepted.
    Aborted,
}

impl Phase {
    /// Wire code of the phase (used in snapshots).
    pub fn code(self) -> u8 {
        match self {
            Phase::AdvertiseKeys => 0,
            Phase::ShareKeys => 1,
            Phase::MaskedInput => 2,
            Phase::ConsistencyCheck => 3,
            Phase::Unmasking => 4,
            Phase::Finished => 5,
            Phase::Aborted => 6,
        }
    }

    /// Inverse of [`Phase::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Phase::AdvertiseKeys,
            1 => Phase::ShareKeys,
            2 => Phase::MaskedInput,
            3 => Phase::ConsistencyCheck,
            4 => Phase::Unmasking,
            5 => Phase::Finished,
            6 => Phase::Aborted,
            _ => return None,
        })
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::AdvertiseKeys => "AdvertiseKeys",
            Phase::ShareKeys => "ShareKeys",
            Phase::MaskedInput => "MaskedInput",
            Phase::ConsistencyCheck => "ConsistencyCheck",
            Phase::Unmasking => "Unmasking",
            Phase::Finished => "Finished",
            Phase::Aborted => "Aborted",
        })
    }
}
