//! The child processes of `amalgam simulate`: the aggregator and the sites, each a run of this
//! same executable. Their stdout lines come to the harness through one channel; their stderr
//! goes to a file in the work directory, named in any failure. Every child is killed when the
//! harness stops for any reason (drop) and on Ctrl-C.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};

use crate::Failure;

/// One stdout line of a child: (child name, line).
pub type Line = (String, String);

struct Entry {
    name: String,
    log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

/// The running children.
pub struct Children {
    entries: Arc<Mutex<Vec<Entry>>>,
    tx: Sender<Line>,
    /// Every child's stdout lines.
    pub lines: Receiver<Line>,
}

/// Environment of every child: one torch (OpenMP/MKL) thread and one rayon thread; each
/// process's tokio runtime gets `workers` threads. Eight sites and the aggregator share a
/// machine here, so each stays small.
fn limit_threads(cmd: &mut Command, workers: usize) {
    cmd.env("OMP_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1")
        .env("TOKIO_WORKER_THREADS", workers.to_string());
}

impl Children {
    /// No children yet; Ctrl-C from now on kills those spawned and exits with status 130.
    pub fn start() -> Children {
        let (tx, lines) = channel();
        let entries: Arc<Mutex<Vec<Entry>>> = Arc::new(Mutex::new(Vec::new()));
        let on_signal = Arc::downgrade(&entries);
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                if let Some(entries) = on_signal.upgrade() {
                    kill_all(&mut entries.lock().unwrap_or_else(PoisonError::into_inner));
                }
                eprintln!("amalgam: interrupted; every child process was killed");
                std::process::exit(130);
            }
        });
        Children { entries, tx, lines }
    }

    /// Spawns `amalgam ARGS` as child `name` with `workers` runtime threads, stderr appended
    /// to `log`.
    pub fn spawn(
        &self,
        name: &str,
        args: &[String],
        workers: usize,
        log: &Path,
    ) -> Result<(), Failure> {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::failed(format!("cannot find this executable: {e}")))?;
        let stderr: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Failure::failed(format!("{}: {e}", log.display())))?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        limit_threads(&mut cmd, workers);
        let mut child = cmd
            .spawn()
            .map_err(|e| Failure::failed(format!("{name}: cannot start: {e}")))?;
        if let Some(out) = child.stdout.take() {
            let tx = self.tx.clone();
            let who = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(l) = line else { break };
                    if tx.send((who.clone(), l)).is_err() {
                        break;
                    }
                }
            });
        }
        self.lock().push(Entry {
            name: name.to_owned(),
            log: log.to_path_buf(),
            child,
            exited: None,
        });
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails naming the child and its log when one exited unsuccessfully, or when one named
    /// in `must_run` exited at all.
    pub fn check(&self, must_run: &[&str]) -> Result<(), Failure> {
        let mut entries = self.lock();
        for e in entries.iter_mut() {
            if e.exited.is_none()
                && let Ok(Some(status)) = e.child.try_wait()
            {
                e.exited = Some(status);
                if !status.success() || must_run.contains(&e.name.as_str()) {
                    return Err(Failure::failed(format!(
                        "{} exited ({status}); its log: {}",
                        e.name,
                        e.log.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether every child called `name` has exited successfully.
    pub fn done(&self, name: &str) -> bool {
        self.lock()
            .iter()
            .filter(|e| e.name == name)
            .all(|e| e.exited.is_some_and(|s| s.success()))
    }

    /// Kills every child still running (and reaps it).
    pub fn kill(&self) {
        kill_all(&mut self.lock());
    }
}

fn kill_all(entries: &mut [Entry]) {
    for e in entries.iter_mut() {
        if e.exited.is_none() {
            let _ = e.child.kill();
            e.exited = e.child.wait().ok();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.kill();
    }
}
