//! Network namespaces owned by one test.
//!
//! Each [`Netns`] has a name unique to this process and call
//! (`lbt-<pid>-<seq>-<random>-<role>`), so parallel tests and parallel test
//! processes never share one, and a leftover can be traced to the process
//! that made it. Dropping a `Netns` kills what runs inside it and deletes it,
//! also while unwinding from a panic. Namespaces left by a process that was
//! killed outright (no unwinding) are removed by the next test process.

use std::{
    fs::{self, File},
    io::{self, Read},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Arc, Mutex, Once,
        atomic::{AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::spawned::{ChildSlot, Spawned, lock, reap};

/// Every namespace this harness creates starts with this, and only those are
/// ever deleted by the stale-namespace sweep.
pub const PREFIX: &str = "lbt-";

static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);
static SWEEP_STALE: Once = Once::new();

/// A network namespace created by this test, removed on drop.
pub struct Netns {
    name: String,
    /// Logs of processes spawned inside; kept when a test panics.
    log_dir: PathBuf,
    children: Mutex<Vec<Arc<ChildSlot>>>,
    spawn_seq: AtomicU64,
}

impl Netns {
    /// Creates `lbt-<runid>-<role>` with loopback up. Panics (with the reason)
    /// if not root or if `ip netns add` fails.
    pub fn new(role: &str) -> Netns {
        crate::require_root();
        assert!(
            !role.is_empty()
                && role.len() <= 32
                && role
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "netns role {role:?} must be 1-32 chars of [a-z0-9-]"
        );
        SWEEP_STALE.call_once(sweep_stale);

        let runid = format!(
            "{}-{}-{:04x}",
            std::process::id(),
            NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
            random_u16()
        );
        let name = format!("{PREFIX}{runid}-{role}");
        if let Err(e) = run_root(&["ip", "netns", "add", &name]) {
            panic!("creating network namespace {name}: {e}");
        }
        // From here on `Drop` cleans up, whatever panics below.
        let log_dir = std::env::temp_dir().join(&name);
        let ns = Netns {
            name,
            log_dir,
            children: Mutex::new(Vec::new()),
            spawn_seq: AtomicU64::new(0),
        };
        if let Err(e) = fs::create_dir_all(&ns.log_dir) {
            panic!("creating log dir {}: {e}", ns.log_dir.display());
        }
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file `ip netns` made.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Directory holding the logs of spawned processes.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Runs a command inside the namespace (`ip netns exec`); `Err` carries
    /// the command, exit status, stdout and stderr when it fails.
    pub fn try_exec(&self, args: &[&str]) -> io::Result<Output> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run_root(&full)
    }

    /// Like [`Netns::try_exec`] but panics with full context on failure.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.try_exec(args)
            .unwrap_or_else(|e| panic!("in netns {}: {e}", self.name))
    }

    /// `ip -n <ns> ARGS`, panicking on failure. Cheaper than `exec(["ip", ..])`
    /// because `ip netns exec` also sets up a mount namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run_root(&full).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Writes a sysctl of this namespace, e.g. `("net.ipv4.ip_forward", "1")`.
    /// /proc/sys/net resolves against the writer's namespace, so a write from
    /// a thread inside it is enough (no `sysctl` binary needed).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        self.run(|| fs::write(&path, value))
            .unwrap_or_else(|e| panic!("sysctl {key}={value} in {}: {e}", self.name));
    }

    /// Starts a long-running process inside the namespace with
    /// `ip netns exec`. Its stdout and stderr go to a log file
    /// ([`Spawned::log`]); it is killed when the returned guard or this
    /// namespace is dropped, whichever comes first.
    ///
    /// `ip netns exec` gives the process a private mount namespace with a
    /// fresh sysfs on /sys, so /sys/class/net shows this namespace's
    /// interfaces, but /sys/fs/bpf is no longer bpffs there. For anything
    /// that pins BPF objects (the agent) use [`Netns::spawn_setns`].
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        self.spawn_cmd(args, &mut cmd)
    }

    /// Like [`Netns::spawn`] but enters only the network namespace (setns in
    /// the child before exec): the process keeps the test's mounts, so
    /// /sys/fs/bpf is the host's bpffs. Give each process its own pin
    /// directory, e.g. [`Netns::bpf_pin_dir`], or parallel tests collide.
    pub fn spawn_setns(&self, args: &[&str]) -> Spawned {
        assert!(!args.is_empty(), "spawn needs a program");
        let file = self.open();
        let fd = file.as_raw_fd();
        let mut cmd = Command::new(args[0]);
        cmd.args(&args[1..]);
        // SAFETY: the closure runs between fork and exec and only makes the
        // setns syscall (async-signal-safe); `file` outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = self.spawn_cmd(args, &mut cmd);
        drop(file);
        spawned
    }

    /// A bpffs directory for this namespace's agent to pin into
    /// (`/sys/fs/bpf/<name>`, not created here). Unique like the namespace,
    /// and removed with it, so pinned maps and links never outlive a test.
    pub fn bpf_pin_dir(&self) -> PathBuf {
        bpf_pin_dir(&self.name)
    }

    fn spawn_cmd(&self, args: &[&str], cmd: &mut Command) -> Spawned {
        assert!(!args.is_empty(), "spawn needs a program");
        let seq = self.spawn_seq.fetch_add(1, Ordering::Relaxed);
        let prog = Path::new(args[0])
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "proc".into());
        let log_path = self.log_dir.join(format!("{seq:02}-{prog}.log"));
        let desc = format!("[{}] {}", self.name, args.join(" "));
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup log fd: {e}"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
        let spawned = Spawned::new(child, desc, log_path);
        lock(&self.children).push(spawned.slot());
        spawned
    }

    /// Runs `f` on a fresh thread that has entered this namespace, so every
    /// socket `f` creates lives here. Panics in `f` propagate unchanged.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = self.open();
        thread::scope(|s| {
            let h = thread::Builder::new()
                .name(format!("in:{}", self.name))
                .spawn_scoped(s, move || {
                    enter(&file, &self.name);
                    f()
                })
                .expect("spawning namespace thread");
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Like [`Netns::run`] but returns at once; for clients that must keep
    /// running while the test injects faults. Join the handle before dropping
    /// the namespace.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let file = self.open();
        let name = self.name.clone();
        thread::Builder::new()
            .name(format!("in:{name}"))
            .spawn(move || {
                enter(&file, &name);
                f()
            })
            .expect("spawning namespace thread")
    }

    fn open(&self) -> File {
        File::open(self.path()).unwrap_or_else(|e| panic!("opening {}: {e}", self.path().display()))
    }
}

