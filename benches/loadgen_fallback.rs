//! `loadgen --scheme fallback`: one homomorphic-fallback round at scale.
//!
//! 1. Precomputes every site's signed upload (`service::fallback::drive::precompute`) and the
//!    plaintext sum of their updates.
//! 2. Starts the aggregator as a child process (this binary, `serve --scheme fallback`) on an
//!    SQLite event log in a fresh directory; it opens the fallback re-run of an aborted masking
//!    round. The sites' uploads go in, shuffled, at most `--concurrency` at a time, each site
//!    on its own mutual-TLS client; the cohort closes as the last one is accepted.
//! 3. Stops that aggregator and starts a fresh one on the same log: it replays the open round
//!    (every upload's signature re-verified, every body decrypted from the vault and added
//!    again, the close re-executed) — the **restore** figure. The committee (five
//!    `amalgam_he::Decryptor`s in this process, each on its own client) then admits, signs
//!    and releases against the restored aggregator, and site 0 reads the decoded sum, checked
//!    against the plaintext sum.
//! 4. A third child replays the ended round's public record (its ciphertexts were shredded at
//!    the end) and serves the same sum again.
//!
//! Peak RSS (`VmHWM`) and bytes written (`/proc/<pid>/io`) are read from each aggregator before
//! it exits. Nothing here asserts a timing.

