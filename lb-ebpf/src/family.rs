//! The two IP families the datapath serves. The packet paths (main.rs's
//! `to_vip` and `from_real`, fast.rs, nat.rs, fwd.rs) are generic over
//! `F: Family` and compiled once per family, as they are once per hook
//! (ctx.rs): one source, and each copy verified on its own. What differs
//! between IPv4 and IPv6 lives here:
//! - the header: its checksum (IPv4 only), TTL or hop limit, total length
//!   or payload length;
//! - which packets lb translates: plain IPv4 (no options) and IPv6 whose
//!   extension headers lb walks (`V6::walk`, the stated rule for the rest),
//!   and where their transport header is (`Transport`);
//! - the address width, and the FIB request.
//!
//! Flow keys, sticky keys and `REALS` hold 16-byte addresses for both
//! (IPv4 as v4-mapped), so everything from the flow table on is shared.
use aya_ebpf::bindings::bpf_fib_lookup as FibParams;
use core::mem::zeroed;
use lb_common::{PROTO_TCP, PROTO_UDP, reason};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::{csum, ctx::Pkt, parse::ptr_at};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;

/// IPv6 extension headers `V6::walk` passes over.
const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
pub const EXT_FRAGMENT: u8 = 44;
const EXT_DEST_OPTS: u8 = 60;
/// Extension headers walked at most: hop-by-hop, destination options,
/// routing, destination options again and a fragment header is the longest
/// order RFC 8200 (4.1) recommends.
const MAX_EXT: usize = 5;

pub const FRAG_NONE: u8 = 0;
/// More fragments follow, offset 0: it carries the transport header.
pub const FRAG_FIRST: u8 = 1;
/// Offset past 0: no transport header.
pub const FRAG_LATER: u8 = 2;

/// Where a packet's transport header is and what it is, past any IPv6
/// extension headers: found once per packet (`Family::walk`) and handed
/// down, eight bytes in one register across BPF calls.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Transport {
    /// Bytes of extension headers between the IP header and the transport's.
    pub ext_len: u8,
    pub proto: u8,
    /// `FRAG_NONE`, `FRAG_FIRST` or `FRAG_LATER`.
    pub frag: u8,
    /// Whether lb translates the packet: IPv4 without options; IPv6 whose
    /// extension headers `V6::walk` passed.
    pub plain: bool,
    /// A fragment's identification, as `lb_common::FragKey::id_be` keeps it.
    pub frag_id: u32,
}

impl Transport {
    #[inline(always)]
    pub fn first_fragment(&self) -> bool {
        self.frag == FRAG_FIRST
    }

    #[inline(always)]
    pub fn later_fragment(&self) -> bool {
        self.frag == FRAG_LATER
    }

    /// A plain TCP or UDP packet with its header (not a later fragment):
    /// the only kind lb translates.
    #[inline(always)]
    pub fn translated(&self) -> bool {
        self.plain && !self.later_fragment() && (self.proto == PROTO_TCP || self.proto == PROTO_UDP)
    }
}

pub trait Family {
    type Hdr;
    const V6: bool;
    /// The header's length when lb translates the packet (`plain`).
    const HDR_LEN: usize;
    /// The reason for a header that is truncated or malformed.
    const BAD: u32;
    /// The reason for a packet to a VIP that is not `plain`.
    const NOT_PLAIN: u32;
    /// The ICMP protocol of the family.
    const ICMP: u8;

    /// Whether the header at `off` is well formed, the whole packet
    /// (`len` bytes) holding the length it states.
    fn valid(h: &Self::Hdr, off: usize, len: usize) -> bool;
    /// The packet's `Transport`: where its transport header is, what it
    /// is, whether it is a fragment, and whether lb translates it.
    fn walk<C: Pkt>(ctx: &C, off: usize, h: &Self::Hdr) -> Transport;
    fn ttl(h: &Self::Hdr) -> u8;
    /// The whole IP packet's length, header included.
    fn ip_len(h: &Self::Hdr) -> u16;
    /// The length field an MTU is checked with (`Pkt::mtu_len`): IPv4's
    /// total length; IPv6's payload length plus its header, as the FIB
    /// helper wants it.
    #[inline(always)]
    fn tot_len(h: &Self::Hdr) -> [u8; 2] {
        Self::ip_len(h).to_be_bytes()
    }
    /// Too big for a route: whether the packet may not be fragmented on
    /// the way (IPv4's DF; every IPv6 packet).
    fn dont_fragment(h: &Self::Hdr) -> bool;
    /// TTL or hop limit minus one (callers refused 1 and 0).
    fn dec_ttl(h: &mut Self::Hdr);

