//! Fixtures for the datapath at the edges: ICMP errors translated both ways,
//! lb's own "fragmentation needed", IPv4 fragments both ways, a port reused
//! out of TIME_WAIT, established flows under a flood of new ones, a
//! half-open flow's lost reply entry, and a VLAN tag on the way out. Every
//! expected frame is built from scratch by pnet, inner checksums included.
use std::net::Ipv4Addr;

use pnet::packet::{
    icmp::{self, MutableIcmpPacket},
    ipv4::{self, MutableIpv4Packet},
};

use lb_common::{ST_FIN, ST_SYN};
use lb_tests::frames::fragments;
use lb_userspace::datapath;

use super::*;

/// A router between lb and the reals, and one in front of lb.
const ROUTER_BEHIND: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
const ROUTER_FRONT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

/// An ICMP error frame: `outer` (an `L4::Icmp` packet) with its four
/// bytes after the checksum set to `rest` (unused, or the next-hop MTU),
/// checksums computed from scratch.
fn icmp_frame(outer: &Pkt, rest: [u8; 4]) -> Vec<u8> {
    let mut f = outer.build();
    let off = if outer.vlan.is_some() { 18 } else { 14 } + 20;
    f[off + 4..off + 8].copy_from_slice(&rest);
    let mut i = MutableIcmpPacket::new(&mut f[off..]).unwrap();
    i.set_checksum(0);
    let c = icmp::checksum(&i.to_immutable());
    i.set_checksum(c);
    f
}

/// An ICMP error `kind`/`code` from `src` to `dst` quoting the first
/// `quote` bytes of `inner`'s IPv4 packet.
fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, kind: u8, code: u8, inner: &Pkt, quote: usize) -> Pkt {
    let b = inner.build();
    Pkt::ip(
        src,
        dst,
        L4::Icmp {
            kind,
            code,
            payload: b[14..14 + quote].to_vec(),
        },
    )
}

/// "Fragmentation needed, MTU `mtu`" from `from` to `orig`'s sender,
/// quoting `orig`'s IPv4 header and 64 bytes after it.
pub fn frag_needed(orig: &Pkt, from: Ipv4Addr, mtu: u16) -> Vec<u8> {
    let mtu = mtu.to_be_bytes();
    let b = orig.build();
    lb_icmp4(orig, from, (3, 4, [0, 0, mtu[0], mtu[1]]), &b[14..14 + 84])
}

/// An ICMP error (`kind`, `code`, the four bytes after the checksum) from
/// `from` to `orig`'s sender carrying `quote`, as lb sends it back out the
/// interface `orig` came in by: the MACs swapped, TOS 0xc0, TTL 64, id 0.
pub fn lb_icmp4(
    orig: &Pkt,
    from: Ipv4Addr,
    (kind, code, rest): (u8, u8, [u8; 4]),
    quote: &[u8],
) -> Vec<u8> {
    let mut p = Pkt::ip(
        from,
        orig.src,
        L4::Icmp {
            kind,
            code,
            payload: quote.to_vec(),
        },
    );
    p.src_mac = orig.dst_mac;
    p.dst_mac = orig.src_mac;
    p.ttl = 64;
    p.id = 0;
    p.frag = (0, 0);
    let mut f = icmp_frame(&p, rest);
    let mut ip = MutableIpv4Packet::new(&mut f[14..]).unwrap();
    ip.set_dscp(0xc0 >> 2);
    let c = ipv4::checksum(&ip.to_immutable());
    ip.set_checksum(c);
    f
}

/// A frame's TCP/UDP source port set to `port` (checksums recomputed).
fn with_sport(p: &Pkt, port: u16) -> Pkt {
    let mut p = p.clone();
    match &mut p.l4 {
        L4::Tcp { sport, .. } | L4::Udp { sport, .. } => *sport = port,
        L4::Icmp { .. } => unreachable!(),
    }
    p
}

/// The packet as lb forwards it toward the client: TTL one less, via c0.
fn toward_client(p: &Pkt) -> Pkt {
    let mut p = p.clone();
    p.ttl -= 1;
    p.src_mac = LB_C_MAC;
    p.dst_mac = CLIENT_MAC;
    p
}

/// The packet as lb forwards it toward `real`: TTL one less, via s0.
fn toward_real(p: &Pkt, real: Ipv4Addr) -> Pkt {
    let mut p = p.clone();
    p.ttl -= 1;
    p.src_mac = LB_S_MAC;
    p.dst_mac = real_mac(real);
    p
}

