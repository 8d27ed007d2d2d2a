//! Flow entries: creation of both directions, and per-packet state updates.
use lb_common::{
    DIR_FORWARD, DIR_REVERSE, Flow, FlowKey, PROTO_TCP, Real, ST_CLOSED, ST_ESTABLISHED, ST_FIN,
    ST_SYN, ST_UDP,
};

use crate::{
    maps::FLOWS,
    parse::{L4, TcpFlags},
};

/// A 16-byte address from an IPv4 one (see `lb_common::v4_mapped`).
#[inline(always)]
pub fn addr16(v4: [u8; 4]) -> [u8; 16] {
    lb_common::v4_mapped(v4)
}

#[inline(always)]
pub fn key(src: [u8; 4], dst: [u8; 4], sport: [u8; 2], dport: [u8; 2], proto: u8) -> FlowKey {
    FlowKey {
        src_addr: addr16(src),
        dst_addr: addr16(dst),
        src_port_be: u16::from_ne_bytes(sport),
        dst_port_be: u16::from_ne_bytes(dport),
        proto,
        _pad: [0; 3],
    }
}

/// The state a new flow starts in: SYN for a SYN, established when the
/// balancer picks up a connection mid-stream (after a restart or failover the
/// real answers with a RST if it does not know it, which is what the client
/// needs to hear).
#[inline(always)]
fn initial_state(proto: u8, flags: TcpFlags) -> u8 {
    if proto != PROTO_TCP {
        ST_UDP
    } else if flags.syn && !flags.ack {
        ST_SYN
    } else {
        ST_ESTABLISHED
    }
}

/// Inserts both directions of a new flow, the first packet already counted
/// in the forward entry. `None` if the table refused.
#[inline(always)]
pub fn create(
    fwd_key: &FlowKey,
    vip_id: u32,
    real_id: u32,
    real: &Real,
    l4: &L4,
    flags: TcpFlags,
    now: u64,
) -> Option<()> {
    let base = Flow {
        nat_addr: real.addr,
        nat_port_be: real.port_be,
        dir: DIR_FORWARD,
        state: initial_state(l4.proto, flags),
        real_id,
        vip_id,
        flags: 0,
        created_ns: now,
        last_ns: now,
        packets: 0,
        bytes: 0,
        seq_next: 0,
        _pad: 0,
    };
    let mut fwd = base;
    account(&mut fwd, l4, flags, now);
    // The reply comes from the real to the client.
    let rev_key = FlowKey {
        src_addr: real.addr,
        dst_addr: fwd_key.src_addr,
        src_port_be: real.port_be,
        dst_port_be: fwd_key.src_port_be,
        proto: fwd_key.proto,
        _pad: [0; 3],
    };
    let rev = Flow {
        nat_addr: fwd_key.dst_addr,
        nat_port_be: fwd_key.dst_port_be,
        dir: DIR_REVERSE,
        ..base
    };
    // Reverse first: a forward entry without its reverse would send the
    // client's packets to a real whose replies we could not translate.
    FLOWS.insert(rev_key, rev, 0).ok()?;
    if FLOWS.insert(fwd_key, fwd, 0).is_err() {
        let _ = FLOWS.remove(rev_key);
        return None;
    }
    Some(())
}

/// Applies one packet to its direction's entry: counters, timestamps, TCP
/// state, next sequence number.
#[inline(always)]
pub fn account(flow: &mut Flow, l4: &L4, flags: TcpFlags, now: u64) {
    flow.last_ns = now;
    flow.packets += 1;
    flow.bytes += l4.ip_len as u64;
    if l4.proto != PROTO_TCP {
        return;
    }
    // SAFETY: TCP header bounds checked in parse::l4.
    let seq = u32::from_be_bytes(unsafe { (*l4.tcp).seq });
    flow.seq_next = seq
        .wrapping_add(l4.payload_len)
        .wrapping_add(flags.syn as u32)
        .wrapping_add(flags.fin as u32);
    flow.state = next_state(flow.state, flags);
}

#[inline(always)]
fn next_state(state: u8, flags: TcpFlags) -> u8 {
    if flags.rst {
        ST_CLOSED
    } else if state == ST_CLOSED {
        // A closed flow stays closed until the agent expires it; a new
        // handshake on the same 5-tuple (SYN, then SYN-ACK) starts over.
        if flags.syn { ST_SYN } else { ST_CLOSED }
    } else if flags.fin {
        ST_FIN
    } else if state == ST_SYN && flags.ack && !flags.syn {
        // The client's ACK of the SYN-ACK, or the server's first ACK.
        ST_ESTABLISHED
    } else {
        state
    }
}
