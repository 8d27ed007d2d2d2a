//! Passive health: what the datapath sees of a real's connections, reported
//! to the agent. Successes only move a counter; failures also go through the
//! `EVENTS` ring buffer so the agent reacts at once.
use lb_common::Event;

use crate::maps::{EVENTS, REAL_STATS};

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
