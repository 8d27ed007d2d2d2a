//! Section 5: a cluster of three lb nodes behind an FRR router doing ECMP,
//! on the topology of the cluster tests (lb_tests::cluster: the real `lb`
//! binary on every node with the BIRD it runs, XDP native, two reals).
//!
//! - **A node dies**, in rounds: a TCP echo stream (a round trip every
//!   5 ms) runs through a node that is then killed (agent SIGKILLed, links
//!   down). The time until the router's route has lost the node, and the
//!   stream's longest silence. The node then **returns** (links up, agent
//!   started again on its pinned datapath): the time until it holds its
//!   peers' flows and until the router routes through it again, and the
//!   stream's longest silence while ECMP moves flows back.
//! - **A node freezes** (its agent and BIRD stopped with SIGSTOP, links
//!   up): no session closes, so the router drops it only when the BGP hold
//!   time (3 s) runs out.
//! - **Sync to two peers**: a burst of distinct SYNs injected into node
//!   1's attached program with BPF_PROG_TEST_RUN (nothing is transmitted);
//!   the rate at which each peer's table gains them.
//! - **New connections per second** from the client (fresh connection, one
//!   HTTP request, close, on 4 threads) through three nodes and through one
//!   (the other two drained). All of it runs on one machine's two cores, so
//!   this is what three nodes cost, not what they would add.
use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use lb_common::{Flow, FlowKey};
use lb_tests::{
    cluster::{Cluster, NODES, SteadyStream, VIP_PREFIX, vip},
    cluster_topology::node_front_addr,
    http_get,
    rig::HTTP,
    wait_until,
};
use lb_userspace::{datapath, ha::mirror::forward_key};

use crate::{
    failover::{Syns, ms, tuple},
    record::{Deadline, emit, progress},
};

const S: &str = "cluster";

pub fn run(quick: bool) {
    let rounds = if quick { 1 } else { 3 };
    let burst: u64 = if quick { 5_000 } else { 50_000 };
    let load = Duration::from_secs(if quick { 3 } else { 10 });
    let deadline = Deadline::new(
        "the cluster section",
        Duration::from_secs(if quick { 300 } else { 900 }),
    );
    let testsrv = std::env::current_exe()
        .expect("current_exe")
        .with_file_name("lb-testsrv");
    progress("cluster: three lb nodes behind an FRR router, two reals");
    // Room for the burst's half-open flows (two entries each) in every
    // node's half-open table, a quarter of the flow table.
    let table = 8 * burst as u32 + 65_536;
    let mut c = Cluster::start_sized(&testsrv, table);
    emit(S, "setup", "flow_table_entries", table);
    emit(S, "setup", "nodes", NODES);
    emit(S, "setup", "bgp_hold_time_s", 3);

    for round in 1..=rounds {
        deadline.check();
        death_round(&mut c, round);
    }
    deadline.check();
    freeze(&c);
    deadline.check();
    sync_burst(&c, burst, deadline);
    deadline.check();
    connections(&c, load, deadline);
}

/// The nodes the route for the VIP goes through now.
fn routed(c: &Cluster) -> Vec<usize> {
    let hops = c.topo.router_nexthops(VIP_PREFIX);
    (0..NODES)
        .filter(|&i| hops.contains(&node_front_addr(i)))
        .collect()
}

fn death_round(c: &mut Cluster, round: usize) {
    let row = format!("round {round}");
    let before = c.created_all();
    let stream = SteadyStream::start(&c.topo, Duration::from_millis(5));
    let victim = c
        .created_since(&before)
        .iter()
        .position(|&n| n > 0)
        .expect("the stream's node");
    progress(format!("cluster: {row}, node {} dies", victim + 1));
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    c.lbs[victim].proc.kill();
    c.topo.kill_node_links(victim);
    let live: Vec<usize> = (0..NODES).filter(|&i| i != victim).collect();
    let withdrawn = c
        .topo
        .wait_nexthops_via(VIP_PREFIX, &live, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    stream.next_phase();

    c.topo.restore_node_links(victim);
    let back = Instant::now();
    c.lbs[victim].restart(&c.topo.nodes[victim], &[]);
    let started = back.elapsed();
    c.wait_synced(victim, Duration::from_secs(20));
    let synced = back.elapsed();
    c.topo
        .wait_nexthops(VIP_PREFIX, NODES, Duration::from_secs(20));
    let announced = back.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    emit(S, &row, "withdrawn_ms", ms(withdrawn));
    emit(S, &row, "agent_started_ms", ms(started));
    emit(S, &row, "synced_ms", ms(synced));
    emit(S, &row, "announced_ms", ms(announced));
    match stream.finish() {
        Ok(gaps) => {
            emit(S, &row, "death_gap_ms", ms(gaps[0]));
            emit(
                S,
                &row,
                "return_gap_ms",
                ms(gaps.get(1).copied().unwrap_or_default()),
            );
        }
        Err(e) => emit(S, &row, "stream_broke", e),
    }
    emit(S, &row, "killed_to_returned_ms", ms(killed.elapsed()));
}

/// The pids in node `i`'s namespace directory of processes whose command
/// line names `needle` (the agent's config, BIRD's).
fn pids_with(needle: &Path) -> Vec<i32> {
    let needle = needle.to_string_lossy();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle.as_ref()))
        })
        .collect()
}

