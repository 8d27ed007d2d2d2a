//! Timing XDP programs with BPF_PROG_TEST_RUN, inside a namespace where
//! `bpf_fib_lookup` resolves next hops as on a real lb host (the approach of
//! tests/tests/datapath: veth c0 towards clients, s0 towards reals, static
//! neighbours).
//!
//! Two ways to time, both with the kernel's own clock:
//! - `repeat`: one syscall runs the program N times on the same buffer and
//!   reports the mean. Only honest for a packet the program leaves as it
//!   was: the kernel does not restore the buffer between runs, so a NAT
//!   rewrite would turn run 2 into a different packet (and TTL − 1 each run
//!   ends any path after 63).
//! - `single`: one syscall per packet, each from a fresh copy, durations
//!   summed. Every stateful path (first SYN, a flow's packets, purge RST) is
//!   timed this way. Each call also counts the timer's own cost; the report
//!   gives that fixed cost from the floor timed both ways.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{DevMapHash, HashMap},
    programs::{TestRun, TestRunOptions, Xdp},
};
use lb_common::{Flow, FlowKey};
use lb_tests::Netns;
use lb_userspace::{clock::DatapathClock, datapath};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub use lb_tests::fixture_net::{
    CLIENT, CLIENT_MAC, CLIENT6, LB_C_MAC, LB_S_MAC, REALS, REALS6, real_mac, real6_mac,
};

/// The fixture namespace (lb_tests::fixture_net) plus a route to the
/// synthetic clients of new-flow runs.
pub fn setup_netns(ns: &Netns) {
    lb_tests::fixture_net::setup(ns, &[]);
    // Many distinct clients (10/8) behind the one client neighbour, so
    // replies to any of them resolve too.
    ns.ip(&["route", "add", CLIENTS_NET, "via", &CLIENT.to_string()]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        CLIENTS_NET6,
        "via",
        &CLIENT6.to_string(),
    ]);
}

/// Where the synthetic clients of new-flow runs live (see [`client`]).
pub const CLIENTS_NET: &str = "10.0.0.0/8";

/// The `i`-th synthetic client: a distinct (address, port) in 10/8 for
/// every `i` below 800 million.
pub fn client(i: u64) -> (Ipv4Addr, u16) {
    let addr = Ipv4Addr::from((10u32 << 24) | (1 + (i / 50_000) as u32));
    (addr, 1024 + (i % 50_000) as u16)
}

/// Where the synthetic IPv6 clients live (see [`client6`]).
pub const CLIENTS_NET6: &str = "2001:db8:ffff::/48";

/// The `i`-th synthetic IPv6 client, numbered as [`client`]'s.
pub fn client6(i: u64) -> (Ipv6Addr, u16) {
    let (addr, port) = client(i);
    let v4 = u32::from(addr) & 0x00ff_ffff;
    let addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, (v4 >> 16) as u16, v4 as u16);
    (addr, port)
}

/// Pins the calling thread to CPU 0: per-CPU maps and round-robin cursors
/// then see one CPU, and the numbers are one core's.
pub fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The floor programs of lb-ebpf/src/floor.rs.
pub const FLOORS: [&str; 7] = [
    "lb_floor",
    "lb_floor_fib",
    "lb_floor_flow",
    "lb_floor_clock",
    "lb_floor_ktime",
    "lb_floor_redirect",
    "lb_floor_call",
];

/// Gives the floor object's own maps what its building blocks look for:
/// the flow entry of `key` (so `lb_floor_flow` hits) and `ifindex` in
/// `TX_PORTS` (so `lb_floor_redirect` redirects).
pub fn prime_floor(ebpf: &mut Ebpf, key: &FlowKey, ifindex: u32) -> Result<()> {
    let mut flows: HashMap<_, FlowKey, Flow> = ebpf
        .map_mut("FLOWS")
        .context("the floor's FLOWS")?
        .try_into()?;
    flows.insert(key, Flow::default(), 0)?;
    let mut ports: DevMapHash<_> = ebpf
        .map_mut("TX_PORTS")
        .context("the floor's TX_PORTS")?
        .try_into()?;
    ports.insert(ifindex, ifindex, None, 0)?;
    Ok(())
}