    // Addresses go in and out in their map form (16 bytes, IPv4
    // v4-mapped: `lb_common::to_map_addr`) and by reference, between the
    // packet and map memory (flow entries, `SCRATCH`): 16-byte arrays
    // passed by value would each take stack the verifier's 512 bytes
    // cannot spare.

    /// The source and destination into `key`'s address fields.
    fn addrs(h: &Self::Hdr, src: &mut [u8; 16], dst: &mut [u8; 16]);
    /// Rewrites an address (and IPv4's header checksum). Returns the sum
    /// the L4 checksum changes by (`csum::change`), the address being part
    /// of its pseudo-header.
    fn set_src(h: &mut Self::Hdr, a: &[u8; 16]) -> u32;
    fn set_dst(h: &mut Self::Hdr, a: &[u8; 16]) -> u32;
    /// The four bytes a cached next hop is checked against
    /// (`lb_common::Hop::dst`) for a destination: the IPv4 address, the
    /// last four bytes of an IPv6 one. A flow's destination is fixed per
    /// direction (a reassigned flow drops its hop, a new flow starts from
    /// a cleared one), so the check is a guard, not what keeps hops apart.
    fn tag(a: &[u8; 16]) -> [u8; 4];
    /// `tag` of the header's destination.
    fn dst_tag(h: &Self::Hdr) -> [u8; 4];
    /// The FIB request for a packet arriving on `ingress`; `len` its
    /// length for the MTU check (zero: the kernel checks the skb).
    fn fib_request(h: &Self::Hdr, len: u16, ingress: u32) -> FibParams;
    /// Writes a fresh header for a packet lb sends itself: `src` -> `dst`,
    /// `l4_len` bytes of `proto` after it, `ttl` hops.
    fn write_header(
        h: &mut Self::Hdr,
        src: &[u8; 16],
        dst: &[u8; 16],
        proto: u8,
        l4_len: u16,
        ttl: u8,
    );
    /// The sum of the pseudo-header's 16-bit words that TCP, UDP and
    /// ICMPv6 checksums cover (RFC 793; RFC 8200, 8.1).
    fn pseudo_sum(src: &[u8; 16], dst: &[u8; 16], proto: u8, l4_len: u16) -> u32;
}

pub struct V4;
pub struct V6;

/// The IPv4 address in a map-form one.
#[inline(always)]
pub fn v4(a: &[u8; 16]) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
}

/// Four bytes of an address from `at`.
#[inline(always)]
fn quad(a: &[u8; 16], at: usize) -> [u8; 4] {
    [a[at], a[at + 1], a[at + 2], a[at + 3]]
}

impl Family for V4 {
    type Hdr = Ipv4Hdr;
    const V6: bool = false;
    const HDR_LEN: usize = Ipv4Hdr::LEN;
    const BAD: u32 = reason::PASS_BAD_IPV4;
    const NOT_PLAIN: u32 = reason::DROP_IP_OPTIONS;
    const ICMP: u8 = PROTO_ICMP;

    #[inline(always)]
    fn valid(h: &Ipv4Hdr, off: usize, len: usize) -> bool {
        let ihl = (h.vihl & 0x0f) as usize * 4;
        let tot_len = u16::from_be_bytes(h.tot_len) as usize;
        // Ethernet may pad short frames, so the frame may be longer than
        // tot_len, never shorter.
        h.vihl >> 4 == 4 && ihl >= Ipv4Hdr::LEN && tot_len >= ihl && off + tot_len <= len
    }

    #[inline(always)]
    fn ttl(h: &Ipv4Hdr) -> u8 {
        h.ttl
    }

