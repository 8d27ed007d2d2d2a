//! NAT: what is not lb's (passed byte-identical), malformed frames (counted,
//! passed for the kernel to judge), the stated rules for packets to a VIP
//! address, UDP both ways, flows whose half the agent rebuilt, the
//! forwarding choices (hairpin, no neighbour, a VLAN tag) and a reload.
use lb_common::ST_UDP;

use super::*;

pub fn cases() -> Vec<Case> {
    [not_ours(), malformed(), vip_rules(), udp(), forwarding()]
        .into_iter()
        .flatten()
        .collect()
}

fn not_ours() -> Vec<Case> {
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let mut v6 = arp[..12].to_vec();
    v6.extend_from_slice(&[0x86, 0xdd]);
    v6.extend_from_slice(&[0u8; 40]);
    let mut v6_ok = v6.clone();
    v6_ok[14] = 0x60;
    let other = from_client(Pkt::tcp((CLIENT, 40000), (R1, 22), SYN, 1, b""));
    let stray = from_real(Pkt::tcp((R1, 8080), (CLIENT, 1), ACK, 1, b""));
    #[rustfmt::skip]
    let steps = [
        passed("arp is passed unchanged", C0, arp, reason::PASS_NOT_IPV4),
        passed("an ipv6 header of version 0 is passed unchanged", C0, v6, reason::PASS_BAD_IPV6),
        passed("ipv6 to no VIP is passed unchanged", C0, v6_ok, reason::PASS_NOT_OURS),
        passed("tcp to a non-VIP address is passed unchanged", C0, other.build(), reason::PASS_NOT_OURS),
        passed("a real's packet with no flow is passed unchanged", S0, stray.build(), reason::PASS_NOT_OURS),
    ];
    steps.into_iter().map(Case::one).collect()
}

/// A SYN to the VIP, as bytes to spoil.
fn syn_bytes() -> Vec<u8> {
    from_client(Pkt::tcp((CLIENT, 1), (VIP, 80), SYN, 1, b"")).build()
}

fn malformed() -> Vec<Case> {
    let mut vlan_short = syn_bytes();
    vlan_short[12..14].copy_from_slice(&[0x81, 0x00]);
    vlan_short.truncate(16);
    let mut qinq = syn_bytes();
    let mut tags = vec![0x81, 0x00, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x0b];
    tags.extend_from_slice(&qinq[12..]);
    qinq.truncate(12);
    qinq.extend_from_slice(&tags);
    let mut short_ip = syn_bytes();
    short_ip.truncate(14 + 12);
    let mut bad_ver = syn_bytes();
    bad_ver[14] = 0x65;
    let mut long_len = syn_bytes();
    long_len[16..18].copy_from_slice(&1400u16.to_be_bytes());
    #[rustfmt::skip]
    let steps = [
        passed("truncated 802.1Q header is passed", C0, vlan_short, reason::PASS_BAD_L2),
        passed("two VLAN tags are passed", C0, qinq, reason::PASS_BAD_L2),
        passed("truncated IPv4 header is passed", C0, short_ip, reason::PASS_BAD_IPV4),
        passed("IPv4 ethertype with version 6 is passed", C0, bad_ver, reason::PASS_BAD_IPV4),
        passed("total length beyond the frame is passed", C0, long_len, reason::PASS_BAD_IPV4),
    ];
    steps.into_iter().map(Case::one).collect()
}

fn icmp_to_vip(kind: u8, code: u8, payload: &[u8]) -> Pkt {
    let l4 = L4::Icmp {
        kind,
        code,
        payload: payload.to_vec(),
    };
    from_client(Pkt::ip(CLIENT, VIP, l4))
}

