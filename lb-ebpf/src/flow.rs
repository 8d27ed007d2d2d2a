//! Flow entries: creation of both directions, per-packet state updates.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use lb_common::{
    DIR_FORWARD, DIR_REVERSE, FLOW_COUNTED, Flow, FlowKey, Hop, PROTO_TCP, ST_CLOSED,
    ST_ESTABLISHED, ST_FIN, ST_SYN, ST_UDP,
};

use crate::{
    maps::{ACTIVE, FLOWS},
    parse::{Facts, TcpFlags},
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
/// in the forward entry. `None` if the table refused. The entries are built
/// in `b` (scratch map memory), not on the stack.
#[inline(always)]
pub fn create(fwd_key: &FlowKey, n: &NewFlow, p: &Facts, b: &mut Build) -> Option<()> {
    b.flow = Flow {
        nat_addr: n.real_addr,
        nat_port_be: n.real_port_be,
        dir: DIR_FORWARD,
        state: initial_state(p.proto, p.flags),
        real_id: n.real_id,
        vip_id: n.vip_id,
        flags: FLOW_COUNTED,
        created_ns: n.now,
        last_ns: n.now,
        packets: 0,
        bytes: 0,
        seq_next: 0,
        hop: Hop::default(),
        _pad: 0,
    };
    // Reverse first: a forward entry without its reverse would send the
    // client's packets to a real whose replies we could not translate.
    insert_reverse(fwd_key, b)?;
    account(&mut b.flow, p, n.now);
    if FLOWS.insert(fwd_key, &b.flow, 0).is_err() {
        let _ = FLOWS.remove(&b.key);
        return None;
    }
    add_active(n.real_id, 1);
    Some(())
}

/// Scratch space for building a key and a flow value (see `SCRATCH`).
pub struct Build {
    pub key: FlowKey,
    pub flow: Flow,
    pub vip_key: lb_common::VipKey,
    pub sticky_key: lb_common::StickyKey,
}

/// The per-CPU scratch value: the packet's flow key and facts, where it is
/// going, and room to build entries.
pub struct Scratch {
    pub key: FlowKey,
    pub facts: Facts,
    pub n: NewFlow,
    pub build: Build,
    /// A new flow's next hop (its first packet has no entry to cache it in).
    pub hop: Hop,
}

/// What a new flow was given: its VIP and real, and when.
pub struct NewFlow {
    pub real_addr: [u8; 16],
    pub real_port_be: u16,
    pub vip_id: u32,
    pub real_id: u32,
    pub now: u64,
}

/// Inserts the reply direction of the forward entry in `b.flow` (whose nat
/// address is the real), with fresh counters. Leaves `b.flow` as it was and
/// the reverse key in `b.key`.
#[inline(always)]
pub fn insert_reverse(fwd_key: &FlowKey, b: &mut Build) -> Option<()> {
    let f = &mut b.flow;
    b.key = reverse_key(fwd_key, f.nat_addr, f.nat_port_be);
    let (real_addr, real_port, flags) = (f.nat_addr, f.nat_port_be, f.flags);
    f.nat_addr = fwd_key.dst_addr;
    f.nat_port_be = fwd_key.dst_port_be;
    f.dir = DIR_REVERSE;
    f.flags = 0;
    let ok = FLOWS.insert(&b.key, &*f, 0).is_ok();
    f.nat_addr = real_addr;
    f.nat_port_be = real_port;
    f.dir = DIR_FORWARD;
    f.flags = flags;
    ok.then_some(())
}

/// Removes both directions of a flow.
#[inline(always)]
pub fn remove(fwd_key: &FlowKey, fwd: &Flow) {
    let _ = FLOWS.remove(reverse_key(fwd_key, fwd.nat_addr, fwd.nat_port_be));
    let _ = FLOWS.remove(fwd_key);
}

/// The flow stops counting as active on its real (the client's FIN or RST, or
/// its removal), once.
#[inline(always)]
pub fn uncount(fwd: &mut Flow) {
    if fwd.flags & FLOW_COUNTED != 0 {
        fwd.flags &= !FLOW_COUNTED;
        add_active(fwd.real_id, u64::MAX); // -1, wrapping
    }
}

/// The flow (a forward entry) counts as active on its real.
#[inline(always)]
pub fn count(fwd: &mut Flow) {
    if fwd.flags & FLOW_COUNTED == 0 {
        fwd.flags |= FLOW_COUNTED;
        add_active(fwd.real_id, 1);
    }
}

#[inline(always)]
fn add_active(real_id: u32, delta: u64) {
    if let Some(p) = ACTIVE.get_ptr_mut(real_id) {
        // SAFETY: a valid, aligned u64 in the map. Atomic because every CPU
        // creates flows. The bpf target offers no AtomicU64::fetch_add (it
        // has no compare-and-swap), but LLVM lowers this add, its result
        // unused, to the BPF atomic add every kernel accepts.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, delta) };
    }
}

/// Applies one packet to its direction's entry: counters, timestamps, TCP
/// state, next sequence number.
#[inline(always)]
pub fn account(flow: &mut Flow, p: &Facts, now: u64) {
    flow.last_ns = now;
    flow.packets += 1;
    flow.bytes += p.ip_len as u64;
    if p.proto == PROTO_TCP {
        flow.seq_next = p.seq_next;
        flow.state = next_state(flow.state, p.flags);
    }
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
