//! Flow entries: creation of both directions, per-packet state updates, and
//! the two tables they live in. A new flow starts half-open in `EMBRYOS`
//! (unless it was picked up mid-stream) and moves to `FLOWS` once assured:
//! TCP at the client's handshake ACK, UDP at its real's first answer. A
//! flood of new flows therefore recycles only `EMBRYOS`.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::maps::LruHashMap;
use lb_common::{
    DIR_FORWARD, DIR_REVERSE, FLOW_COUNTED, Flow, FlowKey, Hop, PROTO_TCP, ST_CLOSED,
    ST_ESTABLISHED, ST_FIN, ST_SYN, ST_UDP, reason,
};

use crate::{
    maps::{ACTIVE, EMBRYOS, FLOWS, SCRATCH},
    parse::{Facts, TcpFlags},
    stats,
};

/// The table a flow lives in: `FLOWS` (assured) or `EMBRYOS` (half-open).
/// A `bool` picked per call, not a map pointer passed around: the verifier
/// wants map pointers as constants at each helper call.
#[inline(always)]
fn table(embryo: bool) -> &'static LruHashMap<FlowKey, Flow> {
    if embryo { &EMBRYOS } else { &FLOWS }
}

/// The entry keyed by `key` and whether it is half-open: `FLOWS` first
/// (every established packet stops there), then `EMBRYOS`.
#[inline(always)]
pub fn find(key: &FlowKey) -> Option<(*mut Flow, bool)> {
    if let Some(f) = FLOWS.get_ptr_mut(key) {
        return Some((f, false));
    }
    EMBRYOS.get_ptr_mut(key).map(|f| (f, true))
}

/// The entry keyed by `key` in the given table.
#[inline(always)]
pub fn get(key: &FlowKey, embryo: bool) -> Option<*mut Flow> {
    table(embryo).get_ptr_mut(key)
}

