//! Section 5: the datapath at the edges, through BPF_PROG_TEST_RUN on the
//! real object as in the per-packet section (packet.rs), with a small flow
//! table (`TABLE` entries) so floods of many times its size are affordable:
//! - ICMP errors about a flow, translated each way (icmp.rs), and later
//!   IPv4 fragments given their first fragment's translation (frag.rs);
//! - an established flow's packets and first SYNs, each without and
//!   during a SYN flood that keeps the half-open table (`EMBRYOS`) full;
//! - whether established flows survive a flood of many times the flow
//!   table (they live in `FLOWS`, which a flood never touches);
//! - how many legitimate handshakes complete as the flood sent within each
//!   handshake's round trip grows past the half-open table's flows.
//!
//! Every timed case checks the verdict of every run, and that the datapath's
//! reason counters moved by exactly what the packets sent account for, and
//! no other reason moved (`FAST_PATH` aside, checked where it matters).
use std::{net::Ipv4Addr, path::Path, time::Duration};

use lb_common::{FlowKey, PROTO_TCP, PROTO_UDP, reason, v4_mapped};
use lb_tests::{Netns, frames::fragments};
use lb_userspace::{
    config::Config,
    control::Control,
    datapath::{self, Datapath},
};

use super::{
    frame::{ACK, Ip, PSH, SYN, icmp_error_frame, set_ip_id, udp_frame},
    packet::{from_client, from_real, verdict_name},
    record::{Deadline, emit, progress},
    testrun::{
        Batches, CLIENT, CLIENT_MAC, LB_C_MAC, LB_S_MAC, REALS, XDP_PASS, XDP_REDIRECT, client,
        pin_to_cpu0, real_mac, run_once, setup_netns,
    },
};

const SECTION: &str = "edges";

/// `FLOWS` entries (two per flow); `EMBRYOS` gets a quarter of it.
const TABLE: u32 = 65_536;
/// The section's VIP: TCP port 80 (farm `web`), UDP port 53 (farm `dns`).
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 40);
/// A router between lb and the reals, and one in front of lb.
const ROUTER_BEHIND: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
const ROUTER_FRONT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
/// The client end of the established TCP flow, and of the UDP flow whose
/// datagrams come in fragments.
const EST_CLIENT: (Ipv4Addr, u16) = (CLIENT, 40000);
const UDP_CLIENT: (Ipv4Addr, u16) = (CLIENT, 45000);
/// The next-hop MTU the ICMP errors report.
const MTU: u16 = 1280;
/// The fragmented datagram's UDP payload, and each fragment's payload.
const DATAGRAM: usize = 3000;
const FRAGMENT: usize = 1480;
/// Flood SYNs sent (untimed) before each timed packet of a "during a
/// flood" row.
const FLOOD_BETWEEN: u64 = 4;
/// Flood SYNs within one handshake's round trip, in half-open table flows
/// (0.75 and 0.9 probe how close to the stated bound the kernel's
/// approximate LRU keeps it).
const ROUND_TRIP_FLOODS: [f64; 7] = [0.25, 0.5, 0.75, 0.9, 1.0, 2.0, 4.0];

/// How many packets each case runs.
struct Sizes {
    /// Timed packets of the ICMP, fragment and established cases.
    single: u64,
    /// Timed first SYNs, and timed established packets during a flood.
    syn: u64,
    /// The survival flood, in flow tables' worth of SYNs.
    flood_tables: u64,
    /// Legitimate handshakes per flood rate.
    handshakes: u64,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                single: 30_000,
                syn: 10_000,
                flood_tables: 2,
                handshakes: 10,
            }
        } else {
            Sizes {
                single: 1_000_000,
                syn: 200_000,
                flood_tables: 10,
                handshakes: 100,
            }
        }
    }
}

