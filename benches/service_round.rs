//! One whole masking round through the service — every phase over mutual TLS on loopback, the
//! aggregator's SQLite event log at `synchronous=FULL`, sites and aggregator in this process
//! as in the server's own round tests — against its floor, measured in the same run: the same
//! listener, TLS connections and log carrying one upload per site of the same B-bit packed
//! vectors, the same packed summation, and one download of the same JSON result.
//!
//! The split (PRG, packing, signatures, TLS/HTTP with the summation, SQLite, and what remains:
//! waiting at phase barriers and scheduling) is measured component by component in the same
//! run and written to `criterion_home()/service_round_split.md`.
//!
//! Full size (n = 10, d = 2^20) with `AMALGAM_BENCH_FULL=1`; otherwise n = 5, d = 4096, which
//! is what CI runs once in test mode. Target: round ≤ 1.5x its floor.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use amalgam_benches::service::fixture::{self, MODEL};
use amalgam_benches::service::{Deployment, Running, floor, live, os_seed};
use amalgam_benches::{
    append_record, criterion_median_ns, heavy_criterion, keystream_floor, report_ratio,
};
use amalgam_net::api::RoundResult;
use amalgam_net::client::ApiClient;
use amalgam_proto::crypto::sign::{sign_message, verify_message};
use amalgam_proto::{Phase, RoundParams, SiteId, packing, sim};
use amalgam_server::events::{
    Event, EventKind, EventStore, MemoryStore, NewEvent, as_new, open_sqlite,
};
use criterion::{BenchmarkId, Criterion};
use ed25519_dalek::SigningKey;
use std::hint::black_box;

const INPUT_BITS: u8 = 16;

fn sizes() -> (u16, u32) {
    if std::env::var_os("AMALGAM_BENCH_FULL").is_some() {
        (10, 1 << 20)
    } else {
        (5, 4096)
    }
}

/// Where the event logs live: `$AMALGAM_BENCH_DIR`, else the system temporary directory
/// (it must be a real disk for `synchronous=FULL` to mean anything).
fn scratch_dir() -> tempfile::TempDir {
    let b = tempfile::Builder::new()
        .prefix("amalgam-bench-")
        .tempdir_in(
            std::env::var_os("AMALGAM_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into),
        );
    b.unwrap_or_else(|e| panic!("scratch directory: {e}"))
}

struct Bench {
    rt: tokio::runtime::Runtime,
    dep: Arc<Deployment>,
    run: Running,
    clients: Vec<ApiClient>,
    /// A second aggregator with an in-memory log and its own clients: the round unpersisted.
    mem: (Running, Vec<ApiClient>),
    inputs: Vec<Vec<u64>>,
    packed: Vec<Vec<u8>>,
    plaintext: Vec<u64>,
    rounds: AtomicU64,
}

impl Bench {
    fn masking_round(&self) -> (RoundResult, usize, Duration) {
        self.masking_round_on(&self.run, &self.clients)
    }

    fn masking_round_on(
        &self,
        run: &Running,
        clients: &[ApiClient],
    ) -> (RoundResult, usize, Duration) {
        let round = self.rounds.fetch_add(1, Ordering::SeqCst);
        let setup = live::RoundSetup {
            params: self.dep.params,
            manifest: self.dep.sites.manifest().clone(),
            context: self.dep.context(),
            round,
        };
        let work: Vec<_> = (0..clients.len())
            .map(|i| {
                let id = SiteId(i as u16);
                (
                    self.dep.site_key(id),
                    clients[i].clone(),
                    self.inputs[i].clone(),
                    os_seed(),
                )
            })
            .collect();
        let start = Instant::now();
        let (result, len) = self
            .rt
            .block_on(async {
                if let Err(p) = run.service.open_round(round, MODEL).await {
                    panic!("open round {round}: {p:?}");
                }
                let tasks: Vec<_> = work
                    .into_iter()
                    .map(|(key, client, input, seed)| {
                        tokio::spawn(live::site_round(setup.clone(), key, client, input, seed))
                    })
                    .collect();
                for t in tasks {
                    match t.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => panic!("site: {e}"),
                        Err(e) => panic!("site task: {e}"),
                    }
                }
                live::fetch_result(&clients[0], round).await
            })
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let took = start.elapsed();
        assert_eq!(result.sum, self.plaintext, "round {round}: wrong sum");
        (result, len, took)
    }

    fn floor_round(&self, prefix: &str) -> (RoundResult, Duration) {
        let round = self.rounds.fetch_add(1, Ordering::SeqCst);
        let work: Vec<_> = self
            .clients
            .iter()
            .zip(&self.packed)
            .map(|(c, p)| (c.clone(), p.clone()))
            .collect();
        let start = Instant::now();
        let result = self.rt.block_on(async {
            let path = format!("{prefix}/{round}");
            let tasks: Vec<_> = work
                .into_iter()
                .map(|(client, body)| {
                    let path = path.clone();
                    tokio::spawn(async move { client.post(&path, body).await })
                })
                .collect();
            for t in tasks {
                match t.await {
                    Ok(Ok(r)) if r.status == 200 => {}
                    Ok(Ok(r)) => panic!("floor upload: {}", r.status),
                    Ok(Err(e)) => panic!("floor upload: {e}"),
                    Err(e) => panic!("floor task: {e}"),
                }
            }
            let r = self.clients[0]
                .get(&format!("{path}/result"))
                .await
                .unwrap_or_else(|e| panic!("floor result: {e}"));
            assert_eq!(r.status, 200, "floor result");
            serde_json::from_slice::<RoundResult>(&r.body)
                .unwrap_or_else(|e| panic!("floor result: {e}"))
        });
        let took = start.elapsed();
        assert_eq!(result.sum, self.plaintext, "floor {round}: wrong sum");
        (result, took)
    }
}

