//! Section 1: the datapath's cost per packet, through BPF_PROG_TEST_RUN on
//! the real object with maps programmed by the agent's own control code,
//! beside the floor program (lb-ebpf/src/floor.rs) in the same run.
//!
//! Every case first checks that the packets took the path it names: the
//! verdict of every run, and the datapath's reason counter moved by exactly
//! the number of packets.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use aya::{Ebpf, programs::Xdp};
use lb_common::{FlowKey, MAX_REALS, MAX_VIPS, PROTO_TCP, reason, v4_mapped};
use lb_tests::{Netns, limits::fillers};
use lb_userspace::{
    config::Config,
    control::{Control, RealKey},
    datapath::{self, Build, Datapath},
};

use super::{
    frame::{ACK, PSH, SYN, Tcp, Tcp6},
    katran::{self, Katran, KatranVip},
    record::{Deadline, emit, progress},
    testrun::{
        Batches, CLIENT, CLIENT_MAC, CLIENT6, LB_C_MAC, LB_S_MAC, REALS, REALS6, XDP_DROP,
        XDP_PASS, XDP_REDIRECT, XDP_TX, client, client6, floor_prog, load_floor, median,
        pin_to_cpu0, prime_floor, real_mac, real6_mac, run_once, run_repeat, setup_netns,
    },
};

const SECTION: &str = "packet";

/// (algorithm, farm/VIP name, last octet of its VIP); every VIP is on port 80.
/// Each algorithm also has an IPv6 VIP ([`vip6`]) and farm (the name with
/// a `6`) of IPv6 reals.
const ALGORITHMS: [(&str, &str, u8); 5] = [
    ("round-robin", "rr", 10),
    ("weighted-round-robin", "wrr", 11),
    ("least-conn", "lc", 12),
    ("source-hash", "sh", 13),
    ("maglev", "mg", 14),
];
const PURGE_VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
/// Katran's VIPs (its own program and maps: tests/src/bench/katran.rs).
const KATRAN_VIP: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 51, 100, 30), 80);
const KATRAN_VIP6: (Ipv6Addr, u16) = (Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 30), 80);
const PURGE_PORT: u16 = 7;

/// The client end of the one established flow the section times, per family.
const EST_CLIENT: (Ipv4Addr, u16) = (CLIENT, 40000);
const EST_CLIENT6: (Ipv6Addr, u16) = (CLIENT6, 40000);

/// The floor's building blocks (lb-ebpf/src/floor.rs): row, program, and
/// the verdict that shows it did its part.
const BLOCKS: [(&str, &str, u32); 5] = [
    ("floor + FLOWS lookup (hit)", "lb_floor_flow", XDP_TX),
    ("floor + clock", "lb_floor_clock", XDP_TX),
    ("floor + bpf_ktime_get_coarse_ns", "lb_floor_ktime", XDP_TX),
    ("floor + devmap redirect", "lb_floor_redirect", XDP_REDIRECT),
    ("floor + BPF-to-BPF call", "lb_floor_call", XDP_TX),
];

/// The `FLOWS` key of the established flow's client packets.
fn established_key() -> FlowKey {
    let (addr, port) = EST_CLIENT;
    FlowKey {
        src_addr: v4_mapped(addr.octets()),
        dst_addr: v4_mapped(vip(ALGORITHMS[0].2).octets()),
        src_port_be: port.to_be(),
        dst_port_be: 80u16.to_be(),
        proto: PROTO_TCP,
        _pad: [0; 3],
    }
}

fn vip(octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, octet)
}

fn vip6(octet: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, octet.into())
}