/// Loads the floor programs from the benchmark's object (lb's datapath
/// built with lb-ebpf's `bench` feature). The object's maps are pinned by
/// name, so they go to a pin directory of their own (`FLOWS` shrunk: the
/// floors use no map).
pub fn load_floor(pin_dir: &Path) -> Result<Ebpf> {
    std::fs::create_dir_all(pin_dir)?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .map_max_entries("FLOWS", 1024)
        .load_file(datapath::BENCH_OBJECT_PATH)
        .with_context(|| format!("loading the bench object {}", datapath::BENCH_OBJECT_PATH))?;
    for name in FLOORS {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("{name} missing from the object (lb-ebpf/src/floor.rs)"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("the verifier refused {name}"))?;
    }
    // The floor's clock block reads the datapath's clock, set up as the
    // agent's load does (the object's own CLOCK).
    DatapathClock::start(&mut ebpf)?;
    Ok(ebpf)
}

pub fn floor_prog<'a>(ebpf: &'a Ebpf, name: &str) -> &'a Xdp {
    ebpf.program(name)
        .expect("loaded")
        .try_into()
        .expect("an XDP program")
}

/// The `struct xdp_md` handed in: data, data_end, data_meta,
/// ingress_ifindex, rx_queue_index, egress_ifindex.
fn xdp_md(len: usize, ingress: u32) -> Vec<u8> {
    [0, len as u32, 0, ingress, 0, 0]
        .iter()
        .flat_map(|w: &u32| w.to_ne_bytes())
        .collect()
}

/// One run of `prog` on `frame` arriving on `ingress`: (verdict, kernel
/// time, output frame).
pub fn run_once(prog: &Xdp, frame: &[u8], ingress: u32) -> (u32, Duration, Vec<u8>) {
    let ctx = xdp_md(frame.len(), ingress);
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, r.duration, out)
}

/// `repeat` runs in one syscall; the kernel's mean in ns.
pub fn run_repeat(prog: &Xdp, frame: &[u8], ingress: u32, repeat: u32) -> (u32, f64) {
    let ctx = xdp_md(frame.len(), ingress);
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    // The kernel reports the mean in whole ns.
    (r.return_value, r.duration.as_nanos() as f64)
}

/// The median of batch means: robust against the other core's work (a
/// build, the agent) stealing a slice of one batch.
pub struct Batches {
    means: Vec<f64>,
    sum_ns: f64,
    count: u64,
    cur_ns: f64,
    cur_n: u64,
    per_batch: u64,
}

impl Batches {
    pub fn new(total: u64) -> Self {
        Batches {
            means: Vec::new(),
            sum_ns: 0.0,
            count: 0,
            cur_ns: 0.0,
            cur_n: 0,
            // 15 batches (at least 100 packets each) give a stable median.
            per_batch: (total / 15).max(100),
        }
    }

    pub fn add(&mut self, d: Duration) {
        let ns = d.as_nanos() as f64;
        self.sum_ns += ns;
        self.count += 1;
        self.cur_ns += ns;
        self.cur_n += 1;
        if self.cur_n == self.per_batch {
            self.means.push(self.cur_ns / self.cur_n as f64);
            (self.cur_ns, self.cur_n) = (0.0, 0);
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Median of the full batches (the mean of all if none is full).
    pub fn median(&self) -> f64 {
        if self.means.is_empty() {
            return self.sum_ns / self.count.max(1) as f64;
        }
        median(self.means.clone())
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub fn mem_available() -> u64 {
    meminfo("MemAvailable:")
}

fn meminfo(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/meminfo"))
        * 1024
}
