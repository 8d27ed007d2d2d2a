//! The routed topology of the edge-case tests (tests/tests/edges.rs), the
//! two balancers they compare (nftables DNAT as the reference, and lb), and
//! the spoofed-SYN sender. Documentation and benchmark ranges only.
//!
//! Dual stack: every link carries the IPv4 plan and the same plan in IPv6
//! (2001:db8::/32), with the same routes and narrow hops.
//!
//! ```text
//! client  eth0 192.0.2.2/25        2001:db8:c::2/64
//!         default via 192.0.2.1 / 2001:db8:c::1, blackhole 198.18.0.0/15
//!    |
//! r1      eth0 192.0.2.1/25        2001:db8:c::1/64  (their routes: mtu 1280)
//!         eth1 192.0.2.129/30      2001:db8:1::1/64
//!         default via 192.0.2.130 / 2001:db8:1::2, 198.18.0.0/15 via 192.0.2.2
//!    |
//! lb      eth0 192.0.2.130/30      2001:db8:1::2/64
//!         eth1 203.0.113.129/30    2001:db8:3::1/64  (XDP in lb mode)
//!         192.0.2.0/25, 198.18.0.0/15 via 192.0.2.129; 2001:db8:c::/64 via 2001:db8:1::1
//!         203.0.113.0/25 via 203.0.113.130;            2001:db8:5::/64 via 2001:db8:3::2
//!    |
//! r3      eth0 203.0.113.130/30    2001:db8:3::2/64
//!         br0 203.0.113.1/25       2001:db8:5::1/64  (their routes: mtu 1280)
//!         default via 203.0.113.129 / 2001:db8:3::1; br0's ports to-s1, to-s2, …
//!    |
//! sN      eth0 203.0.113.(10+N)/25 2001:db8:5::(10+N)/64 (hex)
//!         default via 203.0.113.1 / 2001:db8:5::1
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
//! pmtu case fails unless the endpoints learn exactly that 1280. In IPv6
//! the routers answer with "packet too big" (they never fragment), and
//! 1280, IPv6's minimum MTU, is a path MTU every host accepts.
//!
//! The VIPs (198.51.100.10, 2001:db8:100::10) are routed by r1 to the lb,
//! which has no route for them: nftables rewrites them in prerouting, lb's
//! XDP program claims them. Spoofed SYN sources come from 198.18.0.0/15:
//! every answer to them is routed back through r1 into the client
//! namespace, whose blackhole route drops it. Nothing links to the root
//! namespace, so no packet a test sends can leave the topology.

use std::{
    fmt, fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use lb_userspace::reset::{ResetSender, SYN, tcp_segment};

use crate::{
    LbAgent, Spawned, TestServer,
    netns::{Netns, veth},
    topology::{quiet_ipv6, quiet_sysctls, wait_probes},
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

/// The IPv6 plan, link by link the IPv4 one.
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 2);
pub const R1_CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);
pub const R1_LB_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const LB_R1_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const LB_R3_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1);
pub const R3_LB_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 2);
pub const R3_SERVER_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 1);
pub const CLIENT_NET6: &str = "2001:db8:c::/64";
pub const SERVER_NET6: &str = "2001:db8:5::/64";
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);

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

/// IPv6 address of server `i` (0-based): 2001:db8:5::11, ::12, … (hex, so
/// the text ends like the IPv4 address).
pub fn server_addr6(i: usize) -> Ipv6Addr {
    assert!(i < MAX_SERVERS, "server index {i} out of range");
    Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x11 + i as u16)
}

/// Name of server `i` (0-based), its namespace role and what its
/// `lb-testsrv` answers with: "s1", "s2", ….
pub fn server_name(i: usize) -> String {
    format!("s{}", i + 1)
}

