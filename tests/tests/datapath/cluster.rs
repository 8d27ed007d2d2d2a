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

const REAL: Ipv4Addr = R2;

/// `REPLY_NAT` names the real's TCP endpoint as the www VIP's, as a cluster
/// node's agent programs it.
fn put_nat(fx: &mut Fixture) {
    let nat = ReplyNat {
        vip_addr: to_map_addr(VIP.into()),
        vip_port_be: 80u16.to_be(),
        _pad: 0,
        vip_id: fx.vip_id("www"),
    };
    let tcp = endpoint(REAL, 8080, lb_common::PROTO_TCP);
    fx.dp().maps.put_reply_nat(&tcp, &nat).expect("REPLY_NAT");
}

pub fn cases() -> Vec<Case> {
    let synack = tcp_out((REAL, 8080), 40600, SYN | ACK, 7000, 1001, b"");
    let own = Ipv4Addr::new(203, 0, 113, 1);
    let probe = from_real(Pkt::tcp((REAL, 8080), (own, 40700), SYN | ACK, 9000, b""));
    let data = tcp_out((REAL, 8080), 40600, ACK | PSH, 7001, 0, b"body");
    let udp = from_real(Pkt::udp((REAL, 8080), (CLIENT, 40600), b"answer"));
    let other = tcp_out((REAL, 8081), 40600, ACK, 7001, 0, b"");
    let stateless = |name: &str, p: &Pkt| Step {
        reason: reason::REVERSE_STATELESS,
        ..rev(name, p, VIP, 80)
    };
    let not_ours = |name: &str, p: &Pkt| passed(name, S0, p.build(), reason::PASS_NOT_OURS);
    let with_nat = [
        stateless(
            "a cluster peer's SYN-ACK, before the flow's sync, is translated to its VIP",
            &synack,
        )
        .then(|fx, _| {
            assert_eq!(fx.entries(), 0, "a stateless reply makes no flow");
            let vip = fx.vip_counters(fx.vip_id("www"));
            assert_eq!(vip.packets_out, 1, "counted on its VIP");
        }),
        not_ours(
            "the answer to the node's own connection (a health probe) is the node's",
            &probe,
        ),
        stateless("and so is its data", &data),
        not_ours(
            "the entry is per protocol: a UDP reply from the same port is not ours",
            &udp,
        ),
        not_ours("nor is a reply from another port of the real", &other),
        not_ours(
            "without the entry (outside a cluster) the reply is not ours again",
            &synack,
        )
        .before(|fx| {
            let tcp = endpoint(REAL, 8080, lb_common::PROTO_TCP);
            fx.dp().maps.del_reply_nat(&tcp).expect("REPLY_NAT");
        }),
    ];
    let mut cases = vec![Case::one(not_ours(
        "a reply without a flow, its real endpoint in no REPLY_NAT entry, is not ours",
        &synack,
    ))];
    cases.extend(with_nat.into_iter().map(|s| Case::one(s).setup(put_nat)));
    cases
}
