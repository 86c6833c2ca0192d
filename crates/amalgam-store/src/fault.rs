//! Crash-test fault points, shared by every Amalgam crate that persists state.
//!
//! A crash-recovery harness sets `AMALGAM_FAULT=<name>:<k>` and runs a binary built with the
//! `fault-points` feature; when the code reaches `fault_point(name, k)` with that name and
//! counter, it prints `FAULT <name> <k>` to stdout, flushes, and parks the thread forever, so
//! the harness (which waits for that line) can SIGKILL the process at exactly that point.
//!
//! Without the feature, `fault_point` is an empty inline function: release builds carry no
//! hook and read no environment variable. The feature cannot be combined with a build without
//! debug assertions (a release profile): that is a compile error below.

#[cfg(all(feature = "fault-points", not(debug_assertions)))]
compile_error!("the `fault-points` feature is for test builds only (it parks threads on request)");

/// Parks the calling thread forever if `AMALGAM_FAULT` is `<name>:<k>` (feature
/// `fault-points`); otherwise returns at once.
#[cfg(feature = "fault-points")]
pub fn fault_point(name: &str, k: u64) {
    use std::io::Write;
    let Ok(spec) = std::env::var("AMALGAM_FAULT") else {
        return;
    };
    let Some((want_name, want_k)) = spec.rsplit_once(':') else {
        return;
    };
    if want_name != name || want_k.parse::<u64>().ok() != Some(k) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "FAULT {name} {k}");
    let _ = out.flush();
    drop(out);
    loop {
        std::thread::park();
    }
}

/// Does nothing: this build has no fault points (feature `fault-points` off).
#[cfg(not(feature = "fault-points"))]
#[inline(always)]
pub fn fault_point(_name: &str, _k: u64) {}
