//! Per-CPU counters: no atomics, no shared cache lines; the agent sums CPUs.
use lb_common::Counters;

use crate::maps::{REAL_STATS, STATS, VIP_STATS};

#[inline(always)]
pub fn count(reason: u32) {
    if let Some(c) = STATS.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *c += 1 };
    }
}

/// Which side of the flow a packet travels, for the VIP/real counters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    In,
    Out,
}

#[inline(always)]
pub fn count_flow(vip_id: u32, real_id: u32, side: Side, bytes: u64, new_flow: bool) {
    if let Some(c) = VIP_STATS.get_ptr_mut(vip_id) {
        // SAFETY: per-CPU slot.
        add(unsafe { &mut *c }, side, bytes, new_flow);
    }
    if let Some(c) = REAL_STATS.get_ptr_mut(real_id) {
        // SAFETY: per-CPU slot.
        add(unsafe { &mut *c }, side, bytes, new_flow);
    }
}

#[inline(always)]
fn add(c: &mut Counters, side: Side, bytes: u64, new_flow: bool) {
    match side {
        Side::In => {
            c.packets_in += 1;
            c.bytes_in += bytes;
        }
        Side::Out => {
            c.packets_out += 1;
            c.bytes_out += bytes;
        }
    }
    if new_flow {
        c.new_flows += 1;
    }
}
