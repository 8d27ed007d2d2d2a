//! Three lb nodes of a cluster on [`ClusterTopology`], for the cluster
//! tests (tests/tests/cluster.rs) and the bench's cluster section: each
//! node's config, the agents, and the client-side probes.
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lb_userspace::api::{ClusterStatus, PeerState};

use crate::{
    EchoConn, LbAgent,
    cluster_topology::{
        ClusterTopology, NODE_AS, ROUTER_AS, node_back_addr, node_front_addr, router_addr_for,
    },
    http_get,
    rig::{ECHO, HTTP, SINK},
    wait_until,
};

pub const NODES: usize = 3;
pub const REALS: usize = 2;
/// The VIPs on every farm that is always up.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const VIP_PREFIX: &str = "198.51.100.10/32";
/// A VIP whose farm is probed: withdrawn when no real answers the probe.
pub const GUARDED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
pub const GUARDED_PREFIX: &str = "198.51.100.20/32";
pub const SYNC_PORT: u16 = 7400;
pub const KEY: &[u8] = b"lb-cluster-test-key-0123456789abcdef";
/// The longest a router takes to drop a silent node (the BGP hold time),
/// plus slack for the reconvergence.
pub const WITHDRAWN_WITHIN: Duration = Duration::from_secs(6);

pub fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.into(), port)
}

/// Node `i`'s config: an echo and an HTTP VIP at [`VIP`] on maglev farms
/// without probes, and [`GUARDED`] on a farm probed every 300 ms.
/// `echo_reals`: the echo farm's reals, each `(real index, state)`.
pub fn config(i: usize, key: &Path, echo_reals: &[(usize, &str)]) -> String {
    let real = |r: usize| -> Ipv4Addr { Ipv4Addr::new(203, 0, 113, 11 + r as u8) };
    let reals = |port: u16| -> String {
        (0..REALS)
            .map(|r| format!("      - {{ address: {}, port: {port} }}\n", real(r)))
            .collect()
    };
    let echo: String = echo_reals
        .iter()
        .map(|(r, state)| {
            format!(
                "      - {{ address: {}, port: {ECHO}, state: {state} }}\n",
                real(*r)
            )
        })
        .collect();
    let peers: Vec<String> = (0..NODES)
        .filter(|&j| j != i)
        .map(|j| format!("{}:{SYNC_PORT}", node_back_addr(j)))
        .collect();
    format!(
        "interfaces: [eth0, eth1]
xdp_mode: native
probes:
  sink-tcp: {{ type: tcp, interval: 300ms, timeout: 200ms, rise: 1, fall: 1 }}
serverfarms:
  echo:
    algorithm: maglev
    reals:
{echo}  http:
    algorithm: maglev
    reals:
{http}  guarded:
    algorithm: source-hash
    probes: [sink-tcp]
    reals:
{sink}vips:
  echo: {{ address: {VIP}, port: {ECHO}, serverfarm: echo, timeouts: {{ fin: 1s }} }}
  http: {{ address: {VIP}, port: {HTTP}, serverfarm: http }}
  guarded: {{ address: {GUARDED}, port: {SINK}, serverfarm: guarded }}
cluster:
  node_id: {id}
  listen: {me}:{SYNC_PORT}
  peers: [{peers}]
  key_file: {key}
  drain_timeout: 3s
  heartbeat: 100ms
  bgp:
    local_as: {NODE_AS}
    router_id: {front}
    hold_time: 3s
    neighbors:
      - {{ address: {router}, remote_as: {ROUTER_AS} }}
",
        http = reals(HTTP),
        sink = reals(SINK),
        id = i + 1,
        me = node_back_addr(i),
        peers = peers.join(", "),
        key = key.display(),
        front = node_front_addr(i),
        router = router_addr_for(i),
    )
}

pub struct Cluster {
    pub lbs: Vec<LbAgent>,
    pub topo: ClusterTopology,
}

