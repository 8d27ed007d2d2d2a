//! `lb trace`: what the datapath decided for each packet, recorded only by
//! the trace build (`--features trace`), which the agent swaps in while an
//! operator traces and out again when the trace ends. In the production
//! build every function here is empty and inlined away: the object carries
//! no trace code, map or log statement.
//!
//! The record is built in a per-CPU map as the packet goes (what arrived,
//! the flow's direction, why it went where it went, its states, what NAT
//! made of it) and sent, if it matches the agent's filter (`TRACE_FILTER`),
//! by one aya-log statement at the verdict.
#[cfg(feature = "trace")]
pub use on::*;

#[cfg(not(feature = "trace"))]
pub use off::*;

#[cfg(feature = "trace")]
mod on {
    use aya_ebpf::{
        helpers::bpf_ktime_get_ns,
        macros::map,
        maps::{Array, PerCpuArray},
    };
    use lb_common::{
        DIR_FORWARD, DIR_REVERSE, FlowKey, TRACE_DIR_NONE, TRACE_WHY_ESTABLISHED, TRACE_WHY_NONE,
        TRACE_WHY_REPLY, TRACE_WHY_STICKY, TraceEndpoint, TraceFilter, TraceRecord,
    };

    /// The record of the packet this CPU runs.
    #[map]
    static TRACE: PerCpuArray<TraceRecord> = PerCpuArray::with_max_entries(1, 0);

    /// Written by the agent when it swaps this build in.
    #[map]
    static TRACE_FILTER: Array<TraceFilter> = Array::with_max_entries(1, 0);

