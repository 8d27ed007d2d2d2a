//! Two `lb` agents in HA on the failover topology ([`HaTopology`]), with
//! three `lb-testsrv` reals: the setup shared by the failover tests
//! (tests/tests/ha.rs) and the failover benchmark (src/bench/failover.rs).
//!
//! Node 1 (priority 200) starts first and becomes active; node 2 (priority
//! 100) joins as standby and takes a bulk copy. VIPs on 198.51.100.10: TCP
//! echo ([`ECHO`]), TCP sink ([`SINK`]) and UDP ([`UDP`], the reals answer
//! `<name>:<payload>`), each on a farm of the three reals.
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lb_userspace::api::{HaStatus, NodeRole};

use crate::{
    EchoConn, LbAgent, Spawned, TestHook, TestServer,
    ha_topology::{FLOAT_CLIENT, FLOAT_CLIENT_CIDR, FLOAT_SERVER, FLOAT_SERVER_CIDR, HaTopology},
    ha_topology::{FLOAT6_CLIENT, FLOAT6_CLIENT_CIDR, FLOAT6_SERVER, FLOAT6_SERVER_CIDR},
    ha_topology::{link_mac, neigh_lladdr},
    require_root,
    rig::{ECHO, SINK, UDP},
    topology::real_name,
    wait_until,
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const SYNC_PORT: u16 = 7400;
/// The shared HA key both nodes read from their `key_file`.
pub const KEY: &[u8] = b"lb-ha-test-key-0123456789abcdef0123456789";

pub fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.into(), port)
}

/// The IPv6 echo VIP of a dual-stack pair ([`HaPair::dual_stack`]).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x10);

pub fn vip6(port: u16) -> SocketAddr {
    SocketAddr::new(VIP6.into(), port)
}

pub struct HaPair {
    pub lbs: Vec<LbAgent>,
    pub servers: Vec<Spawned>,
    pub topo: HaTopology,
}

/// Node `i`'s config (0-based), heartbeat 100 ms.
pub fn config(i: usize, key: &Path, preempt: bool) -> String {
    config_with(i, key, preempt, false)
}

/// [`config`], with `ipv6`: an IPv6 echo VIP ([`VIP6`]) on the reals' IPv6
/// addresses, and the IPv6 floating gateways.
pub fn config_with(i: usize, key: &Path, preempt: bool, ipv6: bool) -> String {
    let (farm6, vip6, floating6) = if ipv6 {
        let reals: String = (0..3)
            .map(|r| {
                let a = HaTopology::real_addr6(r);
                format!("      - {{ address: \"{a}\", port: {ECHO} }}\n")
            })
            .collect();
        (
            format!("  echo6:\n    reals:\n{reals}"),
            format!(
                "  echo6: {{ address: \"{VIP6}\", port: {ECHO}, serverfarm: echo6, timeouts: {{ fin: 1s }} }}\n"
            ),
            format!(
                "    - {{ address: \"{FLOAT6_CLIENT_CIDR}\", interface: eth0 }}\n    - {{ address: \"{FLOAT6_SERVER_CIDR}\", interface: eth1 }}\n"
            ),
        )
    } else {
        Default::default()
    };
    let reals = |port: u16| -> String {
        (0..3)
            .map(|r| {
                format!(
                    "      - {{ address: 203.0.113.{}, port: {port} }}\n",
                    11 + r
                )
            })
            .collect()
    };
    let me = HaTopology::lb_sync_addr(i);
    let peer = HaTopology::lb_sync_addr(1 - i);
    format!(
        "interfaces: [eth0, eth1]
xdp_mode: native
serverfarms:
  echo:
    reals:
{echo}  sink:
    reals:
{sink}  udp:
    reals:
{udp}{farm6}vips:
  echo: {{ address: {VIP}, port: {ECHO}, serverfarm: echo, timeouts: {{ fin: 1s }} }}
  sink: {{ address: {VIP}, port: {SINK}, serverfarm: sink }}
  udp: {{ address: {VIP}, port: {UDP}, protocol: udp, serverfarm: udp }}
{vip6}ha:
  node_id: {id}
  priority: {prio}
  preempt: {preempt}
  listen: {me}:{SYNC_PORT}
  peer: {peer}:{SYNC_PORT}
  key_file: {key}
  heartbeat: 100ms
  floating_ips:
    - {{ address: {FLOAT_CLIENT_CIDR}, interface: eth0 }}
    - {{ address: {FLOAT_SERVER_CIDR}, interface: eth1 }}
{floating6}",
        echo = reals(ECHO),
        sink = reals(SINK),
        udp = reals(UDP),
        id = i + 1,
        prio = 200 - 100 * i,
        key = key.display(),
    )
}

