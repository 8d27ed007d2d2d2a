//! Proves the HA harness itself, with no load balancer: plain kernel routing
//! through whichever lb namespace holds the floating gateways, the failure
//! injections (node down, sync link cut) and namespace cleanup.
//!
//! Needs root; without it the tests fail loudly (CI runs as root, a skip
//! would hide a broken setup).

use std::{process::Command, time::Duration};

use lb_tests::{
    HaTopology, Netns,
    ha_topology::{
        FLOAT_CLIENT, FLOAT_CLIENT_CIDR, FLOAT_SERVER, FLOAT_SERVER_CIDR, LB_CLIENT_IF,
        LB_SERVER_IF, LB_SYNC_IF, link_mac, neigh_lladdr, reachable, sw_client_port,
        sw_server_port, wait_reachable,
    },
    require_root,
};

const T: Duration = Duration::from_secs(5);

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("running ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listed(names: &[String]) -> Vec<String> {
    let list = netns_list();
    names
        .iter()
        .filter(|n| list.lines().any(|l| l.split_whitespace().next() == Some(n)))
        .cloned()
        .collect()
}

fn feature(ns: &Netns, dev: &str, key: &str) -> String {
    let out = ns.exec(&["ethtool", "-k", dev]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("{key} missing in ethtool -k {dev}:\n{text}"))
}

fn sysctl(ns: &Netns, key: &str) -> String {
    let path = std::path::Path::new("/proc/sys").join(key.replace('.', "/"));
    ns.run(|| std::fs::read_to_string(&path))
        .unwrap_or_else(|e| panic!("reading {key} in {}: {e}", ns.name()))
        .trim()
        .to_string()
}

fn has_arping() -> bool {
    Command::new("which")
        .arg("arping")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Puts both floating gateways on lb `to` (removing them from the other) and
/// makes the hosts notice: gratuitous ARP if `arping` exists, else a flush of
/// the client's and the reals' neighbour caches.
fn move_floats(topo: &HaTopology, to: usize) -> &'static str {
    let from = 1 - to;
    for (cidr, iface) in [
        (FLOAT_CLIENT_CIDR, LB_CLIENT_IF),
        (FLOAT_SERVER_CIDR, LB_SERVER_IF),
    ] {
        // Fails if `from` does not hold it (the first move): fine.
        let _ = topo.lbs[from].try_exec(&["ip", "addr", "del", cidr, "dev", iface]);
        topo.lbs[to].ip(&["addr", "add", cidr, "dev", iface]);
    }
    assert_eq!(topo.holds_floating(to), [true, true]);
    assert_eq!(topo.holds_floating(from), [false, false]);
    if has_arping() {
        for (addr, iface) in [(FLOAT_CLIENT, LB_CLIENT_IF), (FLOAT_SERVER, LB_SERVER_IF)] {
            topo.lbs[to].exec(&[
                "timeout",
                "5",
                "arping",
                "-U",
                "-c",
                "2",
                "-I",
                iface,
                &addr.to_string(),
            ]);
        }
        "gratuitous ARP (arping)"
    } else {
        for ns in std::iter::once(&topo.client).chain(&topo.reals) {
            ns.ip(&["neigh", "flush", "all"]);
        }
        "neighbour flush (no arping)"
    }
}

/// Client -> every real and every real -> client work, and the hosts'
/// gateway entries point at lb `via`'s MACs.
fn assert_paths_via(topo: &HaTopology, via: usize) {
    for &addr in &topo.real_addrs {
        assert!(
            wait_reachable(&topo.client, addr, T),
            "client -> {addr} (via lb{})",
            via + 1
        );
    }
    for real in &topo.reals {
        assert!(
            wait_reachable(real, topo.client_addr, T),
            "{} -> client (via lb{})",
            real.name(),
            via + 1
        );
    }
    let lb = &topo.lbs[via];
    assert_eq!(
        neigh_lladdr(&topo.client, FLOAT_CLIENT),
        Some(link_mac(lb, LB_CLIENT_IF)),
        "client's gateway MAC"
    );
    for real in &topo.reals {
        assert_eq!(
            neigh_lladdr(real, FLOAT_SERVER),
            Some(link_mac(lb, LB_SERVER_IF)),
            "{}'s gateway MAC",
            real.name()
        );
    }
}

