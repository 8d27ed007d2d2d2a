//! The benchmark floor: the least an XDP program that looks at TCP can do.
//! `lb_floor` parses Ethernet, IPv4 and TCP with the same bounds checks as
//! `parse` and returns XDP_TX. `cargo xtask bench` runs it beside `lb_xdp`
//! through BPF_PROG_TEST_RUN, so the datapath's cost reads as a multiple of
//! this one. `lb_floor_fib` adds the one helper a routed balancer cannot
//! skip, `bpf_fib_lookup` (the very request `fwd::forward` makes), to show how much of
//! the gap that is.
//!
//! The `lb_floor_*` building blocks add one thing each that an established
//! packet cannot do without (a `FLOWS` hit, the clock, the devmap redirect,
//! one BPF-to-BPF call), so the bench can say what the least such a packet
//! costs on the machine at hand; `lb_floor_ktime` adds the clock helper the
//! datapath's clock replaces, for comparison. Only the bench's object has
//! them (feature `bench`); the agent's objects do not.
use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, macros::xdp, programs::XdpContext,
};
use lb_common::{PROTO_TCP, v4_mapped};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr};

use crate::{
    clock,
    family::{Family, V4},
    flow, fwd,
    maps::{FLOWS, HOP_GEN, SCRATCH, TX_PORTS},
    parse::ptr_at,
};

const ETH_P_IP: [u8; 2] = [0x08, 0x00];

#[xdp]
pub fn lb_floor(ctx: XdpContext) -> u32 {
    match try_lb_floor(&ctx) {
        Ok(_) => xdp_action::XDP_TX,
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
    let mut p = V4::fib_request(
        ip,
        u16::from_be_bytes(ip.tot_len),
        ctx.ingress_ifindex() as u32,
    );
    if fwd::fib_lookup(&ctx, &mut p) == fwd::BPF_FIB_LKUP_RET_SUCCESS {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_PASS
    }
}

/// The floor plus the fast path's one `FLOWS` lookup: the key built in
/// scratch memory as `known_flow` builds it; XDP_TX on a hit (the bench
/// inserts the entry).
#[xdp]
pub fn lb_floor_flow(ctx: XdpContext) -> u32 {
    let Ok((ip, tcp)) = try_lb_floor(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by try_lb_floor; this CPU's scratch slot.
    unsafe {
        let (ip, tcp, s) = (&*ip, &*tcp, &mut *s);
        s.key = flow::key(
            v4_mapped(ip.src_addr),
            v4_mapped(ip.dst_addr),
            tcp.source,
            tcp.dest,
            PROTO_TCP,
        );
        match FLOWS.get(&s.key) {
            Some(_) => xdp_action::XDP_TX,
            None => xdp_action::XDP_PASS,
        }
    }
}

/// The floor plus the datapath's clock (`clock::now`).
#[xdp]
pub fn lb_floor_clock(ctx: XdpContext) -> u32 {
    if try_lb_floor(&ctx).is_err() || clock::now() == 0 {
        return xdp_action::XDP_PASS;
    }
    xdp_action::XDP_TX
}

/// The floor plus the helper the datapath's clock replaces (and falls back
/// to), `bpf_ktime_get_coarse_ns`: the same time at the same resolution.
#[xdp]
pub fn lb_floor_ktime(ctx: XdpContext) -> u32 {
    // SAFETY: a helper without arguments.
    if try_lb_floor(&ctx).is_err() || unsafe { bpf_ktime_get_coarse_ns() } == 0 {
        return xdp_action::XDP_PASS;
    }
    xdp_action::XDP_TX
}

/// The floor plus the way out of a forwarded packet: a `TX_PORTS` (devmap)
/// redirect to the ingress interface; XDP_REDIRECT if the bench put it
/// there.
#[xdp]
pub fn lb_floor_redirect(ctx: XdpContext) -> u32 {
    if try_lb_floor(&ctx).is_err() {
        return xdp_action::XDP_PASS;
    }
    TX_PORTS
        .redirect(ctx.ingress_ifindex() as u32, xdp_action::XDP_PASS as u64)
        .unwrap_or(xdp_action::XDP_PASS)
}

/// The floor plus one BPF-to-BPF call (of a function that reads the IPv4
/// header again, as the datapath's own functions do).
#[xdp]
pub fn lb_floor_call(ctx: XdpContext) -> u32 {
    if try_lb_floor(&ctx).is_err() {
        return xdp_action::XDP_PASS;
    }
    let Some(generation) = HOP_GEN.get(0) else {
        return xdp_action::XDP_PASS;
    };
    if called(&ctx, generation) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_PASS
    }
}

/// A BPF function of its own. It takes a map value and reads the context's
/// ingress index besides the packet: with the packet alone, LLVM would pass
/// `data_end` as a plain integer, which the verifier refuses ("pointer
/// arithmetic on pkt_end prohibited").
#[inline(never)]
fn called(ctx: &XdpContext, generation: &u32) -> bool {
    let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return false;
    };
    // SAFETY: bounds checked by ptr_at.
    let ttl = unsafe { (*ip).ttl } as u32;
    ttl != generation
        .wrapping_add(ctx.ingress_ifindex() as u32)
        .wrapping_add(256)
}

/// The IPv4 and TCP headers of a plain Ethernet/IPv4/TCP frame.
#[inline(always)]
fn try_lb_floor(ctx: &XdpContext) -> Result<(*const Ipv4Hdr, *const TcpHdr), ()> {
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
    Ok((ip as *const Ipv4Hdr, tcp as *const TcpHdr))
}
