//! The end-to-end topology for stateful failover: two lb nodes on shared
//! client and server segments, with a direct sync link between them.
//! Documentation and benchmark address ranges only.
//!
//! ```text
//! client  eth0 192.0.2.2/24, default via 192.0.2.1 (floating)
//!    |
//! sw:brc  ports to-client, c-lb1, c-lb2 (no addresses)
//!    |              |
//! lb1 eth0 192.0.2.251/24      lb2 eth0 192.0.2.252/24
//!     eth2 198.18.9.1/24 <---> eth2 198.18.9.2/24   (sync link, direct veth)
//!     eth1 203.0.113.251/24    lb2 eth1 203.0.113.252/24
//!    |              |
//! sw:brs  ports s-lb1, s-lb2, to-r1, to-r2, … (no addresses)
//!    |
//! rN      eth0 203.0.113.(10+N)/24, default via 203.0.113.1 (floating)
//! ```
//!
//! The floating gateways [`FLOAT_CLIENT`] and [`FLOAT_SERVER`] are *not*
//! configured here: the lb agent adds them (on eth0 and eth1) on the node
//! that becomes active and announces them with gratuitous ARP. The floating
//! address moves, the MAC behind it changes (each node answers with its own
//! MAC), so the client's and the reals' ARP caches must be updated: they
//! accept gratuitous ARP (`arp_accept=1`) and the bridges keep their default
//! MAC learning.
//!
//! VIPs are in 198.51.100.0/24 ([`crate::topology::vip`]): the client reaches
//! them by its default route. Nothing links to the root namespace, so no
//! packet a test sends can leave the topology.
//!
//! IPv4 only unless [`HaTopology::enable_ipv6`] adds the IPv6 twin: client
//! 2001:db8:c::2/64 via the floating 2001:db8:c::1, lbs 2001:db8:c::251/252
//! and 2001:db8:5::251/252, reals 2001:db8:5::11, ::12, ... (/64) via the floating
//! 2001:db8:5::1; the neighbours learn the floating gateways' moves from
//! unsolicited neighbour advertisements.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use crate::TestHook;
use crate::{
    netns::{Netns, veth},
    topology::{MAX_REALS, probe, quiet_sysctls, real_addr, real_name, wait_probes},
};

pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The client's gateway, held by whichever lb is active (on its eth0).
pub const FLOAT_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The reals' gateway, held by whichever lb is active (on its eth1).
pub const FLOAT_SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// [`FLOAT_CLIENT`] with its prefix, as `ip addr add` takes it.
pub const FLOAT_CLIENT_CIDR: &str = "192.0.2.1/24";
/// [`FLOAT_SERVER`] with its prefix, as `ip addr add` takes it.
pub const FLOAT_SERVER_CIDR: &str = "203.0.113.1/24";
/// The IPv6 twins (see [`HaTopology::enable_ipv6`]).
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 2);
pub const FLOAT6_CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);
pub const FLOAT6_SERVER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 1);
pub const FLOAT6_CLIENT_CIDR: &str = "2001:db8:c::1/64";
pub const FLOAT6_SERVER_CIDR: &str = "2001:db8:5::1/64";
/// Interface names inside each lb namespace.
pub const LB_CLIENT_IF: &str = "eth0";
pub const LB_SERVER_IF: &str = "eth1";
pub const LB_SYNC_IF: &str = "eth2";
/// The bridges in the switch namespace.
pub const BR_CLIENT: &str = "brc";
pub const BR_SERVER: &str = "brs";
/// The switch port facing the client.
pub const SW_CLIENT_PORT: &str = "to-client";

/// Namespace role of lb `i` (0-based): "lb1", "lb2".
pub fn lb_name(i: usize) -> String {
    check_lb(i);
    format!("lb{}", i + 1)
}

/// The switch port (on `brc`) facing lb `i`'s eth0: "c-lb1", "c-lb2".
pub fn sw_client_port(i: usize) -> String {
    format!("c-{}", lb_name(i))
}

