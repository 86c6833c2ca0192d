//! State at rest: persist before send, resume after a crash with identical re-sends, a state
//! file moved to another round or phase, and a site restored from an older copy of its state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amalgam_proto::Phase;
use amalgam_site::agent::persisted_upload;
use amalgam_site::testing::MemoryTransport;
use amalgam_site::{
    AgentError, ConsortiumRules, Download, RoundOutcome, RoundResult, SyntheticTrainer, Transport,
    TransportError,
};
use amalgam_store::StoreError;
use common::Fixture;
use ed25519_dalek::SigningKey;

/// Checks, at every upload, that the state on disk already re-sends exactly these bytes.
struct Recording {
    inner: MemoryTransport,
    dir: PathBuf,
    rules: ConsortiumRules,
    key: SigningKey,
    log: UploadLog,
    site: u16,
    /// A file and the bytes it must still hold at every upload (checked into `kept`).
    unchanged: Option<Watched>,
}

/// A file, the bytes it must hold, and whether it held them at each upload.
type Watched = (PathBuf, Vec<u8>, Arc<Mutex<Vec<bool>>>);

/// Every upload, site and phase, and whether it was already on disk when it left.
type UploadLog = Arc<Mutex<Vec<(u16, Phase, bool)>>>;

impl Recording {
    /// Site `i` of `f` over the fixture's hub, logging into `log`.
    fn new(f: &Fixture, i: u16, log: &UploadLog, unchanged: Option<Watched>) -> Self {
        Recording {
            inner: f.hub.transport(i),
            dir: f.dir(i),
            rules: f.rules.clone(),
            key: f.key(i),
            log: log.clone(),
            site: i,
            unchanged,
        }
    }
}

impl Transport for Recording {
    fn upload(&mut self, round: u64, phase: Phase, body: &[u8]) -> Result<(), TransportError> {
        let on_disk = persisted_upload(&self.dir, &self.rules, &self.key, round).unwrap();
        let persisted = on_disk.as_deref() == Some(body);
        self.log.lock().unwrap().push((self.site, phase, persisted));
        if let Some((path, bytes, kept)) = &self.unchanged {
            let same = std::fs::read(path).ok().as_deref() == Some(bytes.as_slice());
            kept.lock().unwrap().push(same);
        }
        self.inner.upload(round, phase, body)
    }
    fn download(&mut self, r: u64, p: Phase, w: Duration) -> Result<Download, TransportError> {
        self.inner.download(r, p, w)
    }
    fn mine_latest(&mut self, r: u64) -> Result<Option<Vec<u8>>, TransportError> {
        self.inner.mine_latest(r)
    }
    fn decline(&mut self, r: u64, b: &[u8]) -> Result<(), TransportError> {
        self.inner.decline(r, b)
    }
    fn upload_summary(&mut self, r: u64, b: &[u8]) -> Result<(), TransportError> {
        self.inner.upload_summary(r, b)
    }
    fn latest_summary(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        self.inner.latest_summary()
    }
    fn round_model(&mut self, r: u64) -> Result<Option<[u8; 32]>, TransportError> {
        self.inner.round_model(r)
    }
    fn result(&mut self, r: u64, w: Duration) -> Result<Option<RoundResult>, TransportError> {
        self.inner.result(r, w)
    }
}

/// Delivers uploads up to and including `phase`, then "crashes": the answer to that upload
/// is lost and every later call fails, without the aggregator noticing.
/// The process dies (a panic unwinds out of `run_round`, so no epilogue runs: what a kill
/// leaves on disk) once `phase`'s upload reached the aggregator.
struct CrashAfter {
    inner: MemoryTransport,
    phase: Phase,
    crashed: bool,
}

impl Transport for CrashAfter {
    fn upload(&mut self, round: u64, phase: Phase, body: &[u8]) -> Result<(), TransportError> {
        assert!(!self.crashed, "used after the crash");
        self.inner.upload(round, phase, body)?;
        if phase == self.phase {
            self.crashed = true;
            panic!("simulated crash");
        }
        Ok(())
    }
    fn download(&mut self, r: u64, p: Phase, w: Duration) -> Result<Download, TransportError> {
        self.inner.download(r, p, w)
    }
    fn mine_latest(&mut self, r: u64) -> Result<Option<Vec<u8>>, TransportError> {
        self.inner.mine_latest(r)
    }
    fn decline(&mut self, r: u64, b: &[u8]) -> Result<(), TransportError> {
        self.inner.decline(r, b)
    }
    fn upload_summary(&mut self, r: u64, b: &[u8]) -> Result<(), TransportError> {
        self.inner.upload_summary(r, b)
    }
    fn latest_summary(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        self.inner.latest_summary()
    }
    fn round_model(&mut self, r: u64) -> Result<Option<[u8; 32]>, TransportError> {
        self.inner.round_model(r)
    }
    fn result(&mut self, r: u64, w: Duration) -> Result<Option<RoundResult>, TransportError> {
        self.inner.result(r, w)
    }
}