    #[inline(always)]
    fn ip_len(h: &Ipv4Hdr) -> u16 {
        u16::from_be_bytes(h.tot_len)
    }

    #[inline(always)]
    fn tot_len(h: &Ipv4Hdr) -> [u8; 2] {
        h.tot_len
    }

    #[inline(always)]
    fn walk<C: Pkt>(_ctx: &C, _off: usize, h: &Ipv4Hdr) -> Transport {
        let later = (h.frags[0] & 0x1f) != 0 || h.frags[1] != 0;
        let more = h.frags[0] & 0x20 != 0;
        Transport {
            ext_len: 0,
            proto: h.proto,
            frag: if later {
                FRAG_LATER
            } else if more {
                FRAG_FIRST
            } else {
                FRAG_NONE
            },
            // Options: not translated (`DROP_IP_OPTIONS`).
            plain: h.vihl & 0x0f == 5,
            frag_id: u16::from_ne_bytes(h.id) as u32,
        }
    }

    #[inline(always)]
    fn dont_fragment(h: &Ipv4Hdr) -> bool {
        h.frags[0] & 0x40 != 0
    }

    #[inline(always)]
    fn dec_ttl(h: &mut Ipv4Hdr) {
        let old = [h.ttl, h.proto];
        h.ttl -= 1;
        h.check = csum::replace2(h.check, old, [h.ttl, h.proto]);
    }

    #[inline(always)]
    fn addrs(h: &Ipv4Hdr, src: &mut [u8; 16], dst: &mut [u8; 16]) {
        *src = lb_common::v4_mapped(h.src_addr);
        *dst = lb_common::v4_mapped(h.dst_addr);
    }

    #[inline(always)]
    fn set_src(h: &mut Ipv4Hdr, a: &[u8; 16]) -> u32 {
        let (old, new) = (h.src_addr, v4(a));
        h.src_addr = new;
        let change = csum::change(old, new);
        h.check = csum::apply(h.check, change);
        change
    }

    #[inline(always)]
    fn set_dst(h: &mut Ipv4Hdr, a: &[u8; 16]) -> u32 {
        let (old, new) = (h.dst_addr, v4(a));
        h.dst_addr = new;
        let change = csum::change(old, new);
        h.check = csum::apply(h.check, change);
        change
    }

    #[inline(always)]
    fn tag(a: &[u8; 16]) -> [u8; 4] {
        v4(a)
    }

    #[inline(always)]
    fn dst_tag(h: &Ipv4Hdr) -> [u8; 4] {
        h.dst_addr
    }

    #[inline(always)]
    fn fib_request(h: &Ipv4Hdr, len: u16, ingress: u32) -> FibParams {
        // SAFETY: all-zero is a valid bpf_fib_lookup.
        let mut p: FibParams = unsafe { zeroed() };
        p.family = AF_INET;
        p.l4_protocol = h.proto;
        // The helper wants the length in host order (it checks the MTU
        // with it).
        p.__bindgen_anon_1.tot_len = len;
        p.__bindgen_anon_2.tos = h.tos;
        p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(h.src_addr);
        p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(h.dst_addr);
        p.ifindex = ingress;
        p
    }

    #[inline(always)]
    fn write_header(
        h: &mut Ipv4Hdr,
        src: &[u8; 16],
        dst: &[u8; 16],
        proto: u8,
        l4_len: u16,
        ttl: u8,
    ) {
        let tot_len = Ipv4Hdr::LEN as u16 + l4_len;
        let (src, dst) = (v4(src), v4(dst));
        h.vihl = 0x45;
        h.tos = 0;
        h.tot_len = tot_len.to_be_bytes();
        h.id = [0, 0];
        h.frags = [0x40, 0];
        h.ttl = ttl;
        h.proto = proto;
        h.src_addr = src;
        h.dst_addr = dst;
        let sum = 0x4500
            + tot_len as u32
            + 0x4000
            + ((ttl as u32) << 8 | proto as u32)
            + csum::sum4(src)
            + csum::sum4(dst);
        h.check = csum::fold_inverted(sum);
    }

