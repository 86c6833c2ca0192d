//! Crash-test fault points: `amalgam_store::fault::fault_point` (cargo feature `fault-points`,
//! never in release builds). The server calls `before-commit` and `after-commit` around each
//! append, with k = the number of uploads this process accepted, plus one.

pub use amalgam_store::fault::fault_point;
