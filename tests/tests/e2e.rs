//! End to end: a client, the lb (the real `lb` binary, XDP attached in native
//! mode to veth), three real servers, in namespaces made by the test. Real
//! TCP and UDP through the VIP; the agent's CLI reads the flow table.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use lb_tests::{
    EchoConn, HttpConn, TestHook, bulk_send, http_get,
    rig::{ECHO, HTTP, Rig, SINK, UDP},
    topology::{real_addr6, vip, vip6},
    udp_request, wait_until,
};
use lb_userspace::{api::FlowState, config::Protocol};

const T: Duration = Duration::from_secs(3);

fn vip_addr(port: u16) -> SocketAddr {
    SocketAddr::new(vip(10).into(), port)
}

fn rig(config: &str) -> Rig {
    Rig::new(config, env!("CARGO_BIN_EXE_lb-testsrv"))
}

fn reals_yaml(port: u16, weights: &[u32]) -> String {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "      - {{ address: 203.0.113.{}, port: {port}, weight: {w} }}\n",
                11 + i
            )
        })
        .collect()
}

fn config(web_algorithm: &str, web_weights: &[u32]) -> String {
    format!(
        "interfaces: [eth0, eth1]\nxdp_mode: native\nserverfarms:\n  web:\n    algorithm: {web_algorithm}\n    reals:\n{}  dns:\n    reals:\n{}  echo:\n    reals:\n{}  bulk:\n    reals:\n{}vips:\n  www: {{ address: 198.51.100.10, port: 80, serverfarm: web }}\n  dns: {{ address: 198.51.100.10, port: 53, protocol: udp, serverfarm: dns }}\n  echo: {{ address: 198.51.100.10, port: 7, serverfarm: echo }}\n  bulk: {{ address: 198.51.100.10, port: 9000, serverfarm: bulk }}\n",
        reals_yaml(HTTP, web_weights),
        reals_yaml(UDP, &[1, 1, 1]),
        reals_yaml(ECHO, &[1]),
        reals_yaml(SINK, &[1]),
    )
}

/// 60 requests over weights 1:2:3. Round-robin cursors are per CPU: each
/// CPU walks the 6-slot schedule on its own, so a count may be off by the
/// unfinished part of each CPU's turn.
fn assert_split_by_weight(t: &BTreeMap<String, usize>, what: &str) {
    for (name, want) in [("r1", 10usize), ("r2", 20), ("r3", 30)] {
        let got = t.get(name).copied().unwrap_or(0);
        assert!(
            got.abs_diff(want) <= 3,
            "{what}: {name}: {got} requests, want {want}±3: {t:?}"
        );
    }
}

fn tally(bodies: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for b in bodies {
        *m.entry(b.clone()).or_insert(0) += 1;
    }
    m
}