fn config(pin_dir: &Path) -> String {
    let reals = |port: u16| -> String {
        REALS
            .iter()
            .map(|a| format!("      - {{ address: {a}, port: {port} }}\n"))
            .collect()
    };
    format!(
        "interfaces: [c0, s0]\nserverfarms:\n  web:\n    algorithm: round-robin\n    reals:\n{}  dns:\n    algorithm: round-robin\n    reals:\n{}vips:\n  www: {{ address: {VIP}, port: 80, serverfarm: web }}\n  dns: {{ address: {VIP}, port: 53, protocol: udp, serverfarm: dns }}\nbpf: {{ pin_dir: {}, flow_table_size: {TABLE} }}\n",
        reals(8080),
        reals(5353),
        pin_dir.display()
    )
}

pub fn run(quick: bool) {
    let sizes = Sizes::new(quick);
    let deadline = Deadline::new(
        "the edges section",
        Duration::from_secs(if quick { 180 } else { 900 }),
    );
    let ns = Netns::new("bench-edge");
    setup_netns(&ns);
    let base = ns.bpf_pin_dir();
    ns.run(|| {
        pin_to_cpu0();
        let cfg = Config::parse(&config(&base.join("lb")), "bench.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut dp = Datapath::load_with(&cfg.bpf.pin_dir, cfg.bpf.flow_table_size, true)
            .expect("loading the datapath");
        let mut ctl = Control::new();
        ctl.apply(&cfg, &mut dp.maps).expect("programming the maps");
        let c0 = datapath::ifindex("c0").expect("c0");
        let s0 = datapath::ifindex("s0").expect("s0");
        dp.allow_redirect(c0).expect("TX_PORTS");
        dp.allow_redirect(s0).expect("TX_PORTS");
        let mut bench = Bench {
            dp,
            c0,
            s0,
            sizes,
            deadline,
            next_client: 0,
        };
        bench.cases();
        bench.dp.shutdown().expect("removing the datapath's pins");
    });
}

struct Bench {
    dp: Datapath,
    c0: u32,
    s0: u32,
    sizes: Sizes,
    deadline: Deadline,
    /// The next unused synthetic client (`testrun::client`).
    next_client: u64,
}

/// The forward `FLOWS` key of a client's flow to the VIP.
fn flow_key(c: (Ipv4Addr, u16), port: u16, proto: u8) -> FlowKey {
    FlowKey {
        src_addr: v4_mapped(c.0.octets()),
        dst_addr: v4_mapped(VIP.octets()),
        src_port_be: c.1.to_be(),
        dst_port_be: port.to_be(),
        proto,
        _pad: [0; 3],
    }
}

/// An output frame's IPv4 destination.
fn ip_dst(frame: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33])
}

/// Half-open flows `EMBRYOS` holds.
fn embryo_flows() -> u64 {
    datapath::embryo_table_size(TABLE) as u64 / 2
}

impl Bench {
    fn counter(&self, why: u32) -> u64 {
        self.dp.maps.stats.get(&why, 0).expect("STATS").iter().sum()
    }

    fn counters(&self) -> Vec<u64> {
        (0..reason::COUNT).map(|r| self.counter(r)).collect()
    }

    /// Asserts the reason counters moved from `before` by exactly `moved`
    /// (a reason listed twice adds up) and no other reason moved, but
    /// `FAST_PATH`.
    fn check_moved(&self, before: &[u64], moved: &[(u32, u64)], what: &str) {
        let now = self.counters();
        for r in 0..reason::COUNT {
            if r == reason::FAST_PATH {
                continue;
            }
            let want: u64 = moved.iter().filter(|m| m.0 == r).map(|m| m.1).sum();
            assert_eq!(
                now[r as usize] - before[r as usize],
                want,
                "{what}: counter {}",
                reason::NAMES[r as usize]
            );
        }
    }

    /// Takes `n` unused synthetic clients; the first one's index.
    fn take_clients(&mut self, n: u64) -> u64 {
        let first = self.next_client;
        self.next_client += n;
        first
    }

    /// One packet through the program, untimed: its verdict and output.
    fn run(&mut self, frame: &[u8], ingress: u32) -> (u32, Vec<u8>) {
        let (action, _, out) = run_once(self.dp.program(), frame, ingress);
        (action, out)
    }

