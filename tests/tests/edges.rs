//! End to end, the edges of L4 NAT that plain request/response traffic never
//! reaches: ICMP errors about a flow crossing the balancer against it (path
//! MTU discovery), IP fragments, a SYN flood against a small flow table, a
//! client reopening a 4-tuple whose last connection just closed, and IPv6
//! (NAT66) beside IPv4.
//!
//! Topology (tests/src/edges_net.rs): client — r1 — lb — r3 — s1, s2, all
//! routed and dual-stack, with 1280-byte route MTUs on the routers beyond
//! the lb, so the kernels on the way make the ICMP errors and fragments.
//!
//! Every case runs twice: first with nftables DNAT (conntrack) in the lb
//! namespace, the reference that proves the case itself; then with the real
//! `lb` binary, XDP on the lb namespace's interfaces. Each run gets a fresh
//! topology, so nothing one balancer left (learned path MTUs, conntrack
//! entries, the servers' TIME_WAIT and SYN queues) can help or hurt the
//! other. `EDGES_MODES=nft` (or `lb`) runs only that mode.
use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::{IpAddr, SocketAddr, SocketAddrV4},
    panic::{self, AssertUnwindSafe},
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    EchoConn, HttpConn, bulk_receive, bulk_send,
    edges_net::{
        self, Balancer, CLIENT_ADDR, ECHO, EdgeNet, Family, HTTP, Mode, NARROW_MTU, Proto, SINK,
        SOURCE, Service, UDP, VIP, server_addr, server_addr6, server_name,
    },
    http_get, http_get_from, require_root, udp_request, wait_until,
};
use lb_userspace::{
    api::{FlowState, RealRow, RealState},
    config::Protocol,
};

/// Two servers: enough for a round-robin pick to be visible.
const SERVERS: usize = 2;
/// lb's flow table outside the flood case (entries; two per flow).
const TABLE: u32 = 65536;
const T: Duration = Duration::from_secs(3);
/// A wait for an answer that may be lost on purpose.
const SHORT: Duration = Duration::from_secs(1);

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.into(), port)
}

/// An IPv4 service over the first `n` servers.
fn service(name: &'static str, proto: Proto, port: u16, real_port: u16, n: usize) -> Service {
    service_in(Family::V4, name, proto, port, real_port, n)
}

/// A service over the first `n` servers' addresses in `family`, on that
/// family's VIP.
fn service_in(
    family: Family,
    name: &'static str,
    proto: Proto,
    port: u16,
    real_port: u16,
    n: usize,
) -> Service {
    Service {
        name,
        proto,
        port,
        real_port,
        reals: (0..n).map(|i| family.server_addr(i)).collect(),
    }
}

/// An I/O error as the test reports it: std reports a socket timeout
/// (SO_RCVTIMEO) as EAGAIN, "Resource temporarily unavailable".
fn why(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!("timed out ({e})"),
        _ => e.to_string(),
    }
}

/// Runs `case` once per selected mode, each on a fresh topology whose
/// servers run every `lb-testsrv` service. A failure names the case and the
/// mode; a failure of the nftables run means the case is wrong, not lb.
fn run_case(case: &str, f: fn(&EdgeNet, Mode)) {
    require_root();
    for mode in Mode::selected() {
        println!("=== {case} [{mode}]");
        let start = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut net = EdgeNet::new(SERVERS);
            net.start_servers(env!("CARGO_BIN_EXE_lb-testsrv"));
            // Nothing is learned yet in a fresh topology; flushing anyway
            // keeps the run honest should the topology ever be shared.
            net.flush_route_caches();
            f(&net, mode);
        }));
        if let Err(payload) = outcome {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(a panic without a message)");
            match mode {
                Mode::Nft => panic!(
                    "case {case}, mode nft (the nftables reference: the case itself is wrong): {msg}"
                ),
                Mode::Lb => panic!("case {case}, mode lb: {msg}"),
            }
        }
        println!("=== {case} [{mode}] passed in {:.1?}", start.elapsed());
    }
}

#[test]
fn path_mtu_discovery_through_the_balancer_both_ways() {
    run_case("pmtu", pmtu);
}

#[test]
fn udp_datagrams_fragmented_both_ways() {
    run_case("udp-fragments", udp_fragments);
}