/// How many packets each case runs.
struct Sizes {
    /// Runs per `repeat` syscall, and how many such syscalls.
    repeat: u32,
    repeat_calls: usize,
    /// Packets of the single-call cases that keep state as it is.
    single: u64,
    /// New flows per algorithm, and purged flows.
    syn: u64,
    purge: u64,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                repeat: 1_000_000,
                repeat_calls: 3,
                single: 30_000,
                syn: 10_000,
                purge: 5_000,
            }
        } else {
            Sizes {
                repeat: 10_000_000,
                repeat_calls: 7,
                single: 1_000_000,
                syn: 200_000,
                purge: 200_000,
            }
        }
    }

    /// Flow table entries. The half-open table (a quarter of it, see
    /// `datapath::embryo_table_size`) must hold one algorithm's first SYNs,
    /// two entries each, without evicting (the run empties it between
    /// algorithms), on one CPU should its LRU lists be per CPU; and room to
    /// spare. Katran's LRU gets the same size and holds both families'
    /// first SYNs.
    fn table(&self) -> u32 {
        let cpus = aya::util::nr_cpus().expect("the number of CPUs") as u64;
        let half_open = 2 * (self.syn + self.purge + 16);
        let entries = 4 * half_open * cpus;
        (entries + entries / 4 + 65_536) as u32
    }
}

fn config(pin_dir: &Path, table: u32) -> String {
    let reals = |addrs: &[IpAddr], port: u16| -> String {
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!(
                    "      - {{ address: {a}, port: {port}, weight: {} }}\n",
                    i + 1
                )
            })
            .collect()
    };
    let reals4: Vec<IpAddr> = REALS.iter().map(|&a| a.into()).collect();
    let reals6: Vec<IpAddr> = REALS6.iter().map(|&a| a.into()).collect();
    let mut farms = String::new();
    let mut vips = String::new();
    for (alg, name, octet) in ALGORITHMS {
        for (suffix, addrs, vip) in [
            ("", &reals4, IpAddr::from(vip(octet))),
            ("6", &reals6, vip6(octet).into()),
        ] {
            farms += &format!(
                "  {name}{suffix}:\n    algorithm: {alg}\n    reals:\n{}",
                reals(addrs, 8080)
            );
            vips += &format!(
                "  {name}{suffix}: {{ address: {vip}, port: 80, serverfarm: {name}{suffix} }}\n"
            );
        }
    }
    format!(
        "interfaces: [c0, s0]\nserverfarms:\n{farms}  purge:\n    failaction: purge\n    reals:\n      - {{ address: {}, port: {PURGE_PORT} }}\nvips:\n{vips}  purge: {{ address: {PURGE_VIP}, port: {PURGE_PORT}, serverfarm: purge }}\nbpf: {{ pin_dir: {}, flow_table_size: {table} }}\n",
        REALS[0],
        pin_dir.display()
    )
}

pub fn run(quick: bool) {
    let sizes = Sizes::new(quick);
    let deadline = Deadline::new(
        "the per-packet section",
        Duration::from_secs(if quick { 180 } else { 600 }),
    );
    let ns = Netns::new("bench-pkt");
    setup_netns(&ns);
    let base = ns.bpf_pin_dir();
    ns.run(|| {
        pin_to_cpu0();
        let src = config(&base.join("lb"), sizes.table());
        let cfg = Config::parse(&src, "bench.yaml").unwrap_or_else(|e| panic!("{e}"));
        let dp = Datapath::load_with(&cfg.bpf.pin_dir, cfg.bpf.flow_table_size, true)
            .expect("loading the datapath");
        let mut floor = load_floor(&base.join("floor")).expect("loading the floor");
        let c0 = datapath::ifindex("c0").expect("c0");
        prime_floor(&mut floor, &established_key(), c0).expect("priming the floor's maps");
        let mut bench = Bench {
            dp,
            ctl: Control::new(),
            c0,
            s0: datapath::ifindex("s0").expect("s0"),
            sizes,
            deadline,
        };
        bench
            .ctl
            .apply(&cfg, &mut bench.dp.maps)
            .expect("programming the maps");
        bench.dp.allow_redirect(bench.c0).expect("TX_PORTS");
        bench.dp.allow_redirect(bench.s0).expect("TX_PORTS");
        bench.cases(&floor);
        bench.trace_build(&cfg);
        bench.at_the_limits(&src, &cfg);
        bench.dp.shutdown().expect("removing the datapath's pins");
        drop(floor);
        datapath::remove_pins(&base.join("floor")).expect("removing the floor's pins");
    });
}

struct Bench {
    dp: Datapath,
    ctl: Control,
    c0: u32,
    s0: u32,
    sizes: Sizes,
    deadline: Deadline,
}