    /// `count` SYNs from distinct new clients, untimed, each verdict
    /// checked (every one makes a half-open flow; the caller checks the
    /// counters).
    fn flood(&mut self, count: u64) {
        let first = self.take_clients(count);
        let c0 = self.c0;
        for i in 0..count {
            let syn = from_client(client(first + i), (VIP, 80), SYN, 1, 0).build();
            assert_eq!(self.run(&syn, c0).0, XDP_REDIRECT, "flood SYN {i}");
        }
    }

    /// A flood of `count` SYNs, bounded by the deadline, counters checked.
    fn flood_checked(&mut self, count: u64) {
        let before = self.counters();
        let mut left = count;
        while left > 0 {
            self.deadline.check();
            let n = left.min(4096);
            self.flood(n);
            left -= n;
        }
        self.check_moved(
            &before,
            &[(reason::FORWARD, count), (reason::NEW_FLOW, count)],
            "flood",
        );
    }

    /// Empties `EMBRYOS` from userspace (between timed runs that need room).
    fn clear_embryos(&mut self) {
        let keys: Vec<FlowKey> = self.dp.maps.embryos.keys().filter_map(Result::ok).collect();
        for k in &keys {
            let _ = self.dp.maps.embryos.remove(k);
        }
    }

    fn entries(&self, embryos: bool) -> usize {
        let m = &self.dp.maps;
        let table = if embryos { &m.embryos } else { &m.flows };
        table.keys().count()
    }

    /// A TCP handshake from `c` to VIP:80 (SYN, SYN-ACK, ACK), untimed; the
    /// real it reached. The caller checks the counters (2 forward, 1
    /// reverse, 1 new flow, 1 assured).
    fn handshake(&mut self, c: (Ipv4Addr, u16)) -> Ipv4Addr {
        let (c0, s0) = (self.c0, self.s0);
        let syn = from_client(c, (VIP, 80), SYN, 100, 0).build();
        let (action, out) = self.run(&syn, c0);
        assert_eq!(action, XDP_REDIRECT, "handshake SYN");
        let real = ip_dst(&out);
        let synack = from_real((real, 8080), c, SYN | ACK, 9000, 101).build();
        assert_eq!(self.run(&synack, s0).0, XDP_REDIRECT, "handshake SYN-ACK");
        let ack = from_client(c, (VIP, 80), ACK, 101, 9001).build();
        assert_eq!(self.run(&ack, c0).0, XDP_REDIRECT, "handshake ACK");
        real
    }

    /// Times `n` packets one syscall each. `step(self, i)` does the untimed
    /// work before the i-th (accounted for in `also`) and returns the frame
    /// to time. Every verdict is checked, and the counters: `want`'s reason
    /// moved by `n`, the reasons in `also` by theirs, nothing else.
    fn single(
        &mut self,
        n: u64,
        ingress: u32,
        want: (u32, u32),
        also: &[(u32, u64)],
        mut step: impl FnMut(&mut Self, u64) -> Vec<u8>,
    ) -> Batches {
        let before = self.counters();
        let mut b = Batches::new(n);
        for i in 0..n {
            self.deadline.check();
            let f = step(self, i);
            let (action, d, _) = run_once(self.dp.program(), &f, ingress);
            assert_eq!(action, want.0, "packet {i}: verdict");
            b.add(d);
        }
        let mut moved = vec![(want.1, n)];
        moved.extend_from_slice(also);
        self.check_moved(&before, &moved, reason::NAMES[want.1 as usize]);
        b
    }

    fn emit_case(&self, row: &str, verdict: String, single: &Batches) {
        emit(SECTION, row, "ns_single", format!("{:.1}", single.median()));
        emit(SECTION, row, "packets", single.count());
        emit(SECTION, row, "verdict", verdict);
        progress(format!("{row}: {:.1} ns (single)", single.median()));
    }

