//! End to end: every load-balancing algorithm splits real connections by
//! weight; least-conn steers away from a loaded real; source-hash and
//! sticky keep a client on one real; a reload of one farm leaves the other
//! farms' flows alone.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use lb_tests::{HttpConn, rig::Rig, topology::vip};
use lb_userspace::api::{FlowRow, RealRow};

const T: Duration = Duration::from_secs(3);
/// Extra client addresses (192.0.2.100..=249): one client host acting as 150.
const CLIENTS: std::ops::RangeInclusive<u8> = 100..=249;

fn www() -> SocketAddr {
    SocketAddr::new(vip(10).into(), 80)
}

fn api() -> SocketAddr {
    SocketAddr::new(vip(10).into(), 81)
}

/// farm `web` (weights 1:2:3) behind www:80 with `algorithm`; farm `api`
/// (round-robin, equal) behind www:81.
fn config(algorithm: &str, www_extra: &str) -> String {
    format!(
        "interfaces: [eth0, eth1]\nxdp_mode: native\nserverfarms:\n  web:\n    algorithm: {algorithm}\n    reals:\n      - {{ address: 203.0.113.11, port: 8080, weight: 1 }}\n      - {{ address: 203.0.113.12, port: 8080, weight: 2 }}\n      - {{ address: 203.0.113.13, port: 8080, weight: 3 }}\n  api:\n    reals:\n      - {{ address: 203.0.113.11, port: 8080 }}\n      - {{ address: 203.0.113.12, port: 8080 }}\nvips:\n  www: {{ address: 198.51.100.10, port: 80, serverfarm: web{www_extra} }}\n  api: {{ address: 198.51.100.10, port: 81, serverfarm: api }}\n"
    )
}

fn rig() -> Rig {
    let rig = Rig::new(&config("round-robin", ""), env!("CARGO_BIN_EXE_lb-testsrv"));
    for last in CLIENTS {
        rig.topo
            .client
            .ip(&["addr", "add", &format!("192.0.2.{last}/24"), "dev", "eth0"]);
    }
    rig
}

fn switch(rig: &Rig, algorithm: &str, www_extra: &str) {
    rig.lb.write_config(&config(algorithm, www_extra));
    rig.lb.reload();
}

/// Opens `n` connections (kept open, so least-conn sees them all) through
/// `addr`, client address `from(i)`, and says which real answered each.
fn open(
    rig: &Rig,
    addr: SocketAddr,
    n: usize,
    from: impl Fn(usize) -> Option<Ipv4Addr> + Sync,
) -> Vec<(String, HttpConn)> {
    rig.topo.client.run(|| {
        (0..n)
            .map(|i| {
                let mut c = HttpConn::connect_from(from(i), addr, T)
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                let (_, body) = c.get("/").unwrap_or_else(|e| panic!("request {i}: {e}"));
                (body.trim().to_string(), c)
            })
            .collect()
    })
}

fn tally(conns: &[(String, HttpConn)]) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for (real, _) in conns {
        *t.entry(real.clone()).or_insert(0) += 1;
    }
    t
}

/// Each real's share of `t` is within `tol` of `want` (r1, r2, r3).
fn assert_split(what: &str, t: &BTreeMap<String, usize>, want: [f64; 3], tol: f64) {
    let total: usize = t.values().sum();
    for (i, w) in want.iter().enumerate() {
        let got = *t.get(&format!("r{}", i + 1)).unwrap_or(&0) as f64 / total as f64;
        assert!(
            (got - w).abs() <= tol,
            "{what}: r{} has {got:.3} of {total}, want {w:.3}±{tol}: {t:?}",
            i + 1
        );
    }
    println!("{what}: {t:?} (want shares {want:?} ±{tol})");
}

#[test]
fn every_algorithm_splits_300_connections_by_weight() {
    let rig = rig();
    let by_weight = [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0];
    // Stated tolerances (absolute share): the deterministic schedulers are
    // exact but for per-CPU round-robin cursors; the hashing ones are
    // statistical (binomial sd of a share over 300 draws is about 0.029).
    for (algorithm, want, tol, many_clients) in [
        ("round-robin", [1.0 / 3.0; 3], 0.02, false),
        ("weighted-round-robin", by_weight, 0.02, false),
        ("least-conn", by_weight, 0.02, false),
        ("maglev", by_weight, 0.09, false),
        ("source-hash", by_weight, 0.12, true),
    ] {
        switch(&rig, algorithm, "");
        let conns = open(&rig, www(), 300, |i| {
            many_clients
                .then(|| Ipv4Addr::new(192, 0, 2, CLIENTS.start() + (i % CLIENTS.len()) as u8))
        });
        assert_split(algorithm, &tally(&conns), want, tol);
        if algorithm == "least-conn" {
            // Active flows as the datapath counts them match the open connections.
            let rows: Vec<RealRow> = rig.lb.json(&["reals", "--farm", "web"]);
            let active: u64 = rows.iter().map(|r| r.active_flows).sum();
            assert_eq!(active, 300, "{rows:?}");
        }
        drop(conns);
    }
}

