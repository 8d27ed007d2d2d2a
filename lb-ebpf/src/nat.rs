//! The address/port rewrite and its checksum updates.
use network_types::ip::Ipv4Hdr;

use crate::{csum, parse::L4};

/// Client -> VIP becomes client -> real: destination address and port.
#[inline(always)]
pub fn dnat(ip: *mut Ipv4Hdr, l4: &L4, addr: [u8; 4], port: [u8; 2]) {
    // SAFETY: both headers were bounds checked by the parser.
    unsafe {
        let old_addr = (*ip).dst_addr;
        (*ip).dst_addr = addr;
        (*ip).check = csum::replace4((*ip).check, old_addr, addr);
        rewrite_l4(l4, old_addr, addr, l4.dport, port, true);
    }
}

/// Real -> client becomes VIP -> client: source address and port.
#[inline(always)]
pub fn snat(ip: *mut Ipv4Hdr, l4: &L4, addr: [u8; 4], port: [u8; 2]) {
    // SAFETY: as in dnat.
    unsafe {
        let old_addr = (*ip).src_addr;
        (*ip).src_addr = addr;
        (*ip).check = csum::replace4((*ip).check, old_addr, addr);
        rewrite_l4(l4, old_addr, addr, l4.sport, port, false);
    }
}

#[inline(always)]
unsafe fn rewrite_l4(
    l4: &L4,
    old_addr: [u8; 4],
    addr: [u8; 4],
    old_port: [u8; 2],
    port: [u8; 2],
    dst: bool,
) {
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
    let check = l4.check();
    // A UDP checksum of zero means "none": it stays zero.
    if l4.proto == lb_common::PROTO_UDP && check == [0, 0] {
        return;
    }
    let mut new = csum::replace_addr_port(check, old_addr, addr, old_port, port);
    // In UDP a computed zero is sent as all ones (RFC 768).
    if l4.proto == lb_common::PROTO_UDP && new == [0, 0] {
        new = [0xff, 0xff];
    }
    l4.set_check(new);
}
