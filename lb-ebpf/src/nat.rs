//! The address/port rewrite and its checksum updates.
use crate::{ctx::Pkt, family::Family, parse::L4};

/// Client -> VIP becomes client -> real: destination address (map form,
/// `Family`) and port.
/// Invalidates packet pointers (ctx.rs): callers derive them again.
#[inline(always)]
pub fn dnat<C: Pkt, F: Family>(ctx: &C, ip: *mut F::Hdr, l4: &L4, addr: &[u8; 16], port: [u8; 2]) {
    // SAFETY: the header was bounds checked by the parser.
    let change = F::set_dst(unsafe { &mut *ip }, addr);
    let old_port = l4.dport;
    l4.set_port(port, true);
    ctx.fix_l4_check::<F>(l4, change, old_port, port);
}

/// Real -> client becomes VIP -> client: source address and port.
/// Invalidates packet pointers, as dnat.
#[inline(always)]
pub fn snat<C: Pkt, F: Family>(ctx: &C, ip: *mut F::Hdr, l4: &L4, addr: &[u8; 16], port: [u8; 2]) {
    // SAFETY: as in dnat.
    let change = F::set_src(unsafe { &mut *ip }, addr);
    let old_port = l4.sport;
    l4.set_port(port, false);
    ctx.fix_l4_check::<F>(l4, change, old_port, port);
}
