//! A running `lb` agent inside a test namespace, and its CLI.
//!
//! The agent enters only the network namespace (`spawn_setns`), so it pins
//! into the host's bpffs under the namespace's own directory; the CLI runs
//! from the test process: it talks to the agent over the Unix socket and
//! reads the pinned maps, neither of which depends on the namespace.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use lb_userspace::api;
use serde::de::DeserializeOwned;

use crate::{Netns, Spawned};

/// The `lb` binary: `LB_BIN`, or the `lb` beside this binary (the bench and
/// demo binaries live in `target/<profile>/`), or `target/<profile>/lb` above
/// a test binary in `target/<profile>/deps/` (`cargo xtask test` builds it).
pub fn lb_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LB_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let beside = exe.with_file_name("lb");
    if beside.exists() {
        return beside;
    }
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("lb");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p lb-userspace`) or set LB_BIN",
        bin.display()
    );
    bin
}

pub struct LbAgent {
    pub proc: Spawned,
    pub config: PathBuf,
    pin_dir: PathBuf,
    flow_table_size: u32,
    socket: PathBuf,
}

impl LbAgent {
    /// Writes `body` (a config without `api:` and `bpf:`, which are added
    /// here, unique to the namespace) and starts `lb run` in `ns`.
    pub fn start(ns: &Netns, body: &str) -> LbAgent {
        Self::start_sized(ns, body, 65536)
    }

    /// [`LbAgent::start`] with a flow table of `flow_table_size` entries.
    pub fn start_sized(ns: &Netns, body: &str, flow_table_size: u32) -> LbAgent {
        let dir = ns.log_dir().to_path_buf();
        std::fs::create_dir_all(&dir).expect("log dir");
        let config = dir.join("lb.yaml");
        let (pin_dir, socket) = (ns.bpf_pin_dir(), dir.join("lb.sock"));
        write_config(&config, &pin_dir, &socket, body, flow_table_size);
        let bin = lb_bin();
        let proc = ns.spawn_setns(&[bin.to_str().unwrap(), "run", "-c", config.to_str().unwrap()]);
        assert!(
            proc.wait_log_contains("lb running", Duration::from_secs(20)),
            "lb did not start:\n{}",
            proc.report()
        );
        LbAgent {
            proc,
            config,
            pin_dir,
            flow_table_size,
            socket,
        }
    }

    /// Starts `lb run` again with the same config (after the previous agent
    /// was killed or stopped), with `extra` arguments such as `--reset`.
    pub fn restart(&mut self, ns: &Netns, extra: &[&str]) {
        self.restart_with(ns, &[], extra);
    }

    /// [`LbAgent::restart`] under `prefix`, a command that execs the rest
    /// (env(1) with systemd's `NOTIFY_SOCKET`, setpriv(1) with the unit's
    /// capabilities), so the agent keeps the pid the harness tracks.
    pub fn restart_with(&mut self, ns: &Netns, prefix: &[&str], extra: &[&str]) {
        let bin = lb_bin();
        let mut args = prefix.to_vec();
        args.extend([
            bin.to_str().unwrap(),
            "run",
            "-c",
            self.config.to_str().unwrap(),
        ]);
        args.extend_from_slice(extra);
        self.proc = ns.spawn_setns(&args);
        assert!(
            self.proc
                .wait_log_contains("lb running", Duration::from_secs(20)),
            "lb did not start again:\n{}",
            self.proc.report()
        );
    }

    /// Sends `sig` and waits for the agent to exit; panics unless it exited
    /// cleanly within 10 s.
    pub fn stop_with(&self, sig: i32) {
        assert!(
            self.proc.signal(sig),
            "lb exited early:\n{}",
            self.proc.report()
        );
        let exited = crate::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            self.proc.exit_status().is_some()
        });
        assert!(
            exited,
            "lb did not stop on signal {sig}:\n{}",
            self.proc.report()
        );
        let status = self.proc.exit_status().expect("exited");
        assert!(
            status.success(),
            "lb stopped with {status}:\n{}",
            self.proc.report()
        );
    }

    /// The agent's API socket (`api.socket` in its config).
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// `lb teardown`: the datapath down, pins gone (through the agent if
    /// one runs). Panics unless it succeeded; returns its output.
    pub fn teardown(&self) -> String {
        let out = self.cli(&["teardown"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "lb teardown failed: {text}\n{}",
            self.proc.report()
        );
        assert!(
            !self.pin_dir.exists(),
            "lb teardown left {}: {text}",
            self.pin_dir.display()
        );
        text
    }

    /// Replaces the config file (the agent reads it at the next reload).
    pub fn write_config(&self, body: &str) {
        write_config(
            &self.config,
            &self.pin_dir,
            &self.socket,
            body,
            self.flow_table_size,
        );
    }

    /// Runs the CLI with `args` and `-c <config>` where the command takes it.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(lb_bin());
        cmd.args(args);
        if !args.contains(&"-c") {
            cmd.args(["-c", self.config.to_str().unwrap()]);
        }
        cmd.output().expect("run lb")
    }

    /// `lb reload`; panics with the output unless it succeeded.
    pub fn reload(&self) -> String {
        let out = self.cli(&["reload"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "lb reload failed: {text}\n{}",
            self.proc.report()
        );
        text
    }

    /// `lb ARGS --json`, read as the API type `T`; panics with the
    /// command's stderr unless it succeeded, and with its output unless it
    /// is a `T`.
    pub fn json<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.cli(&a);
        assert!(
            out.status.success(),
            "lb {}: {}{}",
            a.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "lb {}: not a {}: {e}\n{}",
                a.join(" "),
                std::any::type_name::<T>(),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `lb status --json`.
    pub fn status(&self) -> api::Status {
        self.json(&["status"])
    }

    /// `lb reals --json`.
    pub fn reals(&self) -> Vec<api::RealRow> {
        self.json(&["reals"])
    }

    /// The row of `lb reals --json` for `farm`'s real `addr:port`.
    pub fn real(&self, farm: &str, real: &str) -> Option<api::RealRow> {
        self.reals()
            .into_iter()
            .find(|r| r.farm == farm && format!("{}:{}", r.address, r.port) == real)
    }

    /// `lb vips --json`.
    pub fn vips(&self) -> Vec<api::VipRow> {
        self.json(&["vips"])
    }

    /// `lb stats --json`.
    pub fn stats(&self) -> api::Stats {
        self.json(&["stats"])
    }

    /// `lb ha status --json`; panics if the agent is standalone (its answer
    /// is then a role and a message).
    pub fn ha_status(&self) -> api::HaStatus {
        match self.json(&["ha", "status"]) {
            api::HaAnswer::Status(st) => *st,
            api::HaAnswer::Role(r) => panic!("lb ha status: not in a pair: {r:?}"),
        }
    }

    /// `lb cluster status --json`.
    pub fn cluster_status(&self) -> api::ClusterStatus {
        self.json::<api::ClusterAnswer>(&["cluster", "status"])
            .status
    }

    /// `lb flows --json` with extra filter arguments.
    pub fn flows(&self, filters: &[&str]) -> Vec<api::FlowRow> {
        let mut args = vec!["flows"];
        args.extend_from_slice(filters);
        self.json(&args)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }
}

fn write_config(path: &Path, pin_dir: &Path, socket: &Path, body: &str, flow_table_size: u32) {
    let full = format!(
        "{body}\napi: {{ socket: {} }}\nbpf: {{ pin_dir: {}, flow_table_size: {flow_table_size} }}\n",
        socket.display(),
        pin_dir.display()
    );
    std::fs::write(path, full).expect("write config");
}
