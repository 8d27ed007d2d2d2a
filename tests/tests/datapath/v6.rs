//! IPv6 fixtures: NAT66 both ways for TCP and UDP (the first packets by the
//! full path, the established ones by the fast path), the flow table, the
//! stated rules for what lb does not translate (hop limit 1, extension
//! headers, ICMPv6, a port no VIP serves) and purge's RST built in IPv6.
//! Every expected frame is built from scratch by pnet.
use std::net::Ipv6Addr;

use lb_tests::fixture_net::{CLIENT6, REALS6, real6_mac};

use super::packet6::{DEST_OPTS, HOP_BY_HOP, NEIGHBOR_SOLICIT, Pkt6, checksums_valid6, fragments6};
use super::*;

const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
const PVIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x20);
const BIG_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x30);
/// Routers in front of lb (on c0's side) and behind it (s0's).
const ROUTER_FRONT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0xfe);
const ROUTER_BEHIND6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0xfe);
const PACKET_TOO_BIG: u8 = 2;
pub const DEST_UNREACH: u8 = 1;

/// An ICMPv6 message frame: `kind`, `code`, the four bytes after the
/// checksum (`rest`: unused, or the MTU) and `body`, the checksum computed
/// by pnet.
#[allow(clippy::too_many_arguments)]
pub fn icmp6_frame(
    macs: (Mac, Mac),
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut p = Pkt6::ip(
        src,
        dst,
        L4::Icmp {
            kind,
            code,
            payload: body.to_vec(),
        },
    );
    (p.src_mac, p.dst_mac) = macs;
    p.hop_limit = hop_limit;
    let mut f = p.build();
    f[54 + 4..54 + 8].copy_from_slice(&rest);
    f[54 + 2..54 + 4].copy_from_slice(&[0, 0]);
    let c = pnet::packet::icmpv6::checksum(
        &pnet::packet::icmpv6::Icmpv6Packet::new(&f[54..]).unwrap(),
        &src,
        &dst,
    );
    f[54 + 2..54 + 4].copy_from_slice(&c.to_be_bytes());
    f
}

/// The farms and VIPs of these cases, for the fixture config.
pub const CONFIG: &str = r#"
  web6:
    algorithm: round-robin
    reals:
      - { address: 2001:db8:5::11, port: 8080 }
      - { address: 2001:db8:5::12, port: 8080 }
      - { address: 2001:db8:5::13, port: 8080 }
  dns6:
    reals: [{ address: 2001:db8:5::11, port: 5353 }]
  purge6:
    failaction: purge
    reals: [{ address: 2001:db8:5::11, port: 7 }]
  big6:
    reals: [{ address: 2001:db8:5::13, port: 9000 }]
  sticky6:
    algorithm: round-robin
    reals:
      - { address: 2001:db8:5::11, port: 8443 }
      - { address: 2001:db8:5::12, port: 8443 }
"#;
pub const VIPS: &str = r#"
  www6: { address: 2001:db8:100::10, port: 80, serverfarm: web6 }
  dns6: { address: 2001:db8:100::10, port: 53, protocol: udp, serverfarm: dns6 }
  ptcp6: { address: 2001:db8:100::20, port: 7, serverfarm: purge6 }
  big6: { address: 2001:db8:100::30, port: 9000, serverfarm: big6 }
  sticky6: { address: 2001:db8:100::40, port: 443, serverfarm: sticky6, sticky: { mode: source-ip, timeout: 10m, ipv6_prefix: 64 } }
"#;

/// From the client, as it arrives on c0.
fn client(mut p: Pkt6) -> Pkt6 {
    p.src_mac = CLIENT_MAC;
    p.dst_mac = LB_C_MAC;
    p
}

/// From a real, as it arrives on s0.
fn real(mut p: Pkt6) -> Pkt6 {
    p.src_mac = real6_mac(p.src);
    p.dst_mac = LB_S_MAC;
    p
}

/// What lb sends on for `p` to `to:port`: the destination rewritten, one hop
/// less, out of s0 to the real's MAC.
fn dnat6(p: &Pkt6, to: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut q = p.clone();
    q.dst = to;
    set_port(&mut q.l4, port, true);
    q.hop_limit -= 1;
    q.src_mac = LB_S_MAC;
    q.dst_mac = real6_mac(to);
    q.build()
}

