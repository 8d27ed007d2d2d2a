//! Scale-out end to end: three lb nodes behind an FRR router that spreads
//! flows by ECMP, each node announcing its VIPs through the BIRD it runs.
//! Everything is real: FRR's bgpd and zebra install the route, the kernel
//! hashes flows over its next hops, the reals answer through a multipath
//! default route over the nodes (tests/src/cluster_topology.rs).
//!
//! Proved here: the router installs each VIP with one next hop per node;
//! connections spread over all of them; a node killed outright (SIGKILL,
//! links down) or returning, a node drained, and a farm whose real set
//! changed before the node carrying its flows died reset no connection; a
//! farm without an up real is withdrawn on every node.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use lb_tests::{
    EchoConn, LbAgent,
    cluster_topology::{
        ClusterTopology, NODE_AS, ROUTER_AS, node_back_addr, node_front_addr, router_addr_for,
    },
    http_get,
    rig::{ECHO, HTTP, SINK},
    wait_until,
};
use serde_json::Value;

const TESTSRV: &str = env!("CARGO_BIN_EXE_lb-testsrv");
const NODES: usize = 3;
const REALS: usize = 2;
/// The VIPs on every farm that is always up.
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const VIP_PREFIX: &str = "198.51.100.10/32";
/// A VIP whose farm is probed: withdrawn when no real answers the probe.
const GUARDED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const GUARDED_PREFIX: &str = "198.51.100.20/32";
const SYNC_PORT: u16 = 7400;
const KEY: &[u8] = b"lb-cluster-test-key-0123456789abcdef";
/// The longest a router takes to drop a silent node (the BGP hold time),
/// plus slack for the reconvergence.
const WITHDRAWN_WITHIN: Duration = Duration::from_secs(6);

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.into(), port)
}

