//! A real's reply this node holds no flow for, in a cluster: the flow began
//! on another node (ECMP sent the client there), and the real's multipath
//! route sent the reply here, maybe before the flow's sync arrived (a
//! SYN-ACK always races it). `REPLY_NAT` names the one VIP endpoint each
//! real endpoint serves (the agent refuses a cluster config where one
//! serves two), so the reply is translated by its source alone and no
//! state is made: the flow's owner streams the flow itself. Outside a
//! cluster the map is empty and the reply is not ours.
//!
//! Plain TCP and UDP only: a fragmented reply is passed (its later
//! fragments would need the `FRAGS` entry a flow makes).
use lb_common::{Hop, VipKey, reason};

use crate::{
    Verdict,
    ctx::Pkt,
    family::{Family, Transport},
    flow::{self, Scratch},
    fwd,
    maps::REPLY_NAT,
    nat,
    parse::{self, L3},
    stats,
    toobig::{self, TooBig},
};

#[inline(never)]
pub fn stateless<C: Pkt, F: Family>(ctx: &C, l3_off: usize, t: Transport) -> Verdict {
    if !t.translated() || t.first_fragment() {
        return Err(reason::PASS_NOT_OURS);
    }
    let l3 = &L3::<F>::at(ctx, l3_off)?;
    let l4 = parse::l4(ctx, l3, &t).map_err(|_| reason::PASS_NOT_OURS)?;
    let s = flow::scratch().ok_or(reason::PASS_NOT_OURS)?;
    s.build.vip_key = VipKey {
        addr: s.key.src_addr,
        port_be: u16::from_ne_bytes(l4.sport),
        proto: l4.proto,
        _pad: 0,
    };
    // SAFETY: read-only use of the value.
    let nat = unsafe { REPLY_NAT.get(&s.build.vip_key) }.ok_or(reason::PASS_NOT_OURS)?;
    // SAFETY: bounds checked by the parser.
    if F::ttl(unsafe { &*l3.ip }) <= 1 {
        return Err(reason::PASS_TTL);
    }
    // The node's own connection to the real (a health probe): its answer
    // is the node's, however the real's endpoint is translated for clients.
    if fwd::for_this_host::<C, F>(ctx, l3_off) {
        return Err(reason::PASS_NOT_OURS);
    }
    // The packet again: no pointer survives the call.
    let l3 = &L3::<F>::at(ctx, l3_off)?;
    let l4 = parse::l4(ctx, l3, &t).map_err(|_| reason::PASS_NOT_OURS)?;
    s.addr = nat.vip_addr;
    let port = nat.vip_port_be.to_ne_bytes();
    stats::count_flow(
        nat.vip_id,
        u32::MAX,
        stats::Side::Out,
        l4.ip_len as u64,
        false,
    );
    nat::snat::<C, F>(ctx, l3.ip, &l4, &s.addr, port);
    // No flow to cache the next hop in: this CPU's scratch slot.
    s.hop = Hop::default();
    let hop: *mut Hop = &mut s.hop;
    // SAFETY: this CPU's scratch slot, valid for the program run.
    send::<C, F>(
        ctx,
        l3_off,
        s,
        unsafe { &mut *hop },
        l4.sport,
        t,
        reason::REVERSE_STATELESS,
    )
}

/// Forwards a reply translated to come from `s.addr` (its VIP), or answers
/// the real with "fragmentation needed" when the client's path is narrower
/// than the reply. `real_port`: the port the reply came from.
#[inline(always)]
pub fn send<C: Pkt, F: Family>(
    ctx: &C,
    l3_off: usize,
    s: &mut Scratch,
    hop: &mut Hop,
    real_port: [u8; 2],
    t: Transport,
    why: u32,
) -> Verdict {
    match fwd::forward::<C, F>(ctx, l3_off, hop, fwd::NO_REAL) {
        Err(reason::ICMP_FRAG_NEEDED) => {
            s.toobig = TooBig {
                orig_addr: s.key.src_addr,
                orig_port: real_port,
                dst: false,
                from: s.addr,
                mtu: hop.mtu,
                unreachable: false,
            };
            toobig::answer::<C, F>(ctx, l3_off, &s.toobig, t)
        }
        r => r.map(|action| (action, why)),
    }
}
