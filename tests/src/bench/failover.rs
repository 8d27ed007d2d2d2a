//! Section 4: failover, on the two-node topology of the HA tests
//! (lb_tests::ha_pair: the real `lb` binary on both nodes, XDP native,
//! heartbeat 100 ms, three `lb-testsrv` reals).
//!
//! - **Gap**, in rounds: a UDP stream (one datagram per ms through the UDP
//!   VIP) and a TCP echo stream (a round trip every 5 ms) run while the
//!   active node dies (its agent SIGKILLed, its links down). Each stream's
//!   longest silence is its gap; the time until the standby reports itself
//!   active is the promotion time. A stream that breaks, or a UDP flow that
//!   changes real, is reported as such for its round. The dead node then comes back as after a
//!   reboot (`--reset`) and becomes the synced standby, so the next round
//!   kills the other node.
//! - **Sync lag**: one SYN injected into the active node's attached program
//!   with BPF_PROG_TEST_RUN (the record goes through the real `SYNC` ring,
//!   agent, stream and peer agent), then the standby's pinned `FLOWS` is
//!   polled for the flow: the time until it is there. Repeated, spaced.
//! - **Live sync throughput**: a burst of distinct SYNs injected as fast as
//!   one thread can; the rate at which the standby's table gains them, and
//!   how long after the last injection the last one lands.
//! - **Bulk copy**: the active table filled to N flows (`insert_batch`,
//!   entries shaped like the datapath's own), then the standby restarts
//!   clean and takes a bulk copy: its own timing (request to last event
//!   applied) and flows per second.
//!
//! BPF_PROG_TEST_RUN never transmits (no live-frames flag): the injected
//! SYNs change only the active node's maps.
use std::{
    net::{SocketAddrV4, UdpSocket},
    os::fd::{AsFd, AsRawFd},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray},
    programs::ProgramInfo,
};
use lb_common::{Flow, FlowKey, ST_ESTABLISHED, reason};
use lb_tests::{
    ha_pair::{HaPair, VIP, flow_set, ha, role, tcp_gap_probe, vip},
    ha_topology::HaTopology,
    rig::{ECHO, UDP},
    wait_until,
};
use lb_userspace::{
    api::NodeRole,
    datapath, flowtable,
    ha::{mirror::forward_key, wire::FlowTuple},
};

use crate::{
    frame::{SYN, Tcp},
    record::{Deadline, emit, progress},
    testrun,
};

const S: &str = "failover";

struct Plan {
    rounds: usize,
    lag_samples: usize,
    burst: u64,
    bulk: &'static [u64],
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                rounds: 1,
                lag_samples: 10,
                burst: 5_000,
                bulk: &[10_000],
            }
        } else {
            Plan {
                rounds: 5,
                lag_samples: 50,
                burst: 50_000,
                bulk: &[100_000, 1_000_000],
            }
        }
    }

    /// Room for the largest bulk table (two entries per flow), the burst
    /// and 64k spare, so the LRU evicts nothing.
    fn table(&self) -> u32 {
        let flows = self.bulk.iter().max().copied().unwrap_or(0) + self.burst;
        (2 * flows + 65_536) as u32
    }
}

