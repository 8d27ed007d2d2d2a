//! The routed topology of the edge-case tests (tests/tests/edges.rs), the
//! two balancers they compare (nftables DNAT as the reference, and lb), and
//! the spoofed-SYN sender. Documentation and benchmark ranges only.
//!
//! ```text
//! client  eth0 192.0.2.2/25, default via 192.0.2.1, blackhole 198.18.0.0/15
//!    |
//! r1      eth0 192.0.2.1/25 (its route: mtu 1280), eth1 192.0.2.129/30
//!         default via 192.0.2.130, 198.18.0.0/15 via 192.0.2.2
//!    |
//! lb      eth0 192.0.2.130/30, eth1 203.0.113.129/30 (XDP in lb mode)
//!         192.0.2.0/25 and 198.18.0.0/15 via 192.0.2.129, 203.0.113.0/25 via 203.0.113.130
//!    |
//! r3      eth0 203.0.113.130/30, br0 203.0.113.1/25 (its route: mtu 1280)
//!         default via 203.0.113.129; br0's ports to-s1, to-s2, …
//!    |
//! sN      eth0 203.0.113.(10+N)/25, default via 203.0.113.1
//! ```
//!
//! Routers on both sides of the lb make the ICMP errors real kernels make:
//! each direction of a TCP stream meets its narrow hop *beyond* the lb (r3
//! towards the servers, r1 towards the clients), so the "fragmentation
//! needed" that answers it has to cross the lb against the flow, and the
//! sending kernels fragment UDP datagrams bigger than the 1500-byte links.
//! The narrow hops are route MTUs, not links: a forwarding Linux router
//! checks a packet against its route's `mtu` metric (ip_forward() takes
//! `ip_dst_mtu_maybe_forward()`, which returns the raw RTAX_MTU), and the
//! pmtu case fails unless the endpoints learn exactly that 1280.
//!
//! The VIP (198.51.100.10) is routed by r1 to the lb, which has no route for
//! it: nftables rewrites it in prerouting, lb's XDP program claims it.
//! Spoofed SYN sources come from 198.18.0.0/15: every answer to them is
//! routed back through r1 into the client namespace, whose blackhole route
//! drops it. Nothing links to the root namespace, so no packet a test sends
//! can leave the topology.