/// A packet from the client side or from a real, with the hop's MACs.
pub fn from_client(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: u8,
    seq: u32,
    ack: u32,
) -> Tcp {
    Tcp {
        src_mac: CLIENT_MAC,
        dst_mac: LB_C_MAC,
        src,
        dst,
        flags,
        seq,
        ack,
    }
}

pub fn from_real(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, seq: u32, ack: u32) -> Tcp {
    Tcp {
        src_mac: real_mac(src.0),
        dst_mac: LB_S_MAC,
        ..from_client(src, dst, flags, seq, ack)
    }
}

/// A flow of `client` to the round-robin VIP: its SYN and ACK, and the
/// real's SYN-ACK and ACK made from the SYN as lb rewrote it.
fn rr_handshake(client: (Ipv4Addr, u16)) -> Handshake {
    let rr_vip = vip(ALGORITHMS[0].2);
    Handshake {
        syn: from_client(client, (rr_vip, 80), SYN, 100, 0).build(),
        ack: from_client(client, (rr_vip, 80), ACK, 101, 9001).build(),
        from_real: Box::new(move |out: &[u8]| {
            let real = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
            let f = |flags, ack| from_real((real, 8080), client, flags, 9000, ack).build();
            (f(SYN | ACK, 101), f(ACK, 101))
        }),
    }
}

/// `first_syns`' frames: the SYN of client `first + k * syns + i` to
/// algorithm `k`'s VIP, so no two rows share a client.
fn first_syn(first: u64, syns: u64) -> impl Fn(usize, u64) -> Vec<u8> {
    move |k, i| {
        let octet = ALGORITHMS[k].2;
        from_client(
            client(first + k as u64 * syns + i),
            (vip(octet), 80),
            SYN,
            1,
            0,
        )
        .build()
    }
}

fn from_client6(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), flags: u8, seq: u32, ack: u32) -> Tcp6 {
    Tcp6 {
        src_mac: CLIENT_MAC,
        dst_mac: LB_C_MAC,
        src,
        dst,
        flags,
        seq,
        ack,
    }
}

fn from_real6(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), flags: u8, seq: u32, ack: u32) -> Tcp6 {
    Tcp6 {
        src_mac: real6_mac(src.0),
        dst_mac: LB_S_MAC,
        ..from_client6(src, dst, flags, seq, ack)
    }
}

/// The packets of one established flow through lb, in either family.
struct Handshake {
    syn: Vec<u8>,
    /// The client's ACK, which is also the packet timed forward.
    ack: Vec<u8>,
    /// The real's SYN-ACK and its ACK (the packet timed in reverse), once
    /// the SYN's output frame shows which real was picked.
    from_real: Box<FromReal>,
}

/// Given the SYN's output frame: the real's SYN-ACK and ACK.
type FromReal = dyn Fn(&[u8]) -> (Vec<u8>, Vec<u8>);

pub fn verdict_name(action: u32, why: u32) -> String {
    let a = match action {
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "other",
    };
    format!("{a} ({})", reason::NAMES[why as usize])
}

impl Bench {
    fn counter(&self, why: u32) -> u64 {
        self.dp.maps.stats.get(&why, 0).expect("STATS").iter().sum()
    }

    fn lb(&mut self) -> &Xdp {
        self.dp.program()
    }

    /// Times `n` packets one syscall each (`frame(i)` is the i-th), checking
    /// every verdict and that `why` counted each packet once.
    fn single(
        &mut self,
        floor: Option<&Xdp>,
        n: u64,
        ingress: u32,
        want: (u32, u32),
        mut frame: impl FnMut(u64) -> Vec<u8>,
    ) -> Batches {
        let before = self.counter(want.1);
        let mut b = Batches::new(n);
        let deadline = self.deadline;
        for i in 0..n {
            deadline.check();
            let f = frame(i);
            let prog = match floor {
                Some(p) => p,
                None => self.lb(),
            };
            let (action, d, _) = run_once(prog, &f, ingress);
            assert_eq!(action, want.0, "packet {i}: verdict");
            b.add(d);
        }
        if floor.is_none() {
            assert_eq!(
                self.counter(want.1) - before,
                n,
                "every packet counted once as {}",
                reason::NAMES[want.1 as usize]
            );
        }
        b
    }