/// Stated rules for packets to a VIP address.
fn vip_rules() -> Vec<Case> {
    let udp = L4::Udp {
        sport: 1,
        dport: 80,
        payload: vec![],
        zero_csum: true,
    };
    let mut short_tcp = from_client(Pkt::ip(CLIENT, VIP, udp)).build();
    // Claim TCP with only 8 bytes of L4 header.
    short_tcp[14 + 9] = 6;
    let mut ip = pnet::packet::ipv4::MutableIpv4Packet::new(&mut short_tcp[14..]).unwrap();
    ip.set_checksum(0);
    ip.set_checksum(pnet::packet::ipv4::checksum(&ip.to_immutable()));

    let syn = |port: u16| from_client(Pkt::tcp((CLIENT, port), (VIP, 80), SYN, 1, b""));
    let mut bad_doff = syn(41000);
    if let L4::Tcp { doff, .. } = &mut bad_doff.l4 {
        *doff = 4;
    }
    let mut opts = syn(41001);
    opts.options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    let mut later = from_client(Pkt::tcp((CLIENT, 41002), (VIP, 80), ACK, 1, b"data"));
    later.frag = (0, 185);
    later.id = 0x7777;
    let mut ttl1 = syn(41003);
    ttl1.ttl = 1;
    let port81 = from_client(Pkt::tcp((CLIENT, 41004), (VIP, 81), SYN, 1, b""));
    let udp80 = from_client(Pkt::udp((CLIENT, 41005), (VIP, 80), b"x"));
    let rst = from_client(Pkt::tcp((CLIENT, 41006), (VIP, 80), RST, 1, b""));

    let mut echo = icmp_to_vip(8, 0, b"ping-payload");
    echo.ttl = 55;
    let mut reply = icmp_to_vip(0, 0, b"ping-payload");
    (reply.src, reply.dst) = (VIP, CLIENT);
    (reply.src_mac, reply.dst_mac) = (LB_C_MAC, CLIENT_MAC);

    let no_flow = |port: u16| {
        move |fx: &mut Fixture, _: &[u8]| assert_eq!(fx.flow_state(port), None, "no flow")
    };
    #[rustfmt::skip]
    let steps = [
        dropped("truncated TCP header to a VIP is dropped", short_tcp, reason::DROP_BAD_L4),
        dropped("TCP data offset below 5 to a VIP is dropped", bad_doff.build(), reason::DROP_BAD_L4),
        dropped("IPv4 options to a VIP are dropped", opts.build(), reason::DROP_IP_OPTIONS),
        dropped("a later fragment to a VIP before its first is dropped", later.build(), reason::DROP_FRAGMENT_EARLY),
        passed("TTL 1 to a VIP is passed for ICMP time exceeded", C0, ttl1.build(), reason::PASS_TTL)
            .then(no_flow(41003)),
        dropped("VIP address on an unconfigured port is dropped", port81.build(), reason::DROP_NO_VIP_PORT),
        dropped("VIP port with the wrong protocol is dropped", udp80.build(), reason::DROP_NO_VIP_PORT),
        dropped("RST to a VIP without a flow is dropped", rst.build(), reason::DROP_RST_NO_FLOW)
            .then(no_flow(41006)),
        Step {
            name: "ICMP echo to a VIP is answered".into(),
            send: echo.build(),
            verdict: XDP_REDIRECT,
            reason: reason::ICMP_ECHO_REPLY,
            out: Out::Exact(reply.build()),
            ..Step::default()
        },
        dropped("an ICMP error to a VIP quoting no flow is dropped", icmp_to_vip(3, 3, &[0; 28]).build(), reason::DROP_ICMP_NO_FLOW),
        dropped("other ICMP to a VIP is dropped", icmp_to_vip(13, 0, &[0; 12]).build(), reason::DROP_ICMP_VIP),
    ];
    steps.into_iter().map(Case::one).collect()
}

/// The dns VIP's one real.
const DNS: (Ipv4Addr, u16) = (R1, 5353);

fn query(port: u16, data: &[u8]) -> Pkt {
    from_client(Pkt::udp((CLIENT, port), (VIP, 53), data))
}

fn answer(port: u16, data: &[u8]) -> Pkt {
    from_real(Pkt::udp(DNS, (CLIENT, port), data))
}

/// Removes one half of the flow from the client's `port` from `FLOWS`
/// (as LRU eviction would); the agent's sweep must rebuild it.
fn evict_half(fx: &mut Fixture, port: u16, reverse: bool) {
    let f = fx.flow_in(port, false).expect("the assured flow");
    let key = if reverse {
        f.rev.expect("its reverse entry").0
    } else {
        f.fwd_key
    };
    fx.dp().maps.flows.remove(&key).unwrap();
    assert_eq!(fx.sweep().repaired, 1, "half rebuilt");
}

