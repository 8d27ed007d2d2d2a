//! lb's datapath: VIP-to-real NAT with a per-flow state table, one program
//! for each hook (`lb_xdp`, `lb_tc`: tc clsact ingress) from the same code
//! (ctx.rs says what differs), and for each IP family (family.rs): IPv6 is
//! handed by tail call to `lb_xdp6` or `lb_tc6` (maps::JUMP_XDP says why).
//!
//! Every packet ends in exactly one verdict reason (`lb_common::reason`),
//! counted per CPU (a new flow also counts `NEW_FLOW`); the entry point maps a
//! stated rule to its action.
#![no_std]
#![no_main]
// atomic_xadd: see flow::add_active.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "the one atomic add, see flow::add_active")]
// Keys and values handed to map helpers by reference on purpose: they live
// in scratch map memory, and a by-value argument would copy them onto the
// 512-byte BPF stack.
#![expect(clippy::needless_borrows_for_generic_args, reason = "see above")]

mod clock;
mod csum;
mod ctx;
mod fail;
mod family;
mod fast;
#[cfg(feature = "bench")]
mod floor;
mod flow;
mod frag;
mod fwd;
mod icmp;
mod icmp6;
mod maps;
mod nat;
mod parse;
mod passive;
mod refuse;
mod reply;
mod rst;
mod select;
mod stats;
mod sticky;
mod sync;
mod toobig;
mod trace;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use lb_common::{
    DIR_FORWARD, DIR_REVERSE, EV_SYN_RETRANSMIT, EV_SYN_RST, Flow, Hop, PROTO_TCP, PROTO_UDP,
    ST_ESTABLISHED, ST_SYN, SYNC_CREATE, SYNC_REMOVE, SYNC_UPDATE, StickyKey,
    TRACE_WHY_ESTABLISHED, TRACE_WHY_PURGED, TRACE_WHY_REASSIGNED, TRACE_WHY_REPLY, VipKey, reason,
};
use network_types::eth::EthHdr;

use crate::{
    ctx::Pkt,
    fail::Outcome,
    family::{Family, Transport, V4, V6},
    flow::{NewFlow, Scratch},
    maps::{REALS, STANDBY, VIP_ADDRS, VIPS},
    parse::{Ip, L3},
    stats::Side,
    toobig::TooBig,
};

/// (the hook's verdict, reason counted) or the reason of a stated rule.
type Verdict = Result<(u32, u32), u32>;

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    run(&ctx)
}

#[xdp]
pub fn lb_xdp6(ctx: XdpContext) -> u32 {
    // The trace record was begun by lb_xdp, which tail-called this.
    verdict::<XdpContext>(try_run6(&ctx))
}

#[classifier]
pub fn lb_tc(ctx: TcContext) -> i32 {
    run(&ctx) as i32
}

#[classifier]
pub fn lb_tc6(ctx: TcContext) -> i32 {
    verdict::<TcContext>(try_run6(&ctx)) as i32
}

#[inline(always)]
fn run<C: Pkt>(ctx: &C) -> u32 {
    ctx.pull_headers();
    trace::begin(ctx);
    verdict::<C>(try_run(ctx))
}

/// The hook's action for a result, its reason counted.
#[inline(always)]
fn verdict<C: Pkt>(v: Verdict) -> u32 {
    let (action, why) = match v {
        Ok(v) => v,
        Err(why) => (rule_action::<C>(why), why),
    };
    // One value live across the two calls, not two: a second would take
    // a stack slot in the entry's frame, at the bottom of every call chain
    // (the trace build's limit).
    let both = (action as u64) << 32 | why as u64;
    trace::emit(both);
    stats::count(both as u32);
    (both >> 32) as u32
}

/// The action each stated rule takes.
#[inline(always)]
fn rule_action<C: Pkt>(why: u32) -> u32 {
    match why {
        reason::PASS_NOT_IPV4
        | reason::PASS_NOT_OURS
        | reason::PASS_BAD_L2
        | reason::PASS_BAD_IPV4
        | reason::PASS_BAD_IPV6
        | reason::PASS_TTL
        | reason::PASS_FIB
        | reason::PASS_STANDBY => C::PASS,
        _ => C::DROP,
    }
}

