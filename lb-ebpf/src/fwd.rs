//! Forwarding after the rewrite: the kernel's FIB picks the next hop, the
//! frame leaves by XDP_TX (same interface) or XDP_REDIRECT (devmap). When the
//! FIB has no resolved neighbour, or the route leaves by an interface lb does
//! not own, the rewritten packet goes to the kernel, which forwards it (and
//! resolves ARP) itself.
//!
//! A frame that arrived 802.1Q-tagged leaves tagged: the FIB names the VLAN
//! device the route leaves by, `VLANS` the interface under it and its VLAN
//! id, and the frame's tag gets that id (its priority bits kept). A tagged
//! frame whose route leaves untagged, or by a VLAN lb does not know, goes to
//! the kernel. Tagged frames ask the FIB at every packet (the cache holds
//! untagged hops).
//!
//! A flow's packets reuse the answer its direction cached (`lb_common::Hop`,
//! its validity rules there): `bpf_fib_lookup` is most of the cost of a
//! forwarded packet, and a flow's next hop rarely changes.
use aya_ebpf::{bindings::bpf_fib_lookup as FibParams, helpers::generated::bpf_fib_lookup};
use core::mem::size_of;
use lb_common::{HOP_AGE_SHIFT, HOP_MAX_AGE, HOP_PEER, Hop, reason};
use network_types::{eth::EthHdr, vlan::VlanHdr};

use crate::{
    clock,
    ctx::Pkt,
    family::Family,
    maps::{HOP_GEN, PEER_PORTS, REAL_HOPS, TX_PORTS, VLANS},
    parse::{L3, ptr_at},
};

pub const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
/// Not forwarded: for this host (local), or broadcast, multicast...
const BPF_FIB_LKUP_RET_NOT_FWDED: i64 = 4;
const BPF_FIB_LKUP_RET_FRAG_NEEDED: i64 = 8;

/// Returns the XDP action, or `Err(reason)` to hand the packet to the kernel;
/// `Err(ICMP_FRAG_NEEDED)` when it has DF set and exceeds the route's MTU,
/// which is then in `hop.mtu` (`hop.ifindex` 0: nothing cached).
/// `hop` is the flow direction's cached next hop, used if valid and
/// refreshed if not (a new flow's first packet passes a cleared one in
/// scratch memory: the BPF stack has no room for it). A packet to a real
/// names it in `real` (else `NO_REAL`): an empty `hop` then starts from
/// this CPU's last hop to that real (`maps::REAL_HOPS`).
#[inline(never)]
pub fn forward<C: Pkt, F: Family>(
    ctx: &C,
    l3_off: usize,
    hop: &mut Hop,
    real: u32,
) -> Result<u32, u32> {
    if l3_off != EthHdr::LEN {
        return tagged::<C, F>(ctx, l3_off);
    }
    let l3 = L3::<F>::at(ctx, l3_off)?;
    // SAFETY: the IP header was bounds checked by the parser.
    let ip = unsafe { &mut *l3.ip };
    // The clock is read here, not passed in: BPF calls take five
    // arguments at most, and the result's return slot counts as one.
    let (generation, at) = (generation(), age_stamp(clock::now()));
    let len = ctx.mtu_len(F::tot_len(ip));
    let dst = F::dst_tag(ip);
    if !usable(hop, dst, len, generation, at) {
        let ingress = ctx.ifindex();
        match REAL_HOPS.get_ptr_mut(real) {
            // SAFETY: this CPU's slot, valid for the program run.
            Some(r) => unsafe {
                if (*r).ingress == ingress && usable(&(*r).hop, dst, len, generation, at) {
                    *hop = (*r).hop;
                } else {
                    lookup::<C, F>(ctx, l3_off, hop, generation, at)?;
                    (*r).hop = *hop;
                    (*r).ingress = ingress;
                }
            },
            None => lookup::<C, F>(ctx, l3_off, hop, generation, at)?,
        }
    }
    Ok(send(ctx, &l3, hop))
}

/// `forward`'s `real` for a packet to no real (a reply, an ICMP error).
pub const NO_REAL: u32 = u32::MAX;

/// A `REAL_HOPS` slot: the hop, and the interface the packet that looked
/// it up arrived on (policy routing may choose by it).
pub struct RealHop {
    pub ingress: u32,
    pub hop: Hop,
}

/// `HOP_GEN[0]`: the generation a cached hop must carry.
#[inline(always)]
pub fn generation() -> u32 {
    HOP_GEN.get(0).copied().unwrap_or(0)
}

/// `now` in the units of `Hop::at`.
#[inline(always)]
pub fn age_stamp(now: u64) -> u32 {
    (now >> HOP_AGE_SHIFT) as u32
}

/// Whether `hop` may carry a packet to `dst` (`Family::tag`) of IP
/// length `len` (`Pkt::mtu_len`): the rules in `lb_common::Hop`.
#[inline(always)]
pub fn usable(hop: &Hop, dst: [u8; 4], len: u16, generation: u32, at: u32) -> bool {
    hop.ifindex != 0
        && hop.dst == dst
        && hop.generation == generation
        && at.wrapping_sub(hop.at) < HOP_MAX_AGE
        && len <= hop.mtu
}