pub fn cases() -> Vec<Case> {
    let mut cases = icmp_cases();
    cases.extend(chain(fragments_both_ways));
    cases.extend(reuse_cases());
    cases.push(flood());
    cases.extend(chain(half_open));
    cases.push(too_big_reply());
    cases.push(Case::one(vlan()));
    cases
}

/// The real a fresh datapath's first web flow goes to.
const REAL: Ipv4Addr = WEB_SCHED[0];

/// `step` after a handshake from the client's `port`.
fn after_handshake(port: u16, step: Step) -> Case {
    Case::new(&step.name.clone(), vec![step]).setup(move |fx| {
        assert_eq!(handshake(fx, port), REAL, "the first pick");
    })
}

/// ICMP errors about a flow, both ways, every checksum checked.
fn icmp_cases() -> Vec<Case> {
    let port = 44000;
    // A router behind lb cannot forward the client's 1400-byte segment.
    let mut big = Pkt::tcp((CLIENT, port), (REAL, 8080), ACK | PSH, 101, &[7u8; 1400]);
    big.ttl = 62;
    let mut big_vip = big.clone();
    big_vip.dst = VIP;
    set_dport(&mut big_vip, 80);
    let mtu1280 = [0, 0, 0x05, 0x00];
    let mut steps = Vec::new();
    for (quote, what) in [(60, "the quoted TCP checksum"), (28, "a quote of 8 bytes")] {
        let e = from_real(icmp_error(ROUTER_BEHIND, CLIENT, 3, 4, &big, quote));
        let want = toward_client(&icmp_error(ROUTER_BEHIND, CLIENT, 3, 4, &big_vip, quote));
        steps.push(Step {
            name: format!("frag needed from a router behind lb: quote names the VIP ({what})"),
            on: S0,
            send: icmp_frame(&e, mtu1280),
            verdict: XDP_REDIRECT,
            reason: reason::ICMP_ERROR_TO_CLIENT,
            out: Out::Exact(icmp_frame(&want, mtu1280)),
            ..Step::default()
        });
    }
    let e = from_real(icmp_error(ROUTER_BEHIND, CLIENT, 11, 0, &big, 48));
    let want = toward_client(&icmp_error(ROUTER_BEHIND, CLIENT, 11, 0, &big_vip, 48));
    steps.push(Step {
        name: "time exceeded behind lb: quote names the VIP".into(),
        on: S0,
        send: e.build(),
        verdict: XDP_REDIRECT,
        reason: reason::ICMP_ERROR_TO_CLIENT,
        out: Out::Exact(want.build()),
        ..Step::default()
    });

    // A router in front of lb cannot forward the real's answer (sent as the
    // VIP): the error, addressed to the VIP, goes to the real.
    let mut reply_vip = Pkt::tcp((VIP, 80), (CLIENT, port), ACK | PSH, 501, &[9u8; 1400]);
    reply_vip.ttl = 62;
    let mut reply_real = reply_vip.clone();
    reply_real.src = REAL;
    reply_real = with_sport(&reply_real, 8080);
    let e = from_client(icmp_error(ROUTER_FRONT, VIP, 3, 4, &reply_vip, 60));
    let want = toward_real(&icmp_error(ROUTER_FRONT, REAL, 3, 4, &reply_real, 60), REAL);
    steps.push(Step {
        name: "frag needed to the VIP from a router in front goes to the real".into(),
        on: C0,
        send: icmp_frame(&e, mtu1280),
        verdict: XDP_REDIRECT,
        reason: reason::ICMP_ERROR_TO_REAL,
        out: Out::Exact(icmp_frame(&want, mtu1280)),
        ..Step::default()
    });
    let e = from_client(icmp_error(ROUTER_FRONT, VIP, 12, 0, &reply_vip, 60));
    let want = toward_real(
        &icmp_error(ROUTER_FRONT, REAL, 12, 0, &reply_real, 60),
        REAL,
    );
    steps.push(Step {
        name: "parameter problem to the VIP goes to the real".into(),
        on: C0,
        send: e.build(),
        verdict: XDP_REDIRECT,
        reason: reason::ICMP_ERROR_TO_REAL,
        out: Out::Exact(want.build()),
        ..Step::default()
    });
    let mut other = reply_vip.clone();
    other.dst = Ipv4Addr::new(192, 0, 2, 77);
    let e = from_client(icmp_error(ROUTER_FRONT, VIP, 3, 4, &other, 60));
    steps.push(dropped(
        "frag needed to the VIP about no flow is dropped",
        e.build(),
        reason::DROP_ICMP_NO_FLOW,
    ));
    steps
        .into_iter()
        .map(|s| after_handshake(port, s))
        .collect()
}

