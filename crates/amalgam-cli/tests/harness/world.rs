//! A consortium on disk and the `amalgam` processes of its round 1: the aggregator
//! (`amalgam serve`), the sites (`amalgam site run --synthetic-trainer`), and the checks every
//! crash test ends with (the published sum against the plaintext sum, each upload counted
//! once in the event log, downloads re-delivered byte-identical after a restart).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use amalgam_consortium::testing::{body, seeded_key, sign_all};
use amalgam_consortium::{IdentityKey, VerifiedManifest};
use amalgam_proto::Phase;
use amalgam_server::events::{Event, EventKind, open_sqlite};
use amalgam_site::http::HttpTransport;
use amalgam_site::{Download, RoundResult, Transport};
use sha2::{Digest, Sha256};

use super::proc::Proc;

/// The round every test runs (`amalgam serve --round 1`).
pub const ROUND: u64 = 1;
/// Model dimension: small, so that a round costs little CPU.
pub const DIM: usize = 6;
/// The masking phases, in order.
pub const PHASES: [Phase; 5] = [
    Phase::AdvertiseKeys,
    Phase::ShareKeys,
    Phase::MaskedInput,
    Phase::ConsistencyCheck,
    Phase::Unmasking,
];
/// The longest any single step may take (a READY line, a site's round, a result): every
/// wait is bounded, no test can hang.
pub const STEP: Duration = Duration::from_secs(90);

/// A consortium of `n` sites in a temporary directory.
pub struct World {
    /// Manifest, keys, state directories, event log, logs of every process.
    pub dir: tempfile::TempDir,
    /// Site count.
    pub n: usize,
    /// The sites' identity keys (index = the manifest's site id).
    pub sites: Vec<IdentityKey>,
    /// The manifest as the harness's own clients verify it.
    pub verified: VerifiedManifest,
    /// Bit width b of the encoded values (sums are mod 2^b).
    pub bits: u32,
    runs: Cell<u32>,
}

impl Drop for World {
    /// `AMALGAM_TEST_KEEP=1` keeps the directory (logs of every process) for a post-mortem.
    fn drop(&mut self) {
        if std::env::var_os("AMALGAM_TEST_KEEP").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("kept {:?}", dir.keep());
        }
    }
}

/// A running aggregator.
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// `https://127.0.0.1:<port>` (a restart binds the same port: the sites keep it).
    pub url: String,
    /// `http://127.0.0.1:<port>` of `/metrics`.
    pub metrics: String,
}

impl Server {
    /// `127.0.0.1:<port>` of the API listener.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("https://").to_owned()
    }
}

fn policy() -> amalgam_net::client::RetryPolicy {
    amalgam_net::client::RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(50),
        max: Duration::from_millis(500),
        timeout: Duration::from_secs(30),
        max_body: 1 << 24,
    }
}

impl World {
    /// `n` sites with the manifest's default threshold, or `threshold` (then `n - threshold`
    /// dropouts are tolerated, with the most colluders that allows).
    pub fn new(seed: u64, n: usize, threshold: Option<u16>) -> World {
        Self::with_committee(seed, n, threshold, 0, false)
    }

    /// [`World::new`] with a decryptor committee of `k` members (keys in `dec<j>/`, default
    /// committee numbers) and the fallback policy `fallback`.
    pub fn with_committee(
        seed: u64,
        n: usize,
        threshold: Option<u16>,
        k: usize,
        fallback: bool,
    ) -> World {
        amalgam_net::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let sites: Vec<_> = (0..n as u64).map(|i| seeded_key(seed, i)).collect();
        let agg = seeded_key(seed, 99);
        let decs: Vec<_> = (0..k as u64).map(|j| seeded_key(seed, 200 + j)).collect();
        let mut b = body(&sites, &agg, &decs, DIM as u64);
        b.fallback.allowed = fallback;
        b.campaign.initial_weights_digest = amalgam_site::model::model_digest(&[0.0; DIM]);
        if let Some(t) = threshold {
            let n = n as u16;
            b.protocol.threshold = t;
            b.protocol.dropouts = n - t;
            b.protocol.min_cohort = t;
            b.protocol.colluders = (2 * t).saturating_sub(n + 1).min(t.saturating_sub(2));
        }
        let bits = b.dp.bits.get();
        let mut keys: Vec<_> = sites.iter().collect();
        keys.push(&agg);
        keys.extend(decs.iter());
        let (signed, verified) = sign_all(b, &keys);
        // Index = the site id the manifest gives the key (its member order), so that site
        // process i is the protocol's site i in results, downloads and log rows.
        let mut sites = sites;
        sites.sort_by_key(|k| verified.site_index(&k.verifying_key()).unwrap());
        for (i, k) in sites.iter().enumerate() {
            assert_eq!(verified.site_index(&k.verifying_key()), Some(i as u16));
        }
        signed
            .write(&dir.path().join("consortium.manifest"))
            .unwrap();
        agg.save(&dir.path().join("agg")).unwrap();
        for (i, k) in sites.iter().enumerate() {
            k.save(&dir.path().join(format!("key{i}"))).unwrap();
        }
        // Index = the committee index the manifest gives the key.
        for k in &decs {
            let j = verified
                .decryptors()
                .iter()
                .position(|m| m.key == k.verifying_key())
                .unwrap();
            k.save(&dir.path().join(format!("dec{j}"))).unwrap();
        }
        World {
            dir,
            n,
            sites,
            verified,
            bits,
            runs: Cell::new(0),
        }
    }

