//! A flow's cached next hop, the datapath's clock, and the fast path.
use lb_common::{Counters, Flow, ST_ESTABLISHED, ST_FIN};
use lb_userspace::datapath;

use super::*;

pub fn cases() -> Vec<Case> {
    let mut cases = chain(hop_cache);
    cases.extend(chain(hop_peer));
    cases.extend(chain(hop_mtu));
    cases.push(clock());
    cases.extend(chain(fast_path));
    cases
}

// --- The next-hop cache (lb_common::Hop): used while valid, asked again
// when `HOP_GEN` moves, when older than `HOP_MAX_AGE`, or for a packet
// larger than its MTU. No agent runs here, so only the fixture bumps
// `HOP_GEN`. ---

const HOP_PORT: u16 = 40600;
/// The real a fresh datapath's first web flow goes to.
const REAL: Ipv4Addr = WEB_SCHED[0];
const MOVED: Mac = [2, 0, 0, 0, 9, 9];

fn hop_pkt(flags: u8, payload: &[u8]) -> Pkt {
    tcp_in(HOP_PORT, (VIP, 80), flags, 2, 0, payload)
}

/// The flow's next packet, forwarded to the MAC `to`.
fn next(name: &str, to: Mac) -> Step {
    forwarded(name, hop_pkt(ACK, b"").build())
        .then(move |_, out| assert_eq!(out[..6], to, "the MAC it went to"))
}

/// The real's neighbour entry set to `mac`.
fn neigh(mac: Mac) -> impl Fn(&mut Fixture) {
    move |fx| {
        let (r, m) = (REAL.to_string(), mac_text(mac));
        fx.ip(&[
            "neigh",
            "replace",
            &r,
            "lladdr",
            &m,
            "dev",
            "s0",
            "nud",
            "permanent",
        ]);
    }
}

fn hop_cache() -> Vec<Step> {
    vec![
        fwd("hop: SYN", &hop_pkt(SYN, b""), REAL, 8080),
        next(
            "hop: the flow's next packet looks its hop up and caches it",
            real_mac(REAL),
        ),
        next(
            "hop: the cached hop is used while HOP_GEN stands (a new MAC is not seen)",
            real_mac(REAL),
        )
        .before(neigh(MOVED)),
        next("hop: after HOP_GEN moves the FIB is asked again", MOVED)
            .before(Fixture::bump_hop_gen),
        // The age bound, for when no agent watches the kernel.
        next(
            "hop: a cached hop older than HOP_MAX_AGE is asked again",
            real_mac(REAL),
        )
        .before(|fx| {
            neigh(real_mac(REAL))(fx);
            std::thread::sleep(std::time::Duration::from_millis(1150));
        }),
    ]
}

/// A hop out of a port in `PEER_PORTS` (a veth whose peer is in another
/// namespace) is marked for `bpf_redirect_peer`; the frame is the same.
/// The test run cannot follow a redirect, so the e2e tests on the tc hook
/// prove the peer path itself.
fn hop_peer() -> Vec<Step> {
    const PORT: u16 = 40650;
    let pkt = |flags| tcp_in(PORT, (VIP, 80), flags, 2, 0, b"");
    let marked = |want: u16| {
        move |fx: &mut Fixture, _: &[u8]| {
            let hop = fx.flow(PORT).expect("the flow").fwd.hop;
            assert_eq!(hop.flags, want, "the cached hop's flags: {hop:?}");
        }
    };
    vec![
        fwd("hop peer: SYN", &pkt(SYN), REAL, 8080),
        fwd(
            "hop peer: a port not in PEER_PORTS caches a plain hop",
            &pkt(ACK),
            REAL,
            8080,
        )
        .then(marked(0)),
        fwd(
            "hop peer: s0 in PEER_PORTS: the next lookup marks the hop HOP_PEER, the frame the same",
            &pkt(ACK),
            REAL,
            8080,
        )
        .before(|fx| {
            let s0 = fx.ifindex(S0);
            fx.dp().set_peer_port(s0, true).expect("PEER_PORTS");
            fx.bump_hop_gen();
        })
        .then(marked(lb_common::HOP_PEER)),
    ]
}

