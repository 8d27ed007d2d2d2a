//! IP fragments, IPv4's and IPv6's (its fragment header, found by
//! `V6::walk`). A first fragment (more to follow, offset 0) carries the
//! TCP/UDP header and takes the normal path; `remember` then records its
//! translation in `FRAGS`, keyed as its later fragments will arrive
//! (source, destination, protocol, identification). Later fragments carry
//! no ports: `later` gives them the recorded translation.
//!
//! The stated rule for a later fragment with no entry (it overtook its first
//! fragment, or its entry aged out): to a VIP, dropped
//! (`DROP_FRAGMENT_EARLY`), since forwarded untranslated it would reach no
//! one; from the server side, passed (`PASS_NOT_OURS`), since lb cannot tell
//! it from any routed host's fragment.
use lb_common::{DIR_FORWARD, FRAG_TIMEOUT_NS, FragNat, Hop, reason};

use crate::{
    clock,
    ctx::Pkt,
    family::{Family, Transport},
    flow,
    flow::Scratch,
    fwd,
    maps::FRAGS,
    parse::L3,
    stats::{self, Side},
};

/// The `FRAGS` key of the packet whose key (its addresses) is in `s.key`:
/// the same for every fragment of one datagram.
#[inline(always)]
fn key_of(s: &mut Scratch, t: &Transport) {
    let k = &mut s.frag_key;
    k.src_addr = s.key.src_addr;
    k.dst_addr = s.key.dst_addr;
    k.id_be = t.frag_id;
    k.proto = t.proto;
    k._pad = [0; 3];
}

/// Records a first fragment's translation (before it is rewritten): its
/// later fragments get `nat_addr` as destination (`DIR_FORWARD`) or source.
/// A refused entry only costs the later fragments (`DROP_FRAGMENT_EARLY`).
#[inline(always)]
pub fn remember(s: &mut Scratch, t: &Transport, nat_addr: [u8; 16], dir: u8, now: u64) {
    key_of(s, t);
    s.frag = FragNat {
        nat_addr,
        dir,
        _pad: [0; 3],
        vip_id: s.n.vip_id,
        real_id: s.n.real_id,
        _pad2: 0,
        created_ns: now,
    };
    let _ = FRAGS.insert(&s.frag_key, &s.frag, 0);
}

/// A later fragment: translated as its first fragment was and forwarded,
/// or the stated rule (module doc) for one lb has no entry for.
#[inline(never)]
pub fn later<C: Pkt, F: Family>(
    ctx: &C,
    l3_off: usize,
    to_vip: bool,
    t: Transport,
) -> Result<(u32, u32), u32> {
    let no_entry = if to_vip {
        reason::DROP_FRAGMENT_EARLY
    } else {
        reason::PASS_NOT_OURS
    };
    let l3 = L3::<F>::at(ctx, l3_off)?;
    // SAFETY: bounds checked by the parser.
    let ip = unsafe { &mut *l3.ip };
    let s = flow::scratch().ok_or(no_entry)?;
    key_of(s, &t);
    // SAFETY: read-only use of the value.
    let nat = unsafe { FRAGS.get(&s.frag_key) }.ok_or(no_entry)?;
    let now = clock::now();
    // A client's datagram is only ever to a VIP, a real's only from one.
    if (nat.dir == DIR_FORWARD) != to_vip || now.wrapping_sub(nat.created_ns) > FRAG_TIMEOUT_NS {
        return Err(no_entry);
    }
    if F::ttl(ip) <= 1 {
        return Err(reason::PASS_TTL);
    }
    // An IPv4 header's checksum is all a later fragment has to fix: the
    // transport checksum, which covers the addresses, sits in the first.
    let side = if to_vip {
        F::set_dst(ip, &nat.nat_addr);
        Side::In
    } else {
        F::set_src(ip, &nat.nat_addr);
        Side::Out
    };
    stats::count_flow(nat.vip_id, nat.real_id, side, F::ip_len(ip) as u64, false);
    s.hop = Hop::default();
    fwd::forward::<C, F>(ctx, l3_off, &mut s.hop, fwd::NO_REAL).map(|a| (a, reason::FRAGMENT))
}