#[test]
fn ipv6_udp_datagrams_fragmented_both_ways() {
    run_case("udp-fragments-6", |net, mode| {
        udp_fragments_in(net, mode, Family::V6)
    });
}

#[test]
fn a_syn_flood_leaves_established_connections_alone() {
    run_case("syn-flood", syn_flood);
}

#[test]
fn a_reused_tuple_after_close_gets_a_fresh_real() {
    run_case("tuple-reuse", tuple_reuse);
}

#[test]
fn ipv6_http_udp_and_bulk_through_the_balancer() {
    run_case("ipv6", ipv6);
}

/// Bytes of each bulk transfer: some 2000 full-sized segments, far beyond
/// what could slip through before the first "fragmentation needed".
const BULK: u64 = 3 << 20;
/// A transfer whose path MTU is never learned stalls (Linux does no MTU
/// probing by default) and ends here.
const BULK_LIMIT: Duration = Duration::from_secs(20);

/// Path MTU discovery across the NAT, both ways, with ICMP made by the
/// routers' kernels:
/// - download: the real's 1500-byte segments meet r1's 1280 route towards
///   the clients. r1's "fragmentation needed" quotes VIP -> client and is
///   addressed to the VIP; the balancer must deliver it to the real,
///   quoting real -> client.
/// - upload: the client's 1500-byte segments to the VIP meet r3's 1280 route
///   towards the servers. r3's ICMP goes to the client and quotes client ->
///   real; it crosses the balancer from the server side and must arrive
///   quoting client -> VIP, or the client's socket (connected to the VIP)
///   never hears of it.
///
/// Each transfer must finish intact, and each sender must have learned
/// exactly the routers' 1280 for its peer.
///
/// Order matters: a host that learned a path MTU for a peer also advertises
/// the smaller MSS to it, which would keep the other direction's segments
/// below 1280. So the download comes first and from s1, and the upload goes
/// to s2, which has learned nothing, from a client that has learned nothing
/// about the VIP.
fn pmtu(net: &EdgeNet, mode: Mode) {
    let source = Service {
        reals: vec![server_addr(0).into()],
        ..service("source", Proto::Tcp, 9001, SOURCE, 1)
    };
    let sink = Service {
        reals: vec![server_addr(1).into()],
        ..service("sink", Proto::Tcp, 9000, SINK, 1)
    };
    let bal = Balancer::start(net, mode, &[source, sink], TABLE);
    let (downloader, uploader) = (&net.servers[0], &net.servers[1]);
    let want = format!("mtu {NARROW_MTU}");
    for (ns, dst) in [
        (&net.client, VIP),
        (downloader, CLIENT_ADDR),
        (uploader, CLIENT_ADDR),
    ] {
        let route = EdgeNet::route_get(ns, dst);
        assert!(
            !route.contains(" mtu "),
            "{}: a path MTU for {dst} before any transfer: {route}",
            ns.name()
        );
    }

    let down = net
        .client
        .run(|| bulk_receive(vip(9001), BULK, BULK_LIMIT))
        .unwrap_or_else(|e| {
            panic!(
                "download of {BULK} bytes through r1's {NARROW_MTU}-byte route: {}",
                why(&e)
            )
        });
    println!(
        "[{mode}] download from {}: {} bytes in {:.2?} ({:.0} Mbit/s)",
        server_name(0),
        down.received,
        down.elapsed,
        down.mbit_per_s()
    );
    assert!(down.intact(), "download arrived intact: {down:?}");
    let route = EdgeNet::route_get(downloader, CLIENT_ADDR);
    println!(
        "[{mode}] {}$ ip route get {CLIENT_ADDR}\n{}",
        server_name(0),
        route.trim_end()
    );
    assert!(
        route.contains(&want),
        "the real learned r1's {want} for the client (r1's ICMP to the VIP, delivered by the balancer): {route}"
    );

    let up = net
        .client
        .run(|| bulk_send(vip(9000), BULK, BULK_LIMIT))
        .unwrap_or_else(|e| {
            panic!(
                "upload of {BULK} bytes through r3's {NARROW_MTU}-byte route: {}",
                why(&e)
            )
        });
    println!(
        "[{mode}] upload to {}: {} bytes in {:.2?} ({:.0} Mbit/s)",
        server_name(1),
        up.sent,
        up.elapsed,
        up.mbit_per_s()
    );
    assert!(up.intact(), "upload arrived intact: {up:?}");
    let route = EdgeNet::route_get(&net.client, VIP);
    println!("[{mode}] client$ ip route get {VIP}\n{}", route.trim_end());
    assert!(
        route.contains(&want),
        "the client learned r3's {want} for the VIP (r3's ICMP, translated by the balancer): {route}"
    );
    println!("[{mode}] {}", bal.stats(net));
}