/// Moves the calling thread into the namespace `file` refers to. Only this
/// thread moves: network namespaces are per thread, so the test's other
/// threads are untouched.
fn enter(file: &File, name: &str) {
    // SAFETY: the fd is open for the duration of the call; setns only reads it.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        panic!("setns into {name}: {}", io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for slot in lock(&self.children).drain(..) {
            reap(&slot);
        }
        // Anything else still inside (grandchildren, an agent's helpers)
        // would keep the namespace alive, unnamed, after `ip netns del`.
        kill_all_inside(&self.name);
        if let Err(e) = delete(&self.name) {
            eprintln!("lb-tests: could not delete namespace {}: {e}", self.name);
        }
        remove_pins(&self.name);
        // Keep logs for a failing test to inspect; `remove_dir` only removes
        // an empty directory, so namespaces that ran nothing leave no trace.
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.log_dir);
        } else if fs::remove_dir(&self.log_dir).is_err() {
            eprintln!(
                "lb-tests: logs of {} kept in {}",
                self.name,
                self.log_dir.display()
            );
        }
    }
}

/// Creates a veth pair with each end directly in its namespace (the kernel
/// creates both ends in their target namespaces, so no name ever appears in
/// the root namespace), and sets both ends up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    for n in [a_if, b_if] {
        assert!(
            n.len() <= 15,
            "interface name {n:?} is longer than IFNAMSIZ-1"
        );
    }
    #[rustfmt::skip]
    let args = ["ip", "link", "add", a_if, "netns", a.name(),
                "type", "veth", "peer", "name", b_if, "netns", b.name()];
    run_root(&args).unwrap_or_else(|e| panic!("{e}"));
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// SIGKILLs every process whose network namespace is `name`.
fn kill_all_inside(name: &str) {
    let Ok(out) = run_root(&["ip", "netns", "pids", name]) else {
        return;
    };
    let me = std::process::id();
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|&p| p != me && p > 1)
        .take(10_000)
    {
        // SAFETY: kill(2); the pid was just listed as inside our namespace.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

fn bpf_pin_dir(name: &str) -> PathBuf {
    Path::new("/sys/fs/bpf").join(name)
}

/// Unpins whatever an agent left under the namespace's pin directory
/// (unlinking a pin drops the kernel object once nothing else holds it).
fn remove_pins(name: &str) {
    let dir = bpf_pin_dir(name);
    if dir.exists()
        && let Err(e) = fs::remove_dir_all(&dir)
    {
        eprintln!("lb-tests: could not remove {}: {e}", dir.display());
    }
}

fn delete(name: &str) -> io::Result<()> {
    let mut last = None;
    for _ in 0..5 {
        match run_root(&["ip", "netns", "del", name]) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        if !Path::new("/run/netns").join(name).exists() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    Err(last.unwrap_or_else(|| io::Error::other("ip netns del failed")))
}

/// Removes namespaces of earlier test processes that died without
/// unwinding (SIGKILL, abort). Only `lbt-<pid>-…` names whose pid no longer
/// exists are touched; a live process's namespaces are never removed.
fn sweep_stale() {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten().take(10_000) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        eprintln!("lb-tests: removing stale namespace {name} (process {pid} is gone)");
        kill_all_inside(&name);
        let _ = delete(&name);
        remove_pins(&name);
        let _ = fs::remove_dir_all(std::env::temp_dir().join(&name));
    }
}

/// Runs a command in the root namespace (only `ip netns …`, `ip link add …
/// netns …` and `ip netns exec` go through here). `Err` carries context.
fn run_root(args: &[&str]) -> io::Result<Output> {
    let cmd = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running `{cmd}`: {e}")))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "`{cmd}` failed ({})\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        )))
    }
}

/// A few random bits so that pid reuse across runs cannot collide.
fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u16::from_le_bytes(b);
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u16)
        .unwrap_or(0)
}
