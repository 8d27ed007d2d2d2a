//! Flow entries: creation of both directions, per-packet state updates.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use lb_common::{
    DIR_FORWARD, DIR_REVERSE, Flow, FlowKey, PROTO_TCP, Real, ST_CLOSED, ST_ESTABLISHED, ST_FIN,
    ST_SYN, ST_UDP,
};

use crate::{
    maps::{ACTIVE, FLOWS},
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

/// The key of the reply direction of the flow `fwd_key` when its real is
/// `real_addr:real_port_be`: real -> client.
#[inline(always)]
pub fn reverse_key(fwd_key: &FlowKey, real_addr: [u8; 16], real_port_be: u16) -> FlowKey {
    FlowKey {
        src_addr: real_addr,
        dst_addr: fwd_key.src_addr,
        src_port_be: real_port_be,
        dst_port_be: fwd_key.src_port_be,
        proto: fwd_key.proto,
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
    // Reverse first: a forward entry without its reverse would send the
    // client's packets to a real whose replies we could not translate.
    insert_reverse(fwd_key, &base)?;
    if FLOWS.insert(fwd_key, fwd, 0).is_err() {
        let _ = FLOWS.remove(reverse_key(fwd_key, real.addr, real.port_be));
        return None;
    }
    count_active(real_id);
    Some(())
}

/// Inserts the reply direction for the forward entry `fwd` (whose nat
/// address is the real), with fresh counters.
#[inline(always)]
pub fn insert_reverse(fwd_key: &FlowKey, fwd: &Flow) -> Option<()> {
    let rev = Flow {
        nat_addr: fwd_key.dst_addr,
        nat_port_be: fwd_key.dst_port_be,
        dir: DIR_REVERSE,
        packets: 0,
        bytes: 0,
        seq_next: 0,
        ..*fwd
    };
    FLOWS
        .insert(reverse_key(fwd_key, fwd.nat_addr, fwd.nat_port_be), rev, 0)
        .ok()
}

/// Removes both directions of a flow.
#[inline(always)]
pub fn remove(fwd_key: &FlowKey, fwd: &Flow) {
    let _ = FLOWS.remove(reverse_key(fwd_key, fwd.nat_addr, fwd.nat_port_be));
    let _ = FLOWS.remove(fwd_key);
}

/// One more flow on `real_id`, for `max_conns` (the agent's sweep rewrites
/// the exact count).
#[inline(always)]
pub fn count_active(real_id: u32) {
    if let Some(p) = ACTIVE.get_ptr_mut(real_id) {
        // SAFETY: a valid, aligned u64 in the map. Atomic because every CPU
        // creates flows. The bpf target offers no AtomicU64::fetch_add (it
        // has no compare-and-swap), but LLVM lowers this add, its result
        // unused, to the BPF atomic add every kernel accepts.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
    }
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
