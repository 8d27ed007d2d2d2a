//! IPv6 fixtures: NAT66 both ways for TCP and UDP (the first packets by the
//! full path, the established ones by the fast path), the flow table, the
//! stated rules for what lb does not translate (hop limit 1, extension
//! headers, ICMPv6, a port no VIP serves) and purge's RST built in IPv6.
//! Every expected frame is built from scratch by pnet.
use std::net::Ipv6Addr;

use lb_common::ST_ESTABLISHED;
use lb_userspace::flowtable;

use lb_tests::fixture_net::{CLIENT6, REALS6, real6_mac};

use super::packet6::{DEST_OPTS, HOP_BY_HOP, NEIGHBOR_SOLICIT, Pkt6, fragments6};
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

/// A client packet NATed to `to:port` and redirected.
fn fwd6(name: &str, p: &Pkt6, to: Ipv6Addr, port: u16) -> Step {
    redirected(name, C0, p.build(), reason::FORWARD, dnat6(p, to, port))
}

/// A real's packet NATed back from `vip:port` and redirected.
fn rev6(name: &str, p: &Pkt6, vip: Ipv6Addr, port: u16) -> Step {
    redirected(name, S0, p.build(), reason::REVERSE, snat6(p, vip, port))
}

/// Packet too big (MTU 1280) from a router behind lb about `as_sent` (a
/// frame lb sent a real), and what the client must get: the same about
/// `as_client_sent`, one hop less.
fn too_big_behind(name: &str, real: Ipv6Addr, as_sent: &[u8], as_client_sent: &[u8]) -> Step {
    let mtu = 1280u32.to_be_bytes();
    let (behind, front) = ((real6_mac(real), LB_S_MAC), (LB_C_MAC, CLIENT_MAC));
    #[rustfmt::skip]
    let ptb = icmp6_frame(behind, ROUTER_BEHIND6, CLIENT6, 64, PACKET_TOO_BIG, 0, mtu, as_sent);
    #[rustfmt::skip]
    let want = icmp6_frame(front, ROUTER_BEHIND6, CLIENT6, 63, PACKET_TOO_BIG, 0, mtu, as_client_sent);
    Step {
        name: name.into(),
        on: S0,
        send: ptb,
        verdict: XDP_REDIRECT,
        reason: reason::ICMP_ERROR_TO_CLIENT,
        out: Out::Exact(want),
        ..Step::default()
    }
}

pub fn cases() -> Vec<Case> {
    let mut cases = vec![three_syns()];
    cases.extend(chain(tcp_flow));
    cases.extend(chain(udp));
    cases.extend(not_translated());
    cases.extend(chain(fragments));
    cases.extend(narrow_route());
    cases.push(sticky());
    cases.extend(chain(purge));
    cases
}

/// TCP through the full path: each SYN to the next real.
fn three_syns() -> Case {
    Case::code(
        "ipv6: three SYNs to a VIP, one to each real, translated",
        |fx| {
            for (port, to) in (40001..=40003).zip(REALS6) {
                let syn = client(Pkt6::tcp((CLIENT6, port), (VIP6, 80), SYN, 100, 0));
                fx.step(&fwd6("", &syn, to, 8080));
            }
        },
    )
}