/// Fragments of `p` at 1480 bytes, each sent on `on`, to come out as the
/// fragments of `want`; the first's reason is `first`, the others'
/// `FRAGMENT`.
fn fragment_steps(names: [&str; 2], on: Side, p: &Pkt, want: &Pkt, first: u32) -> Vec<Step> {
    let ins = fragments(&p.build(), 1480);
    let outs = fragments(&want.build(), 1480);
    assert_eq!(ins.len(), 3);
    let step = |i: usize| Step {
        name: names[i.min(1)].into(),
        on,
        send: ins[i].clone(),
        verdict: XDP_REDIRECT,
        reason: if i == 0 { first } else { reason::FRAGMENT },
        out: Out::Exact(outs[i].clone()),
        ..Step::default()
    };
    (0..3).map(step).collect()
}

/// A 3000-byte UDP datagram each way, in fragments, through the dns VIP.
fn fragments_both_ways() -> Vec<Step> {
    let dns_real = R1;
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let mut q = from_client(Pkt::udp((CLIENT, 45000), (VIP, 53), &payload));
    q.frag = (0, 0);
    q.id = 0x5151;
    let mut q_real = toward_real(&q, dns_real);
    q_real.dst = dns_real;
    set_dport(&mut q_real, 5353);
    // The answer, as big, fragmented by the real's kernel.
    let mut a = from_real(Pkt::udp((dns_real, 5353), (CLIENT, 45000), &payload));
    a.frag = (0, 0);
    a.id = 0x6262;
    let mut a_vip = toward_client(&a);
    a_vip.src = VIP;
    a_vip = with_sport(&a_vip, 53);
    let mut steps = fragment_steps(
        [
            "first fragment to a VIP: translated with its ports",
            "later fragment to a VIP follows its first",
        ],
        C0,
        &q,
        &q_real,
        reason::FORWARD,
    );
    // Out of order from the server side: not known yet, passed as any
    // routed host's fragment would be.
    let early = fragments(&a.build(), 1480).remove(2);
    steps.push(passed(
        "a real's later fragment before its first is passed as not ours",
        S0,
        early,
        reason::PASS_NOT_OURS,
    ));
    steps.extend(fragment_steps(
        [
            "a real's first fragment: translated with its ports",
            "a real's later fragment follows its first",
        ],
        S0,
        &a,
        &a_vip,
        reason::REVERSE,
    ));
    steps
}

/// A client reusing its port after the connection ended (TIME_WAIT), and
/// a SYN on an established flow (a retransmission).
fn reuse_cases() -> Vec<Case> {
    let port = 44100;
    let syn = tcp_in(port, (VIP, 80), SYN, 90_000, 0, b"");
    let name = "a SYN on a finished flow starts a new one with a fresh pick";
    let fresh = forwarded(name, syn.build()).then(move |fx, out| {
        assert_eq!(fx.counter(reason::TUPLE_REUSE), 1);
        let f = fx.flow(port).expect("the new flow");
        let now = Ipv4Addr::from(<[u8; 4]>::try_from(&f.fwd.nat_addr[12..]).unwrap());
        assert_ne!(now, REAL, "a live real, not the dead one");
        assert_eq!(out, dnat(&syn, now, 8080));
        assert_eq!((f.fwd.packets, f.state()), (1, ST_SYN), "fresh counters");
    });
    let finished = Case::one(fresh).setup(move |fx| {
        let real = handshake(fx, port);
        let fin = tcp_in(port, (VIP, 80), FIN | ACK, 101, 501, b"");
        fx.run(C0, &fin.build());
        let fin2 = tcp_out((real, 8080), port, FIN | ACK, 501, 102, b"");
        fx.run(S0, &fin2.build());
        assert_eq!(fx.flow_state(port), Some(ST_FIN));
        // Its real went down meanwhile (fail action none: its flows would stay).
        fx.set_health("web", real, 8080, false);
    });
    let syn = tcp_in(port + 1, (VIP, 80), SYN, 100, 0, b"");
    let retransmit = fwd(
        "a SYN on an established flow keeps its real",
        &syn,
        REAL,
        8080,
    )
    .then(|fx, _| assert_eq!(fx.counter(reason::TUPLE_REUSE), 0));
    vec![finished, after_handshake(port + 1, retransmit)]
}