/// What lb sends on for a real's reply `p`: from `vip:port`, one hop less,
/// out of c0 to the client.
fn snat6(p: &Pkt6, vip: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut q = p.clone();
    q.src = vip;
    set_port(&mut q.l4, port, false);
    q.hop_limit -= 1;
    q.src_mac = LB_C_MAC;
    q.dst_mac = CLIENT_MAC;
    q.build()
}

fn set_port(l4: &mut L4, port: u16, dst: bool) {
    match l4 {
        L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport, .. } => {
            *(if dst { dport } else { sport }) = port
        }
        L4::Icmp { .. } => {}
    }
}

/// The IPv6 destination of a frame lb sent on.
fn dst6(frame: &[u8]) -> Ipv6Addr {
    let b: [u8; 16] = frame[14 + 24..14 + 40].try_into().unwrap();
    Ipv6Addr::from(b)
}

/// The IPv6 client's flow from `port`, assured or half-open (the IPv4
/// cases use the same ports).
fn flow6(fx: &mut Fixture, port: u16) -> Option<flowtable::Joined> {
    let maps = &fx.dp().maps;
    [&maps.flows, &maps.embryos].into_iter().find_map(|t| {
        flowtable::read(t)
            .expect("read flows")
            .flows
            .into_iter()
            .find(|f| {
                u16::from_be(f.fwd_key.src_port_be) == port
                    && Ipv6Addr::from(f.fwd_key.src_addr) == CLIENT6
            })
    })
}