#[test]
fn ha_topology_routes_via_the_float_holder() {
    require_root();
    let names;
    {
        let topo = HaTopology::new(2);
        names = topo.names();
        assert_eq!(names.len(), 6);
        assert_eq!(listed(&names), names, "all namespaces exist");
        topo.wait_ready();

        // Settings: offloads, arp_accept, forwarding.
        for i in 0..2 {
            for p in [sw_client_port(i), sw_server_port(i)] {
                assert_eq!(feature(&topo.sw, &p, "generic-receive-offload"), "on");
            }
            assert_eq!(sysctl(&topo.lbs[i], "net.ipv4.ip_forward"), "1");
            assert_eq!(topo.holds_floating(i), [false, false]);
        }
        for ns in std::iter::once(&topo.client).chain(&topo.reals) {
            assert_eq!(feature(ns, "eth0", "tx-checksumming"), "off");
            assert_eq!(sysctl(ns, "net.ipv4.conf.eth0.arp_accept"), "1");
            assert_eq!(sysctl(ns, "net.ipv4.conf.all.arp_accept"), "1");
        }
        // No gateway yet: the client reaches no real.
        assert!(!reachable(&topo.client, topo.real_addrs[0]));

        // (a) lb1 active.
        let how = move_floats(&topo, 0);
        println!("floats -> lb1 ({how})");
        assert_paths_via(&topo, 0);

        // (b) failover to lb2.
        let how = move_floats(&topo, 1);
        println!("floats -> lb2 ({how})");
        assert_paths_via(&topo, 1);
        // The paths really go through lb2: they survive lb1's death.
        topo.node_down(0);
        for &addr in &topo.real_addrs {
            assert!(reachable(&topo.client, addr), "client -> {addr}, lb1 down");
        }
        topo.node_up(0);
        topo.wait_ready();
    }
    assert_eq!(listed(&names), Vec::<String>::new(), "namespaces left");
}

#[test]
fn ha_topology_node_down_and_sync_cut() {
    require_root();
    let names;
    {
        let topo = HaTopology::new(2);
        names = topo.names();
        topo.wait_ready();
        move_floats(&topo, 1);
        assert_paths_via(&topo, 1);
        let (sync1, sync2) = (HaTopology::lb_sync_addr(0), HaTopology::lb_sync_addr(1));
        let lb2_client = HaTopology::lb_client_addr(1);
        let lb2_server = HaTopology::lb_server_addr(1);
        let r1 = topo.real_addrs[0];

        // The active box dies: nothing goes through or to it.
        topo.node_down(1);
        assert!(!reachable(&topo.client, r1), "client -> r1, lb2 down");
        assert!(!reachable(&topo.reals[0], topo.client_addr), "r1 -> client");
        assert!(!reachable(&topo.client, lb2_client), "client -> lb2");
        assert!(!reachable(&topo.reals[0], lb2_server), "r1 -> lb2");
        assert!(!reachable(&topo.lbs[0], sync2), "lb1 -> lb2 sync");
        assert!(
            link(&topo.lbs[0], LB_SYNC_IF).contains("NO-CARRIER"),
            "lb1's eth2 lost carrier"
        );
        // lb1 is still reachable on its own addresses.
        assert!(reachable(&topo.client, HaTopology::lb_client_addr(0)));
        assert!(reachable(&topo.reals[0], HaTopology::lb_server_addr(0)));
        topo.node_up(1);
        topo.wait_ready();
        assert_paths_via(&topo, 1);

        // Sync link cut: only the sync path breaks, both ends lose carrier.
        topo.cut_sync();
        assert!(!reachable(&topo.lbs[0], sync2), "lb1 -> lb2 sync, cut");
        assert!(!reachable(&topo.lbs[1], sync1), "lb2 -> lb1 sync, cut");
        assert!(link(&topo.lbs[1], LB_SYNC_IF).contains("NO-CARRIER"));
        assert!(reachable(&topo.client, r1), "client -> r1 unaffected");
        assert!(
            reachable(&topo.lbs[0], lb2_client),
            "lb1 -> lb2 client side"
        );
        assert!(
            reachable(&topo.lbs[0], lb2_server),
            "lb1 -> lb2 server side"
        );
        topo.heal_sync();
        assert!(
            wait_reachable(&topo.lbs[0], sync2, T),
            "lb1 -> lb2 sync, healed"
        );
        assert!(
            wait_reachable(&topo.lbs[1], sync1, T),
            "lb2 -> lb1 sync, healed"
        );
        assert!(!link(&topo.lbs[1], LB_SYNC_IF).contains("NO-CARRIER"));
        topo.wait_ready();
    }
    assert_eq!(listed(&names), Vec::<String>::new(), "namespaces left");
}

fn link(ns: &Netns, iface: &str) -> String {
    String::from_utf8_lossy(&ns.ip(&["link", "show", "dev", iface]).stdout).into_owned()
}