/// Bytes of each UDP payload: two 1500-byte fragments and a tail on the
/// sender's own link.
const DATAGRAM: usize = 3000;

/// A printable payload, different for every request, so a reply stitched
/// from the wrong fragments cannot compare equal.
fn payload(i: usize) -> String {
    (0..DATAGRAM)
        .map(|k| char::from(b'a' + ((k * 7 + i * 13 + k / 26) % 26) as u8))
        .collect()
}

/// UDP datagrams bigger than every link, both ways: the client's kernel
/// fragments the request, the real's kernel the answer (`<name>:` and the
/// payload, 3003 bytes), and r3 and r1 split the fragments again at their
/// 1280 routes. Only the first fragment carries the ports, so a balancer
/// must translate the others by the flow they belong to (or reassemble).
/// Each request is a new flow (a fresh socket); the reply must be
/// byte-exact. The client's own counters prove both directions were
/// fragmented.
///
/// IPv6 routers never fragment: r3 and r1 answer a fragment too big for
/// their 1280 routes with packet too big, which the balancer delivers (to
/// the client, and to the real via the VIP), and the datagram is lost. So
/// the IPv6 run first sends until one datagram comes back (the senders
/// have then learned 1280 and fragment to it), and asserts the rest.
fn udp_fragments(net: &EdgeNet, mode: Mode) {
    udp_fragments_in(net, mode, Family::V4)
}

fn udp_fragments_in(net: &EdgeNet, mode: Mode, family: Family) {
    let dns = service_in(family, "dns", Proto::Udp, 53, UDP, SERVERS);
    let bal = Balancer::start(net, mode, &[dns], TABLE);
    let to = SocketAddr::new(family.vip(), 53);
    if family == Family::V6 {
        // Until every real has answered once: each learns r1's MTU from
        // the first answer it loses, the client r3's from its first request.
        let mut answered = BTreeSet::new();
        for i in 0..10 {
            if answered.len() == SERVERS {
                break;
            }
            let msg = payload(100 + i);
            if let Ok(reply) = net.client.run(|| udp_request(to, msg.as_bytes(), SHORT)) {
                answered.insert(reply.split_once(':').map(|(n, _)| n.to_string()));
            }
        }
        assert_eq!(
            answered.len(),
            SERVERS,
            "reals that answered {to}: {answered:?}"
        );
    }
    let counters = || edges_net::frag_counters(&net.client, family);
    let before = counters();
    const REQUESTS: usize = 4;
    let mut answered_by = BTreeMap::new();
    for i in 0..REQUESTS {
        let msg = payload(i);
        let reply = net
            .client
            .run(|| udp_request(to, msg.as_bytes(), T))
            .unwrap_or_else(|e| panic!("datagram {i} ({DATAGRAM} bytes) to {to}: {}", why(&e)));
        let (name, echoed) = reply
            .split_once(':')
            .unwrap_or_else(|| panic!("datagram {i}: reply without a name: {:.60?}", reply));
        assert!(
            echoed.len() == msg.len() && echoed == msg,
            "datagram {i}: {} bytes came back from {name}, {} sent, or different bytes",
            echoed.len(),
            msg.len()
        );
        *answered_by.entry(name.to_string()).or_insert(0) += 1;
    }
    let after = counters();
    let (frags, reasm) = (after.0 - before.0, after.1 - before.1);
    println!(
        "[{mode}] {REQUESTS} datagrams of {DATAGRAM} bytes answered by {answered_by:?}; \
         the client made {frags} fragments and reassembled {reasm} answers"
    );
    assert!(
        frags >= 3 * REQUESTS as u64,
        "the client fragmented every request: {frags} fragments"
    );
    assert!(
        reasm >= REQUESTS as u64,
        "every answer arrived fragmented: {reasm} reassembled"
    );
    println!("[{mode}] {}", bal.stats(net));
}