#[test]
fn least_conn_sends_new_flows_away_from_a_loaded_real() {
    let rig = rig();
    switch(&rig, "least-conn", "");
    // Load r3 (the heaviest) alone with 30 connections.
    for r in ["203.0.113.11", "203.0.113.12"] {
        assert!(rig.lb.cli(&["real", "disable", "web", r]).status.success());
    }
    let loaded = open(&rig, www(), 30, |_| None);
    assert_eq!(tally(&loaded).get("r3"), Some(&30));
    for r in ["203.0.113.11", "203.0.113.12"] {
        assert!(rig.lb.cli(&["real", "enable", "web", r]).status.success());
    }
    // r3 holds 30 (10 per unit of weight): the next 30 go to r1 and r2 until
    // they reach 10 per unit of weight too (r1: 10, r2: 20).
    let next = open(&rig, www(), 30, |_| None);
    let t = tally(&next);
    println!("after loading r3 with 30: {t:?}");
    assert_eq!(t.get("r3"), None, "none to the loaded real: {t:?}");
    assert_eq!((t.get("r1"), t.get("r2")), (Some(&10), Some(&20)), "{t:?}");
    // When r3's connections close, it is the least loaded again.
    drop(loaded);
    assert!(
        lb_tests::wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
            let rows: Vec<RealRow> = rig.lb.json(&["reals", "--farm", "web"]);
            rows.iter()
                .any(|r| r.address == "203.0.113.13" && r.active_flows == 0)
        }),
        "closed connections leave the count (FIN)"
    );
    let t = tally(&open(&rig, www(), 6, |_| None));
    assert_eq!(t.get("r3"), Some(&6), "{t:?}");
}

#[test]
fn source_hash_and_sticky_keep_a_client_on_one_real() {
    let rig = rig();
    switch(&rig, "source-hash", "");
    for last in [100u8, 101, 102, 103] {
        let t = tally(&open(&rig, www(), 10, |_| {
            Some(Ipv4Addr::new(192, 0, 2, last))
        }));
        assert_eq!(t.len(), 1, "client .{last}: all on one real: {t:?}");
    }
    // Sticky over round-robin: the same, until that real goes away.
    switch(
        &rig,
        "round-robin",
        ", sticky: { mode: source-ip, timeout: 10m }",
    );
    let t = tally(&open(&rig, www(), 10, |_| None));
    assert_eq!(t.len(), 1, "sticky: {t:?}");
    let first = t.keys().next().unwrap().clone();
    let addr = format!("203.0.113.{}", 10 + first[1..].parse::<u8>().unwrap());
    assert!(
        rig.lb
            .cli(&["real", "disable", "web", &addr])
            .status
            .success()
    );
    let t = tally(&open(&rig, www(), 10, |_| None));
    assert_eq!(t.len(), 1, "picked again, then sticks: {t:?}");
    assert!(!t.contains_key(&first), "not the disabled real: {t:?}");
    // Other clients are not stuck to it.
    let t = tally(&open(&rig, www(), 12, |i| {
        Some(Ipv4Addr::new(192, 0, 2, 110 + i as u8))
    }));
    assert!(t.len() >= 2, "other clients spread: {t:?}");
}

#[test]
fn a_reload_of_one_farm_leaves_the_other_farms_flows_alone() {
    let rig = rig();
    switch(&rig, "maglev", "");
    let mut on_www = open(&rig, www(), 12, |_| None);
    let mut on_api = open(&rig, api(), 12, |_| None);
    let api_flows = rig.lb.flows(&["--vip", "api"]);
    // Change farm web only: a real's weight and another algorithm.
    rig.lb
        .write_config(&config("least-conn", "").replace("weight: 3", "weight: 5"));
    let msg = rig.lb.reload();
    assert!(msg.contains("vips +[] -[]"), "{msg}");
    for (real, c) in on_api.iter_mut().chain(on_www.iter_mut()) {
        let (_, body) = rig
            .topo
            .client
            .run(|| c.get("/"))
            .expect("open connection after reload");
        assert_eq!(body.trim(), real, "still on its real");
    }
    let after: Vec<FlowRow> = rig.lb.flows(&["--vip", "api"]);
    let key = |f: &FlowRow| (f.client.clone(), f.real.clone(), f.age_ms > 0);
    let mut before: Vec<_> = api_flows.iter().map(key).collect();
    let mut now: Vec<_> = after.iter().map(key).collect();
    before.sort();
    now.sort();
    assert_eq!(
        before, now,
        "api's flows are the same flows on the same reals"
    );
}
