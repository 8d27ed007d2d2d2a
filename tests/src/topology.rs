//! The standard end-to-end topology: routed two-arm NAT, documentation
//! address ranges only.
//!
//! ```text
//! client  eth0 192.0.2.2/24, default via 192.0.2.1
//!    |
//! lb      eth0 192.0.2.1/24 (client side), eth1 203.0.113.1/24 (server side)
//!    |
//! sw      br0 with ports to-lb, to-r1, to-r2, … (no addresses)
//!    |
//! rN      eth0 203.0.113.(10+N)/24, default via 203.0.113.1
//! ```
//!
//! VIPs are in 198.51.100.0/24: the client reaches them by its default route
//! through the lb, which owns no VIP address (the XDP program claims them).
//!
//! [`Topology::dual_stack`] adds IPv6 on the same links, mirroring the plan:
//! client 2001:db8:c::2/64 (default via 2001:db8:c::1, the lb's eth0), lb
//! eth1 2001:db8:5::1/64, real N 2001:db8:5::(10+N), VIPs in
//! 2001:db8:100::/64. Otherwise IPv6 is off in every namespace.
//! Nothing in the topology links to the root namespace, so no packet a test
//! sends can leave it.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::TestHook;
use crate::netns::{Netns, veth};

pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const LB_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const LB_SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const LB_CLIENT_IF: &str = "eth0";
pub const LB_SERVER_IF: &str = "eth1";
/// The switch port facing the lb's server side (its veth peer).
pub const SW_LB_PORT: &str = "to-lb";
/// Reals are .11, .12, …; at most this many fit the scheme.
pub const MAX_REALS: usize = 200;

/// Address of VIP number `host` in 198.51.100.0/24.
pub fn vip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, host)
}

/// Address of real `i` (0-based): 203.0.113.(11 + i).
pub fn real_addr(i: usize) -> Ipv4Addr {
    assert!(i < MAX_REALS, "real index {i} out of range");
    Ipv4Addr::new(203, 0, 113, 11 + i as u8)
}

pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 2);
pub const LB_CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);
pub const LB_SERVER_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 1);

/// IPv6 VIP number `host` in 2001:db8:100::/64 ([`Topology::dual_stack`]).
pub fn vip6(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, host)
}

/// IPv6 address of real `i` (0-based): 2001:db8:5::(0x11 + i), the same
/// last digits as its IPv4 address's last byte in hex.
pub fn real_addr6(i: usize) -> Ipv6Addr {
    assert!(i < MAX_REALS, "real index {i} out of range");
    Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x11 + i as u16)
}

/// Name of real `i` (0-based), also its namespace role: "r1", "r2", ….
pub fn real_name(i: usize) -> String {
    format!("r{}", i + 1)
}

/// The built topology. Dropping it kills everything inside and removes all
/// its namespaces.
pub struct Topology {
    pub client: Netns,
    pub lb: Netns,
    pub sw: Netns,
    pub reals: Vec<Netns>,
    pub client_addr: Ipv4Addr,
    /// The client's gateway, on the lb's client-side interface.
    pub lb_client_addr: Ipv4Addr,
    /// The reals' gateway, on the lb's server-side interface.
    pub lb_server_addr: Ipv4Addr,
    pub real_addrs: Vec<Ipv4Addr>,
    /// The reals' IPv6 addresses ([`Topology::dual_stack`]; empty otherwise).
    pub real_addrs6: Vec<Ipv6Addr>,
    /// "eth0" in the lb namespace.
    pub lb_client_if: &'static str,
    /// "eth1" in the lb namespace.
    pub lb_server_if: &'static str,
}

impl Topology {
    /// Builds the topology with `n_reals` reals. Panics with context on any
    /// failure; whatever was built so far is removed by the unwinding drops.
    pub fn new(n_reals: usize) -> Topology {
        Self::for_hook(n_reals, TestHook::Xdp)
    }

    /// [`Topology::new`] for an lb attached by `hook` (offloads: hook.rs).
    pub fn for_hook(n_reals: usize, hook: TestHook) -> Topology {
        Self::build(n_reals, hook, false)
    }

    /// [`Topology::for_hook`] with IPv6 beside IPv4 (module doc).
    pub fn dual_stack(n_reals: usize, hook: TestHook) -> Topology {
        Self::build(n_reals, hook, true)
    }

