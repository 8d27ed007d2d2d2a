//! Passive health: what the datapath sees of a real's connections, reported
//! to the agent. Successes only move a counter; failures also go through the
//! `EVENTS` ring buffer so the agent reacts at once.
use aya_ebpf::programs::XdpContext;
use lb_common::{DIR_REVERSE, Event, PROTO_TCP, PROTO_UDP, reason};
use network_types::ip::Ipv4Hdr;

use crate::{
    flow,
    maps::{EVENTS, FLOWS, REAL_STATS},
    parse::{L3, ptr_at},
};

const ICMP_DEST_UNREACH: u8 = 3;

#[inline(always)]
pub fn conn_ok(real_id: u32) {
    if let Some(c) = REAL_STATS.get_ptr_mut(real_id) {
        // SAFETY: per-CPU slot.
        unsafe { (*c).conn_ok += 1 };
    }
}

#[inline(always)]
pub fn conn_failed(kind: u32, real_id: u32, now: u64) {
    if let Some(c) = REAL_STATS.get_ptr_mut(real_id) {
        // SAFETY: per-CPU slot.
        unsafe { (*c).conn_fail += 1 };
    }
    // A full ring only loses the event, never the packet; the counter above
    // still moved.
    let _ = EVENTS.output::<Event>(
        &Event {
            kind,
            real_id,
            ts_ns: now,
        },
        0,
    );
}

/// The first bytes of an ICMP error: its header, the offending packet's IPv4
/// header (without options) and the start of its TCP/UDP header.
#[repr(C)]
struct IcmpError {
    kind: u8,
    code: u8,
    check: [u8; 2],
    unused: [u8; 4],
    inner: Ipv4Hdr,
    sport: [u8; 2],
    dport: [u8; 2],
}

/// An ICMP destination-unreachable about a packet we sent a real (its
/// offending packet is client -> real): reported for the flow's real.
/// Returns the reason to count; the packet is passed either way.
#[inline(always)]
pub fn icmp_from_real(ctx: &XdpContext, l3: &L3, now: u64) -> u32 {
    let Ok(e) = ptr_at::<IcmpError>(ctx, l3.off + Ipv4Hdr::LEN) else {
        return reason::PASS_NOT_OURS;
    };
    // SAFETY: bounds checked by ptr_at.
    let e = unsafe { &*e };
    if e.kind != ICMP_DEST_UNREACH
        || e.inner.vihl != 0x45
        || (e.inner.proto != PROTO_TCP && e.inner.proto != PROTO_UDP)
    {
        return reason::PASS_NOT_OURS;
    }
    // The reply direction's key: real -> client.
    let key = flow::key(
        e.inner.dst_addr,
        e.inner.src_addr,
        e.dport,
        e.sport,
        e.inner.proto,
    );
    // SAFETY: read-only use of the value.
    match unsafe { FLOWS.get(key) } {
        Some(f) if f.dir == DIR_REVERSE => {
            conn_failed(lb_common::EV_ICMP_UNREACH, f.real_id, now);
            reason::PASS_ICMP_FROM_REAL
        }
        _ => reason::PASS_NOT_OURS,
    }
}