#[test]
fn http_requests_spread_by_weight_and_flows_are_listed() {
    let rig = rig(&config("weighted-round-robin", &[1, 2, 3]));
    let bodies: Vec<String> = (0..60)
        .map(|i| {
            rig.get(vip_addr(80))
                .unwrap_or_else(|e| panic!("request {i}: {e}\n{}", rig.lb.proc.report()))
        })
        .collect();
    let t = tally(&bodies);
    println!("60 requests over weights 1:2:3: {t:?}");
    assert_split_by_weight(&t, "IPv4");
    // The reals see the client's own address: no source NAT.
    assert!(
        rig.servers[2].log().contains("192.0.2.2:"),
        "real logs the client address"
    );

    let flows = rig.lb.flows(&["--vip", "www"]);
    assert_eq!(flows.len(), 60, "one flow per request");
    // Every field is there: `FlowRow` has no defaults (the contract's
    // names are checked in operator.rs).
    for f in &flows {
        assert_eq!(f.vip, "198.51.100.10:80");
        assert_eq!(f.protocol, Protocol::Tcp);
        assert!(f.client.starts_with("192.0.2.2:"));
        assert!(f.packets_in >= 4 && f.packets_out >= 3, "{f:?}");
        // Both sides closed the connection.
        assert!(
            [FlowState::Fin, FlowState::Closed].contains(&f.state),
            "{f:?}"
        );
    }
    // Every connection closed: no real counts an active flow (a count
    // decremented twice would show as 2^64-1 here).
    for r in rig.lb.reals().iter().filter(|r| r.farm == "web") {
        assert_eq!(r.active_flows, 0, "{r:?}");
    }
    let by_real = |r: &str| flows.iter().filter(|f| f.real == r).count();
    assert_eq!(
        by_real("203.0.113.13:8080"),
        t["r3"],
        "the flow table agrees with what the servers answered"
    );

    // Human table and count.
    let out = rig.lb.cli(&["flows", "--real", "203.0.113.13"]);
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert!(table.starts_with("CLIENT"), "{table}");
    assert_eq!(table.lines().count(), 1 + t["r3"]);
    let out = rig.lb.cli(&["flows", "--count"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "60");
}

/// `config` with an IPv6 twin of `www`, `dns` and `bulk` on the same reals'
/// IPv6 addresses.
fn dual_config() -> String {
    let reals6 = |port: u16, weights: &[u32]| -> String {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let a = real_addr6(i);
                format!("      - {{ address: {a}, port: {port}, weight: {w} }}\n")
            })
            .collect()
    };
    let farms6 = format!(
        "  web6:\n    algorithm: weighted-round-robin\n    probes: [hc]\n    reals:\n{}  dns6:\n    reals:\n{}  bulk6:\n    reals:\n{}vips:\n",
        reals6(HTTP, &[1, 2, 3]),
        reals6(UDP, &[1, 1, 1]),
        reals6(SINK, &[1]),
    );
    let v = vip6(0x10);
    // web6's reals are probed over IPv6.
    let probes = "probes:\n  hc: { type: http, path: /healthz, interval: 500ms, timeout: 300ms, rise: 1, fall: 2 }\nserverfarms:\n";
    config("weighted-round-robin", &[1, 2, 3])
        .replacen("serverfarms:\n", probes, 1)
        .replacen("vips:\n", &farms6, 1)
        + &format!(
            "  www6: {{ address: {v}, port: 80, serverfarm: web6 }}\n  dns6: {{ address: {v}, port: 53, protocol: udp, serverfarm: dns6 }}\n  bulk6: {{ address: {v}, port: 9000, serverfarm: bulk6 }}\n"
        )
}

