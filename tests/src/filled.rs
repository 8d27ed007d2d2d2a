//! Flow-table entries made in bulk for tests and benches, shaped like one
//! the datapath made, so the agent treats them as its own.
use std::net::Ipv4Addr;

use lb_common::{DIR_FORWARD, DIR_REVERSE, Flow, FlowKey, v4_mapped};

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
    pair(key, fwd)
}

/// The flow `key` (client to VIP) whose forward entry is `fwd`, with its
/// reverse entry (real to client, back to the VIP) made alike: same ids,
/// state, times and counts, not counted.
pub fn pair(key: FlowKey, fwd: Flow) -> [(FlowKey, Flow); 2] {
    let rev = Flow {
        nat_addr: key.dst_addr,
        nat_port_be: key.dst_port_be,
        dir: DIR_REVERSE,
        flags: 0,
        ..fwd
    };
    [
        (key, fwd),
        (key.reverse(fwd.nat_addr, fwd.nat_port_be), rev),
    ]
}

/// The key of an IPv4 packet from `src` to `dst`.
pub fn key4(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), proto: u8) -> FlowKey {
    FlowKey {
        src_addr: v4_mapped(src.0.octets()),
        dst_addr: v4_mapped(dst.0.octets()),
        src_port_be: src.1.to_be(),
        dst_port_be: dst.1.to_be(),
        proto,
        _pad: [0; 3],
    }
}
