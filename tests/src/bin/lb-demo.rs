//! `cargo xtask demo`: lb on a throwaway topology of network namespaces
//! (client, lb, three reals), with the embedded scripts/demo.yaml. Sends
//! HTTP and UDP through the VIPs, shows how the reals shared them and the
//! flow table, then stops the agent (the datapath keeps forwarding), takes
//! the datapath down with `lb teardown` and removes everything.
use std::{
    collections::BTreeMap,
    net::{Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use lb_tests::{
    LbAgent, TestHook, TestServer, Topology, http_get, require_root,
    topology::{real_name, vip, vip6},
    udp_request,
};

const CONFIG: &str = include_str!("../../../scripts/demo.yaml");
const T: Duration = Duration::from_secs(3);

fn testsrv_bin() -> PathBuf {
    std::env::var_os("LB_TESTSRV_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_exe()
                .expect("current_exe")
                .with_file_name("lb-testsrv")
        })
}

fn main() {
    require_root();
    println!("== building the demo topology (namespaces are removed at the end)");
    // `hook: auto` puts lb on tc on these veths: the topology keeps the
    // kernel's default offloads, as a container host has them.
    let topo = Topology::dual_stack(3, TestHook::Tc);
    topo.wait_ready();
    for (i, ns) in topo.reals.iter().enumerate() {
        let (a, a6) = (topo.real_addrs[i], topo.real_addrs6[i]);
        println!("   real {} {a} {a6}  (http :8080, udp :5353)", ns.name());
    }
    // `[::]` serves both families.
    let any = Ipv6Addr::UNSPECIFIED.into();
    let _servers: Vec<_> = topo
        .reals
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            TestServer::new(testsrv_bin(), &real_name(i))
                .http(SocketAddr::new(any, 8080))
                .udp(SocketAddr::new(any, 5353))
                .spawn(ns)
        })
        .collect();

    println!("\n== lb run -c lb.yaml (in {})\n{CONFIG}", topo.lb.name());
    let lb = LbAgent::start(&topo.lb, CONFIG);
    let www = SocketAddr::new(vip(10).into(), 80);
    let dns = SocketAddr::new(vip(10).into(), 53);

    println!("== 60 HTTP requests from the client to {www} (weights 1:2:3)");
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..60 {
        let (_, body) = topo
            .client
            .run(|| http_get(www, "/", T))
            .expect("HTTP through the VIP");
        *tally.entry(body.trim().to_string()).or_default() += 1;
    }
    for (real, n) in &tally {
        println!("   {real}: {n:>2} {}", "#".repeat(*n));
    }

    let www6 = SocketAddr::new(vip6(0x10).into(), 80);
    println!("\n== 30 HTTP requests to {www6} over IPv6 (maglev: each connection hashed)");
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        let (_, body) = topo
            .client
            .run(|| http_get(www6, "/", T))
            .expect("HTTP through the IPv6 VIP");
        *tally.entry(body.trim().to_string()).or_default() += 1;
    }
    for (real, n) in &tally {
        println!("   {real}: {n:>2} {}", "#".repeat(*n));
    }

    println!("\n== 6 UDP requests to {dns} (round-robin)");
    for i in 0..6 {
        let reply = topo
            .client
            .run(|| udp_request(dns, format!("query-{i}").as_bytes(), T))
            .expect("UDP through the VIP");
        println!("   {reply}");
    }

    let show = |args: &[&str]| {
        println!("\n== lb {}", args.join(" "));
        let out = lb.cli(args);
        print!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    show(&["status"]);
    show(&["vips"]);
    show(&["reals"]);
    show(&["flows", "--limit", "12"]);
    show(&["flows", "--vip", "www6", "--limit", "4"]);
    show(&["flows", "--count"]);
    show(&["flows", "--vip", "dns", "--json", "--limit", "1"]);
    show(&["stats"]);

    println!("\n== stopping the agent as `systemctl stop` does (SIGTERM)");
    lb.stop_with(libc::SIGTERM);
    let (_, body) = topo
        .client
        .run(|| http_get(www, "/", T))
        .expect("HTTP through the VIP with the agent stopped");
    println!(
        "   agent stopped; the datapath still forwards: {www} answered by {}",
        body.trim()
    );

    show(&["teardown"]);
}