/// The route's MTU is cached with the hop; a larger packet meets the FIB's
/// own check.
fn hop_mtu() -> Vec<Step> {
    let big = hop_pkt(ACK | PSH, &[0u8; 1100]);
    let mut may_fragment = big.clone();
    may_fragment.frag = (0, 0);
    vec![
        fwd("", &hop_pkt(SYN, b""), REAL, 8080),
        next(
            "hop: a small packet caches the hop with the route's MTU",
            real_mac(REAL),
        )
        .before(|fx| {
            fx.ip(&["link", "set", "s0", "mtu", "1000"]);
            fx.bump_hop_gen();
        })
        .then(|fx, _| {
            let hop = fx.flow(HOP_PORT).expect("the flow").fwd.hop;
            assert_eq!(hop.mtu, 1000, "the helper's mtu_result: {hop:?}");
        }),
        // DF set: lb answers itself, quoting the packet as the client sent
        // it (the kernel's message would quote the real).
        Step {
            name: "hop: a DF packet larger than the route's MTU is answered with frag needed"
                .into(),
            send: big.build(),
            verdict: XDP_REDIRECT,
            reason: reason::ICMP_FRAG_NEEDED,
            out: Out::Exact(edges::frag_needed(&big, VIP, 1000)),
            ..Step::default()
        },
        Step {
            name: "hop: a packet without DF larger than the MTU goes to the kernel to fragment"
                .into(),
            send: may_fragment.build(),
            verdict: XDP_PASS,
            reason: reason::PASS_FIB,
            ..Step::default()
        },
    ]
}

/// The datapath's clock (lb-ebpf/src/clock.rs): jiffies scaled by what
/// `Datapath::load` measured, read into every flow timestamp; it must agree
/// with CLOCK_MONOTONIC, the agent's clock, to a few ticks.
fn clock() -> Case {
    Case::code(
        "clock: a flow's timestamp is CLOCK_MONOTONIC to three ticks",
        |fx| {
            let clock = fx.dp().clock();
            let ticks = [1_000_000, 3_333_333, 4_000_000, 10_000_000];
            assert!(
                ticks.contains(&clock.tick_ns),
                "the load measured the kernel's tick: {clock:?}"
            );
            let before = datapath::now_ns();
            fx.step(&fwd(
                "clock: a new flow",
                &tcp_in(40800, (VIP, 80), SYN, 1, 0, b""),
                REAL,
                8080,
            ));
            fx.passed("clock: a new flow");
            let after = datapath::now_ns();
            // The datapath's time is that of the last tick: up to a tick (and
            // the tick the coarse clock may lead jiffies by) before the call.
            let created = fx.flow(40800).expect("the flow").fwd.created_ns;
            assert!(
                created + 3 * clock.tick_ns >= before && created <= after,
                "created at {created}, called between {before} and {after} (tick {} ns)",
                clock.tick_ns
            );
        },
    )
}

// --- The fast path (lb-ebpf's fast.rs): an established flow's plain
// segments must come out exactly as by the full path: the same bytes,
// counters, sequence tracking; and every packet it declines (TTL 1, a FIN)
// must still meet the full path's rules. ---

const FAST_PORT: u16 = 40700;

/// What the fast path must keep as the full path would.
#[derive(Clone, Copy)]
struct Snap {
    fwd: Flow,
    rev: Flow,
    vip: Counters,
    real: Counters,
    fast: u64,
}

fn snap(fx: &mut Fixture) -> Snap {
    let f = fx.flow_in(FAST_PORT, false).expect("the assured flow");
    let (vip, real) = (fx.vip_id("www"), fx.real_id(REAL, 8080));
    Snap {
        fwd: f.fwd,
        rev: f.rev.expect("its reverse entry").1,
        vip: fx.vip_counters(vip),
        real: fx.real_counters(real),
        fast: fx.counter(reason::FAST_PATH),
    }
}