#[inline(always)]
fn try_run<C: Pkt>(ctx: &C) -> Verdict {
    if STANDBY.get(0).is_some_and(|s| *s != 0) {
        return Err(reason::PASS_STANDBY);
    }
    match parse::l2(ctx)? {
        Ip::V4(off) => serve::<C, V4>(ctx, off),
        Ip::V6(_) => {
            ctx.tail_v6();
            // The IPv6 program is not in place (the agent sets it at load).
            Err(reason::PASS_NOT_OURS)
        }
    }
}

/// An IPv6 packet, handed over by `try_run` (its headers pulled in, the
/// standby check made).
#[inline(always)]
fn try_run6<C: Pkt>(ctx: &C) -> Verdict {
    match parse::l2(ctx)? {
        Ip::V6(off) => serve::<C, V6>(ctx, off),
        Ip::V4(_) => Err(reason::PASS_NOT_OURS),
    }
}

/// A packet of either family, its header at `off`.
#[inline(always)]
fn serve<C: Pkt, F: Family>(ctx: &C, off: usize) -> Verdict {
    let l3 = L3::<F>::checked(ctx, off)?;
    // SAFETY: bounds checked by the parser.
    let ip = unsafe { &*l3.ip };
    let s = flow::scratch().ok_or(reason::PASS_NOT_OURS)?;
    // The packet's addresses in map form, where the flow key and the VIP
    // lookup read them (see `Family` on addresses and the stack).
    F::addrs(ip, &mut s.key.src_addr, &mut s.key.dst_addr);
    let t = F::walk(ctx, l3.off, ip);
    // A packet of a known flow, either direction, is found by its own
    // 5-tuple in one lookup, before any VIP lookup; most of them are sent
    // on from here (fast.rs).
    // Half-open flows (in EMBRYOS) always take the full path: their next
    // packet may assure them.
    let (mut flow, embryo) = known_flow(ctx, &l3, &t, s);
    if l3.off == EthHdr::LEN
        && !embryo
        && let Some(f) = flow.as_deref_mut()
        && let Some(v) = fast::established::<C, F>(ctx, f, t)
    {
        return Ok(v);
    }
    match flow {
        Some(f) if f.dir == DIR_FORWARD => return to_vip::<C, F>(ctx, l3.off, Some(f), t),
        Some(f) => return from_real::<C, F>(ctx, l3.off, Some(f), t),
        None => {}
    }
    // SAFETY: the value is only tested for presence.
    let for_vip = unsafe { VIP_ADDRS.get(&s.key.dst_addr) }.is_some();
    // Later fragments and ICMP are dispatched from here, not from to_vip
    // and from_real: one BPF call less on their way to fwd::forward keeps
    // the deepest call chain within the verifier's 512-byte stack.
    if t.plain && t.later_fragment() {
        return frag::later::<C, F>(ctx, l3.off, for_vip, t);
    }
    if t.plain && t.proto == F::ICMP && !t.first_fragment() {
        return if F::V6 {
            // Behind an extension header (MLD's hop-by-hop router alert,
            // say), ICMPv6 is never about a flow: the kernel's.
            if t.ext_len != 0 {
                return Err(reason::PASS_NOT_OURS);
            }
            icmp6::serve(ctx, l3.off, for_vip)
        } else if for_vip {
            icmp::to_vip(ctx, l3.off)
        } else {
            icmp::to_client(ctx, l3.off)
        };
    }
    if for_vip {
        to_vip::<C, F>(ctx, l3.off, None, t)
    } else {
        reply::stateless::<C, F>(ctx, l3.off, t)
    }
}