/// lb's flow table in the flood case: 4096 entries, about 2048 flows.
const FLOOD_TABLE: u32 = 4096;
const ESTABLISHED: usize = 50;
const SYNS: u32 = 20_000;
const FLOOD_LIMIT: Duration = Duration::from_secs(10);

/// 50 idle established connections, then 20,000 SYNs to the same VIP and
/// port from spoofed sources (10 times what lb's table holds): every
/// connection must still echo. A balancer whose half-open flows can evict
/// established ones loses them: a connection whose flow is gone is picked
/// up mid-stream and, under round-robin over two reals, half the time lands
/// on a real that never saw it. The SYN-ACKs to the spoofed sources go back
/// through r1 into the client namespace's blackhole.
fn syn_flood(net: &EdgeNet, mode: Mode) {
    let echo = service("echo", Proto::Tcp, 7, ECHO, SERVERS);
    let bal = Balancer::start(net, mode, &[echo], FLOOD_TABLE);
    let mut conns: Vec<EchoConn> = (0..ESTABLISHED)
        .map(|i| {
            let mut c = net
                .client
                .run(|| EchoConn::connect(vip(7), T))
                .unwrap_or_else(|e| panic!("connection {i} to {VIP}:7: {}", why(&e)));
            let msg = format!("hello {i}");
            let got = net
                .client
                .run(|| c.roundtrip(msg.as_bytes()))
                .unwrap_or_else(|e| panic!("connection {i}: first round trip: {}", why(&e)));
            assert_eq!(got, msg.as_bytes(), "connection {i}: first round trip");
            c
        })
        .collect();

    let flood = net
        .client
        .run(|| edges_net::spoofed_syns(SocketAddrV4::new(VIP, 7), SYNS, FLOOD_LIMIT))
        .unwrap_or_else(|e| panic!("raw socket for the flood: {e}"));
    println!(
        "[{mode}] {} spoofed SYNs sent in {:.2?} ({} failed)",
        flood.sent, flood.elapsed, flood.failed
    );
    assert_eq!(
        flood.sent, SYNS,
        "the whole flood went out within {FLOOD_LIMIT:?}: {flood:?}"
    );
    println!("[{mode}] {}", bal.stats(net));

    // All at once, so a broken connection costs its timeout only once.
    let broken: Vec<String> = net.client.run(|| {
        thread::scope(|s| {
            let checks: Vec<_> = conns
                .iter_mut()
                .enumerate()
                .map(|(i, c)| {
                    s.spawn(move || {
                        let local = c
                            .local_addr()
                            .map_or_else(|e| e.to_string(), |a| a.to_string());
                        let msg = format!("after the flood {i}");
                        match c.roundtrip(msg.as_bytes()) {
                            Ok(got) if got == msg.as_bytes() => None,
                            Ok(got) => Some(format!("connection {i} ({local}): echoed {got:?}")),
                            Err(e) => Some(format!("connection {i} ({local}): {}", why(&e))),
                        }
                    })
                })
                .collect();
            checks
                .into_iter()
                .filter_map(|h| h.join().expect("echo check thread"))
                .collect()
        })
    });
    println!(
        "[{mode}] {} of {ESTABLISHED} established connections still echo",
        ESTABLISHED - broken.len()
    );
    assert!(
        broken.is_empty(),
        "{} of {ESTABLISHED} established connections broke after {SYNS} spoofed SYNs:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

/// The client's fixed port for the tuple-reuse case (below the ephemeral
/// range, so no other socket of the client takes it).
const TUPLE_PORT: u16 = 24_680;

/// `GET /` from `local` through the VIP, retried while the client's kernel
/// still holds the previous connection on that port (its last ACK in
/// flight). Returns the name of the real that answered.
fn get_from(net: &EdgeNet, local: SocketAddrV4, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    for attempt in 0..100 {
        match net.client.run(|| http_get_from(local, vip(80), "/", T)) {
            Ok((200, body)) => return body.trim().to_string(),
            Ok((status, body)) => panic!("{what} request from {local}: status {status}: {body}"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
                ) && Instant::now() < deadline =>
            {
                if attempt % 10 == 9 {
                    println!("{what} request from {local}: {e}; retrying");
                }
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{what} request from {local}: {}", why(&e)),
        }
    }
    panic!("{what} request from {local}: the port stayed busy");
}

/// A client reopens the 4-tuple of a connection that just closed. The
/// server closed first, so it holds TIME_WAIT and the client's end is free
/// at once; Linux accepts exactly this reconnect. Between the two, the real
/// that served the first connection is taken out (lb: `lb real disable`,
/// fail action none, so the old flow stays on it; nftables: the rule no
/// longer names it). The balancer still holds the old connection (lb: a
/// flow in fin/closed; conntrack: TIME_WAIT), and the new SYN must not
/// follow it: it is a new connection and gets a fresh pick, the live real.
fn tuple_reuse(net: &EdgeNet, mode: Mode) {
    let web = service("web", Proto::Tcp, 80, HTTP, SERVERS);
    let mut bal = Balancer::start(net, mode, std::slice::from_ref(&web), TABLE);
    let local = SocketAddrV4::new(CLIENT_ADDR, TUPLE_PORT);
    let first = get_from(net, local, "first");
    let old = (0..SERVERS)
        .find(|&i| server_name(i) == first)
        .unwrap_or_else(|| panic!("first request answered by {first:?}"));
    let live = (old + 1) % SERVERS;
    let (old_addr, live_name): (IpAddr, _) = (server_addr(old).into(), server_name(live));
    println!("[{mode}] first connection from {local} served by {first}");

    // The balancer still remembers the closed connection, or this case
    // would test nothing.
    match bal.agent() {
        Some(agent) => {
            let client = local.to_string();
            let mut flows = Vec::new();
            let closed = wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
                flows = agent.flows(&["--client", &client]);
                flows.len() == 1 && [FlowState::Fin, FlowState::Closed].contains(&flows[0].state)
            });
            assert!(
                closed,
                "lb holds the closed connection as one flow in fin/closed: {flows:?}"
            );
            assert_eq!(
                flows[0].real,
                format!("{old_addr}:{HTTP}"),
                "{:?}",
                flows[0]
            );
            println!("[{mode}] old flow: {:?}", flows[0]);
        }
        None => {
            let entry = conntrack_entry(net, TUPLE_PORT);
            if let Some(line) = &entry {
                println!("[{mode}] old conntrack entry: {line}");
                assert!(line.contains("TIME_WAIT"), "conntrack: {line}");
            } else {
                println!("[{mode}] (no /proc/net/nf_conntrack to show the old entry)");
            }
        }
    }

    bal.disable_real(net, &web, old_addr);
    if let Some(agent) = bal.agent() {
        let disabled = wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
            let out = agent.cli(&["reals", "--farm", "web", "--json"]);
            let rows: Vec<RealRow> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            rows.iter()
                .any(|r| r.address == old_addr.to_string() && r.state == RealState::Disabled)
        });
        assert!(disabled, "lb reals shows {old_addr} disabled");
    }

    let second = get_from(net, local, "second");
    println!("[{mode}] second connection from the same {local} served by {second}");
    assert_eq!(
        second, live_name,
        "the reconnect from {local} followed the closed connection to {first}, which was \
         disabled; a new connection must get a fresh pick"
    );
    if let Some(agent) = bal.agent() {
        println!(
            "[{mode}] flows now: {:?}",
            agent.flows(&["--client", &local.to_string()])
        );
    }
}