pub fn cases(fx: &mut Fixture) {
    let (c0, s0) = (fx.c0, fx.s0);
    // The IPv4 cases narrowed s0 below IPv6's minimum MTU, which took its
    // IPv6 addresses; give them back.
    for args in lb_tests::fixture_net::ipv6_setup() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ip(&args);
    }

    // --- TCP through the full path: each SYN to the next real. ---
    let mut picked = Vec::new();
    for port in 40001..=40003 {
        let syn = client(Pkt6::tcp((CLIENT6, port), (VIP6, 80), SYN, 100, 0));
        let before: Vec<u64> = (0..reason::COUNT).map(|w| fx.counter(w)).collect();
        let (verdict, out) = fx.run(c0, &syn.build());
        let moved: Vec<&str> = (0..reason::COUNT)
            .filter(|&w| fx.counter(w) != before[w as usize])
            .map(|w| reason::NAMES[w as usize])
            .collect();
        assert_eq!(
            verdict, XDP_REDIRECT,
            "SYN {port}: verdict, reasons {moved:?}"
        );
        let to = dst6(&out);
        assert!(REALS6.contains(&to), "SYN {port} went to {to}");
        // The run above took the packet; run it again as a case on a fresh
        // port of the same real would change the pick, so judge this one.
        assert_eq!(out, dnat6(&syn, to, 8080), "SYN {port}: bytes");
        assert!(checksums_valid6(&out), "SYN {port}: checksums");
        picked.push(to);
    }
    let mut all = picked.clone();
    all.sort();
    assert_eq!(all, REALS6.to_vec(), "round-robin over the three reals");
    fx.cases
        .push("ipv6: three SYNs to a VIP, one to each real, translated".into());

    let r = picked[0];
    let synack = real(Pkt6::tcp((r, 8080), (CLIENT6, 40001), SYN | ACK, 9000, 101));
    fx.case(
        "ipv6: the real's SYN-ACK is translated back from the VIP",
        s0,
        &synack.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&snat6(&synack, VIP6, 80)),
    );
    let ack = client(Pkt6::tcp((CLIENT6, 40001), (VIP6, 80), ACK, 101, 9001));
    fx.case(
        "ipv6: the client's ACK assures the flow",
        c0,
        &ack.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat6(&ack, r, 8080)),
    );
    let f = flow6(fx, 40001).expect("the IPv6 flow is listed");
    assert_eq!(f.state(), ST_ESTABLISHED);
    assert_eq!(Ipv6Addr::from(f.fwd.nat_addr), r, "the flow's real");

    // --- Established: the fast path, both ways. ---
    let fast = fx.counter(reason::FAST_PATH);
    let data = client(Pkt6::tcp(
        (CLIENT6, 40001),
        (VIP6, 80),
        ACK | PSH,
        101,
        9001,
    ))
    .with_payload(b"GET / HTTP/1.1\r\n\r\n");
    fx.case(
        "ipv6: established data from the client",
        c0,
        &data.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat6(&data, r, 8080)),
    );
    let reply = real(Pkt6::tcp((r, 8080), (CLIENT6, 40001), ACK | PSH, 9001, 119))
        .with_payload(b"HTTP/1.1 200 OK\r\n\r\n");
    // The real's first data segment moves its entry from syn to
    // established (the full path); its next goes the fast way.
    for (name, by_fast) in [("", 1), (" again", 2)] {
        fx.case(
            &format!("ipv6: established data from the real{name}"),
            s0,
            &reply.build(),
            XDP_REDIRECT,
            reason::REVERSE,
            Some(&snat6(&reply, VIP6, 80)),
        );
        assert_eq!(
            fx.counter(reason::FAST_PATH),
            fast + by_fast,
            "by the fast path"
        );
    }

    // --- UDP both ways. ---
    let dns = ("2001:db8:5::11".parse::<Ipv6Addr>().unwrap(), 5353);
    let q = client(Pkt6::udp((CLIENT6, 53001), (VIP6, 53), b"query"));
    fx.case(
        "ipv6: a UDP datagram to a VIP",
        c0,
        &q.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat6(&q, dns.0, dns.1)),
    );
    let a = real(Pkt6::udp(dns, (CLIENT6, 53001), b"answer"));
    fx.case(
        "ipv6: the real's UDP answer",
        s0,
        &a.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&snat6(&a, VIP6, 53)),
    );

    // --- What lb does not translate. ---
    let mut last_hop = client(Pkt6::tcp((CLIENT6, 40010), (VIP6, 80), SYN, 1, 0));
    last_hop.hop_limit = 1;
    let b = last_hop.build();
    fx.case(
        "ipv6: hop limit 1 to a VIP goes to the kernel (time exceeded)",
        c0,
        &b,
        XDP_PASS,
        reason::PASS_TTL,
        Some(&b),
    );
    // --- Extension headers and fragments. ---
    let dns = REALS6[0];
    let mut hbh = client(Pkt6::udp((CLIENT6, 53010), (VIP6, 53), b"query"));
    hbh.ext = vec![HOP_BY_HOP, DEST_OPTS];
    fx.case(
        "ipv6: a chain of hop-by-hop and destination options is walked and the datagram behind it translated",
        c0,
        &hbh.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat6(&hbh, dns, 5353)),
    );
    let mut routed = client(Pkt6::tcp((CLIENT6, 40011), (VIP6, 80), SYN, 1, 0));
    // Type 4 (segment routing), one segment left: not at its destination.
    routed.ext = vec![(43, [0, 0, 4, 1, 0, 0, 0, 0])];
    fx.case(
        "ipv6: a routing header with segments left to a VIP is dropped",
        c0,
        &routed.build(),
        XDP_DROP,
        reason::DROP_IPV6_EXT,
        None,
    );
    // A 2000-byte datagram each way, in two fragments: the later one
    // follows the first's translation.
    let big = client(Pkt6::udp((CLIENT6, 53011), (VIP6, 53), &[0x61; 2000]));
    let [first, later] = fragments6(&big.build(), 1232, 0x1234_5678);
    let [want_first, want_later] = fragments6(&dnat6(&big, dns, 5353), 1232, 0x1234_5678);
    fx.case(
        "ipv6: a datagram's first fragment to a VIP",
        c0,
        &first,
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&want_first),
    );
    fx.case(
        "ipv6: its later fragment follows it to the same real",
        c0,
        &later,
        XDP_REDIRECT,
        reason::FRAGMENT,
        Some(&want_later),
    );
    let answer = real(Pkt6::udp((dns, 5353), (CLIENT6, 53011), &[0x62; 2000]));
    let [first, later] = fragments6(&answer.build(), 1232, 0x9abc_def0);
    let [want_first, want_later] = fragments6(&snat6(&answer, VIP6, 53), 1232, 0x9abc_def0);
    fx.case(
        "ipv6: the real's first fragment back",
        s0,
        &first,
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&want_first),
    );
    fx.case(
        "ipv6: and its later fragment",
        s0,
        &later,
        XDP_REDIRECT,
        reason::FRAGMENT,
        Some(&want_later),
    );
    let [_, early] = fragments6(&big.build(), 1232, 0x0bad_0bad);
    fx.case(
        "ipv6: a later fragment before its first is dropped",
        c0,
        &early,
        XDP_DROP,
        reason::DROP_FRAGMENT_EARLY,
        None,
    );
    // A router behind lb cannot forward the first fragment (as lb sent it:
    // to the real, one hop less) and quotes it, fragment header and all:
    // the quote becomes the client's own first fragment, UDP checksum
    // included.
    let quote = 40 + 8 + 8 + 64;
    let mut sent = big.clone();
    sent.hop_limit -= 1;
    let [as_sent, _] = fragments6(&dnat6(&big, dns, 5353), 1232, 0x1234_5678);
    let [as_client_sent, _] = fragments6(&sent.build(), 1232, 0x1234_5678);
    let mtu = 1280u32.to_be_bytes();
    let ptb = icmp6_frame(
        (real6_mac(dns), LB_S_MAC),
        ROUTER_BEHIND6,
        CLIENT6,
        64,
        PACKET_TOO_BIG,
        0,
        mtu,
        &as_sent[14..14 + quote],
    );
    let want = icmp6_frame(
        (LB_C_MAC, CLIENT_MAC),
        ROUTER_BEHIND6,
        CLIENT6,
        63,
        PACKET_TOO_BIG,
        0,
        mtu,
        &as_client_sent[14..14 + quote],
    );
    fx.case(
        "ipv6: packet too big quoting a first fragment reaches the client about its own datagram",
        s0,
        &ptb,
        XDP_REDIRECT,
        reason::ICMP_ERROR_TO_CLIENT,
        Some(&want),
    );
    let ns = client(Pkt6::ip(
        CLIENT6,
        VIP6,
        L4::Icmp {
            kind: NEIGHBOR_SOLICIT,
            code: 0,
            payload: [&[0u8; 4][..], &VIP6.octets()].concat(),
        },
    ));
    let b = ns.build();
    fx.case(
        "ipv6: neighbour solicitation of a VIP address goes to the kernel unchanged",
        c0,
        &b,
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&b),
    );
    let other = client(Pkt6::tcp((CLIENT6, 40012), (VIP6, 81), SYN, 1, 0));
    fx.case(
        "ipv6: a port no VIP serves is dropped",
        c0,
        &other.build(),
        XDP_DROP,
        reason::DROP_NO_VIP_PORT,
        None,
    );
    let past = client(Pkt6::tcp((CLIENT6, 40013), (REALS6[0], 22), SYN, 1, 0));
    let b = past.build();
    fx.case(
        "ipv6: not to a VIP is passed unchanged",
        c0,
        &b,
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&b),
    );

    // --- ICMPv6. ---
    let ping = icmp6_frame(
        (CLIENT_MAC, LB_C_MAC),
        CLIENT6,
        VIP6,
        64,
        128,
        0,
        [0x42, 0x42, 0, 1],
        b"ping",
    );
    let pong = icmp6_frame(
        (LB_C_MAC, CLIENT_MAC),
        VIP6,
        CLIENT6,
        64,
        129,
        0,
        [0x42, 0x42, 0, 1],
        b"ping",
    );
    fx.case(
        "ipv6: a VIP answers an echo request",
        c0,
        &ping,
        XDP_REDIRECT,
        reason::ICMP_ECHO_REPLY,
        Some(&pong),
    );
    // A router behind lb tells the client its packet to the real (as lb
    // sent it: one hop less) was too big: the quote becomes client -> VIP.
    let mut sent = data.clone();
    sent.hop_limit -= 1;
    let as_sent = dnat6(&data, r, 8080);
    let as_client_sent = sent.build();
    let mtu = 1280u32.to_be_bytes();
    let ptb = icmp6_frame(
        (real6_mac(r), LB_S_MAC),
        ROUTER_BEHIND6,
        CLIENT6,
        64,
        PACKET_TOO_BIG,
        0,
        mtu,
        &as_sent[14..],
    );
    let want = icmp6_frame(
        (LB_C_MAC, CLIENT_MAC),
        ROUTER_BEHIND6,
        CLIENT6,
        63,
        PACKET_TOO_BIG,
        0,
        mtu,
        &as_client_sent[14..],
    );
    fx.case(
        "ipv6: packet too big from behind lb reaches the client about its own packet",
        s0,
        &ptb,
        XDP_REDIRECT,
        reason::ICMP_ERROR_TO_CLIENT,
        Some(&want),
    );
    // A router in front of lb cannot reach the client of lb's reply: the
    // error goes to the real, about the real's own packet.
    let mut from_real_sent = reply.clone();
    from_real_sent.hop_limit -= 1;
    let as_lb_sent = snat6(&reply, VIP6, 80);
    let unreach = icmp6_frame(
        (CLIENT_MAC, LB_C_MAC),
        ROUTER_FRONT6,
        VIP6,
        64,
        DEST_UNREACH,
        3,
        [0; 4],
        &as_lb_sent[14..],
    );
    // The quote keeps the hop limit lb sent it with.
    let want = icmp6_frame(
        (LB_S_MAC, real6_mac(r)),
        ROUTER_FRONT6,
        r,
        63,
        DEST_UNREACH,
        3,
        [0; 4],
        &from_real_sent.build()[14..],
    );
    fx.case(
        "ipv6: an unreachable for a VIP's reply goes to the real about its own packet",
        c0,
        &unreach,
        XDP_REDIRECT,
        reason::ICMP_ERROR_TO_REAL,
        Some(&want),
    );
    // lb's own packet too big: the flow's next hop has a 1280-byte route.
    // Locked: the IPv6 FIB helper reports a route's MTU only when it is
    // (ip6_mtu_from_fib6), else the device's or a learned path MTU.
    #[rustfmt::skip]
    ip(&["-6", "route", "replace", "2001:db8:5::13/128", "dev", "s0", "mtu", "lock", "1280"]);
    let syn = client(Pkt6::tcp((CLIENT6, 43000), (BIG_VIP6, 9000), SYN, 100, 0));
    fx.case(
        "ipv6: a SYN on a narrow route",
        c0,
        &syn.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat6(&syn, REALS6[2], 9000)),
    );
    let big = client(Pkt6::tcp(
        (CLIENT6, 43000),
        (BIG_VIP6, 9000),
        ACK | PSH,
        101,
        1,
    ))
    .with_payload(&[0x5a; 1400]);
    let b = big.build();
    let want = icmp6_frame(
        (LB_C_MAC, CLIENT_MAC),
        BIG_VIP6,
        CLIENT6,
        64,
        PACKET_TOO_BIG,
        0,
        mtu,
        &b[14..14 + 40 + 64],
    );
    fx.case(
        "ipv6: lb answers a packet too big for its next hop with packet too big",
        c0,
        &b,
        XDP_REDIRECT,
        reason::ICMP_FRAG_NEEDED,
        Some(&want),
    );
    ip(&["-6", "route", "del", "2001:db8:5::13/128", "dev", "s0"]);

    // --- sticky by /64: one client's privacy addresses share a real. ---
    let sticky_vip: Ipv6Addr = "2001:db8:100::40".parse().unwrap();
    let sticky_real = |fx: &mut Fixture, from: &str| {
        let c: Ipv6Addr = from.parse().unwrap();
        let syn = client(Pkt6::tcp((c, 44000), (sticky_vip, 443), SYN, 1, 0));
        let out = fx.case(
            &format!("ipv6 sticky /64: a SYN from {c}"),
            c0,
            &syn.build(),
            XDP_REDIRECT,
            reason::FORWARD,
            None,
        );
        dst6(&out)
    };
    let first = sticky_real(fx, "2001:db8:c::2");
    assert_eq!(sticky_real(fx, "2001:db8:c::abcd"), first, "same /64");
    assert_eq!(sticky_real(fx, "2001:db8:c:0:ffff::1"), first, "same /64");
    let other = sticky_real(fx, "2001:db8:d::2");
    assert_ne!(other, first, "another /64 is the next round-robin pick");
    assert_eq!(
        sticky_real(fx, "2001:db8:d::99"),
        other,
        "its /64 sticks too"
    );

    // --- purge: the RST is built in IPv6. ---
    let pr = REALS6[0];
    let syn = client(Pkt6::tcp((CLIENT6, 42000), (PVIP6, 7), SYN, 100, 0));
    fx.case(
        "ipv6 purge farm: SYN",
        c0,
        &syn.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat6(&syn, pr, 7)),
    );
    {
        let Fixture { dp, ctl, .. } = fx;
        let k = RealKey {
            farm: "purge6".into(),
            addr: pr.into(),
            port: 7,
        };
        ctl.set_health(&k, false, &mut dp.as_mut().unwrap().maps)
            .expect("set_health");
    }
    let data = client(Pkt6::tcp(
        (CLIENT6, 42000),
        (PVIP6, 7),
        ACK | PSH,
        101,
        9001,
    ))
    .with_payload(b"hello after the real died");
    // RFC 793: the segment has an ACK, so the RST takes seq = SEG.ACK, no
    // ACK flag; window 0.
    let want = super::refuse::rst6((PVIP6, 7), (CLIENT6, 42000), 9001, 0, RST);
    fx.case(
        "ipv6 purge: a client packet to a dead real is answered with an IPv6 RST",
        c0,
        &data.build(),
        XDP_REDIRECT,
        reason::PURGE_RST,
        Some(&want),
    );
    assert!(flow6(fx, 42000).is_none(), "the purged flow is gone");
}
