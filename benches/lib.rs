//! Shared helpers for Amalgam's criterion benchmarks.
//!
//! Every Amalgam benchmark reports a ratio to a *floor* measured in the same run, because this
//! machine is noisy (±30-50 % run to run) and an absolute time alone says little. The floor for
//! PRG-bound work is the fastest ChaCha20 keystream available here: OpenSSL's assembly, reached
//! through the protocol crate's mask PRG (`amalgam_proto::crypto::prg`). Criterion stores each benchmark's estimates on disk; after a
//! group has run, [`report_ratio`] reads both medians back and prints the ratio.

pub mod service;

use std::path::{Path, PathBuf};
use std::time::Duration;

use amalgam_proto::crypto::prg::Keystream;
use criterion::Criterion;

/// Where criterion writes its estimates: `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`,
/// else the workspace's `target/criterion`.
pub fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Path::new(&target).join("criterion");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion")
}

/// A criterion configuration for the heavy, megabyte-scale benches: few samples, bounded time,
/// and a fixed output directory so [`report_ratio`] can find the estimates.
pub fn heavy_criterion() -> Criterion {
    Criterion::default()
        .output_directory(&criterion_home())
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

/// The pure keystream floor: `total` bytes of OpenSSL ChaCha20 keystream (the protocol's mask
/// PRG, [`Keystream`], which its tests cross-check against `rand_chacha`) generated into a
/// cache-resident `scratch` buffer (16 KiB is right), so that no memory traffic is counted —
/// only the cipher. This is the cost no masking implementation can go below.
pub fn keystream_floor(key: &[u8; 32], total: usize, scratch: &mut [u8]) {
    let mut stream = Keystream::new(key);
    let mut left = total;
    while left > 0 {
        let n = left.min(scratch.len());
        stream.fill(&mut scratch[..n]);
        left -= n;
    }
}

/// The memory-bound floor for a server's additions: `acc[i] = acc[i].wrapping_add(v[i])`.
/// Dispatched at run time to the widest vector unit, as the masking code's own loops are, so
/// that the floor stays the fastest way to do the same additions.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2"))]
pub fn wrapping_add_u32(acc: &mut [u32], v: &[u32]) {
    for (a, x) in acc.iter_mut().zip(v) {
        *a = a.wrapping_add(*x);
    }
}

/// The median (ns) criterion estimated for `group/id` in the last run, if it has one.
pub fn criterion_median_ns(group: &str, id: &str) -> Option<f64> {
    let path = criterion_home()
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("median")?.get("point_estimate")?.as_f64()
}

/// Prints `subject`'s median, `floor`'s median and their ratio against `target` (a "≤" bound),
/// and appends the same line to `criterion_home()/amalgam-ratios.txt` for the record. Does
/// nothing in `cargo test --benches` mode, where criterion records no estimates.
pub fn report_ratio(label: &str, subject: (&str, &str), floor: (&str, &str), target: f64) {
    let (Some(s), Some(f)) = (
        criterion_median_ns(subject.0, subject.1),
        criterion_median_ns(floor.0, floor.1),
    ) else {
        return;
    };
    let ratio = s / f;
    let verdict = if ratio <= target { "within" } else { "OVER" };
    let line = format!(
        "{label}: median {:.3} ms, floor median {:.3} ms, ratio {ratio:.2}x ({verdict} target <= {target}x)",
        s / 1e6,
        f / 1e6
    );
    println!("{line}");
    append_record(&line);
}

/// Prints a per-unit figure derived from a median (e.g. ns per value) and records it.
pub fn report_per_unit(label: &str, subject: (&str, &str), units: f64, unit: &str) {
    let Some(s) = criterion_median_ns(subject.0, subject.1) else {
        return;
    };
    let line = format!(
        "{label}: median {:.3} ms, {:.3} ns per {unit}",
        s / 1e6,
        s / units
    );
    println!("{line}");
    append_record(&line);
}

/// Appends `line` to `criterion_home()/amalgam-ratios.txt` (the record every bench keeps).
pub fn append_record(line: &str) {
    use std::io::Write;
    let path = criterion_home().join("amalgam-ratios.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