/// The lb namespace's conntrack line for the client's `port` to the VIP's
/// port 80, once it reached TIME_WAIT (waits up to 2 s for the last ACK);
/// `None` if the kernel has no /proc/net/nf_conntrack.
fn conntrack_entry(net: &EdgeNet, port: u16) -> Option<String> {
    let needle = format!("src={CLIENT_ADDR} dst={VIP} sport={port} dport=80 ");
    let read = || -> Option<Option<String>> {
        let text = net
            .lb
            .run(|| std::fs::read_to_string("/proc/thread-self/net/nf_conntrack"))
            .ok()?;
        Some(
            text.lines()
                .find(|l| l.contains(&needle))
                .map(str::to_string),
        )
    };
    read()?;
    let mut line = None;
    wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
        line = read().flatten();
        line.as_deref().is_some_and(|l| l.contains("TIME_WAIT"))
    });
    Some(line.unwrap_or_else(|| panic!("conntrack has no entry with {needle:?}")))
}

/// Requests of each kind in the IPv6 case: with two reals, enough for
/// round-robin to reach both even when lb's per-CPU cursors split them.
const V6_REQUESTS: usize = 6;
/// Bytes of each IPv6 bulk transfer, each way.
const V6_BULK: u64 = 4 << 20;

/// NAT66 end to end, beside an IPv4 VIP in the same balancer: HTTP GETs
/// through the IPv6 VIP reach both servers by round-robin, UDP datagrams
/// come back byte-exact from the VIP, and a bulk upload to the sink and a
/// bulk download from the source arrive intact through the 1280-byte hops
/// on both sides, which the endpoints learn from the routers' own packet
/// too big messages. In lb mode, `lb flows`
/// lists the IPv6 flows with bracketed endpoints: an open keep-alive
/// connection as one established flow to the real that answered it.
fn ipv6(net: &EdgeNet, mode: Mode) {
    let v6 = Family::V6;
    let vip6 = |port| SocketAddr::new(v6.vip(), port);
    let services = [
        service("web", Proto::Tcp, 80, HTTP, SERVERS),
        service_in(v6, "web6", Proto::Tcp, 80, HTTP, SERVERS),
        service_in(v6, "dns6", Proto::Udp, 53, UDP, SERVERS),
        // One real each, as in the pmtu case: a real that learned r1's MTU
        // for the client would advertise an MSS that spares r3's hop.
        Service {
            reals: vec![server_addr6(1).into()],
            ..service_in(v6, "sink6", Proto::Tcp, 9000, SINK, 1)
        },
        Service {
            reals: vec![server_addr6(0).into()],
            ..service_in(v6, "source6", Proto::Tcp, 9001, SOURCE, 1)
        },
    ];
    let bal = Balancer::start(net, mode, &services, TABLE);
    let servers: BTreeSet<String> = (0..SERVERS).map(server_name).collect();

    let mut http_by = BTreeMap::new();
    for i in 0..V6_REQUESTS {
        let body = match net.client.run(|| http_get(vip6(80), "/", T)) {
            Ok((200, body)) => body.trim().to_string(),
            Ok((status, body)) => panic!("GET {i} to {}: status {status}: {body}", vip6(80)),
            Err(e) => panic!("GET {i} to {}: {}", vip6(80), why(&e)),
        };
        assert!(servers.contains(&body), "GET {i} answered by {body:?}");
        *http_by.entry(body).or_insert(0) += 1;
    }
    println!(
        "[{mode}] {V6_REQUESTS} GETs to {} answered by {http_by:?}",
        vip6(80)
    );
    assert_eq!(
        http_by.len(),
        SERVERS,
        "round-robin over the IPv6 VIP reached every server: {http_by:?}"
    );
    // The IPv4 VIP of the same balancer still serves.
    let v4 = net
        .client
        .run(|| http_get(vip(80), "/", T))
        .unwrap_or_else(|e| panic!("GET to {}: {}", vip(80), why(&e)));
    assert_eq!(v4.0, 200, "GET to {} beside the IPv6 VIP: {v4:?}", vip(80));

    let mut udp_by = BTreeMap::new();
    for i in 0..V6_REQUESTS {
        let msg = format!("ipv6 datagram {i}");
        let reply = net
            .client
            .run(|| udp_request(vip6(53), msg.as_bytes(), T))
            .unwrap_or_else(|e| panic!("datagram {i} to {}: {}", vip6(53), why(&e)));
        let (name, echoed) = reply
            .split_once(':')
            .unwrap_or_else(|| panic!("datagram {i}: reply without a name: {reply:?}"));
        assert!(
            servers.contains(name) && echoed == msg,
            "datagram {i}: {reply:?} for {msg:?}"
        );
        *udp_by.entry(name.to_string()).or_insert(0) += 1;
    }
    println!(
        "[{mode}] {V6_REQUESTS} datagrams to {} answered by {udp_by:?}",
        vip6(53)
    );

    // Path MTU discovery through the balancer, as the pmtu case proves it
    // for IPv4: r1's packet too big about a real's segments reached the
    // real, and r3's about the client's reached the client's socket. The
    // download goes first: a client that had learned r3's MTU would
    // advertise an MSS that spares the real r1's narrow hop (and each
    // transfer has a real of its own, for the same reason).
    let want = format!("mtu {NARROW_MTU}");
    let down = net
        .client
        .run(|| bulk_receive(vip6(9001), V6_BULK, BULK_LIMIT))
        .unwrap_or_else(|e| {
            panic!(
                "download of {V6_BULK} bytes from {}: {}",
                vip6(9001),
                why(&e)
            )
        });
    println!(
        "[{mode}] download from {}: {} bytes in {:.2?} ({:.0} Mbit/s)",
        vip6(9001),
        down.received,
        down.elapsed,
        down.mbit_per_s()
    );
    assert!(down.intact(), "download arrived intact: {down:?}");
    let route = EdgeNet::route_get(&net.servers[0], v6.client_addr());
    assert!(
        route.contains(&want),
        "the real learned r1's {want} for the client (r1's packet too big to the VIP, delivered by the balancer): {route}"
    );

    let up = net
        .client
        .run(|| bulk_send(vip6(9000), V6_BULK, BULK_LIMIT))
        .unwrap_or_else(|e| panic!("upload of {V6_BULK} bytes to {}: {}", vip6(9000), why(&e)));
    println!(
        "[{mode}] upload to {}: {} bytes in {:.2?} ({:.0} Mbit/s)",
        vip6(9000),
        up.sent,
        up.elapsed,
        up.mbit_per_s()
    );
    assert!(up.intact(), "upload arrived intact: {up:?}");
    let route = EdgeNet::route_get(&net.client, v6.vip());
    assert!(
        route.contains(&want),
        "the client learned r3's {want} for the VIP (r3's packet too big, translated by the balancer): {route}"
    );
    if let Some(agent) = bal.agent() {
        check_ipv6_flows(net, agent, vip6(80), vip6(53));
    }
    println!("[{mode}] {}", bal.stats(net));
}

