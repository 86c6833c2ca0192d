//! The decryptor's crash points (`amalgam decryptor serve`, `protocol-spec/decryptor.md` §2):
//! `after-statement-persisted`, `after-signature-sent`, `after-release`. `fallback_cli.rs`
//! spawns a member with `AMALGAM_FAULT=<point>:<round>` ([`super::world::World::decryptor`]),
//! waits for its FAULT line, SIGKILLs and restarts it, then asserts the re-run's sum at every
//! site, one statement row per member (no second statement signed) and the round's vault
//! shredded.

/// The decryptor's fault points, in the order a release reaches them.
pub const POINTS: [&str; 3] = [
    "after-statement-persisted",
    "after-signature-sent",
    "after-release",
];