/// An IPv6 VIP beside the IPv4 ones, on the same agent and interfaces, on
/// both hooks: HTTP by weight, UDP, a transfer intact, and the flow table
/// listing IPv6 endpoints.
#[test]
fn ipv6_vips_serve_beside_ipv4_on_both_hooks() {
    for hook in [TestHook::Xdp, TestHook::Tc] {
        let rig = Rig::dual_stack(&dual_config(), env!("CARGO_BIN_EXE_lb-testsrv"), hook);
        let probed = || {
            rig.lb
                .reals()
                .iter()
                .filter(|r| r.farm == "web6")
                .filter(|r| {
                    r.last_check
                        .as_deref()
                        .is_some_and(|c| c.starts_with("http 200"))
                })
                .count()
        };
        assert!(
            wait_until(
                Duration::from_secs(5),
                Duration::from_millis(100),
                || probed() == 3
            ),
            "{hook:?}: web6's reals answer their IPv6 probes: {}",
            String::from_utf8_lossy(&rig.lb.cli(&["reals"]).stdout)
        );
        let www6 = SocketAddr::new(vip6(0x10).into(), 80);
        let bodies: Vec<String> = (0..60)
            .map(|i| {
                rig.get(www6).unwrap_or_else(|e| {
                    panic!(
                        "{hook:?}: GET {i} via {www6}: {e}\n{}",
                        rig.lb.proc.report()
                    )
                })
            })
            .collect();
        assert_split_by_weight(&tally(&bodies), &format!("{hook:?}, IPv6"));
        // IPv4 beside it, through the same interfaces, and IPv6 to no VIP
        // (a real's own address), which lb passes to its kernel to route.
        let v4 = rig.get(vip_addr(80)).expect("GET via the IPv4 VIP");
        assert!(v4.starts_with('r'), "{v4}");
        let direct = SocketAddr::new(real_addr6(0).into(), HTTP);
        assert_eq!(rig.get(direct).expect("GET to a real's IPv6 address"), "r1");
        let dns6 = SocketAddr::new(vip6(0x10).into(), 53);
        for i in 0..3 {
            let reply = rig
                .topo
                .client
                .run(|| udp_request(dns6, format!("q{i}").as_bytes(), T))
                .unwrap_or_else(|e| panic!("{hook:?}: udp {i}: {e}\n{}", rig.lb.proc.report()));
            assert!(reply.ends_with(&format!(":q{i}")), "{reply}");
        }
        let bulk6 = SocketAddr::new(vip6(0x10).into(), SINK);
        let r = rig
            .topo
            .client
            .run(|| bulk_send(bulk6, 64 << 20, Duration::from_secs(60)))
            .unwrap_or_else(|e| panic!("{hook:?}: bulk: {e}\n{}", rig.lb.proc.report()));
        println!(
            "{hook:?}: 64 MiB through {bulk6}: {:.0} Mbit/s",
            r.mbit_per_s()
        );
        assert!(r.intact(), "{hook:?}: byte count and hash match: {r:?}");
        let flows = rig.lb.flows(&["--vip", "www6"]);
        assert_eq!(flows.len(), 60, "{hook:?}: one flow per request");
        let client = &flows[0].client;
        assert!(
            client.starts_with("[2001:db8:c::2]:"),
            "{hook:?}: an IPv6 client endpoint: {client}"
        );
    }
}

#[test]
fn long_tcp_transfer_arrives_intact() {
    let rig = rig(&config("round-robin", &[1, 1, 1]));
    let r = transfer_intact(&rig, 1 << 30, "1 GiB");
    // Full speed for this topology is several Gbit/s; far below that means
    // packets are taking a slow path (generic XDP, the kernel, drops).
    assert!(r.mbit_per_s() > 500.0, "{:.0} Mbit/s", r.mbit_per_s());
}

/// Sends `bytes` to the bulk VIP; asserts they arrived intact and that the
/// flow table counted them.
fn transfer_intact(rig: &Rig, bytes: u64, what: &str) -> lb_tests::BulkResult {
    let r = rig
        .topo
        .client
        .run(|| bulk_send(vip_addr(SINK), bytes, Duration::from_secs(120)))
        .unwrap_or_else(|e| panic!("bulk transfer: {e}\n{}", rig.lb.proc.report()));
    println!(
        "{what} through the VIP: {:.0} Mbit/s in {:?}",
        r.mbit_per_s(),
        r.elapsed
    );
    assert!(r.intact(), "byte count and hash match: {r:?}");
    assert_eq!(r.server_count, bytes);
    let flows = rig.lb.flows(&["--vip", "198.51.100.10:9000"]);
    assert_eq!(flows.len(), 1);
    assert!(flows[0].bytes_in > bytes, "{:?}", flows[0]);
    r
}

