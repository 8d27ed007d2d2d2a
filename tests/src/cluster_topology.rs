//! The end-to-end topology for an lb cluster: N active nodes behind a router
//! that spreads flows over them by ECMP, learning the VIPs over BGP.
//! Documentation and benchmark address ranges only.
//!
//! ```text
//! client  eth0 192.0.2.2/24, default via 192.0.2.1
//!    |
//! rtr     eth0 192.0.2.1/24, FRR (zebra + bgpd, AS 65000)
//!         eth1 198.18.11.1/24   eth2 198.18.12.1/24   eth3 198.18.13.1/24 …
//!            |  (p2p veth)         |                     |
//! lbN     eth0 198.18.(10+N).2/24, default via 198.18.(10+N).1, AS 65001
//!         eth1 203.0.113.(250+N)/24
//!            |                     |                     |
//! sw:brs  ports s-lb1, s-lb2, …, to-r1, to-r2, … (no addresses)
//!    |
//! rK      eth0 203.0.113.(10+K)/24, default via every node's eth1 (multipath)
//! ```
//!
//! The router peers with every node's eth0 address. Whatever the nodes
//! announce (VIPs, /32s in 198.51.100.0/24, [`crate::topology::vip`]) zebra
//! installs as one kernel route with a next hop per announcing node; the
//! kernel hashes flows over them by their 4-tuple. The topology configures
//! no VIP and runs no BGP speaker on the nodes: that is the agent's job (it
//! starts BIRD itself).
//!
//! The reals' return path is a multipath default route over the nodes'
//! eth1 addresses; `fib_multipath_use_neigh` skips a node whose ARP entry
//! failed, so a dead node stops getting return traffic once the real
//! noticed.
//!
//! FRR never touches the host's /etc/frr, /var/run/frr or /var/tmp/frr: its
//! config, pid files, zebra socket and vty sockets all live in the router
//! namespace's log directory ([`ClusterTopology::frr_dir`]), its crash-log
//! directory on a tmpfs of its own. Nothing links to the root
//! namespace, so no packet a test sends can leave the topology.

use std::{
    collections::BTreeSet,
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    Spawned, TestHook, TestServer,
    netns::{Netns, veth},
    rig::{ECHO, HTTP, SINK, UDP},
    topology::{MAX_REALS, quiet_sysctls, real_addr, real_name, wait_probes},
    wait_until,
};

pub const ROUTER_AS: u32 = 65000;
/// Every node's AS: the same for all, so their routes are equal and eBGP
/// multipath needs no `as-path multipath-relax`.
pub const NODE_AS: u32 = 65001;
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The router's address facing the client, also its BGP router id.
pub const ROUTER_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Interface names inside each node namespace.
pub const NODE_FRONT_IF: &str = "eth0";
pub const NODE_BACK_IF: &str = "eth1";
/// The bridge in the switch namespace.
pub const BR_SERVER: &str = "brs";
/// Back addresses are 203.0.113.251..=254, so at most this many nodes.
pub const MAX_NODES: usize = 4;
/// The BGP hold time the router offers; keepalives every second.
pub const HOLD_TIME: Duration = Duration::from_secs(3);

const ZEBRA: &str = "/usr/lib/frr/zebra";
const BGPD: &str = "/usr/lib/frr/bgpd";

/// Namespace role of node `i` (0-based): "lb1", "lb2", ….
pub fn node_name(i: usize) -> String {
    check_node(i);
    format!("lb{}", i + 1)
}

/// Node `i`'s address on its eth0, the router's BGP neighbour:
/// 198.18.(11+i).2.
pub fn node_front_addr(i: usize) -> Ipv4Addr {
    check_node(i);
    Ipv4Addr::new(198, 18, 11 + i as u8, 2)
}

/// Node `i`'s address on the server segment (eth1): 203.0.113.(251+i).
pub fn node_back_addr(i: usize) -> Ipv4Addr {
    check_node(i);
    Ipv4Addr::new(203, 0, 113, 251 + i as u8)
}

/// The router's end of node `i`'s link, the node's gateway and BGP
/// neighbour: 198.18.(11+i).1.
pub fn router_addr_for(i: usize) -> Ipv4Addr {
    check_node(i);
    Ipv4Addr::new(198, 18, 11 + i as u8, 1)
}

/// The router's interface facing node `i`: "eth1", "eth2", ….
pub fn router_if(i: usize) -> String {
    check_node(i);
    format!("eth{}", i + 1)
}