pub fn run(quick: bool) {
    let plan = Plan::new(quick);
    let deadline = Deadline::new(
        "the failover section",
        Duration::from_secs(if quick { 300 } else { 1200 }),
    );
    let testsrv = std::env::current_exe()
        .expect("current_exe")
        .with_file_name("lb-testsrv");
    progress("failover: two lb nodes, three reals");
    let mut p = HaPair::sized(false, &testsrv, plan.table());
    emit(S, "setup", "flow_table_entries", plan.table());
    emit(S, "setup", "heartbeat_ms", 100);

    for round in 1..=plan.rounds {
        deadline.check();
        gap_round(&mut p, round);
    }

    let a = active(&p);
    let inj = Injector::new(&p.topo, a, p.lbs[1 - a].pin_dir());
    p.topo.lbs[a].run(|| {
        lag(&inj, plan.lag_samples, deadline);
        burst(&inj, plan.burst, deadline);
    });
    // Filled flows are shaped like the burst's first, as the datapath made
    // it (VIP, real, their ids), read now: it expires after the SYN timeout.
    // A SYN's flow is half-open: it is in the active node's EMBRYOS.
    let model = datapath::open_embryos(p.lbs[a].pin_dir())
        .expect("active EMBRYOS")
        .expect("active EMBRYOS pinned")
        .get(&forward_key(&tuple(BURST_BASE)), 0)
        .expect("the burst's first flow on the active node");
    drop(inj);
    for &n in plan.bulk {
        deadline.check();
        bulk(&mut p, a, &model, n, BURST_BASE + plan.burst);
    }
}

/// The node that is active now.
fn active(p: &HaPair) -> usize {
    (0..2)
        .find(|&i| role(&p.lbs[i]) == NodeRole::Active)
        .expect("an active node")
}

fn gap_round(p: &mut HaPair, round: usize) {
    let a = active(p);
    let b = 1 - a;
    let row = format!("round {round}");
    progress(format!("failover: {row}, node {} dies", a + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let udp = UdpProbe::start(&p.topo, stop.clone());
    let tcp = tcp_gap_probe(&p.topo, stop.clone(), Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(500));
    // Both probes' flows are on the standby before the kill.
    p.wait_copy(b, a);
    let copied = flow_set(&p.lbs[b]);

    let killed = Instant::now();
    p.lbs[a].proc.kill();
    p.topo.node_down(a);
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(5), || {
        role(&p.lbs[b]) == NodeRole::Active
    });
    let promoted = killed.elapsed();
    assert!(ok, "node {} did not take over: {:?}", b + 1, ha(&p.lbs[b]));
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let u = udp.finish();
    // A broken stream is a result, not an abort: the round says so in the
    // report (with what the new active held, on stderr) and the run goes on.
    let tcp = tcp.join().expect("tcp probe thread");
    if let Err(e) = &tcp {
        progress(format!(
            "failover: {row}: the TCP stream broke: {e}\n  node {}'s flows before the kill: \
             {copied:?}\n  and now: {:?}\n  its ha status: {:?}",
            b + 1,
            flow_set(&p.lbs[b]),
            ha(&p.lbs[b])
        ));
    }
    emit(S, &row, "promotion_ms", ms(promoted));
    emit(S, &row, "udp_gap_ms", ms(u.gap));
    emit(S, &row, "udp_sent", u.sent);
    emit(S, &row, "udp_lost", u.sent - u.received);
    emit(S, &row, "udp_reals", u.reals.join(" "));
    match tcp {
        Ok(gap) => emit(S, &row, "tcp_gap_ms", ms(gap)),
        Err(e) => emit(S, &row, "tcp_broke", e),
    }

    // The dead node returns as after a reboot, and becomes the standby.
    p.topo.node_up(a);
    p.topo.wait_ready();
    p.lbs[a].restart(&p.topo.lbs[a], &["--reset"]);
    p.wait_standby_synced(a, Duration::from_secs(20));
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// One datagram per millisecond to the UDP VIP from the client, each
/// carrying its number; the reals answer `<name>:<number>`.
struct UdpProbe {
    sender: std::thread::JoinHandle<u64>,
    receiver: std::thread::JoinHandle<Vec<(Instant, String)>>,
}

struct UdpResult {
    sent: u64,
    received: u64,
    /// Longest time between two consecutive replies.
    gap: Duration,
    /// The reals that answered (one: the flow kept its real).
    reals: Vec<String>,
}

impl UdpProbe {
    fn start(topo: &HaTopology, stop: Arc<AtomicBool>) -> UdpProbe {
        let sock = topo.client.run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            s.connect(vip(UDP)).expect("connect");
            s
        });
        let rx = sock.try_clone().expect("clone socket");
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop_rx = stop.clone();
        // Bounded: 60 s at most whatever `stop` does.
        let until = Instant::now() + Duration::from_secs(60);
        let sender = std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let _ = sock.send(n.to_string().as_bytes());
                n += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            n
        });
        let receiver = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            let mut stopped_at = None;
            loop {
                if let Ok(n) = rx.recv(&mut buf) {
                    got.push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    ));
                }
                // After `stop`, 200 ms more for replies in flight.
                if stop_rx.load(Ordering::Relaxed) || Instant::now() > until {
                    let at = *stopped_at.get_or_insert_with(Instant::now);
                    if at.elapsed() > Duration::from_millis(200) {
                        break;
                    }
                }
            }
            got
        });
        UdpProbe { sender, receiver }
    }

    fn finish(self) -> UdpResult {
        let sent = self.sender.join().expect("udp sender");
        let got = self.receiver.join().expect("udp receiver");
        let gap = got
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .max()
            .unwrap_or_default();
        let mut reals: Vec<String> = got
            .iter()
            .filter_map(|(_, r)| r.split(':').next().map(str::to_string))
            .collect();
        reals.sort();
        reals.dedup();
        UdpResult {
            sent,
            received: got.len() as u64,
            gap,
            reals,
        }
    }
}