/// `lb flows` names IPv6 flows by bracketed endpoints: an open keep-alive
/// connection to `web` is one established flow from the client's own
/// `[addr]:port` to the real whose name answered on it; the UDP VIP `dns`
/// has flows in state udp to the servers' IPv6 addresses.
fn check_ipv6_flows(net: &EdgeNet, agent: &lb_tests::LbAgent, web: SocketAddr, dns: SocketAddr) {
    let mut conn = net
        .client
        .run(|| HttpConn::connect(web, T))
        .unwrap_or_else(|e| panic!("keep-alive connection to {web}: {}", why(&e)));
    let (status, body) = net
        .client
        .run(|| conn.get("/"))
        .unwrap_or_else(|e| panic!("GET on the keep-alive connection to {web}: {}", why(&e)));
    assert_eq!(status, 200, "{body}");
    let local = conn.local_addr().expect("local address").to_string();
    let real = (0..SERVERS)
        .find(|&i| server_name(i) == body.trim())
        .map(|i| SocketAddr::new(Family::V6.server_addr(i), HTTP).to_string())
        .unwrap_or_else(|| panic!("the keep-alive GET answered by {body:?}"));
    let flows = agent.flows(&["--client", &local]);
    println!("[lb] flows of {local}: {flows:?}");
    assert!(
        flows.len() == 1
            && flows[0].vip == web.to_string()
            && flows[0].real == real
            && flows[0].client == local
            && flows[0].protocol == Protocol::Tcp
            && flows[0].state == FlowState::Established,
        "lb flows --client {local}: one established tcp flow {local} -> {web} -> {real}: {flows:?}"
    );

    let reals: BTreeSet<String> = (0..SERVERS)
        .map(|i| SocketAddr::new(Family::V6.server_addr(i), UDP).to_string())
        .collect();
    let udp = agent.flows(&["--vip", &dns.to_string()]);
    assert!(
        !udp.is_empty()
            && udp.iter().all(|f| f.protocol == Protocol::Udp
                && f.state == FlowState::Udp
                && f.vip == dns.to_string()
                && reals.contains(&f.real)),
        "lb flows --vip {dns}: udp flows to {reals:?}: {udp:?}"
    );
    println!("[lb] {} udp flows on {dns}, e.g. {:?}", udp.len(), udp[0]);
}