/// The switch port (on `brs`) facing node `i`'s eth1: "s-lb1", ….
pub fn sw_node_port(i: usize) -> String {
    format!("s-{}", node_name(i))
}

/// The built topology. Dropping it kills everything inside (FRR too) and
/// removes all its namespaces.
pub struct ClusterTopology {
    /// The reals' `lb-testsrv`s (HTTP, UDP, echo, sink on the rig's ports,
    /// [`crate::rig`]), one per real.
    pub servers: Vec<Spawned>,
    pub client: Netns,
    pub router: Netns,
    pub sw: Netns,
    /// lb1, lb2, … (index 0, 1, …).
    pub nodes: Vec<Netns>,
    pub reals: Vec<Netns>,
    pub client_addr: Ipv4Addr,
    pub real_addrs: Vec<Ipv4Addr>,
    zebra: Spawned,
    bgpd: Spawned,
    frr_dir: PathBuf,
}

impl ClusterTopology {
    /// Builds the topology with `n_nodes` nodes and `n_reals` reals (each
    /// running `testsrv`, i.e. `env!("CARGO_BIN_EXE_lb-testsrv")`), starts
    /// FRR in the router and waits until zebra and bgpd answer on their vty
    /// sockets and every own-address path works ([`Self::wait_ready`]).
    /// Panics with context on any failure; whatever was built so far is
    /// removed by the unwinding drops.
    pub fn new(n_nodes: usize, n_reals: usize, testsrv: &Path) -> ClusterTopology {
        Self::for_hook(n_nodes, n_reals, testsrv, TestHook::Xdp)
    }

    /// [`ClusterTopology::new`] for nodes attached by `hook` (offloads:
    /// hook.rs).
    pub fn for_hook(
        n_nodes: usize,
        n_reals: usize,
        testsrv: &Path,
        hook: TestHook,
    ) -> ClusterTopology {
        assert!((1..=MAX_NODES).contains(&n_nodes), "1..={MAX_NODES} nodes");
        assert!((1..=MAX_REALS).contains(&n_reals), "1..={MAX_REALS} reals");
        let client = Netns::new("client");
        let router = Netns::new("rtr");
        let sw = Netns::new("sw");
        let nodes: Vec<Netns> = (0..n_nodes).map(|i| Netns::new(&node_name(i))).collect();
        let reals: Vec<Netns> = (0..n_reals).map(|i| Netns::new(&real_name(i))).collect();

        // Before any interface exists, so the `default` values reach them.
        let all = || {
            [&client, &router, &sw]
                .into_iter()
                .chain(&nodes)
                .chain(&reals)
        };
        for ns in all() {
            quiet_sysctls(ns);
        }
        router.sysctl("net.ipv4.ip_forward", "1");
        // ECMP by L4 hash: the flows of one client spread over the nodes.
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
        for node in &nodes {
            node.sysctl("net.ipv4.ip_forward", "1");
        }
        for real in &reals {
            real.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
            // Skip a next hop whose neighbour entry failed (a dead node).
            real.sysctl("net.ipv4.fib_multipath_use_neigh", "1");
        }

        // Links: the client and each node on its own veth to the router,
        // the nodes' back sides and the reals on one bridge.
        veth(&client, "eth0", &router, "eth0");
        sw.ip(&["link", "add", BR_SERVER, "type", "bridge", "stp_state", "0"]);
        sw.ip(&[
            "link",
            "set",
            BR_SERVER,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ]);
        for (i, node) in nodes.iter().enumerate() {
            veth(node, NODE_FRONT_IF, &router, &router_if(i));
            veth(node, NODE_BACK_IF, &sw, &sw_node_port(i));
            sw.ip(&["link", "set", &sw_node_port(i), "master", BR_SERVER]);
        }
        for (k, real) in reals.iter().enumerate() {
            let p = format!("to-{}", real_name(k));
            veth(real, "eth0", &sw, &p);
            sw.ip(&["link", "set", &p, "master", BR_SERVER]);
        }
        sw.ip(&["link", "set", BR_SERVER, "up"]);

        // Addresses and routes; the VIPs are the nodes' to announce.
        let cidr = |a: Ipv4Addr| format!("{a}/24");
        client.ip(&["addr", "add", &cidr(CLIENT_ADDR), "dev", "eth0"]);
        client.ip(&[
            "route",
            "add",
            "default",
            "via",
            &ROUTER_CLIENT_ADDR.to_string(),
        ]);
        router.ip(&["addr", "add", &cidr(ROUTER_CLIENT_ADDR), "dev", "eth0"]);
        for (i, node) in nodes.iter().enumerate() {
            router.ip(&[
                "addr",
                "add",
                &cidr(router_addr_for(i)),
                "dev",
                &router_if(i),
            ]);
            node.ip(&[
                "addr",
                "add",
                &cidr(node_front_addr(i)),
                "dev",
                NODE_FRONT_IF,
            ]);
            node.ip(&["addr", "add", &cidr(node_back_addr(i)), "dev", NODE_BACK_IF]);
            add_node_default(node, i);
        }
        let real_addrs: Vec<Ipv4Addr> = (0..n_reals).map(real_addr).collect();
        let backs: Vec<String> = (0..n_nodes)
            .map(|i| node_back_addr(i).to_string())
            .collect();
        let mut default = vec!["route", "add", "default"];
        for b in &backs {
            default.extend(["nexthop", "via", b.as_str()]);
        }
        for (real, addr) in reals.iter().zip(&real_addrs) {
            real.ip(&["addr", "add", &cidr(*addr), "dev", "eth0"]);
            real.ip(&default);
        }

        // rp_filter: effective value is max(all, per-interface); set both so a
        // host default of 1 cannot drop the asymmetric flows ECMP and NAT make.
        for node in &nodes {
            for iface in [NODE_FRONT_IF, NODE_BACK_IF] {
                node.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "0");
            }
        }
        for i in 0..n_nodes {
            router.sysctl(&format!("net.ipv4.conf.{}.rp_filter", router_if(i)), "0");
        }
        for real in &reals {
            real.sysctl("net.ipv4.conf.eth0.rp_filter", "0");
        }