/// Runs `round` until the simulated crash.
fn crash_in(agent: &mut amalgam_site::SiteAgent, crash: &mut CrashAfter, round: u64) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        agent.run_round(crash, &mut trainer(agent.site()), round)
    }));
    assert!(r.is_err() && crash.crashed, "no crash");
}

fn trainer(i: u16) -> SyntheticTrainer {
    SyntheticTrainer {
        seed: [i as u8; 32],
        norm: 0.8,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn every_upload_leaves_only_after_its_state_is_on_disk() {
    let mut f = Fixture::new(5, 4);
    let log = Arc::new(Mutex::new(Vec::new()));
    let out = f.run(1, |f, i| Recording::new(f, i, &log, None));
    assert!(
        out.iter()
            .all(|r| matches!(r, Ok(RoundOutcome::Completed { .. }))),
        "{out:?}"
    );
    let log = log.lock().unwrap();
    // Five uploads per site (one per phase), each already persisted when it left.
    assert_eq!(log.len(), 25);
    assert!(log.iter().all(|(_, _, persisted)| *persisted), "{log:?}");
    // The round's secrets are gone once it ended.
    for i in 0..5 {
        assert_eq!(
            persisted_upload(&f.dir(i), &f.rules, &f.key(i), 1).unwrap(),
            None
        );
    }
}

#[test]
fn a_crashed_site_resumes_from_disk_and_re_sends_identical_bytes() {
    let mut f = Fixture::new(5, 4);
    let mut handles = Vec::new();
    for i in 1..5u16 {
        let mut agent = f.agents[usize::from(i)].take().unwrap();
        let mut t = f.hub.transport(i);
        handles.push(std::thread::spawn(move || {
            agent.run_round(&mut t, &mut trainer(i), 1)
        }));
    }
    // Site 0 crashes after its masked input reached the aggregator (the answer was lost).
    let mut agent = f.agents[0].take().unwrap();
    let mut crash = CrashAfter {
        inner: f.hub.transport(0),
        phase: Phase::MaskedInput,
        crashed: false,
    };
    crash_in(&mut agent, &mut crash, 1);
    drop(agent);
    f.reopen(0);
    // Restored from its sealed state: re-sends the identical masked input (a different one
    // would be refused as peer.duplicate), then finishes the round.
    let mut t = f.hub.transport(0);
    let r = f.agents[0]
        .as_mut()
        .unwrap()
        .run_round(&mut t, &mut trainer(0), 1);
    assert!(matches!(r, Ok(RoundOutcome::Completed { .. })), "{r:?}");
    for h in handles {
        assert!(matches!(
            h.join().unwrap(),
            Ok(RoundOutcome::Completed { .. })
        ));
    }
    let result = f.hub.result(1).unwrap();
    assert_eq!(result.sum, f.plaintext_sum(1, &[0, 1, 2, 3, 4]));
    // It drew its noise once: one encoded update, one charge.
    assert_eq!(
        f.encoded
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _, _)| *s == 0)
            .count(),
        1
    );
    assert_eq!(f.audit(0).accepted, 1);
}