/// Node `i`'s config: an echo and an HTTP VIP at [`VIP`] on maglev farms
/// without probes, and [`GUARDED`] on a farm probed every 300 ms.
/// `echo_reals`: the echo farm's reals, each `(real index, state)`.
fn config(i: usize, key: &Path, echo_reals: &[(usize, &str)]) -> String {
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

struct Cluster {
    lbs: Vec<LbAgent>,
    topo: ClusterTopology,
}

impl Cluster {
    /// The topology and three agents, up when the router routes [`VIP`]
    /// over all three.
    fn start() -> Cluster {
        lb_tests::require_root();
        let topo = ClusterTopology::new(NODES, REALS, Path::new(TESTSRV));
        let all_echo: Vec<(usize, &str)> = (0..REALS).map(|r| (r, "up")).collect();
        let lbs = (0..NODES)
            .map(|i| {
                let ns = &topo.nodes[i];
                std::fs::create_dir_all(ns.log_dir()).expect("log dir");
                let key = ns.log_dir().join("cluster.key");
                std::fs::write(&key, KEY).expect("key");
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod");
                LbAgent::start(ns, &config(i, &key, &all_echo))
            })
            .collect();
        let c = Cluster { lbs, topo };
        let took = c
            .topo
            .wait_nexthops(VIP_PREFIX, NODES, Duration::from_secs(20));
        println!(
            "the router routes {VIP_PREFIX} over {NODES} nodes {took:?} after the last agent started"
        );
        c
    }

    fn status(&self, i: usize) -> Value {
        cli_json(&self.lbs[i], &["cluster", "status"])
    }

    /// New flows node `i`'s datapath made (not those synced to it).
    fn created(&self, i: usize) -> u64 {
        cli_json(&self.lbs[i], &["status"])["new_flows"]["created"]
            .as_u64()
            .expect("new_flows.created")
    }

    /// Node `i`'s datapath counter for `reason` (`lb_datapath_packets`).
    fn reason(&self, i: usize, reason: &str) -> u64 {
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
    fn reasons(&self, reason: &str) -> Vec<u64> {
        (0..NODES).map(|i| self.reason(i, reason)).collect()
    }

    fn created_all(&self) -> Vec<u64> {
        (0..NODES).map(|i| self.created(i)).collect()
    }

    /// Waits until node `i` is up in every other node's view, and holds a
    /// complete copy of each peer's flows.
    fn wait_synced(&self, i: usize, timeout: Duration) {
        let ok = wait_until(timeout, Duration::from_millis(50), || {
            let st = self.status(i);
            st["caught_up"] == true
                && st["nodes"]
                    .as_array()
                    .is_some_and(|n| n.iter().all(|p| p["state"] == "up" && p["synced"] == true))
        });
        assert!(
            ok,
            "node {} did not sync with its peers: {}\n{}",
            i + 1,
            self.status(i),
            self.lbs[i].proc.report()
        );
    }

    fn report(&self) -> String {
        let mut s = self.topo.route_report(VIP_PREFIX);
        for (i, lb) in self.lbs.iter().enumerate() {
            s.push_str(&format!("\n--- node {} ---\n{}", i + 1, lb.proc.report()));
        }
        s
    }
}

fn cli_json(lb: &LbAgent, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = lb.cli(&a);
    assert!(
        out.status.success(),
        "lb {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// `n` established echo connections, each checked once.
fn echo_conns(topo: &ClusterTopology, n: usize) -> Vec<EchoConn> {
    topo.client.run(|| {
        (0..n)
            .map(|k| {
                let mut c = EchoConn::connect(vip(ECHO), Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connection {k}: {e}"));
                let msg = format!("hello {k}\n");
                assert_eq!(c.roundtrip(msg.as_bytes()).expect("echo"), msg.as_bytes());
                c
            })
            .collect()
    })
}

/// One round trip on every connection: the ones that failed, with why.
/// A reset shows as "Connection reset by peer"; the read timeout is long
/// enough for TCP to retransmit across a node's death.
fn roundtrip_all(topo: &ClusterTopology, conns: &mut [EchoConn], round: &str) -> Vec<String> {
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

/// Set when the killed node's links come back: the steady stream counts
/// its gaps before and after apart.
static RETURNED: AtomicBool = AtomicBool::new(false);

/// One echo connection doing a round trip every 10 ms until `stop` (at
/// most 90 s): `started` once it has done one; its longest gap between
/// two round trips before and after [`RETURNED`], or why it broke.
#[allow(clippy::type_complexity)]
fn steady_stream(
    topo: &ClusterTopology,
    stop: Arc<AtomicBool>,
) -> (
    std::thread::JoinHandle<Result<(Duration, Duration), String>>,
    mpsc::Receiver<()>,
) {
    let (tx, rx) = mpsc::channel();
    let h = topo.client.thread(move || {
        let mut c =
            EchoConn::connect(vip(ECHO), Duration::from_secs(5)).map_err(|e| e.to_string())?;
        let _ = c.stream().set_read_timeout(Some(Duration::from_secs(30)));
        let mut gaps = (Duration::ZERO, Duration::ZERO);
        let mut last = Instant::now();
        let deadline = last + Duration::from_secs(90);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            c.roundtrip(b"tick\n")
                .map_err(|e| format!("round trip: {e}"))?;
            let now = Instant::now();
            let gap = if RETURNED.load(Ordering::Relaxed) {
                &mut gaps.1
            } else {
                &mut gaps.0
            };
            *gap = (*gap).max(now - last);
            if last + Duration::from_secs(90) > now {
                let _ = tx.send(());
            }
            last = now;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(gaps)
    });
    (h, rx)
}

/// The client ports of `conns`, which name their flows in `lb flows`.
fn client_ports(topo: &ClusterTopology, conns: &[EchoConn]) -> Vec<u16> {
    topo.client.run(|| {
        conns
            .iter()
            .map(|c| c.local_addr().expect("local addr").port())
            .collect()
    })
}

#[test]
fn ecmp_over_three_nodes_and_a_node_dies_and_returns_without_a_reset() {
    let mut c = Cluster::start();
    for i in 0..NODES {
        c.wait_synced(i, Duration::from_secs(10));
    }
    let hops = c.topo.router_nexthops(VIP_PREFIX);
    let want: Vec<Ipv4Addr> = (0..NODES).map(node_front_addr).collect();
    let mut sorted = hops.clone();
    sorted.sort();
    assert_eq!(sorted, want, "one next hop per node:\n{}", c.report());
    // The probed farm's VIP once its reals passed a probe.
    c.topo
        .wait_nexthops(GUARDED_PREFIX, NODES, Duration::from_secs(10));
    let st = c.status(0);
    assert_eq!(st["bgp"]["sessions"][0]["state"], "Established", "{st}");
    assert_eq!(
        st["bgp"]["announced"],
        serde_json::json!([VIP_PREFIX, GUARDED_PREFIX]),
        "{st}"
    );

    // 300 new connections spread over every node.
    let before = c.created_all();
    let failures: Vec<String> = c.topo.client.run(|| {
        (0..300)
            .filter_map(|k| match http_get(vip(HTTP), "/", Duration::from_secs(5)) {
                Ok((200, _)) => None,
                other => Some(format!("request {k}: {other:?}")),
            })
            .collect()
    });
    assert!(failures.is_empty(), "{failures:?}\n{}", c.report());
    let per_node: Vec<u64> = c
        .created_all()
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    println!("300 connections, new flows per node: {per_node:?}");
    // The reals answer through any node: replies a node translated by its
    // flow entry, and without one (the SYN-ACK racing the flow's sync).
    println!(
        "replies translated per node: by flow {:?}, statelessly {:?}",
        c.reasons("reverse"),
        c.reasons("reverse_stateless")
    );
    assert_eq!(per_node.iter().sum::<u64>(), 300, "one flow per connection");
    assert!(
        per_node.iter().all(|&n| n >= 30),
        "ECMP spreads connections over every node: {per_node:?}"
    );

    // A steady stream (a round trip every 10 ms) and 50 long-lived
    // connections; the node the stream came through dies.
    let before = c.created_all();
    let stop = Arc::new(AtomicBool::new(false));
    let (stream, started) = steady_stream(&c.topo, stop.clone());
    started
        .recv_timeout(Duration::from_secs(10))
        .expect("the stream started");
    let made: Vec<u64> = c
        .created_all()
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    let victim = (0..NODES)
        .find(|&i| made[i] == 1)
        .expect("the stream's node");
    let before = c.created_all();
    let mut conns = echo_conns(&c.topo, 50);
    let made: Vec<u64> = c
        .created_all()
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    println!(
        "50 echo connections, made per node {made:?}; node {} (the stream's) dies",
        victim + 1
    );
    assert!(made[victim] > 0);
    // Every flow is on every node before the death (streamed at creation).
    let ports = client_ports(&c.topo, &conns);
    for i in 0..NODES {
        let ok = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            let flows = c.lbs[i].flows(&["--vip", &vip(ECHO).to_string()]);
            ports.iter().all(|p| {
                flows.iter().any(|f| {
                    f["client"]
                        .as_str()
                        .is_some_and(|cl| cl.ends_with(&format!(":{p}")))
                        && f["state"] == "established"
                })
            })
        });
        assert!(ok, "node {} holds every echo flow, established", i + 1);
    }

    let replies = c.reasons("reverse");
    let broken = roundtrip_all(&c.topo, &mut conns, "before the death");
    assert!(broken.is_empty(), "{broken:?}");
    let replies: Vec<u64> = c
        .reasons("reverse")
        .iter()
        .zip(&replies)
        .map(|(a, b)| a - b)
        .collect();
    println!("one round trip on each: replies per node {replies:?}");
    let killed = Instant::now();
    c.lbs[victim].proc.kill();
    c.topo.kill_node_links(victim);
    let live: Vec<usize> = (0..NODES).filter(|&i| i != victim).collect();
    let gone = c
        .topo
        .wait_nexthops_via(VIP_PREFIX, &live, WITHDRAWN_WITHIN);
    println!(
        "node {} killed: the router dropped it {gone:?} later",
        victim + 1
    );
    let broken = roundtrip_all(&c.topo, &mut conns, "after the death");
    println!(
        "every connection answered {:?} after the kill",
        killed.elapsed()
    );
    assert!(
        broken.is_empty(),
        "connections broke when node {} died: {broken:?}\n{}",
        victim + 1,
        c.report()
    );

    // It returns: links up, agent started again (it adopts its pinned
    // datapath), copies taken, then announced; ECMP moves flows back.
    c.topo.restore_node_links(victim);
    RETURNED.store(true, Ordering::Relaxed);
    let back = Instant::now();
    let ns = &c.topo.nodes[victim];
    c.lbs[victim].restart(ns, &[]);
    c.wait_synced(victim, Duration::from_secs(15));
    let synced = back.elapsed();
    c.topo
        .wait_nexthops(VIP_PREFIX, NODES, Duration::from_secs(15));
    println!(
        "node {} back: synced {synced:?}, announced {:?} after its links came up",
        victim + 1,
        back.elapsed()
    );
    let broken = roundtrip_all(&c.topo, &mut conns, "after the return");
    assert!(
        broken.is_empty(),
        "connections broke when node {} returned: {broken:?}\n{}",
        victim + 1,
        c.report()
    );
    stop.store(true, Ordering::Relaxed);
    let gaps = stream.join().expect("the stream's thread");
    let gaps = gaps.unwrap_or_else(|e| panic!("the steady stream broke: {e}\n{}", c.report()));
    println!(
        "the steady stream's longest gap: {:?} around the death, {:?} around the return",
        gaps.0, gaps.1
    );
    for lb in &c.lbs {
        lb.proc.kill();
    }
}

#[test]
fn a_drained_node_takes_no_new_flows_and_its_flows_finish() {
    let c = Cluster::start();
    for i in 0..NODES {
        c.wait_synced(i, Duration::from_secs(10));
    }
    let mut conns = echo_conns(&c.topo, 30);
    let out = c.lbs[0].cli(&["cluster", "drain"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    println!("$ lb cluster drain\n{text}");
    assert!(text.contains("draining"), "{text}");
    let took = c
        .topo
        .wait_nexthops_via(VIP_PREFIX, &[1, 2], WITHDRAWN_WITHIN);
    println!("node 1 drained: withdrawn at the router {took:?} later");
    assert_eq!(c.status(0)["bgp"]["announced"], serde_json::json!([]));

    let before = c.created(0);
    let failures: Vec<String> = c.topo.client.run(|| {
        (0..60)
            .filter_map(|k| match http_get(vip(HTTP), "/", Duration::from_secs(5)) {
                Ok((200, _)) => None,
                other => Some(format!("request {k}: {other:?}")),
            })
            .collect()
    });
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(c.created(0), before, "a drained node makes no new flow");
    let broken = roundtrip_all(&c.topo, &mut conns, "after the drain");
    assert!(broken.is_empty(), "existing flows finish: {broken:?}");

    let out = c.lbs[0].cli(&["cluster", "status"]);
    println!(
        "$ lb cluster status\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(c.lbs[0].cli(&["cluster", "undrain"]).status.success());
    c.topo
        .wait_nexthops(VIP_PREFIX, NODES, Duration::from_secs(10));

    // The metrics say the same (scraped inside the node's namespace).
    let metrics = c.topo.nodes[0].run(|| {
        http_get(
            "127.0.0.1:9100".parse().unwrap(),
            "/metrics",
            Duration::from_secs(5),
        )
    });
    let (_, text) = metrics.expect("metrics");
    for line in [
        "lb_cluster_draining 0",
        "lb_cluster_announced_prefixes 2",
        r#"lb_cluster_peer_up{peer="203.0.113.252:7400"} 1"#,
        r#"lb_cluster_peer_synced{peer="203.0.113.253:7400"} 1"#,
        r#"lb_cluster_bgp_session_up{neighbor="198.18.11.1"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    // Every peer counts the flows it holds (from its sweeps).
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        c.status(0)["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().all(|p| p["flows"].as_u64() >= Some(30)))
    });
    assert!(ok, "peers' flow counts: {}", c.status(0));

    // SIGTERM: routes withdrawn at once, the node serves `drain_timeout`
    // (3 s) more, then the agent exits; no connection notices.
    let term = Instant::now();
    assert!(c.lbs[0].proc.signal(libc::SIGTERM));
    let took = c
        .topo
        .wait_nexthops_via(VIP_PREFIX, &[1, 2], Duration::from_secs(2));
    println!("SIGTERM: node 1 withdrawn {took:?} later");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        c.lbs[0].proc.exit_status().is_none(),
        "the agent serves out its drain_timeout:\n{}",
        c.lbs[0].proc.report()
    );
    let broken = roundtrip_all(&c.topo, &mut conns, "while stopping");
    assert!(broken.is_empty(), "{broken:?}");
    let exited = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        c.lbs[0].proc.exit_status().is_some()
    });
    assert!(exited, "the agent stops after drain_timeout");
    let at = term.elapsed();
    println!("SIGTERM: the agent exited {at:?} after the signal (drain_timeout 3s)");
    assert!(at >= Duration::from_secs(3), "{at:?}");
    assert!(c.lbs[0].proc.exit_status().expect("exited").success());
    let broken = roundtrip_all(&c.topo, &mut conns, "after the stop");
    assert!(broken.is_empty(), "{broken:?}");
    for lb in &c.lbs[1..] {
        lb.proc.kill();
    }
}

#[test]
fn a_flow_survives_a_changed_real_set_and_its_node_dying() {
    let c = Cluster::start();
    for i in 0..NODES {
        c.wait_synced(i, Duration::from_secs(10));
    }
    let mut conns = echo_conns(&c.topo, 40);
    // Which real each connection went to (every node holds every flow).
    let ports = client_ports(&c.topo, &conns);
    let flows = c.lbs[0].flows(&["--vip", &vip(ECHO).to_string()]);
    let real_of: BTreeMap<u16, String> = flows
        .iter()
        .filter_map(|f| {
            let port = f["client"].as_str()?.rsplit(':').next()?.parse().ok()?;
            Some((port, f["real"].as_str()?.to_string()))
        })
        .collect();
    let on_r1: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|p| {
            real_of
                .get(p)
                .is_some_and(|r| r.starts_with("203.0.113.11:"))
        })
        .collect();
    println!("{} of 40 connections are on 203.0.113.11", on_r1.len());
    assert!(!on_r1.is_empty(), "{real_of:?}");

    // The real set changes on every node: 203.0.113.11 takes no new flows
    // (its flows stay, fail action none), so a flow on it that lost its
    // entry would be picked anew, to the other real, and reset there.
    for (i, lb) in c.lbs.iter().enumerate() {
        let key = c.topo.nodes[i].log_dir().join("cluster.key");
        lb.write_config(&config(i, &key, &[(0, "disabled"), (1, "up")]));
        lb.reload();
    }
    let broken = roundtrip_all(&c.topo, &mut conns, "after the change");
    assert!(broken.is_empty(), "{broken:?}");
    // Now the node that carries most of them dies.
    let victim = (0..NODES).max_by_key(|&i| c.created(i)).expect("a node");
    c.lbs[victim].proc.kill();
    c.topo.kill_node_links(victim);
    let live: Vec<usize> = (0..NODES).filter(|&i| i != victim).collect();
    c.topo
        .wait_nexthops_via(VIP_PREFIX, &live, WITHDRAWN_WITHIN);
    let broken = roundtrip_all(&c.topo, &mut conns, "after the death");
    assert!(
        broken.is_empty(),
        "flows on the disabled real broke when node {} died: {broken:?}\n{}",
        victim + 1,
        c.report()
    );
    for (i, lb) in c.lbs.iter().enumerate() {
        if i != victim {
            lb.proc.kill();
        }
    }
}

#[test]
fn a_farm_with_no_up_real_is_withdrawn_on_every_node() {
    let c = Cluster::start();
    c.topo
        .wait_nexthops(GUARDED_PREFIX, NODES, Duration::from_secs(10));
    // The probe's port refuses on every real: the farm goes down on every
    // node, and every node withdraws the VIP; the other VIP address stays.
    for real in &c.topo.reals {
        real.exec(&["nft", "add", "table", "inet", "lbtest"]);
        real.exec(&[
            "nft",
            "add chain inet lbtest in { type filter hook input priority 0; }",
        ]);
        real.exec(&[
            "nft",
            &format!("add rule inet lbtest in tcp dport {SINK} reject with tcp reset"),
        ]);
    }
    let took = c
        .topo
        .wait_nexthops(GUARDED_PREFIX, 0, Duration::from_secs(10));
    println!("no real of `guarded` up: {GUARDED_PREFIX} withdrawn everywhere {took:?} later");
    assert_eq!(c.topo.router_nexthops(VIP_PREFIX).len(), NODES);
    for i in 0..NODES {
        let st = c.status(i);
        assert_eq!(
            st["bgp"]["announced"],
            serde_json::json!([VIP_PREFIX]),
            "node {}: {st}",
            i + 1
        );
    }
    for real in &c.topo.reals {
        real.exec(&["nft", "delete", "table", "inet", "lbtest"]);
    }
    let took = c
        .topo
        .wait_nexthops(GUARDED_PREFIX, NODES, Duration::from_secs(10));
    println!("reals answer again: announced everywhere {took:?} later");
    for lb in &c.lbs {
        lb.proc.kill();
    }
}