    fn build(n_reals: usize, hook: TestHook, v6: bool) -> Topology {
        assert!((1..=MAX_REALS).contains(&n_reals), "1..={MAX_REALS} reals");
        let client = Netns::new("client");
        let lb = Netns::new("lb");
        let sw = Netns::new("sw");
        let reals: Vec<Netns> = (0..n_reals).map(|i| Netns::new(&real_name(i))).collect();

        // Before any interface exists, so the `default` values reach them.
        for ns in [&client, &lb, &sw].into_iter().chain(&reals) {
            quiet_sysctls(ns);
            if v6 {
                quiet_ipv6(ns);
            }
        }
        lb.sysctl("net.ipv4.ip_forward", "1");
        if v6 {
            lb.sysctl("net.ipv6.conf.all.forwarding", "1");
        }

        // Links.
        veth(&client, "eth0", &lb, LB_CLIENT_IF);
        veth(&lb, LB_SERVER_IF, &sw, SW_LB_PORT);
        sw.ip(&["link", "add", "br0", "type", "bridge", "stp_state", "0"]);
        sw.ip(&["link", "set", "br0", "type", "bridge", "forward_delay", "0"]);
        sw.ip(&["link", "set", SW_LB_PORT, "master", "br0"]);
        for (i, real) in reals.iter().enumerate() {
            let port = format!("to-{}", real_name(i));
            veth(real, "eth0", &sw, &port);
            sw.ip(&["link", "set", &port, "master", "br0"]);
        }
        sw.ip(&["link", "set", "br0", "up"]);

        // Addresses and routes.
        let cidr = |a: Ipv4Addr| format!("{a}/24");
        client.ip(&["addr", "add", &cidr(CLIENT_ADDR), "dev", "eth0"]);
        client.ip(&[
            "route",
            "add",
            "default",
            "via",
            &LB_CLIENT_ADDR.to_string(),
        ]);
        lb.ip(&["addr", "add", &cidr(LB_CLIENT_ADDR), "dev", LB_CLIENT_IF]);
        lb.ip(&["addr", "add", &cidr(LB_SERVER_ADDR), "dev", LB_SERVER_IF]);
        let real_addrs: Vec<Ipv4Addr> = (0..n_reals).map(real_addr).collect();
        for (real, addr) in reals.iter().zip(&real_addrs) {
            real.ip(&["addr", "add", &cidr(*addr), "dev", "eth0"]);
            real.ip(&[
                "route",
                "add",
                "default",
                "via",
                &LB_SERVER_ADDR.to_string(),
            ]);
        }

        let real_addrs6: Vec<Ipv6Addr> = if v6 {
            (0..n_reals).map(real_addr6).collect()
        } else {
            Vec::new()
        };
        if v6 {
            let addr6 = |ns: &Netns, a: Ipv6Addr, dev: &str| {
                // nodad: usable at once, and no probes crossing the lb.
                ns.ip(&["-6", "addr", "add", &format!("{a}/64"), "dev", dev, "nodad"]);
            };
            addr6(&client, CLIENT_ADDR6, "eth0");
            client.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &LB_CLIENT_ADDR6.to_string(),
            ]);
            addr6(&lb, LB_CLIENT_ADDR6, LB_CLIENT_IF);
            addr6(&lb, LB_SERVER_ADDR6, LB_SERVER_IF);
            for (real, &a) in reals.iter().zip(&real_addrs6) {
                addr6(real, a, "eth0");
                real.ip(&[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &LB_SERVER_ADDR6.to_string(),
                ]);
            }
        }

        // rp_filter: effective value is max(all, per-interface); set both so a
        // host default of 1 cannot drop the asymmetric flows NAT produces.
        for iface in [LB_CLIENT_IF, LB_SERVER_IF] {
            lb.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "0");
        }
        for real in &reals {
            real.sysctl("net.ipv4.conf.eth0.rp_filter", "0");
        }

        if hook.xdp_workarounds() {
            // Socket senders on veth hand out CHECKSUM_PARTIAL packets; once the
            // XDP program rewrites them the receiver would see bad checksums.
            // Real NICs deliver full checksums, so make the endpoints do the same.
            client.exec(&["ethtool", "-K", "eth0", "tx", "off"]);
            for real in &reals {
                real.exec(&["ethtool", "-K", "eth0", "tx", "off"]);
            }
            // A frame XDP_TX/XDP_REDIRECTed out of a veth is only received if
            // the peer has NAPI; GRO on the peer enables it (no XDP needed there).
            client.exec(&["ethtool", "-K", "eth0", "gro", "on"]);
            sw.exec(&["ethtool", "-K", SW_LB_PORT, "gro", "on"]);
        }

        Topology {
            client,
            lb,
            sw,
            reals,
            client_addr: CLIENT_ADDR,
            lb_client_addr: LB_CLIENT_ADDR,
            lb_server_addr: LB_SERVER_ADDR,
            real_addrs,
            real_addrs6,
            lb_client_if: LB_CLIENT_IF,
            lb_server_if: LB_SERVER_IF,
        }
    }

    /// Names of every namespace of this topology.
    pub fn names(&self) -> Vec<String> {
        [&self.client, &self.lb, &self.sw]
            .into_iter()
            .chain(&self.reals)
            .map(|ns| ns.name().to_string())
            .collect()
    }

    /// Waits (at most 10 s) until routing works both ways: the lb reaches
    /// the client and every real, the client reaches every real through the
    /// lb, and every real reaches the client. Each probe is a TCP connect to
    /// port 9 inside the topology; a refusal (RST) proves the path as well as
    /// an accept. Also leaves the lb's neighbour entries resolved, which
    /// `bpf_fib_lookup` needs. Panics with the failing probes on timeout.
    pub fn wait_ready(&self) {
        self.wait_ready_within(Duration::from_secs(10));
    }

    pub fn wait_ready_within(&self, timeout: Duration) {
        let mut probes: Vec<(&Netns, IpAddr)> = vec![(&self.lb, self.client_addr.into())];
        for (real, &addr) in self.reals.iter().zip(&self.real_addrs) {
            probes.push((&self.lb, addr.into()));
            probes.push((&self.client, addr.into()));
            probes.push((real, self.client_addr.into()));
        }
        if !self.real_addrs6.is_empty() {
            probes.push((&self.lb, CLIENT_ADDR6.into()));
        }
        for (real, &addr) in self.reals.iter().zip(&self.real_addrs6) {
            probes.push((&self.lb, addr.into()));
            probes.push((&self.client, addr.into()));
            probes.push((real, CLIENT_ADDR6.into()));
        }
        wait_probes("topology", &probes, timeout);
    }
}