        if hook.xdp_workarounds() {
            // As in `Topology`: full checksums from the endpoints (XDP
            // rewrites would break CHECKSUM_PARTIAL ones), and NAPI (GRO) on
            // the peers of the nodes' interfaces so XDP_TX frames arrive.
            for ns in std::iter::once(&client).chain(&reals) {
                ns.exec(&["ethtool", "-K", "eth0", "tx", "off"]);
            }
            for i in 0..n_nodes {
                router.exec(&["ethtool", "-K", &router_if(i), "gro", "on"]);
                sw.exec(&["ethtool", "-K", &sw_node_port(i), "gro", "on"]);
            }
        }

        let frr_dir = router.log_dir().join("frr");
        let (zebra, bgpd) = start_frr(&router, &frr_dir, n_nodes);

        let servers = reals
            .iter()
            .zip(&real_addrs)
            .enumerate()
            .map(|(k, (real, &a))| {
                TestServer::new(testsrv, &real_name(k))
                    .http(SocketAddr::new(a.into(), HTTP))
                    .udp(SocketAddr::new(a.into(), UDP))
                    .echo(SocketAddr::new(a.into(), ECHO))
                    .sink(SocketAddr::new(a.into(), SINK))
                    .spawn(real)
            })
            .collect();

        let topo = ClusterTopology {
            servers,
            client,
            router,
            sw,
            nodes,
            reals,
            client_addr: CLIENT_ADDR,
            real_addrs,
            zebra,
            bgpd,
            frr_dir,
        };
        topo.wait_ready();
        topo
    }

    /// Where FRR's config, pid files and sockets live (in the router
    /// namespace's log directory, kept when a test panics).
    pub fn frr_dir(&self) -> &Path {
        &self.frr_dir
    }

    /// zebra and bgpd, e.g. for their logs ([`Spawned::report`]).
    pub fn frr(&self) -> [&Spawned; 2] {
        [&self.zebra, &self.bgpd]
    }

    /// Names of every namespace of this topology.
    pub fn names(&self) -> Vec<String> {
        [&self.client, &self.router, &self.sw]
            .into_iter()
            .chain(&self.nodes)
            .chain(&self.reals)
            .map(|ns| ns.name().to_string())
            .collect()
    }

    /// Waits (at most 10 s) until every own-address path works, with no
    /// BGP route needed: the client reaches every node's eth0 through the
    /// router, every node reaches the client, every real reaches every
    /// node's eth1 and back. Each probe is a TCP connect to port 9; a
    /// refusal (RST) proves the path as well as an accept. Also leaves the
    /// neighbour entries resolved. Panics with the failing probes.
    pub fn wait_ready(&self) {
        let mut probes: Vec<(&Netns, Ipv4Addr)> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            probes.push((&self.client, node_front_addr(i)));
            probes.push((node, self.client_addr));
            for (real, &addr) in self.reals.iter().zip(&self.real_addrs) {
                probes.push((real, node_back_addr(i)));
                probes.push((node, addr));
            }
        }
        wait_probes("cluster topology", &probes, Duration::from_secs(10));
    }

    /// The next hops of the router's kernel route for `prefix` (e.g.
    /// "198.51.100.10/32"), as zebra installed it; empty when there is none.
    /// A next hop whose link just lost carrier stays listed (flagged
    /// `linkdown` by the kernel) until zebra replaces the route.
    pub fn router_nexthops(&self, prefix: &str) -> Vec<Ipv4Addr> {
        let out = self.router.ip(&["-j", "route", "show", prefix]);
        let text = String::from_utf8_lossy(&out.stdout);
        parse_nexthops(&text).unwrap_or_else(|e| panic!("ip -j route show {prefix}: {e}: {text}"))
    }

    /// Waits until the router's route for `prefix` has exactly `n` next
    /// hops (0: no route); returns how long that took. Panics with the
    /// route and the BGP state on timeout.
    pub fn wait_nexthops(&self, prefix: &str, n: usize, timeout: Duration) -> Duration {
        let start = Instant::now();
        let ok = wait_until(timeout, Duration::from_millis(20), || {
            self.router_nexthops(prefix).len() == n
        });
        let took = start.elapsed();
        assert!(
            ok,
            "router route {prefix}: wanted {n} next hops within {timeout:?}, has {:?}\n{}",
            self.router_nexthops(prefix),
            self.route_report(prefix)
        );
        took
    }

    /// Waits until the route for `prefix` goes through exactly the front
    /// addresses of `nodes` (0-based); returns how long that took.
    pub fn wait_nexthops_via(&self, prefix: &str, nodes: &[usize], timeout: Duration) -> Duration {
        let want: BTreeSet<Ipv4Addr> = nodes.iter().map(|&i| node_front_addr(i)).collect();
        let start = Instant::now();
        let ok = wait_until(timeout, Duration::from_millis(20), || {
            let have = self.router_nexthops(prefix);
            have.len() == want.len() && have.iter().copied().collect::<BTreeSet<_>>() == want
        });
        let took = start.elapsed();
        assert!(
            ok,
            "router route {prefix}: wanted next hops {want:?} within {timeout:?}, has {:?}\n{}",
            self.router_nexthops(prefix),
            self.route_report(prefix)
        );
        took
    }

    /// Runs one vtysh command against bgpd (or `daemon`), through the
    /// topology's own vty sockets. `Err` carries vtysh's output.
    pub fn vtysh(&self, daemon: &str, cmd: &str) -> Result<String, String> {
        let dir = self.frr_dir.to_string_lossy();
        vtysh(&self.router, &dir, daemon, cmd)
    }

    /// `show bgp summary` (for diagnostics; never panics).
    pub fn bgp_summary(&self) -> String {
        match self.vtysh("bgpd", "show bgp summary") {
            Ok(s) => format!("--- bgp summary ---\n{s}"),
            Err(e) => format!("--- bgp summary unavailable ---\n{e}"),
        }
    }

    /// Everything the router knows about `prefix`, for panic messages: the
    /// BGP summary, bgpd's paths, zebra's route and the kernel's.
    pub fn route_report(&self, prefix: &str) -> String {
        let show = |d: &str, cmd: &str| {
            let out = self.vtysh(d, cmd).unwrap_or_else(|e| e);
            format!("--- {d}: {cmd} ---\n{out}")
        };
        let kernel = self
            .router
            .try_exec(&["ip", "-d", "route", "show", prefix])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| e.to_string());
        [
            self.bgp_summary(),
            show("bgpd", &format!("show bgp ipv4 unicast {prefix}")),
            show("zebra", &format!("show ip route {prefix}")),
            format!("--- kernel: ip -d route show {prefix} ---\n{kernel}"),
        ]
        .join("\n")
    }

    /// How many BGP sessions (IPv4 unicast) are Established now.
    pub fn bgp_established(&self) -> usize {
        let Ok(text) = self.vtysh("bgpd", "show bgp summary json") else {
            return 0;
        };
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        v["ipv4Unicast"]["peers"]
            .as_object()
            .map(|peers| {
                peers
                    .values()
                    .filter(|p| p["state"] == "Established")
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits until `n` sessions are Established; returns how long it took.
    pub fn wait_established(&self, n: usize, timeout: Duration) -> Duration {
        let start = Instant::now();
        let ok = wait_until(timeout, Duration::from_millis(50), || {
            self.bgp_established() == n
        });
        let took = start.elapsed();
        assert!(
            ok,
            "wanted {n} established BGP sessions within {timeout:?}\n{}",
            self.bgp_summary()
        );
        took
    }

    /// Sets node `i`'s eth0 and eth1 down: a dead box, as the router and the
    /// reals see it (carrier lost on the router's port, ARP to its eth1
    /// fails).
    pub fn kill_node_links(&self, i: usize) {
        for iface in [NODE_FRONT_IF, NODE_BACK_IF] {
            self.nodes[i].ip(&["link", "set", iface, "down"]);
        }
    }

    /// Undoes [`Self::kill_node_links`]. The kernel dropped the node's
    /// default route with its link, so it is added again.
    pub fn restore_node_links(&self, i: usize) {
        for iface in [NODE_FRONT_IF, NODE_BACK_IF] {
            self.nodes[i].ip(&["link", "set", iface, "up"]);
        }
        add_node_default(&self.nodes[i], i);
    }
}

fn check_node(i: usize) {
    assert!(
        i < MAX_NODES,
        "node index {i} out of range (max {MAX_NODES} nodes)"
    );
}

fn add_node_default(node: &Netns, i: usize) {
    node.ip(&[
        "route",
        "replace",
        "default",
        "via",
        &router_addr_for(i).to_string(),
    ]);
}

/// Writes zebra's and bgpd's configs into `dir` and starts both in the
/// foreground (so the namespace's drop kills them), every path explicit.
/// Returns once both answer on their vty sockets.
fn start_frr(router: &Netns, dir: &Path, n_nodes: usize) -> (Spawned, Spawned) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let write = |f: &str, body: &str| {
        fs::write(dir.join(f), body).unwrap_or_else(|e| panic!("writing {}: {e}", p(f)))
    };
    // Routes with their next hops inline, not kernel nexthop groups: after
    // a node's link went down and came back, FRR 8.4 left the returning
    // next hop out of the kernel's group while showing it installed.
    write(
        "zebra.conf",
        "hostname rtr\nno zebra nexthop kernel enable\n",
    );
    write("bgpd.conf", &bgpd_conf(n_nodes));
    // vtysh reads vtysh.conf from --config_dir; an empty one keeps it off
    // the host's /etc/frr.
    write("vtysh.conf", "");
    let (zserv, vty) = (p("zserv.api"), dir.to_string_lossy().into_owned());
    let common = |conf: &str, pid: &str| -> Vec<String> {
        #[rustfmt::skip]
        let v = [
            "-f", &p(conf), "-i", &p(pid), "-z", &zserv, "--vty_socket", &vty,
            // Root, but in group frrvty: FRR insists that its user be in
            // the vty group, and root is not (`-g root` exits at once).
            "-u", "root", "-g", "frrvty",
            // No TCP vty port: the Unix sockets in `dir` are enough.
            "-P", "0",
            "--log", "stdout", "--log-level", "info",
        ];
        v.iter().map(|s| s.to_string()).collect()
    };
    // FRR keeps a directory per process under /var/tmp/frr (crash logs),
    // left behind when it is killed. `ip netns exec` gave the daemon a
    // private mount namespace (slave to the host's, so nothing propagates
    // back): a tmpfs on /var/tmp there keeps even that off the host.
    let spawn = |bin: &str, args: Vec<String>| {
        let wrap = "mount -t tmpfs -o size=16m frr-tmp /var/tmp && exec \"$0\" \"$@\"";
        let mut argv = vec!["sh", "-c", wrap, bin];
        argv.extend(args.iter().map(String::as_str));
        router.spawn(&argv)
    };
    let timeout = Duration::from_secs(10);
    let zebra = spawn(ZEBRA, common("zebra.conf", "zebra.pid"));
    // bgpd retries a missing zebra socket, but slowly; start it once zebra
    // serves.
    let up = wait_until(timeout, Duration::from_millis(20), || {
        Path::new(&zserv).exists() && vtysh(router, &vty, "zebra", "show version").is_ok()
    });
    assert!(up, "zebra not up within {timeout:?}\n{}", zebra.report());
    let bgpd = spawn(BGPD, common("bgpd.conf", "bgpd.pid"));
    let up = wait_until(timeout, Duration::from_millis(20), || {
        vtysh(router, &vty, "bgpd", "show bgp summary json").is_ok()
    });
    assert!(
        up,
        "bgpd not up within {timeout:?}\n{}\n{}",
        bgpd.report(),
        zebra.report()
    );
    (zebra, bgpd)
}

/// bgpd's config: every node a neighbour in one peer group, short timers
/// (a node that comes back peers within a second or two), ECMP over all.
fn bgpd_conf(n_nodes: usize) -> String {
    let mut c = format!(
        "hostname rtr\n\
         !\n\
         router bgp {ROUTER_AS}\n \
         bgp router-id {ROUTER_CLIENT_ADDR}\n \
         bgp log-neighbor-changes\n \
         ! Accept and pass on routes without a route-map (eBGP default since 7.4).\n \
         no bgp ebgp-requires-policy\n \
         no bgp default ipv4-unicast\n \
         neighbor NODES peer-group\n \
         neighbor NODES remote-as {NODE_AS}\n \
         neighbor NODES timers 1 {hold}\n \
         neighbor NODES timers connect 1\n",
        hold = HOLD_TIME.as_secs()
    );
    for i in 0..n_nodes {
        c.push_str(&format!(
            " neighbor {} peer-group NODES\n",
            node_front_addr(i)
        ));
    }
    c.push_str(
        " !\n \
         address-family ipv4 unicast\n  \
         neighbor NODES activate\n  \
         maximum-paths 8\n \
         exit-address-family\n\
         !\n",
    );
    c
}

/// `vtysh -d daemon -c cmd` with the sockets and config in `dir`.
fn vtysh(router: &Netns, dir: &str, daemon: &str, cmd: &str) -> Result<String, String> {
    #[rustfmt::skip]
    let args = ["vtysh", "--vty_socket", dir, "--config_dir", dir, "-d", daemon, "-c", cmd];
    match router.try_exec(&args) {
        Ok(out) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// The gateways in `ip -j route show PREFIX`'s output: one route with
/// either a `gateway` (one next hop) or `nexthops` (multipath).
fn parse_nexthops(json: &str) -> Result<Vec<Ipv4Addr>, String> {
    let json = json.trim();
    if json.is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let routes = v.as_array().ok_or("not a JSON array")?;
    let gw = |h: &Value| -> Option<Ipv4Addr> { h["gateway"].as_str()?.parse().ok() };
    let mut hops = Vec::new();
    for r in routes {
        if let Some(g) = gw(r) {
            hops.push(g);
        }
        if let Some(list) = r["nexthops"].as_array() {
            hops.extend(list.iter().filter_map(gw));
        }
    }
    Ok(hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nexthops_single_multi_and_none() {
        assert_eq!(parse_nexthops("\n"), Ok(vec![]));
        assert_eq!(parse_nexthops("[]"), Ok(vec![]));
        let one = r#"[{"dst":"198.51.100.10","gateway":"198.18.11.2","dev":"eth1","protocol":"bgp","metric":20,"flags":[]}]"#;
        assert_eq!(parse_nexthops(one), Ok(vec![node_front_addr(0)]));
        let multi = r#"[{"dst":"198.51.100.10","nhid":21,"protocol":"bgp","metric":20,"flags":[],
            "nexthops":[{"gateway":"198.18.11.2","dev":"eth1","weight":1,"flags":[]},
                        {"gateway":"198.18.13.2","dev":"eth3","weight":1,"flags":[]}]}]"#;
        assert_eq!(
            parse_nexthops(multi),
            Ok(vec![node_front_addr(0), node_front_addr(2)])
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(node_front_addr(2), Ipv4Addr::new(198, 18, 13, 2));
        assert_eq!(router_addr_for(0), Ipv4Addr::new(198, 18, 11, 1));
        assert_eq!(node_back_addr(1), Ipv4Addr::new(203, 0, 113, 252));
        assert_eq!(router_if(2), "eth3");
        assert!(bgpd_conf(3).contains(" neighbor 198.18.13.2 peer-group NODES\n"));
    }
}
