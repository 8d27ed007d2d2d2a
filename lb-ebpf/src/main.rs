//! lb's XDP program: VIP-to-real NAT with a per-flow state table.
//!
//! Every packet ends in exactly one verdict reason (`lb_common::reason`),
//! counted per CPU (a new flow also counts `NEW_FLOW`); the entry point maps a
//! stated rule to its action.
#![no_std]
#![no_main]
// atomic_xadd: see flow::count_active.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "the one atomic add, see flow::count_active"
)]

mod csum;
mod fail;
mod flow;
mod fwd;
mod icmp;
mod maps;
mod nat;
mod parse;
mod passive;
mod rst;
mod select;
mod stats;

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_ktime_get_ns, macros::xdp, programs::XdpContext,
};
use lb_common::{
    DIR_FORWARD, DIR_REVERSE, EV_SYN_RETRANSMIT, EV_SYN_RST, PROTO_TCP, PROTO_UDP, ST_SYN, VipKey,
    reason,
};

use crate::{
    fail::Outcome,
    flow::addr16,
    maps::{FLOWS, REALS, VIP_ADDRS, VIPS},
    parse::{L3, PROTO_ICMP, is_fragment},
    stats::Side,
};

/// (XDP action, reason counted) or the reason of a stated rule.
type Verdict = Result<(u32, u32), u32>;

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let (action, why) = match try_lb_xdp(&ctx) {
        Ok(v) => v,
        Err(why) => (rule_action(why), why),
    };
    stats::count(why);
    action
}

/// The action each stated rule takes.
#[inline(always)]
fn rule_action(why: u32) -> u32 {
    match why {
        reason::PASS_NOT_IPV4
        | reason::PASS_NOT_OURS
        | reason::PASS_BAD_L2
        | reason::PASS_BAD_IPV4
        | reason::PASS_TTL
        | reason::PASS_FIB
        | reason::PASS_ICMP_FROM_REAL => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    }
}

#[inline(always)]
fn try_lb_xdp(ctx: &XdpContext) -> Verdict {
    let l3 = parse::l3(ctx)?;
    // SAFETY: bounds checked by the parser.
    let dst = unsafe { (*l3.ip).dst_addr };
    // SAFETY: the value is only tested for presence.
    if unsafe { VIP_ADDRS.get(addr16(dst)) }.is_some() {
        to_vip(ctx, &l3)
    } else {
        from_real(ctx, &l3)
    }
}

#[inline(always)]
fn v4(addr: &[u8; 16]) -> [u8; 4] {
    [addr[12], addr[13], addr[14], addr[15]]
}

/// A packet to a VIP address: a flow's next packet, or a new flow.
#[inline(always)]
fn to_vip(ctx: &XdpContext, l3: &L3) -> Verdict {
    // SAFETY: bounds checked by the parser.
    let ip = unsafe { &*l3.ip };
    if ip.vihl & 0x0f != 5 {
        return Err(reason::DROP_IP_OPTIONS);
    }
    if is_fragment(ip) {
        return Err(reason::DROP_FRAGMENT);
    }
    if ip.proto == PROTO_ICMP {
        return icmp::to_vip(ctx, l3).map(|action| (action, reason::ICMP_ECHO_REPLY));
    }
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return Err(reason::DROP_NO_VIP_PORT);
    }
    let l4 = parse::l4(ctx, l3).map_err(|_| reason::DROP_BAD_L4)?;
    if ip.ttl <= 1 {
        return Err(reason::PASS_TTL);
    }
    let flags = parse::tcp_flags(&l4);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = flow::key(ip.src_addr, ip.dst_addr, l4.sport, l4.dport, l4.proto);

    let fresh_syn = flags.syn && !flags.ack;
    // An existing flow, unless its real's fail action just removed it.
    let mut existing = None;
    if let Some(f) = FLOWS.get_ptr_mut(key) {
        // SAFETY: map values stay valid for the program run; concurrent
        // writers of the same flow only race on counters.
        let f = unsafe { &mut *f };
        if f.dir != DIR_FORWARD {
            return Err(reason::PASS_NOT_OURS);
        }
        match fail::apply(&key, f, now)? {
            Outcome::Purged if l4.proto == PROTO_TCP && !fresh_syn => {
                return rst::to_client(ctx, l3, &l4, flags).map(|a| (a, reason::PURGE_RST));
            }
            // A UDP datagram, or a fresh SYN, of a purged flow starts anew.
            Outcome::Purged => {}
            Outcome::Keep | Outcome::Reassigned => {
                if fresh_syn && f.state == ST_SYN && f.packets > 0 {
                    syn_retransmitted(&key, f, now);
                }
                flow::account(f, &l4, flags, now);
                existing = Some((f.nat_addr, f.nat_port_be, f.vip_id, f.real_id));
            }
        }
    }
    let new_flow = existing.is_none();
    let (nat_addr, nat_port_be, vip_id, real_id) = match existing {
        Some(e) => e,
        None => {
            let vip_key = VipKey {
                addr: key.dst_addr,
                port_be: key.dst_port_be,
                proto: l4.proto,
                _pad: 0,
            };
            // SAFETY: read-only use of the value.
            let vip = unsafe { VIPS.get(vip_key) }.ok_or(reason::DROP_NO_VIP_PORT)?;
            if flags.rst {
                return Err(reason::DROP_RST_NO_FLOW);
            }
            let real_id = select::pick(vip.farm_id).ok_or(reason::DROP_NO_REAL)?;
            let real = REALS.get(real_id).ok_or(reason::DROP_NO_REAL)?;
            flow::create(&key, vip.vip_id, real_id, real, &l4, flags, now)
                .ok_or(reason::DROP_TABLE_FULL)?;
            stats::count(reason::NEW_FLOW);
            (real.addr, real.port_be, vip.vip_id, real_id)
        }
    };
    stats::count_flow(vip_id, real_id, Side::In, l4.ip_len as u64, new_flow);
    nat::dnat(l3.ip, &l4, v4(&nat_addr), nat_port_be.to_ne_bytes());
    fwd::forward(ctx, l3).map(|action| (action, reason::FORWARD))
}

