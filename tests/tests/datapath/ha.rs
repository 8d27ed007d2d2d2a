//! HA: a standby passes everything untouched; an active node with sync on
//! reports a new flow in `SYNC`.
use lb_common::ST_SYN;

use super::*;

pub fn cases() -> Vec<Case> {
    let syn = |port: u16| from_client(Pkt::tcp((CLIENT, port), (VIP_NONEIGH, 80), SYN, 1, b""));
    vec![
        Case::one(
            passed(
                "a standby passes a VIP's SYN unchanged and makes no flow",
                C0,
                syn(40500).build(),
                reason::PASS_STANDBY,
            )
            .before(|fx| fx.dp().maps.standby.set(0, 1, 0).expect("STANDBY"))
            .then(|fx, _| assert_eq!(fx.entries(), 0, "no flow")),
        ),
        Case::one(
            Step {
                name: "with sync on, a new flow is forwarded as usual".into(),
                send: syn(40501).build(),
                verdict: XDP_PASS,
                reason: reason::PASS_FIB,
                ..Step::default()
            }
            .before(|fx| fx.dp().maps.sync_on.set(0, 1, 0).expect("SYNC_ON"))
            .then(|fx, _| {
                assert_eq!(fx.entries(), 2, "both directions");
                sync_record(fx);
            }),
        ),
    ]
}

/// The one `SYNC` record of the new flow from port 40501.
fn sync_record(fx: &mut Fixture) {
    let rec = fx.sync.next().expect("a SYNC record for the new flow");
    // SAFETY: the datapath writes whole `SyncEvent`s.
    let ev: lb_common::SyncEvent = unsafe { std::ptr::read_unaligned(rec.as_ptr().cast()) };
    drop(rec);
    assert_eq!(ev.kind, lb_common::SYNC_CREATE);
    assert_eq!(ev.state, ST_SYN);
    assert_eq!(ev.key.src_port_be, 40501u16.to_be());
    assert_eq!(ev.key.dst_addr, lb_common::v4_mapped(VIP_NONEIGH.octets()));
    assert!(fx.sync.next().is_none(), "one record per new flow");
}