/// The switch port (on `brs`) facing lb `i`'s eth1: "s-lb1", "s-lb2".
pub fn sw_server_port(i: usize) -> String {
    format!("s-{}", lb_name(i))
}

/// One TCP connect to `to`:9 from inside `from` (at most 300 ms); true if
/// accepted or refused, i.e. the path works both ways.
pub fn reachable(from: &Netns, to: Ipv4Addr) -> bool {
    from.run(|| probe(to)).is_ok()
}

/// Probes `to` from `from` until it is reachable or `timeout` passes.
pub fn wait_reachable(from: &Netns, to: Ipv4Addr, timeout: Duration) -> bool {
    crate::wait_until(timeout, Duration::from_millis(50), || reachable(from, to))
}

/// The link-layer address `ns` has cached for `addr` (`ip neigh`), if any
/// entry with one exists (FAILED/INCOMPLETE entries have none).
pub fn neigh_lladdr(ns: &Netns, addr: impl Into<IpAddr>) -> Option<String> {
    let addr: IpAddr = addr.into();
    let out = ns.ip(&["neigh", "show", &addr.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        it.by_ref().find(|w| *w == "lladdr")?;
        it.next().map(str::to_string)
    })
}

/// The MAC address of `iface` inside `ns`.
pub fn link_mac(ns: &Netns, iface: &str) -> String {
    let out = ns.ip(&["-br", "link", "show", "dev", iface]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // "eth0@if5  UP  aa:bb:cc:dd:ee:ff <BROADCAST,…>"
    text.split_whitespace()
        .nth(2)
        .filter(|m| m.len() == 17 && m.bytes().filter(|&b| b == b':').count() == 5)
        .unwrap_or_else(|| panic!("no MAC for {iface} in {}: {text:?}", ns.name()))
        .to_string()
}

/// The built topology. Dropping it kills everything inside and removes all
/// its namespaces.
pub struct HaTopology {
    pub client: Netns,
    /// lb1 and lb2 (index 0 and 1).
    pub lbs: [Netns; 2],
    pub sw: Netns,
    pub reals: Vec<Netns>,
    pub client_addr: Ipv4Addr,
    pub real_addrs: Vec<Ipv4Addr>,
}

impl HaTopology {
    /// Builds the topology with `n_reals` reals. Panics with context on any
    /// failure; whatever was built so far is removed by the unwinding drops.
    pub fn new(n_reals: usize) -> HaTopology {
        Self::for_hook(n_reals, TestHook::Xdp)
    }

    /// [`HaTopology::new`] for lbs attached by `hook` (offloads: hook.rs).
    pub fn for_hook(n_reals: usize, hook: TestHook) -> HaTopology {
        assert!((1..=MAX_REALS).contains(&n_reals), "1..={MAX_REALS} reals");
        let client = Netns::new("client");
        let lbs = [Netns::new(&lb_name(0)), Netns::new(&lb_name(1))];
        let sw = Netns::new("sw");
        let reals: Vec<Netns> = (0..n_reals).map(|i| Netns::new(&real_name(i))).collect();

        // Before any interface exists, so the `default` values reach them.
        let hosts = || std::iter::once(&client).chain(&reals);
        for ns in hosts().chain(&lbs).chain([&sw]) {
            quiet_sysctls(ns);
        }
        // A gratuitous ARP from the newly active lb must also create a
        // neighbour entry where none exists (it always updates an existing
        // one). Effective value: max(all, interface).
        for ns in hosts() {
            for scope in ["all", "default"] {
                ns.sysctl(&format!("net.ipv4.conf.{scope}.arp_accept"), "1");
            }
        }
        for lb in &lbs {
            lb.sysctl("net.ipv4.ip_forward", "1");
        }

        // Switch: two bridges, STP off, ports forward at once.
        for br in [BR_CLIENT, BR_SERVER] {
            sw.ip(&["link", "add", br, "type", "bridge", "stp_state", "0"]);
            sw.ip(&["link", "set", br, "type", "bridge", "forward_delay", "0"]);
        }
        let port = |port: &str, br: &str| sw.ip(&["link", "set", port, "master", br]);
        veth(&client, "eth0", &sw, SW_CLIENT_PORT);
        port(SW_CLIENT_PORT, BR_CLIENT);
        for (i, lb) in lbs.iter().enumerate() {
            veth(lb, LB_CLIENT_IF, &sw, &sw_client_port(i));
            port(&sw_client_port(i), BR_CLIENT);
            veth(lb, LB_SERVER_IF, &sw, &sw_server_port(i));
            port(&sw_server_port(i), BR_SERVER);
        }
        for (i, real) in reals.iter().enumerate() {
            let p = format!("to-{}", real_name(i));
            veth(real, "eth0", &sw, &p);
            port(&p, BR_SERVER);
        }
        for br in [BR_CLIENT, BR_SERVER] {
            sw.ip(&["link", "set", br, "up"]);
        }
        // The sync link: lb1.eth2 <-> lb2.eth2, no switch in between.
        veth(&lbs[0], LB_SYNC_IF, &lbs[1], LB_SYNC_IF);

        // Addresses and routes; the floating gateways are the agent's.
        let cidr = |a: Ipv4Addr| format!("{a}/24");
        client.ip(&["addr", "add", &cidr(CLIENT_ADDR), "dev", "eth0"]);
        client.ip(&["route", "add", "default", "via", &FLOAT_CLIENT.to_string()]);
        for (i, lb) in lbs.iter().enumerate() {
            for (addr, iface) in [
                (Self::lb_client_addr(i), LB_CLIENT_IF),
                (Self::lb_server_addr(i), LB_SERVER_IF),
                (Self::lb_sync_addr(i), LB_SYNC_IF),
            ] {
                lb.ip(&["addr", "add", &cidr(addr), "dev", iface]);
            }
        }
        let real_addrs: Vec<Ipv4Addr> = (0..n_reals).map(real_addr).collect();
        for (real, addr) in reals.iter().zip(&real_addrs) {
            real.ip(&["addr", "add", &cidr(*addr), "dev", "eth0"]);
            real.ip(&["route", "add", "default", "via", &FLOAT_SERVER.to_string()]);
        }

        // rp_filter: effective value is max(all, per-interface); set both so a
        // host default of 1 cannot drop the asymmetric flows NAT and failover
        // produce. arp_accept likewise on the hosts' eth0.
        for lb in &lbs {
            for iface in [LB_CLIENT_IF, LB_SERVER_IF, LB_SYNC_IF] {
                lb.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "0");
            }
        }
        for real in &reals {
            real.sysctl("net.ipv4.conf.eth0.rp_filter", "0");
        }
        for ns in hosts() {
            ns.sysctl("net.ipv4.conf.eth0.arp_accept", "1");
        }

        if hook.xdp_workarounds() {
            // Socket senders on veth hand out CHECKSUM_PARTIAL packets; once the
            // XDP program rewrites them the receiver would see bad checksums.
            // Real NICs deliver full checksums, so make the endpoints do the same.
            for ns in hosts() {
                ns.exec(&["ethtool", "-K", "eth0", "tx", "off"]);
            }
            // A frame XDP_TX/XDP_REDIRECTed out of a veth is only received if
            // the peer has NAPI; GRO on the peer enables it (no XDP needed
            // there). The lbs' eth0/eth1 peers are the switch ports. The client's
            // eth0 as in `Topology` (harmless here: the bridge forwards to it).
            // The sync link carries only the agents' own socket traffic.
            for i in 0..2 {
                for p in [sw_client_port(i), sw_server_port(i)] {
                    sw.exec(&["ethtool", "-K", &p, "gro", "on"]);
                }
            }
            client.exec(&["ethtool", "-K", "eth0", "gro", "on"]);
        }

        HaTopology {
            client,
            lbs,
            sw,
            reals,
            client_addr: CLIENT_ADDR,
            real_addrs,
        }
    }

    /// Adds the IPv6 twin of the topology (module doc) and waits (at most
    /// 10 s) until its own-address paths work, as [`HaTopology::wait_ready`]
    /// does for IPv4. Duplicate address detection is off: the addresses are
    /// unique by construction, and would otherwise stay tentative a while.
    pub fn enable_ipv6(&self) {
        let hosts = std::iter::once(&self.client).chain(&self.reals);
        let lb_ifs = [LB_CLIENT_IF, LB_SERVER_IF, LB_SYNC_IF];
        let all = hosts
            .map(|ns| (ns, &["eth0"][..]))
            .chain(self.lbs.iter().map(|lb| (lb, &lb_ifs[..])));
        for (ns, ifaces) in all {
            for scope in ["all", "default"].iter().chain(ifaces) {
                ns.sysctl(&format!("net.ipv6.conf.{scope}.accept_dad"), "0");
                ns.sysctl(&format!("net.ipv6.conf.{scope}.disable_ipv6"), "0");
            }
        }
        for lb in &self.lbs {
            lb.sysctl("net.ipv6.conf.all.forwarding", "1");
        }
        let cidr = |a: Ipv6Addr| format!("{a}/64");
        self.client
            .ip(&["-6", "addr", "add", &cidr(CLIENT6), "dev", "eth0"]);
        self.client.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &FLOAT6_CLIENT.to_string(),
        ]);
        for (i, lb) in self.lbs.iter().enumerate() {
            lb.ip(&[
                "-6",
                "addr",
                "add",
                &cidr(Self::lb_client_addr6(i)),
                "dev",
                LB_CLIENT_IF,
            ]);
            lb.ip(&[
                "-6",
                "addr",
                "add",
                &cidr(Self::lb_server_addr6(i)),
                "dev",
                LB_SERVER_IF,
            ]);
        }
        for (r, real) in self.reals.iter().enumerate() {
            real.ip(&[
                "-6",
                "addr",
                "add",
                &cidr(Self::real_addr6(r)),
                "dev",
                "eth0",
            ]);
            real.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &FLOAT6_SERVER.to_string(),
            ]);
        }
        let mut probes: Vec<(&Netns, Ipv6Addr)> = Vec::new();
        for (i, lb) in self.lbs.iter().enumerate() {
            probes.push((lb, CLIENT6));
            for (r, real) in self.reals.iter().enumerate() {
                probes.push((lb, Self::real_addr6(r)));
                probes.push((real, Self::lb_server_addr6(i)));
            }
        }
        wait_probes("HA topology (IPv6)", &probes, Duration::from_secs(10));
    }

    /// Real `r`'s IPv6 address: 2001:db8:5::11, ::12, ...
    pub fn real_addr6(r: usize) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x11 + r as u16)
    }

    /// Own IPv6 addresses of lb `i`: 2001:db8:c::251 / ::252 on eth0,
    /// 2001:db8:5::251 / ::252 on eth1.
    pub fn lb_client_addr6(i: usize) -> Ipv6Addr {
        check_lb(i);
        Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0x251 + i as u16)
    }

    pub fn lb_server_addr6(i: usize) -> Ipv6Addr {
        check_lb(i);
        Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x251 + i as u16)
    }

    /// Own client-side address of lb `i` (0 or 1), on its eth0:
    /// 192.0.2.251, 192.0.2.252.
    pub fn lb_client_addr(i: usize) -> Ipv4Addr {
        check_lb(i);
        Ipv4Addr::new(192, 0, 2, 251 + i as u8)
    }

    /// Own server-side address of lb `i`, on its eth1: 203.0.113.251, .252.
    pub fn lb_server_addr(i: usize) -> Ipv4Addr {
        check_lb(i);
        Ipv4Addr::new(203, 0, 113, 251 + i as u8)
    }

    /// Sync-link address of lb `i`, on its eth2: 198.18.9.1, 198.18.9.2.
    pub fn lb_sync_addr(i: usize) -> Ipv4Addr {
        check_lb(i);
        Ipv4Addr::new(198, 18, 9, 1 + i as u8)
    }

    /// Which floating addresses lb `i` holds now: `[client side, server side]`.
    pub fn holds_floating(&self, i: usize) -> [bool; 2] {
        check_lb(i);
        let has = |iface: &str, cidr: &str| {
            let out = self.lbs[i].ip(&["-o", "-4", "addr", "show", "dev", iface]);
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .any(|w| w == cidr)
        };
        [
            has(LB_CLIENT_IF, FLOAT_CLIENT_CIDR),
            has(LB_SERVER_IF, FLOAT_SERVER_CIDR),
        ]
    }

    /// The box dies: eth0, eth1 and eth2 of lb `i` go down (its switch
    /// ports and the other node's eth2 lose carrier). Addresses, floating
    /// ones included, stay configured; processes inside keep running.
    pub fn node_down(&self, i: usize) {
        self.set_links(i, &[LB_CLIENT_IF, LB_SERVER_IF, LB_SYNC_IF], "down");
    }

    /// Undoes [`HaTopology::node_down`]. The node's neighbour caches start
    /// empty; [`HaTopology::wait_ready`] fills them again.
    pub fn node_up(&self, i: usize) {
        self.set_links(i, &[LB_CLIENT_IF, LB_SERVER_IF, LB_SYNC_IF], "up");
    }

    /// Cuts the sync link: lb1's eth2 goes down, so both ends lose carrier
    /// while the client and server sides stay up (split-brain setup).
    pub fn cut_sync(&self) {
        self.set_links(0, &[LB_SYNC_IF], "down");
    }

    /// Undoes [`HaTopology::cut_sync`].
    pub fn heal_sync(&self) {
        self.set_links(0, &[LB_SYNC_IF], "up");
    }

    fn set_links(&self, i: usize, ifaces: &[&str], state: &str) {
        check_lb(i);
        for iface in ifaces {
            self.lbs[i].ip(&["link", "set", iface, state]);
        }
    }

    /// Names of every namespace of this topology.
    pub fn names(&self) -> Vec<String> {
        [&self.client]
            .into_iter()
            .chain(&self.lbs)
            .chain([&self.sw])
            .chain(&self.reals)
            .map(|ns| ns.name().to_string())
            .collect()
    }

    /// Waits (at most 10 s) until every own-address path works, with no
    /// floating address needed: each lb reaches the client and every real,
    /// the lbs reach each other over the sync link, every real reaches both
    /// lbs' server-side addresses. Each probe is a TCP connect to port 9; a
    /// refusal (RST) proves the path as well as an accept. Also leaves the
    /// lbs' neighbour entries for the client and the reals resolved, which
    /// `bpf_fib_lookup` needs. Both nodes and the sync link must be up.
    /// Panics with the failing probes on timeout.
    pub fn wait_ready(&self) {
        self.wait_ready_within(Duration::from_secs(10));
    }

    pub fn wait_ready_within(&self, timeout: Duration) {
        let mut probes: Vec<(&Netns, Ipv4Addr)> = Vec::new();
        for (i, lb) in self.lbs.iter().enumerate() {
            probes.push((lb, self.client_addr));
            probes.push((lb, Self::lb_sync_addr(1 - i)));
            for (real, &addr) in self.reals.iter().zip(&self.real_addrs) {
                probes.push((lb, addr));
                probes.push((real, Self::lb_server_addr(i)));
            }
        }
        wait_probes("HA topology", &probes, timeout);
    }
}

fn check_lb(i: usize) {
    assert!(i < 2, "lb index {i} out of range (0 or 1)");
}
