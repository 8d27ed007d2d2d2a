//! Scale-out (`cluster:`): N active nodes behind a router that spreads flows
//! over them by ECMP. Each node
//! - announces its VIPs over BGP through BIRD, which it runs itself
//!   ([`bird`]), while it can serve them ([`announce`]);
//! - picks a new flow's real by a hash every node computes alike (maglev
//!   or source-hash: `lb check` refuses the rest);
//! - streams its flows to every peer and keeps theirs ([`node`]), so a flow
//!   ECMP moves continues on its real;
//! - translates a real's reply it holds no flow for by the real's endpoint
//!   alone (`REPLY_NAT`; lb-ebpf's reply.rs), so a reply that comes back
//!   through another node than its flow's first packet is never lost, not
//!   even the SYN-ACK that races the flow's sync.
pub mod announce;
pub mod bird;
pub mod node;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use log::info;
use tokio::sync::watch;

use crate::config::Cluster;
use crate::control::Programmed;
use node::Node;

use crate::api::{BgpStatus, ClusterAction, ClusterStatus as Status};

/// A node's cluster parts, owned by the agent's loop.
pub struct Runtime {
    cfg: Cluster,
    pub node: Node,
    want: watch::Sender<BTreeSet<IpAddr>>,
    report: watch::Receiver<bird::Report>,
    /// Ends BIRD with it (the task owns the child).
    bird: tokio::task::JoinHandle<()>,
    drained: bool,
    stopping_at: Option<Instant>,
}

fn prefixes(set: &BTreeSet<IpAddr>) -> Vec<String> {
    set.iter()
        .map(|a| format!("{a}/{}", if a.is_ipv6() { 128 } else { 32 }))
        .collect()
}

impl Runtime {
    /// Binds the sync socket and starts BIRD, announcing what `programmed`
    /// can serve. `run_dir`: where BIRD's config and control socket go.
    pub fn start(
        cfg: &Cluster,
        programmed: &Programmed,
        flow_table_size: u32,
        run_dir: &Path,
    ) -> Result<(Runtime, crate::ha::socket::Datagrams)> {
        let (node, datagrams) = Node::start(cfg, programmed, flow_table_size)?;
        // Nothing until the peers' copies are in (`announce`).
        let (want, want_rx) = watch::channel(BTreeSet::new());
        let (report_tx, report) = watch::channel(bird::Report::default());
        let bird = bird::supervise(run_dir.to_path_buf(), cfg.bgp.clone(), want_rx, report_tx)?;
        info!(
            "cluster: node {} syncing with {:?} from {}; BGP to {:?}",
            cfg.node_id,
            cfg.peers,
            cfg.listen,
            cfg.bgp
                .neighbors
                .iter()
                .map(|n| n.address)
                .collect::<Vec<_>>()
        );
        Ok((
            Runtime {
                cfg: cfg.clone(),
                node,
                want,
                report,
                bird,
                drained: false,
                stopping_at: None,
            },
            datagrams,
        ))
    }

    pub fn draining(&self) -> bool {
        self.drained || self.stopping_at.is_some()
    }

    /// Announces what can be served now (the reals' states, the drain):
    /// called after anything that may change it, and every tick. Nothing
    /// while the node catches up with its peers' flows (`Node::caught_up`):
    /// announced too early, it would draw flows it holds no entries for.
    pub fn announce(&mut self, programmed: &Programmed) {
        let hold = self.draining() || !self.node.caught_up();
        let next = announce::wanted(programmed, self.cfg.bgp.min_up, hold);
        self.want.send_if_modified(|cur| {
            if *cur == next {
                return false;
            }
            info!(
                "cluster: announcing {:?} (was {:?})",
                prefixes(&next),
                prefixes(cur)
            );
            *cur = next;
            true
        });
    }

    /// `lb cluster drain|undrain`.
    pub fn act(&mut self, action: ClusterAction, programmed: &Programmed) -> String {
        match action {
            ClusterAction::Status => String::new(),
            ClusterAction::Drain => {
                self.drained = true;
                self.announce(programmed);
                "draining: routes withdrawn; existing flows finish".into()
            }
            ClusterAction::Undrain => {
                self.drained = false;
                self.announce(programmed);
                "undrained: routes announced again for VIPs with enough up reals".into()
            }
        }
    }

    /// SIGTERM: withdraw now, stop after `drain_timeout`. Returns when.
    pub fn stop(&mut self, programmed: &Programmed) -> Instant {
        let at = *self
            .stopping_at
            .get_or_insert_with(|| Instant::now() + self.cfg.drain_timeout);
        self.announce(programmed);
        at
    }

    pub fn status(&self) -> Status {
        let r = self.report.borrow();
        Status {
            node_id: self.cfg.node_id,
            listen: self.cfg.listen,
            draining: self.draining(),
            caught_up: self.node.caught_up(),
            stopping_in_ms: self
                .stopping_at
                .map(|at| at.saturating_duration_since(Instant::now()).as_millis() as u64),
            nodes: self.node.peers(),
            bgp: BgpStatus {
                sessions: r.sessions.clone(),
                announced: prefixes(&r.announced),
                wanted: prefixes(&self.want.borrow()),
                daemon_starts: r.starts,
                error: r.error.clone(),
            },
            sync: self.node.counters(),
        }
    }

    /// The heartbeat interval: how often `node.on_tick` runs.
    pub fn tick_every(&self) -> Duration {
        self.cfg.heartbeat
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.bird.abort();
    }
}
