//! Cryptographic building blocks (spec §4). Small modules, one primitive each.

pub mod kdf;
pub mod prg;
pub mod round_seed;
pub mod shamir;
pub mod share_box;
pub mod sign;