/// The flow entry keyed by the packet's 5-tuple, if lb translates it
/// (`Transport::translated`), and whether it is half-open.
/// The key (its addresses already in `s.key`) and that flag stay in
/// `SCRATCH` for to_vip and from_real, which return before using them for
/// any packet that does not pass these same checks.
#[inline(always)]
fn known_flow<C: Pkt, F: Family>(
    ctx: &C,
    l3: &L3<F>,
    t: &Transport,
    s: &mut Scratch,
) -> (Option<&'static mut Flow>, bool) {
    s.embryo = false;
    if !t.translated() {
        return (None, false);
    }
    let Ok(l4) = parse::l4(ctx, l3, t) else {
        return (None, false);
    };
    s.key.src_port_be = u16::from_ne_bytes(l4.sport);
    s.key.dst_port_be = u16::from_ne_bytes(l4.dport);
    s.key.proto = l4.proto;
    s.key._pad = [0; 3];
    match flow::find(&s.key) {
        // SAFETY: map values stay valid for the program run; concurrent
        // writers of the same flow only race on counters.
        Some((f, embryo)) => {
            s.embryo = embryo;
            (Some(unsafe { &mut *f }), embryo)
        }
        None => (None, false),
    }
}

/// A packet to a VIP address: a flow's next packet (`flow`, its forward
/// entry), or a new flow. This and `from_real` are BPF functions of their
/// own (not inlined): each gets a stack frame, and only one of them is live
/// at a time, which keeps the program under the verifier's 512-byte stack.
#[inline(never)]
fn to_vip<C: Pkt, F: Family>(
    ctx: &C,
    l3_off: usize,
    flow: Option<&mut Flow>,
    t: Transport,
) -> Verdict {
    trace::dir(DIR_FORWARD);
    let l3 = &L3::<F>::at(ctx, l3_off)?;
    // SAFETY: bounds checked by the parser.
    let ip = unsafe { &*l3.ip };
    if !t.plain {
        return Err(F::NOT_PLAIN);
    }
    // Later fragments and whole ICMP messages never get here (serve); a
    // fragmented ICMP message to a VIP is not one lb answers.
    if t.proto == F::ICMP {
        return Err(reason::DROP_ICMP_VIP);
    }
    if t.proto != PROTO_TCP && t.proto != PROTO_UDP {
        return Err(reason::DROP_NO_VIP_PORT);
    }
    if F::ttl(ip) <= 1 {
        return Err(reason::PASS_TTL);
    }
    // The packet's key (written by known_flow), facts and destination live
    // in per-CPU scratch map memory, not on the 512-byte stack (see
    // maps::SCRATCH).
    let s = flow::scratch().ok_or(reason::PASS_NOT_OURS)?;
    trace::ports();
    // Read back from here on, and the headers parsed again for the
    // rewrite: kept across the calls below, `t` and `L4` would take stack
    // under the deepest call chain.
    s.t = t;
    s.facts = parse::l4(ctx, l3, &t)
        .map_err(|_| reason::DROP_BAD_L4)?
        .facts();
    let flags = s.facts.flags;
    let now = clock::now();
    let fresh_syn = flags.syn && !flags.ack;
    // Where the packet goes: an existing flow's real, unless its fail action
    // just removed the flow, or a new flow's.
    s.n = NewFlow {
        real_addr: [0; 16],
        real_port_be: 0,
        vip_id: 0,
        vip_flags: 0,
        real_id: u32::MAX,
        now,
    };
    // Where the flow's next hop is cached: its forward entry (set below), or
    // for a new flow a cleared scratch slot (its first packet asks the FIB).
    let mut hop: *mut Hop = core::ptr::null_mut();
    // Only a fresh SYN can reuse a finished flow's 5-tuple: every other
    // packet skips the call.
    let flow = flow.and_then(|f| (!(fresh_syn && starts_over(s, f))).then_some(f));
    if let Some(f) = flow {
        let outcome = fail::apply(s, f, now)?;
        if matches!(outcome, Outcome::Purged) && sync::wanted() {
            sync::emit(SYNC_REMOVE, &s.key, f.real_id, f.state);
        }
        match outcome {
            Outcome::Purged if s.facts.proto == PROTO_TCP && !fresh_syn => {
                trace::why(TRACE_WHY_PURGED);
                trace::flow(f.vip_id, f.real_id, f.state, 0);
                return rst::to_client::<C, F>(ctx, l3_off, &s.key, &s.facts)
                    .map(|a| (a, reason::PURGE_RST));
            }
            // A UDP datagram, or a fresh SYN, of a purged flow starts anew.
            Outcome::Purged => {}
            Outcome::Keep | Outcome::Reassigned => {
                if fresh_syn && f.state == ST_SYN && f.packets > 0 {
                    syn_retransmitted(s, f, now);
                }
                let state = f.state;
                flow::account(f, &s.facts, now);
                trace::why(if matches!(outcome, Outcome::Reassigned) {
                    TRACE_WHY_REASSIGNED
                } else {
                    TRACE_WHY_ESTABLISHED
                });
                trace::flow(f.vip_id, f.real_id, state, f.state);
                if (state != f.state || matches!(outcome, Outcome::Reassigned)) && sync::wanted() {
                    sync::emit(SYNC_UPDATE, &s.key, f.real_id, f.state);
                }
                // The client's FIN or RST takes the flow out of the active
                // count: one place only, this CPU's forward path, because a
                // test-and-clear of the flag cannot be atomic here (no
                // BPF_FETCH without -mcpu=v3) and the server's FIN, seen on
                // another CPU at the same moment, would count it out twice.
                // A flow the server alone ends is counted out when the agent
                // expires it.
                if flags.fin || flags.rst {
                    flow::uncount(f);
                }
                (s.n.real_addr, s.n.real_port_be, s.n.vip_id, s.n.real_id) =
                    (f.nat_addr, f.nat_port_be, f.vip_id, f.real_id);
                hop = &mut f.hop;
                // The client's handshake ACK assures a half-open TCP flow.
                if s.embryo && f.state == ST_ESTABLISHED {
                    s.build.key = s.key.reverse(f.nat_addr, f.nat_port_be);
                    // `f` is gone from EMBRYOS once this succeeds.
                    if let Some(moved) = flow::assure(&s.key, &s.build.key, true) {
                        // SAFETY: a FLOWS value, valid for the program run.
                        hop = unsafe { &mut (*moved).hop };
                    }
                }
            }
        }
    }
    let is_new = s.n.real_id == u32::MAX;
    if is_new && let Err(why) = new_flow(s) {
        return refuse::new_flow::<C, F>(ctx, l3_off, s, why);
    }
    if hop.is_null() {
        s.hop = Hop::default();
        hop = &mut s.hop;
    }
    if s.t.first_fragment() {
        let (real, t) = (s.n.real_addr, s.t);
        frag::remember(s, &t, real, DIR_FORWARD, now);
    }
    stats::count_flow(
        s.n.vip_id,
        s.n.real_id,
        Side::In,
        s.facts.ip_len as u64,
        is_new,
    );
    let l3 = &L3::<F>::at(ctx, l3_off)?;
    let l4 = parse::l4(ctx, l3, &s.t).map_err(|_| reason::DROP_BAD_L4)?;
    trace::rewrote(true, &s.n.real_addr, s.n.real_port_be.to_ne_bytes());
    nat::dnat::<C, F>(
        ctx,
        l3.ip,
        &l4,
        &s.n.real_addr,
        s.n.real_port_be.to_ne_bytes(),
    );
    // SAFETY: `hop` points into the flow's map value or this CPU's scratch
    // slot, both valid for the program run.
    let hop = unsafe { &mut *hop };
    match fwd::forward::<C, F>(ctx, l3_off, hop, s.n.real_id) {
        Err(reason::ICMP_FRAG_NEEDED) => {
            s.toobig = TooBig {
                orig_addr: s.key.dst_addr,
                orig_port: s.facts.dport,
                dst: true,
                from: s.key.dst_addr,
                mtu: hop.mtu,
                unreachable: false,
            };
            toobig::answer::<C, F>(ctx, l3_off, &s.toobig, s.t)
        }
        r => r.map(|action| (action, reason::FORWARD)),
    }
}