/// SYNs into the active node's attached XDP program, and lookups in the
/// standby's pinned flow tables: an injected SYN is a half-open flow, which
/// the standby keeps in its half-open table (`EMBRYOS`).
struct Injector {
    syns: Syns,
    standby_flows: BpfHashMap<MapData, FlowKey, Flow>,
    standby_embryos: BpfHashMap<MapData, FlowKey, Flow>,
    active_pins: std::path::PathBuf,
}

/// The `i`-th injected client: distinct (address, port) in 10/8, away from
/// the topology's own addresses.
pub fn client(i: u64) -> SocketAddrV4 {
    let (addr, port) = testrun::client(i);
    SocketAddrV4::new(addr, port)
}

pub fn tuple(i: u64) -> FlowTuple {
    FlowTuple::new(client(i).into(), SocketAddrV4::new(VIP, ECHO).into(), 6).expect("one family")
}

/// SYNs of injected flows (`client(i)` to the echo VIP) into an agent's
/// attached XDP program.
pub struct Syns {
    prog: aya::programs::ProgramFd,
}

impl Syns {
    /// The program attached to `iface` in `ns`.
    pub fn on(ns: &lb_tests::Netns, iface: &str) -> Syns {
        let id = attached_prog_id(ns, iface);
        let prog = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p: &ProgramInfo| p.id() == id)
            .unwrap_or_else(|| panic!("program {id} not loaded"))
            .fd()
            .expect("program fd");
        Syns { prog }
    }

    /// Runs the SYN of flow `i` through the program once.
    pub fn syn(&self, i: u64) {
        let c = client(i);
        // The program reads no MAC address: the fixture's stand in.
        let frame = Tcp {
            src_mac: testrun::CLIENT_MAC,
            dst_mac: testrun::LB_C_MAC,
            src: (*c.ip(), c.port()),
            dst: (VIP, ECHO),
            flags: SYN,
            seq: 1,
            ack: 0,
        }
        .build();
        test_run(self.prog.as_fd().as_raw_fd(), &frame).expect("BPF_PROG_TEST_RUN");
    }
}

impl Injector {
    fn new(topo: &HaTopology, active: usize, standby_pins: &Path) -> Injector {
        let ns = &topo.lbs[active];
        Injector {
            syns: Syns::on(ns, "eth0"),
            standby_flows: datapath::open_flows(standby_pins).expect("standby FLOWS"),
            standby_embryos: datapath::open_embryos(standby_pins)
                .expect("standby EMBRYOS")
                .expect("standby EMBRYOS pinned"),
            active_pins: ns.bpf_pin_dir(),
        }
    }