/// `lb ha status --json` of an agent.
pub fn ha(lb: &LbAgent) -> HaStatus {
    lb.ha_status()
}

pub fn role(lb: &LbAgent) -> NodeRole {
    ha(lb).role
}

/// (client, vip, real) of every flow in an agent's table.
pub fn flow_set(lb: &LbAgent) -> BTreeSet<(String, String, String)> {
    lb.flows(&[])
        .into_iter()
        .map(|f| (f.client, f.vip, f.real))
        .collect()
}

impl HaPair {
    /// Both nodes up, node 1 active, node 2 standby with a complete copy;
    /// flow tables of 65,536 entries.
    pub fn new(preempt: bool, testsrv: &Path) -> HaPair {
        Self::sized(preempt, testsrv, 65536)
    }

    /// [`HaPair::new`] with flow tables of `flow_table_size` entries.
    pub fn sized(preempt: bool, testsrv: &Path, flow_table_size: u32) -> HaPair {
        Self::with_hook(preempt, testsrv, flow_table_size, TestHook::Xdp)
    }

    /// [`HaPair::sized`] with both lbs attached by `hook`.
    pub fn with_hook(
        preempt: bool,
        testsrv: &Path,
        flow_table_size: u32,
        hook: TestHook,
    ) -> HaPair {
        Self::build(preempt, testsrv, flow_table_size, hook, false)
    }

    /// [`HaPair::new`] on a dual-stack topology (`HaTopology::enable_ipv6`):
    /// also an IPv6 echo VIP ([`vip6`]) and the IPv6 floating gateways.
    pub fn dual_stack(testsrv: &Path) -> HaPair {
        let pair = Self::build(false, testsrv, 65536, TestHook::Xdp, true);
        // Node 1 holds the IPv6 gateways: the client and every real resolve
        // them now, so each has an entry a later advertisement must move
        // (an unsolicited one only updates entries, by default).
        let mut probes = vec![(&pair.topo.client, FLOAT6_CLIENT)];
        probes.extend(pair.topo.reals.iter().map(|r| (r, FLOAT6_SERVER)));
        crate::topology::wait_probes("IPv6 gateways", &probes, Duration::from_secs(10));
        pair
    }

