//! The datapath's clock: CLOCK_MONOTONIC at the last timer tick (a few ms
//! behind at most), the clock of every timestamp the program writes. Idle
//! timeouts, stickiness and the next-hop age are seconds long, so a tick's
//! resolution is plenty; what matters is the cost, paid once per packet.
//!
//! It is read as `jiffies * tick_ns + offset_ns` (`lb_common::Clock`, in
//! `CLOCK`): the verifier inlines `bpf_jiffies64` into one load and the
//! array lookup into a few instructions, where `bpf_ktime_get_coarse_ns`,
//! the same time at the same resolution, is a helper call (18 ns against
//! 1 ns on the bench VM). The agent measures `tick_ns` and `offset_ns` with
//! `lb_clock` when it loads the program; until then, or if it could not,
//! `tick_ns` is 0 and the helper is called.
use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::xdp,
    programs::XdpContext,
};

use crate::maps::{CLOCK, CLOCK_SAMPLE};

#[inline(always)]
pub fn now() -> u64 {
    if let Some(c) = CLOCK.get(0)
        && c.tick_ns != 0
    {
        // SAFETY: a helper without arguments.
        let jiffies = unsafe { bpf_jiffies64() };
        return jiffies.wrapping_mul(c.tick_ns).wrapping_add(c.offset_ns);
    }
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Never attached: the agent runs it with BPF_PROG_TEST_RUN to read the
/// coarse clock and jiffies together, into `CLOCK_SAMPLE[0]`.
#[xdp]
pub fn lb_clock(_ctx: XdpContext) -> u32 {
    if let Some(s) = CLOCK_SAMPLE.get_ptr_mut(0) {
        // SAFETY: helpers without arguments; `s` points into the map's value.
        unsafe {
            (*s).coarse_before_ns = bpf_ktime_get_coarse_ns();
            (*s).jiffies = bpf_jiffies64();
            (*s).coarse_after_ns = bpf_ktime_get_coarse_ns();
        }
    }
    xdp_action::XDP_PASS
}
