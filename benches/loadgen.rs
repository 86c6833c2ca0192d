//! Load generator: one process simulating N sites against one aggregator process over real
//! HTTPS (one mutual-TLS client certificate per site), with every upload precomputed.
//!
//! ```text
//! loadgen [--scheme masking|fallback] [--sites N] [--values D] [--bits B] [--threads T]
//!         [--concurrency C] [--dir PATH] [--json FILE]
//! ```
//!
//! `--scheme masking` (the default) is described below; `--scheme fallback` runs one
//! homomorphic-fallback round instead (`loadgen_fallback.rs`).
//!
//! 1. Records one round in memory (`service::record`): each site's five uploads and the
//!    downloads the aggregator will serve.
//! 2. Starts the aggregator as a child process (this binary, `serve`), on an SQLite event log
//!    in a fresh directory under `--dir` (default: the system temporary directory). The
//!    deployment's keys derive from a seed drawn from the OS and handed to the child on stdin.
//! 3. Drives the round: every site uploads, long-polls its download (checked byte for byte
//!    against the record) and uploads the next message; one site fetches the result (checked
//!    against the recorded sum). Wall time is from the first upload to the result.
//! 4. Reads the server's peak RSS (`VmHWM`) and bytes written (`/proc/<pid>/io`) before it
//!    exits, and the size of its database directory.
//! 5. Restores: a fresh child (`restore`) opens the log and replays it into fresh aggregators
//!    that re-verify everything (`Service::start`); it reports how long that took.
//!
//! Prints one JSON object with every figure. Nothing here asserts a timing.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

mod loadgen_fallback;

use amalgam_benches::service::fixture::{self, MODEL};
use amalgam_benches::service::{Deployment, os_seed, record};
use amalgam_proto::{RoundParams, sim};
use amalgam_server::events::{EventStore, open_sqlite};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
struct Args {
    mode: String,
    scheme: String,
    concurrency: usize,
    sites: u16,
    values: u32,
    bits: u8,
    threads: usize,
    dir: PathBuf,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mode: "drive".into(),
        scheme: "masking".into(),
        concurrency: 64,
        sites: 10,
        values: 4096,
        bits: 16,
        threads: std::thread::available_parallelism().map_or(2, |p| p.get()),
        dir: std::env::temp_dir(),
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "serve" || k == "restore" {
            a.mode = k;
            continue;
        }
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{k} {v}: {e}");
        match k.as_str() {
            "--sites" => a.sites = v.parse().map_err(|e| bad(&e))?,
            "--values" => a.values = v.parse().map_err(|e| bad(&e))?,
            "--bits" => a.bits = v.parse().map_err(|e| bad(&e))?,
            "--threads" => a.threads = v.parse().map_err(|e| bad(&e))?,
            "--concurrency" => a.concurrency = v.parse().map_err(|e| bad(&e))?,
            "--scheme" if v == "masking" || v == "fallback" => a.scheme = v,
            "--dir" => a.dir = v.into(),
            "--json" => a.json = Some(v.into()),
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    Ok(a)
}

fn params(a: &Args) -> RoundParams {
    RoundParams::exact(a.sites, a.sites / 2 + 2, a.bits, a.values)
        .unwrap_or_else(|e| panic!("parameters refused: {e}"))
}

fn read_seed() -> [u8; 32] {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        panic!("no seed on stdin");
    }
    let bytes = hex::decode(line.trim()).unwrap_or_else(|e| panic!("seed: {e}"));
    bytes
        .try_into()
        .unwrap_or_else(|_| panic!("seed is 32 bytes"))
}

