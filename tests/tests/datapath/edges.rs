//! Fixtures for the datapath at the edges: ICMP errors translated both ways,
//! lb's own "fragmentation needed", IPv4 fragments both ways, a port reused
//! out of TIME_WAIT, and established flows under a flood of new ones. Every
//! expected frame is built from scratch by pnet, inner checksums included.
use std::net::Ipv4Addr;

use pnet::packet::{
    icmp::{self, MutableIcmpPacket},
    ipv4::{self, MutableIpv4Packet},
};

use lb_tests::frames::fragments;

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

/// A TCP handshake from the client's `port` to VIP:80; the real it reached.
fn handshake(fx: &mut Fixture, port: u16) -> Ipv4Addr {
    let (c0, s0) = (fx.c0, fx.s0);
    let syn = from_client(Pkt::tcp((CLIENT, port), (VIP, 80), SYN, 100, b""));
    fx.run(c0, &syn.build());
    let real = fx.flow_real(port).expect("a flow for the SYN");
    let mut synack = from_real(Pkt::tcp((real, 8080), (CLIENT, port), SYN | ACK, 500, b""));
    if let L4::Tcp { ack, .. } = &mut synack.l4 {
        *ack = 101;
    }
    fx.run(s0, &synack.build());
    let mut ack = from_client(Pkt::tcp((CLIENT, port), (VIP, 80), ACK, 101, b""));
    if let L4::Tcp { ack, .. } = &mut ack.l4 {
        *ack = 501;
    }
    let assured = fx.counter(reason::ASSURED);
    fx.run(c0, &ack.build());
    assert_eq!(
        fx.counter(reason::ASSURED),
        assured + 1,
        "port {port}: assured"
    );
    assert!(fx.flow_in(port, false).is_some(), "port {port}: in FLOWS");
    real
}

pub fn edge_cases(fx: &mut Fixture) {
    icmp_cases(fx);
    fragment_cases(fx);
    reuse_cases(fx);
    flood_cases(fx);
    half_open_cases(fx);
    too_big_reply_cases(fx);
    vlan_cases(fx);
}

/// ICMP errors about a flow, both ways, every checksum checked.
fn icmp_cases(fx: &mut Fixture) {
    let (c0, s0) = (fx.c0, fx.s0);
    let port = 44000;
    let real = handshake(fx, port);

    // A router behind lb cannot forward the client's 1400-byte segment.
    let mut big = Pkt::tcp((CLIENT, port), (real, 8080), ACK | PSH, 101, &[7u8; 1400]);
    big.ttl = 62;
    let mut big_vip = big.clone();
    big_vip.dst = VIP;
    set_dport(&mut big_vip, 80);
    for (quote, what) in [(60, "the quoted TCP checksum"), (28, "a quote of 8 bytes")] {
        let e = from_real(icmp_error(ROUTER_BEHIND, CLIENT, 3, 4, &big, quote));
        let want = toward_client(&icmp_error(ROUTER_BEHIND, CLIENT, 3, 4, &big_vip, quote));
        fx.case(
            &format!("frag needed from a router behind lb: quote names the VIP ({what})"),
            s0,
            &icmp_frame(&e, [0, 0, 0x05, 0x00]),
            XDP_REDIRECT,
            reason::ICMP_ERROR_TO_CLIENT,
            Some(&icmp_frame(&want, [0, 0, 0x05, 0x00])),
        );
    }
    let e = from_real(icmp_error(ROUTER_BEHIND, CLIENT, 11, 0, &big, 48));
    let want = toward_client(&icmp_error(ROUTER_BEHIND, CLIENT, 11, 0, &big_vip, 48));
    fx.case(
        "time exceeded behind lb: quote names the VIP",
        s0,
        &e.build(),
        XDP_REDIRECT,
        reason::ICMP_ERROR_TO_CLIENT,
        Some(&want.build()),
    );

    // A router in front of lb cannot forward the real's answer (sent as the
    // VIP): the error, addressed to the VIP, goes to the real.
    let mut reply_vip = Pkt::tcp((VIP, 80), (CLIENT, port), ACK | PSH, 501, &[9u8; 1400]);
    reply_vip.ttl = 62;
    let mut reply_real = reply_vip.clone();
    reply_real.src = real;
    reply_real = with_sport(&reply_real, 8080);
    let e = from_client(icmp_error(ROUTER_FRONT, VIP, 3, 4, &reply_vip, 60));
    let mut want = icmp_error(ROUTER_FRONT, real, 3, 4, &reply_real, 60);
    want = toward_real(&want, real);
    fx.case(
        "frag needed to the VIP from a router in front goes to the real",
        c0,
        &icmp_frame(&e, [0, 0, 0x05, 0x00]),
        XDP_REDIRECT,
        reason::ICMP_ERROR_TO_REAL,
        Some(&icmp_frame(&want, [0, 0, 0x05, 0x00])),
    );
    let e = from_client(icmp_error(ROUTER_FRONT, VIP, 12, 0, &reply_vip, 60));
    let want = toward_real(
        &icmp_error(ROUTER_FRONT, real, 12, 0, &reply_real, 60),
        real,
    );
    fx.case(
        "parameter problem to the VIP goes to the real",
        c0,
        &e.build(),
        XDP_REDIRECT,
        reason::ICMP_ERROR_TO_REAL,
        Some(&want.build()),
    );
    let mut other = reply_vip.clone();
    other.dst = Ipv4Addr::new(192, 0, 2, 77);
    let e = from_client(icmp_error(ROUTER_FRONT, VIP, 3, 4, &other, 60));
    fx.case(
        "frag needed to the VIP about no flow is dropped",
        c0,
        &e.build(),
        XDP_DROP,
        reason::DROP_ICMP_NO_FLOW,
        None,
    );
}