/// Sends the rewritten packet by a usable `hop`, untagged frames only:
/// TTL (hop limit) − 1, the hop's MACs, then out (`Pkt::tx`,
/// `Pkt::redirect`).
#[inline(always)]
pub fn send<C: Pkt, F: Family>(ctx: &C, l3: &L3<F>, hop: &Hop) -> u32 {
    // SAFETY: the IP header was bounds checked by the parser.
    let ip = unsafe { &mut *l3.ip };
    // We route, so we decrement the TTL (callers refused TTL <= 1).
    F::dec_ttl(ip);
    // SAFETY: the Ethernet header was bounds checked by the parser.
    unsafe {
        (*l3.eth).dst_addr = hop.dmac;
        (*l3.eth).src_addr = hop.smac;
    }
    if hop.ifindex == ctx.ifindex() {
        return ctx.tx();
    }
    // The port was checked at the lookup; should it vanish meanwhile, the
    // kernel forwards.
    if hop.flags & HOP_PEER != 0 {
        return ctx.redirect_peer(hop.ifindex);
    }
    ctx.redirect(hop.ifindex)
}

/// Sends a tagged frame out of the VLAN the FIB routes it by (module doc).
#[inline(always)]
fn tagged<C: Pkt, F: Family>(ctx: &C, l3_off: usize) -> Result<u32, u32> {
    let l3 = L3::<F>::at(ctx, l3_off)?;
    let ingress = ctx.ifindex();
    // SAFETY: the IP header was bounds checked by the parser.
    let ip = unsafe { &mut *l3.ip };
    let mut p = F::fib_request(ip, ctx.mtu_len(F::tot_len(ip)), ingress);
    if fib_lookup(ctx, &mut p) != BPF_FIB_LKUP_RET_SUCCESS {
        return Err(reason::PASS_FIB);
    }
    // SAFETY: read-only use of the value.
    let port = unsafe { VLANS.get(&p.ifindex) }.ok_or(reason::PASS_FIB)?;
    let out = port.parent_ifindex;
    if out != ingress && TX_PORTS.get_ifindex(out).is_none() {
        return Err(reason::PASS_FIB);
    }
    let vlan: *mut VlanHdr = ptr_at(ctx, EthHdr::LEN).map_err(|_| reason::PASS_FIB)?;
    let vid = port.vid.to_be_bytes();
    // SAFETY: bounds checked by ptr_at; the Ethernet header by the parser.
    unsafe {
        let tci = &mut (*vlan).tci;
        *tci = [(tci[0] & 0xf0) | (vid[0] & 0x0f), vid[1]];
        (*l3.eth).dst_addr = p.dmac;
        (*l3.eth).src_addr = p.smac;
    }
    F::dec_ttl(ip);
    if out == ingress {
        return Ok(ctx.tx());
    }
    Ok(ctx.redirect(out))
}

/// Asks the FIB for the packet's next hop and writes it to `hop` (cleared
/// when there is none we can use). Inlined: as a BPF function of its own its
/// frame would sit on top of `forward`'s, past the 512-byte stack.
#[inline(always)]
fn lookup<C: Pkt, F: Family>(
    ctx: &C,
    l3_off: usize,
    hop: &mut Hop,
    generation: u32,
    at: u32,
) -> Result<(), u32> {
    let l3 = L3::<F>::at(ctx, l3_off)?;
    let ingress = ctx.ifindex();
    // SAFETY: the IP header was bounds checked by the parser.
    let ip = unsafe { &*l3.ip };
    let mut p = F::fib_request(ip, ctx.mtu_len(F::tot_len(ip)), ingress);
    let rc = fib_lookup(ctx, &mut p);
    let out = p.ifindex;
    if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED && F::dont_fragment(ip) {
        // Too big for the route, not to be fragmented: the caller answers
        // (toobig.rs) with the MTU the helper returned in the same field.
        hop.ifindex = 0;
        // SAFETY: a plain u16 in the union, written by the helper.
        hop.mtu = unsafe { p.__bindgen_anon_1.mtu_result };
        return Err(reason::ICMP_FRAG_NEEDED);
    }
    if rc != BPF_FIB_LKUP_RET_SUCCESS || (out != ingress && TX_PORTS.get_ifindex(out).is_none()) {
        hop.ifindex = 0;
        return Err(reason::PASS_FIB);
    }
    hop.ifindex = out;
    hop.dst = F::dst_tag(ip);
    hop.dmac = p.dmac;
    hop.smac = p.smac;
    // SAFETY: presence only; the value is not read.
    hop.flags = if out != ingress && unsafe { PEER_PORTS.get(&out) }.is_some() {
        HOP_PEER
    } else {
        0
    };
    // On success the helper returns the route's MTU in the same field
    // (`mtu_result`); a kernel that left our length there just makes larger
    // packets ask again.
    // SAFETY: a plain u16 in the union, written by us or the helper.
    hop.mtu = unsafe { p.__bindgen_anon_1.mtu_result };
    hop.generation = generation;
    hop.at = at;
    Ok(())
}

/// Whether the packet at `l3_off` is addressed to this host (or is not
/// one the kernel would forward). A BPF function of its own: its request
/// leaves the stack before the caller goes on to `forward`.
#[inline(never)]
pub fn for_this_host<C: Pkt, F: Family>(ctx: &C, l3_off: usize) -> bool {
    let Ok(l3) = L3::<F>::at(ctx, l3_off) else {
        return false;
    };
    // SAFETY: the IP header was bounds checked by the parser.
    let ip = unsafe { &*l3.ip };
    let mut p = F::fib_request(ip, ctx.mtu_len(F::tot_len(ip)), ctx.ifindex());
    fib_lookup(ctx, &mut p) == BPF_FIB_LKUP_RET_NOT_FWDED
}

/// `bpf_fib_lookup` on `p`: the helper's return code.
#[inline(always)]
pub fn fib_lookup(ctx: &impl Pkt, p: &mut FibParams) -> i64 {
    // SAFETY: p is a valid, writable bpf_fib_lookup of the size passed.
    unsafe { bpf_fib_lookup(ctx.raw(), p, size_of::<FibParams>() as i32, 0) }
}