    /// A path in the world's directory.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The aggregator's event log.
    pub fn db(&self) -> PathBuf {
        self.path("events.db")
    }

    fn stderr_file(&self, who: &str) -> PathBuf {
        let k = self.runs.get() + 1;
        self.runs.set(k);
        self.path(&format!("{who}-{k}.stderr"))
    }

    /// Starts committee member `j` (`amalgam decryptor serve`, state in `dstate<j>`) and
    /// waits for its READY line.
    pub fn decryptor(&self, j: usize, url: &str, fault: Option<&str>) -> Proc {
        let mut p = self.spawn_decryptor(j, url, fault);
        p.expect_line("READY member", STEP);
        p
    }

    /// Starts committee member `j` without waiting for anything.
    pub fn spawn_decryptor(&self, j: usize, url: &str, fault: Option<&str>) -> Proc {
        let mut cmd = self.amalgam(fault);
        cmd.args([
            "decryptor",
            "serve",
            "--manifest",
            "consortium.manifest",
            "--key",
        ])
        .arg(format!("dec{j}/identity.key"))
        .arg("--state")
        .arg(format!("dstate{j}"))
        .args(["--aggregator", url, "--poll-seconds", "1"]);
        Proc::spawn(
            &format!("decryptor {j}"),
            cmd,
            self.stderr_file(&format!("decryptor{j}")),
        )
    }