/// A 3000-byte UDP datagram each way, in fragments, through the dns VIP.
fn fragment_cases(fx: &mut Fixture) {
    let (c0, s0) = (fx.c0, fx.s0);
    let dns_real = Ipv4Addr::new(203, 0, 113, 11);
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let mut q = from_client(Pkt::udp((CLIENT, 45000), (VIP, 53), &payload));
    q.frag = (0, 0);
    q.id = 0x5151;
    let mut q_real = toward_real(&q, dns_real);
    q_real.dst = dns_real;
    set_dport(&mut q_real, 5353);
    let ins = fragments(&q.build(), 1480);
    let outs = fragments(&q_real.build(), 1480);
    assert_eq!(ins.len(), 3);
    fx.case(
        "first fragment to a VIP: translated with its ports",
        c0,
        &ins[0],
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&outs[0]),
    );
    for i in 1..3 {
        fx.case(
            "later fragment to a VIP follows its first",
            c0,
            &ins[i],
            XDP_REDIRECT,
            reason::FRAGMENT,
            Some(&outs[i]),
        );
    }
    // The answer, as big, fragmented by the real's kernel.
    let mut a = from_real(Pkt::udp((dns_real, 5353), (CLIENT, 45000), &payload));
    a.frag = (0, 0);
    a.id = 0x6262;
    let mut a_vip = toward_client(&a);
    a_vip.src = VIP;
    a_vip = with_sport(&a_vip, 53);
    let ins = fragments(&a.build(), 1480);
    let outs = fragments(&a_vip.build(), 1480);
    // Out of order from the server side: not known yet, passed as any
    // routed host's fragment would be.
    fx.case(
        "a real's later fragment before its first is passed as not ours",
        s0,
        &ins[2],
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&ins[2]),
    );
    fx.case(
        "a real's first fragment: translated with its ports",
        s0,
        &ins[0],
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&outs[0]),
    );
    for i in 1..3 {
        fx.case(
            "a real's later fragment follows its first",
            s0,
            &ins[i],
            XDP_REDIRECT,
            reason::FRAGMENT,
            Some(&outs[i]),
        );
    }
}

