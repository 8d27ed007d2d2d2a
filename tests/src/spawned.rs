//! Guard for a process spawned into a [`Netns`](crate::netns::Netns): its
//! log, its state, signals for fault injection, and kill-on-drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, ExitStatus},
    sync::{Arc, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

/// `None` once the child was killed and reaped. Holding the un-reaped
/// `Child` is what makes signalling by pid safe: its pid cannot be reused.
pub(crate) type ChildSlot = Mutex<Option<Child>>;

/// A process running inside a [`Netns`]; killed and reaped on drop.
pub struct Spawned {
    child: Arc<ChildSlot>,
    pid: u32,
    desc: String,
    log_path: PathBuf,
}

impl Spawned {
    pub(crate) fn new(child: Child, desc: String, log_path: PathBuf) -> Self {
        Spawned {
            pid: child.id(),
            child: Arc::new(Mutex::new(Some(child))),
            desc,
            log_path,
        }
    }

    /// The shared slot, so the namespace can kill the child if it is
    /// dropped first.
    pub(crate) fn slot(&self) -> Arc<ChildSlot> {
        Arc::clone(&self.child)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// True while the process has not exited (and was not killed).
    pub fn is_running(&self) -> bool {
        let mut slot = lock(&self.child);
        matches!(slot.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Exit status if the process has exited on its own.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        lock(&self.child)
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `sig` (e.g. `libc::SIGSTOP` to freeze a real, `SIGTERM` for a
    /// graceful stop). Returns false if the process is already gone.
    pub fn signal(&self, sig: i32) -> bool {
        let mut slot = lock(&self.child);
        let Some(child) = slot.as_mut() else {
            return false;
        };
        // Not yet reaped, so the pid still belongs to our child.
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        unsafe { libc::kill(self.pid as libc::pid_t, sig) == 0 }
    }

    /// SIGSTOP, and wait (up to 2 s) until every thread of the process is
    /// stopped: kill(2) returns before the group stop completes, and a
    /// thread still running may answer one more request (seen once as "a
    /// stopped server answered"). Returns false if it did not stop.
    pub fn freeze(&self) -> bool {
        if !self.signal(libc::SIGSTOP) {
            return false;
        }
        let stopped = || {
            let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", self.pid)) else {
                return false;
            };
            tasks.filter_map(Result::ok).all(|t| {
                // The state follows the parenthesised command name.
                fs::read_to_string(t.path().join("stat")).is_ok_and(|st| {
                    st.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
                })
            })
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if stopped() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// SIGKILL and reap now (fault injection: "the real died").
    pub fn kill(&self) {
        reap(&self.child);
    }

    /// Polls the log until `pred` holds, the process exits, or `timeout`.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let running = self.is_running();
            if pred(&self.log()) {
                return true;
            }
            if !running || Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the log until it contains `needle`; see [`Spawned::wait_log`].
    pub fn wait_log_contains(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_log(timeout, |log| log.contains(needle))
    }

    /// A printable summary: command, state and the last lines of the log.
    pub fn report(&self) -> String {
        let state = match self.exit_status() {
            Some(s) => format!("exited: {s}"),
            None if self.is_running() => "running".to_string(),
            None => "killed".to_string(),
        };
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        format!(
            "--- {} (pid {}, {state}, log {}) ---\n{}\n---",
            self.desc,
            self.pid,
            self.log_path.display(),
            tail.join("\n")
        )
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // The log is what explains most e2e failures; show it automatically.
        if thread::panicking() {
            eprintln!("{}", self.report());
        }
        reap(&self.child);
    }
}

pub(crate) fn reap(slot: &ChildSlot) {
    if let Some(mut child) = lock(slot).take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Mutex poisoning only means another test thread panicked; the data (child
/// handles) is still what we need to clean up.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