    fn cases(&mut self) {
        emit(SECTION, "setup", "flow_table_entries", TABLE);
        emit(
            SECTION,
            "setup",
            "embryo_table_entries",
            datapath::embryo_table_size(TABLE),
        );
        emit(SECTION, "setup", "flood_between", FLOOD_BETWEEN);
        let real = self.established();
        self.icmp_cases(real);
        self.fragment_case();
        self.established_cases();
        self.syn_cases();
        self.survival();
        self.round_trips();
    }

    /// The established flow the ICMP and established rows use: SYN,
    /// SYN-ACK, ACK, and the real's first ACK (so both directions have
    /// their next hops cached, as in the per-packet section).
    fn established(&mut self) -> Ipv4Addr {
        let before = self.counters();
        let real = self.handshake(EST_CLIENT);
        let reply = from_real((real, 8080), EST_CLIENT, ACK, 9001, 101).build();
        let s0 = self.s0;
        assert_eq!(self.run(&reply, s0).0, XDP_REDIRECT, "real's ACK");
        self.check_moved(
            &before,
            &[
                (reason::FORWARD, 2),
                (reason::REVERSE, 2),
                (reason::NEW_FLOW, 1),
                (reason::ASSURED, 1),
            ],
            "the established flow",
        );
        real
    }

    /// "Fragmentation needed" about the established flow, each way, as a
    /// router's kernel sends it: TOS 0xc0, quoting the IPv4 header and 40
    /// bytes of the TCP segment that was too big (1400 bytes of payload).
    fn icmp_cases(&mut self, real: Ipv4Addr) {
        let (c0, s0) = (self.c0, self.s0);
        let mtu = MTU.to_be_bytes();
        let frag_needed = (3, 4, [0, 0, mtu[0], mtu[1]]);
        let router = |src, dst| Ip {
            tos: 0xc0,
            id: 0,
            flags: 0,
            ..Ip::new(src, dst)
        };

        // From a router behind lb to the client, about client -> real (the
        // segment as lb forwarded it: TTL 63).
        let big = from_client(EST_CLIENT, (real, 8080), ACK | PSH, 101, 9001)
            .build_with(&[7u8; 1400], 63);
        let e = icmp_error_frame(
            real_mac(real),
            LB_S_MAC,
            &router(ROUTER_BEHIND, CLIENT),
            frag_needed,
            &big,
            20 + 40,
        );
        // The quote now names the VIP (its destination, at 58).
        self.icmp_row(
            "ICMP error to the client (frag needed)",
            &e,
            s0,
            reason::ICMP_ERROR_TO_CLIENT,
            (CLIENT, 58, VIP),
        );

        // From a router in front of lb to the VIP, about VIP -> client (the
        // real's answer as lb sent it, TTL 62 at the router).
        let reply =
            from_real((VIP, 80), EST_CLIENT, ACK | PSH, 9001, 101).build_with(&[9u8; 1400], 62);
        let e = icmp_error_frame(
            CLIENT_MAC,
            LB_C_MAC,
            &router(ROUTER_FRONT, VIP),
            frag_needed,
            &reply,
            20 + 40,
        );
        // The quote now names the real (its source, at 54).
        self.icmp_row(
            "ICMP error to the real (frag needed to the VIP)",
            &e,
            c0,
            reason::ICMP_ERROR_TO_REAL,
            (real, 54, real),
        );
    }

    /// One ICMP error row: `e` into `ingress` once untimed, checked to be
    /// forwarded to `to` with `names` at offset `at` of its output (the
    /// rewritten quote) and counted once as `why`; then timed.
    fn icmp_row(
        &mut self,
        row: &str,
        e: &[u8],
        ingress: u32,
        why: u32,
        (to, at, names): (Ipv4Addr, usize, Ipv4Addr),
    ) {
        let before = self.counters();
        let (action, out) = self.run(e, ingress);
        assert_eq!(action, XDP_REDIRECT, "{row}");
        assert_eq!(ip_dst(&out), to, "{row}: where the error goes");
        assert_eq!(&out[at..at + 4], &names.octets(), "{row}: its quote");
        self.check_moved(&before, &[(why, 1)], row);
        let want = (XDP_REDIRECT, why);
        let n = self.sizes.single;
        let b = self.single(n, ingress, want, &[], |_, _| e.to_vec());
        self.emit_case(row, verdict_name(want.0, want.1), &b);
    }