fn freeze(c: &Cluster) {
    let i = NODES - 1;
    progress(format!("cluster: node {} freezes", i + 1));
    let dir = c.topo.nodes[i].log_dir();
    let pids = pids_with(&dir.join("bird"));
    let pids: Vec<i32> = pids
        .into_iter()
        .chain([c.lbs[i].proc.pid() as i32])
        .collect();
    let frozen = Instant::now();
    for &p in &pids {
        // SAFETY: kill(2) on processes this run started.
        unsafe { libc::kill(p, libc::SIGSTOP) };
    }
    let live: Vec<usize> = (0..NODES).filter(|&j| j != i).collect();
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
        routed(c) == live
    });
    let dropped = frozen.elapsed();
    for &p in &pids {
        // SAFETY: as above.
        unsafe { libc::kill(p, libc::SIGCONT) };
    }
    emit(
        S,
        "node frozen (SIGSTOP), links up",
        "withdrawn_ms",
        if ok {
            ms(dropped)
        } else {
            "not within 10 s".into()
        },
    );
    c.topo
        .wait_nexthops(VIP_PREFIX, NODES, Duration::from_secs(20));
    emit(
        S,
        "node frozen (SIGSTOP), links up",
        "back_ms",
        ms(frozen.elapsed()),
    );
}

/// Injected SYNs on node 1; polled on nodes 2 and 3.
fn sync_burst(c: &Cluster, n: u64, deadline: Deadline) {
    progress(format!(
        "cluster: sync of a burst of {n} new flows to two peers"
    ));
    const BASE: u64 = 2_000_000;
    let inj = Syns::on(&c.topo.nodes[0], "eth0");
    let peers: Vec<[BpfHashMap<MapData, FlowKey, Flow>; 2]> = (1..NODES)
        .map(|i| {
            let pins = c.lbs[i].pin_dir();
            [
                datapath::open_flows(pins).expect("FLOWS"),
                datapath::open_embryos(pins)
                    .expect("EMBRYOS")
                    .expect("EMBRYOS pinned"),
            ]
        })
        .collect();
    let has = |p: &[BpfHashMap<MapData, FlowKey, Flow>; 2], k: u64| {
        let key = forward_key(&tuple(BASE + k));
        p.iter().any(|m| m.get(&key, 0).is_ok())
    };
    let t0 = Instant::now();
    c.topo.nodes[0].run(|| {
        for k in 0..n {
            if k % 4096 == 0 {
                deadline.check();
            }
            inj.syn(BASE + k);
        }
    });
    let injected = t0.elapsed();
    for (j, p) in peers.iter().enumerate() {
        let row = format!("burst of {n} new flows, to node {}", j + 2);
        let ok = wait_until(Duration::from_secs(60), Duration::from_micros(200), || {
            has(p, n - 1)
        });
        let landed = t0.elapsed();
        let present = (0..n).filter(|&k| has(p, k)).count() as u64;
        emit(S, &row, "flows", n);
        emit(
            S,
            &row,
            "injected_per_s",
            format!("{:.0}", n as f64 / injected.as_secs_f64()),
        );
        if ok {
            emit(
                S,
                &row,
                "replicated_per_s",
                format!("{:.0}", present as f64 / landed.as_secs_f64()),
            );
            emit(S, &row, "last_lag_ms", ms(landed.saturating_sub(injected)));
        }
        emit(S, &row, "on_peer", present);
    }
}

/// New connections per second for `load` from 4 client threads.
fn rate(c: &Cluster, load: Duration, deadline: Deadline) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            c.topo.client.thread(move || {
                while !stop.load(Ordering::Relaxed) {
                    match http_get(vip(HTTP), "/", Duration::from_secs(2)) {
                        Ok((200, _)) => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    while t0.elapsed() < load {
        deadline.check();
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let took = t0.elapsed();
    for t in threads {
        t.join().expect("load thread");
    }
    (
        done.load(Ordering::Relaxed) as f64 / took.as_secs_f64(),
        failed.load(Ordering::Relaxed),
    )
}

fn connections(c: &Cluster, load: Duration, deadline: Deadline) {
    progress("cluster: new connections per second through 3 nodes and through 1");
    let (three, failed3) = rate(c, load, deadline);
    for lb in &c.lbs[1..] {
        assert!(lb.cli(&["cluster", "drain"]).status.success());
    }
    c.topo
        .wait_nexthops_via(VIP_PREFIX, &[0], Duration::from_secs(10));
    let (one, failed1) = rate(c, load, deadline);
    for lb in &c.lbs[1..] {
        assert!(lb.cli(&["cluster", "undrain"]).status.success());
    }
    let row = "new connections per second (4 client threads)";
    emit(S, row, "three_nodes", format!("{three:.0}"));
    emit(S, row, "one_node", format!("{one:.0}"));
    emit(S, row, "ratio", format!("{:.2}", three / one.max(1.0)));
    emit(S, row, "failed", failed3 + failed1);
}
