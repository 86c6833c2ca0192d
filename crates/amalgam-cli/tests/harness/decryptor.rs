//! The decryptor's crash points, for the homomorphic-fallback committee service
//! (`amalgam decrypt …`, built separately): `after-statement-persisted`,
//! `after-signature-sent`, `after-release`. A test for each spawns the decryptor with
//! `AMALGAM_FAULT=<point>:<round>` through [`super::proc::Proc`], waits for its FAULT line,
//! SIGKILLs and restarts it, then asserts the sum, and that no second cohort statement or
//! consistency signature was produced (the statement store holds one row per round).
//! The spawn helper belongs here once the decryptor command exists.

/// The decryptor's fault points, in the order a release reaches them.
pub const POINTS: [&str; 3] = [
    "after-statement-persisted",
    "after-signature-sent",
    "after-release",
];
