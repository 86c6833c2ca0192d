//! Append throughput against a floor measured in the same run (ignored: it measures, it does
//! not assert). Run with
//! `cargo test -p amalgam-store --test throughput -- --ignored --nocapture`.
//!
//! Floors: the same bytes written with plain `write` + `fsync` into fresh files in the same
//! directory (large bodies: one file per body, like the blob files, plus one directory
//! fsync), or appended to one file with an `fsync` per acknowledged append (small bodies).
//! The log does more: it encrypts secret bodies, hashes them, renames blob files into place
//! and commits a SQLite transaction (WAL, synchronous=FULL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use amalgam_store::{EventLog, EventLogOptions, NewEvent};
use common::{bytes, upload};

const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn events(round: u64, count: u32, len: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|i| upload(round, 1, i, bytes(i as u8, len)))
        .collect()
}

fn log_batched(dir: &Path, round: u64, count: u32, len: usize, batch: bool) -> Duration {
    let (h, t) = EventLog::open(&dir.join("events.db"), EventLogOptions::default()).unwrap();
    let evs = events(round, count, len);
    let start = Instant::now();
    if batch {
        h.append_batch(evs).unwrap();
    } else {
        for ev in evs {
            h.append(ev).unwrap();
        }
    }
    let took = start.elapsed();
    drop(h);
    t.join().unwrap();
    took
}

fn floor_files(dir: &Path, count: u32, len: usize) -> Duration {
    let bodies: Vec<Vec<u8>> = (0..count).map(|i| bytes(i as u8, len)).collect();
    let start = Instant::now();
    for (i, b) in bodies.iter().enumerate() {
        let mut f = std::fs::File::create(dir.join(format!("floor-{i}"))).unwrap();
        f.write_all(b).unwrap();
        f.sync_all().unwrap();
    }
    std::fs::File::open(dir).unwrap().sync_all().unwrap();
    start.elapsed()
}

fn floor_append(dir: &Path, count: u32, len: usize, sync_each: bool) -> Duration {
    let bodies: Vec<Vec<u8>> = (0..count).map(|i| bytes(i as u8, len)).collect();
    let mut f = std::fs::File::create(dir.join("floor-append")).unwrap();
    let start = Instant::now();
    for b in &bodies {
        f.write_all(b).unwrap();
        if sync_each {
            f.sync_data().unwrap();
        }
    }
    f.sync_all().unwrap();
    start.elapsed()
}

fn report(
    label: &str,
    count: u32,
    total_bytes: usize,
    subject: Vec<Duration>,
    floor: Vec<Duration>,
) {
    let (s, f) = (median(subject), median(floor));
    let mb = total_bytes as f64 / 1e6;
    println!(
        "{label}: median {:.1} ms ({:.1} MB/s, {:.0} events/s), floor {:.1} ms ({:.1} MB/s), ratio {:.2}x",
        s.as_secs_f64() * 1e3,
        mb / s.as_secs_f64(),
        f64::from(count) / s.as_secs_f64(),
        f.as_secs_f64() * 1e3,
        mb / f.as_secs_f64(),
        s.as_secs_f64() / f.as_secs_f64()
    );
}

/// The CPU part alone: SHA-256 and ChaCha20-Poly1305 over the same bodies, no I/O.
fn crypto_only(count: u32, len: usize) -> Duration {
    use chacha20poly1305::aead::{Aead, Payload};
    use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
    let bodies: Vec<Vec<u8>> = (0..count).map(|i| bytes(i as u8, len)).collect();
    let cipher = ChaCha20Poly1305::new(&Key::from([3u8; 32]));
    let start = Instant::now();
    for b in &bodies {
        let d = amalgam_store::sha256(b);
        let ct = cipher
            .encrypt(&Nonce::from([0u8; 12]), Payload { msg: b, aad: &d })
            .unwrap();
        std::hint::black_box(ct);
    }
    start.elapsed()
}

#[test]
#[ignore = "measurement; prints figures"]
fn append_throughput() {
    for (count, len) in [(10u32, 4usize << 20), (1000, 1024)] {
        let runs = (0..RUNS).map(|_| crypto_only(count, len)).collect();
        let m: Duration = median(runs);
        println!(
            "crypto only (SHA-256 + ChaCha20-Poly1305), {count} x {len} B: median {:.1} ms",
            m.as_secs_f64() * 1e3
        );
    }
    let cases: [(&str, u32, usize, bool); 4] = [
        ("10 x 4 MB, one batch (group commit)", 10, 4 << 20, true),
        ("10 x 4 MB, one commit each", 10, 4 << 20, false),
        ("1000 x 1 KB, one commit each", 1000, 1024, false),
        ("1000 x 1 KB, one batch (group commit)", 1000, 1024, true),
    ];
    for (label, count, len, batch) in cases {
        let (mut subject, mut floor) = (Vec::new(), Vec::new());
        for run in 0..RUNS {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            subject.push(log_batched(dir.path(), run as u64 + 1, count, len, batch));
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            floor.push(if len > 16 * 1024 {
                if batch {
                    floor_files(dir.path(), count, len)
                } else {
                    // One acknowledged body at a time: file + dir fsync each.
                    let start = Instant::now();
                    for i in 0..count {
                        let sub = dir.path().join(format!("d{i}"));
                        std::fs::create_dir(&sub).unwrap();
                        floor_files(&sub, 1, len);
                    }
                    start.elapsed()
                }
            } else {
                floor_append(dir.path(), count, len, !batch)
            });
        }
        report(label, count, count as usize * len, subject, floor);
    }
}
