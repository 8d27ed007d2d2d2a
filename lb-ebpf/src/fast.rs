//! The established-flow fast path: a packet of a known flow that changes
//! nothing but counters is rewritten and sent right here, in the entry
//! function's one call. The full path (`to_vip`, `from_real`) costs three
//! BPF-to-BPF calls, the facts and destination written to scratch memory
//! and a fail-action check; a call and its return alone cost 10–20 ns on
//! the machine BENCHMARKS.md was measured on (its building blocks).
//!
//! A packet qualifies only when the full path would do exactly the same:
//! an untagged frame, TTL above 1, a TCP flow already established and a
//! segment with none of SYN, FIN or RST (so the state, the active count and
//! the HA peer's copy stay as they are) or a UDP flow, a forward flow whose
//! real is up or draining (no fail action to apply), and a cached next hop
//! that is still usable. Every test is made before anything is written:
//! a packet that fails one goes the full way unchanged, which applies every
//! rule (`lb_xdp` in main.rs).
use lb_common::{DIR_FORWARD, Flow, REAL_DRAIN, REAL_UP, ST_ESTABLISHED, ST_UDP, reason};
use network_types::eth::EthHdr;

use crate::{
    clock,
    ctx::Pkt,
    family::{Family, Transport},
    fwd,
    maps::REALS,
    nat,
    parse::{self, L3},
    stats::{self, Side},
    trace,
};

/// `Some((action, reason))` when the packet was forwarded here; `None` to
/// take the full path, with the packet and the flow untouched. A BPF
/// function of its own, called only for untagged frames: its frame (the
/// headers' pointers spilled around two helper calls) must not sit under
/// the full path's deepest call chain, within the verifier's 512 bytes.
#[inline(never)]
pub fn established<C: Pkt, F: Family>(ctx: &C, f: &mut Flow, t: Transport) -> Option<(u32, u32)> {
    let l3 = &L3::<F>::at(ctx, EthHdr::LEN).ok()?;
    let l4 = &parse::l4(ctx, l3, &t).ok()?;
    // SAFETY: bounds checked by the parser.
    let ip = unsafe { &*l3.ip };
    // A first fragment must leave its translation in FRAGS (frag.rs).
    if F::ttl(ip) <= 1 || t.first_fragment() {
        return None;
    }
    let seq_next = if l4.is_tcp() {
        let fl = l4.flags;
        if f.state != ST_ESTABLISHED || fl.syn || fl.fin || fl.rst {
            return None;
        }
        l4.seq.wrapping_add(l4.payload_len)
    } else {
        if f.state != ST_UDP {
            return None;
        }
        0
    };
    let forward = f.dir == DIR_FORWARD;
    // Where the packet goes after the rewrite: the real (forward), or the
    // client it already names (reverse).
    let dst = if forward {
        let real = REALS.get(f.real_id)?;
        if real.state != REAL_UP && real.state != REAL_DRAIN {
            return None;
        }
        F::tag(&f.nat_addr)
    } else {
        F::dst_tag(ip)
    };
    let now = clock::now();
    let (generation, at) = (fwd::generation(), fwd::age_stamp(now));
    let len = ctx.mtu_len(F::tot_len(ip));
    if !fwd::usable(&f.hop, dst, len, generation, at) {
        return None;
    }
    // Past this point the packet is ours, as the full path would count it.
    f.last_ns = now;
    f.packets += 1;
    f.bytes += l4.ip_len as u64;
    if l4.is_tcp() {
        f.seq_next = seq_next;
    }
    trace::fast(f, l4.sport, l4.dport);
    let (side, why) = if forward {
        nat::dnat::<C, F>(ctx, l3.ip, l4, &f.nat_addr, f.nat_port_be.to_ne_bytes());
        (Side::In, reason::FORWARD)
    } else {
        nat::snat::<C, F>(ctx, l3.ip, l4, &f.nat_addr, f.nat_port_be.to_ne_bytes());
        (Side::Out, reason::REVERSE)
    };
    stats::count_flow(f.vip_id, f.real_id, side, l4.ip_len as u64, false);
    stats::count(reason::FAST_PATH);
    // NAT invalidated the packet pointers (ctx.rs); the frame is as long as
    // it was, so this finds the headers again.
    let Ok(l3) = L3::<F>::at(ctx, EthHdr::LEN) else {
        return Some((C::PASS, why));
    };
    Some((fwd::send(ctx, &l3, &f.hop), why))
}