/// A client reusing its port after the connection ended (TIME_WAIT).
fn reuse_cases(fx: &mut Fixture) {
    let (c0, s0) = (fx.c0, fx.s0);
    let port = 44100;
    let real = handshake(fx, port);
    let mut fin = from_client(Pkt::tcp((CLIENT, port), (VIP, 80), FIN | ACK, 101, b""));
    if let L4::Tcp { ack, .. } = &mut fin.l4 {
        *ack = 501;
    }
    fx.run(c0, &fin.build());
    let mut fin2 = from_real(Pkt::tcp((real, 8080), (CLIENT, port), FIN | ACK, 501, b""));
    if let L4::Tcp { ack, .. } = &mut fin2.l4 {
        *ack = 102;
    }
    fx.run(s0, &fin2.build());
    assert_eq!(fx.flow_state(port), Some(ST_FIN));
    // Its real went down meanwhile (fail action none: its flows would stay).
    let web_real = key("web", real, 8080);
    {
        let Fixture { dp, ctl, .. } = &mut *fx;
        ctl.set_health(&web_real, false, &mut dp.as_mut().unwrap().maps)
            .expect("set_health");
    }
    let reused = fx.counter(reason::TUPLE_REUSE);
    let syn = from_client(Pkt::tcp((CLIENT, port), (VIP, 80), SYN, 90_000, b""));
    let out = fx.case(
        "a SYN on a finished flow starts a new one with a fresh pick",
        c0,
        &syn.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        None,
    );
    assert_eq!(fx.counter(reason::TUPLE_REUSE), reused + 1);
    let f = fx.flow(port).expect("the new flow");
    let now = Ipv4Addr::from(<[u8; 4]>::try_from(&f.fwd.nat_addr[12..]).unwrap());
    assert_ne!(now, real, "a live real, not the dead one");
    assert_eq!(out, dnat(&syn, now, 8080));
    assert_eq!((f.fwd.packets, f.state()), (1, ST_SYN), "fresh counters");
    {
        let Fixture { dp, ctl, .. } = &mut *fx;
        ctl.set_health(&web_real, true, &mut dp.as_mut().unwrap().maps)
            .expect("set_health");
    }
    // A SYN on an established flow is a retransmission: same real.
    let port = 44101;
    let real = handshake(fx, port);
    let syn = from_client(Pkt::tcp((CLIENT, port), (VIP, 80), SYN, 100, b""));
    fx.case(
        "a SYN on an established flow keeps its real",
        c0,
        &syn.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&syn, real, 8080)),
    );
    assert_eq!(fx.counter(reason::TUPLE_REUSE), reused + 1);
}

/// Established flows survive a flood of new ones many times `EMBRYOS`' size.
fn flood_cases(fx: &mut Fixture) {
    let c0 = fx.c0;
    let ports: Vec<u16> = (44200..44210).collect();
    let reals: Vec<Ipv4Addr> = ports.iter().map(|&p| handshake(fx, p)).collect();
    let flows_before = fx.dp().maps.flows.keys().count();
    let embryo_cap = datapath::embryo_table_size(4096) as usize;
    let flood = 3 * embryo_cap;
    for i in 0..flood {
        let src = Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8);
        let syn = from_client(Pkt::tcp((src, 1024 + i as u16), (VIP, 80), SYN, 1, b""));
        let (verdict, _) = fx.run(c0, &syn.build());
        assert_eq!(verdict, XDP_REDIRECT, "flood SYN {i} forwarded");
    }
    assert_eq!(
        fx.dp().maps.flows.keys().count(),
        flows_before,
        "the flood took no room in FLOWS"
    );
    assert!(fx.dp().maps.embryos.keys().count() <= embryo_cap);
    for (&port, &real) in ports.iter().zip(&reals) {
        let data = from_client(Pkt::tcp(
            (CLIENT, port),
            (VIP, 80),
            ACK | PSH,
            101,
            b"still?",
        ));
        fx.case(
            "after a flood of 3x EMBRYOS, an established flow keeps its real",
            c0,
            &data.build(),
            XDP_REDIRECT,
            reason::FORWARD,
            Some(&dnat(&data, real, 8080)),
        );
    }
    // And a legitimate new connection still completes.
    handshake(fx, 44300);
}

