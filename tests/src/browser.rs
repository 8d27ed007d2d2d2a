//! Debian's headless Chromium inside a test namespace, driven over the
//! DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages
//! separated by NUL bytes, commands on the child's fd 3, answers on its
//! fd 4), so no WebSocket client and no port are needed.
//!
//! The browser and every helper process it forks run in their own process
//! group, killed on drop with its fresh profile directory.
use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::Netns;

/// How long one DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Browser {
    child: Child,
    commands: File,
    answers: mpsc::Receiver<Value>,
    next_id: u64,
    /// The page's DevTools session.
    session: String,
    profile: PathBuf,
    log: PathBuf,
}

/// A pipe whose ends sit above the fds a child's dup2 targets (3 and 4),
/// close-on-exec, so only the dup2'd copies cross the exec.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    let high = |fd: i32| {
        // SAFETY: duplicates a valid fd to the lowest free number >= 10.
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        assert!(h >= 10, "fcntl: {}", std::io::Error::last_os_error());
        // SAFETY: fd is ours and closed once.
        unsafe { libc::close(fd) };
        // SAFETY: h is a fresh fd owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(h) }
    };
    (high(fds[0]), high(fds[1]))
}

impl Browser {
    /// Starts Chromium in `ns` with a blank page of `width` x `height` CSS
    /// pixels.
    pub fn start(ns: &Netns, width: u32, height: u32) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("{}-chromium-{}", ns.name(), std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        // Its temporary files too (with --disable-dev-shm-usage, its shared
        // memory), so they go with the profile.
        let tmp = profile.join("tmp");
        std::fs::create_dir_all(&tmp).expect("chromium profile dir");
        let log = ns.log_dir().join("chromium.log");
        let log_file = File::create(&log).expect("chromium log");
        let (cmd_read, cmd_write) = pipe();
        let (ans_read, ans_write) = pipe();
        let netns = File::open(ns.path()).expect("opening the namespace");
        let (netns_fd, cmd_fd, ans_fd) = (
            netns.as_raw_fd(),
            cmd_read.as_raw_fd(),
            ans_write.as_raw_fd(),
        );
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log fd"))
        .stderr(log_file);
        // SAFETY: between fork and exec only async-signal-safe calls: setns,
        // dup2, setpgid. The fds stay open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0
                    || libc::dup2(cmd_fd, 3) != 3
                    || libc::dup2(ans_fd, 4) != 4
                    || libc::setpgid(0, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("starting chromium (Debian's `chromium`, installed by scripts/setup.sh): {e}")
        });
        drop((cmd_read, ans_write, netns));
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            let mut rd = BufReader::new(File::from(ans_read));
            loop {
                let mut msg = Vec::new();
                match rd.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        msg.pop_if(|b| *b == 0);
                        if let Ok(v) = serde_json::from_slice::<Value>(&msg)
                            && tx.send(v).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            commands: File::from(cmd_write),
            answers,
            next_id: 0,
            session: String::new(),
            profile,
            log,
        };
        let target = b.command(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = b.command(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        b.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        b.page(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        b
    }

    /// Loads `url` (a fresh page load, as a reload would be).
    pub fn navigate(&mut self, url: &str) {
        self.page("Page.navigate", json!({ "url": url }));
    }

    /// Turns the page's scripts on or off, from the next load on.
    pub fn scripts(&mut self, on: bool) {
        self.page(
            "Emulation.setScriptExecutionDisabled",
            json!({ "value": !on }),
        );
    }

    /// Sends one command (to the page's session when `session` is set) and
    /// returns its result; panics on an error answer or after
    /// [`COMMAND_TIMEOUT`].
    fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("sending {method} to chromium: {e}\n{}", self.log()));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(answer) = self.answers.recv_timeout(left) else {
                panic!(
                    "chromium did not answer {method} within {COMMAND_TIMEOUT:?}\n{}",
                    self.log()
                );
            };
            if answer["id"].as_u64() != Some(id) {
                continue; // an event, or an answer to an earlier command
            }
            if let Some(err) = answer.get("error") {
                panic!("chromium refused {method}: {err}");
            }
            return answer["result"].clone();
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.command(Some(&session), method, params)
    }

    /// Evaluates `expression` in the page and returns its value (JSON).
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.page(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` every 100 ms until it is `true`, for at most
    /// `timeout`. While a page loads its document may be half there: an
    /// expression that throws counts as not yet true.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> bool {
        let guarded =
            format!("(() => {{ try {{ return {expression}; }} catch (e) {{ return false; }} }})()");
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(&guarded) == json!(true) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the page as it shows now.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.page("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// What the browser wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromium forks zygote, renderer and GPU helpers.
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: signals the process group this child leads (setpgid above).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Standard base64 (DevTools' encoding of binary results).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(val(c)) << (18 - 6 * i);
        }
        let got = chunk.len() * 6 / 8;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + got]);
    }
    out
}