use std::{
    fmt, fs, io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use lb_userspace::reset::{ResetSender, SYN, tcp_segment};

use crate::{
    LbAgent, Spawned, TestServer,
    netns::{Netns, veth},
    topology::{quiet_sysctls, wait_probes},
};

pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The client's gateway, on r1.
pub const R1_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const R1_LB_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 129);
pub const LB_R1_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 130);
pub const LB_R3_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 129);
pub const R3_LB_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 130);
/// The servers' gateway, on r3's bridge.
pub const R3_SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const CLIENT_NET: &str = "192.0.2.0/25";
pub const SERVER_NET: &str = "203.0.113.0/25";
/// Where spoofed sources come from (RFC 2544 benchmark range), and where
/// their answers die: routed into the client namespace, blackholed there.
pub const SPOOF_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
pub const SPOOF_PREFIX: u8 = 15;
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The route MTU of each narrow hop (IPv6's minimum, a common tunnel MTU).
pub const NARROW_MTU: u32 = 1280;
/// Interfaces of the lb namespace: towards r1, towards r3.
pub const LB_CLIENT_IF: &str = "eth0";
pub const LB_SERVER_IF: &str = "eth1";
/// At most this many servers fit the address plan.
pub const MAX_SERVERS: usize = 100;

/// The ports every server listens on ([`EdgeNet::start_servers`]).
pub const HTTP: u16 = 8080;
pub const UDP: u16 = 5353;
pub const ECHO: u16 = 7000;
pub const SINK: u16 = 9000;
pub const SOURCE: u16 = 9001;

/// Address of server `i` (0-based): 203.0.113.(11 + i).
pub fn server_addr(i: usize) -> Ipv4Addr {
    assert!(i < MAX_SERVERS, "server index {i} out of range");
    Ipv4Addr::new(203, 0, 113, 11 + i as u8)
}

/// Name of server `i` (0-based), its namespace role and what its
/// `lb-testsrv` answers with: "s1", "s2", ….
pub fn server_name(i: usize) -> String {
    format!("s{}", i + 1)
}

/// The built topology. Dropping it kills everything inside and removes all
/// its namespaces.
pub struct EdgeNet {
    pub client: Netns,
    pub r1: Netns,
    pub lb: Netns,
    pub r3: Netns,
    pub servers: Vec<Netns>,
    pub server_addrs: Vec<Ipv4Addr>,
    /// The `lb-testsrv` processes, once started.
    pub testsrvs: Vec<Spawned>,
}

impl EdgeNet {
    /// Builds the topology with `n_servers` servers and waits until it
    /// routes. Panics with context on any failure; whatever was built so
    /// far is removed by the unwinding drops.
    pub fn new(n_servers: usize) -> EdgeNet {
        assert!(
            (1..=MAX_SERVERS).contains(&n_servers),
            "1..={MAX_SERVERS} servers"
        );
        let client = Netns::new("client");
        let r1 = Netns::new("r1");
        let lb = Netns::new("lb");
        let r3 = Netns::new("r3");
        let servers: Vec<Netns> = (0..n_servers)
            .map(|i| Netns::new(&server_name(i)))
            .collect();

        // Before any interface exists, so the `default` values reach them.
        for ns in [&client, &r1, &lb, &r3].into_iter().chain(&servers) {
            quiet_sysctls(ns);
        }
        for ns in [&r1, &lb, &r3] {
            ns.sysctl("net.ipv4.ip_forward", "1");
        }

        // Links.
        veth(&client, "eth0", &r1, "eth0");
        veth(&r1, "eth1", &lb, LB_CLIENT_IF);
        veth(&lb, LB_SERVER_IF, &r3, "eth0");
        r3.ip(&["link", "add", "br0", "type", "bridge", "stp_state", "0"]);
        r3.ip(&["link", "set", "br0", "type", "bridge", "forward_delay", "0"]);
        for (i, server) in servers.iter().enumerate() {
            let port = format!("to-{}", server_name(i));
            veth(server, "eth0", &r3, &port);
            r3.ip(&["link", "set", &port, "master", "br0"]);
        }
        r3.ip(&["link", "set", "br0", "up"]);

        // Addresses and routes.
        let addr = |ns: &Netns, a: Ipv4Addr, len: u8, dev: &str| {
            ns.ip(&["addr", "add", &format!("{a}/{len}"), "dev", dev]);
        };
        let route = |ns: &Netns, args: &[&str]| {
            let mut full = vec!["route", "add"];
            full.extend_from_slice(args);
            ns.ip(&full);
        };
        let spoof_net = format!("{SPOOF_NET}/{SPOOF_PREFIX}");
        let mtu = NARROW_MTU.to_string();

        addr(&client, CLIENT_ADDR, 25, "eth0");
        route(&client, &["default", "via", &R1_CLIENT_ADDR.to_string()]);
        // Answers to spoofed sources end here. The client does not forward
        // either, so nothing it receives for them goes anywhere.
        route(&client, &["blackhole", &spoof_net]);

        addr(&r1, R1_CLIENT_ADDR, 25, "eth0");
        addr(&r1, R1_LB_ADDR, 30, "eth1");
        // The narrow hop towards the clients: the kernel's own connected
        // route, replaced by the same route with an MTU metric.
        #[rustfmt::skip]
        r1.ip(&["route", "replace", CLIENT_NET, "dev", "eth0", "proto", "kernel",
                "scope", "link", "src", &R1_CLIENT_ADDR.to_string(), "mtu", &mtu]);
        #[rustfmt::skip]
        route(&r1, &[&spoof_net, "via", &CLIENT_ADDR.to_string(), "dev", "eth0"]);
        route(&r1, &["default", "via", &LB_R1_ADDR.to_string()]);

        addr(&lb, LB_R1_ADDR, 30, LB_CLIENT_IF);
        addr(&lb, LB_R3_ADDR, 30, LB_SERVER_IF);
        // No default route and none for the VIP: a VIP packet the lb hands
        // to its kernel is unroutable, instead of looping back to r1.
        route(&lb, &[CLIENT_NET, "via", &R1_LB_ADDR.to_string()]);
        route(&lb, &[&spoof_net, "via", &R1_LB_ADDR.to_string()]);
        route(&lb, &[SERVER_NET, "via", &R3_LB_ADDR.to_string()]);

        addr(&r3, R3_LB_ADDR, 30, "eth0");
        addr(&r3, R3_SERVER_ADDR, 25, "br0");
        // The narrow hop towards the servers.
        #[rustfmt::skip]
        r3.ip(&["route", "replace", SERVER_NET, "dev", "br0", "proto", "kernel",
                "scope", "link", "src", &R3_SERVER_ADDR.to_string(), "mtu", &mtu]);
        route(&r3, &["default", "via", &LB_R3_ADDR.to_string()]);

        let server_addrs: Vec<Ipv4Addr> = (0..n_servers).map(server_addr).collect();
        for (server, &a) in servers.iter().zip(&server_addrs) {
            addr(server, a, 25, "eth0");
            route(server, &["default", "via", &R3_SERVER_ADDR.to_string()]);
        }

        for (ns, net) in [(&r1, CLIENT_NET), (&r3, SERVER_NET)] {
            let shown =
                String::from_utf8_lossy(&ns.ip(&["route", "show", net]).stdout).into_owned();
            assert!(
                shown.contains(&format!("mtu {NARROW_MTU}")),
                "{}: the route to {net} has no mtu {NARROW_MTU}: {shown}",
                ns.name()
            );
        }

        // Socket senders on veth hand out CHECKSUM_PARTIAL packets; once
        // XDP rewrites them the receiver would see bad checksums. Real NICs
        // deliver full checksums, so make the endpoints do the same.
        client.exec(&["ethtool", "-K", "eth0", "tx", "off"]);
        for server in &servers {
            server.exec(&["ethtool", "-K", "eth0", "tx", "off"]);
        }
        // A frame XDP_TX/XDP_REDIRECTed out of a veth is only received if
        // the peer has NAPI; GRO on the peer enables it. The lb's peers are
        // the routers' inner interfaces.
        r1.exec(&["ethtool", "-K", "eth1", "gro", "on"]);
        r3.exec(&["ethtool", "-K", "eth0", "gro", "on"]);

        let net = EdgeNet {
            client,
            r1,
            lb,
            r3,
            servers,
            server_addrs,
            testsrvs: Vec::new(),
        };
        net.wait_ready(Duration::from_secs(10));
        net
    }

    /// Waits until routing works both ways: the lb reaches the client and
    /// every server, the client reaches every server through the lb, and
    /// every server reaches the client. Also leaves the lb's neighbour
    /// entries (r1, r3) resolved, which `bpf_fib_lookup` needs.
    pub fn wait_ready(&self, timeout: Duration) {
        let mut probes: Vec<(&Netns, Ipv4Addr)> = vec![(&self.lb, CLIENT_ADDR)];
        for (server, &a) in self.servers.iter().zip(&self.server_addrs) {
            probes.push((&self.lb, a));
            probes.push((&self.client, a));
            probes.push((server, CLIENT_ADDR));
        }
        wait_probes("edge topology", &probes, timeout);
    }

    /// Every namespace of the topology.
    pub fn all(&self) -> Vec<&Netns> {
        [&self.client, &self.r1, &self.lb, &self.r3]
            .into_iter()
            .chain(&self.servers)
            .collect()
    }

    /// `ip route flush cache` everywhere: forgets every learned path MTU
    /// (the kernel's next-hop exceptions), so a run starts from the routes.
    pub fn flush_route_caches(&self) {
        for ns in self.all() {
            ns.ip(&["route", "flush", "cache"]);
        }
    }

    /// Starts `lb-testsrv` (`exe`) on every server with every service:
    /// http [`HTTP`], udp [`UDP`], echo [`ECHO`], sink [`SINK`], source
    /// [`SOURCE`]. Each answers with its name, "s1", "s2", ….
    pub fn start_servers(&mut self, exe: &str) {
        for (i, &a) in self.server_addrs.iter().enumerate() {
            let at = |port| SocketAddr::new(a.into(), port);
            let srv = TestServer::new(exe, &server_name(i))
                .http(at(HTTP))
                .udp(at(UDP))
                .echo(at(ECHO))
                .sink(at(SINK))
                .source(at(SOURCE))
                .spawn(&self.servers[i]);
            self.testsrvs.push(srv);
        }
    }

    /// `ip route get DST` in `ns`, as text.
    pub fn route_get(ns: &Netns, dst: Ipv4Addr) -> String {
        String::from_utf8_lossy(&ns.ip(&["route", "get", &dst.to_string()]).stdout).into_owned()
    }
}

/// Which balancer sits in the lb namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// nftables DNAT with conntrack: the reference. A case that fails with
    /// it tests something other than the balancer.
    Nft,
    /// The real `lb` binary, XDP in native mode on both lb interfaces.
    Lb,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Nft => "nft",
            Mode::Lb => "lb",
        }
    }

    /// The modes to run, reference first: `EDGES_MODES` (comma-separated
    /// `nft`, `lb`) or both.
    pub fn selected() -> Vec<Mode> {
        let Ok(spec) = std::env::var("EDGES_MODES") else {
            return vec![Mode::Nft, Mode::Lb];
        };
        let mut modes = Vec::new();
        for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let mode = match word {
                "nft" => Mode::Nft,
                "lb" => Mode::Lb,
                other => panic!("EDGES_MODES: unknown mode {other:?} (nft, lb)"),
            };
            if !modes.contains(&mode) {
                modes.push(mode);
            }
        }
        assert!(!modes.is_empty(), "EDGES_MODES={spec:?} names no mode");
        modes.sort_by_key(|m| *m != Mode::Nft);
        modes
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One virtual service on [`VIP`]: a farm of the same name, round-robin
/// over `reals`, each on `real_port`.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: &'static str,
    pub proto: Proto,
    pub port: u16,
    pub real_port: u16,
    pub reals: Vec<Ipv4Addr>,
}