/// A tagged frame leaves tagged, by redirect, with the VLAN id of the
/// device its route leaves by. This machine's kernel has no 8021q (no VLAN
/// device can be made), so s0 stands in for one: the fixture programs
/// `VLANS` as the agent would for a VLAN device with id 20 over s0.
fn vlan_cases(fx: &mut Fixture) {
    let (c0, s0) = (fx.c0, fx.s0);
    let mut vlans = fx.dp().take_vlans().expect("VLANS");
    let port = lb_common::VlanPort {
        parent_ifindex: s0,
        vid: 20,
        _pad: 0,
    };
    vlans.insert(s0, port, 0).expect("VLANS");
    let mut syn = from_client(Pkt::tcp((CLIENT, 44400), (VIP, 80), SYN, 1, b""));
    syn.vlan = Some(10);
    let out = fx.case(
        "a tagged frame is forwarded by redirect, tagged with its VLAN's id",
        c0,
        &syn.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        None,
    );
    let real = fx.flow_real(44400).expect("the flow");
    let mut want = toward_real(&syn, real);
    want.dst = real;
    want.vlan = Some(20);
    set_dport(&mut want, 8080);
    assert_eq!(hex(&out), hex(&want.build()), "the tagged frame as sent");
    vlans.remove(&s0).expect("VLANS");
}

/// A half-open flow whose reply entry aged out of `EMBRYOS` alone gets it
/// back at the client's next SYN, so the handshake can still complete.
fn half_open_cases(fx: &mut Fixture) {
    let (c0, s0) = (fx.c0, fx.s0);
    let port = 44500;
    let syn = from_client(Pkt::tcp((CLIENT, port), (VIP, 80), SYN, 100, b""));
    fx.run(c0, &syn.build());
    let f = fx.flow_in(port, true).expect("half-open");
    let real = fx.flow_real(port).expect("its real");
    let rev = f.fwd_key.reverse(f.fwd.nat_addr, f.fwd.nat_port_be);
    fx.dp()
        .maps
        .embryos
        .remove(&rev)
        .expect("drop the reply entry");
    fx.case(
        "a retransmitted SYN of a half-open flow keeps its real",
        c0,
        &syn.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&syn, real, 8080)),
    );
    let mut synack = from_real(Pkt::tcp((real, 8080), (CLIENT, port), SYN | ACK, 500, b""));
    if let L4::Tcp { ack, .. } = &mut synack.l4 {
        *ack = 101;
    }
    fx.case(
        "... and puts its lost reply entry back: the SYN-ACK is translated",
        s0,
        &synack.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&snat(&synack, VIP, 80)),
    );
}

/// A real's DF reply too big for the link toward the client: lb answers
/// the real itself, quoting the reply as the real sent it (from real:port;
/// the kernel would quote it from the VIP, which the real's socket never
/// used).
fn too_big_reply_cases(fx: &mut Fixture) {
    let s0 = fx.s0;
    // The FIB's MTU check reads the device's MTU (a route's `mtu` metric
    // binds the kernel's forwarding only), so the client side's link is
    // narrowed.
    ip(&["link", "set", "c0", "mtu", "1000"]);
    let port = 44600;
    // The handshake caches the reply direction's hop with the route's MTU.
    let real = handshake(fx, port);
    let mut big = from_real(Pkt::tcp(
        (real, 8080),
        (CLIENT, port),
        ACK | PSH,
        501,
        &[5u8; 1100],
    ));
    if let L4::Tcp { ack, .. } = &mut big.l4 {
        *ack = 101;
    }
    fx.case(
        "a real's DF reply too big for the client's link is answered with frag needed",
        s0,
        &big.build(),
        XDP_REDIRECT,
        reason::ICMP_FRAG_NEEDED,
        Some(&frag_needed(&big, VIP, 1000)),
    );
    ip(&["link", "set", "c0", "mtu", "1500"]);
}