impl Drop for Cluster {
    /// The agents first (their BIRDs die with them), then the topology.
    fn drop(&mut self) {
        for lb in &self.lbs {
            lb.proc.kill();
        }
    }
}

impl Cluster {
    /// The topology and three agents, up when the router routes [`VIP`]
    /// over all three and every node holds its peers' flows. `testsrv`:
    /// the `lb-testsrv` binary the reals run.
    pub fn start(testsrv: &Path) -> Cluster {
        Self::start_sized(testsrv, 65536)
    }

    /// [`Cluster::start`] with flow tables of `flow_table_size` entries
    /// (the half-open table a quarter of that).
    pub fn start_sized(testsrv: &Path, flow_table_size: u32) -> Cluster {
        crate::require_root();
        let topo = ClusterTopology::new(NODES, REALS, testsrv);
        let all_echo: Vec<(usize, &str)> = (0..REALS).map(|r| (r, "up")).collect();
        let lbs = (0..NODES)
            .map(|i| {
                let ns = &topo.nodes[i];
                std::fs::create_dir_all(ns.log_dir()).expect("log dir");
                let key = ns.log_dir().join("cluster.key");
                std::fs::write(&key, KEY).expect("key");
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod");
                LbAgent::start_sized(ns, &config(i, &key, &all_echo), flow_table_size)
            })
            .collect();
        let c = Cluster { lbs, topo };
        let took = c
            .topo
            .wait_nexthops(VIP_PREFIX, NODES, Duration::from_secs(20));
        eprintln!(
            "the router routes {VIP_PREFIX} over {NODES} nodes {took:?} after the last agent started"
        );
        for i in 0..NODES {
            c.wait_synced(i, Duration::from_secs(15));
        }
        c
    }

    /// `lb cluster status --json` of node `i`.
    pub fn status(&self, i: usize) -> ClusterStatus {
        self.lbs[i].cluster_status()
    }

    /// New flows node `i`'s datapath made (not those synced to it).
    pub fn created(&self, i: usize) -> u64 {
        self.lbs[i].status().new_flows.created
    }

