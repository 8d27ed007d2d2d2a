//! Proves the e2e harness itself, with no load balancer: plain kernel routing
//! through the lb namespace must carry HTTP, UDP, echo and a 256 MiB bulk
//! transfer intact, and every namespace must be gone afterwards.
//!
//! Needs root; without it the tests fail loudly (CI runs as root, a skip
//! would hide a broken setup).

use std::{
    net::{IpAddr, SocketAddr},
    panic,
    time::Duration,
};

use lb_tests::{
    Netns, Spawned, TestServer, Topology, bulk_send, client::HttpConn, http_get, require_root,
    topology::real_name, udp_request, wait_until,
};

const TESTSRV: &str = env!("CARGO_BIN_EXE_lb-testsrv");
const HTTP: u16 = 80;
const UDP: u16 = 5300;
const ECHO: u16 = 7;
const SINK: u16 = 9000;
const T: Duration = Duration::from_secs(5);

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn netns_list() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("running ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_gone(names: &[String]) {
    let list = netns_list();
    for n in names {
        assert!(
            !list.lines().any(|l| l.split_whitespace().next() == Some(n)),
            "namespace {n} still exists:\n{list}"
        );
    }
}

/// The veth settings conventions.md insists on are really in place.
fn assert_offloads(topo: &Topology) {
    let feature = |ns: &Netns, dev: &str, key: &str| {
        let out = ns.exec(&["ethtool", "-k", dev]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("{key} missing in ethtool -k {dev}:\n{text}"))
    };
    assert_eq!(feature(&topo.client, "eth0", "tx-checksumming"), "off");
    assert_eq!(
        feature(&topo.client, "eth0", "generic-receive-offload"),
        "on"
    );
    assert_eq!(feature(&topo.sw, "to-lb", "generic-receive-offload"), "on");
    for real in &topo.reals {
        assert_eq!(feature(real, "eth0", "tx-checksumming"), "off");
    }
}

#[test]
fn topology_routes_traffic_without_lb() {
    require_root();
    let names;
    {
        let topo = Topology::new(3);
        names = topo.names();
        assert_eq!(names.len(), 6);
        topo.wait_ready();
        assert_offloads(&topo);

        let servers: Vec<Spawned> = topo
            .reals
            .iter()
            .zip(&topo.real_addrs)
            .enumerate()
            .map(|(i, (ns, &addr))| {
                TestServer::new(TESTSRV, &real_name(i))
                    .http(sa(addr, HTTP))
                    .udp(sa(addr, UDP))
                    .echo(sa(addr, ECHO))
                    .sink(sa(addr, SINK))
                    .spawn(ns)
            })
            .collect();

        let addrs = topo.real_addrs.clone();
        topo.client.run(|| {
            for (i, &addr) in addrs.iter().enumerate() {
                let name = real_name(i);
                let (status, body) = http_get(sa(addr, HTTP), "/", T)
                    .unwrap_or_else(|e| panic!("http_get {addr}: {e}"));
                assert_eq!((status, body.as_str()), (200, format!("{name}\n").as_str()));

                let reply = udp_request(sa(addr, UDP), b"ping", T)
                    .unwrap_or_else(|e| panic!("udp_request {addr}: {e}"));
                assert_eq!(reply, format!("{name}:ping"));
            }

            let r1 = addrs[0];
            assert_eq!(http_get(sa(r1, HTTP), "/healthz", T).unwrap().0, 200);
            assert_eq!(http_get(sa(r1, HTTP), "/status/503", T).unwrap().0, 503);

            // Keep-alive: several requests on one TCP connection.
            let mut conn = HttpConn::connect(sa(r1, HTTP), T).expect("keep-alive connect");
            for _ in 0..3 {
                assert_eq!(conn.get("/").unwrap(), (200, "r1\n".to_string()));
            }

            let mut echo = lb_tests::EchoConn::connect(sa(r1, ECHO), T).expect("echo connect");
            for msg in [&b"hello"[..], &[0xAB; 40_000][..]] {
                assert_eq!(echo.roundtrip(msg).expect("echo roundtrip"), msg);
            }

            let total = 256 << 20;
            let r = bulk_send(sa(addrs[1], SINK), total, Duration::from_secs(120))
                .expect("bulk_send");
            println!(
                "bulk 256 MiB client -> r2 via lb (kernel routing, tx csum off): {:?}, {:.0} Mbit/s",
                r.elapsed,
                r.mbit_per_s()
            );
            assert_eq!(r.sent, total);
            assert_eq!(r.server_count, total, "{r:?}");
            assert_eq!(r.server_hash, r.local_hash, "{r:?}");
        });

        // The real saw the client's own address: no SNAT anywhere.
        let client_conn = format!("conn http {}:", topo.client_addr);
        assert!(
            servers[0].wait_log_contains(&client_conn, T),
            "{}",
            servers[0].report()
        );
        // Reals reach the lb and the client; nothing answers off-topology.
        topo.reals[2].run(|| {
            assert!(wait_until(T, Duration::from_millis(50), || {
                udp_request(
                    sa(topo.real_addrs[0], UDP),
                    b"x",
                    Duration::from_millis(500),
                )
                .is_ok_and(|r| r == "r1:x")
            }));
        });
        for s in &servers {
            assert!(s.is_running(), "{}", s.report());
        }

        // Fault-injection tools: a frozen real stops answering, a thawed one
        // answers again, a killed one refuses (ICMP port unreachable routed
        // back through the lb namespace). `thread` runs a client in the
        // background while the test acts.
        let r3 = sa(topo.real_addrs[2], UDP);
        let short = Duration::from_millis(300);
        assert!(servers[2].freeze(), "r3 did not stop");
        let frozen = topo.client.thread(move || udp_request(r3, b"a", short));
        assert!(frozen.join().unwrap().is_err(), "a stopped server answered");
        assert!(servers[2].signal(libc::SIGCONT));
        let thawed = topo
            .client
            .run(|| udp_request(r3, b"b", T))
            .expect("after SIGCONT");
        assert_eq!(thawed, "r3:b");
        servers[2].kill();
        assert!(!servers[2].is_running());
        let dead = topo.client.run(|| udp_request(r3, b"c", T));
        assert_eq!(
            dead.as_ref().map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionRefused),
            "{dead:?}"
        );
    }
    assert_gone(&names);
}

