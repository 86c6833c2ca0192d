//! Crash-test fault points (cargo feature `fault-points`, absent from release builds): when
//! `AMALGAM_FAULT=<name>:<k>` matches, print `FAULT <name> <k>`, flush and park the thread so
//! the harness can SIGKILL the process at that exact point. Same contract as
//! `amalgam_store::fault_point`; without the feature it compiles to nothing.

/// The fault point `name` with counter `k`.
#[cfg(feature = "fault-points")]
pub fn fault_point(name: &str, k: u64) {
    use std::io::Write;
    let Ok(spec) = std::env::var("AMALGAM_FAULT") else {
        return;
    };
    if spec == format!("{name}:{k}") {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "FAULT {name} {k}");
        let _ = out.flush();
        loop {
            std::thread::park();
        }
    }
}

/// The fault point `name` with counter `k` (disabled build).
#[cfg(not(feature = "fault-points"))]
#[inline(always)]
pub fn fault_point(_name: &str, _k: u64) {}