/// One connection: handshake and data both ways (the established segments
/// by the fast path), then ICMPv6 errors about it from either side.
fn tcp_flow() -> Vec<Step> {
    let r = REALS6[0];
    let syn = client(Pkt6::tcp((CLIENT6, 40001), (VIP6, 80), SYN, 100, 0));
    let synack = real(Pkt6::tcp((r, 8080), (CLIENT6, 40001), SYN | ACK, 9000, 101));
    let ack = client(Pkt6::tcp((CLIENT6, 40001), (VIP6, 80), ACK, 101, 9001));
    let data = client(Pkt6::tcp(
        (CLIENT6, 40001),
        (VIP6, 80),
        ACK | PSH,
        101,
        9001,
    ))
    .with_payload(b"GET / HTTP/1.1\r\n\r\n");
    let reply = real(Pkt6::tcp((r, 8080), (CLIENT6, 40001), ACK | PSH, 9001, 119))
        .with_payload(b"HTTP/1.1 200 OK\r\n\r\n");
    let fast = Saved::new();
    let by_fast = |n: u64| {
        let fast = fast.clone();
        move |fx: &mut Fixture, _: &[u8]| {
            assert_eq!(
                fx.counter(reason::FAST_PATH),
                fast.get() + n,
                "by the fast path"
            )
        }
    };

    // A router behind lb tells the client its packet to the real (as lb
    // sent it: one hop less) was too big: the quote becomes client -> VIP.
    let mut sent = data.clone();
    sent.hop_limit -= 1;
    let ptb = too_big_behind(
        "ipv6: packet too big from behind lb reaches the client about its own packet",
        r,
        &dnat6(&data, r, 8080)[14..],
        &sent.build()[14..],
    );
    // A router in front of lb cannot reach the client of lb's reply: the
    // error goes to the real, about the real's own packet, whose quote
    // keeps the hop limit lb sent it with.
    let mut from_real_sent = reply.clone();
    from_real_sent.hop_limit -= 1;
    let as_lb_sent = snat6(&reply, VIP6, 80);
    let (front, behind) = ((CLIENT_MAC, LB_C_MAC), (LB_S_MAC, real6_mac(r)));
    #[rustfmt::skip]
    let unreach = icmp6_frame(front, ROUTER_FRONT6, VIP6, 64, DEST_UNREACH, 3, [0; 4], &as_lb_sent[14..]);
    #[rustfmt::skip]
    let want = icmp6_frame(behind, ROUTER_FRONT6, r, 63, DEST_UNREACH, 3, [0; 4], &from_real_sent.build()[14..]);
    vec![
        fwd6("", &syn, r, 8080),
        rev6(
            "ipv6: the real's SYN-ACK is translated back from the VIP",
            &synack,
            VIP6,
            80,
        ),
        fwd6("ipv6: the client's ACK assures the flow", &ack, r, 8080).then(move |fx, _| {
            let f = flow6(fx, 40001).expect("the IPv6 flow is listed");
            assert_eq!(f.state(), ST_ESTABLISHED);
            assert_eq!(Ipv6Addr::from(f.fwd.nat_addr), r, "the flow's real");
        }),
        fwd6("ipv6: established data from the client", &data, r, 8080)
            .before(fast.keep(|fx| fx.counter(reason::FAST_PATH))),
        // The real's first data segment moves its entry from syn to
        // established (the full path); its next goes the fast way.
        rev6("ipv6: established data from the real", &reply, VIP6, 80).then(by_fast(1)),
        rev6(
            "ipv6: established data from the real again",
            &reply,
            VIP6,
            80,
        )
        .then(by_fast(2)),
        ptb,
        Step {
            name: "ipv6: an unreachable for a VIP's reply goes to the real about its own packet"
                .into(),
            on: C0,
            send: unreach,
            verdict: XDP_REDIRECT,
            reason: reason::ICMP_ERROR_TO_REAL,
            out: Out::Exact(want),
            ..Step::default()
        },
    ]
}

/// The dns6 VIP's one real.
const DNS6: Ipv6Addr = REALS6[0];

fn udp() -> Vec<Step> {
    let q = client(Pkt6::udp((CLIENT6, 53001), (VIP6, 53), b"query"));
    let a = real(Pkt6::udp((DNS6, 5353), (CLIENT6, 53001), b"answer"));
    vec![
        fwd6("ipv6: a UDP datagram to a VIP", &q, DNS6, 5353),
        rev6("ipv6: the real's UDP answer", &a, VIP6, 53),
    ]
}