    /// A 3000-byte UDP datagram to the VIP in three fragments: per datagram
    /// (each its own IP id), the first fragment untimed (it is translated
    /// with its ports and records the translation in `FRAGS`), then both
    /// later fragments timed.
    fn fragment_case(&mut self) {
        let (c0, s0) = (self.c0, self.s0);
        let payload: Vec<u8> = (0..DATAGRAM).map(|i| (i % 251) as u8).collect();
        let h = Ip {
            id: 0,
            flags: 0,
            ..Ip::new(UDP_CLIENT.0, VIP)
        };
        let dgram = udp_frame(CLIENT_MAC, LB_C_MAC, &h, (UDP_CLIENT.1, 53), &payload);
        let frags = fragments(&dgram, FRAGMENT);
        assert_eq!(frags.len(), 3, "three fragments");

        // Datagram 0, whole: its first fragment makes the flow, the real's
        // answer assures it.
        let before = self.counters();
        let (action, out) = self.run(&frags[0], c0);
        assert_eq!(action, XDP_REDIRECT, "first fragment");
        let real = ip_dst(&out);
        for f in &frags[1..] {
            let (action, out) = self.run(f, c0);
            assert_eq!(action, XDP_REDIRECT, "later fragment");
            assert_eq!(ip_dst(&out), real, "later fragment to the first's real");
        }
        let answer = udp_frame(
            real_mac(real),
            LB_S_MAC,
            &Ip::new(real, UDP_CLIENT.0),
            (5353, UDP_CLIENT.1),
            b"answer",
        );
        assert_eq!(self.run(&answer, s0).0, XDP_REDIRECT, "the real's answer");
        self.check_moved(
            &before,
            &[
                (reason::FORWARD, 1),
                (reason::FRAGMENT, 2),
                (reason::REVERSE, 1),
                (reason::NEW_FLOW, 1),
                (reason::ASSURED, 1),
            ],
            "the fragmented UDP flow",
        );
        let key = flow_key(UDP_CLIENT, 53, PROTO_UDP);
        assert!(
            self.dp.maps.flows.get(&key, 0).is_ok(),
            "the UDP flow is in FLOWS"
        );

        let n = self.sizes.single & !1;
        let want = (XDP_REDIRECT, reason::FRAGMENT);
        let b = self.single(n, c0, want, &[(reason::FORWARD, n / 2)], |b, i| {
            let id = (1 + i / 2) as u16;
            if i % 2 == 0 {
                let mut first = frags[0].clone();
                set_ip_id(&mut first, id);
                assert_eq!(b.run(&first, c0).0, XDP_REDIRECT, "first fragment");
            }
            let mut later = frags[1 + (i % 2) as usize].clone();
            set_ip_id(&mut later, id);
            later
        });
        self.emit_case("later fragment, forward", verdict_name(want.0, want.1), &b);
    }

    /// The established flow's client packet, without and during a flood
    /// (`FLOOD_BETWEEN` SYNs before each, `EMBRYOS` full from the start).
    fn established_cases(&mut self) {
        let (c0, n) = (self.c0, self.sizes.single);
        let est = from_client(EST_CLIENT, (VIP, 80), ACK, 101, 9001).build();
        let want = (XDP_REDIRECT, reason::FORWARD);
        let fast = self.counter(reason::FAST_PATH);
        let started = std::time::Instant::now();
        let b = self.single(n, c0, want, &[], |_, _| est.clone());
        self.check_fast_path(fast, n, started);
        self.emit_case("established, forward", verdict_name(want.0, want.1), &b);

        self.flood_checked(embryo_flows());
        let n = self.sizes.syn;
        let k = FLOOD_BETWEEN;
        let fast = self.counter(reason::FAST_PATH);
        let started = std::time::Instant::now();
        let also = [(reason::FORWARD, n * k), (reason::NEW_FLOW, n * k)];
        let b = self.single(n, c0, want, &also, |b, _| {
            b.flood(k);
            est.clone()
        });
        self.check_fast_path(fast, n, started);
        self.emit_case(
            "established, forward, during a flood",
            verdict_name(want.0, want.1),
            &b,
        );
    }