    /// `repeat` runs per syscall, for packets the program leaves unchanged.
    fn repeat(&mut self, floor: Option<&Xdp>, frame: &[u8], ingress: u32, want: (u32, u32)) -> f64 {
        let before = self.counter(want.1);
        let (runs, calls) = (self.sizes.repeat, self.sizes.repeat_calls);
        let mut means = Vec::new();
        for _ in 0..calls {
            self.deadline.check();
            let prog = match floor {
                Some(p) => p,
                None => self.lb(),
            };
            let (action, ns) = run_repeat(prog, frame, ingress, runs);
            assert_eq!(action, want.0, "verdict");
            means.push(ns);
        }
        if floor.is_none() {
            assert_eq!(
                self.counter(want.1) - before,
                runs as u64 * calls as u64,
                "every run counted as {}",
                reason::NAMES[want.1 as usize]
            );
        }
        median(means)
    }

    fn emit_case(&self, row: &str, verdict: String, repeat: Option<f64>, single: &Batches) {
        if let Some(ns) = repeat {
            emit(SECTION, row, "ns_repeat", format!("{ns:.1}"));
        }
        emit(SECTION, row, "ns_single", format!("{:.1}", single.median()));
        emit(SECTION, row, "packets", single.count());
        emit(SECTION, row, "verdict", verdict);
        progress(format!(
            "{row}: {:.1} ns (single){}",
            single.median(),
            repeat.map_or(String::new(), |r| format!(", {r:.1} ns (repeat)"))
        ));
    }

