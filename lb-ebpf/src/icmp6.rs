//! ICMPv6, as icmp.rs does ICMP: a VIP answers ping, and the errors about a
//! flow (packet too big above all, which is IPv6's path MTU discovery;
//! destination unreachable, time exceeded, parameter problem) are
//! translated both ways:
//!
//! - from the server side, addressed to the client and quoting client ->
//!   real: the quote becomes client -> VIP, the outer source the VIP if the
//!   real itself sent it (`to_client`);
//! - addressed to a VIP (a router in front of lb), quoting VIP -> client:
//!   the quote becomes real -> client and the destination the real
//!   (`to_vip`).
//!
//! The ICMPv6 checksum covers a pseudo-header of the outer addresses and
//! the whole message, quote included; every change is summed
//! (`csum::change16`) and folded in once. The quoted TCP/UDP checksum is
//! updated too when the quote holds it. Anything else of ICMPv6 (neighbour
//! discovery, router advertisements, MLD, and messages to no VIP that quote
//! no flow) goes to the kernel unchanged.
use lb_common::{
    DIR_FORWARD, DIR_REVERSE, EV_ICMP_UNREACH, Flow, FlowKey, Hop, PROTO_TCP, PROTO_UDP, reason,
};
use network_types::ip::Ipv6Hdr;

use crate::{
    clock, csum,
    ctx::Pkt,
    family::{EXT_FRAGMENT, Family, V6},
    flow, fwd,
    parse::{L3, ptr_at},
    passive,
};

const DEST_UNREACH: u8 = 1;
const PACKET_TOO_BIG: u8 = 2;
const TIME_EXCEEDED: u8 = 3;
const PARAMETER_PROBLEM: u8 = 4;
const ECHO_REQUEST: u8 = 128;
const ECHO_REPLY: u8 = 129;
const REPLY_HOP_LIMIT: u8 = 64;

/// The first bytes of an ICMPv6 error: its header and the quoted packet's
/// IPv6 header.
#[repr(C)]
struct Icmp6Error {
    kind: u8,
    code: u8,
    check: [u8; 2],
    rest: [u8; 4],
    inner: Ipv6Hdr,
}

/// The quoted packet's ports and what they are: where its TCP/UDP header
/// starts in the frame, past a fragment header if the quote has one (lb
/// sends no other extension header), and its protocol.
struct Quote {
    l4: usize,
    proto: u8,
}

const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;

/// An error type lb translates.
#[inline(always)]
fn is_error(kind: u8) -> bool {
    kind == DEST_UNREACH
        || kind == PACKET_TOO_BIG
        || kind == TIME_EXCEEDED
        || kind == PARAMETER_PROBLEM
}

/// ICMPv6 in an IPv6 packet at `l3_off` (its next header, no extension
/// header): to a VIP address (`for_vip`) or not.
#[inline(never)]
pub fn serve<C: Pkt>(ctx: &C, l3_off: usize, for_vip: bool) -> Result<(u32, u32), u32> {
    let l3 = L3::<V6>::at(ctx, l3_off)?;
    let e: *mut Icmp6Error = match ptr_at(ctx, l3.off + Ipv6Hdr::LEN) {
        Ok(e) => e,
        // Shorter than any error: an echo or neighbour discovery.
        Err(()) => {
            return if for_vip {
                echo(ctx, &l3)
            } else {
                Err(reason::PASS_NOT_OURS)
            };
        }
    };
    // SAFETY: bounds checked by ptr_at.
    let kind = unsafe { (*e).kind };
    if !is_error(kind) {
        return if for_vip {
            echo(ctx, &l3)
        } else {
            Err(reason::PASS_NOT_OURS)
        };
    }
    // SAFETY: bounds checked by ptr_at and the parser.
    let (e, ip) = unsafe { (&mut *e, &mut *l3.ip) };
    let (dir, miss) = if for_vip {
        (DIR_FORWARD, reason::DROP_ICMP_NO_FLOW)
    } else {
        (DIR_REVERSE, reason::PASS_NOT_OURS)
    };
    let q = quote(ctx, l3.off + Ipv6Hdr::LEN + 8, &e.inner).ok_or(miss)?;
    let ports: *mut [[u8; 2]; 2] = ptr_at(ctx, q.l4).map_err(|_| miss)?;
    // SAFETY: bounds checked by ptr_at.
    let ports = unsafe { &mut *ports };
    let s = flow::scratch().ok_or(reason::PASS_NOT_OURS)?;
    // The quote is the packet as lb sent it: its reversed 5-tuple keys the
    // direction that answers it.
    quoted_key(&mut s.key, e, ports, q.proto);
    let (f, _) = flow::find(&s.key).ok_or(miss)?;
    // SAFETY: a map value, valid for the program run.
    let f: &Flow = unsafe { &*f };
    if f.dir != dir {
        return Err(miss);
    }
    if ip.hop_limit <= 1 {
        return Err(reason::PASS_TTL);
    }
    let now = clock::now();
    // What the quote's endpoint becomes: the real (toward it) or the VIP.
    s.addr = f.nat_addr;
    let port = f.nat_port_be.to_ne_bytes();
    let mut change = 0;
    let why = if for_vip {
        // Toward the real: the error goes to it, about its own packet.
        change += V6::set_dst(ip, &s.addr);
        change += quote_change(ctx, e, ports, &q, &s.addr, port, true);
        reason::ICMP_ERROR_TO_REAL
    } else {
        if kind == DEST_UNREACH {
            passive::conn_failed(EV_ICMP_UNREACH, f.real_id, now);
        }
        // The real itself sent it (port unreachable, say): it speaks as
        // the VIP.
        if ip.src_addr == e.inner.dst_addr {
            change += V6::set_src(ip, &s.addr);
        }
        change += quote_change(ctx, e, ports, &q, &s.addr, port, false);
        reason::ICMP_ERROR_TO_CLIENT
    };
    e.check = csum::apply(e.check, change);
    s.hop = Hop::default();
    fwd::forward::<C, V6>(ctx, l3.off, &mut s.hop, fwd::NO_REAL).map(|a| (a, why))
}

