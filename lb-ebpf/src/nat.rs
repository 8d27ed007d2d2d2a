//! The address/port rewrite and its checksum updates.
use network_types::ip::Ipv4Hdr;

use crate::{csum, ctx::Pkt, parse::L4};

/// Client -> VIP becomes client -> real: destination address and port.
/// Invalidates packet pointers (ctx.rs): callers derive them again.
#[inline(always)]
pub fn dnat<C: Pkt>(ctx: &C, ip: *mut Ipv4Hdr, l4: &L4, addr: [u8; 4], port: [u8; 2]) {
    // SAFETY: both headers were bounds checked by the parser.
    let old_addr = unsafe {
        let old_addr = (*ip).dst_addr;
        (*ip).dst_addr = addr;
        (*ip).check = csum::replace4((*ip).check, old_addr, addr);
        old_addr
    };
    let old_port = l4.dport;
    set_port(l4, port, true);
    ctx.fix_l4_check(l4, old_addr, addr, old_port, port);
}

/// Real -> client becomes VIP -> client: source address and port.
/// Invalidates packet pointers, as dnat.
#[inline(always)]
pub fn snat<C: Pkt>(ctx: &C, ip: *mut Ipv4Hdr, l4: &L4, addr: [u8; 4], port: [u8; 2]) {
    // SAFETY: as in dnat.
    let old_addr = unsafe {
        let old_addr = (*ip).src_addr;
        (*ip).src_addr = addr;
        (*ip).check = csum::replace4((*ip).check, old_addr, addr);
        old_addr
    };
    let old_port = l4.sport;
    set_port(l4, port, false);
    ctx.fix_l4_check(l4, old_addr, addr, old_port, port);
}

#[inline(always)]
fn set_port(l4: &L4, port: [u8; 2], dst: bool) {
    // SAFETY: the header matching l4.proto was bounds checked by the parser.
    unsafe {
        if l4.proto == lb_common::PROTO_TCP {
            if dst {
                (*l4.tcp).dest = port;
            } else {
                (*l4.tcp).source = port;
            }
        } else if dst {
            (*l4.udp).dst = port;
        } else {
            (*l4.udp).src = port;
        }
    }
}