/// Repeats every `(from, to)` probe until all pass or `timeout` runs out;
/// panics with the failing ones, naming the `what` that is not ready.
pub(crate) fn wait_probes<A: Copy + Into<IpAddr> + Send + Sync>(
    what: &str,
    probes: &[(&Netns, A)],
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let mut failed = Vec::new();
    // Bounded by the deadline and by a count (each round takes >= 50 ms).
    for _ in 0..1000 {
        failed.clear();
        for (ns, addr) in probes {
            if let Err(e) = ns.run(|| probe(*addr)) {
                failed.push(format!("{} -> {}: {e}", ns.name(), probe_addr(*addr)));
            }
        }
        if failed.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        failed.is_empty(),
        "{what} not ready after {timeout:?}:\n{}",
        failed.join("\n")
    );
}

/// One TCP connect; reachable if it is accepted or refused.
pub(crate) fn probe(addr: impl Into<IpAddr>) -> io::Result<()> {
    match TcpStream::connect_timeout(&probe_addr(addr), Duration::from_millis(300)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(e),
    }
}

/// Where [`probe`] connects: port 9 of `addr`.
fn probe_addr(addr: impl Into<IpAddr>) -> SocketAddr {
    SocketAddr::new(addr.into(), 9)
}

/// Sysctls set in every namespace before its interfaces exist.
pub(crate) fn quiet_sysctls(ns: &Netns) {
    for scope in ["all", "default"] {
        ns.sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0");
        // No IPv6 at all: router solicitations, MLD reports and DAD probes
        // would otherwise cross the lb and show up in XDP counters and flow
        // tables. The topologies are IPv4-only unless IPv6 is turned back
        // on (`quiet_ipv6`, `HaTopology::enable_ipv6`).
        ns.sysctl(&format!("net.ipv6.conf.{scope}.disable_ipv6"), "1");
    }
}

/// IPv6 on, without what it does by itself: no router solicitations or
/// address autoconfiguration, no duplicate address detection (addresses go
/// on with `nodad`). Before any interface exists, as `quiet_sysctls`.
pub(crate) fn quiet_ipv6(ns: &Netns) {
    for scope in ["all", "default"] {
        for (key, value) in [
            ("disable_ipv6", "0"),
            ("accept_ra", "0"),
            ("autoconf", "0"),
            ("accept_dad", "0"),
            ("router_solicitations", "0"),
        ] {
            ns.sysctl(&format!("net.ipv6.conf.{scope}.{key}"), value);
        }
    }
}