/// Where the quoted packet (its IPv6 header `inner`, at `at` in the frame)
/// has its ports: a TCP/UDP packet, or the first fragment of one (a router
/// that cannot forward a fragment quotes it). `None` for anything else,
/// a later fragment among it, which has no ports.
#[inline(always)]
fn quote<C: Pkt>(ctx: &C, at: usize, inner: &Ipv6Hdr) -> Option<Quote> {
    if inner.vcf[0] >> 4 != 6 {
        return None;
    }
    let mut q = Quote {
        l4: at + Ipv6Hdr::LEN,
        proto: inner.next_hdr,
    };
    if q.proto == EXT_FRAGMENT {
        let f: *const [u8; 8] = ptr_at(ctx, q.l4).ok()?;
        // SAFETY: bounds checked by ptr_at.
        let f = unsafe { &*f };
        if u16::from_be_bytes([f[2], f[3]]) >> 3 != 0 {
            return None;
        }
        q = Quote {
            l4: q.l4 + 8,
            proto: f[0],
        };
    }
    (q.proto == PROTO_TCP || q.proto == PROTO_UDP).then_some(q)
}

/// `key` from a quoted packet, reversed.
#[inline(always)]
fn quoted_key(key: &mut FlowKey, e: &Icmp6Error, ports: &[[u8; 2]; 2], proto: u8) {
    key.src_addr = e.inner.dst_addr;
    key.dst_addr = e.inner.src_addr;
    key.src_port_be = u16::from_ne_bytes(ports[1]);
    key.dst_port_be = u16::from_ne_bytes(ports[0]);
    key.proto = proto;
    key._pad = [0; 3];
}

/// Rewrites the quote's source (`src`, toward the real) or destination
/// address and port, and the quoted TCP/UDP checksum if the quote holds
/// it; returns what the ICMPv6 checksum changes by.
#[inline(always)]
fn quote_change<C: Pkt>(
    ctx: &C,
    e: &mut Icmp6Error,
    ports: &mut [[u8; 2]; 2],
    q: &Quote,
    addr: &[u8; 16],
    port: [u8; 2],
    src: bool,
) -> u32 {
    let i = &mut e.inner;
    let which = if src { 0 } else { 1 };
    let old_port = ports[which];
    ports[which] = port;
    let addr_change = if src {
        V6::set_src(i, addr)
    } else {
        V6::set_dst(i, addr)
    };
    let port_change = csum::change2(old_port, port);
    let mut change = addr_change + port_change;
    let at = if q.proto == PROTO_TCP {
        TCP_CHECK
    } else {
        UDP_CHECK
    };
    if let Ok(l4_check) = ptr_at::<[u8; 2]>(ctx, q.l4 + at) {
        // SAFETY: bounds checked by ptr_at.
        let l4_check = unsafe { &mut *l4_check };
        let old = *l4_check;
        let mut new = csum::apply(old, addr_change + port_change);
        if q.proto == PROTO_UDP && new == [0, 0] {
            new = [0xff, 0xff];
        }
        *l4_check = new;
        change += csum::change2(old, new);
    }
    change
}

/// An echo request to a VIP is answered, as the CSM answered ping; any
/// other ICMPv6 to a VIP address (neighbour discovery's unicast probes
/// among it) is the kernel's.
#[inline(always)]
fn echo<C: Pkt>(ctx: &C, l3: &L3<V6>) -> Result<(u32, u32), u32> {
    let icmp: *mut [u8; 4] =
        ptr_at(ctx, l3.off + Ipv6Hdr::LEN).map_err(|_| reason::PASS_NOT_OURS)?;
    // SAFETY: bounds checked by ptr_at and the parser.
    let (icmp, ip, eth) = unsafe { (&mut *icmp, &mut *l3.ip, &mut *l3.eth) };
    if icmp[0] != ECHO_REQUEST || icmp[1] != 0 {
        return Err(reason::PASS_NOT_OURS);
    }
    icmp[0] = ECHO_REPLY;
    // Swapping the addresses leaves the pseudo-header's sum as it was.
    let check = csum::replace2([icmp[2], icmp[3]], [ECHO_REQUEST, 0], [ECHO_REPLY, 0]);
    icmp[2] = check[0];
    icmp[3] = check[1];
    core::mem::swap(&mut ip.src_addr, &mut ip.dst_addr);
    ip.hop_limit = REPLY_HOP_LIMIT;
    core::mem::swap(&mut eth.src_addr, &mut eth.dst_addr);
    Ok((ctx.answer(), reason::ICMP_ECHO_REPLY))
}
