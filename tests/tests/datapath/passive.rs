//! Passive health: what the reply path tells about a real (a RST or an
//! ICMP error answering its SYN, a SYN sent again unanswered, a SYN-ACK),
//! counted on the real, the packets themselves forwarded as usual.
use super::*;

/// The client's port whose SYN lands on r2: the schedule's second.
const PORT: u16 = 43001;

pub fn cases() -> Vec<Case> {
    let fail = |n: u64| move |fx: &mut Fixture, _: &[u8]| assert_eq!(r2(fx).conn_fail, n);
    let syn = tcp_in(PORT, (VIP, 80), SYN, 1, 0, b"");
    let refused = tcp_out((R2, 8080), PORT, RST | ACK, 0, 0, b"");
    let ok = tcp_out((R2, 8080), PORT, SYN | ACK, 1, 2, b"");
    vec![
        on_r2(
            rev(
                "a real's RST to a SYN is passed back and counted as a failure",
                &refused,
                VIP,
                80,
            )
            .then(fail(1)),
        ),
        on_r2(fwd("a retransmitted SYN follows its flow", &syn, R2, 8080).then(fail(1))),
        on_r2(
            rev("a SYN-ACK counts as a success", &ok, VIP, 80)
                .then(|fx, _| assert_eq!(r2(fx).conn_ok, 1)),
        ),
        Case::one(
            passed(
                "ICMP unreachable about an unknown flow is passed",
                S0,
                unreachable(Pkt::udp((CLIENT, 53100), (R2, 8080), b"")).build(),
                reason::PASS_NOT_OURS,
            )
            .then(fail(0)),
        ),
        on_r2(icmp_about_flow().then(fail(1))),
    ]
}

/// The web farm's r2's counters.
fn r2(fx: &mut Fixture) -> lb_common::Counters {
    let id = fx.real_id(R2, 8080);
    fx.real_counters(id)
}

/// `step` after a SYN from `PORT` reached r2 (the schedule's second pick).
fn on_r2(step: Step) -> Case {
    let syn = |port: u16| tcp_in(port, (VIP, 80), SYN, 1, 0, b"");
    let first = fwd("", &syn(PORT - 1), WEB_SCHED[0], 8080);
    let to_r2 = fwd("", &syn(PORT), WEB_SCHED[1], 8080);
    Case::new(&step.name.clone(), vec![first, to_r2, step])
}

/// An ICMP port unreachable from r2 quoting `inner`'s headers.
fn unreachable(inner: Pkt) -> Pkt {
    let quoted = inner.build()[14..14 + 28].to_vec();
    let l4 = L4::Icmp {
        kind: 3,
        code: 3,
        payload: quoted,
    };
    from_real(Pkt::ip(R2, CLIENT, l4))
}

/// r2's unreachable about the client's SYN to it, translated for the
/// client: quoting client -> VIP, from the VIP.
fn icmp_about_flow() -> Step {
    let icmp = unreachable(Pkt::tcp((CLIENT, PORT), (R2, 8080), SYN, 1, b""));
    let mut want = unreachable(Pkt::tcp((CLIENT, PORT), (VIP, 80), SYN, 1, b""));
    want.src = VIP;
    want.ttl -= 1;
    (want.src_mac, want.dst_mac) = (LB_C_MAC, CLIENT_MAC);
    Step {
        name: "ICMP unreachable from a real about its flow is reported and translated".into(),
        on: S0,
        send: icmp.build(),
        verdict: XDP_REDIRECT,
        reason: reason::ICMP_ERROR_TO_CLIENT,
        out: Out::Exact(want.build()),
        ..Step::default()
    }
}
