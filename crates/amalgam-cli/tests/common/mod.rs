//! Shared fixtures of the operator-command tests: the binary, a test consortium, a site
//! ledger charged for given rounds and the signed summaries it published.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use amalgam_consortium::testing::{self, TestConsortium};
use amalgam_dp::ledger::{Ledger, ledger_file_name};
use amalgam_dp::sampler::SamplerKind;
use amalgam_net::api::Anchors;
use amalgam_site::statements::LedgerSummary;

pub mod server;

pub fn amalgam(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amalgam"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The consortium, written to `dir/consortium.manifest`.
pub fn consortium(dir: &Path) -> TestConsortium {
    let c = testing::consortium(71, 5, 0, 64);
    c.signed.write(&dir.join("consortium.manifest")).unwrap();
    c
}

/// Site 0's ledger in `dir/state` charged for `rounds`; the signed summary after each round.
pub fn charged(
    dir: &Path,
    c: &TestConsortium,
    rounds: &[u64],
) -> (PathBuf, Vec<(u64, LedgerSummary)>) {
    let state = dir.join("state/agent");
    std::fs::create_dir_all(&state).unwrap();
    let policy = c.verified.budget_policy().unwrap();
    let path = state.join(ledger_file_name(policy.unit));
    let key = c.sites[0].to_ledger_key();
    let (mut ledger, _) = Ledger::open(&path, key.clone(), policy).unwrap();
    ledger
        .record_epoch(
            c.verified.consortium_digest(),
            c.verified.epoch(),
            c.verified.dp_round_params(),
        )
        .unwrap();
    let mut summaries = Vec::new();
    for &r in rounds {
        let req = c
            .verified
            .dp_round_request(r, &[0; 32], SamplerKind::Fast)
            .unwrap();
        ledger.authorize(req).unwrap();
        let a = ledger.anchor();
        summaries.push((
            r,
            LedgerSummary {
                consortium_digest: c.verified.consortium_digest(),
                round: r,
                site: 0,
                entries: a.entries as u64,
                head: a.head,
                epsilon: ledger.spent().unwrap().get(),
                record: None,
            },
        ));
    }
    (path, summaries)
}

pub fn write_anchors(dir: &Path, c: &TestConsortium, summaries: &[(u64, LedgerSummary)]) {
    write_site_anchors(&dir.join("anchors.json"), c, 0, summaries);
}

/// Site `site`'s summaries, signed with its key, as a saved `GET /v1/anchors/{site}` answer.
pub fn write_site_anchors(
    file: &Path,
    c: &TestConsortium,
    site: u16,
    summaries: &[(u64, LedgerSummary)],
) {
    let key = c.sites[usize::from(site)].to_ledger_key();
    let anchors = Anchors {
        site,
        summaries: summaries
            .iter()
            .map(|(r, s)| (*r, hex::encode(s.sign(&key))))
            .collect(),
    };
    std::fs::write(file, serde_json::to_vec(&anchors).unwrap()).unwrap();
}
