//! IPv4 fragments. A first fragment (More Fragments set, offset 0) carries
//! the TCP/UDP header and takes the normal path; `remember` then records its
//! translation in `FRAGS`, keyed as its later fragments will arrive
//! (source, destination, protocol, IP id). Later fragments carry no ports:
//! `later` gives them the recorded translation.
//!
//! The stated rule for a later fragment with no entry (it overtook its first
//! fragment, or its entry aged out): to a VIP, dropped
//! (`DROP_FRAGMENT_EARLY`), since forwarded untranslated it would reach no
//! one; from the server side, passed (`PASS_NOT_OURS`), since lb cannot tell
//! it from any routed host's fragment.
use lb_common::{DIR_FORWARD, FRAG_TIMEOUT_NS, FragKey, FragNat, Hop, reason, v4_mapped};
use network_types::ip::Ipv4Hdr;

use crate::{
    clock,
    ctx::Pkt,
    family::{Family, V4},
    flow,
    flow::Scratch,
    fwd,
    maps::FRAGS,
    parse::L3,
    stats::{self, Side},
};

#[inline(always)]
fn key_of(ip: &Ipv4Hdr) -> FragKey {
    FragKey {
        src_addr: v4_mapped(ip.src_addr),
        dst_addr: v4_mapped(ip.dst_addr),
        id_be: u16::from_ne_bytes(ip.id) as u32,
        proto: ip.proto,
        _pad: [0; 3],
    }
}

/// Records a first fragment's translation (before it is rewritten): its
/// later fragments get `nat_addr` as destination (`DIR_FORWARD`) or source.
/// A refused entry only costs the later fragments (`DROP_FRAGMENT_EARLY`).
#[inline(always)]
pub fn remember(s: &mut Scratch, ip: &Ipv4Hdr, nat_addr: [u8; 16], dir: u8, now: u64) {
    s.frag_key = key_of(ip);
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
pub fn later<C: Pkt>(ctx: &C, l3_off: usize, to_vip: bool) -> Result<(u32, u32), u32> {
    let no_entry = if to_vip {
        reason::DROP_FRAGMENT_EARLY
    } else {
        reason::PASS_NOT_OURS
    };
    let l3: L3 = L3::at(ctx, l3_off)?;
    // SAFETY: bounds checked by the parser.
    let ip = unsafe { &mut *l3.ip };
    let s = flow::scratch().ok_or(no_entry)?;
    s.frag_key = key_of(ip);
    // SAFETY: read-only use of the value.
    let nat = unsafe { FRAGS.get(&s.frag_key) }.ok_or(no_entry)?;
    let now = clock::now();
    // A client's datagram is only ever to a VIP, a real's only from one.
    if (nat.dir == DIR_FORWARD) != to_vip || now.wrapping_sub(nat.created_ns) > FRAG_TIMEOUT_NS {
        return Err(no_entry);
    }
    if ip.ttl <= 1 {
        return Err(reason::PASS_TTL);
    }
    // The IPv4 header's checksum is all a later fragment has to fix.
    let side = if to_vip {
        V4::set_dst(ip, &nat.nat_addr);
        Side::In
    } else {
        V4::set_src(ip, &nat.nat_addr);
        Side::Out
    };
    let len = u16::from_be_bytes(ip.tot_len) as u64;
    stats::count_flow(nat.vip_id, nat.real_id, side, len, false);
    s.hop = Hop::default();
    fwd::forward::<C, V4>(ctx, l3_off, &mut s.hop, now).map(|a| (a, reason::FRAGMENT))
}
