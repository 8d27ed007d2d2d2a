//! ICMP errors from lb itself. Above all "fragmentation needed" (IPv4) or
//! ICMPv6 "packet too big": a packet with DF set (any IPv6 packet) that
//! does not fit its next hop's MTU. Also "port unreachable" for a new UDP
//! flow no real can take (refuse.rs), built the same way from the
//! untranslated datagram.
//!
//! On "too big": The kernel would send this too if lb
//! passed the packet up, but after the rewrite, so its quote would name the
//! real (to the client) or the VIP (to the real): addresses the sender never
//! used, and its socket would never learn the MTU. Here the rewrite is
//! undone first and the message quotes the packet as it arrived (Katran's
//! `send_icmp4_too_big` is the model: trim, grow the head, send it back).
use lb_common::reason;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    csum,
    ctx::Pkt,
    family::{Family, PROTO_ICMPV6, Transport, V6, v4},
    nat,
    parse::{self, L3, ptr_at},
};

/// Bytes of the offending packet quoted: its IPv4 header and 64 bytes past
/// it (RFC 792 asks for 8; more lets the sender match any TCP/UDP header).
const QUOTE: usize = Ipv4Hdr::LEN + 64;
/// The ICMP message: 8 bytes of header and the quote (a multiple of 4, as
/// bpf_csum_diff wants).
const ICMP_LEN: usize = 8 + QUOTE;
/// A port unreachable's quote: the IPv4 header and the UDP header.
const UNREACH_QUOTE: usize = Ipv4Hdr::LEN + 8;
/// What lb puts in front of the quote.
const HEAD: usize = Ipv4Hdr::LEN + 8;
const TTL: u8 = 64;
/// IPTOS_PREC_INTERNETCONTROL, as Linux sends ICMP errors.
const TOS: u8 = 0xc0;

/// What `answer` needs, left in scratch memory by the caller (a BPF
/// function takes at most five arguments).
pub struct TooBig {
    /// The address and port the packet had before its translation: the
    /// VIP's, as destination (`dst`, a client's packet) or as source (a
    /// real's).
    pub orig_addr: [u8; 16],
    pub orig_port: [u8; 2],
    pub dst: bool,
    /// The message's source (the VIP) and the MTU to report.
    pub from: [u8; 16],
    pub mtu: u16,
    /// A port unreachable for an untranslated datagram instead.
    pub unreachable: bool,
}

impl TooBig {
    /// A port unreachable from `vip` for the client's datagram, which is
    /// still as it arrived.
    #[inline(always)]
    pub fn port_unreachable(vip: &[u8; 16]) -> Self {
        TooBig {
            orig_addr: [0; 16],
            orig_port: [0; 2],
            dst: true,
            from: *vip,
            mtu: 0,
            unreachable: true,
        }
    }
}

/// ICMP destination unreachable and its codes.
const DEST_UNREACH: u8 = 3;
const FRAG_NEEDED: u8 = 4;
const PORT_UNREACH: u8 = 3;
/// ICMPv6 destination unreachable and its port unreachable code.
const DEST_UNREACH6: u8 = 1;
const PORT_UNREACH6: u8 = 4;

/// Undoes the translation of the TCP/UDP packet at `l3_off` as `t` says and
/// answers it with "fragmentation needed" (IPv4) or "packet too big"
/// (IPv6) back out the interface it came in by. Untagged frames only:
/// tagged ones never reach the FIB (fwd.rs).
#[inline(never)]
pub fn answer<C: Pkt, F: Family>(
    ctx: &C,
    l3_off: usize,
    t: &TooBig,
    tr: Transport,
) -> Result<(u32, u32), u32> {
    if l3_off != EthHdr::LEN {
        return Err(reason::PASS_FIB);
    }
    if !t.unreachable {
        let l3 = L3::<F>::at(ctx, l3_off)?;
        let l4 = parse::l4(ctx, &l3, &tr).map_err(|_| reason::PASS_FIB)?;
        if t.dst {
            nat::dnat::<C, F>(ctx, l3.ip, &l4, &t.orig_addr, t.orig_port);
        } else {
            nat::snat::<C, F>(ctx, l3.ip, &l4, &t.orig_addr, t.orig_port);
        }
    }
    // A port unreachable quotes only the headers a socket is matched by,
    // which every datagram has: a longer quote would have to grow a short
    // datagram, which XDP cannot where a frame has no tailroom.
    match (F::V6, t.unreachable) {
        (true, true) => message6::<C, UNREACH_QUOTE6, { 8 + UNREACH_QUOTE6 }>(ctx, t),
        (true, false) => message6::<C, QUOTE6, ICMP6_LEN>(ctx, t),
        (false, true) => message4::<C, UNREACH_QUOTE, { 8 + UNREACH_QUOTE }>(ctx, t),
        (false, false) => message4::<C, QUOTE, ICMP_LEN>(ctx, t),
    }
}

/// Trims the packet to its Ethernet header and `quote` bytes past it, and
/// grows `head` bytes in front for the new headers, in a frame back to its
/// sender (MACs swapped) of `ether_type`.
#[inline(always)]
fn reframe<C: Pkt>(ctx: &C, quote: usize, head: usize, ether_type: [u8; 2]) -> Result<(), u32> {
    let keep = EthHdr::LEN + quote;
    // Too short to be too big for any real MTU: the kernel judges.
    if ctx.len() < keep || !ctx.resize(keep, head) {
        return Err(reason::PASS_FIB);
    }
    // Resizing invalidates every packet pointer: derive them again. The
    // old Ethernet header now sits at `head`, the quote right after it;
    // the new IP header will overlap it, so it is read first.
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| reason::PASS_FIB)?;
    let old: *mut EthHdr = ptr_at(ctx, head).map_err(|_| reason::PASS_FIB)?;
    // SAFETY: both bounds checked just above; they do not overlap.
    unsafe {
        let (src_mac, dst_mac) = ((*old).src_addr, (*old).dst_addr);
        (*eth).dst_addr = src_mac;
        (*eth).src_addr = dst_mac;
        (*eth).ether_type = u16::from_ne_bytes(ether_type);
    }
    Ok(())
}