#[test]
fn netns_cleanup_on_panic_and_kill() {
    require_root();
    let name = std::sync::Mutex::new(String::new());
    let pid = std::sync::Mutex::new(0u32);
    let result = panic::catch_unwind(|| {
        let ns = Netns::new("panicky");
        *name.lock().unwrap() = ns.name().to_string();
        let child = ns.spawn(&["sleep", "600"]);
        *pid.lock().unwrap() = child.pid();
        // Leak the guard: the namespace's own drop must still kill it.
        std::mem::forget(child);
        panic!("deliberate panic inside a test body");
    });
    assert!(result.is_err());
    let name = name.into_inner().unwrap();
    let pid = pid.into_inner().unwrap();
    assert!(
        name.starts_with("lbt-") && name.ends_with("-panicky"),
        "{name}"
    );
    assert_gone(std::slice::from_ref(&name));
    // The panic kept the namespace's log dir for inspection; this panic was
    // on purpose.
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&name));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} spawned in the namespace survived its drop"
    );
}

#[test]
fn data_helpers_known_values() {
    use lb_tests::{Fnv1a64, PatternGen, fnv1a64};
    // Reference values of the published FNV-1a 64 test suite.
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    let mut h = Fnv1a64::new();
    h.update(b"foo");
    h.update(b"bar");
    assert_eq!(h.finish(), fnv1a64(b"foobar"));
    // The bulk stream is reproducible and not a constant pattern.
    let (mut a, mut b) = (PatternGen::new(7), PatternGen::new(7));
    let (mut x, mut y) = ([0u8; 37], [0u8; 37]);
    a.fill(&mut x);
    b.fill(&mut y);
    assert_eq!(x, y);
    assert!(x.iter().any(|&v| v != x[0]));
}

/// `spawn` (ip netns exec) hides the host's bpffs behind a fresh sysfs;
/// `spawn_setns` keeps it, which is what a pinning agent needs. Both see only
/// the namespace's interfaces over netlink. The pin dir goes with the netns.
#[test]
fn spawn_variants_and_pin_dir_cleanup() {
    require_root();
    let script = "ip -o link | cut -d: -f2; stat -f -c 'fs=%T' /sys/fs/bpf; sleep 60";
    let (name, pin);
    {
        let ns = Netns::new("spawn");
        name = ns.name().to_string();
        pin = ns.bpf_pin_dir();
        std::fs::create_dir_all(pin.join("sub")).expect("mkdir in bpffs");
        let setns = ns.spawn_setns(&["sh", "-c", script]);
        let exec = ns.spawn(&["sh", "-c", script]);
        for (p, fs) in [(&setns, "fs=bpf_fs"), (&exec, "fs=sysfs")] {
            assert!(p.wait_log_contains(fs, T), "{}", p.report());
            assert_eq!(p.log().lines().next(), Some(" lo"), "{}", p.report());
        }
    }
    assert_gone(std::slice::from_ref(&name));
    assert!(!pin.exists(), "{} survived the namespace", pin.display());
}
