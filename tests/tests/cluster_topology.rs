//! Proves the cluster harness itself, with no load balancer: BIRD 2 in each
//! node namespace stands in for the agent's BGP speaker and announces one
//! VIP; the router (FRR) must install it with a next hop per node, drop a
//! node whose links die and take it back when they return.
//!
//! Needs root; without it the test fails loudly (CI runs as root, a skip
//! would hide a broken setup).

use std::{
    collections::BTreeSet,
    fs,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use lb_tests::{
    Netns, Spawned,
    cluster_topology::{
        ClusterTopology, NODE_AS, ROUTER_AS, node_back_addr, node_front_addr, router_addr_for,
    },
    ha_topology::{reachable, wait_reachable},
    require_root,
};

const N_NODES: usize = 3;
/// VIP 10 ([`lb_tests::topology::vip`]) as a route.
const PREFIX: &str = "198.51.100.10/32";

/// BIRD's config for node `i`: announce the VIP as a blackhole /32 to the
/// router, import nothing. Short timers so that a node whose links come
/// back peers again within a second or two (BIRD's defaults wait 5 s
/// before the first connect and 60 s after an error).
fn bird_conf(i: usize) -> String {
    format!(
        "log stderr all;\n\
         router id {front};\n\
         protocol device {{}}\n\
         protocol static vips {{\n  ipv4;\n  route {PREFIX} blackhole;\n}}\n\
         protocol bgp up {{\n  \
           local {front} as {NODE_AS};\n  \
           neighbor {rtr} as {ROUTER_AS};\n  \
           hold time 3;\n  keepalive time 1;\n  \
           connect delay time 1;\n  connect retry time 1;\n  \
           error wait time 1, 2;\n  \
           ipv4 {{ import none; export where proto = \"vips\"; }};\n\
         }}\n",
        front = node_front_addr(i),
        rtr = router_addr_for(i),
    )
}

fn start_bird(node: &Netns, i: usize) -> Spawned {
    let dir = node.log_dir().join("bird");
    fs::create_dir_all(&dir).expect("bird dir");
    let conf = dir.join("bird.conf");
    fs::write(&conf, bird_conf(i)).expect("bird.conf");
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    #[rustfmt::skip]
    let bird = node.spawn(&[
        "bird", "-f", "-c", &conf.to_string_lossy(), "-s", &p("bird.ctl"), "-P", &p("bird.pid"),
    ]);
    bird
}

fn hops(topo: &ClusterTopology) -> BTreeSet<Ipv4Addr> {
    topo.router_nexthops(PREFIX).into_iter().collect()
}

fn fronts(nodes: &[usize]) -> BTreeSet<Ipv4Addr> {
    nodes.iter().map(|&i| node_front_addr(i)).collect()
}

#[test]
fn router_spreads_a_vip_over_the_nodes_and_follows_a_dead_node() {
    require_root();
    let t0 = Instant::now();
    let topo = ClusterTopology::new(N_NODES, 2, Path::new(env!("CARGO_BIN_EXE_lb-testsrv")));
    println!("topology + FRR up in {:?}", t0.elapsed());
    let t = Instant::now();
    let birds: Vec<Spawned> = topo
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| start_bird(n, i))
        .collect();

    // Plain routing, no BGP needed: client -> router -> node 1's front,
    // real 1 -> every node's back.
    assert!(reachable(&topo.client, node_front_addr(0)));
    for i in 0..N_NODES {
        assert!(
            reachable(&topo.reals[0], node_back_addr(i)),
            "real 1 cannot reach node {}'s back address",
            i + 1
        );
    }

    let took = topo.wait_established(N_NODES, Duration::from_secs(10));
    println!("{N_NODES} BGP sessions established in {took:?} (from BIRD start)");
    topo.wait_nexthops_via(PREFIX, &[0, 1, 2], Duration::from_secs(5));
    println!(
        "{PREFIX} via {:?}, {:?} after BIRD start",
        hops(&topo),
        t.elapsed()
    );
    assert_eq!(hops(&topo), fronts(&[0, 1, 2]));

    // Node 2 dies: carrier loss on the router's port resets the session at
    // once (fast-external-failover), no need to wait for the hold time.
    topo.kill_node_links(1);
    let took = topo.wait_nexthops(PREFIX, 2, Duration::from_secs(5));
    println!("node 2 links down -> 2 next hops in {took:?}");
    assert_eq!(hops(&topo), fronts(&[0, 2]));
    assert!(!reachable(&topo.client, node_front_addr(1)));

    topo.restore_node_links(1);
    let took = topo.wait_nexthops(PREFIX, 3, Duration::from_secs(10));
    println!("node 2 links up -> 3 next hops in {took:?}");
    assert_eq!(hops(&topo), fronts(&[0, 1, 2]));
    assert!(wait_reachable(
        &topo.client,
        node_front_addr(1),
        Duration::from_secs(3)
    ));

    // Node 3's speaker hangs with its links up: only the hold time finds it.
    assert!(birds[2].freeze(), "BIRD on node 3 did not stop");
    let took = topo.wait_nexthops(PREFIX, 2, Duration::from_secs(8));
    println!("node 3 BIRD frozen -> 2 next hops in {took:?} (hold time 3 s)");
    assert_eq!(hops(&topo), fronts(&[0, 1]));
    assert!(birds[2].signal(libc::SIGCONT));
    let took = topo.wait_nexthops(PREFIX, 3, Duration::from_secs(10));
    println!("node 3 BIRD resumed -> 3 next hops in {took:?}");

    for (i, b) in birds.iter().enumerate() {
        assert!(
            b.is_running(),
            "BIRD on node {} died\n{}",
            i + 1,
            b.report()
        );
    }
    println!("total {:?}", t0.elapsed());
}
