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
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use lb_tests::{
    cluster::{
        Cluster, GUARDED_PREFIX, NODES, SteadyStream, VIP_PREFIX, WITHDRAWN_WITHIN, client_ports,
        config, echo_conns, roundtrip_all, vip,
    },
    cluster_topology::node_front_addr,
    http_get,
    rig::{ECHO, SINK},
    wait_until,
};
use lb_userspace::api::FlowState;

const TESTSRV: &str = env!("CARGO_BIN_EXE_lb-testsrv");
#[test]
fn ecmp_over_three_nodes_and_a_node_dies_and_returns_without_a_reset() {
    let mut c = Cluster::start(Path::new(TESTSRV));
    let hops = c.topo.router_nexthops(VIP_PREFIX);
    let want: Vec<Ipv4Addr> = (0..NODES).map(node_front_addr).collect();
    let mut sorted = hops.clone();
    sorted.sort();
    assert_eq!(sorted, want, "one next hop per node:\n{}", c.report());
    // The probed farm's VIP once its reals passed a probe.
    c.topo
        .wait_nexthops(GUARDED_PREFIX, NODES, Duration::from_secs(10));
    let st = c.status(0);
    assert_eq!(
        st.bgp.sessions.first().map(|s| s.state.as_str()),
        Some("Established"),
        "{st:?}"
    );
    assert_eq!(st.bgp.announced, [VIP_PREFIX, GUARDED_PREFIX], "{st:?}");

    // 300 new connections spread over every node.
    let before = c.created_all();
    let failures = c.requests(300);
    assert!(failures.is_empty(), "{failures:?}\n{}", c.report());
    let per_node = c.created_since(&before);
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
    let stream = SteadyStream::start(&c.topo, Duration::from_millis(10));
    let made = c.created_since(&before);
    let victim = (0..NODES)
        .find(|&i| made[i] == 1)
        .expect("the stream's node");
    let before = c.created_all();
    let mut conns = echo_conns(&c.topo, 50);
    let made = c.created_since(&before);
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
                    f.client.ends_with(&format!(":{p}")) && f.state == FlowState::Established
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
    stream.next_phase();
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
    let gaps = stream
        .finish()
        .unwrap_or_else(|e| panic!("the steady stream broke: {e}\n{}", c.report()));
    println!(
        "the steady stream's longest gap: {:?} around the death, {:?} around the return",
        gaps[0],
        gaps.get(1).copied().unwrap_or_default()
    );
}

#[test]
fn a_drained_node_takes_no_new_flows_and_its_flows_finish() {
    let c = Cluster::start(Path::new(TESTSRV));
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
    assert_eq!(c.status(0).bgp.announced, Vec::<String>::new());

    let before = c.created(0);
    let failures = c.requests(60);
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
        c.status(0).nodes.iter().all(|p| p.flows >= 30)
    });
    assert!(ok, "peers' flow counts: {:?}", c.status(0));

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
}

#[test]
fn a_flow_survives_a_changed_real_set_and_its_node_dying() {
    let c = Cluster::start(Path::new(TESTSRV));
    let mut conns = echo_conns(&c.topo, 40);
    // Which real each connection went to (every node holds every flow).
    let ports = client_ports(&c.topo, &conns);
    let flows = c.lbs[0].flows(&["--vip", &vip(ECHO).to_string()]);
    let real_of: BTreeMap<u16, String> = flows
        .iter()
        .filter_map(|f| {
            let port = f.client.rsplit(':').next()?.parse().ok()?;
            Some((port, f.real.clone()))
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
}

#[test]
fn a_farm_with_no_up_real_is_withdrawn_on_every_node() {
    let c = Cluster::start(Path::new(TESTSRV));
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
        assert_eq!(st.bgp.announced, [VIP_PREFIX], "node {}: {st:?}", i + 1);
    }
    for real in &c.topo.reals {
        real.exec(&["nft", "delete", "table", "inet", "lbtest"]);
    }
    let took = c
        .topo
        .wait_nexthops(GUARDED_PREFIX, NODES, Duration::from_secs(10));
    println!("reals answer again: announced everywhere {took:?} later");
}
