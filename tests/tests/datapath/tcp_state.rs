//! TCP state: a flow from SYN to RST both ways with exact bytes, its
//! counters and sequence tracking, weighted round-robin over new flows, and
//! a connection picked up mid-stream.
use lb_common::{ST_CLOSED, ST_ESTABLISHED, ST_FIN, ST_SYN};

use super::*;

pub fn cases() -> Vec<Case> {
    let mut cases = chain(flow);
    let mut counted = flow();
    let rst = counted.pop().unwrap().then(|fx, _| flow_counters(fx));
    counted.push(rst);
    cases.push(Case::new(
        "a flow's counters and its server sequence",
        counted,
    ));
    cases.push(Case::code(
        "the web farm's schedule is 1:2:3, spread",
        |fx| {
            let ids: Vec<u32> = WEB_SCHED.iter().map(|&r| fx.real_id(r, 8080)).collect();
            assert_eq!(fx.ctl.programmed().farms["web"].sched, ids);
        },
    ));
    cases.extend(chain(wrr));
    let mid = tcp_in(40100, (VIP, 80), ACK, 77, 0, b"x");
    let name = "a non-SYN without a flow creates an established flow";
    cases.push(Case::one(fwd(name, &mid, WEB_SCHED[0], 8080).then(
        |fx, _| assert_eq!(fx.flow_state(40100), Some(ST_ESTABLISHED)),
    )));
    cases
}

const PORT: u16 = 40001;

fn state_is(st: u8) -> impl Fn(&mut Fixture, &[u8]) {
    move |fx, _| assert_eq!(fx.flow_state(PORT), Some(st), "the flow's state")
}

/// One connection: handshake, data, the real's FIN, the client's RST.
fn flow() -> Vec<Step> {
    let r = WEB_SCHED[0];
    let syn = tcp_in(PORT, (VIP, 80), SYN, 1000, 0, b"");
    let synack = tcp_out((r, 8080), PORT, SYN | ACK, 5000, 1001, b"");
    let mut ack = tcp_in(
        PORT,
        (VIP, 80),
        ACK | PSH,
        1001,
        0,
        b"GET / HTTP/1.0\r\n\r\n",
    );
    ack.ttl = 33;
    let mut padded = tcp_in(PORT, (VIP, 80), ACK, 1019, 0, b"");
    padded.pad = 6; // a 54-byte frame padded to Ethernet's 60
    let fin = tcp_out((r, 8080), PORT, FIN | ACK, 5001, 0, b"");
    let rst = tcp_in(PORT, (VIP, 80), RST, 1019, 0, b"");
    let new_flows = |n: u64| move |fx: &mut Fixture| assert_eq!(fx.counter(reason::NEW_FLOW), n);
    vec![
        fwd(
            "SYN to a VIP is NATed to the scheduled real and redirected",
            &syn,
            r,
            8080,
        )
        .then(move |fx, out| {
            new_flows(1)(fx);
            state_is(ST_SYN)(fx, out);
            assert_eq!(fx.flow_real(PORT), Some(r));
        }),
        rev(
            "SYN-ACK from the real is NATed back to the VIP",
            &synack,
            VIP,
            80,
        ),
        fwd("the client's next packet follows its flow", &ack, r, 8080).then(move |fx, out| {
            new_flows(1)(fx);
            state_is(ST_ESTABLISHED)(fx, out);
        }),
        fwd(
            "an Ethernet-padded frame keeps its padding",
            &padded,
            r,
            8080,
        ),
        rev("FIN from the real moves the flow to fin", &fin, VIP, 80).then(state_is(ST_FIN)),
        fwd(
            "RST of a known flow is forwarded and closes it",
            &rst,
            r,
            8080,
        )
        .then(state_is(ST_CLOSED)),
    ]
}

/// After `flow`: its per-VIP and per-real counters, and the server's next
/// sequence number kept for the RSTs the agent may send.
fn flow_counters(fx: &mut Fixture) {
    // 4 client packets (SYN 40 + ACK with 18 bytes 58 + padded ACK 40 +
    // RST 40 IP bytes), 2 replies (SYN-ACK 40 + FIN 40).
    let vip = fx.vip_counters(fx.vip_id("www"));
    assert_eq!((vip.packets_in, vip.bytes_in), (4, 178), "VIP in");
    assert_eq!((vip.packets_out, vip.bytes_out), (2, 80), "VIP out");
    assert_eq!(vip.new_flows, 1);
    let r = WEB_SCHED[0];
    let real = fx.real_counters(fx.real_id(r, 8080));
    let got = (real.packets_in, real.packets_out, real.new_flows);
    assert_eq!(got, (4, 2, 1), "the flow on {r}");
    let f = fx.flow_in(PORT, false).expect("the flow");
    // 5001 + FIN.
    assert_eq!(f.rev.expect("its reverse entry").1.seq_next, 5002);
}

/// Six new flows walk the web farm's 1:2:3 schedule.
fn wrr() -> Vec<Step> {
    let mut steps: Vec<Step> = (0..6u16)
        .map(|i| {
            let syn = tcp_in(PORT + i, (VIP, 80), SYN, 7, 0, b"");
            let name = format!("SYN #{} goes to the next real in the schedule", i + 1);
            fwd(
                if i == 0 { "" } else { &name },
                &syn,
                WEB_SCHED[i as usize],
                8080,
            )
        })
        .collect();
    steps[5] = std::mem::take(&mut steps[5]).then(|fx, _| {
        let mut counts = [0usize; 3];
        for i in 0..6 {
            let real = fx.flow_real(PORT + i).expect("flow");
            counts[REALS.iter().position(|&x| x == real).unwrap()] += 1;
        }
        assert_eq!(counts, [1, 2, 3], "weights 1:2:3");
    });
    steps
}