/// The stated rules for what lb does not translate, extension headers,
/// and a VIP's echo reply.
fn not_translated() -> Vec<Case> {
    let mut last_hop = client(Pkt6::tcp((CLIENT6, 40010), (VIP6, 80), SYN, 1, 0));
    last_hop.hop_limit = 1;
    let mut hbh = client(Pkt6::udp((CLIENT6, 53010), (VIP6, 53), b"query"));
    hbh.ext = vec![HOP_BY_HOP, DEST_OPTS];
    let mut routed = client(Pkt6::tcp((CLIENT6, 40011), (VIP6, 80), SYN, 1, 0));
    // Type 4 (segment routing), one segment left: not at its destination.
    routed.ext = vec![(43, [0, 0, 4, 1, 0, 0, 0, 0])];
    let mut early = client(Pkt6::udp((CLIENT6, 53011), (VIP6, 53), &[0x61; 2000])).build();
    early = fragments6(&early, 1232, 0x0bad_0bad)[1].clone();
    let solicit = L4::Icmp {
        kind: NEIGHBOR_SOLICIT,
        code: 0,
        payload: [&[0u8; 4][..], &VIP6.octets()].concat(),
    };
    let ns = client(Pkt6::ip(CLIENT6, VIP6, solicit));
    let other = client(Pkt6::tcp((CLIENT6, 40012), (VIP6, 81), SYN, 1, 0));
    let past = client(Pkt6::tcp((CLIENT6, 40013), (REALS6[0], 22), SYN, 1, 0));
    let echo = |(src, dst), kind, macs| {
        icmp6_frame(macs, src, dst, 64, kind, 0, [0x42, 0x42, 0, 1], b"ping")
    };
    let ping = echo((CLIENT6, VIP6), 128, (CLIENT_MAC, LB_C_MAC));
    let pong = echo((VIP6, CLIENT6), 129, (LB_C_MAC, CLIENT_MAC));
    #[rustfmt::skip]
    let steps = [
        passed("ipv6: hop limit 1 to a VIP goes to the kernel (time exceeded)", C0, last_hop.build(), reason::PASS_TTL),
        fwd6("ipv6: a chain of hop-by-hop and destination options is walked and the datagram behind it translated", &hbh, DNS6, 5353),
        dropped("ipv6: a routing header with segments left to a VIP is dropped", routed.build(), reason::DROP_IPV6_EXT),
        dropped("ipv6: a later fragment before its first is dropped", early, reason::DROP_FRAGMENT_EARLY),
        passed("ipv6: neighbour solicitation of a VIP address goes to the kernel unchanged", C0, ns.build(), reason::PASS_NOT_OURS),
        dropped("ipv6: a port no VIP serves is dropped", other.build(), reason::DROP_NO_VIP_PORT),
        passed("ipv6: not to a VIP is passed unchanged", C0, past.build(), reason::PASS_NOT_OURS),
    ];
    let echo = Step {
        name: "ipv6: a VIP answers an echo request".into(),
        send: ping,
        verdict: XDP_REDIRECT,
        reason: reason::ICMP_ECHO_REPLY,
        out: Out::Exact(pong),
        ..Step::default()
    };
    steps.into_iter().chain([echo]).map(Case::one).collect()
}

/// A 2000-byte datagram each way, in two fragments: the later one follows
/// the first's translation; an error quoting a first fragment reaches the
/// client about its own.
fn fragments() -> Vec<Step> {
    let big = client(Pkt6::udp((CLIENT6, 53011), (VIP6, 53), &[0x61; 2000]));
    let [first, later] = fragments6(&big.build(), 1232, 0x1234_5678);
    let [want_first, want_later] = fragments6(&dnat6(&big, DNS6, 5353), 1232, 0x1234_5678);
    let answer = real(Pkt6::udp((DNS6, 5353), (CLIENT6, 53011), &[0x62; 2000]));
    let [a_first, a_later] = fragments6(&answer.build(), 1232, 0x9abc_def0);
    let [want_a_first, want_a_later] = fragments6(&snat6(&answer, VIP6, 53), 1232, 0x9abc_def0);
    // A router behind lb cannot forward the first fragment (as lb sent it:
    // to the real, one hop less) and quotes it, fragment header and all:
    // the quote becomes the client's own first fragment, UDP checksum
    // included.
    let quote = 40 + 8 + 8 + 64;
    let mut sent = big.clone();
    sent.hop_limit -= 1;
    let as_client_sent = fragments6(&sent.build(), 1232, 0x1234_5678)[0].clone();
    vec![
        Step {
            name: "ipv6: a datagram's first fragment to a VIP".into(),
            on: C0,
            send: first,
            verdict: XDP_REDIRECT,
            reason: reason::FORWARD,
            out: Out::Exact(want_first.clone()),
            ..Step::default()
        },
        Step {
            name: "ipv6: its later fragment follows it to the same real".into(),
            on: C0,
            send: later,
            verdict: XDP_REDIRECT,
            reason: reason::FRAGMENT,
            out: Out::Exact(want_later),
            ..Step::default()
        },
        Step {
            name: "ipv6: the real's first fragment back".into(),
            on: S0,
            send: a_first,
            verdict: XDP_REDIRECT,
            reason: reason::REVERSE,
            out: Out::Exact(want_a_first),
            ..Step::default()
        },
        Step {
            name: "ipv6: and its later fragment".into(),
            on: S0,
            send: a_later,
            verdict: XDP_REDIRECT,
            reason: reason::FRAGMENT,
            out: Out::Exact(want_a_later),
            ..Step::default()
        },
        too_big_behind(
            "ipv6: packet too big quoting a first fragment reaches the client about its own datagram",
            DNS6,
            &want_first[14..14 + quote],
            &as_client_sent[14..14 + quote],
        ),
    ]
}