/// One round's events as the server appended them, grouped into the batches it committed:
/// each upload (and the open) starts a transaction; the closes and downloads it caused
/// join it.
fn batches_of(events: &[Event]) -> Vec<Vec<NewEvent>> {
    let mut out: Vec<Vec<NewEvent>> = Vec::new();
    for e in events {
        let starts = matches!(e.kind, EventKind::Upload | EventKind::RoundOpen);
        match out.last_mut() {
            Some(b) if !starts => b.push(as_new(e)),
            _ => out.push(vec![as_new(e)]),
        }
    }
    out
}

fn main() {
    let mut c: Criterion = heavy_criterion().configure_from_args();
    let (n, d) = sizes();
    let label = format!("n{n}_d{d}");
    let params = RoundParams::exact(n, n / 2 + 2, INPUT_BITS, d)
        .unwrap_or_else(|e| panic!("parameters refused: {e}"));
    let bits = params.sum_bits().get();
    let dep = Arc::new(Deployment::new(params, os_seed()));
    let dir = scratch_dir();
    let (log, _writer) =
        open_sqlite(&dir.path().join("events.db")).unwrap_or_else(|e| panic!("event log: {e}"));
    let store: Arc<dyn EventStore> = Arc::new(log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let floors = floor::router(
        "/floor/disk",
        dep.consortium.clone(),
        params,
        Some(store.clone()),
    )
    .merge(floor::router(
        "/floor/mem",
        dep.consortium.clone(),
        params,
        None,
    ));
    let run = rt.block_on(fixture::start(&dep, store.clone(), Some(floors), 0));
    let clients = (0..n).map(|i| dep.client(&run.base(), SiteId(i))).collect();
    let mem_run = rt.block_on(fixture::start(&dep, Arc::new(MemoryStore::new()), None, 0));
    let mem_clients = (0..n)
        .map(|i| dep.client(&mem_run.base(), SiteId(i)))
        .collect();
    let inputs = sim::random_inputs(&params, &os_seed());
    let all: Vec<SiteId> = (0..n).map(SiteId).collect();
    let bench = Bench {
        plaintext: sim::plaintext_sum(&params, &inputs, &all),
        packed: inputs.iter().map(|x| packing::pack(x, bits)).collect(),
        inputs,
        clients,
        run,
        mem: (mem_run, mem_clients),
        dep: dep.clone(),
        rt,
        rounds: AtomicU64::new(1),
    };

    // A checked round first (its events are the SQLite component's workload), then a floor.
    let (first, result_len, _) = bench.masking_round();
    assert_eq!(first.contributors.len(), usize::from(n));
    let events: Vec<Event> = store
        .replay()
        .unwrap_or_else(|e| panic!("replay: {e}"))
        .into_iter()
        .filter(|e| e.round == 1)
        .collect();
    let _ = bench.floor_round("/floor/disk");

    let mut group = c.benchmark_group("service_round");
    group.bench_function(BenchmarkId::new("round", &label), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| bench.masking_round().2).sum())
    });
    group.bench_function(BenchmarkId::new("floor", &label), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| bench.floor_round("/floor/disk").1).sum())
    });
    group.finish();

    let mut split = c.benchmark_group("service_split");
    // PRG: every word the sites expand (n − 1 pairwise masks and a self mask each) and the
    // aggregator's self-mask expansions, as pure keystream into a cache-resident buffer.
    let words = (usize::from(n) * usize::from(n) + usize::from(n)) * d as usize;
    let key = os_seed();
    let mut scratch = vec![0u8; 16 * 1024];
    split.bench_function(BenchmarkId::new("prg", &label), |b| {
        b.iter(|| keystream_floor(&key, 4 * words, black_box(&mut scratch)))
    });
    split.bench_function(BenchmarkId::new("packing", &label), |b| {
        b.iter(|| {
            for x in &bench.inputs {
                black_box(packing::pack(black_box(x), bits));
            }
        })
    });
    // Signatures: each upload signed by its site and verified by the aggregator; the
    // AdvertiseKeys and ConsistencyCheck signatures also by the n − 1 other sites.
    let uploads: Vec<(SigningKey, Vec<u8>, usize)> = events
        .iter()
        .filter(|e| e.kind == EventKind::Upload)
        .filter_map(|e| {
            let sender = SiteId(u16::try_from(e.sender?).ok()?);
            let extra = match Phase::from_code(e.phase) {
                Some(Phase::AdvertiseKeys | Phase::ConsistencyCheck) => usize::from(n) - 1,
                _ => 0,
            };
            let body = e.body[..e.body.len().saturating_sub(64)].to_vec();
            Some((dep.site_key(sender), body, 1 + extra))
        })
        .collect();
    let context = dep.context();
    split.bench_function(BenchmarkId::new("signatures", &label), |b| {
        b.iter(|| {
            for (key, body, verifies) in &uploads {
                let sig = sign_message(key, &context, body);
                let vk = key.verifying_key();
                for _ in 0..*verifies {
                    assert!(verify_message(&vk, &context, body, &sig));
                }
            }
        })
    });
    // Not a component: the whole round with an in-memory log, against the unpersisted floor,
    // to see how much of the ratio persistence is.
    split.bench_function(BenchmarkId::new("round_unpersisted", &label), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| bench.masking_round_on(&bench.mem.0, &bench.mem.1).2)
                .sum()
        })
    });
    split.bench_function(BenchmarkId::new("tls_http_sum", &label), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| bench.floor_round("/floor/mem").1).sum())
    });
    // SQLite: the first round's own transactions, appended again (fresh round id, bodies
    // made unique so that no blob file is shared) to a fresh log on the same disk.
    let batches = batches_of(&events);
    let split_dir = scratch_dir();
    let (split_log, _split_writer) = open_sqlite(&split_dir.path().join("split.db"))
        .unwrap_or_else(|e| panic!("event log: {e}"));
    let mut fresh = 1u64 << 41;
    split.bench_function(BenchmarkId::new("sqlite", &label), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                fresh += 1;
                let mut work = batches.clone();
                for e in work.iter_mut().flatten() {
                    e.round = fresh;
                    if e.body.len() >= 8 {
                        let at = e.body.len() - 8;
                        e.body[at..].copy_from_slice(&fresh.to_be_bytes());
                    }
                }
                let start = Instant::now();
                for batch in work {
                    split_log
                        .append_batch(batch)
                        .unwrap_or_else(|e| panic!("append: {e}"));
                }
                total += start.elapsed();
            }
            total
        })
    });
    split.finish();

    // `cargo bench` passes `--bench`; without it (test mode) criterion measured nothing and the
    // estimates on disk are an earlier run's, so nothing is reported.
    if !std::env::args().any(|a| a == "--bench") {
        c.final_summary();
        bench.rt.block_on(bench.run.stop());
        bench.rt.block_on(bench.mem.0.stop());
        return;
    }
    report_ratio(
        &format!("service round n={n} d={d} over mTLS + SQLite FULL"),
        ("service_round", &format!("round/{label}")),
        ("service_round", &format!("floor/{label}")),
        1.5,
    );
    report_ratio(
        &format!("service round n={n} d={d}, both unpersisted (in-memory log)"),
        ("service_split", &format!("round_unpersisted/{label}")),
        ("service_split", &format!("tls_http_sum/{label}")),
        1.5,
    );
    report_split(&label, n, d, &events, result_len);
    c.final_summary();
    bench.rt.block_on(bench.run.stop());
    bench.rt.block_on(bench.mem.0.stop());
}