    /// Node `i`'s datapath counter for `reason` (`lb_datapath_packets`).
    pub fn reason(&self, i: usize, reason: &str) -> u64 {
        let (_, text) = self.topo.nodes[i]
            .run(|| {
                http_get(
                    "127.0.0.1:9100".parse().unwrap(),
                    "/metrics",
                    Duration::from_secs(5),
                )
            })
            .expect("metrics");
        let want = format!("lb_datapath_packets_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// [`Cluster::reason`] on every node.
    pub fn reasons(&self, reason: &str) -> Vec<u64> {
        (0..NODES).map(|i| self.reason(i, reason)).collect()
    }

    /// New flows each node made since `before` (a `created_all`).
    pub fn created_since(&self, before: &[u64]) -> Vec<u64> {
        self.created_all()
            .iter()
            .zip(before)
            .map(|(a, b)| a - b)
            .collect()
    }

    /// `n` fresh connections from the client, one HTTP request each to the
    /// HTTP VIP: the ones that failed, with why.
    pub fn requests(&self, n: usize) -> Vec<String> {
        self.topo.client.run(|| {
            (0..n)
                .filter_map(|k| match http_get(vip(HTTP), "/", Duration::from_secs(5)) {
                    Ok((200, _)) => None,
                    other => Some(format!("request {k}: {other:?}")),
                })
                .collect()
        })
    }

    pub fn created_all(&self) -> Vec<u64> {
        (0..NODES).map(|i| self.created(i)).collect()
    }

    /// Waits until node `i` is up in every other node's view, and holds a
    /// complete copy of each peer's flows.
    pub fn wait_synced(&self, i: usize, timeout: Duration) {
        let ok = wait_until(timeout, Duration::from_millis(50), || {
            let st = self.status(i);
            st.caught_up
                && st
                    .nodes
                    .iter()
                    .all(|p| p.state == PeerState::Up && p.synced)
        });
        assert!(
            ok,
            "node {} did not sync with its peers: {:?}\n{}",
            i + 1,
            self.status(i),
            self.lbs[i].proc.report()
        );
    }

    pub fn report(&self) -> String {
        let mut s = self.topo.route_report(VIP_PREFIX);
        for (i, lb) in self.lbs.iter().enumerate() {
            s.push_str(&format!("\n--- node {} ---\n{}", i + 1, lb.proc.report()));
        }
        s
    }
}

/// `n` established echo connections, each checked once.
pub fn echo_conns(topo: &ClusterTopology, n: usize) -> Vec<EchoConn> {
    topo.client.run(|| crate::client::echo_conns(vip(ECHO), n))
}

/// One round trip on every connection: the ones that failed, with why.
/// A reset shows as "Connection reset by peer"; the read timeout is long
/// enough for TCP to retransmit across a node's death.
pub fn roundtrip_all(topo: &ClusterTopology, conns: &mut [EchoConn], round: &str) -> Vec<String> {
    topo.client.run(|| {
        conns
            .iter_mut()
            .enumerate()
            .filter_map(|(k, c)| {
                let _ = c.stream().set_read_timeout(Some(Duration::from_secs(30)));
                let msg = format!("{round} {k}\n");
                match c.roundtrip(msg.as_bytes()) {
                    Ok(got) if got == msg.as_bytes() => None,
                    Ok(got) => Some(format!("connection {k}: echoed {got:?}")),
                    Err(e) => Some(format!(
                        "connection {k} ({}): {e}",
                        c.local_addr().map(|a| a.to_string()).unwrap_or_default()
                    )),
                }
            })
            .collect()
    })
}

/// The client ports of `conns`, which name their flows in `lb flows`.
pub fn client_ports(topo: &ClusterTopology, conns: &[EchoConn]) -> Vec<u16> {
    topo.client.run(|| {
        conns
            .iter()
            .map(|c| c.local_addr().expect("local addr").port())
            .collect()
    })
}

/// One echo connection doing a round trip every `every` (at most 120 s),
/// measuring the longest gap between two round trips in each phase of a
/// test (a node dies: phase 0; it returns: phase 1, ...).
pub struct SteadyStream {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    handle: JoinHandle<Result<Vec<Duration>, String>>,
}

impl SteadyStream {
    /// Returns once the first round trip went through.
    pub fn start(topo: &ClusterTopology, every: Duration) -> SteadyStream {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (st, ph) = (stop.clone(), phase.clone());
        let handle = topo.client.thread(move || {
            let mut c =
                EchoConn::connect(vip(ECHO), Duration::from_secs(5)).map_err(|e| e.to_string())?;
            let _ = c.stream().set_read_timeout(Some(Duration::from_secs(30)));
            let mut gaps = Vec::new();
            let mut last = Instant::now();
            let deadline = last + Duration::from_secs(120);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                c.roundtrip(b"tick\n")
                    .map_err(|e| format!("round trip: {e}"))?;
                let now = Instant::now();
                let p = ph.load(Ordering::Relaxed);
                if gaps.len() <= p {
                    gaps.resize(p + 1, Duration::ZERO);
                } else {
                    gaps[p] = gaps[p].max(now - last);
                }
                if gaps.len() == 1 && gaps[0].is_zero() {
                    let _ = tx.send(());
                }
                last = now;
                std::thread::sleep(every);
            }
            Ok(gaps)
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the steady stream's first round trip");
        SteadyStream {
            stop,
            phase,
            handle,
        }
    }

    /// Gaps from now on count to the next phase.
    pub fn next_phase(&self) {
        self.phase.fetch_add(1, Ordering::Relaxed);
    }

    /// The longest gap of each phase, or how the stream broke.
    pub fn finish(self) -> Result<Vec<Duration>, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("the stream's thread")
    }
}
