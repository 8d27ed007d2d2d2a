//! The namespace BPF_PROG_TEST_RUN runs in, for the datapath fixtures and
//! the per-packet benchmark: veth c0 (192.0.2.1, 2001:db8:c::1) towards
//! clients and s0 (203.0.113.1, 2001:db8:5::1) towards reals, permanent
//! neighbours, forwarding on for both families, so `bpf_fib_lookup`
//! resolves next hops as on a real lb host.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::Netns;

pub type Mac = [u8; 6];

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const CLIENT_MAC: Mac = [2, 0, 0, 0, 0, 0x02];
/// c0's and s0's MACs: the source of every frame the program forwards.
pub const LB_C_MAC: Mac = [2, 0, 0, 0, 0, 0x01];
pub const LB_S_MAC: Mac = [2, 0, 0, 0, 1, 0x01];
pub const REALS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(203, 0, 113, 11),
    Ipv4Addr::new(203, 0, 113, 12),
    Ipv4Addr::new(203, 0, 113, 13),
];

pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 2);
pub const REALS6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x11),
    Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x12),
    Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x13),
];

pub fn real_mac(ip: Ipv4Addr) -> Mac {
    [2, 0, 0, 0, 1, ip.octets()[3]]
}

/// An IPv6 real's MAC: a byte apart from its IPv4 twin's.
pub fn real6_mac(ip: Ipv6Addr) -> Mac {
    [2, 0, 0, 0, 6, ip.octets()[15]]
}

/// Builds the interfaces and neighbours in `ns`: the client and the reals,
/// plus `client_side` hosts reachable through c0.
pub fn setup(ns: &Netns, client_side: &[(Ipv4Addr, Mac)]) {
    for (a, b, mac, addr) in [
        ("c0", "c1", "02:00:00:00:00:01", "192.0.2.1/24"),
        ("s0", "s1", "02:00:00:00:01:01", "203.0.113.1/24"),
    ] {
        ns.ip(&[
            "link", "add", a, "address", mac, "type", "veth", "peer", "name", b,
        ]);
        ns.ip(&["addr", "add", addr, "dev", a]);
        ns.ip(&["link", "set", a, "up"]);
        ns.ip(&["link", "set", b, "up"]);
    }
    ns.sysctl("net.ipv4.conf.all.forwarding", "1");
    ns.sysctl("net.ipv6.conf.all.forwarding", "1");
    let neigh = |ip: IpAddr, mac: Mac, dev: &str| {
        let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        #[rustfmt::skip]
        ns.ip(&["neigh", "replace", &ip.to_string(), "lladdr", &mac.join(":"),
                "dev", dev, "nud", "permanent"]);
    };
    neigh(CLIENT.into(), CLIENT_MAC, "c0");
    for &(ip, mac) in client_side {
        neigh(ip.into(), mac, "c0");
    }
    for r in REALS {
        neigh(r.into(), real_mac(r), "s0");
    }
    for args in ipv6_setup() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.ip(&args);
    }
}

/// The `ip` commands that give c0 and s0 their IPv6 addresses and
/// neighbours. Apart from `setup` because an MTU below IPv6's minimum
/// (1280) removes a device's IPv6 addresses: a fixture that narrowed one
/// runs these again.
pub fn ipv6_setup() -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for (dev, addr) in [("c0", "2001:db8:c::1/64"), ("s0", "2001:db8:5::1/64")] {
        // nodad: usable at once, not after duplicate address detection.
        cmds.push(vec!["-6", "addr", "replace", addr, "dev", dev, "nodad"]);
    }
    let mut neighbours = vec![(IpAddr::from(CLIENT6), CLIENT_MAC, "c0")];
    neighbours.extend(REALS6.map(|r| (IpAddr::from(r), real6_mac(r), "s0")));
    let mut cmds: Vec<Vec<String>> = cmds
        .into_iter()
        .map(|c| c.into_iter().map(String::from).collect())
        .collect();
    for (ip, mac, dev) in neighbours {
        let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        cmds.push(
            [
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &mac.join(":"),
            ]
            .into_iter()
            .chain(["dev", dev, "nud", "permanent"])
            .map(String::from)
            .collect(),
        );
    }
    cmds
}
