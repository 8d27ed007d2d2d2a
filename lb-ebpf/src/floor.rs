//! The benchmark floor: the least an XDP program that looks at TCP can do.
//! `lb_floor` parses Ethernet, IPv4 and TCP with the same bounds checks as
//! `parse` and returns XDP_TX. `cargo xtask bench` runs it beside `lb_xdp`
//! through BPF_PROG_TEST_RUN, so the datapath's cost reads as a multiple of
//! this one. `lb_floor_fib` adds the one helper a routed balancer cannot
//! skip, `bpf_fib_lookup` (the very request `fwd::forward` makes), to show how much of
//! the gap that is. The agent never loads either.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::PROTO_TCP;
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr};

use crate::{fwd, parse::ptr_at};

const ETH_P_IP: [u8; 2] = [0x08, 0x00];

#[xdp]
pub fn lb_floor(ctx: XdpContext) -> u32 {
    match try_lb_floor(&ctx) {
        Ok(()) => xdp_action::XDP_TX,
        Err(()) => xdp_action::XDP_PASS,
    }
}

/// The floor plus a FIB lookup of the destination; XDP_TX if it resolves.
#[xdp]
pub fn lb_floor_fib(ctx: XdpContext) -> u32 {
    if try_lb_floor(&ctx).is_err() {
        return xdp_action::XDP_PASS;
    }
    let Ok(ip) = ptr_at::<Ipv4Hdr>(&ctx, EthHdr::LEN) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    let mut p = fwd::fib_request(ip, ctx.ingress_ifindex() as u32);
    if fwd::fib_lookup(&ctx, &mut p) == fwd::BPF_FIB_LKUP_RET_SUCCESS {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_PASS
    }
}

#[inline(always)]
fn try_lb_floor(ctx: &XdpContext) -> Result<(), ()> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*eth).ether_type }.to_ne_bytes() != ETH_P_IP {
        return Err(());
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    let ihl = (ip.vihl & 0x0f) as usize * 4;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || ip.proto != PROTO_TCP {
        return Err(());
    }
    let tcp: *mut TcpHdr = ptr_at(ctx, EthHdr::LEN + ihl)?;
    // SAFETY: bounds checked by ptr_at.
    if (unsafe { (*tcp).doff() } as usize * 4) < TcpHdr::LEN {
        return Err(());
    }
    Ok(())
}