    #[inline(always)]
    fn rec() -> Option<&'static mut TraceRecord> {
        // SAFETY: this CPU's slot, valid for the program run.
        TRACE.get_ptr_mut(0).map(|p| unsafe { &mut *p })
    }

    /// A packet arrives: a fresh record. This and every other recording
    /// function is a BPF function of its own: inlined, their map lookups
    /// would grow the frames of the datapath's deepest call chain past the
    /// verifier's 512 bytes.
    #[inline(never)]
    pub fn begin<C: crate::ctx::Pkt>(ctx: &C) {
        let Some(r) = rec() else { return };
        let (ifindex, tc) = (ctx.ifindex(), C::TC);
        r.received = FlowKey::default();
        r.sent = FlowKey::default();
        r.ifindex = ifindex;
        r.vip_id = u32::MAX;
        r.real_id = u32::MAX;
        r.farm_id = u32::MAX;
        r.tc = tc as u8;
        r.family = 0;
        r.dir = TRACE_DIR_NONE;
        r.why = TRACE_WHY_NONE;
        r.alg = 0;
        r.state_before = 0;
        r.state_after = 0;
        r.rewritten = 0;
        // The flow key's ports are recorded once the datapath has read
        // them (`ports`); a packet whose ports it never reads must not show
        // the last packet's.
        if let Some(s) = crate::flow::scratch() {
            s.key.src_port_be = 0;
            s.key.dst_port_be = 0;
            s.key.proto = 0;
        }
        addrs(ctx, r);
    }

    /// The packet's addresses, read here rather than where the datapath
    /// parses them: a call there would grow the frame at the bottom of every
    /// call chain. One 802.1Q tag is skipped, as parse.rs does.
    #[inline(always)]
    fn addrs<C: crate::ctx::Pkt>(ctx: &C, r: &mut TraceRecord) -> Option<()> {
        let (data, end) = (ctx.data(), ctx.data_end());
        let at = |off: usize, len: usize| (data + off + len <= end).then_some(data + off);
        // SAFETY: each read is bounds-checked by `at`.
        let be16 = |p: usize| unsafe { u16::from_be(*(p as *const u16)) };
        let mut l3 = 14;
        let mut ty = be16(at(12, 2)?);
        if ty == 0x8100 {
            ty = be16(at(16, 2)?);
            l3 = 18;
        }
        match ty {
            0x0800 => {
                let ip = at(l3, 20)?;
                for i in 0..4 {
                    // SAFETY: within the 20 bytes checked.
                    unsafe {
                        r.received.src_addr[12 + i] = *((ip + 12 + i) as *const u8);
                        r.received.dst_addr[12 + i] = *((ip + 16 + i) as *const u8);
                    }
                }
                for a in [&mut r.received.src_addr, &mut r.received.dst_addr] {
                    a[10] = 0xff;
                    a[11] = 0xff;
                }
                r.family = 4;
            }
            0x86dd => {
                let ip = at(l3, 40)?;
                for i in 0..16 {
                    // SAFETY: within the 40 bytes checked.
                    unsafe {
                        r.received.src_addr[i] = *((ip + 8 + i) as *const u8);
                        r.received.dst_addr[i] = *((ip + 24 + i) as *const u8);
                    }
                }
                r.family = 6;
            }
            _ => {}
        }
        Some(())
    }

    /// The packet's ports and protocol, from its flow key in scratch once
    /// read (by to_vip and from_real: recorded in serve, they would grow the
    /// frame at the bottom of every call chain). The scratch lookup is here,
    /// so the production build pays nothing for it.
    #[inline(never)]
    pub fn ports() {
        let (Some(r), Some(s)) = (rec(), crate::flow::scratch()) else {
            return;
        };
        let key = &s.key;
        r.received.src_port_be = key.src_port_be;
        r.received.dst_port_be = key.dst_port_be;
        r.received.proto = key.proto;
    }

    /// A packet of flow `f` the fast path (fast.rs) sends on: everything
    /// in one call, which keeps that function's frame as it is.
    #[inline(never)]
    pub fn fast(f: &lb_common::Flow, sport: [u8; 2], dport: [u8; 2]) {
        let Some(r) = rec() else { return };
        r.received.src_port_be = u16::from_ne_bytes(sport);
        r.received.dst_port_be = u16::from_ne_bytes(dport);
        r.received.proto = if f.state == lb_common::ST_UDP {
            lb_common::PROTO_UDP
        } else {
            lb_common::PROTO_TCP
        };
        r.dir = f.dir;
        r.why = if f.dir == DIR_FORWARD {
            TRACE_WHY_ESTABLISHED
        } else {
            TRACE_WHY_REPLY
        };
        (r.vip_id, r.real_id) = (f.vip_id, f.real_id);
        (r.state_before, r.state_after) = (f.state, f.state);
        r.sent = r.received;
        if f.dir == DIR_FORWARD {
            r.sent.dst_addr = f.nat_addr;
            r.sent.dst_port_be = f.nat_port_be;
        } else {
            r.sent.src_addr = f.nat_addr;
            r.sent.src_port_be = f.nat_port_be;
        }
        r.rewritten = 1;
    }

    #[inline(never)]
    pub fn dir(dir: u8) {
        if let Some(r) = rec() {
            r.dir = dir;
        }
    }

    #[inline(never)]
    pub fn why(why: u8) {
        if let Some(r) = rec() {
            r.why = why;
        }
    }

    /// A new flow's farm and its algorithm (select.rs).
    #[inline(never)]
    pub fn picked_by(farm_id: u32, alg: u32) {
        if let Some(r) = rec() {
            r.farm_id = farm_id;
            r.alg = alg as u8;
        }
    }

    /// The packet's flow: its VIP and real, and its state before and after
    /// the packet.
    #[inline(never)]
    pub fn flow(vip_id: u32, real_id: u32, before: u8, after: u8) {
        if let Some(r) = rec() {
            r.vip_id = vip_id;
            r.real_id = real_id;
            r.state_before = before;
            r.state_after = after;
        }
    }

    /// A new flow was created: its VIP, real and first state. A real picked
    /// by the farm's algorithm was recorded as such by select.rs; one found
    /// otherwise is the client's sticky real.
    #[inline(never)]
    pub fn created(n: &crate::flow::NewFlow, state: u8) {
        if let Some(r) = rec() {
            r.vip_id = n.vip_id;
            r.real_id = n.real_id;
            r.state_after = state;
            if r.why == TRACE_WHY_NONE {
                r.why = TRACE_WHY_STICKY;
            }
        }
    }

    /// NAT rewrote the destination (`dst`, to a real) or the source (to the
    /// VIP) to `addr`:`port`.
    #[inline(never)]
    pub fn rewrote(dst: bool, addr: &[u8; 16], port: [u8; 2]) {
        let Some(r) = rec() else { return };
        r.sent = r.received;
        if dst {
            r.sent.dst_addr = *addr;
            r.sent.dst_port_be = u16::from_ne_bytes(port);
        } else {
            r.sent.src_addr = *addr;
            r.sent.src_port_be = u16::from_ne_bytes(port);
        }
        r.rewritten = 1;
    }

    /// The verdict (`action << 32 | reason`): the record goes to the agent
    /// if it matches the filter.
    #[inline(never)]
    pub fn emit(verdict: u64) {
        let (action, reason) = ((verdict >> 32) as u32, verdict as u32);
        let Some(r) = rec() else { return };
        let Some(f) = TRACE_FILTER.get(0) else { return };
        r.action = action;
        r.reason = reason;
        if !matches(f, r) {
            return;
        }
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        r.ktime_ns = unsafe { bpf_ktime_get_ns() };
        // SAFETY: TraceRecord is plain integers with no implicit padding.
        let bytes = unsafe { &*(r as *const TraceRecord as *const [u8; size_of::<TraceRecord>()]) };
        // A slice: an array argument would be copied onto the stack.
        aya_log_ebpf::info!(&(), "{:x}", bytes.as_slice());
    }

    #[inline(always)]
    fn matches(f: &TraceFilter, r: &TraceRecord) -> bool {
        if f.on == 0 {
            return false;
        }
        if f.reasons != 0 && (r.reason >= 64 || f.reasons & (1u64 << r.reason) == 0) {
            return false;
        }
        let (i, o) = (&r.received, &r.sent);
        let rw = r.rewritten != 0;
        match r.dir {
            DIR_FORWARD => {
                at(&f.client, &i.src_addr, i.src_port_be)
                    && at(&f.vip, &i.dst_addr, i.dst_port_be)
                    && (f.real.set == 0 || (rw && at(&f.real, &o.dst_addr, o.dst_port_be)))
            }
            DIR_REVERSE => {
                at(&f.real, &i.src_addr, i.src_port_be)
                    && at(&f.client, &i.dst_addr, i.dst_port_be)
                    && (f.vip.set == 0 || (rw && at(&f.vip, &o.src_addr, o.src_port_be)))
            }
            _ => either(&f.client, i) && either(&f.vip, i) && either(&f.real, i),
        }
    }

    #[inline(always)]
    fn either(e: &TraceEndpoint, k: &FlowKey) -> bool {
        e.set == 0 || at(e, &k.src_addr, k.src_port_be) || at(e, &k.dst_addr, k.dst_port_be)
    }

    /// Whether `e` (if set) is `addr`:`port`.
    #[inline(always)]
    fn at(e: &TraceEndpoint, addr: &[u8; 16], port_be: u16) -> bool {
        if e.set == 0 {
            return true;
        }
        if e.set == 2 && e.port_be != port_be {
            return false;
        }
        // Byte by byte: an array `==` may become a memcmp call, which BPF
        // has not.
        let mut diff = 0u8;
        for (a, b) in e.addr.iter().zip(addr) {
            diff |= a ^ b;
        }
        diff == 0
    }
}

#[cfg(not(feature = "trace"))]
mod off {

    #[inline(always)]
    pub fn begin<C: crate::ctx::Pkt>(_ctx: &C) {}
    #[inline(always)]
    pub fn ports() {}
    #[inline(always)]
    pub fn fast(_f: &lb_common::Flow, _sport: [u8; 2], _dport: [u8; 2]) {}
    #[inline(always)]
    pub fn dir(_dir: u8) {}
    #[inline(always)]
    pub fn why(_why: u8) {}
    #[inline(always)]
    pub fn picked_by(_farm_id: u32, _alg: u32) {}
    #[inline(always)]
    pub fn flow(_vip_id: u32, _real_id: u32, _before: u8, _after: u8) {}
    #[inline(always)]
    pub fn created(_n: &crate::flow::NewFlow, _state: u8) {}
    #[inline(always)]
    pub fn rewrote(_dst: bool, _addr: &[u8; 16], _port: [u8; 2]) {}
    #[inline(always)]
    pub fn emit(_verdict: u64) {}
}