/// Data both ways after `was`: one client segment of 43 IP bytes, two of
/// the real's of 45, all by the fast path.
fn after_data(fx: &mut Fixture, was: Snap) {
    let now = snap(fx);
    assert_eq!(now.fast, was.fast + 2, "the fast path was taken");
    let (f, r) = (now.fwd, now.rev);
    assert_eq!(
        (f.packets, f.bytes),
        (was.fwd.packets + 1, was.fwd.bytes + 43)
    );
    assert_eq!(
        (r.packets, r.bytes),
        (was.rev.packets + 2, was.rev.bytes + 90)
    );
    assert_eq!((f.seq_next, r.seq_next), (104, 9006), "sequence tracking");
    assert!(f.last_ns >= was.fwd.last_ns && r.last_ns >= was.rev.last_ns);
    assert_eq!(fx.flow_state(FAST_PORT), Some(ST_ESTABLISHED));
    for (was, now) in [(was.vip, now.vip), (was.real, now.real)] {
        assert_eq!(
            (now.packets_in, now.bytes_in),
            (was.packets_in + 1, was.bytes_in + 43)
        );
        assert_eq!(
            (now.packets_out, now.bytes_out),
            (was.packets_out + 2, was.bytes_out + 90)
        );
        assert_eq!(now.new_flows, was.new_flows);
    }
}

fn fast_path() -> Vec<Step> {
    let tcp = |flags: u8, seq: u32, ack: u32, data: &[u8]| {
        tcp_in(FAST_PORT, (VIP, 80), flags, seq, ack, data)
    };
    let reply =
        |flags: u8, seq: u32, data: &[u8]| tcp_out((REAL, 8080), FAST_PORT, flags, seq, 101, data);
    let answer = reply(ACK | PSH, 9001, b"hello");
    let mut last_hop = tcp(ACK, 104, 9006, b"");
    last_hop.ttl = 1;
    // Counters before the data, and before the declined packets.
    let (data0, declined0) = (Saved::new(), Saved::new());
    let (data1, declined1, declined2) = (data0.clone(), declined0.clone(), declined0.clone());
    vec![
        fwd("fast: SYN", &tcp(SYN, 100, 0, b""), REAL, 8080),
        rev("fast: SYN-ACK", &reply(SYN | ACK, 9000, b""), VIP, 80),
        fwd("fast: ACK", &tcp(ACK, 101, 9001, b""), REAL, 8080)
            .then(|fx, _| assert_eq!(fx.flow_state(FAST_PORT), Some(ST_ESTABLISHED))),
        // Both directions' hops are cached now: data goes the fast way.
        fwd(
            "fast: client data",
            &tcp(ACK | PSH, 101, 9001, b"abc"),
            REAL,
            8080,
        )
        .before(data0.keep(snap)),
        rev("fast: real's data", &answer, VIP, 80),
        // The real's first data segment moves the reverse entry from syn
        // to established (the full path); its second goes the fast way too.
        rev("fast: real's data again", &answer, VIP, 80)
            .then(move |fx, _| after_data(fx, data1.get())),
        // Declined: TTL 1 is the kernel's to answer, and counts nothing.
        passed(
            "fast: TTL 1 of a flow is passed",
            C0,
            last_hop.build(),
            reason::PASS_TTL,
        )
        .before(declined0.keep(snap))
        .then(move |fx, _| {
            let was = declined1.get().fwd.packets;
            assert_eq!(snap(fx).fwd.packets, was, "not counted");
        }),
        // Declined: a FIN moves the state (the full path's job), and is
        // still forwarded to the flow's real.
        fwd(
            "fast: the client's FIN",
            &tcp(FIN | ACK, 104, 9006, b""),
            REAL,
            8080,
        )
        .then(move |fx, _| {
            assert_eq!(fx.flow_state(FAST_PORT), Some(ST_FIN));
            let now = snap(fx);
            assert_eq!(now.fwd.seq_next, 105, "a FIN takes a sequence number");
            assert_eq!(now.fast, declined2.get().fast, "neither took the fast path");
        }),
    ]
}
