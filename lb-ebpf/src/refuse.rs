//! A new flow the farm has no real for (every real down, disabled or at its
//! `max_conns`): refused at once, so the client fails fast instead of
//! waiting out its connect timeout, as IPVS does. A TCP segment gets a RST
//! from the VIP (rst.rs), a UDP datagram an ICMP or ICMPv6 port unreachable
//! from the VIP quoting it (toobig.rs builds it), rate-limited per CPU as
//! a kernel limits its own ICMP errors. A VIP with `no_real: drop` drops in
//! silence, as every refusal did before.
use lb_common::{PROTO_TCP, VIP_NO_REAL_DROP, reason};

use crate::{
    ctx::Pkt,
    family::Family,
    flow::Scratch,
    maps::UNREACH_TOKENS,
    rst,
    toobig::{self, TooBig},
};

/// Port unreachables a CPU may send in a burst, and how many nanoseconds
/// earn one more (about 1,000 a second: the kernel's `icmp_msgs_per_sec`).
const BURST: u64 = 50;
const NS_PER_TOKEN: u64 = 1_000_000;

/// The verdict for the packet in `s` (a new flow's first, untranslated)
/// that `new_flow` refused with `why`.
#[inline(always)]
pub fn new_flow<C: Pkt, F: Family>(
    ctx: &C,
    l3_off: usize,
    s: &mut Scratch,
    why: u32,
) -> Result<(u32, u32), u32> {
    if why != reason::DROP_NO_REAL || s.n.vip_flags & VIP_NO_REAL_DROP != 0 {
        return Err(why);
    }
    if s.facts.proto == PROTO_TCP {
        // A RST is never answered (new_flow refused it before the pick).
        return rst::to_client::<C, F>(ctx, l3_off, &s.key, &s.facts)
            .map(|a| (a, reason::NO_REAL_RST));
    }
    if !take_token(s.n.now) {
        return Err(why);
    }
    s.toobig = TooBig::port_unreachable(&s.key.dst_addr);
    toobig::answer::<C, F>(ctx, l3_off, &s.toobig, s.t)
}

/// One token of this CPU's bucket (`maps::UNREACH_TOKENS`: tokens, and the
/// time they were counted at), if it has one.
#[inline(always)]
fn take_token(now: u64) -> bool {
    let Some(b) = UNREACH_TOKENS.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot, valid for the program run.
    let b = unsafe { &mut *b };
    let earned = now.wrapping_sub(b[1]) / NS_PER_TOKEN;
    if earned > 0 {
        b[0] = (b[0] + earned).min(BURST);
        b[1] = now;
    }
    if b[0] == 0 {
        return false;
    }
    b[0] -= 1;
    true
}
