//! Starting `lb-testsrv` (src/bin/lb-testsrv.rs) inside a namespace and
//! waiting until every listener is bound.
//!
//! The binary's path comes from the test (`env!("CARGO_BIN_EXE_lb-testsrv")`):
//! cargo only tells integration tests where it is, not this library.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::{netns::Netns, spawned::Spawned};

/// Builder for one `lb-testsrv` process.
#[derive(Clone, Debug)]
pub struct TestServer {
    exe: PathBuf,
    name: String,
    listeners: Vec<(&'static str, SocketAddr)>,
    ready_timeout: Duration,
}

impl TestServer {
    /// `name` is what the server answers with (HTTP body, UDP prefix).
    pub fn new(exe: impl Into<PathBuf>, name: &str) -> Self {
        Self {
            exe: exe.into(),
            name: name.to_string(),
            listeners: Vec::new(),
            ready_timeout: Duration::from_secs(5),
        }
    }

    /// HTTP/1.1: body `<name>\n`; `/status/NNN` answers NNN.
    pub fn http(self, addr: SocketAddr) -> Self {
        self.listen("http", addr)
    }

    /// UDP: replies `<name>:<payload>`.
    pub fn udp(self, addr: SocketAddr) -> Self {
        self.listen("udp", addr)
    }

    /// TCP echo.
    pub fn echo(self, addr: SocketAddr) -> Self {
        self.listen("echo", addr)
    }

    /// TCP sink: at EOF answers `<count> <fnv1a64 hex>\n`.
    pub fn sink(self, addr: SocketAddr) -> Self {
        self.listen("sink", addr)
    }

    /// TCP source: reads a decimal byte count and a newline, sends that many
    /// bytes of the [`crate::data::SOURCE_SEED`] pattern stream, closes.
    pub fn source(self, addr: SocketAddr) -> Self {
        self.listen("source", addr)
    }

    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.ready_timeout = t;
        self
    }

    fn listen(mut self, kind: &'static str, addr: SocketAddr) -> Self {
        self.listeners.push((kind, addr));
        self
    }

    /// The command line, for spawning it some other way.
    pub fn args(&self) -> Vec<String> {
        let mut v = vec![
            self.exe.to_string_lossy().into_owned(),
            "--name".into(),
            self.name.clone(),
        ];
        for (kind, addr) in &self.listeners {
            v.push(format!("--{kind}"));
            v.push(addr.to_string());
        }
        v
    }

    /// Spawns the server in `ns` and waits until each listener printed its
    /// `listening` line. Panics with the server's log if it does not.
    pub fn spawn(&self, ns: &Netns) -> Spawned {
        assert!(!self.listeners.is_empty(), "lb-testsrv needs a listener");
        let args = self.args();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let srv = ns.spawn(&argv);
        let want = self.listeners.len();
        let ready = srv.wait_log(self.ready_timeout, |log| {
            log.lines().filter(|l| l.starts_with("listening ")).count() >= want
        });
        if !ready {
            let report = srv.report();
            drop(srv); // killed here, so its drop does not print the log twice
            panic!(
                "lb-testsrv {} not ready within {:?}\n{report}",
                self.name, self.ready_timeout
            );
        }
        srv
    }
}