/// An IP family of the dual-stack topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn vip(self) -> IpAddr {
        self.plan().vip
    }

    pub fn client_addr(self) -> IpAddr {
        self.plan().client
    }

    /// Address of server `i` in this family.
    pub fn server_addr(self, i: usize) -> IpAddr {
        match self {
            Family::V4 => server_addr(i).into(),
            Family::V6 => server_addr6(i).into(),
        }
    }

    /// The family's address plan.
    pub fn plan(self) -> Plan {
        match self {
            Family::V4 => Plan {
                client: CLIENT_ADDR.into(),
                r1_client: R1_CLIENT_ADDR.into(),
                r1_lb: R1_LB_ADDR.into(),
                lb_r1: LB_R1_ADDR.into(),
                lb_r3: LB_R3_ADDR.into(),
                r3_lb: R3_LB_ADDR.into(),
                r3_server: R3_SERVER_ADDR.into(),
                client_net: CLIENT_NET,
                server_net: SERVER_NET,
                vip: VIP.into(),
                lan_len: 25,
                link_len: 30,
            },
            Family::V6 => Plan {
                client: CLIENT_ADDR6.into(),
                r1_client: R1_CLIENT_ADDR6.into(),
                r1_lb: R1_LB_ADDR6.into(),
                lb_r1: LB_R1_ADDR6.into(),
                lb_r3: LB_R3_ADDR6.into(),
                r3_lb: R3_LB_ADDR6.into(),
                r3_server: R3_SERVER_ADDR6.into(),
                client_net: CLIENT_NET6,
                server_net: SERVER_NET6,
                vip: VIP6.into(),
                lan_len: 64,
                link_len: 64,
            },
        }
    }

    /// `ip`'s family option: explicit, so `default via …` and `route show`
    /// never depend on iproute2 guessing the family.
    fn ip_flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// One family's addresses: the links of the diagram, in that family.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub client: IpAddr,
    /// The client's gateway, on r1.
    pub r1_client: IpAddr,
    pub r1_lb: IpAddr,
    pub lb_r1: IpAddr,
    pub lb_r3: IpAddr,
    pub r3_lb: IpAddr,
    /// The servers' gateway, on r3's bridge.
    pub r3_server: IpAddr,
    pub client_net: &'static str,
    pub server_net: &'static str,
    pub vip: IpAddr,
    /// Prefix lengths of the client and server LANs, and of the links
    /// between the routers and the lb.
    pub lan_len: u8,
    pub link_len: u8,
}

/// The built topology. Dropping it kills everything inside and removes all
/// its namespaces.
pub struct EdgeNet {
    pub client: Netns,
    pub r1: Netns,
    pub lb: Netns,
    pub r3: Netns,
    pub servers: Vec<Netns>,
    /// The `lb-testsrv` processes, once started.
    pub testsrvs: Vec<Spawned>,
}