/// Established flows survive a flood of new ones many times `EMBRYOS` size.
fn flood() -> Case {
    Case::code(
        "after a flood of 3x EMBRYOS, an established flow keeps its real",
        |fx| {
            let ports: Vec<u16> = (44200..44210).collect();
            let reals: Vec<Ipv4Addr> = ports.iter().map(|&p| handshake(fx, p)).collect();
            let flows_before = fx.dp().maps.flows.keys().count();
            let embryo_cap = datapath::embryo_table_size(4096) as usize;
            for i in 0..3 * embryo_cap {
                let src = Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8);
                let syn = from_client(Pkt::tcp((src, 1024 + i as u16), (VIP, 80), SYN, 1, b""));
                let (verdict, _) = fx.run(C0, &syn.build());
                assert_eq!(verdict, XDP_REDIRECT, "flood SYN {i} forwarded");
            }
            let flows = fx.dp().maps.flows.keys().count();
            assert_eq!(flows, flows_before, "the flood took no room in FLOWS");
            assert!(fx.dp().maps.embryos.keys().count() <= embryo_cap);
            for (&port, &real) in ports.iter().zip(&reals) {
                let data = tcp_in(port, (VIP, 80), ACK | PSH, 101, 0, b"still?");
                fx.step(&fwd("", &data, real, 8080));
            }
            // And a legitimate new connection still completes.
            handshake(fx, 44300);
            fx.passed("a new connection still completes");
        },
    )
}

/// A half-open flow whose reply entry aged out of `EMBRYOS` alone gets it
/// back at the client's next SYN, so the handshake can still complete.
fn half_open() -> Vec<Step> {
    let port = 44500;
    let syn = tcp_in(port, (VIP, 80), SYN, 100, 0, b"");
    let synack = tcp_out((REAL, 8080), port, SYN | ACK, 500, 101, b"");
    vec![
        fwd("", &syn, REAL, 8080),
        fwd(
            "a retransmitted SYN of a half-open flow keeps its real",
            &syn,
            REAL,
            8080,
        )
        .before(move |fx| {
            let f = fx.flow_in(port, true).expect("half-open");
            let rev = f.fwd_key.reverse(f.fwd.nat_addr, f.fwd.nat_port_be);
            let embryos = &mut fx.dp().maps.embryos;
            embryos.remove(&rev).expect("drop the reply entry");
        }),
        rev(
            "... and puts its lost reply entry back: the SYN-ACK is translated",
            &synack,
            VIP,
            80,
        ),
    ]
}

/// A real's DF reply too big for the link toward the client: lb answers
/// the real itself, quoting the reply as the real sent it (from real:port;
/// the kernel would quote it from the VIP, which the real's socket never
/// used).
fn too_big_reply() -> Case {
    let port = 44600;
    let big = tcp_out((REAL, 8080), port, ACK | PSH, 501, 101, &[5u8; 1100]);
    let step = Step {
        name: "a real's DF reply too big for the client's link is answered with frag needed".into(),
        on: S0,
        send: big.build(),
        verdict: XDP_REDIRECT,
        reason: reason::ICMP_FRAG_NEEDED,
        out: Out::Exact(frag_needed(&big, VIP, 1000)),
        ..Step::default()
    };
    // The FIB's MTU check reads the device's MTU (a route's `mtu` metric
    // binds the kernel's forwarding only), so the client side's link is
    // narrowed; the handshake caches the reply direction's hop with it.
    Case::new(&step.name.clone(), vec![step]).setup(move |fx| {
        fx.ip(&["link", "set", "c0", "mtu", "1000"]);
        assert_eq!(handshake(fx, port), REAL, "the first pick");
    })
}

/// A tagged frame leaves tagged, by redirect, with the VLAN id of the
/// device its route leaves by. This machine's kernel has no 8021q (no VLAN
/// device can be made), so s0 stands in for one: the fixture programs
/// `VLANS` as the agent would for a VLAN device with id 20 over s0.
fn vlan() -> Step {
    let mut syn = from_client(Pkt::tcp((CLIENT, 44400), (VIP, 80), SYN, 1, b""));
    syn.vlan = Some(10);
    let mut want = toward_real(&syn, REAL);
    want.dst = REAL;
    want.vlan = Some(20);
    set_dport(&mut want, 8080);
    let name = "a tagged frame is forwarded by redirect, tagged with its VLAN's id";
    Step {
        name: name.into(),
        on: C0,
        send: syn.build(),
        verdict: XDP_REDIRECT,
        reason: reason::FORWARD,
        out: Out::Exact(want.build()),
        ..Step::default()
    }
    .before(|fx| {
        let s0 = fx.s0;
        let port = lb_common::VlanPort {
            parent_ifindex: s0,
            vid: 20,
            _pad: 0,
        };
        fx.vlans.insert(s0, port, 0).expect("VLANS");
    })
}