    fn cases(&mut self, floors: &Ebpf) {
        let floor = floor_prog(floors, "lb_floor");
        let s = &self.sizes;
        emit(SECTION, "setup", "repeat", s.repeat);
        emit(SECTION, "setup", "repeat_calls", s.repeat_calls);
        emit(SECTION, "setup", "table_entries", s.table());
        let clock = self.dp.clock();
        emit(SECTION, "setup", "clock_tick_ns", clock.tick_ns);
        let (c0, s0) = (self.c0, self.s0);
        let n = s.single;

        // The floor, on the established flow's client packet.
        let rr_vip = vip(ALGORITHMS[0].2);
        let est = from_client(EST_CLIENT, (rr_vip, 80), ACK, 101, 9001).build();
        let r = self.repeat(Some(floor), &est, c0, (XDP_TX, 0));
        let b = self.single(Some(floor), n, c0, (XDP_TX, 0), |_| est.clone());
        self.emit_case("floor", "XDP_TX".into(), Some(r), &b);

        // The floor plus a FIB lookup that resolves (to a real, via s0).
        let routed = from_client((CLIENT, 40000), (REALS[0], 8080), ACK, 101, 9001).build();
        let fib = floor_prog(floors, "lb_floor_fib");
        let r = self.repeat(Some(fib), &routed, c0, (XDP_TX, 0));
        let b = self.single(Some(fib), n, c0, (XDP_TX, 0), |_| routed.clone());
        self.emit_case("floor + FIB lookup", "XDP_TX".into(), Some(r), &b);

        // The building blocks of an established packet, each alone on top of
        // the floor, on the established flow's packet.
        for (row, name, action) in BLOCKS {
            let prog = floor_prog(floors, name);
            let r = self.repeat(Some(prog), &est, c0, (action, 0));
            let b = self.single(Some(prog), n, c0, (action, 0), |_| est.clone());
            let verdict = if action == XDP_TX {
                "XDP_TX"
            } else {
                "XDP_REDIRECT"
            };
            self.emit_case(row, verdict.into(), Some(r), &b);
        }

        // Not ours: TCP to an address that is no VIP, with no flow.
        let other = from_client((CLIENT, 40001), (REALS[0], 22), SYN, 1, 0).build();
        let want = (XDP_PASS, reason::PASS_NOT_OURS);
        let r = self.repeat(None, &other, c0, want);
        let b = self.single(None, n, c0, want, |_| other.clone());
        self.emit_case("not ours", verdict_name(want.0, want.1), Some(r), &b);

        // One established flow, then first SYNs, per family; Katran's
        // program on the same paths between them.
        let ipv4 = rr_handshake(EST_CLIENT);
        assert_eq!(ipv4.ack, est, "the floor's packet is the flow's");
        self.established("", &ipv4);
        let rr_vip6 = vip6(ALGORITHMS[0].2);
        let ipv6 = Handshake {
            syn: from_client6(EST_CLIENT6, (rr_vip6, 80), SYN, 100, 0).build(),
            ack: from_client6(EST_CLIENT6, (rr_vip6, 80), ACK, 101, 9001).build(),
            from_real: Box::new(|out: &[u8]| {
                let octets: [u8; 16] = out[38..54].try_into().expect("an IPv6 frame");
                let real = Ipv6Addr::from(octets);
                let f =
                    |flags, ack| from_real6((real, 8080), EST_CLIENT6, flags, 9000, ack).build();
                (f(SYN | ACK, 101), f(ACK, 101))
            }),
        };
        self.established("IPv6, ", &ipv6);

        self.katran_cases()
            .unwrap_or_else(|e| panic!("Katran's program: {e:#}"));

        // First SYN of a flow: distinct clients, so each SYN makes a flow.
        let syns = self.sizes.syn;
        self.first_syns("", first_syn(0, syns));
        self.first_syns("IPv6, ", |k, i| {
            let octet = ALGORITHMS[k].2;
            from_client6(client6(k as u64 * syns + i), (vip6(octet), 80), SYN, 1, 0).build()
        });

        // Purge: flows established on the purge farm's real, the real set
        // down through the agent's control code, then each flow's next
        // client packet is answered with a RST (and the flow removed).
        let purges = self.sizes.purge;
        let first = ALGORITHMS.len() as u64 * syns;
        let vip_port = (PURGE_VIP, PURGE_PORT);
        let deadline = self.deadline;
        for i in 0..purges {
            deadline.check();
            let c = client(first + i);
            let steps = [
                (from_client(c, vip_port, SYN, 100, 0), c0),
                (
                    from_real((REALS[0], PURGE_PORT), c, SYN | ACK, 9000, 101),
                    s0,
                ),
                (from_client(c, vip_port, ACK, 101, 9001), c0),
            ];
            for (p, ingress) in steps {
                assert_eq!(
                    run_once(self.lb(), &p.build(), ingress).0,
                    XDP_REDIRECT,
                    "purge setup"
                );
            }
        }
        let key = RealKey {
            farm: "purge".into(),
            addr: REALS[0].into(),
            port: PURGE_PORT,
        };
        self.ctl
            .set_health(&key, false, &mut self.dp.maps)
            .expect("set_health");
        let purged_before = self.counter(reason::PURGED);
        let want = (XDP_REDIRECT, reason::PURGE_RST);
        let b = self.single(None, purges, c0, want, |i| {
            from_client(client(first + i), vip_port, ACK | PSH, 101, 9001).build()
        });
        assert_eq!(self.counter(reason::PURGED) - purged_before, purges);
        self.emit_case("purged flow, RST", verdict_name(want.0, want.1), None, &b);
    }

    /// The bench's config grown to the limits with filler VIPs, farms and
    /// reals (lb_tests::limits), programmed by the same control code: how
    /// long that takes from the text, and how long a reload that moves one
    /// VIP does (what `lb reload` does but answer); then the established and
    /// first-SYN rows again, prefixed `at the limits, `.
    fn at_the_limits(&mut self, src: &str, cfg: &Config) {
        let reals: usize = cfg.serverfarms.values().map(|f| f.reals.len()).sum();
        let grown = |changed| {
            let (farms, vips) = fillers(cfg.vips.len() as u32, reals as u32, changed);
            src.replacen("serverfarms:\n", &format!("serverfarms:\n{farms}"), 1)
                .replacen("vips:\n", &format!("vips:\n{vips}"), 1)
        };
        let program = |bench: &mut Self, text: &str| {
            let at = Instant::now();
            let cfg = Config::parse(text, "bench.yaml").unwrap_or_else(|e| panic!("{e}"));
            let ch = bench
                .ctl
                .apply(&cfg, &mut bench.dp.maps)
                .expect("programming the maps");
            (at.elapsed().as_secs_f64(), ch.writes)
        };
        let (full, writes) = program(self, &grown(None));
        emit(SECTION, "limits", "vips", MAX_VIPS);
        emit(SECTION, "limits", "reals", MAX_REALS);
        emit(SECTION, "limits", "bytes", grown(None).len());
        emit(SECTION, "limits", "program_s", full);
        emit(SECTION, "limits", "program_writes", writes);
        let (one, writes) = program(self, &grown(Some(0)));
        assert_eq!(
            writes, 2,
            "a reload that moves one VIP rewrites that VIP alone"
        );
        emit(SECTION, "limits", "reload_one_vip_s", one);
        emit(SECTION, "limits", "reload_one_vip_writes", writes);
        let (same, writes) = program(self, &grown(Some(0)));
        assert_eq!(writes, 0, "an unchanged reload writes nothing");
        emit(SECTION, "limits", "reload_unchanged_s", same);

        self.established("at the limits, ", &rr_handshake((CLIENT, EST_CLIENT.1 + 1)));
        // Clients none of the earlier rows used.
        let first = (2 * ALGORITHMS.len() as u64 + 1) * self.sizes.syn + self.sizes.purge;
        self.first_syns("at the limits, ", first_syn(first, self.sizes.syn));
    }