    fn build(
        preempt: bool,
        testsrv: &Path,
        flow_table_size: u32,
        hook: TestHook,
        ipv6: bool,
    ) -> HaPair {
        require_root();
        let topo = HaTopology::for_hook(3, hook);
        topo.wait_ready();
        if ipv6 {
            topo.enable_ipv6();
        }
        let exe = PathBuf::from(testsrv);
        let servers = (0..3)
            .map(|r| {
                let a = topo.real_addrs[r];
                let server = TestServer::new(&exe, &real_name(r))
                    .echo(SocketAddr::new(a.into(), ECHO))
                    .sink(SocketAddr::new(a.into(), SINK))
                    .udp(SocketAddr::new(a.into(), UDP));
                let server = if ipv6 {
                    server.echo(SocketAddr::new(HaTopology::real_addr6(r).into(), ECHO))
                } else {
                    server
                };
                server.spawn(&topo.reals[r])
            })
            .collect();
        let mut lbs = Vec::new();
        for i in 0..2 {
            let key = topo.lbs[i].log_dir().join("ha.key");
            std::fs::create_dir_all(topo.lbs[i].log_dir()).expect("log dir");
            std::fs::write(&key, KEY).expect("key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            let lb = LbAgent::start_sized(
                &topo.lbs[i],
                &hook.apply(&config_with(i, &key, preempt, ipv6)),
                flow_table_size,
            );
            if i == 0 {
                assert!(
                    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
                        role(&lb) == NodeRole::Active
                    }),
                    "node 1 alone did not become active: {:?}\n{}",
                    ha(&lb),
                    lb.proc.report()
                );
            }
            lbs.push(lb);
        }
        let pair = HaPair { lbs, servers, topo };
        pair.wait_standby_synced(1, Duration::from_secs(10));
        pair
    }

    /// Waits until node `i` is a standby with a complete bulk copy.
    pub fn wait_standby_synced(&self, i: usize, timeout: Duration) {
        let lb = &self.lbs[i];
        assert!(
            wait_until(timeout, Duration::from_millis(50), || {
                let s = ha(lb);
                s.role == NodeRole::Standby && s.bulk_synced
            }),
            "node {} did not become a synced standby: {:?}\n{}",
            i + 1,
            ha(lb),
            lb.proc.report()
        );
    }

    /// `n` established connections to the echo VIP, each checked once.
    pub fn idle_conns(&self, n: usize) -> Vec<EchoConn> {
        self.topo
            .client
            .run(|| crate::client::echo_conns(vip(ECHO), n))
    }

    /// The client's gateway and real 1's resolve to node `i`'s MACs.
    pub fn assert_gateways_at(&self, i: usize) {
        let want_c = link_mac(&self.topo.lbs[i], "eth0");
        let want_s = link_mac(&self.topo.lbs[i], "eth1");
        let ok = wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
            neigh_lladdr(&self.topo.client, FLOAT_CLIENT).as_deref() == Some(want_c.as_str())
                && neigh_lladdr(&self.topo.reals[0], FLOAT_SERVER).as_deref()
                    == Some(want_s.as_str())
        });
        assert!(
            ok,
            "gateways not at node {}: client has {:?} (want {want_c}), r1 has {:?} (want {want_s})",
            i + 1,
            neigh_lladdr(&self.topo.client, FLOAT_CLIENT),
            neigh_lladdr(&self.topo.reals[0], FLOAT_SERVER),
        );
        assert_eq!(self.topo.holds_floating(i), [true, true]);
    }

    /// The client's IPv6 gateway and real 1's resolve to node `i`'s MACs:
    /// the unsolicited neighbour advertisements of [`HaPair::dual_stack`]'s
    /// IPv6 floating gateways reached them.
    pub fn assert_gateways6_at(&self, i: usize) {
        let want_c = link_mac(&self.topo.lbs[i], "eth0");
        let want_s = link_mac(&self.topo.lbs[i], "eth1");
        let ok = wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
            neigh_lladdr(&self.topo.client, FLOAT6_CLIENT).as_deref() == Some(want_c.as_str())
                && neigh_lladdr(&self.topo.reals[0], FLOAT6_SERVER).as_deref()
                    == Some(want_s.as_str())
        });
        assert!(
            ok,
            "IPv6 gateways not at node {}: client has {:?} (want {want_c}), r1 has {:?} (want {want_s})",
            i + 1,
            neigh_lladdr(&self.topo.client, FLOAT6_CLIENT),
            neigh_lladdr(&self.topo.reals[0], FLOAT6_SERVER),
        );
    }

    /// Waits until node `i` holds at least the flows of node `from`.
    pub fn wait_copy(&self, i: usize, from: usize) {
        let ok = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            flow_set(&self.lbs[from]).is_subset(&flow_set(&self.lbs[i]))
        });
        assert!(
            ok,
            "node {} lacks flows of node {}: {} vs {}\n{:?}",
            i + 1,
            from + 1,
            flow_set(&self.lbs[i]).len(),
            flow_set(&self.lbs[from]).len(),
            ha(&self.lbs[i])
        );
    }
}

/// Echo round trips every `interval` on one connection to the echo VIP
/// until `stop`: the longest time between two successful round trips, which
/// is the failover gap a TCP client sees (TCP's own retransmission timer
/// included). Bounded: at most 60 s of probing whatever `stop` does.
pub fn tcp_gap_probe(
    topo: &HaTopology,
    stop: Arc<AtomicBool>,
    interval: Duration,
) -> JoinHandle<Result<Duration, String>> {
    topo.client.thread(move || {
        let mut c =
            EchoConn::connect(vip(ECHO), Duration::from_secs(10)).map_err(|e| e.to_string())?;
        let mut last_ok = Instant::now();
        let mut worst = Duration::ZERO;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            c.roundtrip(b"ping\n")
                .map_err(|e| format!("probe broke: {e}"))?;
            let now = Instant::now();
            worst = worst.max(now - last_ok);
            last_ok = now;
            std::thread::sleep(interval);
        }
        Ok(worst)
    })
}