    /// All but one packet per second took the fast path (its cached hop
    /// ages out about every second; see packet.rs).
    fn check_fast_path(&self, before: u64, n: u64, started: std::time::Instant) {
        let full = n - (self.counter(reason::FAST_PATH) - before);
        let refreshes = started.elapsed().as_secs() + 1;
        assert!(
            full <= refreshes,
            "{full} established packets took the full path; their hop's age allows {refreshes}"
        );
    }

    /// First SYNs from distinct clients: into an `EMBRYOS` with room
    /// (emptied from userspace every half table), then into a full one,
    /// where each SYN's two entries evict two others.
    fn syn_cases(&mut self) {
        let (c0, n) = (self.c0, self.sizes.syn);
        let want = (XDP_REDIRECT, reason::FORWARD);
        let chunk = embryo_flows() / 2;
        self.clear_embryos();
        let first = self.take_clients(n);
        let b = self.single(n, c0, want, &[(reason::NEW_FLOW, n)], |b, i| {
            if i > 0 && i % chunk == 0 {
                b.clear_embryos();
            }
            from_client(client(first + i), (VIP, 80), SYN, 1, 0).build()
        });
        self.emit_case("first SYN", "XDP_REDIRECT (forward, new_flow)".into(), &b);

        self.flood_checked(2 * embryo_flows());
        emit(
            SECTION,
            "setup",
            "embryos_entries_in_flood",
            self.entries(true),
        );
        let first = self.take_clients(n);
        let b = self.single(n, c0, want, &[(reason::NEW_FLOW, n)], |_, i| {
            from_client(client(first + i), (VIP, 80), SYN, 1, 0).build()
        });
        self.emit_case(
            "first SYN during a flood",
            "XDP_REDIRECT (forward, new_flow)".into(),
            &b,
        );
    }

    /// Established flows (a fifth of the flow table's room) through a
    /// flood of `flood_tables` flow tables' worth of SYNs: how many still
    /// reach their own real, from the entry they had.
    fn survival(&mut self) {
        let (c0, deadline) = (self.c0, self.deadline);
        let flows = TABLE as u64 / 2 / 5;
        let first = self.take_clients(flows);
        let before = self.counters();
        let mut reals = Vec::new();
        for i in 0..flows {
            deadline.check();
            reals.push(self.handshake(client(first + i)));
        }
        self.check_moved(
            &before,
            &[
                (reason::FORWARD, 2 * flows),
                (reason::REVERSE, flows),
                (reason::NEW_FLOW, flows),
                (reason::ASSURED, flows),
            ],
            "the established flows",
        );
        let flows_before = self.entries(false);
        let syns = self.sizes.flood_tables * TABLE as u64;
        progress(format!(
            "flooding {syns} SYNs past {flows} established flows"
        ));
        self.flood_checked(syns);
        let flows_after = self.entries(false);
        let embryos = self.entries(true);

        let before = self.counters();
        let (mut survived, mut lost) = (0u64, 0u64);
        for (i, &real) in reals.iter().enumerate() {
            let c = client(first + i as u64);
            let held = self
                .dp
                .maps
                .flows
                .get(&flow_key(c, 80, PROTO_TCP), 0)
                .is_ok();
            let data = from_client(c, (VIP, 80), ACK | PSH, 101, 9001).build();
            let (action, out) = self.run(&data, c0);
            assert_eq!(action, XDP_REDIRECT, "established flow {i} after the flood");
            if held && ip_dst(&out) == real {
                survived += 1;
            }
            if !held {
                // Picked up mid-stream as a new flow, on whatever real.
                lost += 1;
            }
        }
        self.check_moved(
            &before,
            &[(reason::FORWARD, flows), (reason::NEW_FLOW, lost)],
            "the established flows after the flood",
        );
        let row = format!("flood of {}× the flow table", self.sizes.flood_tables);
        emit(SECTION, &row, "flood_syns", syns);
        emit(SECTION, &row, "flows", flows);
        emit(SECTION, &row, "survived", survived);
        emit(SECTION, &row, "flows_entries_before", flows_before);
        emit(SECTION, &row, "flows_entries_after", flows_after);
        emit(SECTION, &row, "embryos_entries_after", embryos);
        progress(format!(
            "{row}: {survived} of {flows} established flows survived"
        ));
    }