/// A flow's key from its map-form addresses (`Family::addr16`).
#[inline(always)]
pub fn key(src: [u8; 16], dst: [u8; 16], sport: [u8; 2], dport: [u8; 2], proto: u8) -> FlowKey {
    FlowKey {
        src_addr: src,
        dst_addr: dst,
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
/// in the forward entry: half-open in `EMBRYOS`, or in `FLOWS` when it was
/// picked up mid-stream (then also counted active). `None` if the table
/// refused. The entries are built in `b` (scratch map memory), not on the
/// stack.
#[inline(always)]
pub fn create(fwd_key: &FlowKey, n: &NewFlow, p: &Facts, b: &mut Build) -> Option<()> {
    let state = initial_state(p.proto, p.flags);
    let embryo = state != ST_ESTABLISHED;
    b.flow = Flow {
        nat_addr: n.real_addr,
        nat_port_be: n.real_port_be,
        dir: DIR_FORWARD,
        state,
        real_id: n.real_id,
        vip_id: n.vip_id,
        flags: if embryo { 0 } else { FLOW_COUNTED },
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
    insert_reverse(fwd_key, b, embryo)?;
    account(&mut b.flow, p, n.now);
    let t = table(embryo);
    if t.insert(fwd_key, &b.flow, 0).is_err() {
        let _ = t.remove(&b.key);
        return None;
    }
    if !embryo {
        add_active(n.real_id, 1);
    }
    Some(())
}

/// Moves a half-open flow, both directions, from `EMBRYOS` to `FLOWS` and
/// counts it active. `own` is the key of the packet's own direction; the
/// result is its entry in `FLOWS`, since the `EMBRYOS` values are gone
/// (their memory may already hold another CPU's new entry: callers must
/// not touch them after this). `None` if `FLOWS` refused: the flow then
/// stays half-open, unharmed. A BPF function of its own (to_vip's stack).
#[inline(never)]
pub fn assure(fwd_key: &FlowKey, rev_key: &FlowKey, own_is_fwd: bool) -> Option<*mut Flow> {
    let fwd = EMBRYOS.get_ptr_mut(fwd_key)?;
    let rev = EMBRYOS.get_ptr_mut(rev_key)?;
    // SAFETY: map values, valid for the program run (removed only below).
    unsafe {
        // Reverse first, as in `create`.
        FLOWS.insert(rev_key, &*rev, 0).ok()?;
        (*fwd).flags |= FLOW_COUNTED;
        if FLOWS.insert(fwd_key, &*fwd, 0).is_err() {
            (*fwd).flags &= !FLOW_COUNTED;
            let _ = FLOWS.remove(rev_key);
            return None;
        }
        add_active((*fwd).real_id, 1);
    }
    let _ = EMBRYOS.remove(fwd_key);
    let _ = EMBRYOS.remove(rev_key);
    stats::count(reason::ASSURED);
    FLOWS.get_ptr_mut(if own_is_fwd { fwd_key } else { rev_key })
}

/// Whether a forward entry's connection is over (`fin` or `closed` on
/// either side), so a client's new SYN on the same 5-tuple (a port reused
/// out of TIME_WAIT) is a new connection, not a retransmission.
#[inline(always)]
pub fn finished(fwd_key: &FlowKey, f: &Flow, embryo: bool) -> bool {
    let over = |state: u8| state == ST_FIN || state == ST_CLOSED;
    if over(f.state) {
        return true;
    }
    let rev = fwd_key.reverse(f.nat_addr, f.nat_port_be);
    // SAFETY: read-only use of the value.
    unsafe { table(embryo).get(&rev) }.is_some_and(|r| over(r.state))
}

/// This CPU's scratch slot (`maps::SCRATCH`).
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: per-CPU; only this program run uses it.
    SCRATCH.get_ptr_mut(0).map(|s| unsafe { &mut *s })
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
    /// Whether `key`'s entry (found by `known_flow`) is half-open, in `EMBRYOS`.
    pub embryo: bool,
    /// A reply's VIP address, kept while its flow may move (`from_real`).
    pub addr: [u8; 16],
    /// The packet's `Transport`, for to_vip's later steps.
    pub t: crate::family::Transport,
    /// A first fragment's `FRAGS` entry, built here.
    pub frag_key: lb_common::FragKey,
    pub frag: lb_common::FragNat,
    /// A "fragmentation needed" to send (toobig.rs).
    pub toobig: crate::toobig::TooBig,
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
    /// The VIP's `VipInfo::flags`, for a refusal (refuse.rs).
    pub vip_flags: u32,
    pub real_id: u32,
    pub now: u64,
}

/// Inserts the reply direction of the forward entry in `b.flow` (whose nat
/// address is the real), with fresh counters, in `EMBRYOS` or `FLOWS`.
/// Leaves `b.flow` as it was and the reverse key in `b.key`.
#[inline(always)]
pub fn insert_reverse(fwd_key: &FlowKey, b: &mut Build, embryo: bool) -> Option<()> {
    let f = &mut b.flow;
    b.key = fwd_key.reverse(f.nat_addr, f.nat_port_be);
    let (real_addr, real_port, flags) = (f.nat_addr, f.nat_port_be, f.flags);
    f.nat_addr = fwd_key.dst_addr;
    f.nat_port_be = fwd_key.dst_port_be;
    f.dir = DIR_REVERSE;
    f.flags = 0;
    let ok = table(embryo).insert(&b.key, &*f, 0).is_ok();
    f.nat_addr = real_addr;
    f.nat_port_be = real_port;
    f.dir = DIR_FORWARD;
    f.flags = flags;
    ok.then_some(())
}

/// Removes both directions of a flow from its table. The forward value
/// `fwd` must not be used afterwards.
#[inline(always)]
pub fn remove(fwd_key: &FlowKey, fwd: &Flow, embryo: bool) {
    let t = table(embryo);
    let _ = t.remove(fwd_key.reverse(fwd.nat_addr, fwd.nat_port_be));
    let _ = t.remove(fwd_key);
}

/// Removes one entry from a table.
#[inline(always)]
pub fn remove_key(key: &FlowKey, embryo: bool) {
    let _ = table(embryo).remove(key);
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