    #[inline(always)]
    fn pseudo_sum(src: &[u8; 16], dst: &[u8; 16], proto: u8, l4_len: u16) -> u32 {
        csum::sum4(v4(src)) + csum::sum4(v4(dst)) + proto as u32 + l4_len as u32
    }
}

impl Family for V6 {
    type Hdr = Ipv6Hdr;
    const V6: bool = true;
    const HDR_LEN: usize = Ipv6Hdr::LEN;
    const BAD: u32 = reason::PASS_BAD_IPV6;
    const NOT_PLAIN: u32 = reason::DROP_IPV6_EXT;
    const ICMP: u8 = PROTO_ICMPV6;

    #[inline(always)]
    fn valid(h: &Ipv6Hdr, off: usize, len: usize) -> bool {
        // Padding may follow, as for IPv4; a jumbogram (payload length 0
        // and a hop-by-hop option) is not plain and goes by that rule.
        h.vcf[0] >> 4 == 6 && off + Ipv6Hdr::LEN + u16::from_be_bytes(h.payload_len) as usize <= len
    }

    #[inline(always)]
    fn ttl(h: &Ipv6Hdr) -> u8 {
        h.hop_limit
    }

    #[inline(always)]
    fn ip_len(h: &Ipv6Hdr) -> u16 {
        u16::from_be_bytes(h.payload_len).saturating_add(Ipv6Hdr::LEN as u16)
    }

    /// Walks at most `MAX_EXT` extension headers: hop-by-hop and
    /// destination options, a routing header with no segments left (the
    /// packet is at its final destination), and a fragment header. Not
    /// plain, so not translated (`DROP_IPV6_EXT` to a VIP, passed from the
    /// server side): a routing header with segments left, any other
    /// extension header, a longer chain, or one past the first
    /// `ctx::HEADERS` bytes or 255 bytes of extensions.
    #[inline(always)]
    fn walk<C: Pkt>(ctx: &C, off: usize, h: &Ipv6Hdr) -> Transport {
        let mut t = Transport {
            ext_len: 0,
            proto: h.next_hdr,
            frag: FRAG_NONE,
            plain: false,
            frag_id: 0,
        };
        let start = off + Ipv6Hdr::LEN;
        let mut at = start;
        for _ in 0..MAX_EXT {
            match t.proto {
                EXT_HOP_BY_HOP | EXT_DEST_OPTS | EXT_ROUTING => {
                    let Ok(e) = ptr_at::<[u8; 4]>(ctx, at) else {
                        return t;
                    };
                    // SAFETY: bounds checked by ptr_at.
                    let e = unsafe { &*e };
                    if t.proto == EXT_ROUTING && e[3] != 0 {
                        return t;
                    }
                    t.proto = e[0];
                    at += (e[1] as usize + 1) * 8;
                }
                EXT_FRAGMENT => {
                    let Ok(e) = ptr_at::<[u8; 8]>(ctx, at) else {
                        return t;
                    };
                    // SAFETY: bounds checked by ptr_at.
                    let e = unsafe { &*e };
                    t.proto = e[0];
                    let offset = u16::from_be_bytes([e[2], e[3]]) >> 3;
                    t.frag = if offset != 0 {
                        FRAG_LATER
                    } else if e[3] & 1 != 0 {
                        FRAG_FIRST
                    } else {
                        // An atomic fragment (RFC 6946): a whole packet.
                        FRAG_NONE
                    };
                    t.frag_id = u32::from_ne_bytes([e[4], e[5], e[6], e[7]]);
                    at += 8;
                }
                _ => break,
            }
        }
        let len = at - start;
        if len > u8::MAX as usize {
            return t;
        }
        t.ext_len = len as u8;
        t.plain = t.proto == PROTO_TCP || t.proto == PROTO_UDP || t.proto == PROTO_ICMPV6;
        t
    }

    #[inline(always)]
    fn dont_fragment(_h: &Ipv6Hdr) -> bool {
        // Routers never fragment IPv6 (RFC 8200, 5).
        true
    }

    #[inline(always)]
    fn dec_ttl(h: &mut Ipv6Hdr) {
        h.hop_limit -= 1;
    }