/// The balancer of one run: an nftables ruleset or an `lb` agent.
pub enum Balancer {
    Nft {
        services: Vec<Service>,
        /// (service, real) pairs taken out of the rules.
        disabled: Vec<(&'static str, Ipv4Addr)>,
    },
    Lb(LbAgent),
}

impl Balancer {
    /// Puts `services` in place in `net`'s lb namespace. In lb mode the
    /// agent gets a flow table of `flow_table_size` entries; nftables has
    /// no equivalent and ignores it.
    pub fn start(net: &EdgeNet, mode: Mode, services: &[Service], flow_table_size: u32) -> Self {
        match mode {
            Mode::Nft => {
                let b = Balancer::Nft {
                    services: services.to_vec(),
                    disabled: Vec::new(),
                };
                b.write_nft(net);
                b
            }
            Mode::Lb => Balancer::Lb(LbAgent::start_sized(
                &net.lb,
                &lb_config(services),
                flow_table_size,
            )),
        }
    }

    pub fn mode(&self) -> Mode {
        match self {
            Balancer::Nft { .. } => Mode::Nft,
            Balancer::Lb(_) => Mode::Lb,
        }
    }

    /// The agent, in lb mode.
    pub fn agent(&self) -> Option<&LbAgent> {
        match self {
            Balancer::Lb(agent) => Some(agent),
            Balancer::Nft { .. } => None,
        }
    }

