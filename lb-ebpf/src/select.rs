//! Real selection for a new flow: walk the farm's schedule from this CPU's
//! cursor. The agent keeps the schedule free of reals that are not up; the
//! state check here covers the moment between a state flip and the rebuild.
//! A real at its `max_conns` is skipped: its slot passes to the next real.
use lb_common::{REAL_UP, SCHED_SLOTS};

use crate::maps::{ACTIVE, FARMS, REALS, RR_CURSOR, SCHED};

/// Schedule slots tried before giving up on a new flow.
const TRIES: u32 = 8;

#[inline(always)]
pub fn pick(farm_id: u32) -> Option<u32> {
    let farm = FARMS.get(farm_id)?;
    let len = farm.sched_len;
    if len == 0 || len > SCHED_SLOTS {
        return None;
    }
    let cursor = RR_CURSOR.get_ptr_mut(farm_id)?;
    for _ in 0..TRIES {
        // SAFETY: per-CPU slot.
        let slot = unsafe {
            let c = *cursor;
            *cursor = c.wrapping_add(1);
            c % len
        };
        let Some(&real_id) = SCHED.get(farm_id * SCHED_SLOTS + slot) else {
            continue;
        };
        if let Some(real) = REALS.get(real_id)
            && real.state == REAL_UP
            && (real.max_conns == 0
                || ACTIVE
                    .get(real_id)
                    .is_some_and(|&n| n < real.max_conns as u64))
        {
            return Some(real_id);
        }
    }
    None
}
