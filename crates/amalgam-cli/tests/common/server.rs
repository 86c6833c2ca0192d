//! An aggregator process for the CLI tests and the consortiums it serves.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use amalgam_consortium::testing;

/// An aggregator process, killed on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes consortium `seed` (5 sites, 64 parameters) into `dir`: `consortium.manifest`,
/// `agg/identity.key`, `site0/identity.key`.
pub fn setup(dir: &Path, seed: u64) -> testing::TestConsortium {
    let c = testing::consortium(seed, 5, 0, 64);
    c.signed.write(&dir.join("consortium.manifest")).unwrap();
    c.aggregator.save(&dir.join("agg")).unwrap();
    c.sites[0].save(&dir.join("site0")).unwrap();
    c
}

/// `amalgam serve` on port 0 with round 1 open and phases of `phase` seconds: with no site
/// taking part, AdvertiseKeys closes empty at its deadline and the round aborts (5 s is the
/// manifest's minimum; 600 s keeps the round open for the whole test).
pub fn serve(dir: &Path, phase: &str) -> Server {
    serve_with(dir, phase, &[])
}

pub fn serve_with(dir: &Path, phase: &str, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_amalgam"))
        .current_dir(dir)
        .args([
            "serve",
            "--manifest",
            "consortium.manifest",
            "--key",
            "agg/identity.key",
            "--db",
            "events.db",
            "--round",
            "1",
            "--phase-seconds",
            phase,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().strip_prefix("READY ").unwrap().to_string();
    Server { child, url }
}

pub fn amalgam_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amalgam"));
    cmd.current_dir(dir).args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn text_of(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn member_args(url: &str) -> Vec<&str> {
    vec![
        "--manifest",
        "consortium.manifest",
        "--key",
        "site0/identity.key",
        "--aggregator",
        url,
    ]
}

/// A consortium whose campaign starts from 6 zero weights (what `site run` uses without
/// `--initial-model`), written like [`setup`].
pub fn setup_zero(d: &Path) {
    use amalgam_consortium::testing::{body, seeded_key, sign_all};
    let sites: Vec<_> = (0..5).map(|i| seeded_key(67, i)).collect();
    let agg = seeded_key(67, 99);
    let mut b = body(&sites, &agg, &[], 6);
    b.campaign.initial_weights_digest = amalgam_site::model::model_digest(&[0.0; 6]);
    let mut keys: Vec<_> = sites.iter().collect();
    keys.push(&agg);
    let (signed, _) = sign_all(b, &keys);
    signed.write(&d.join("consortium.manifest")).unwrap();
    agg.save(&d.join("agg")).unwrap();
    for (i, k) in sites.iter().enumerate() {
        k.save(&d.join(format!("site{i}"))).unwrap();
    }
}
