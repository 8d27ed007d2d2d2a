//! The namespace BPF_PROG_TEST_RUN runs in, for the datapath fixtures and
//! the per-packet benchmark: veth c0 (192.0.2.1) towards clients and s0
//! (203.0.113.1) towards reals, permanent neighbours, forwarding on, so
//! `bpf_fib_lookup` resolves next hops as on a real lb host.
use std::net::Ipv4Addr;

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

pub fn real_mac(ip: Ipv4Addr) -> Mac {
    [2, 0, 0, 0, 1, ip.octets()[3]]
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
    let neigh = |ip: Ipv4Addr, mac: Mac, dev: &str| {
        let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        #[rustfmt::skip]
        ns.ip(&["neigh", "replace", &ip.to_string(), "lladdr", &mac.join(":"),
                "dev", dev, "nud", "permanent"]);
    };
    neigh(CLIENT, CLIENT_MAC, "c0");
    for &(ip, mac) in client_side {
        neigh(ip, mac, "c0");
    }
    for r in REALS {
        neigh(r, real_mac(r), "s0");
    }
}
