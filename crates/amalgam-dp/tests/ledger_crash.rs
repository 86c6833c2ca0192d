//! A ledger writer killed with SIGKILL at arbitrary moments leaves a ledger that opens, loses no
//! acknowledged entry and holds no half entry.
//!
//! The test re-runs its own binary as the writer (selected by an environment variable); the
//! writer appends rounds as fast as it can and prints each acknowledged round id, and the parent
//! kills it after a varying delay.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use amalgam_dp::ledger::audit::{Event, audit_file};
use amalgam_dp::ledger::{BudgetPolicy, Ledger, RoundRequest};
use amalgam_dp::params::{
    BitWidth, ClipNorm, Delta, Dimension, Epsilon, Gamma, RoundingBias, Sigma, SiteCount,
};
use amalgam_dp::sampler::SamplerKind;
use ed25519_dalek::SigningKey;

const WRITER_ENV: &str = "AMALGAM_DP_LEDGER_CRASH_WRITER";
const TEST_NAME: &str = "killed_writer_never_leaves_a_half_entry";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[11; 32])
}

fn policy() -> BudgetPolicy {
    BudgetPolicy::site_level(Epsilon::new(1e9).unwrap(), Delta::new(1e-6).unwrap()).unwrap()
}

fn request(round_id: u64) -> RoundRequest {
    RoundRequest {
        round_id,
        manifest_digest: [0; 32],
        round_context: [0; 32],
        min_cohort: SiteCount::new(3).unwrap(),
        colluders: 0,
        n_cohort: SiteCount::new(3).unwrap(),
        clip: ClipNorm::new(1.0).unwrap(),
        gamma: Gamma::new(100.0).unwrap(),
        bits: BitWidth::new(20).unwrap(),
        local_sigma: Sigma::new(20.0).unwrap(),
        dim: Dimension::new(64).unwrap(),
        beta: RoundingBias::NONE,
        sampler: SamplerKind::Exact,
    }
}

/// The child: append rounds forever, reporting each acknowledged one on stdout (the first
/// report shares its line with the test harness's "test ... " prefix). Round ids are entry
/// positions, so they never repeat across restarts.
fn run_writer(path: &Path) {
    let (mut ledger, _) = Ledger::open(path, key(), policy()).unwrap();
    loop {
        let next = ledger.anchor().entries as u64;
        common::authorize_in_epoch(&mut ledger, request(next)).unwrap();
        println!("acked {next}");
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
                .filter(|l| {
                    l.rsplit_once("acked ")
                        .and_then(|(_, n)| n.parse::<u64>().ok())
                        .is_some()
                })
                .count() as u64
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
        let anchor = ledger.anchor();
        drop(ledger);
        let audit = audit_file(&path, &key().verifying_key(), &[anchor]).unwrap();
        assert!(audit.is_clean(), "attempt {attempt}: {:?}", audit.findings);
        assert_eq!(
            audit.torn_bytes, None,
            "open must have cut off the torn tail"
        );
        // A cut tail is recorded as a recovery event, never silently.
        let recoveries = audit
            .events
            .iter()
            .filter(|e| matches!(e, Event::Recovered { .. }))
            .count();
        assert!(recoveries <= attempt + 1);
        if report.torn_bytes.is_some() {
            assert!(recoveries >= 1);
        }
        // Every acknowledged round is present (an unacknowledged last one may be too).
        let acked = acked_total + last_acked;
        let present = audit.accepted as u64;
        assert!(
            present >= acked,
            "attempt {attempt}: {present} charges < {acked} acked"
        );
        assert!(
            present <= acked + 1,
            "attempt {attempt}: {present} charges but only {acked} acked"
        );
        acked_total = present;
    }
    assert!(
        acked_total > 5,
        "the writer made too little progress to test anything"
    );
}