    /// The trace build (`lb trace`) swapped in as the agent does, its
    /// filter matching no packet here: what tracing costs the packets it
    /// does not show. Rows `trace build, …`; the production build is back
    /// for the rows after.
    fn trace_build(&mut self, cfg: &Config) {
        let sizes = datapath::table_sizes(cfg.bpf.flow_table_size);
        let mut traced = Datapath::load_build(Build::Trace, &cfg.bpf.pin_dir, false, &sizes)
            .expect("loading the trace build");
        let nobody = lb_common::TraceFilter {
            client: lb_userspace::trace::endpoint("192.0.2.254").expect("an address"),
            on: 1,
            ..Default::default()
        };
        traced.set_trace_filter(&nobody).expect("TRACE_FILTER");
        let mut records = lb_userspace::trace::Records::open(&mut traced).expect("the log ring");
        let production = std::mem::replace(&mut self.dp, traced);
        self.established("trace build, ", &rr_handshake((CLIENT, EST_CLIENT.1 + 2)));
        // Clients past those of every other row (at_the_limits' included).
        let syns = self.sizes.syn;
        let first = (3 * ALGORITHMS.len() as u64 + 1) * syns + self.sizes.purge;
        self.first_syns("trace build, ", first_syn(first, syns));
        assert!(records.read().is_empty(), "the filter matched no packet");
        drop(records);
        let traced = std::mem::replace(&mut self.dp, production);
        drop(traced);
        // The production build's IPv6 programs back in their tail-call arrays.
        self.dp.take_over().expect("the production build back");
    }

    /// The flow of `h` made (SYN, SYN-ACK, ACK, the real's ACK, untimed),
    /// then its client and real packets timed: rows `{prefix}established,
    /// forward` and `… reverse`.
    fn established(&mut self, prefix: &str, h: &Handshake) {
        let (c0, s0, n) = (self.c0, self.s0, self.sizes.single);
        let (action, _, out) = run_once(self.lb(), &h.syn, c0);
        assert_eq!(action, XDP_REDIRECT, "the flow's SYN");
        let (synack, reply) = (h.from_real)(&out);
        assert_eq!(run_once(self.lb(), &synack, s0).0, XDP_REDIRECT, "SYN-ACK");
        assert_eq!(run_once(self.lb(), &h.ack, c0).0, XDP_REDIRECT, "ACK");
        // The real's first ACK moves the reverse entry to established.
        assert_eq!(
            run_once(self.lb(), &reply, s0).0,
            XDP_REDIRECT,
            "real's ACK"
        );
        // Both directions' next hops are cached now: the packets timed
        // below take the fast path (lb-ebpf/src/fast.rs), but for one per
        // direction each time its cached hop reaches its age bound (about a
        // second) and the full path asks the FIB again.
        let fast_before = self.counter(reason::FAST_PATH);
        let started = std::time::Instant::now();
        let want = (XDP_REDIRECT, reason::FORWARD);
        let b = self.single(None, n, c0, want, |_| h.ack.clone());
        let row = format!("{prefix}established, forward");
        self.emit_case(&row, verdict_name(want.0, want.1), None, &b);
        let want = (XDP_REDIRECT, reason::REVERSE);
        let b = self.single(None, n, s0, want, |_| reply.clone());
        let full = 2 * n - (self.counter(reason::FAST_PATH) - fast_before);
        let refreshes = 2 * (started.elapsed().as_secs() + 1);
        assert!(
            full <= refreshes,
            "{full} established packets took the full path; their hops' age allows {refreshes}"
        );
        let row = format!("{prefix}established, reverse");
        self.emit_case(&row, verdict_name(want.0, want.1), None, &b);
    }

