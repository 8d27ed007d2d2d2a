//! ICMP: a VIP answers ping (as on the CSM), and ICMP errors about a flow
//! are translated both ways, so path MTU discovery and unreachables work
//! through the NAT as they do through conntrack:
//!
//! - from the server side (the real, or a router between lb and the real),
//!   addressed to the client and quoting client -> real: the quote becomes
//!   client -> VIP, the outer source the VIP if the real itself sent it
//!   (`to_client`);
//! - addressed to a VIP (a router in front of lb), quoting VIP -> client:
//!   the quote becomes real -> client and the destination the real
//!   (`to_real`).
//!
//! Every checksum is updated incrementally: the quoted IPv4 header's, the
//! quoted TCP/UDP checksum when the quote holds it (RFC 792 asks for only
//! eight bytes past the header; Linux quotes more), the outer IPv4 header's
//! and the ICMP checksum, which covers the quote. All quoted fields sit at
//! even offsets of the ICMP message, so each change folds in as a 16-bit
//! word change (RFC 1624).
use lb_common::{
    DIR_FORWARD, DIR_REVERSE, EV_ICMP_UNREACH, Flow, Hop, PROTO_TCP, PROTO_UDP, reason, v4_mapped,
};
use network_types::ip::Ipv4Hdr;

use crate::{
    clock, csum,
    ctx::Pkt,
    family::{V4, v4},
    flow, fwd,
    parse::{L3, ptr_at},
    passive,
};

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
const DEST_UNREACH: u8 = 3;
const TIME_EXCEEDED: u8 = 11;
const PARAMETER_PROBLEM: u8 = 12;
const FRAG_NEEDED: u8 = 4;
const REPLY_TTL: u8 = 64;

#[repr(C)]
struct IcmpHdr {
    kind: u8,
    code: u8,
    check: [u8; 2],
}

/// The first bytes of an ICMP error: its header, the quoted packet's IPv4
/// header (without options) and the first four bytes of its TCP/UDP header.
#[repr(C)]
struct IcmpError {
    kind: u8,
    code: u8,
    check: [u8; 2],
    rest: [u8; 4],
    inner: Ipv4Hdr,
    sport: [u8; 2],
    dport: [u8; 2],
}

/// Offset of the quoted TCP/UDP header in the ICMP message.
const INNER_L4: usize = 8 + Ipv4Hdr::LEN;
/// Offsets of the checksum within a TCP and a UDP header.
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;

/// An error type lb translates (destination unreachable, every code; time
/// exceeded; parameter problem).
#[inline(always)]
fn is_error(kind: u8) -> bool {
    kind == DEST_UNREACH || kind == TIME_EXCEEDED || kind == PARAMETER_PROBLEM
}

/// ICMP addressed to a VIP address: an echo request is answered, an error
/// about a flow goes to its real, anything else is dropped.
#[inline(never)]
pub fn to_vip<C: Pkt>(ctx: &C, l3_off: usize) -> Result<(u32, u32), u32> {
    let l3: L3 = L3::at(ctx, l3_off)?;
    let icmp: *mut IcmpHdr =
        ptr_at(ctx, l3.off + Ipv4Hdr::LEN).map_err(|_| reason::DROP_ICMP_VIP)?;
    // SAFETY: bounds checked by ptr_at.
    let kind = unsafe { (*icmp).kind };
    if is_error(kind) {
        return to_real(ctx, &l3);
    }
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
    Ok((ctx.answer(), reason::ICMP_ECHO_REPLY))
}

/// The error's first bytes, if it quotes a plain TCP/UDP packet lb could
/// have sent or received (no IPv4 options, first fragment or whole).
#[inline(always)]
fn quoted<C: Pkt>(ctx: &C, l3: &L3) -> Option<*mut IcmpError> {
    let e: *mut IcmpError = ptr_at(ctx, l3.off + Ipv4Hdr::LEN).ok()?;
    // SAFETY: bounds checked by ptr_at.
    let i = unsafe { &(*e).inner };
    let later_fragment = (i.frags[0] & 0x1f) != 0 || i.frags[1] != 0;
    (i.vihl == 0x45 && (i.proto == PROTO_TCP || i.proto == PROTO_UDP) && !later_fragment)
        .then_some(e)
}

/// The flow entry the quote names, of direction `dir`: the quote is the
/// packet as lb sent it, so its reversed 5-tuple is the key of the
/// direction that answers it (a quoted VIP -> client names the forward
/// entry client -> VIP; a quoted client -> real, the reverse entry real ->
/// client). Left in `s.key`. `Err(miss)` when there is none; `PASS_TTL`
/// when the error itself cannot be forwarded.
#[inline(always)]
fn quoted_flow(
    s: &mut flow::Scratch,
    e: &IcmpError,
    ip: &Ipv4Hdr,
    dir: u8,
    miss: u32,
) -> Result<&'static Flow, u32> {
    s.key = flow::key(
        v4_mapped(e.inner.dst_addr),
        v4_mapped(e.inner.src_addr),
        e.dport,
        e.sport,
        e.inner.proto,
    );
    let (f, _) = flow::find(&s.key).ok_or(miss)?;
    // SAFETY: a map value, valid for the program run.
    let f: &Flow = unsafe { &*f };
    if f.dir != dir {
        return Err(miss);
    }
    if ip.ttl <= 1 {
        return Err(reason::PASS_TTL);
    }
    Ok(f)
}