/// The IPv4 message: the packet trimmed to its quote of `Q` bytes, then the
/// new headers grown in front; `M` is the ICMP message's length, 8 + `Q`.
#[inline(always)]
fn message4<C: Pkt, const Q: usize, const M: usize>(
    ctx: &C,
    t: &TooBig,
) -> Result<(u32, u32), u32> {
    reframe(ctx, Q, HEAD, [0x08, 0x00])?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, EthHdr::LEN).map_err(|_| reason::PASS_FIB)?;
    let icmp: *mut [u8; M] =
        ptr_at(ctx, EthHdr::LEN + Ipv4Hdr::LEN).map_err(|_| reason::PASS_FIB)?;
    let quote: *mut Ipv4Hdr = ptr_at(ctx, HEAD + EthHdr::LEN).map_err(|_| reason::PASS_FIB)?;
    // SAFETY: all bounds checked just above; the quote lies past every byte
    // written here.
    unsafe {
        let sender = (*quote).src_addr;
        let ip = &mut *ip;
        ip.vihl = 0x45;
        ip.tos = TOS;
        ip.tot_len = ((Ipv4Hdr::LEN + M) as u16).to_be_bytes();
        ip.id = [0, 0];
        ip.frags = [0, 0];
        ip.ttl = TTL;
        ip.proto = crate::family::PROTO_ICMP;
        ip.check = [0, 0];
        ip.src_addr = v4(&t.from);
        ip.dst_addr = sender;
        ip.check =
            csum::fold_inverted(csum::sum_wsum(ip as *mut Ipv4Hdr as *mut u32, Ipv4Hdr::LEN));
        let m = &mut *icmp;
        let mtu = t.mtu.to_be_bytes();
        let code = if t.unreachable {
            PORT_UNREACH
        } else {
            FRAG_NEEDED
        };
        m[..8].copy_from_slice(&[DEST_UNREACH, code, 0, 0, 0, 0, mtu[0], mtu[1]]);
        let check = csum::fold_inverted(csum::sum_wsum(m.as_mut_ptr().cast(), M));
        m[2] = check[0];
        m[3] = check[1];
    }
    Ok((ctx.answer(), why(t)))
}

/// The reason an answer counts under.
#[inline(always)]
fn why(t: &TooBig) -> u32 {
    if t.unreachable {
        reason::NO_REAL_UNREACH
    } else {
        reason::ICMP_FRAG_NEEDED
    }
}

/// Bytes of an IPv6 packet quoted: its header and 64 bytes past it (RFC
/// 4443 allows up to the minimum MTU; this is what a TCP/UDP socket needs
/// to match it).
const QUOTE6: usize = Ipv6Hdr::LEN + 64;
/// A port unreachable's IPv6 quote: the IPv6 header and the UDP header.
const UNREACH_QUOTE6: usize = Ipv6Hdr::LEN + 8;
/// The ICMPv6 message (a multiple of 4, as bpf_csum_diff wants).
const ICMP6_LEN: usize = 8 + QUOTE6;
const HEAD6: usize = Ipv6Hdr::LEN + 8;
/// ICMPv6 "packet too big".
const PACKET_TOO_BIG: u8 = 2;

/// The IPv6 message, built as the IPv4 one. IPv6 routers never fragment,
/// so every IPv6 packet too big for its next hop gets one.
#[inline(always)]
fn message6<C: Pkt, const Q: usize, const M: usize>(
    ctx: &C,
    t: &TooBig,
) -> Result<(u32, u32), u32> {
    reframe(ctx, Q, HEAD6, [0x86, 0xdd])?;
    let ip: *mut Ipv6Hdr = ptr_at(ctx, EthHdr::LEN).map_err(|_| reason::PASS_FIB)?;
    let icmp: *mut [u8; M] =
        ptr_at(ctx, EthHdr::LEN + Ipv6Hdr::LEN).map_err(|_| reason::PASS_FIB)?;
    let quote: *mut Ipv6Hdr = ptr_at(ctx, HEAD6 + EthHdr::LEN).map_err(|_| reason::PASS_FIB)?;
    // SAFETY: all bounds checked just above; the quote lies past every byte
    // written here.
    unsafe {
        let sender = &(*quote).src_addr;
        V6::write_header(&mut *ip, &t.from, sender, PROTO_ICMPV6, M as u16, TTL);
        let pseudo = V6::pseudo_sum(&t.from, sender, PROTO_ICMPV6, M as u16);
        let m = &mut *icmp;
        let mtu = (t.mtu as u32).to_be_bytes();
        let (kind, code) = if t.unreachable {
            (DEST_UNREACH6, PORT_UNREACH6)
        } else {
            (PACKET_TOO_BIG, 0)
        };
        m[..8].copy_from_slice(&[kind, code, 0, 0, mtu[0], mtu[1], mtu[2], mtu[3]]);
        let body = csum::sum_wsum(m.as_mut_ptr().cast(), M);
        let check = csum::fold_inverted(pseudo + body);
        m[2] = check[0];
        m[3] = check[1];
    }
    Ok((ctx.answer(), why(t)))
}
