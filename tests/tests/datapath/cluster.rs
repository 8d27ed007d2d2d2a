//! A cluster node's replies to flows it holds none of (lb-ebpf's reply.rs):
//! translated by the real's endpoint through `REPLY_NAT`, with no state
//! made; passed as not ours when the map does not name the endpoint.
use lb_common::{ReplyNat, VipKey, reason, to_map_addr};
use lb_userspace::control::MapWriter;

use super::*;

fn endpoint(addr: Ipv4Addr, port: u16, proto: u8) -> VipKey {
    VipKey {
        addr: to_map_addr(addr.into()),
        port_be: port.to_be(),
        proto,
        _pad: 0,
    }
}

pub fn cases(fx: &mut Fixture) {
    let s0 = fx.s0;
    let real = Ipv4Addr::new(203, 0, 113, 12);
    let tcp = endpoint(real, 8080, lb_common::PROTO_TCP);
    let mut synack = from_real(Pkt::tcp(
        (real, 8080),
        (CLIENT, 40600),
        SYN | ACK,
        7000,
        b"",
    ));
    if let L4::Tcp { ack, .. } = &mut synack.l4 {
        *ack = 1001;
    }
    let synack = synack;
    let entries = fx.entries();
    fx.case(
        "a reply without a flow, its real endpoint in no REPLY_NAT entry, is not ours",
        s0,
        &synack.build(),
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&synack.build()),
    );
    let vip_id = fx.ctl.programmed().vips["www"].id;
    fx.dp()
        .maps
        .put_reply_nat(
            &tcp,
            &ReplyNat {
                vip_addr: to_map_addr(VIP.into()),
                vip_port_be: 80u16.to_be(),
                _pad: 0,
                vip_id,
            },
        )
        .expect("REPLY_NAT");
    let before = fx.vip_counters(vip_id);
    fx.case(
        "a cluster peer's SYN-ACK, before the flow's sync, is translated to its VIP",
        s0,
        &synack.build(),
        XDP_REDIRECT,
        reason::REVERSE_STATELESS,
        Some(&snat(&synack, VIP, 80)),
    );
    assert_eq!(fx.entries(), entries, "a stateless reply makes no flow");
    let after = fx.vip_counters(vip_id);
    assert_eq!(
        after.packets_out,
        before.packets_out + 1,
        "counted on its VIP"
    );

    let own = Ipv4Addr::new(203, 0, 113, 1);
    let probe = from_real(Pkt::tcp((real, 8080), (own, 40700), SYN | ACK, 9000, b""));
    fx.case(
        "the answer to the node's own connection (a health probe) is the node's",
        s0,
        &probe.build(),
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&probe.build()),
    );
    let data = from_real(Pkt::tcp(
        (real, 8080),
        (CLIENT, 40600),
        ACK | PSH,
        7001,
        b"body",
    ));
    fx.case(
        "and so is its data",
        s0,
        &data.build(),
        XDP_REDIRECT,
        reason::REVERSE_STATELESS,
        Some(&snat(&data, VIP, 80)),
    );
    let udp = from_real(Pkt::udp((real, 8080), (CLIENT, 40600), b"answer"));
    fx.case(
        "the entry is per protocol: a UDP reply from the same port is not ours",
        s0,
        &udp.build(),
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&udp.build()),
    );
    let other = from_real(Pkt::tcp((real, 8081), (CLIENT, 40600), ACK, 7001, b""));
    fx.case(
        "nor is a reply from another port of the real",
        s0,
        &other.build(),
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&other.build()),
    );
    fx.dp().maps.del_reply_nat(&tcp).expect("REPLY_NAT");
    fx.case(
        "without the entry (outside a cluster) the reply is not ours again",
        s0,
        &synack.build(),
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&synack.build()),
    );
}
