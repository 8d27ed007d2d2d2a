//! Flow-table entries made in bulk for tests and benches, shaped like one
//! the datapath made, so the agent treats them as its own.
use lb_common::{DIR_FORWARD, DIR_REVERSE, Flow, FlowKey};

/// The forward and reverse entries of the flow `key`, copied from `model`
/// (a flow the datapath made: its VIP, real and ids), in `state`, created
/// and last seen at `at_ns`, not in the active count.
pub fn entries(model: &Flow, key: FlowKey, state: u8, at_ns: u64) -> [(FlowKey, Flow); 2] {
    let fwd = Flow {
        state,
        flags: 0,
        created_ns: at_ns,
        last_ns: at_ns,
        packets: 10,
        bytes: 1500,
        seq_next: 1,
        dir: DIR_FORWARD,
        ..*model
    };
    let rev = Flow {
        nat_addr: key.dst_addr,
        nat_port_be: key.dst_port_be,
        dir: DIR_REVERSE,
        ..fwd
    };
    [
        (key, fwd),
        (key.reverse(fwd.nat_addr, fwd.nat_port_be), rev),
    ]
}