    #[inline(always)]
    fn addrs(h: &Ipv6Hdr, src: &mut [u8; 16], dst: &mut [u8; 16]) {
        copy16(src, &h.src_addr);
        copy16(dst, &h.dst_addr);
    }

    #[inline(always)]
    fn set_src(h: &mut Ipv6Hdr, a: &[u8; 16]) -> u32 {
        replace16(&mut h.src_addr, a)
    }

    #[inline(always)]
    fn set_dst(h: &mut Ipv6Hdr, a: &[u8; 16]) -> u32 {
        replace16(&mut h.dst_addr, a)
    }

    #[inline(always)]
    fn tag(a: &[u8; 16]) -> [u8; 4] {
        v4(a)
    }

    #[inline(always)]
    fn dst_tag(h: &Ipv6Hdr) -> [u8; 4] {
        Self::tag(&h.dst_addr)
    }

    #[inline(always)]
    fn fib_request(h: &Ipv6Hdr, len: u16, ingress: u32) -> FibParams {
        // SAFETY: all-zero is a valid bpf_fib_lookup.
        let mut p: FibParams = unsafe { zeroed() };
        p.family = AF_INET6;
        p.l4_protocol = h.next_hdr;
        p.__bindgen_anon_1.tot_len = len;
        // Traffic class and flow label, which the kernel's own route
        // lookup hashes over multipath routes.
        p.__bindgen_anon_2.flowinfo =
            u32::from_ne_bytes(h.vcf) & u32::from_ne_bytes([0x0f, 0xff, 0xff, 0xff]);
        let w = |a: &[u8; 16], i: usize| u32::from_ne_bytes(quad(a, 4 * i));
        p.__bindgen_anon_3.ipv6_src = [
            w(&h.src_addr, 0),
            w(&h.src_addr, 1),
            w(&h.src_addr, 2),
            w(&h.src_addr, 3),
        ];
        p.__bindgen_anon_4.ipv6_dst = [
            w(&h.dst_addr, 0),
            w(&h.dst_addr, 1),
            w(&h.dst_addr, 2),
            w(&h.dst_addr, 3),
        ];
        p.ifindex = ingress;
        p
    }

    #[inline(always)]
    fn write_header(
        h: &mut Ipv6Hdr,
        src: &[u8; 16],
        dst: &[u8; 16],
        proto: u8,
        l4_len: u16,
        ttl: u8,
    ) {
        h.vcf = [0x60, 0, 0, 0];
        h.payload_len = l4_len.to_be_bytes();
        h.next_hdr = proto;
        h.hop_limit = ttl;
        h.src_addr = *src;
        h.dst_addr = *dst;
    }

    #[inline(always)]
    fn pseudo_sum(src: &[u8; 16], dst: &[u8; 16], proto: u8, l4_len: u16) -> u32 {
        csum::sum16(src) + csum::sum16(dst) + proto as u32 + l4_len as u32
    }
}

/// Writes `new` over the IPv6 address `at`; returns the checksum change
/// (`csum::change16`).
#[inline(always)]
fn replace16(at: &mut [u8; 16], new: &[u8; 16]) -> u32 {
    let change = csum::change16(at, new);
    copy16(at, new);
    change
}

/// `*to = *from` in four 32-bit words. A plain copy of a `[u8; 16]` is
/// one-byte aligned, which LLVM's BPF backend splits into 16 loads and 16
/// stores, spilled to the stack between them: most of what an IPv6 packet
/// cost more than an IPv4 one. Neither side may be on the stack (the
/// verifier wants aligned stack access): here one is in the packet, whose
/// addresses are only 2-byte aligned behind Ethernet, which BPF allows on
/// the hosts lb runs on (no strict alignment), and the other in a map.
#[inline(always)]
fn copy16(to: &mut [u8; 16], from: &[u8; 16]) {
    let (to, from) = (to.as_mut_ptr() as *mut u32, from.as_ptr() as *const u32);
    for i in 0..4 {
        // SAFETY: 16 bytes on both sides; alignment as above.
        unsafe { *to.add(i) = *from.add(i) };
    }
}