impl EdgeNet {
    /// Builds the topology with `n_servers` servers and waits until it
    /// routes, in both families. Panics with context on any failure;
    /// whatever was built so far is removed by the unwinding drops.
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
            quiet_ipv6(ns);
        }
        for ns in [&r1, &lb, &r3] {
            ns.sysctl("net.ipv4.ip_forward", "1");
            for scope in ["all", "default"] {
                ns.sysctl(&format!("net.ipv6.conf.{scope}.forwarding"), "1");
            }
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

        for family in Family::BOTH {
            address_family(family, &client, &r1, &lb, &r3, &servers);
        }

        // IPv4 only: where the answers to spoofed sources go.
        let spoof_net = format!("{SPOOF_NET}/{SPOOF_PREFIX}");
        // Answers to spoofed sources end here. The client does not forward
        // either, so nothing it receives for them goes anywhere.
        client.ip(&["route", "add", "blackhole", &spoof_net]);
        #[rustfmt::skip]
        r1.ip(&["route", "add", &spoof_net, "via", &CLIENT_ADDR.to_string(), "dev", "eth0"]);
        lb.ip(&["route", "add", &spoof_net, "via", &R1_LB_ADDR.to_string()]);

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
            testsrvs: Vec::new(),
        };
        net.wait_ready(Duration::from_secs(10));
        net
    }

    /// Waits until routing works both ways in both families: the lb reaches
    /// the client and every server, the client reaches every server through
    /// the lb, and every server reaches the client. Also leaves the lb's
    /// neighbour entries (r1, r3) resolved in both families, which
    /// `bpf_fib_lookup` needs.
    pub fn wait_ready(&self, timeout: Duration) {
        let mut probes: Vec<(&Netns, IpAddr)> = Vec::new();
        for family in Family::BOTH {
            probes.push((&self.lb, family.client_addr()));
            for (i, server) in self.servers.iter().enumerate() {
                let a = family.server_addr(i);
                probes.push((&self.lb, a));
                probes.push((&self.client, a));
                probes.push((server, family.client_addr()));
            }
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

    /// `ip route flush cache` everywhere, both families: forgets every
    /// learned path MTU (the kernel's next-hop exceptions), so a run starts
    /// from the routes.
    pub fn flush_route_caches(&self) {
        for ns in self.all() {
            for family in Family::BOTH {
                ns.ip(&[family.ip_flag(), "route", "flush", "cache"]);
            }
        }
    }

    /// Starts `lb-testsrv` (`exe`) on every server with every service, on
    /// its IPv4 and its IPv6 address: http [`HTTP`], udp [`UDP`], echo
    /// [`ECHO`], sink [`SINK`], source [`SOURCE`]. Each answers with its
    /// name, "s1", "s2", ….
    pub fn start_servers(&mut self, exe: &str) {
        for i in 0..self.servers.len() {
            let mut srv = TestServer::new(exe, &server_name(i));
            for family in Family::BOTH {
                let at = |port| SocketAddr::new(family.server_addr(i), port);
                srv = srv
                    .http(at(HTTP))
                    .udp(at(UDP))
                    .echo(at(ECHO))
                    .sink(at(SINK))
                    .source(at(SOURCE));
            }
            let srv = srv.spawn(&self.servers[i]);
            self.testsrvs.push(srv);
        }
    }

    /// `ip route get DST` in `ns`, as text.
    pub fn route_get(ns: &Netns, dst: impl Into<IpAddr>) -> String {
        let dst = dst.into();
        String::from_utf8_lossy(&ns.ip(&["route", "get", &dst.to_string()]).stdout).into_owned()
    }
}

/// One family's addresses and routes on the built links (the diagram in
/// the module doc), the narrow hops included.
fn address_family(
    family: Family,
    client: &Netns,
    r1: &Netns,
    lb: &Netns,
    r3: &Netns,
    servers: &[Netns],
) {
    let p = family.plan();
    let flag = family.ip_flag();
    let addr = |ns: &Netns, a: IpAddr, len: u8, dev: &str| {
        let cidr = format!("{a}/{len}");
        let mut args = vec![flag, "addr", "add", &cidr, "dev", dev];
        // Usable at once: not tentative until DAD is done (IPv4 has no DAD).
        if family == Family::V6 {
            args.push("nodad");
        }
        ns.ip(&args);
    };
    let route = |ns: &Netns, args: &[&str]| {
        let mut full = vec![flag, "route", "add"];
        full.extend_from_slice(args);
        ns.ip(&full);
    };
    let via = |ns: &Netns, dst: &str, gw: IpAddr| route(ns, &[dst, "via", &gw.to_string()]);

    addr(client, p.client, p.lan_len, "eth0");
    via(client, "default", p.r1_client);

    addr(r1, p.r1_client, p.lan_len, "eth0");
    addr(r1, p.r1_lb, p.link_len, "eth1");
    // The narrow hop towards the clients.
    narrow_route(family, r1, p.client_net, "eth0", p.r1_client);
    via(r1, "default", p.lb_r1);

    addr(lb, p.lb_r1, p.link_len, LB_CLIENT_IF);
    addr(lb, p.lb_r3, p.link_len, LB_SERVER_IF);
    // No default route and none for the VIP: a VIP packet the lb hands to
    // its kernel is unroutable, instead of looping back to r1.
    via(lb, p.client_net, p.r1_lb);
    via(lb, p.server_net, p.r3_lb);

    addr(r3, p.r3_lb, p.link_len, "eth0");
    addr(r3, p.r3_server, p.lan_len, "br0");
    // The narrow hop towards the servers.
    narrow_route(family, r3, p.server_net, "br0", p.r3_server);
    via(r3, "default", p.lb_r3);

    for (i, server) in servers.iter().enumerate() {
        addr(server, family.server_addr(i), p.lan_len, "eth0");
        via(server, "default", p.r3_server);
    }
}

/// Replaces the kernel's own connected route to `net` on `dev` with the
/// same route carrying an MTU metric of [`NARROW_MTU`], and checks that
/// exactly that route is left. The replacement must match the kernel's
/// route in every key, or `replace` adds a second route beside it: IPv4's
/// has scope link and `src`, IPv6's has metric 256 (`ip -6 route add`
/// defaults to 1024).
fn narrow_route(family: Family, ns: &Netns, net: &str, dev: &str, src: IpAddr) {
    let mtu = NARROW_MTU.to_string();
    let src = src.to_string();
    let mut args = vec![family.ip_flag(), "route", "replace", net, "dev", dev];
    args.extend_from_slice(&["proto", "kernel"]);
    match family {
        Family::V4 => args.extend_from_slice(&["scope", "link", "src", src.as_str()]),
        Family::V6 => args.extend_from_slice(&["metric", "256"]),
    }
    args.extend_from_slice(&["mtu", mtu.as_str()]);
    ns.ip(&args);
    let out = ns.ip(&[family.ip_flag(), "route", "show", net]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown.lines().count() == 1 && shown.contains(&format!("mtu {NARROW_MTU}")),
        "{}: the route to {net} is not one route with mtu {NARROW_MTU}: {shown}",
        ns.name()
    );
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

/// One virtual service on the VIP of its reals' family ([`VIP`] or
/// [`VIP6`]: a VIP and its farm are one family): a farm of the same name,
/// round-robin over `reals`, each on `real_port`.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: &'static str,
    pub proto: Proto,
    pub port: u16,
    pub real_port: u16,
    pub reals: Vec<IpAddr>,
}

impl Service {
    /// The family of the reals, which all share it.
    pub fn family(&self) -> Family {
        let family = |a: &IpAddr| if a.is_ipv4() { Family::V4 } else { Family::V6 };
        let first = self
            .reals
            .first()
            .unwrap_or_else(|| panic!("service {}: no reals", self.name));
        let f = family(first);
        assert!(
            self.reals.iter().all(|r| family(r) == f),
            "service {}: reals of both families: {:?}",
            self.name,
            self.reals
        );
        f
    }

    pub fn vip(&self) -> IpAddr {
        self.family().vip()
    }
}

/// The balancer of one run: an nftables ruleset or an `lb` agent.
pub enum Balancer {
    Nft {
        services: Vec<Service>,
        /// (service, real) pairs taken out of the rules.
        disabled: Vec<(&'static str, IpAddr)>,
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
    pub fn disable_real(&mut self, net: &EdgeNet, service: &Service, real: IpAddr) {
        match self {
            Balancer::Lb(agent) => {
                let at = SocketAddr::new(real, service.real_port).to_string();
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

    /// Writes the rules of every service and replaces the lb namespace's
    /// ruleset with them: IPv4 services in `table ip edges`, IPv6 ones in
    /// `table ip6 edges`.
    fn write_nft(&self, net: &EdgeNet) {
        let Balancer::Nft { services, disabled } = self else {
            return;
        };
        // Declare, delete and define both tables in one file: one
        // transaction, so the rules are replaced atomically, also the first
        // time.
        let mut text = String::new();
        for (family, table) in [(Family::V4, "ip"), (Family::V6, "ip6")] {
            let rules: String = services
                .iter()
                .filter(|s| s.family() == family)
                .map(|s| nft_rule(s, disabled))
                .collect();
            text += &format!(
                "table {table} edges\ndelete table {table} edges\ntable {table} edges {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{rules}  }}\n}}\n"
            );
        }
        let path = net.lb.log_dir().join("rules.nft");
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        net.lb
            .exec(&["nft", "-f", path.to_str().expect("utf-8 path")]);
    }
}

/// The DNAT rule of `s` over its reals not in `disabled`: one real as
/// `ADDR:PORT` (`[ADDR]:PORT` in IPv6), several through a round-robin
/// `numgen` map whose values are plain addresses in either family.
fn nft_rule(s: &Service, disabled: &[(&'static str, IpAddr)]) -> String {
    let live: Vec<IpAddr> = s
        .reals
        .iter()
        .copied()
        .filter(|r| !disabled.contains(&(s.name, *r)))
        .collect();
    let to = match live.as_slice() {
        [] => panic!("service {}: every real is disabled", s.name),
        [one] => SocketAddr::new(*one, s.real_port).to_string(),
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
    let daddr = match s.family() {
        Family::V4 => "ip daddr",
        Family::V6 => "ip6 daddr",
    };
    format!(
        "    {daddr} {vip} {proto} dport {port} dnat to {to}\n",
        vip = s.vip(),
        proto = s.proto.name(),
        port = s.port
    )
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
            "  {name}: {{ address: {vip}, port: {port}, protocol: {proto}, serverfarm: {name} }}\n",
            name = s.name,
            vip = s.vip(),
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

/// The fragments `ns` made and the datagrams it reassembled, of `family`
/// (/proc/net/snmp's Ip: FragCreates and ReasmOKs, or snmp6's Ip6 ones).
pub fn frag_counters(ns: &Netns, family: Family) -> (u64, u64) {
    match family {
        Family::V4 => (ip_counter(ns, "FragCreates"), ip_counter(ns, "ReasmOKs")),
        Family::V6 => (
            ip6_counter(ns, "Ip6FragCreates"),
            ip6_counter(ns, "Ip6ReasmOKs"),
        ),
    }
}

/// One counter of /proc/net/snmp6 in `ns` (lines of a name and a value).
pub fn ip6_counter(ns: &Netns, name: &str) -> u64 {
    let text = ns
        .run(|| fs::read_to_string(Path::new("/proc/thread-self/net/snmp6")))
        .unwrap_or_else(|e| panic!("{}: reading snmp6: {e}", ns.name()));
    text.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(char::is_whitespace)?;
            (n == name).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("{}: no snmp6 counter {name}", ns.name()))
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