/// Writes the split table (component medians and their share of the round's median) and the
/// bytes per value, next to criterion's estimates. Nothing when criterion measured nothing.
fn report_split(label: &str, n: u16, d: u32, events: &[Event], result_len: usize) {
    let med = |g: &str, what: &str| criterion_median_ns(g, &format!("{what}/{label}"));
    let (Some(round), Some(floor)) = (med("service_round", "round"), med("service_round", "floor"))
    else {
        return;
    };
    let parts = [
        ("PRG (keystream of every mask word, one core)", "prg"),
        ("packing (sites' B-bit packing, one core)", "packing"),
        ("signatures (sign + verify, one core)", "signatures"),
        (
            "TLS + HTTP + summation + result JSON (unpersisted floor)",
            "tls_http_sum",
        ),
        ("SQLite (the round's own transactions, FULL)", "sqlite"),
    ];
    let mut table = format!(
        "| component ({label}) | median | share of round |\n|---|---|---|\n| round | {:.1} ms | 100 % |\n| floor | {:.1} ms | {:.0} % |\n",
        round / 1e6,
        floor / 1e6,
        100.0 * floor / round
    );
    if let Some(m) = med("service_split", "round_unpersisted") {
        table += &format!(
            "| round with an in-memory log (not a component) | {:.1} ms | {:.0} % |\n",
            m / 1e6,
            100.0 * m / round
        );
    }
    let mut accounted = 0.0;
    for (what, id) in parts {
        if let Some(m) = med("service_split", id) {
            accounted += m;
            table += &format!(
                "| {what} | {:.1} ms | {:.0} % |\n",
                m / 1e6,
                100.0 * m / round
            );
        }
    }
    let rest = round - accounted;
    table += &format!(
        "| remainder: waiting at phase barriers, scheduling, decoding (negative where the cores overlapped work) | {:.1} ms | {:.0} % |\n",
        rest / 1e6,
        100.0 * rest / round
    );
    let per_site: usize = events
        .iter()
        .filter(|e| e.kind == EventKind::Upload)
        .map(|e| e.body.len())
        .sum::<usize>()
        / usize::from(n);
    let masked = events
        .iter()
        .find(|e| e.kind == EventKind::Upload && e.phase == Phase::MaskedInput.code())
        .map_or(0, |e| e.body.len());
    let dv = f64::from(d);
    let bytes = format!(
        "bytes per value (fp32 = 4 B): masked-input upload {:.4} B, all five uploads of a site {:.4} B, result download (JSON) {:.4} B",
        masked as f64 / dv,
        per_site as f64 / dv,
        result_len as f64 / dv
    );
    let bodies: usize = events.iter().map(|e| e.body.len()).sum();
    let bytes = format!(
        "{bytes}\nthe round's log: {} events in {} transactions, {bodies} body bytes",
        events.len(),
        batches_of(events).len()
    );
    println!("{table}\n{bytes}");
    append_record(&bytes);
    let path = amalgam_benches::criterion_home().join("service_round_split.md");
    let _ = std::fs::write(path, format!("{table}\n{bytes}\n"));
}
