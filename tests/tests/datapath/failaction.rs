//! Fail actions and admin states: what a farm's flows do when their real
//! goes down (purge, reassign, none), drain, backups and max_conns, with
//! the reals' states set through the agent's own control code.
use lb_userspace::{config::AdminState, control::Control, datapath::KernelMaps};

use super::*;

const PVIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const RVIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 21);
const KVIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 22);
const CVIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 23);

pub fn cases() -> Vec<Case> {
    [purge_tcp, purge_udp, reassign, keep, capped]
        .into_iter()
        .flat_map(chain)
        .collect()
}

/// Sets reals of `farm` (all on `port`) up or down before a step.
fn health(
    farm: &'static str,
    port: u16,
    set: &'static [(Ipv4Addr, bool)],
) -> impl Fn(&mut Fixture) {
    move |fx| {
        for &(real, up) in set {
            fx.set_health(farm, real, port, up);
        }
    }
}

/// purge, TCP: the client's next packet is answered with a RST.
fn purge_tcp() -> Vec<Step> {
    let syn = tcp_in(42000, (PVIP, 7), SYN, 100, 0, b"");
    let synack = tcp_out((R1, 7), 42000, SYN | ACK, 9000, 101, b"");
    let data = tcp_in(
        42000,
        (PVIP, 7),
        ACK | PSH,
        101,
        9001,
        b"hello after the real died",
    );
    // RFC 793: the segment has an ACK, so the RST takes seq = SEG.ACK, no ACK flag.
    let rst = refuse::rst4((PVIP, 7), (CLIENT, 42000), 9001, 0, RST);
    vec![
        fwd("purge farm: SYN goes to r1", &syn, R1, 7),
        rev("purge farm: SYN-ACK back", &synack, PVIP, 7),
        Step {
            name: "purge: a client packet to a dead real is answered with a RST".into(),
            send: data.build(),
            verdict: XDP_REDIRECT,
            reason: reason::PURGE_RST,
            out: Out::Exact(rst),
            ..Step::default()
        }
        .before(health("purge", 7, &[(R1, false)]))
        .then(|fx, _| {
            assert_eq!(fx.counter(reason::PURGED), 1);
            assert_eq!(fx.flow_state(42000), None, "the purged flow is gone");
        }),
    ]
}

/// purge, UDP: the flow is removed and the datagram starts anew.
fn purge_udp() -> Vec<Step> {
    let q = |port: u16, data: &[u8]| from_client(Pkt::udp((CLIENT, port), (PVIP, 7), data));
    vec![
        // Moves the cursor on: r2 is next.
        fwd("", &q(42009, b"zero"), R1, 7),
        fwd("purge farm: UDP flow to r2", &q(42001, b"one"), R2, 7),
        fwd(
            "purge: UDP to a dead real starts a new flow on a live one",
            &q(42001, b"two"),
            R1,
            7,
        )
        .before(health("purge", 7, &[(R2, false)]))
        .then(|fx, _| assert_eq!(fx.flow_real(42001), Some(R1))),
    ]
}

/// reassign: UDP moves on; TCP goes to the new real (which resets it).
fn reassign() -> Vec<Step> {
    let q = |data: &[u8]| from_client(Pkt::udp((CLIENT, 42002), (RVIP, 9), data));
    let old = from_real(Pkt::udp((R1, 9), (CLIENT, 42002), b"late"));
    let new = from_real(Pkt::udp((R2, 9), (CLIENT, 42002), b"answer"));
    vec![
        fwd("reassign farm: UDP flow to r1", &q(b"a"), R1, 9),
        fwd(
            "reassign farm: TCP flow to r2",
            &tcp_in(42003, (RVIP, 9), SYN, 5, 0, b""),
            R2,
            9,
        ),
        dropped(
            "reassign with no live real drops",
            q(b"b").build(),
            reason::DROP_NO_REAL,
        )
        .before(health("reassign", 9, &[(R1, false), (R2, false)])),
        fwd("reassign: UDP continues on a live real", &q(b"b"), R2, 9)
            .before(health("reassign", 9, &[(R2, true)]))
            .then(|fx, _| {
                assert_eq!(fx.counter(reason::REASSIGNED), 1);
                assert_eq!(fx.flow_real(42002), Some(R2), "the flow now names r2");
            }),
        passed(
            "reassign: the old real's replies are no longer translated",
            S0,
            old.build(),
            reason::PASS_NOT_OURS,
        ),
        rev(
            "reassign: the new real's replies come from the VIP",
            &new,
            RVIP,
            9,
        ),
        fwd(
            "reassign: a TCP packet goes to the new real, whose RST tells the client",
            &tcp_in(42003, (RVIP, 9), ACK, 6, 0, b"x"),
            R1,
            9,
        )
        .before(health("reassign", 9, &[(R1, true), (R2, false)])),
    ]
}

/// none: a dead real keeps its flows; drain keeps flows, takes none new;
/// with no primary left the backup takes new flows.
fn keep() -> Vec<Step> {
    let syn = |port: u16| tcp_in(port, (KVIP, 11), SYN, 5, 0, b"");
    let more = tcp_in(42010, (KVIP, 11), ACK, 6, 0, b"x");
    let mut steps = vec![
        fwd("keep farm: TCP flow to r1", &syn(42010), R1, 11),
        fwd("none: the flow stays on its dead real", &more, R1, 11).before(health(
            "keep",
            11,
            &[(R1, false)],
        )),
        fwd("drain: an open flow continues", &more, R1, 11).before(|fx| {
            fx.set_health("keep", R1, 11, true);
            let drain = |ctl: &mut Control, maps: &mut KernelMaps| {
                ctl.set_admin("keep", R1, Some(11), AdminState::Drain, maps)
            };
            fx.control(drain).expect("drain");
        }),
    ];
    for port in [42011u16, 42012, 42013] {
        steps.push(fwd(
            "drain: new flows go to the other primary",
            &syn(port),
            R2,
            11,
        ));
    }
    steps.push(
        fwd(
            "no primary can serve: the backup takes new flows",
            &syn(42014),
            R3,
            11,
        )
        .before(health("keep", 11, &[(R2, false)])),
    );
    steps
}

/// max_conns: a real at its cap is skipped.
fn capped() -> Vec<Step> {
    let syn = |port: u16| tcp_in(port, (CVIP, 10), SYN, 5, 0, b"");
    let ack = tcp_in(42020, (CVIP, 10), ACK, 6, 0, b"");
    vec![
        fwd("capped farm: first flow to r1", &syn(42020), R1, 10),
        // max_conns counts assured flows: the handshake's ACK moves it to
        // FLOWS and counts it on r1.
        fwd(
            "capped farm: the handshake's ACK assures the flow",
            &ack,
            R1,
            10,
        )
        .then(|fx, _| {
            assert_eq!(fx.counter(reason::ASSURED), 1);
            assert!(fx.flow_in(42020, false).is_some(), "assured: in FLOWS");
            assert!(
                fx.flow_in(42020, true).is_none(),
                "assured: gone from EMBRYOS"
            );
        }),
        fwd(
            "max_conns: r1 at its cap of 1 is skipped",
            &syn(42021),
            R2,
            10,
        ),
        fwd(
            "max_conns: r1 at its cap of 1 is skipped",
            &syn(42022),
            R2,
            10,
        ),
    ]
}