/// Whether the client's fresh SYN on an existing flow starts a new one: the
/// connection is over (`fin` or `closed` either way).
/// The client reused its port, say out of TIME_WAIT, and the new
/// connection gets a fresh pick and fresh counters (`TUPLE_REUSE`); the old
/// flow is removed (both entries, its active count) and its HA peer told.
/// A SYN on an established flow keeps its real (a retransmission, or a
/// client that lost state: the real answers it).
/// A BPF function of its own: inlined, its locals would grow to_vip's
/// frame past the 512-byte stack on the to_vip -> new_flow -> select chain.
#[inline(never)]
fn starts_over(s: &mut Scratch, f: &mut Flow) -> bool {
    if !flow::finished(&s.key, f, s.embryo) {
        return false;
    }
    stats::count(reason::TUPLE_REUSE);
    flow::uncount(f);
    if sync::wanted() {
        sync::emit(SYNC_REMOVE, &s.key, f.real_id, f.state);
    }
    flow::remove(&s.key, f, s.embryo);
    true
}

/// A new flow for the packet in `s`: its real (sticky, else the farm's
/// algorithm) and both table entries. A BPF function of its own (stack).
#[inline(never)]
fn new_flow(s: &mut Scratch) -> Result<(), u32> {
    let (key, p) = (&s.key, &s.facts);
    s.build.vip_key = VipKey {
        addr: key.dst_addr,
        port_be: key.dst_port_be,
        proto: p.proto,
        _pad: 0,
    };
    // SAFETY: read-only use of the value.
    let vip = unsafe { VIPS.get(&s.build.vip_key) }.ok_or(reason::DROP_NO_VIP_PORT)?;
    if p.flags.rst {
        return Err(reason::DROP_RST_NO_FLOW);
    }
    s.n.vip_flags = vip.flags;
    let now = s.n.now;
    s.build.sticky_key = StickyKey {
        vip_id: vip.vip_id,
        addr: key.src_addr,
    };
    let real_id = sticky::lookup(vip, &mut s.build.sticky_key, now)
        .or_else(|| select::pick(vip.farm_id, key))
        .ok_or(reason::DROP_NO_REAL)?;
    let real = REALS.get(real_id).ok_or(reason::DROP_NO_REAL)?;
    s.n.real_addr = real.addr;
    s.n.real_port_be = real.port_be;
    s.n.vip_id = vip.vip_id;
    s.n.real_id = real_id;
    flow::create(&s.key, &s.n, &s.facts, &mut s.build).ok_or(reason::DROP_TABLE_FULL)?;
    trace::created(&s.n, s.build.flow.state);
    if sync::wanted() {
        sync::emit(SYNC_CREATE, &s.key, real_id, s.build.flow.state);
    }
    sticky::remember(vip, &s.build.sticky_key, real_id, now);
    stats::count(reason::NEW_FLOW);
    Ok(())
}

