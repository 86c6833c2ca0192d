//! A ledger writer killed with SIGKILL at arbitrary moments leaves a ledger that opens, loses no
//! acknowledged entry and holds no half entry.
//!
//! The test re-runs its own binary as the writer (selected by an environment variable); the
//! writer appends rounds as fast as it can and prints each acknowledged round id, and the parent
//! kills it after a varying delay.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use amalgam_dp::ledger::audit::audit_file;
use amalgam_dp::ledger::{BudgetPolicy, Ledger, RoundRequest};
use amalgam_dp::params::{
    Adjacency, BitWidth, ClipNorm, Delta, Dimension, Distance, Epsilon, Gamma, RoundingBias, Sigma,
    SiteCount,
};
use amalgam_dp::sampler::SamplerKind;
use ed25519_dalek::SigningKey;

const WRITER_ENV: &str = "AMALGAM_DP_LEDGER_CRASH_WRITER";
const TEST_NAME: &str = "killed_writer_never_leaves_a_half_entry";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[11; 32])
}

fn policy() -> BudgetPolicy {
    BudgetPolicy {
        epsilon_cap: Epsilon::new(1e9).unwrap(),
        delta: Delta::new(1e-6).unwrap(),
    }
}

fn request(round_id: u64) -> RoundRequest {
    RoundRequest {
        round_id,
        adjacency: Adjacency::ZeroOut,
        n_min: SiteCount::new(3).unwrap(),
        n_cohort: SiteCount::new(3).unwrap(),
        clip: ClipNorm::new(1.0).unwrap(),
        gamma: Gamma::new(100.0).unwrap(),
        bits: BitWidth::new(20).unwrap(),
        local_sigma: Sigma::new(20.0).unwrap(),
        dim: Dimension::new(64).unwrap(),
        beta: RoundingBias::NONE,
        sampler: SamplerKind::Exact,
        sampler_distance: Distance::ZERO,
    }
}

/// The child: append rounds forever, reporting each acknowledged one on stdout (the first
/// report shares its line with the test harness's "test ... " prefix).
fn run_writer(path: &Path) {
    let (mut ledger, report) = Ledger::open(path, key(), policy()).unwrap();
    let mut next = report.entries;
    loop {
        ledger.authorize(request(next)).unwrap();
        println!("acked {next}");
        next += 1;
    }
}

#[test]
fn killed_writer_never_leaves_a_half_entry() {
    if let Some(path) = std::env::var_os(WRITER_ENV) {
        run_writer(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let exe = std::env::current_exe().unwrap();
    let mut acked_total = 0u64;
    for (attempt, delay_ms) in [37u64, 113, 251, 5, 71].into_iter().enumerate() {
        let size_before = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| {
                    l.rsplit_once("acked ")
                        .map(|(_, n)| n)
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .max()
        });
        // Wait for the writer to append something, then kill it mid-stream.
        let start = Instant::now();
        while std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) <= size_before
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let last_acked = reader.join().unwrap();

        let (ledger, report) = Ledger::open(&path, key(), policy()).unwrap();
        // Every acknowledged round is present (an unacknowledged last one may be too).
        // Round ids equal entry positions, so the last acknowledged id + 1 counts the entries
        // that must be there (and earlier attempts' entries must still be).
        let acked = last_acked.map_or(acked_total, |n| n + 1).max(acked_total);
        assert!(
            report.entries >= acked,
            "attempt {attempt}: {} entries < {acked} acked",
            report.entries
        );
        assert!(
            report.entries <= acked + 1,
            "attempt {attempt}: {} entries but only {acked} acked (last id {last_acked:?}, before {acked_total})",
            report.entries
        );
        assert!(
            report.entries >= acked_total,
            "attempt {attempt}: entries lost"
        );
        acked_total = report.entries;
        drop(ledger);
        let audit = audit_file(&path, &key().verifying_key()).unwrap();
        assert!(audit.is_clean(), "attempt {attempt}: {:?}", audit.findings);
        assert_eq!(
            audit.torn_bytes, None,
            "open must have truncated the torn tail"
        );
    }
    assert!(
        acked_total > 5,
        "the writer made too little progress to test anything"
    );
}