use std::io::{BufRead, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amalgam_benches::service::fallback::{
    CORRUPT, FbDeployment, MEMBERS, PIECE_THRESHOLD, QUORUM, ROUND, drive, server,
};
use amalgam_benches::service::os_seed;
use amalgam_server::events::open_sqlite;
use amalgam_server::fallback::service::FallbackLog;

use crate::{Args, child, dir_size, line_of, peak_rss, runtime, storage_writes, sum_digest};

fn deployment(a: &Args, seed: [u8; 32]) -> FbDeployment {
    FbDeployment::new(usize::from(a.sites), a.values, u32::from(a.bits), seed)
}

/// The aggregator process: replays the log (timing it), opens the round if the log has none,
/// serves until stdin closes.
pub fn serve(a: &Args) {
    let dep = deployment(a, crate::read_seed());
    let rt = runtime();
    let t0 = Instant::now();
    let (log, writer) =
        open_sqlite(&a.dir.join("fallback.db")).unwrap_or_else(|e| panic!("event log: {e}"));
    let store: Arc<dyn FallbackLog> = Arc::new(log);
    rt.block_on(async {
        let run = server::start(&dep, store)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let started_s = t0.elapsed().as_secs_f64();
        if !run.has_round().await {
            run.open()
                .await
                .unwrap_or_else(|p| panic!("open round: {p:?}"));
        }
        println!("listening {} {started_s}", run.addr.port());
        let _ = std::io::stdout().flush();
        let _ = tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await;
        run.stop().await;
    });
    drop(rt);
    let _ = writer.join();
}

/// Replays the log of the ended round and prints the time, this process's peak RSS and the
/// sum's digest.
pub fn restore(a: &Args) {
    let dep = deployment(a, crate::read_seed());
    let rt = runtime();
    let t0 = Instant::now();
    let (log, writer) =
        open_sqlite(&a.dir.join("fallback.db")).unwrap_or_else(|e| panic!("event log: {e}"));
    let (replayed, digest) = rt.block_on(async {
        let svc =
            server::start_service(&dep, Arc::new(log)).unwrap_or_else(|e| panic!("restore: {e}"));
        let replayed = t0.elapsed().as_secs_f64();
        let res = svc
            .result(ROUND, Duration::ZERO)
            .await
            .unwrap_or_else(|p| panic!("result after restore: {p:?}"))
            .unwrap_or_else(|| panic!("restored round has no result"));
        (replayed, sum_digest(&res.sum))
    });
    drop(rt);
    let _ = writer.join();
    println!("restored {replayed} {} {digest}", peak_rss("self"));
}

struct Server {
    child: std::process::Child,
    pid: String,
    base: String,
    started_s: f64,
}

fn spawn(a: &Args, dir: &std::path::Path, seed: &[u8; 32]) -> (Server, impl BufRead) {
    let (c, mut out) = child(a, "serve", dir, seed);
    let l = line_of(&mut out, "listening");
    let port = l.first().cloned().unwrap_or_else(|| panic!("no port"));
    let started_s = l.get(1).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    let pid = c.id().to_string();
    let s = Server {
        child: c,
        pid,
        base: format!("https://127.0.0.1:{port}"),
        started_s,
    };
    (s, out)
}

/// What an aggregator process cost: peak RSS and bytes written, read before it exits.
fn finish(mut s: Server) -> (u64, u64) {
    let figures = (peak_rss(&s.pid), storage_writes(&s.pid));
    drop(s.child.stdin.take());
    let _ = s.child.wait();
    figures
}

/// The fallback round at scale; prints (and writes to `--json`) one JSON object.
pub fn drive_all(a: &Args) {
    let seed = os_seed();
    let dep = Arc::new(deployment(a, seed));
    let t0 = Instant::now();
    let pre = drive::precompute(&dep, &os_seed(), a.threads);
    let precompute_s = t0.elapsed().as_secs_f64();
    let want = sum_digest(&pre.sum);
    let upload_bytes: usize = pre.uploads.iter().map(Vec::len).sum();
    let order = drive::shuffled(dep.n(), &os_seed());
    let db = tempfile::Builder::new()
        .prefix("amalgam-loadgen-fallback-")
        .tempdir_in(&a.dir)
        .unwrap_or_else(|e| panic!("database directory: {e}"));
    let rt = runtime();

    // 1. The uploads, against a fresh aggregator.
    let (first, _out1) = spawn(a, db.path(), &seed);
    let uploads_s = rt
        .block_on(drive::upload_all(
            &dep,
            &first.base,
            pre.uploads,
            &order,
            a.concurrency,
        ))
        .unwrap_or_else(|e| panic!("uploads: {e}"));
    let (upload_rss, upload_writes) = finish(first);
    let db_after_uploads = dir_size(db.path());

    // 2. A fresh aggregator replays the open round; the committee finishes it there.
    let t1 = Instant::now();
    let (second, _out2) = spawn(a, db.path(), &seed);
    let resume_process_s = t1.elapsed().as_secs_f64();
    let restore_open_s = second.started_s;
    let committee_s = rt
        .block_on(drive::committee(&dep, &second.base))
        .unwrap_or_else(|e| panic!("committee: {e}"));
    let t2 = Instant::now();
    let res = rt
        .block_on(drive::result(&dep, &second.base))
        .unwrap_or_else(|e| panic!("{e}"));
    let result_s = t2.elapsed().as_secs_f64();
    assert_eq!(
        sum_digest(&res.sum),
        want,
        "decoded sum differs from the plaintext sum"
    );
    let all: Vec<u16> = (0..a.sites).collect();
    assert_eq!(res.contributors, all, "not every site is in the cohort");
    let (committee_rss, committee_writes) = finish(second);
    let db_bytes = dir_size(db.path());

    // 3. The ended round's public record, replayed.
    let t3 = Instant::now();
    let (mut restorer, mut out) = child(a, "restore", db.path(), &seed);
    let r = line_of(&mut out, "restored");
    let _ = restorer.wait();
    let ended_process_s = t3.elapsed().as_secs_f64();
    assert_eq!(r.get(2), Some(&want), "restored sum differs");
    let num = |i: usize| {
        r.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let p = dep.setup.params();
    let report = serde_json::json!({
        "scheme": "fallback",
        "sites": a.sites,
        "values": a.values,
        "input_bits": a.bits,
        "plaintext_bits": p.plaintext_bits(),
        "committee": {"c": MEMBERS, "t_c": PIECE_THRESHOLD, "q": QUORUM, "c_d": CORRUPT},
        "concurrency": a.concurrency,
        "precompute_s": precompute_s,
        "uploads_wall_s": uploads_s,
        "restore_open_round_s": restore_open_s,
        "resume_process_wall_s": resume_process_s,
        "committee_wall_s": committee_s,
        "result_s": result_s,
        "round_wall_s": uploads_s + committee_s + result_s,
        "upload_server_peak_rss_bytes": upload_rss,
        "upload_server_storage_write_bytes": upload_writes,
        "committee_server_peak_rss_bytes": committee_rss,
        "committee_server_storage_write_bytes": committee_writes,
        "database_dir_bytes_after_uploads": db_after_uploads,
        "database_dir_bytes_after_end": db_bytes,
        "uploaded_bytes": upload_bytes,
        "restore_ended_round_s": num(0),
        "restore_ended_peak_rss_bytes": num(1),
        "restore_ended_process_wall_s": ended_process_s,
        "loadgen_peak_rss_bytes": peak_rss("self"),
    });
    println!("{report:#}");
    if let Some(path) = &a.json {
        let _ = std::fs::write(path, format!("{report:#}\n"));
    }
}