/// lb's own packet too big: the flow's next hop has a 1280-byte route.
/// Locked: the IPv6 FIB helper reports a route's MTU only when it is
/// (ip6_mtu_from_fib6), else the device's or a learned path MTU.
fn narrow_route() -> Vec<Case> {
    chain(|| {
        let syn = client(Pkt6::tcp((CLIENT6, 43000), (BIG_VIP6, 9000), SYN, 100, 0));
        let big = client(Pkt6::tcp(
            (CLIENT6, 43000),
            (BIG_VIP6, 9000),
            ACK | PSH,
            101,
            1,
        ))
        .with_payload(&[0x5a; 1400]);
        let b = big.build();
        let mtu = 1280u32.to_be_bytes();
        let macs = (LB_C_MAC, CLIENT_MAC);
        let quote = &b[14..14 + 40 + 64];
        let want = icmp6_frame(macs, BIG_VIP6, CLIENT6, 64, PACKET_TOO_BIG, 0, mtu, quote);
        vec![
            fwd6("ipv6: a SYN on a narrow route", &syn, REALS6[2], 9000).before(|fx| {
                #[rustfmt::skip]
                fx.ip(&["-6", "route", "replace", "2001:db8:5::13/128", "dev", "s0", "mtu", "lock", "1280"]);
            }),
            Step { name: "ipv6: lb answers a packet too big for its next hop with packet too big".into(), on: C0, send: b, verdict: XDP_REDIRECT, reason: reason::ICMP_FRAG_NEEDED, out: Out::Exact(want), ..Step::default() },
        ]
    })
}

/// Sticky by /64: one client's privacy addresses share a real.
fn sticky() -> Case {
    Case::code(
        "ipv6 sticky /64: one client's addresses share a real",
        |fx| {
            let sticky_vip: Ipv6Addr = "2001:db8:100::40".parse().unwrap();
            let mut real_of = |from: &str| {
                let c: Ipv6Addr = from.parse().unwrap();
                let name = format!("ipv6 sticky /64: a SYN from {c}");
                let syn = client(Pkt6::tcp((c, 44000), (sticky_vip, 443), SYN, 1, 0));
                let out = fx.step(&forwarded(&name, syn.build()));
                fx.passed(&name);
                dst6(&out)
            };
            let first = real_of("2001:db8:c::2");
            assert_eq!(real_of("2001:db8:c::abcd"), first, "same /64");
            assert_eq!(real_of("2001:db8:c:0:ffff::1"), first, "same /64");
            let other = real_of("2001:db8:d::2");
            assert_ne!(other, first, "another /64 is the next round-robin pick");
            assert_eq!(real_of("2001:db8:d::99"), other, "its /64 sticks too");
        },
    )
}

/// purge: the RST is built in IPv6.
fn purge() -> Vec<Step> {
    let pr = REALS6[0];
    let syn = client(Pkt6::tcp((CLIENT6, 42000), (PVIP6, 7), SYN, 100, 0));
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
    let rst = super::refuse::rst6((PVIP6, 7), (CLIENT6, 42000), 9001, 0, RST);
    vec![
        fwd6("ipv6 purge farm: SYN", &syn, pr, 7),
        Step {
            name: "ipv6 purge: a client packet to a dead real is answered with an IPv6 RST".into(),
            on: C0,
            send: data.build(),
            verdict: XDP_REDIRECT,
            reason: reason::PURGE_RST,
            out: Out::Exact(rst),
            ..Step::default()
        }
        .before(move |fx| fx.set_health("purge6", pr, 7, false))
        .then(|fx, _| assert!(flow6(fx, 42000).is_none(), "the purged flow is gone")),
    ]
}