    fn amalgam(&self, fault: Option<&str>) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_amalgam"));
        cmd.current_dir(self.dir.path()).env_remove("AMALGAM_FAULT");
        if let Some(f) = fault {
            cmd.env("AMALGAM_FAULT", f);
        }
        cmd
    }

    /// The `amalgam serve` command line on `listen`, opening round 1.
    pub fn serve_cmd(&self, listen: &str, phase_seconds: u64, fault: Option<&str>) -> Command {
        self.serve_round_cmd(listen, phase_seconds, fault, 1, None)
    }

    /// The `amalgam serve` command line on `listen`, opening round `round` (on the model
    /// with hex digest `model`, which rounds after 1 need).
    pub fn serve_round_cmd(
        &self,
        listen: &str,
        phase_seconds: u64,
        fault: Option<&str>,
        round: u64,
        model: Option<&str>,
    ) -> Command {
        let mut cmd = self.amalgam(fault);
        cmd.args(["serve", "--manifest", "consortium.manifest"])
            .args(["--key", "agg/identity.key", "--db"])
            .arg(self.db())
            .args(["--listen", listen, "--round"])
            .arg(round.to_string())
            .arg("--phase-seconds")
            .arg(phase_seconds.to_string());
        if let Some(m) = model {
            cmd.args(["--model-digest", m]);
        }
        cmd
    }

    /// Starts the aggregator and waits for its READY and METRICS lines.
    pub fn serve(&self, listen: &str, phase_seconds: u64, fault: Option<&str>) -> Server {
        self.start_server(self.serve_cmd(listen, phase_seconds, fault))
    }

    /// Starts the aggregator running the manifest's campaign from all-zero initial weights
    /// (`--initial-model`: round 0 first, each next round on the model the last one gives).
    pub fn serve_campaign(&self, phase_seconds: u64) -> Server {
        self.serve_campaign_with(phase_seconds, &[])
    }

    /// [`Self::serve_campaign`] with further `amalgam serve` arguments.
    pub fn serve_campaign_with(&self, phase_seconds: u64, extra: &[&str]) -> Server {
        std::fs::write(self.path("initial.bin"), vec![0u8; DIM * 4]).unwrap();
        let mut cmd = self.amalgam(None);
        cmd.args(["serve", "--manifest", "consortium.manifest"])
            .args(["--key", "agg/identity.key", "--db"])
            .arg(self.db())
            .args(["--listen", "127.0.0.1:0", "--initial-model", "initial.bin"])
            .arg("--phase-seconds")
            .arg(phase_seconds.to_string())
            .args(extra);
        self.start_server(cmd)
    }

    fn start_server(&self, cmd: Command) -> Server {
        let mut proc = Proc::spawn("aggregator", cmd, self.stderr_file("aggregator"));
        let ready = proc.expect_line("READY ", STEP);
        let metrics = proc.expect_line("METRICS ", STEP);
        Server {
            proc,
            url: ready["READY ".len()..].trim().to_owned(),
            metrics: metrics["METRICS ".len()..].trim().to_owned(),
        }
    }

    /// Starts site `i` for one round against `url`, its state in `state<i>`, its encoded
    /// update written to `encoded<i>.json`.
    pub fn site(&self, i: usize, url: &str, fault: Option<&str>) -> Proc {
        self.site_rounds(i, url, fault, 1)
    }

    /// [`World::site`] for `rounds` rounds.
    pub fn site_rounds(&self, i: usize, url: &str, fault: Option<&str>, rounds: u32) -> Proc {
        let mut cmd = self.amalgam(fault);
        cmd.args(["site", "run", "--manifest", "consortium.manifest", "--key"])
            .arg(format!("key{i}/identity.key"))
            .arg("--state")
            .arg(format!("state{i}"))
            .args([
                "--aggregator",
                url,
                "--rounds",
                &rounds.to_string(),
                "--wait-for-round",
                "60",
            ])
            .arg("--synthetic-trainer")
            .arg(format!("{:02x}", i + 1))
            .env(
                "AMALGAM_TEST_ENCODED",
                self.path(&format!("encoded{i}.json")),
            );
        Proc::spawn(
            &format!("site {i}"),
            cmd,
            self.stderr_file(&format!("site{i}")),
        )
    }

    /// All sites, site `i` with `faults[i]`.
    pub fn sites(&self, url: &str, fault: impl Fn(usize) -> Option<String>) -> Vec<Proc> {
        (0..self.n)
            .map(|i| self.site(i, url, fault(i).as_deref()))
            .collect()
    }

    /// A client authenticated as site `i`.
    pub fn transport(&self, i: usize, url: &str) -> HttpTransport {
        HttpTransport::new(url, &self.sites[i], &self.verified, policy()).unwrap()
    }

    /// Round 1's published result, long-polled (bounded by [`STEP`]).
    pub fn result(&self, url: &str) -> RoundResult {
        let mut t = self.transport(0, url);
        let end = Instant::now() + STEP;
        loop {
            if let Some(r) = t.result(ROUND, Duration::from_secs(5)).unwrap() {
                return r;
            }
            assert!(
                Instant::now() < end,
                "no result of round {ROUND} in {STEP:?}"
            );
        }
    }

    /// Every download of round 1 the aggregator serves now: (site, phase code) → bytes.
    pub fn downloads(&self, url: &str) -> BTreeMap<(usize, u8), Vec<u8>> {
        let mut out = BTreeMap::new();
        for i in 0..self.n {
            let mut t = self.transport(i, url);
            for p in PHASES {
                if let Ok(Download::Message(b)) = t.download(ROUND, p, Duration::from_secs(1)) {
                    out.insert((i, p.code()), b);
                }
            }
        }
        out
    }

    /// Σ of the contributors' encoded updates mod 2^b, from what each site wrote out.
    pub fn plaintext_sum(&self, contributors: &[u16]) -> Vec<u64> {
        let mask = (1u64 << self.bits) - 1;
        // The encoded vector is the model padded to the protocol's dimension.
        let mut sum: Vec<u64> = Vec::new();
        for &c in contributors {
            let f = self.path(&format!("encoded{c}.json"));
            let doc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            assert_eq!(doc["round"], ROUND, "{f:?}");
            let values = doc["values"].as_array().unwrap();
            assert!(values.len() >= DIM, "{f:?}: {} values", values.len());
            if sum.is_empty() {
                sum = vec![0; values.len()];
            }
            assert_eq!(values.len(), sum.len(), "{f:?}");
            for (a, v) in sum.iter_mut().zip(values) {
                *a = (*a + v.as_u64().unwrap()) & mask;
            }
        }
        sum
    }

    /// The event log, read while no aggregator runs (it takes the lock).
    pub fn log(&self) -> Vec<Event> {
        let (h, writer) = open_sqlite(&self.db()).unwrap();
        let events = h.replay().unwrap();
        drop(h);
        let _ = writer.join();
        events
    }
}

/// (phase code, sender) → how many upload rows the log holds for it.
pub fn upload_rows(events: &[Event]) -> BTreeMap<(u8, u32), usize> {
    let mut m = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == EventKind::Upload) {
        *m.entry((e.phase, e.sender.unwrap())).or_insert(0) += 1;
    }
    m
}

/// How many rows of `kind` the log holds.
pub fn rows(events: &[Event], kind: EventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

/// The site ran its round to completion: exit 0 and a `Completed` outcome.
pub fn expect_completed(site: &mut Proc) {
    let status = site.wait_exit(STEP);
    assert!(
        status.success() && site.seen.iter().any(|l| l.contains("Completed")),
        "{}: {status:?} {:?}\n{}",
        site.name,
        site.seen,
        site.stderr_tail()
    );
}

/// `/metrics` of a running aggregator (a plain HTTP/1.1 GET on loopback).
pub fn metrics(url: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The 409 refusals (a second, different message for a phase; a message for a phase that is
/// not open) the aggregator counted, as metric lines.
pub fn conflicts(metrics_text: &str) -> Vec<String> {
    metrics_text
        .lines()
        .filter(|l| l.starts_with("amalgam_rejected_requests"))
        .filter(|l| l.contains("peer.duplicate") || l.contains("round.wrong-phase"))
        .filter(|l| !l.ends_with(" 0"))
        .map(str::to_owned)
        .collect()
}

/// SHA-256 of `b`.
pub fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}