    /// For each algorithm `k`, the first SYNs `frame(k, i)` of distinct
    /// clients to its VIP, each checked to make a flow: rows `{prefix}first
    /// SYN, {algorithm}`.
    fn first_syns(&mut self, prefix: &str, frame: impl Fn(usize, u64) -> Vec<u8>) {
        let syns = self.sizes.syn;
        for (k, (alg, ..)) in ALGORITHMS.into_iter().enumerate() {
            let new_before = self.counter(reason::NEW_FLOW);
            let want = (XDP_REDIRECT, reason::FORWARD);
            let b = self.single(None, syns, self.c0, want, |i| frame(k, i));
            assert_eq!(
                self.counter(reason::NEW_FLOW) - new_before,
                syns,
                "{prefix}{alg}: every SYN made a flow"
            );
            self.clear_half_open(2 * syns);
            self.emit_case(
                &format!("{prefix}first SYN, {alg}"),
                "XDP_REDIRECT (forward, new_flow)".into(),
                None,
                &b,
            );
        }
    }

    /// Removes every half-open flow (untimed), after checking that the
    /// table held all `expected` entries: no first SYN timed paid for an
    /// eviction, and the next algorithm's start as empty.
    fn clear_half_open(&mut self, expected: u64) {
        let keys: Vec<FlowKey> = self
            .dp
            .maps
            .embryos
            .keys()
            .collect::<Result<_, _>>()
            .expect("reading EMBRYOS");
        assert_eq!(
            keys.len() as u64,
            expected,
            "the half-open table kept every entry"
        );
        for k in &keys {
            self.dp
                .maps
                .embryos
                .remove(k)
                .expect("removing from EMBRYOS");
        }
    }

    /// Katran's `balancer_ingress` on the same kind of packets: an
    /// established flow's client segment (an LRU hit) and first SYNs (the
    /// ring's pick and an LRU insert), each answered by encapsulating it
    /// towards the real (IPIP, or IP6IP6 for the IPv6 VIP) with XDP_TX,
    /// which is what Katran does with every packet of a VIP.
    fn katran_cases(&mut self) -> anyhow::Result<()> {
        let (real, real6) = (REALS[0], REALS6[0]);
        // Katran sends everything to one router MAC.
        let gw = real_mac(real);
        let vips = [
            KatranVip {
                vip: (KATRAN_VIP.0.into(), KATRAN_VIP.1),
                real: real.into(),
            },
            KatranVip {
                vip: (KATRAN_VIP6.0.into(), KATRAN_VIP6.1),
                real: real6.into(),
            },
        ];
        let katran = Katran::load(&vips, gw, self.sizes.table())?;
        emit(SECTION, "setup", "katran_build", katran::build_command());

        let est = from_client(EST_CLIENT, KATRAN_VIP, ACK, 101, 9001).build();
        self.katran_established(&katran, "", &est, real.into())?;
        self.katran_as_published(&katran, &est)?;
        self.katran_first_syns(&katran, "", |i| {
            from_client(client(i), KATRAN_VIP, SYN, 1, 0).build()
        })?;
        let est6 = from_client6(EST_CLIENT6, KATRAN_VIP6, ACK, 101, 9001).build();
        self.katran_established(&katran, "IPv6, ", &est6, real6.into())?;
        self.katran_first_syns(&katran, "IPv6, ", |i| {
            from_client6(client6(i), KATRAN_VIP6, SYN, 1, 0).build()
        })
    }