    /// Runs the SYN of flow `i` through the active node's program once.
    fn syn(&self, i: u64) {
        self.syns.syn(i);
    }

    fn on_standby(&self, i: u64) -> bool {
        let key = forward_key(&tuple(i));
        self.standby_flows.get(&key, 0).is_ok() || self.standby_embryos.get(&key, 0).is_ok()
    }

    /// Polls the standby for flow `i` every 50 µs, up to `limit`: when it
    /// appeared.
    fn wait_standby(&self, i: u64, limit: Duration) -> Option<Instant> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self.on_standby(i) {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        None
    }

    /// The active node's `sync_lost` counter (summed over CPUs).
    fn sync_lost(&self) -> u64 {
        let data = MapData::from_pin(self.active_pins.join("STATS")).expect("STATS pin");
        let stats: PerCpuArray<_, u64> =
            PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).expect("STATS");
        stats
            .get(&reason::SYNC_LOST, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

/// The id of the XDP program attached to `iface` in `ns` (`ip -j link`).
fn attached_prog_id(ns: &lb_tests::Netns, iface: &str) -> u32 {
    let out = ns.ip(&["-j", "-d", "link", "show", "dev", iface]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    v[0]["xdp"]["prog"]["id"]
        .as_u64()
        .or_else(|| v[0]["xdp"]["attached"][0]["prog"]["id"].as_u64())
        .unwrap_or_else(|| panic!("no XDP program on {iface}: {v}")) as u32
}

/// One BPF_PROG_TEST_RUN of `frame` (repeat 1, no live frames: nothing is
/// transmitted): the program's return value. The raw syscall, not aya's
/// `TestRun` (testrun.rs): that needs an `Xdp` this process loaded, and the
/// program here is the running agent's, known only by its id.
fn test_run(prog_fd: i32, frame: &[u8]) -> std::io::Result<u32> {
    // The head of `union bpf_attr` for BPF_PROG_TEST_RUN; the kernel takes a
    // shorter attr and treats the rest as zero.
    #[repr(C)]
    #[derive(Default)]
    struct TestAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut attr = TestAttr {
        prog_fd: prog_fd as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: attr is a valid prefix of bpf_attr for this command; data_in
    // points at frame.len() readable bytes that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestAttr,
            size_of::<TestAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr.retval)
}

/// Injected flow numbers: the lag samples first, then the burst.
const LAG_BASE: u64 = 0;
const BURST_BASE: u64 = 1_000;

/// Runs in the active node's namespace (the injected SYNs' ingress).
fn lag(inj: &Injector, samples: usize, deadline: Deadline) {
    progress(format!("failover: sync lag, {samples} single flows"));
    let mut lags: Vec<f64> = (0..samples as u64)
        .map(|k| {
            deadline.check();
            let i = LAG_BASE + k;
            let t0 = Instant::now();
            inj.syn(i);
            let at = inj
                .wait_standby(i, Duration::from_secs(5))
                .unwrap_or_else(|| panic!("flow {i} did not reach the standby in 5 s"));
            std::thread::sleep(Duration::from_millis(20));
            (at - t0).as_secs_f64() * 1e3
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let q = |f: f64| lags[((lags.len() - 1) as f64 * f).round() as usize];
    emit(S, "sync lag, one flow at a time", "samples", lags.len());
    emit(
        S,
        "sync lag, one flow at a time",
        "median_ms",
        format!("{:.2}", q(0.5)),
    );
    emit(
        S,
        "sync lag, one flow at a time",
        "p90_ms",
        format!("{:.2}", q(0.9)),
    );
    emit(
        S,
        "sync lag, one flow at a time",
        "max_ms",
        format!("{:.2}", q(1.0)),
    );
}

/// Runs in the active node's namespace, as `lag`.
fn burst(inj: &Injector, n: u64, deadline: Deadline) {
    progress(format!("failover: live sync of a burst of {n} new flows"));
    let lost_before = inj.sync_lost();
    let t0 = Instant::now();
    for k in 0..n {
        if k % 4096 == 0 {
            deadline.check();
        }
        inj.syn(BURST_BASE + k);
    }
    let t_end = Instant::now();
    let landed = inj.wait_standby(BURST_BASE + n - 1, Duration::from_secs(60));
    let lost = inj.sync_lost() - lost_before;
    let landed = landed.unwrap_or_else(|| {
        panic!("the burst's last flow did not reach the standby in 60 s (sync_lost {lost})")
    });
    let present = (0..n).filter(|k| inj.on_standby(BURST_BASE + k)).count() as u64;
    let row = format!("burst of {n} new flows");
    emit(S, &row, "flows", n);
    emit(
        S,
        &row,
        "injected_per_s",
        format!("{:.0}", n as f64 / (t_end - t0).as_secs_f64()),
    );
    emit(
        S,
        &row,
        "replicated_per_s",
        format!("{:.0}", present as f64 / (landed - t0).as_secs_f64()),
    );
    emit(S, &row, "last_lag_ms", ms(landed - t_end));
    emit(S, &row, "on_standby", present);
    emit(S, &row, "sync_lost", lost);
}

/// Fills the active table to `n` flows (plus what the lag and burst runs
/// left), restarts the standby clean and times its bulk copy.
fn bulk(p: &mut HaPair, a: usize, model: &Flow, n: u64, base: u64) {
    let b = 1 - a;
    progress(format!("failover: bulk copy of {n} flows"));
    fill(p.lbs[a].pin_dir(), model, n, base);
    p.lbs[b].proc.kill();
    let started = Instant::now();
    p.lbs[b].restart(&p.topo.lbs[b], &["--reset"]);
    p.wait_standby_synced(b, Duration::from_secs(300));
    let ready = started.elapsed();
    let s = ha(&p.lbs[b]);
    let last = s.sync.last_bulk.expect("last_bulk");
    let flows = last.flows;
    let took_ms = last.took_ms.expect("last_bulk.took_ms");
    assert!(
        flows >= n,
        "the copy named {flows} flows, the table has {n}+"
    );
    let row = format!("bulk copy, {n} flows");
    emit(S, &row, "flows", flows);
    emit(S, &row, "took_ms", format!("{took_ms:.0}"));
    emit(
        S,
        &row,
        "flows_per_s",
        format!("{:.0}", flows as f64 / (took_ms / 1e3)),
    );
    emit(S, &row, "restart_to_synced_ms", ms(ready));
    // Leave the active table as it was for the next size.
    unfill(p.lbs[a].pin_dir(), model, n, base);
}

/// The entries of filled flow `i`: established, shaped like `model`.
fn filled(model: &Flow, i: u64) -> [(FlowKey, Flow); 2] {
    lb_tests::filled::entries(
        model,
        forward_key(&tuple(i)),
        ST_ESTABLISHED,
        datapath::now_ns(),
    )
}

fn fill(pins: &Path, model: &Flow, n: u64, base: u64) {
    let mut flows = datapath::open_flows(pins).expect("active FLOWS");
    for chunk in (0..n).collect::<Vec<_>>().chunks(65_536) {
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for &k in chunk {
            for (key, f) in filled(model, base + k) {
                keys.push(key);
                values.push(f);
            }
        }
        flowtable::insert_batch(&mut flows, &keys, &values).expect("filling the active table");
    }
}

fn unfill(pins: &Path, model: &Flow, n: u64, base: u64) {
    let mut flows = datapath::open_flows(pins).expect("active FLOWS");
    let keys: Vec<FlowKey> = (0..n)
        .flat_map(|k| filled(model, base + k).map(|(key, _)| key))
        .collect();
    flowtable::remove_batch(&mut flows, &keys).expect("emptying the active table");
}