/// The smoke cases on the tc hook, on a topology with the kernel's default
/// offloads (checksum offload on: the skbs lb rewrites are CHECKSUM_PARTIAL;
/// TCP segments arrive as GSO skbs with their payload in page fragments).
#[test]
fn tc_hook_serves_http_udp_and_a_long_transfer_with_default_offloads() {
    let rig = Rig::with_hook(
        &config("weighted-round-robin", &[1, 2, 3]),
        env!("CARGO_BIN_EXE_lb-testsrv"),
        65536,
        TestHook::Tc,
    );
    let status = rig.lb.status();
    assert_eq!(
        status.hooks,
        BTreeMap::from([("eth0".into(), "tc".into()), ("eth1".into(), "tc".into())]),
        "{}",
        rig.lb.proc.log()
    );
    let bodies: Vec<String> = (0..60)
        .map(|i| {
            rig.get(vip_addr(80))
                .unwrap_or_else(|e| panic!("request {i}: {e}\n{}", rig.lb.proc.report()))
        })
        .collect();
    let t = tally(&bodies);
    println!("tc: 60 requests over weights 1:2:3: {t:?}");
    assert_eq!(t.len(), 3, "{t:?}");
    assert!(t["r3"] > t["r1"], "{t:?}");
    for i in 0..9 {
        let reply = rig
            .topo
            .client
            .run(|| udp_request(vip_addr(53), format!("q{i}").as_bytes(), T))
            .unwrap_or_else(|e| panic!("udp {i}: {e}\n{}", rig.lb.proc.report()));
        assert!(reply.ends_with(&format!(":q{i}")), "{reply}");
    }
    transfer_intact(&rig, 256 << 20, "tc: 256 MiB");
    // Both veths' peers live in other namespaces, so tc hands every
    // forwarded packet to the peer's ingress (bpf_redirect_peer): the lb
    // namespace's own veths transmit next to none of them.
    let stats = rig.lb.stats();
    let forwarded = stats.reasons["forward"] + stats.reasons["reverse"];
    // /proc/net/dev as this thread's namespace sees it: transmitted
    // packets are the 10th number after the interface's name.
    let dev = rig
        .topo
        .lb
        .run(|| std::fs::read_to_string("/proc/thread-self/net/dev"));
    let sent: u64 = dev
        .expect("/proc/thread-self/net/dev")
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(name, _)| ["eth0", "eth1"].contains(name))
        .map(|(_, n)| n.split_whitespace().nth(9).expect("tx packets"))
        .map(|n| n.parse::<u64>().expect("a count"))
        .sum();
    println!("tc: {forwarded} packets forwarded, {sent} transmitted by the lb namespace's veths");
    assert!(
        forwarded > 1_000 && sent < forwarded / 100,
        "{forwarded} forwarded, {sent} sent by the veths: not by bpf_redirect_peer"
    );
}

#[test]
fn udp_request_response_through_the_vip() {
    let rig = rig(&config("round-robin", &[1, 1, 1]));
    let mut answered_by = BTreeMap::new();
    for i in 0..9 {
        // A connected socket only accepts the answer if it comes from the VIP.
        let reply = rig
            .topo
            .client
            .run(|| udp_request(vip_addr(53), format!("q{i}").as_bytes(), T))
            .unwrap_or_else(|e| panic!("udp {i}: {e}\n{}", rig.lb.proc.report()));
        let (real, payload) = reply.split_once(':').expect("name:payload");
        assert_eq!(payload, format!("q{i}"));
        *answered_by.entry(real.to_string()).or_insert(0) += 1;
    }
    println!("9 UDP requests answered by {answered_by:?}");
    assert_eq!(
        answered_by.len(),
        3,
        "round-robin over three reals: {answered_by:?}"
    );
    let flows = rig.lb.flows(&["--state", "udp"]);
    assert_eq!(flows.len(), 9);
    assert!(
        flows
            .iter()
            .all(|f| f.protocol == Protocol::Udp && f.packets_out == 1)
    );
}