/// A client's SYN again. If the real has not answered at all, a failed
/// connection attempt for passive health. If the flow's reverse entry is
/// gone (a half-open flow's two entries age out of `EMBRYOS` one by one
/// under a flood), it is put back: without it the real's SYN-ACK would not
/// be translated, and every retransmission would meet the same fate.
/// A BPF function of its own (to_vip's stack).
#[inline(never)]
fn syn_retransmitted(s: &mut Scratch, f: &Flow, now: u64) {
    let rev = s.key.reverse(f.nat_addr, f.nat_port_be);
    match flow::get(&rev, s.embryo) {
        // SAFETY: read-only use of the value.
        Some(r) if unsafe { (*r).packets } == 0 => {
            passive::conn_failed(EV_SYN_RETRANSMIT, f.real_id, now);
        }
        Some(_) => {}
        None => {
            s.build.flow = *f;
            s.build.flow.packets = 0;
            s.build.flow.bytes = 0;
            let _ = flow::insert_reverse(&s.key, &mut s.build, s.embryo);
        }
    }
}

/// Anything else: a real's reply to translate back (`flow`, its reverse
/// entry), or not ours.
#[inline(never)]
fn from_real<C: Pkt, F: Family>(
    ctx: &C,
    l3_off: usize,
    flow: Option<&mut Flow>,
    t: Transport,
) -> Verdict {
    let l3 = &L3::<F>::at(ctx, l3_off)?;
    // SAFETY: bounds checked by the parser.
    let ip = unsafe { &*l3.ip };
    // Replies we translate are plain TCP/UDP (later fragments and ICMP
    // errors are dispatched by serve); anything else is not ours.
    if !t.translated() {
        return Err(reason::PASS_NOT_OURS);
    }
    let l4 = parse::l4(ctx, l3, &t).map_err(|_| reason::PASS_NOT_OURS)?;
    let f = flow.ok_or(reason::PASS_NOT_OURS)?;
    if f.dir != DIR_REVERSE {
        return Err(reason::PASS_NOT_OURS);
    }
    trace::dir(DIR_REVERSE);
    trace::ports();
    if F::ttl(ip) <= 1 {
        return Err(reason::PASS_TTL);
    }
    let p = l4.facts();
    let flags = p.flags;
    let now = clock::now();
    // The real's first answer to a SYN tells passive health how it went.
    if l4.proto == PROTO_TCP && f.state == ST_SYN && f.packets == 0 {
        if flags.rst {
            passive::conn_failed(EV_SYN_RST, f.real_id, now);
        } else if flags.syn && flags.ack {
            passive::conn_ok(f.real_id);
        }
    }
    let state = f.state;
    flow::account(f, &p, now);
    trace::why(TRACE_WHY_REPLY);
    trace::flow(f.vip_id, f.real_id, state, f.state);
    stats::count_flow(f.vip_id, f.real_id, Side::Out, l4.ip_len as u64, false);
    let s = flow::scratch().ok_or(reason::PASS_NOT_OURS)?;
    // What the reply becomes (from VIP:port), before `f` may move below;
    // what it was (from the real) is the packet's own key, `s.key`.
    s.addr = f.nat_addr;
    let vip_port = f.nat_port_be.to_ne_bytes();
    let (vip_id, real_id) = (f.vip_id, f.real_id);
    let mut hop: *mut Hop = &mut f.hop;
    // The real's first answer assures a half-open UDP flow. Its forward
    // key: client -> VIP.
    if s.embryo && l4.proto == PROTO_UDP {
        let k = &mut s.build.key;
        k.src_addr = s.key.dst_addr;
        k.dst_addr = s.addr;
        k.src_port_be = u16::from_ne_bytes(p.dport);
        k.dst_port_be = u16::from_ne_bytes(vip_port);
        k.proto = PROTO_UDP;
        k._pad = [0; 3];
        // `f` is gone from EMBRYOS once this succeeds.
        if let Some(moved) = flow::assure(&s.build.key, &s.key, false) {
            // SAFETY: a FLOWS value, valid for the program run.
            hop = unsafe { &mut (*moved).hop };
        }
    }
    if t.first_fragment() {
        (s.n.vip_id, s.n.real_id) = (vip_id, real_id);
        let vip = s.addr;
        frag::remember(s, &t, vip, DIR_REVERSE, now);
    }
    trace::rewrote(false, &s.addr, vip_port);
    nat::snat::<C, F>(ctx, l3.ip, &l4, &s.addr, vip_port);
    // SAFETY: `hop` points into the flow's map value, valid for the run.
    reply::send::<C, F>(
        ctx,
        l3_off,
        s,
        unsafe { &mut *hop },
        p.sport,
        t,
        reason::REVERSE,
    )
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