    /// Takes `real` out of `service` for new connections. lb: `lb real
    /// disable FARM ADDR:PORT` (the farm's fail action, `none`, leaves its
    /// flows where they are). nftables: the rules are rewritten without it
    /// (conntrack keeps its existing connections where they are).
    pub fn disable_real(&mut self, net: &EdgeNet, service: &Service, real: Ipv4Addr) {
        match self {
            Balancer::Lb(agent) => {
                let at = format!("{real}:{}", service.real_port);
                let out = agent.cli(&["real", "disable", service.name, &at]);
                assert!(
                    out.status.success(),
                    "lb real disable {} {at}: {}{}",
                    service.name,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Balancer::Nft { disabled, .. } => {
                disabled.push((service.name, real));
                self.write_nft(net);
            }
        }
    }

    /// What the balancer counted, for the test's output: `lb stats` and
    /// `lb status`, or conntrack's entry count.
    pub fn stats(&self, net: &EdgeNet) -> String {
        match self {
            Balancer::Lb(agent) => ["status", "stats"]
                .iter()
                .map(|cmd| {
                    let out = agent.cli(&[cmd]);
                    format!(
                        "$ lb {cmd}\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    )
                })
                .collect(),
            Balancer::Nft { .. } => {
                let count = net
                    .lb
                    .run(|| fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count"))
                    .unwrap_or_else(|e| format!("? ({e})"));
                format!("conntrack entries in the lb namespace: {}", count.trim())
            }
        }
    }

    fn write_nft(&self, net: &EdgeNet) {
        let Balancer::Nft { services, disabled } = self else {
            return;
        };
        let mut rules = String::new();
        for s in services {
            let live: Vec<Ipv4Addr> = s
                .reals
                .iter()
                .copied()
                .filter(|r| !disabled.contains(&(s.name, *r)))
                .collect();
            let to = match live.as_slice() {
                [] => panic!("service {}: every real is disabled", s.name),
                [one] => format!("{one}:{}", s.real_port),
                many => {
                    let map: Vec<String> = many
                        .iter()
                        .enumerate()
                        .map(|(i, a)| format!("{i} : {a}"))
                        .collect();
                    format!(
                        "numgen inc mod {} map {{ {} }} : {}",
                        many.len(),
                        map.join(", "),
                        s.real_port
                    )
                }
            };
            rules += &format!(
                "    ip daddr {VIP} {proto} dport {port} dnat to {to}\n",
                proto = s.proto.name(),
                port = s.port
            );
        }
        // Declare, delete and define in one file: one transaction, so the
        // rules are replaced atomically, also the first time.
        let text = format!(
            "table ip edges\ndelete table ip edges\ntable ip edges {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{rules}  }}\n}}\n"
        );
        let path = net.lb.log_dir().join("rules.nft");
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        net.lb
            .exec(&["nft", "-f", path.to_str().expect("utf-8 path")]);
    }
}

impl Drop for Balancer {
    /// A failing case shows what the balancer saw (the agent's own log is
    /// printed by its [`Spawned`] guard).
    fn drop(&mut self) {
        if thread::panicking()
            && let Balancer::Lb(agent) = self
        {
            for cmd in [&["stats"][..], &["flows", "--limit", "20"]] {
                let out = agent.cli(cmd);
                eprintln!(
                    "$ lb {}\n{}{}",
                    cmd.join(" "),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// The agent's config for `services` (without `api:` and `bpf:`, which
/// [`LbAgent`] adds). Fail action `none`, written out rather than left to
/// the default: a farm that moved or purged flows would let the tuple-reuse
/// case pass without the datapath picking again.
pub fn lb_config(services: &[Service]) -> String {
    let mut farms = String::new();
    let mut vips = String::new();
    for s in services {
        farms += &format!(
            "  {}:\n    algorithm: round-robin\n    failaction: none\n    reals:\n",
            s.name
        );
        for r in &s.reals {
            farms += &format!("      - {{ address: {r}, port: {} }}\n", s.real_port);
        }
        vips += &format!(
            "  {name}: {{ address: {VIP}, port: {port}, protocol: {proto}, serverfarm: {name} }}\n",
            name = s.name,
            port = s.port,
            proto = s.proto.name()
        );
    }
    format!(
        "interfaces: [{LB_CLIENT_IF}, {LB_SERVER_IF}]\nxdp_mode: native\nserverfarms:\n{farms}vips:\n{vips}"
    )
}

/// IPv4 counters of the namespace the calling thread is in
/// (`/proc/thread-self/net/snmp`, the `Ip:` lines), e.g. `FragCreates`,
/// `ReasmOKs`. Call inside [`Netns::run`].
pub fn ip_counters() -> io::Result<Vec<(String, u64)>> {
    let text = fs::read_to_string(Path::new("/proc/thread-self/net/snmp"))?;
    let mut ip = text.lines().filter(|l| l.starts_with("Ip: "));
    let (Some(names), Some(values)) = (ip.next(), ip.next()) else {
        return Err(io::Error::other("no Ip: lines in snmp"));
    };
    Ok(names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
        .collect())
}

/// One counter of [`ip_counters`] in `ns`.
pub fn ip_counter(ns: &Netns, name: &str) -> u64 {
    ns.run(ip_counters)
        .unwrap_or_else(|e| panic!("{}: reading snmp: {e}", ns.name()))
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{}: no Ip counter {name}", ns.name()))
        .1
}

/// What [`spoofed_syns`] did.
#[derive(Clone, Copy, Debug)]
pub struct FloodReport {
    pub sent: u32,
    /// sendto() calls that failed (e.g. ENOBUFS), not retried.
    pub failed: u32,
    pub elapsed: Duration,
}

/// Sends `count` TCP SYNs to `dst`, each from its own source address in
/// [`SPOOF_NET`]/[`SPOOF_PREFIX`] (198.18.0.1, .2, …) and port, through a
/// raw IPv4 socket (IPPROTO_RAW: the header is ours). Paced in bursts so
/// the veth queues on the way do not overflow, and stopped at `within`.
/// Call inside [`Netns::run`] of a namespace whose routes keep the answers
/// inside the topology.
pub fn spoofed_syns(dst: SocketAddrV4, count: u32, within: Duration) -> io::Result<FloodReport> {
    let hosts = (1u32 << (32 - SPOOF_PREFIX)) - 2;
    assert!(count <= hosts, "{count} SYNs, {hosts} spoofed sources");
    // The agent's own raw IPv4 sender (lb_userspace::reset).
    let sock = ResetSender::new()?;
    let start = Instant::now();
    let (mut sent, mut failed) = (0u32, 0u32);
    for i in 0..count {
        if start.elapsed() >= within {
            break;
        }
        let src = Ipv4Addr::from(u32::from(SPOOF_NET) + 1 + i);
        let sport = 1024 + (i % 60_000) as u16;
        let seq = 0x5eed_0000 ^ i.wrapping_mul(2_654_435_761);
        let pkt = tcp_segment(SocketAddrV4::new(src, sport), dst, SYN, seq, 0, 64240);
        match sock.send_raw(&pkt, dst) {
            Ok(()) => sent += 1,
            Err(_) => failed += 1,
        }
        if i % 100 == 99 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(FloodReport {
        sent,
        failed,
        elapsed: start.elapsed(),
    })
}