#[test]
fn reload_adds_a_real_without_breaking_an_open_connection() {
    let rig = rig(&config("round-robin", &[1, 1]));
    let mut conn = rig
        .topo
        .client
        .run(|| HttpConn::connect(vip_addr(80), T))
        .expect("connect");
    let (_, first) = rig
        .topo
        .client
        .run(|| conn.get("/"))
        .expect("first request");
    let mut echo = rig
        .topo
        .client
        .run(|| EchoConn::connect(vip_addr(7), T))
        .expect("echo");
    assert_eq!(
        rig.topo.client.run(|| echo.roundtrip(b"before")).unwrap(),
        b"before"
    );

    // Add r3 to web and give echo a second real; also change a weight.
    rig.lb.write_config(
        &config("round-robin", &[1, 1, 1])
            .replace(&reals_yaml(ECHO, &[1]), &reals_yaml(ECHO, &[5, 1])),
    );
    let msg = rig.lb.reload();
    println!("{msg}");
    assert!(msg.contains("reals +2"), "{msg}");

    // The open connections carry on, on the same real.
    for i in 0..20 {
        let (_, again) = rig
            .topo
            .client
            .run(|| conn.get("/"))
            .unwrap_or_else(|e| panic!("request {i} after reload: {e}"));
        assert_eq!(again, first, "stays on its real");
        let m = format!("after-{i}");
        assert_eq!(
            rig.topo
                .client
                .run(|| echo.roundtrip(m.as_bytes()))
                .unwrap(),
            m.as_bytes()
        );
    }
    // New connections reach the new real.
    let bodies: Vec<String> = (0..9)
        .map(|_| rig.get(vip_addr(80)).expect("new request"))
        .collect();
    assert!(
        bodies.iter().any(|b| b == "r3"),
        "r3 serves after the reload: {bodies:?}"
    );

    // A broken file is refused with its location; the running config stays.
    rig.lb.write_config("interfaces: [eth0, eth1]\nserverfarms:\n  web:\n    reals:\n      - { address: 203.0.113.11, port: 8080, weight: ten }\nvips: {}\n");
    let out = rig.lb.cli(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad config is refused");
    assert!(
        err.contains("lb.yaml:5:"),
        "error names file:line:column: {err}"
    );
    assert!(
        rig.lb.proc.log().contains("reload refused"),
        "the agent judged the file: {}",
        rig.lb.proc.log()
    );
    let (_, still) = rig
        .topo
        .client
        .run(|| conn.get("/"))
        .expect("still serving");
    assert_eq!(still, first);
    assert!(rig.get(vip_addr(80)).is_ok(), "new flows still balanced");
}

#[test]
fn removing_a_vip_stops_its_traffic_and_other_traffic_flows() {
    let rig = rig(&config("round-robin", &[1, 1, 1]));
    assert!(rig.get(vip_addr(80)).is_ok());
    let mut echo = rig
        .topo
        .client
        .run(|| EchoConn::connect(vip_addr(7), T))
        .expect("echo");
    assert_eq!(rig.topo.client.run(|| echo.roundtrip(b"x")).unwrap(), b"x");
    assert!(!rig.lb.flows(&["--vip", "www"]).is_empty());

    let without_www = config("round-robin", &[1, 1, 1]).replace(
        "  www: { address: 198.51.100.10, port: 80, serverfarm: web }\n",
        "",
    );
    rig.lb.write_config(&without_www);
    // This time by signal, as an operator's `systemctl reload` would.
    assert!(rig.lb.proc.signal(libc::SIGHUP));
    assert!(
        rig.lb
            .proc
            .wait_log_contains("vips +[] -[\"www\"]", Duration::from_secs(5)),
        "SIGHUP reloads: {}",
        rig.lb.proc.log()
    );
    let refused = rig
        .topo
        .client
        .run(|| http_get(vip_addr(80), "/", Duration::from_secs(1)));
    assert!(
        refused.is_err(),
        "the removed VIP no longer answers: {refused:?}"
    );
    assert!(
        rig.lb.flows(&["--vip", "198.51.100.10:80"]).is_empty(),
        "its flows are gone"
    );
    // Other VIPs and their open connections are untouched.
    assert_eq!(rig.topo.client.run(|| echo.roundtrip(b"y")).unwrap(), b"y");

    // Traffic that is not for a VIP is routed by the lb host's kernel.
    let direct = SocketAddr::new(Ipv4Addr::new(203, 0, 113, 12).into(), HTTP);
    assert_eq!(
        rig.get(direct)
            .expect("client to a real, not through a VIP"),
        "r2"
    );
    let udp_direct = SocketAddr::new(Ipv4Addr::new(203, 0, 113, 13).into(), UDP);
    assert!(
        rig.topo
            .client
            .run(|| udp_request(udp_direct, b"hi", T))
            .unwrap()
            .starts_with("r3:")
    );
}

#[test]
fn sigint_detaches_and_unpins_and_check_reports_locations() {
    let rig = rig(&config("round-robin", &[1, 1, 1]));
    assert!(rig.get(vip_addr(80)).is_ok());
    let xdp_on = |dev: &str| {
        String::from_utf8_lossy(&rig.topo.lb.ip(&["link", "show", dev]).stdout).contains("xdp")
    };
    assert!(
        xdp_on("eth0") && xdp_on("eth1"),
        "attached to both interfaces"
    );

    // `lb check`: a good file, then a bad one with its location.
    let out = rig.lb.cli(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = rig.lb.config.with_file_name("bad.yaml");
    std::fs::write(&bad, "interfaces: [eth0]\nvips:\n  www: { address: 198.51.100.10, port: 80, serverfarm: nope }\n").unwrap();
    let out = rig.lb.cli(&["check", "-c", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("bad.yaml:3:") && err.contains("nope"), "{err}");

    // SIGINT (Ctrl-C at a terminal) is the interactive clean stop;
    // SIGTERM leaves the datapath forwarding (tests/tests/service.rs).
    assert!(rig.lb.proc.signal(libc::SIGINT));
    let start = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || !rig
            .lb
            .proc
            .is_running()),
        "lb stops on SIGINT"
    );
    println!("stopped in {:?}", start.elapsed());
    assert!(
        rig.lb.proc.exit_status().unwrap().success(),
        "{}",
        rig.lb.proc.report()
    );
    assert!(!xdp_on("eth0") && !xdp_on("eth1"), "detached");
    assert!(!rig.lb.pin_dir().join("FLOWS").exists(), "pins removed");
    // Without lb, the VIP is just an unrouted address.
    assert!(
        rig.topo
            .client
            .run(|| http_get(vip_addr(80), "/", Duration::from_secs(1)))
            .is_err()
    );
}

#[test]
fn idle_flows_expire_by_their_state_timeout() {
    let cfg = config("round-robin", &[1, 1, 1])
        .replace(
            "  www: { address: 198.51.100.10, port: 80, serverfarm: web }",
            "  www: { address: 198.51.100.10, port: 80, serverfarm: web, timeouts: { fin: 1s } }",
        )
        .replace(
            "protocol: udp, serverfarm: dns }",
            "protocol: udp, serverfarm: dns, timeouts: { udp: 2s } }",
        );
    let rig = rig(&cfg);
    // An idle established connection on a VIP with the default 1h.
    let mut echo = rig
        .topo
        .client
        .run(|| EchoConn::connect(vip_addr(7), T))
        .expect("echo");
    assert_eq!(rig.topo.client.run(|| echo.roundtrip(b"a")).unwrap(), b"a");
    assert!(rig.get(vip_addr(80)).is_ok());
    assert!(
        rig.topo
            .client
            .run(|| udp_request(vip_addr(53), b"q", T))
            .is_ok()
    );
    let count = |vip: &str| rig.lb.flows(&["--vip", vip]).len();
    assert_eq!((count("www"), count("dns"), count("echo")), (1, 1, 1));

    let start = Instant::now();
    assert!(
        wait_until(
            Duration::from_secs(6),
            Duration::from_millis(100),
            || count("www") == 0
        ),
        "a closed HTTP flow (fin) expires after fin: 1s"
    );
    let fin_gone = start.elapsed();
    assert!(
        wait_until(
            Duration::from_secs(6),
            Duration::from_millis(100),
            || count("dns") == 0
        ),
        "an idle UDP flow expires after udp: 2s"
    );
    let udp_gone = start.elapsed();
    println!("fin flow gone after {fin_gone:?}, udp flow after {udp_gone:?}");
    assert!(
        udp_gone >= Duration::from_millis(1500),
        "not before its timeout: {udp_gone:?}"
    );
    assert_eq!(count("echo"), 1, "the idle established flow stays");
    assert_eq!(rig.topo.client.run(|| echo.roundtrip(b"b")).unwrap(), b"b");
    assert!(
        rig.lb.proc.log().contains("expired"),
        "the sweep logs what it expired"
    );
}

/// `HOP_GEN[0]` from the agent's pins: the next-hop generation its route
/// watcher bumps.
fn hop_gen(rig: &Rig) -> u32 {
    let data = aya::maps::MapData::from_pin(rig.lb.pin_dir().join("HOP_GEN")).expect("HOP_GEN pin");
    let arr: aya::maps::Array<_, u32> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("HOP_GEN");
    arr.get(&0, 0).expect("HOP_GEN[0]")
}

/// Flows cache their next hop (lb_common::Hop); the agent's route watcher
/// must make a neighbour change reach established flows at once, not after
/// the cache's one-second age bound.
#[test]
fn a_real_s_new_mac_reaches_its_established_flows_at_once() {
    let rig = rig(&config("round-robin", &[1, 1, 1]));
    let lb = &rig.topo.lb;
    let mut conn = rig
        .topo
        .client
        .run(|| HttpConn::connect(vip_addr(80), Duration::from_millis(400)))
        .expect("connect");
    let (status, body) = conn.get("/").expect("first request");
    assert_eq!(status, 200);
    let real = lb_tests::topology::real_addr(body.trim()[1..].parse::<usize>().expect("rN") - 1);
    let true_mac =
        lb_tests::ha_topology::neigh_lladdr(lb, real).expect("the real's neighbour entry");
    // The flow's hop is cached now; a second request uses it.
    assert_eq!(conn.get("/").expect("second request").0, 200);

    // The real's address moves to a MAC nobody has: the watcher bumps the
    // generation, and the very next request is lost instead of riding the
    // cached hop to the old MAC.
    let g0 = hop_gen(&rig);
    let changed = Instant::now();
    #[rustfmt::skip]
    lb.ip(&["neigh", "replace", &real.to_string(), "lladdr", "02:00:00:00:de:ad", "dev", "eth1", "nud", "permanent"]);
    assert!(
        wait_until(
            Duration::from_secs(1),
            Duration::from_millis(5),
            || hop_gen(&rig) > g0
        ),
        "HOP_GEN did not move after a neighbour change"
    );
    let res = conn.get("/");
    assert!(
        changed.elapsed() < Duration::from_millis(900),
        "too slow to tell the watcher from the age bound"
    );
    assert!(res.is_err(), "the request rode a stale cached hop: {res:?}");

    // The right MAC again: the lost request's retransmission, and new
    // connections, get through.
    let g1 = hop_gen(&rig);
    #[rustfmt::skip]
    lb.ip(&["neigh", "replace", &real.to_string(), "lladdr", &true_mac, "dev", "eth1", "nud", "reachable"]);
    assert!(
        wait_until(
            Duration::from_secs(1),
            Duration::from_millis(5),
            || hop_gen(&rig) > g1
        ),
        "HOP_GEN did not move after the neighbour came back"
    );
    let bodies: Vec<String> = (0..6)
        .map(|_| rig.get(vip_addr(80)).expect("GET"))
        .collect();
    assert_eq!(tally(&bodies).len(), 3, "every real answers: {bodies:?}");
}
