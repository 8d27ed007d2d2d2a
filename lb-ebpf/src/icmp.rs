//! ICMP addressed to a VIP: echo requests are answered from the datapath (a
//! VIP answers ping, as on the CSM); every other ICMP type is dropped.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::reason;
use network_types::ip::Ipv4Hdr;

use crate::{
    csum,
    parse::{L3, ptr_at},
};

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
const REPLY_TTL: u8 = 64;

#[repr(C)]
struct IcmpHdr {
    kind: u8,
    code: u8,
    check: [u8; 2],
}

#[inline(always)]
pub fn to_vip(ctx: &XdpContext, l3: &L3) -> Result<u32, u32> {
    let icmp: *mut IcmpHdr =
        ptr_at(ctx, l3.off + Ipv4Hdr::LEN).map_err(|_| reason::DROP_ICMP_VIP)?;
    // SAFETY: bounds checked by ptr_at and the parser.
    let (icmp, ip, eth) = unsafe { (&mut *icmp, &mut *l3.ip, &mut *l3.eth) };
    if icmp.kind != ECHO_REQUEST || icmp.code != 0 {
        return Err(reason::DROP_ICMP_VIP);
    }
    icmp.kind = ECHO_REPLY;
    icmp.check = csum::replace2(icmp.check, [ECHO_REQUEST, 0], [ECHO_REPLY, 0]);
    // Swapping source and destination leaves the header sum unchanged; the
    // TTL does not.
    core::mem::swap(&mut ip.src_addr, &mut ip.dst_addr);
    let old = [ip.ttl, ip.proto];
    ip.ttl = REPLY_TTL;
    ip.check = csum::replace2(ip.check, old, [ip.ttl, ip.proto]);
    core::mem::swap(&mut eth.src_addr, &mut eth.dst_addr);
    Ok(xdp_action::XDP_TX)
}
