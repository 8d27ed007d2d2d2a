//! Fixtures for a VIP whose farm has no live real: a new TCP flow is
//! refused with a RST and a UDP datagram with a port unreachable, in both
//! families, and `no_real: drop` drops in silence. Expected frames are
//! built from scratch by pnet.
use std::net::Ipv6Addr;

use lb_tests::fixture_net::CLIENT6;

use super::{
    edges::lb_icmp4,
    packet6::Pkt6,
    v6::{DEST_UNREACH, icmp6_frame},
    *,
};

/// VIPs on the farm `empty` (its one real disabled): TCP on 80 and UDP on
/// 53 at `VIP_EMPTY`; TCP at `QUIET` with `no_real: drop`.
pub const VIPS: &str = r#"
  emptyu: { address: 198.51.100.13, port: 53, protocol: udp, serverfarm: empty }
  quiet: { address: 198.51.100.14, port: 80, serverfarm: empty, no_real: drop }
  empty6: { address: 2001:db8:100::50, port: 80, serverfarm: empty6 }
  emptyu6: { address: 2001:db8:100::50, port: 53, protocol: udp, serverfarm: empty6 }
"#;
pub const FARMS: &str = r#"
  empty6:
    reals: [{ address: 2001:db8:5::11, port: 9, state: disabled }]
"#;

const QUIET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 14);
const EMPTY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x50);

/// The RST lb sends from `from` to `to` (window 0, TTL 64, DF, id 0), out
/// the client's interface.
pub fn rst4(from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let rst = Pkt {
        src_mac: LB_C_MAC,
        dst_mac: CLIENT_MAC,
        vlan: None,
        src: from.0,
        dst: to.0,
        ttl: 64,
        id: 0,
        frag: (0x2, 0),
        options: vec![],
        l4: L4::Tcp {
            sport: from.1,
            dport: to.1,
            seq,
            ack,
            flags,
            doff: 5,
            payload: vec![],
        },
        pad: 0,
    };
    let mut want = rst.build();
    // The builder sets a window of 64240; a RST carries 0.
    want[34 + 14..34 + 16].copy_from_slice(&[0, 0]);
    let c = {
        let t = pnet::packet::tcp::TcpPacket::new(&want[34..]).unwrap();
        pnet::packet::tcp::ipv4_checksum(&t, &from.0, &to.0)
    };
    want[34 + 16..34 + 18].copy_from_slice(&c.to_be_bytes());
    want
}

/// `rst4` in IPv6 (hop limit 64).
pub fn rst6(from: (Ipv6Addr, u16), to: (Ipv6Addr, u16), seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut rst = Pkt6::tcp(from, to, flags, seq, ack);
    rst.src_mac = LB_C_MAC;
    rst.dst_mac = CLIENT_MAC;
    let mut want = rst.build();
    want[54 + 14..54 + 16].copy_from_slice(&[0, 0]);
    want[54 + 16..54 + 18].copy_from_slice(&[0, 0]);
    let c = {
        let t = pnet::packet::tcp::TcpPacket::new(&want[54..]).unwrap();
        pnet::packet::tcp::ipv6_checksum(&t, &from.0, &to.0)
    };
    want[54 + 16..54 + 18].copy_from_slice(&c.to_be_bytes());
    want
}

pub fn cases() -> Vec<Case> {
    // A SYN (no ACK) with options, as a kernel sends it: the RST has seq 0
    // and acknowledges the SYN.
    let mut syn = from_client(Pkt::tcp((CLIENT, 41007), (VIP_EMPTY, 80), SYN, 1, b""));
    if let L4::Tcp { doff, .. } = &mut syn.l4 {
        *doff = 10;
    }
    let quiet = from_client(Pkt::tcp((CLIENT, 41008), (QUIET, 80), SYN, 1, b""));
    // The quote: the IP and UDP headers.
    let udp = from_client(Pkt::udp((CLIENT, 41009), (VIP_EMPTY, 53), b"query"));
    let dgram = udp.build();
    let unreach = lb_icmp4(&udp, VIP_EMPTY, (3, 3, [0; 4]), &dgram[14..14 + 28]);
    let syn6 = Pkt6 {
        src_mac: CLIENT_MAC,
        dst_mac: LB_C_MAC,
        ..Pkt6::tcp((CLIENT6, 41007), (EMPTY6, 80), SYN, 1, 0)
    };
    let dgram6 = Pkt6 {
        src_mac: CLIENT_MAC,
        dst_mac: LB_C_MAC,
        ..Pkt6::udp((CLIENT6, 41009), (EMPTY6, 53), b"query")
    }
    .build();
    let macs = (LB_C_MAC, CLIENT_MAC);
    let quote6 = &dgram6[14..14 + 48];
    let unreach6 = icmp6_frame(macs, EMPTY6, CLIENT6, 64, DEST_UNREACH, 4, [0; 4], quote6);
    let steps = [
        Step {
            name: "no live real: a SYN is refused with a RST from the VIP".into(),
            on: C0,
            send: syn.build(),
            verdict: XDP_REDIRECT,
            reason: reason::NO_REAL_RST,
            out: Out::Exact(rst4((VIP_EMPTY, 80), (CLIENT, 41007), 0, 2, RST | ACK)),
            ..Step::default()
        },
        dropped(
            "no live real, no_real: drop: the SYN is dropped",
            quiet.build(),
            reason::DROP_NO_REAL,
        ),
        Step {
            name: "no live real: a UDP datagram gets a port unreachable quoting it".into(),
            on: C0,
            send: dgram,
            verdict: XDP_REDIRECT,
            reason: reason::NO_REAL_UNREACH,
            out: Out::Exact(unreach),
            ..Step::default()
        },
        Step {
            name: "ipv6, no live real: a SYN is refused with an IPv6 RST".into(),
            on: C0,
            send: syn6.build(),
            verdict: XDP_REDIRECT,
            reason: reason::NO_REAL_RST,
            out: Out::Exact(rst6((EMPTY6, 80), (CLIENT6, 41007), 0, 2, RST | ACK)),
            ..Step::default()
        },
        Step {
            name: "ipv6, no live real: a UDP datagram gets a port unreachable quoting it".into(),
            on: C0,
            send: dgram6,
            verdict: XDP_REDIRECT,
            reason: reason::NO_REAL_UNREACH,
            out: Out::Exact(unreach6),
            ..Step::default()
        },
    ];
    steps.into_iter().map(Case::one).collect()
}
