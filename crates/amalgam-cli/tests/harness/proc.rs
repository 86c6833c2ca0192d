//! A child process of the `amalgam` binary under test: stdout read line by line on a thread,
//! stderr kept in a file for failure messages, every wait bounded, SIGKILL on drop.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// A running `amalgam` process.
pub struct Proc {
    /// What the test calls it (in failure messages).
    pub name: String,
    child: Child,
    lines: Receiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
    stderr: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdout piped and stderr to `stderr`.
    pub fn spawn(name: &str, mut cmd: Command, stderr: PathBuf) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).unwrap());
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Proc {
            name: name.to_owned(),
            child,
            lines: rx,
            seen: Vec::new(),
            stderr,
            exited: None,
        }
    }

    /// The last lines of its stderr (for failure messages).
    pub fn stderr_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits at most `timeout` for a stdout line starting with `prefix`; panics, with its
    /// stderr, when the process ends or the time runs out first.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return l.clone();
        }
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no {prefix:?} line within {timeout:?}; stdout {:?}\n{}",
                    self.name,
                    self.seen,
                    self.stderr_tail()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{}: ended ({status:?}) before a {prefix:?} line; stdout {:?}\n{}",
                        self.name,
                        self.seen,
                        self.stderr_tail()
                    )
                }
            }
        }
    }

    /// Waits at most `timeout` for a stdout line starting with any of `prefixes` (read after
    /// the lines already seen are searched); panics as [`Proc::expect_line`] does.
    pub fn expect_any(&mut self, prefixes: &[&str], timeout: Duration) -> String {
        let hit = |l: &str| prefixes.iter().any(|p| l.starts_with(p));
        if let Some(l) = self.seen.iter().find(|l| hit(l)) {
            return l.clone();
        }
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if hit(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "{}: no line starting with {prefixes:?} within {timeout:?}; stdout {:?}\n{}",
                    self.name,
                    self.seen,
                    self.stderr_tail()
                ),
            }
        }
    }

    /// Reads the stdout lines already written, without waiting.
    pub fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// SIGKILL (what `Child::kill` sends on unix) and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }

    /// Its exit status, waiting at most `timeout` (then it is killed and the test fails).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.exited = Some(s);
                // The reader thread hands over the last lines, then ends at EOF.
                let eof = Instant::now() + Duration::from_secs(2);
                while let Ok(l) = self
                    .lines
                    .recv_timeout(eof.saturating_duration_since(Instant::now()))
                {
                    self.seen.push(l);
                }
                return s;
            }
            if Instant::now() > end {
                self.kill();
                panic!(
                    "{}: still running after {timeout:?}; stdout {:?}\n{}",
                    self.name,
                    self.seen,
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