/// An ICMP error from a router in front of lb about a packet lb sent as the
/// VIP: delivered to the flow's real, rewritten as if the real's own packet
/// had met it. No flow, no delivery (`DROP_ICMP_NO_FLOW`).
#[inline(always)]
fn to_real<C: Pkt>(ctx: &C, l3: &L3) -> Result<(u32, u32), u32> {
    let e = quoted(ctx, l3).ok_or(reason::DROP_ICMP_NO_FLOW)?;
    // SAFETY: bounds checked by `quoted` and the parser.
    let (e, ip) = unsafe { (&mut *e, &mut *l3.ip) };
    let s = flow::scratch().ok_or(reason::PASS_NOT_OURS)?;
    let f = quoted_flow(s, e, ip, DIR_FORWARD, reason::DROP_ICMP_NO_FLOW)?;
    let real = v4(&f.nat_addr);
    let real_port = f.nat_port_be.to_ne_bytes();
    let old_dst = ip.dst_addr;
    ip.dst_addr = real;
    ip.check = csum::replace4(ip.check, old_dst, real);
    rewrite_quote(ctx, l3, e, real, real_port, true);
    s.hop = Hop::default();
    fwd::forward::<C, V4>(ctx, l3.off, &mut s.hop, fwd::NO_REAL)
        .map(|a| (a, reason::ICMP_ERROR_TO_REAL))
}

/// An ICMP error from the server side about a flow, addressed to its
/// client: translated so the client's socket matches it. No flow: passed
/// (`PASS_NOT_OURS`), since it may be any routed host's. Destination
/// unreachable (other than "fragmentation needed", which is path MTU
/// discovery, not a failure) also counts against the real for passive
/// health.
#[inline(never)]
pub fn to_client<C: Pkt>(ctx: &C, l3_off: usize) -> Result<(u32, u32), u32> {
    let l3: L3 = L3::at(ctx, l3_off)?;
    let e = quoted(ctx, &l3).ok_or(reason::PASS_NOT_OURS)?;
    // SAFETY: bounds checked by `quoted` and the parser.
    let (e, ip) = unsafe { (&mut *e, &mut *l3.ip) };
    if !is_error(e.kind) {
        return Err(reason::PASS_NOT_OURS);
    }
    let s = flow::scratch().ok_or(reason::PASS_NOT_OURS)?;
    let f = quoted_flow(s, e, ip, DIR_REVERSE, reason::PASS_NOT_OURS)?;
    let now = clock::now();
    if e.kind == DEST_UNREACH && e.code != FRAG_NEEDED {
        passive::conn_failed(EV_ICMP_UNREACH, f.real_id, now);
    }
    let vip = v4(&f.nat_addr);
    let vip_port = f.nat_port_be.to_ne_bytes();
    // The real itself sent it (port unreachable, say): it speaks as the VIP.
    if ip.src_addr == e.inner.dst_addr {
        let old_src = ip.src_addr;
        ip.src_addr = vip;
        ip.check = csum::replace4(ip.check, old_src, vip);
    }
    rewrite_quote(ctx, &l3, e, vip, vip_port, false);
    s.hop = Hop::default();
    fwd::forward::<C, V4>(ctx, l3.off, &mut s.hop, fwd::NO_REAL)
        .map(|a| (a, reason::ICMP_ERROR_TO_CLIENT))
}

/// Rewrites the quoted packet's source (`src`, toward the real) or
/// destination address and port, and every checksum that covers them.
#[inline(always)]
fn rewrite_quote<C: Pkt>(
    ctx: &C,
    l3: &L3,
    e: &mut IcmpError,
    addr: [u8; 4],
    port: [u8; 2],
    src: bool,
) {
    let i = &mut e.inner;
    let (old_addr, old_port) = if src {
        let old = (i.src_addr, e.sport);
        i.src_addr = addr;
        e.sport = port;
        old
    } else {
        let old = (i.dst_addr, e.dport);
        i.dst_addr = addr;
        e.dport = port;
        old
    };
    let old_ip_check = i.check;
    i.check = csum::replace4(i.check, old_addr, addr);
    let mut check = csum::replace4(e.check, old_addr, addr);
    check = csum::replace2(check, old_ip_check, i.check);
    check = csum::replace2(check, old_port, port);
    // The quoted TCP/UDP checksum, if the quote holds it (a UDP zero means
    // none and stays zero).
    let at = if i.proto == PROTO_TCP {
        TCP_CHECK
    } else {
        UDP_CHECK
    };
    if let Ok(l4_check) = ptr_at::<[u8; 2]>(ctx, l3.off + Ipv4Hdr::LEN + INNER_L4 + at) {
        // SAFETY: bounds checked by ptr_at.
        let l4_check = unsafe { &mut *l4_check };
        if i.proto == PROTO_TCP || *l4_check != [0, 0] {
            let old = *l4_check;
            let mut new = csum::replace_addr_port(old, old_addr, addr, old_port, port);
            if i.proto == PROTO_UDP && new == [0, 0] {
                new = [0xff, 0xff];
            }
            *l4_check = new;
            check = csum::replace2(check, old, new);
        }
    }
    e.check = check;
}