    /// The flow's first packet `est` misses Katran's LRU, is placed by the
    /// ring and inserted; every timed packet after it must hit.
    fn katran_established(
        &mut self,
        katran: &Katran,
        prefix: &str,
        est: &[u8],
        real: IpAddr,
    ) -> anyhow::Result<()> {
        let prog = katran.prog();
        let (c0, n) = (self.c0, self.sizes.single);
        let (action, _, out) = run_once(prog, est, c0);
        anyhow::ensure!(
            action == XDP_TX,
            "the flow's first packet: verdict {action}"
        );
        katran::check_encap(&out, real, real_mac(REALS[0]))?;
        let misses = katran.counter(katran::LRU_MISS_CNTR);
        let tx = katran.counter(katran::XDP_TX_CNTR)[0];
        let b = self.single(Some(prog), n, c0, (XDP_TX, 0), |_| est.to_vec());
        anyhow::ensure!(
            katran.counter(katran::LRU_MISS_CNTR) == misses,
            "an established packet missed Katran's LRU"
        );
        anyhow::ensure!(
            katran.counter(katran::XDP_TX_CNTR)[0] - tx == n,
            "Katran's own TX counter moved by the packets timed"
        );
        let encap = if real.is_ipv6() { "IP6IP6" } else { "IPIP" };
        self.emit_case(
            &format!("Katran, {prefix}established (LRU hit, {encap} encap)"),
            "XDP_TX".into(),
            None,
            &b,
        );
        Ok(())
    }

    /// Katran's published figure (anchors §2) came from its perf tester
    /// as it was before a25f55df (2025-09-22): one call with `repeat` on one
    /// buffer, of a build with inline decapsulation. The buffer is never
    /// restored, so the runs alternate: the original packet is encapsulated
    /// and forwarded, then that output (IPIP) decapsulated, which restores
    /// the original, and so on. Timed the same way here, on IPv4 `est`.
    fn katran_as_published(&mut self, katran: &Katran, est: &[u8]) -> anyhow::Result<()> {
        let prog = katran.prog();
        let (calls, runs) = (self.sizes.repeat_calls, self.sizes.repeat);
        let decaps = || katran.counter(katran::DECAP_CNTR).iter().sum::<u64>();
        let (tx, decap) = (katran.counter(katran::XDP_TX_CNTR)[0], decaps());
        let mut means = Vec::new();
        for _ in 0..calls {
            self.deadline.check();
            let (action, ns) = run_repeat(prog, est, self.c0, runs);
            // The last run decapsulates; the inner TTL it decrements runs
            // out now and then, and the packet is then dropped.
            anyhow::ensure!(
                action == XDP_PASS || action == XDP_DROP,
                "the last run's verdict: {action}"
            );
            means.push(ns);
        }
        let half = calls as u64 * runs as u64 / 2;
        anyhow::ensure!(
            katran.counter(katran::XDP_TX_CNTR)[0] - tx == half && decaps() - decap == half,
            "half the runs forwarded, half decapsulated"
        );
        let row = "Katran, established, timed as its old perf tester did";
        let ns = median(means);
        emit(SECTION, row, "ns_repeat", format!("{ns:.1}"));
        emit(SECTION, row, "packets", calls as u64 * runs as u64);
        emit(
            SECTION,
            row,
            "verdict",
            "XDP_TX and a decapsulation, alternately",
        );
        progress(format!("{row}: {ns:.1} ns (repeat)"));
        Ok(())
    }

    /// First SYNs `frame(i)` from distinct clients: each one a miss of
    /// Katran's LRU and an insert.
    fn katran_first_syns(
        &mut self,
        katran: &Katran,
        prefix: &str,
        frame: impl Fn(u64) -> Vec<u8>,
    ) -> anyhow::Result<()> {
        let prog = katran.prog();
        let syns = self.sizes.syn;
        let flows = katran.flows();
        let new_before = katran.counter(katran::LRU_MISS_CNTR)[0];
        let b = self.single(Some(prog), syns, self.c0, (XDP_TX, 0), frame);
        anyhow::ensure!(
            katran.counter(katran::LRU_MISS_CNTR)[0] - new_before == syns,
            "every SYN counted by Katran as a new flow"
        );
        anyhow::ensure!(
            katran.flows() - flows == syns,
            "every SYN inserted its flow in Katran's LRU"
        );
        self.emit_case(
            &format!("Katran, {prefix}first SYN (ring pick, LRU insert)"),
            "XDP_TX".into(),
            None,
            &b,
        );
        Ok(())
    }
}