fn udp() -> Vec<Case> {
    let mut cases = chain(|| {
        let q = query(53000, b"query");
        vec![
            fwd(
                "UDP to a VIP is NATed with its checksum updated",
                &q,
                DNS.0,
                DNS.1,
            )
            .then(|fx, _| assert_eq!(fx.flow_state(53000), Some(ST_UDP))),
            rev(
                "UDP reply is NATed back",
                &answer(53000, b"answer"),
                VIP,
                53,
            ),
            rev(
                "a reply after its half was rebuilt is NATed back",
                &answer(53000, b"again"),
                VIP,
                53,
            )
            .before(|fx| evict_half(fx, 53000, true)),
        ]
    });
    let q = query(53000, b"more");
    cases.push(Case::new(
        "a client packet after its half was rebuilt stays on its real",
        vec![
            fwd("", &query(53000, b"query"), DNS.0, DNS.1),
            rev("", &answer(53000, b"answer"), VIP, 53),
            fwd("", &q, DNS.0, DNS.1)
                .before(|fx| evict_half(fx, 53000, false))
                .then(|fx, _| assert_eq!(fx.counter(reason::NEW_FLOW), 1, "no new flow")),
        ],
    ));
    let mut q0 = query(53001, b"no checksum");
    if let L4::Udp { zero_csum, .. } = &mut q0.l4 {
        *zero_csum = true;
    }
    cases.push(Case::one(
        fwd("a UDP checksum of zero stays zero", &q0, DNS.0, DNS.1)
            .then(|_, out| assert_eq!(&out[14 + 26..14 + 28], &[0, 0])),
    ));
    cases
}

/// Where a NATed packet goes: out the ingress, to the kernel, tagged.
fn forwarding() -> Vec<Case> {
    let hair = from_client(Pkt::tcp((CLIENT, 40200), (VIP_HAIR, 80), SYN, 1, b""));
    let mut hair_out = hair.clone();
    hair_out.dst = HAIR;
    hair_out.ttl -= 1;
    (hair_out.src_mac, hair_out.dst_mac) = (LB_C_MAC, HAIR_MAC);
    set_dport(&mut hair_out, 8080);

    let nn = from_client(Pkt::tcp((CLIENT, 40300), (VIP_NONEIGH, 80), SYN, 1, b""));
    let mut nn_out = nn.clone();
    nn_out.dst = Ipv4Addr::new(203, 0, 113, 99);
    set_dport(&mut nn_out, 8080);

    let mut tagged = from_client(Pkt::tcp((CLIENT, 40400), (VIP, 80), SYN, 1, b""));
    tagged.vlan = Some(10);
    let mut tagged_out = tagged.clone();
    tagged_out.dst = WEB_SCHED[0];
    set_dport(&mut tagged_out, 8080);

    let q = query(53002, b"query");
    let steps = [
        Step {
            name: "a real behind the ingress interface gets XDP_TX".into(),
            send: hair.build(),
            verdict: XDP_TX,
            reason: reason::FORWARD,
            out: Out::Exact(hair_out.build()),
            ..Step::default()
        },
        Step {
            name: "no resolved neighbour: NATed, passed to the kernel to forward".into(),
            send: nn.build(),
            verdict: XDP_PASS,
            reason: reason::PASS_FIB,
            out: Out::Exact(nn_out.build()),
            ..Step::default()
        },
        Step {
            name: "a tagged frame is NATed, keeps its tag, and goes to the kernel".into(),
            send: tagged.build(),
            verdict: XDP_PASS,
            reason: reason::PASS_FIB,
            out: Out::Exact(tagged_out.build()),
            ..Step::default()
        },
        dropped(
            "after the VIP's removal its port is refused",
            q.build(),
            reason::DROP_NO_VIP_PORT,
        )
        .before(|fx| {
            let mut no_dns = fx.cfg.clone();
            no_dns.vips.remove("dns");
            fx.control(|ctl, maps| ctl.apply(&no_dns, maps).expect("reload"));
        }),
    ];
    steps.into_iter().map(Case::one).collect()
}