/// `VmHWM` (peak resident set) of process `pid` ("self" for this one), in bytes.
fn peak_rss(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `write_bytes` of `/proc/<pid>/io`: what the process caused to be sent to storage.
fn storage_writes(pid: &str) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn sum_digest(sum: &[u64]) -> String {
    let mut h = Sha256::new();
    for v in sum {
        h.update(v.to_be_bytes());
    }
    hex::encode(h.finalize())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// The aggregator process: serves round 1 until stdin closes.
fn serve(a: &Args) {
    let dep = Deployment::new(params(a), read_seed());
    let (log, writer) =
        open_sqlite(&a.dir.join("events.db")).unwrap_or_else(|e| panic!("event log: {e}"));
    let store: Arc<dyn EventStore> = Arc::new(log);
    let rt = runtime();
    rt.block_on(async {
        let run = fixture::start(&dep, store, None, 0).await;
        if let Err(p) = run.service.open_round(1, MODEL).await {
            panic!("open round: {p:?}");
        }
        println!("listening {}", run.addr.port());
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

/// Reopens the log and replays it (every upload re-verified); prints the time and the sum.
fn restore(a: &Args) {
    let dep = Deployment::new(params(a), read_seed());
    let rt = runtime();
    let start = Instant::now();
    let (log, writer) =
        open_sqlite(&a.dir.join("events.db")).unwrap_or_else(|e| panic!("event log: {e}"));
    let opened = start.elapsed();
    let store: Arc<dyn EventStore> = Arc::new(log);
    let service = rt.block_on(async {
        amalgam_server::Service::start(
            dep.consortium.clone(),
            store,
            fixture::service_config(dep.params.n()),
        )
        .unwrap_or_else(|e| panic!("restore: {e}"))
    });
    let replayed = start.elapsed();
    let result = rt
        .block_on(service.result(1, std::time::Duration::ZERO))
        .unwrap_or_else(|p| panic!("result after restore: {p:?}"))
        .unwrap_or_else(|| panic!("restored round has no result"));
    println!(
        "restored {} {} {} {}",
        opened.as_secs_f64(),
        replayed.as_secs_f64(),
        peak_rss("self"),
        sum_digest(&result.sum)
    );
    rt.block_on(service.shutdown());
    drop(service);
    drop(rt);
    let _ = writer.join();
}

fn child(
    a: &Args,
    mode: &str,
    dir: &Path,
    seed: &[u8; 32],
) -> (Child, BufReader<std::process::ChildStdout>) {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("own path: {e}"));
    let mut c = Command::new(exe)
        .arg(mode)
        .args([
            "--sites",
            &a.sites.to_string(),
            "--values",
            &a.values.to_string(),
        ])
        .args(["--bits", &a.bits.to_string()])
        .args(["--scheme", &a.scheme])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {mode}: {e}"));
    if let Some(stdin) = c.stdin.as_mut() {
        let _ = writeln!(stdin, "{}", hex::encode(seed));
        let _ = stdin.flush();
    }
    let out = BufReader::new(c.stdout.take().unwrap_or_else(|| panic!("child stdout")));
    (c, out)
}

fn line_of(out: &mut BufReader<std::process::ChildStdout>, prefix: &str) -> Vec<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("child ended before printing {prefix}");
        }
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            return rest.split_whitespace().map(str::to_owned).collect();
        }
    }
}

fn drive_all(a: &Args) {
    let seed = os_seed();
    let p = params(a);
    let dep = Deployment::new(p, seed);
    let t0 = Instant::now();
    let inputs = sim::random_inputs(&p, &os_seed());
    let rec = record::record(&dep, 1, inputs, a.threads);
    let precompute_s = t0.elapsed().as_secs_f64();
    let want_sum = sum_digest(&rec.sum);
    let upload_bytes: usize = rec.uploads.iter().flatten().map(Vec::len).sum();
    let download_bytes: usize = rec.downloads.iter().flatten().map(Vec::len).sum();
    let db = tempfile::Builder::new()
        .prefix("amalgam-loadgen-")
        .tempdir_in(&a.dir)
        .unwrap_or_else(|e| panic!("database directory: {e}"));
    let (mut server, mut out) = child(a, "serve", db.path(), &seed);
    let port = line_of(&mut out, "listening")
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no port"));
    let pid = server.id().to_string();
    let rt = runtime();
    let (wall_s, result) = rt.block_on(record::replay(
        &dep,
        &format!("https://127.0.0.1:{port}"),
        rec,
    ));
    assert_eq!(
        sum_digest(&result.sum),
        want_sum,
        "published sum differs from the record"
    );
    let server_peak = peak_rss(&pid);
    let server_writes = storage_writes(&pid);
    drop(server.stdin.take());
    let _ = server.wait();
    let db_bytes = dir_size(db.path());
    let t1 = Instant::now();
    let (mut restorer, mut out) = child(a, "restore", db.path(), &seed);
    let r = line_of(&mut out, "restored");
    let _ = restorer.wait();
    let restore_process_s = t1.elapsed().as_secs_f64();
    assert_eq!(r.get(3), Some(&want_sum), "restored sum differs");
    let num = |i: usize| {
        r.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let report = serde_json::json!({
        "sites": a.sites,
        "values": a.values,
        "input_bits": a.bits,
        "sum_bits": p.sum_bits().get(),
        "threshold": p.threshold().get(),
        "precompute_s": precompute_s,
        "round_wall_s": wall_s,
        "server_peak_rss_bytes": server_peak,
        "server_storage_write_bytes": server_writes,
        "database_dir_bytes": db_bytes,
        "uploaded_bytes": upload_bytes,
        "downloaded_bytes_excluding_result": download_bytes,
        "restore_open_s": num(0),
        "restore_open_and_replay_s": num(1),
        "restore_peak_rss_bytes": num(2),
        "restore_process_wall_s": restore_process_s,
        "loadgen_peak_rss_bytes": peak_rss("self"),
    });
    println!("{report:#}");
    if let Some(path) = &a.json {
        let _ = std::fs::write(path, format!("{report:#}\n"));
    }
}

fn main() {
    let a = parse_args().unwrap_or_else(|e| {
        eprintln!("loadgen: {e}");
        std::process::exit(2)
    });
    match (a.scheme.as_str(), a.mode.as_str()) {
        ("fallback", "serve") => loadgen_fallback::serve(&a),
        ("fallback", "restore") => loadgen_fallback::restore(&a),
        ("fallback", _) => loadgen_fallback::drive_all(&a),
        (_, "serve") => serve(&a),
        (_, "restore") => restore(&a),
        _ => drive_all(&a),
    }
}