/// A client's SYN again, and the real has not answered at all: a failed
/// connection attempt for passive health.
#[inline(always)]
fn syn_retransmitted(key: &lb_common::FlowKey, f: &lb_common::Flow, now: u64) {
    let rev = flow::reverse_key(key, f.nat_addr, f.nat_port_be);
    // SAFETY: read-only use of the value.
    if unsafe { FLOWS.get(rev) }.is_some_and(|r| r.packets == 0) {
        passive::conn_failed(EV_SYN_RETRANSMIT, f.real_id, now);
    }
}

/// Anything else: a real's reply to translate back, or not ours.
#[inline(always)]
fn from_real(ctx: &XdpContext, l3: &L3) -> Verdict {
    // SAFETY: bounds checked by the parser.
    let ip = unsafe { &*l3.ip };
    if ip.proto == PROTO_ICMP && ip.vihl & 0x0f == 5 && !is_fragment(ip) {
        // SAFETY: a helper without arguments.
        return Err(passive::icmp_from_real(ctx, l3, unsafe {
            bpf_ktime_get_ns()
        }));
    }
    // Replies we translate are plain TCP/UDP; anything else is not ours.
    if ip.vihl & 0x0f != 5 || is_fragment(ip) || (ip.proto != PROTO_TCP && ip.proto != PROTO_UDP) {
        return Err(reason::PASS_NOT_OURS);
    }
    let l4 = parse::l4(ctx, l3).map_err(|_| reason::PASS_NOT_OURS)?;
    let key = flow::key(ip.src_addr, ip.dst_addr, l4.sport, l4.dport, l4.proto);
    let f = FLOWS.get_ptr_mut(key).ok_or(reason::PASS_NOT_OURS)?;
    // SAFETY: as in to_vip.
    let f = unsafe { &mut *f };
    if f.dir != DIR_REVERSE {
        return Err(reason::PASS_NOT_OURS);
    }
    if ip.ttl <= 1 {
        return Err(reason::PASS_TTL);
    }
    let flags = parse::tcp_flags(&l4);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // The real's first answer to a SYN tells passive health how it went.
    if l4.proto == PROTO_TCP && f.state == ST_SYN && f.packets == 0 {
        if flags.rst {
            passive::conn_failed(EV_SYN_RST, f.real_id, now);
        } else if flags.syn && flags.ack {
            passive::conn_ok(f.real_id);
        }
    }
    flow::account(f, &l4, flags, now);
    stats::count_flow(f.vip_id, f.real_id, Side::Out, l4.ip_len as u64, false);
    nat::snat(l3.ip, &l4, v4(&f.nat_addr), f.nat_port_be.to_ne_bytes());
    fwd::forward(ctx, l3).map(|action| (action, reason::REVERSE))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// bpf_fib_lookup is GPL-only; "Dual MIT/GPL" is GPL-compatible to the kernel.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