#[test]
fn a_state_file_moved_to_another_round_or_phase_does_not_open() {
    let mut f = Fixture::new(5, 4);
    let mut agent = f.agents[0].take().unwrap();
    let mut crash = CrashAfter {
        inner: f.hub.transport(0),
        phase: Phase::AdvertiseKeys,
        crashed: false,
    };
    crash_in(&mut agent, &mut crash, 1);
    drop(agent);
    let sealed = f.dir(0).join("sealed");
    let state = sealed.join("round-1").join("state.sealed");
    let original = std::fs::read(&state).unwrap();
    // Moved to round 2: its binding names round 1.
    std::fs::create_dir_all(sealed.join("round-2")).unwrap();
    std::fs::copy(&state, sealed.join("round-2").join("state.sealed")).unwrap();
    f.reopen(0);
    let mut t = f.hub.transport(0);
    let r = f.agents[0]
        .as_mut()
        .unwrap()
        .run_round(&mut t, &mut trainer(0), 2);
    assert!(
        matches!(r, Err(AgentError::Store(StoreError::SealedMismatch { .. }))),
        "{r:?}"
    );
    std::fs::remove_dir_all(sealed.join("round-2")).unwrap();
    // Relabelled as another phase (the header's phase byte): the AEAD refuses it.
    let mut relabelled = original.clone();
    relabelled[8 + 42] = 3;
    std::fs::write(&state, &relabelled).unwrap();
    let r = f.agents[0]
        .as_mut()
        .unwrap()
        .run_round(&mut t, &mut trainer(0), 1);
    assert!(
        matches!(r, Err(AgentError::Store(StoreError::Corrupt { .. }))),
        "{r:?}"
    );
    // Put back, it resumes (and re-sends its advertisement).
    std::fs::write(&state, &original).unwrap();
    let site = f.agents[0].as_ref().unwrap().site();
    assert_eq!(site, 0);
    assert!(
        persisted_upload(&f.dir(0), &f.rules, &f.key(0), 1)
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_site_restored_from_an_older_state_copy_refuses_the_round() {
    let mut f = Fixture::new(5, 4);
    let backup = f.root.path().join("site-0-backup");
    copy_dir(&f.dir(0), &backup);
    let out = f.run_plain(1);
    assert!(
        out.iter()
            .all(|r| matches!(r, Ok(RoundOutcome::Completed { .. }))),
        "{out:?}"
    );
    // The operator puts the old copy back.
    f.agents[0] = None;
    std::fs::remove_dir_all(f.dir(0)).unwrap();
    copy_dir(&backup, &f.dir(0));
    f.reopen(0);
    let agent = f.agents[0].as_mut().unwrap();
    let mut t = f.hub.transport(0);
    // Round 1 again: the aggregator holds this site's round-1 messages, local state has none.
    let r = agent.run_round(&mut t, &mut trainer(0), 1);
    assert!(
        matches!(r, Err(AgentError::RolledBack { round: 1 })),
        "{r:?}"
    );
    // The high-water mark moved: round 1 stays refused even without the aggregator's copy.
    let r = agent.run_round(&mut f.hub.transport(0), &mut trainer(0), 1);
    assert!(r.is_err());
    // Round 2: its ledger is behind the summary it uploaded after round 1: no charge.
    let entries = agent.ledger().anchor().entries;
    let r = agent.run_round(&mut t, &mut trainer(0), 2);
    assert!(matches!(r, Err(AgentError::LedgerBehind(_))), "{r:?}");
    assert_eq!(agent.ledger().anchor().entries, entries);
}

/// The files of `dir`'s agent-wide state that hold a model (named by its digest).
fn model_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("agent").join("round-0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("agent.model"))
        })
        .collect();
    v.sort();
    v
}

/// A site is killed after it wrote model_2 (from round 1's result) but before the record that
/// names it: the state on disk is the copy taken before round 1 plus the new model's file.
/// The record still names model_1, whose file a new model never overwrites, so the site
/// reopens on model_1 and removes the file no record names. Only one model file is kept once
/// the record moved on, and the saves before each upload of a round do not rewrite the
/// unchanged model.
#[test]
fn a_kill_between_the_new_model_and_its_record_reopens_on_the_model_the_record_names() {
    let mut f = Fixture::new(5, 4);
    let before = f.agents[0].as_ref().unwrap().model().1;
    let old_files = model_files(&f.dir(0));
    assert_eq!(old_files.len(), 1, "{old_files:?}");
    let sealed_before = std::fs::read(&old_files[0]).unwrap();
    let backup = f.root.path().join("site-0-before-round-1");
    copy_dir(&f.dir(0), &backup);
    let kept = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::new(Mutex::new(Vec::new()));
    let watched = (old_files[0].clone(), sealed_before.clone(), kept.clone());
    let out = f.run(1, |f, i| {
        Recording::new(f, i, &log, (i == 0).then(|| watched.clone()))
    });
    assert!(
        out.iter()
            .all(|r| matches!(r, Ok(RoundOutcome::Completed { .. }))),
        "{out:?}"
    );
    // Saved before each of its five uploads, the unchanged model was never rewritten
    // (sealing draws a fresh nonce, so a rewrite would change the file's bytes).
    assert_eq!(*kept.lock().unwrap(), vec![true; 5]);
    let after = f.agents[0].as_ref().unwrap().model().1;
    assert_ne!(after, before, "round 1 did not move the model");
    let new_files = model_files(&f.dir(0));
    assert_eq!(
        new_files.len(),
        1,
        "the old model file was kept: {new_files:?}"
    );
    assert_ne!(new_files, old_files);

    // The kill: the pre-round copy with the new model's file beside the old record.
    let new_model = std::fs::read(&new_files[0]).unwrap();
    f.agents[0] = None;
    std::fs::remove_dir_all(f.dir(0)).unwrap();
    copy_dir(&backup, &f.dir(0));
    let landed = f
        .dir(0)
        .join("agent")
        .join("round-0")
        .join(new_files[0].file_name().unwrap());
    std::fs::write(&landed, new_model).unwrap();
    f.reopen(0);
    assert_eq!(f.agents[0].as_ref().unwrap().model().1, before);
    // The model no record names is removed at the open.
    assert_eq!(model_files(&f.dir(0)), old_files);
}