    /// Legitimate handshakes with `r` × `EMBRYOS`' flows of flood SYNs
    /// between each one's SYN and its real's SYN-ACK (the flood arriving
    /// within its round trip), `EMBRYOS` full of the flood beforehand.
    /// Completed: the SYN-ACK translated, and the ACK moved the flow into
    /// `FLOWS` on the real its SYN reached.
    fn round_trips(&mut self) {
        let (c0, s0, n) = (self.c0, self.s0, self.sizes.handshakes);
        for r in ROUND_TRIP_FLOODS {
            let per = (r * embryo_flows() as f64) as u64;
            let before = self.counters();
            let (mut completed, mut untranslated, mut picked_up, mut assured) =
                (0u64, 0u64, 0u64, 0u64);
            for _ in 0..n {
                self.deadline.check();
                let c = client(self.take_clients(1));
                let syn = from_client(c, (VIP, 80), SYN, 100, 0).build();
                let (action, out) = self.run(&syn, c0);
                assert_eq!(action, XDP_REDIRECT, "legitimate SYN");
                let real = ip_dst(&out);
                self.flood(per);
                let synack = from_real((real, 8080), c, SYN | ACK, 9000, 101).build();
                let (action, _) = self.run(&synack, s0);
                let translated = match action {
                    XDP_REDIRECT => true,
                    // Its reply entry was evicted: not a known reply.
                    XDP_PASS => false,
                    other => panic!("SYN-ACK: verdict {other}"),
                };
                untranslated += u64::from(!translated);
                let (new0, assured0) = (
                    self.counter(reason::NEW_FLOW),
                    self.counter(reason::ASSURED),
                );
                let ack = from_client(c, (VIP, 80), ACK, 101, 9001).build();
                assert_eq!(self.run(&ack, c0).0, XDP_REDIRECT, "legitimate ACK");
                let moved = self.counter(reason::ASSURED) - assured0;
                picked_up += self.counter(reason::NEW_FLOW) - new0;
                assured += moved;
                let own = self
                    .dp
                    .maps
                    .flows
                    .get(&flow_key(c, 80, PROTO_TCP), 0)
                    .is_ok_and(|f| f.nat_addr == v4_mapped(real.octets()));
                if translated && moved == 1 && own {
                    completed += 1;
                }
            }
            self.check_moved(
                &before,
                &[
                    (reason::FORWARD, n * (2 + per)),
                    (reason::REVERSE, n - untranslated),
                    (reason::PASS_NOT_OURS, untranslated),
                    (reason::NEW_FLOW, n * (1 + per) + picked_up),
                    (reason::ASSURED, assured),
                ],
                "handshakes during a flood",
            );
            let row =
                format!("handshakes with {r}× EMBRYOS flows of flood SYNs in their round trip");
            emit(SECTION, &row, "ratio", r);
            emit(SECTION, &row, "flood_syns", per);
            emit(SECTION, &row, "handshakes", n);
            emit(SECTION, &row, "completed", completed);
            emit(SECTION, &row, "synack_untranslated", untranslated);
            emit(SECTION, &row, "ack_without_flow", picked_up);
            progress(format!("{row}: {completed} of {n} completed"));
        }
    }
}
