//! Real selection for a new flow, by the farm's algorithm. Every algorithm
//! skips reals that are not up or are at their `max_conns`; the agent keeps
//! schedules and rings to live members (backups when no primary is), and the
//! checks here cover the moment between a state flip and the rebuild.
use lb_common::{
    ALG_LEAST_CONN, ALG_MAGLEV, ALG_SOURCE_HASH, Farm, FlowKey, REAL_UP, SCHED_SLOTS, TRACE_WHY_NEW,
};

use crate::{
    maps::{ACTIVE, EXPIRED, FARMS, MAGLEV, REALS, RR_CURSOR, SCHED},
    trace,
};

/// Schedule slots or ring slots tried before giving up on a new flow.
const TRIES: u32 = 8;
/// Members a least-conn pick compares. The verifier walks every iteration
/// of a bounded loop, so this caps its cost; a larger farm is scanned from a
/// rotating start, 16 members per new flow.
pub const LC_SCAN: u32 = 16;

/// Dispatches to the algorithm, each a BPF function of its own so their
/// frames are not added together (the verifier allows 512 bytes of stack
/// along a whole call chain).
#[inline(always)]
pub fn pick(farm_id: u32, key: &FlowKey) -> Option<u32> {
    let farm = FARMS.get(farm_id)?;
    trace::why(TRACE_WHY_NEW);
    trace::picked_by(farm_id, farm.algorithm);
    match farm.algorithm {
        ALG_LEAST_CONN => least_conn(farm_id, farm),
        ALG_SOURCE_HASH => {
            let mut h = Murmur::new();
            h.addr(&key.src_addr);
            hashed(farm, h.finish())
        }
        ALG_MAGLEV => {
            let mut h = Murmur::new();
            h.addr(&key.src_addr);
            h.addr(&key.dst_addr);
            h.word((key.src_port_be as u32) << 16 | key.dst_port_be as u32);
            h.word(key.proto as u32);
            hashed(farm, h.finish())
        }
        _ => round_robin(farm_id, farm),
    }
}

/// Flows on the real now: counted in minus those the agent removed.
#[inline(always)]
pub fn active(real_id: u32) -> u64 {
    let added = ACTIVE.get(real_id).copied().unwrap_or(0);
    let expired = EXPIRED.get(real_id).copied().unwrap_or(0);
    added.wrapping_sub(expired)
}

/// Up and under its cap; the real's weight if so.
#[inline(always)]
pub fn usable(real_id: u32) -> Option<u32> {
    let real = REALS.get(real_id)?;
    if real.state != REAL_UP || (real.max_conns != 0 && active(real_id) >= real.max_conns as u64) {
        return None;
    }
    Some(real.weight)
}

/// This CPU's cursor for the farm, advanced. Per-CPU: no lock, no shared
/// cache line; each CPU walks the whole schedule.
#[inline(always)]
fn next_cursor(farm_id: u32) -> Option<u32> {
    let cursor = RR_CURSOR.get_ptr_mut(farm_id)?;
    // SAFETY: per-CPU slot.
    unsafe {
        let c = *cursor;
        *cursor = c.wrapping_add(1);
        Some(c)
    }
}

#[inline(never)]
fn round_robin(farm_id: u32, farm: &Farm) -> Option<u32> {
    let len = farm.sched_len;
    if len == 0 || len > SCHED_SLOTS {
        return None;
    }
    for _ in 0..TRIES {
        let slot = next_cursor(farm_id)? % len;
        let Some(&real_id) = SCHED.get(farm_id * SCHED_SLOTS + slot) else {
            continue;
        };
        if usable(real_id).is_some() {
            return Some(real_id);
        }
    }
    None
}

/// Weighted least connections: the member with the fewest active flows per
/// unit of weight. The scan starts at a rotating member so ties spread.
#[inline(never)]
fn least_conn(farm_id: u32, farm: &Farm) -> Option<u32> {
    let len = farm.sched_len;
    if len == 0 || len > SCHED_SLOTS {
        return None;
    }
    let start = next_cursor(farm_id)?;
    // Plain locals, not an Option of a tuple: LLVM would spill the None's
    // undefined payload, and the verifier rejects reading it ("!read_ok").
    let (mut best, mut best_n, mut best_w) = (u32::MAX, 0u64, 0u64);
    for i in 0..LC_SCAN {
        if i >= len {
            break;
        }
        let slot = (start.wrapping_add(i)) % len;
        let Some(&real_id) = SCHED.get(farm_id * SCHED_SLOTS + slot) else {
            continue;
        };
        let Some(weight) = usable(real_id) else {
            continue;
        };
        if weight == 0 {
            continue;
        }
        let (n, w) = (active(real_id), weight as u64);
        // n/w < best_n/best_w without division.
        if best == u32::MAX || n * best_w < best_n * w {
            (best, best_n, best_w) = (real_id, n, w);
        }
    }
    (best != u32::MAX).then_some(best)
}

/// Maglev and source-hash: the ring slot the hash names; a neighbouring
/// slot if that real cannot take the flow right now.
#[inline(never)]
fn hashed(farm: &Farm, hash: u32) -> Option<u32> {
    let off = (farm.ring >> 32) as u32;
    let len = farm.ring as u32;
    if len == 0 {
        return None;
    }
    let mut slot = hash % len;
    for _ in 0..TRIES {
        if let Some(&real_id) = MAGLEV.get(off.wrapping_add(slot))
            && usable(real_id).is_some()
        {
            return Some(real_id);
        }
        slot = (slot + 1) % len;
    }
    None
}

/// murmur3's 32-bit mixing, fed word by word (no arrays on the small BPF
/// stack): cheap, and the same on every node running this program, so
/// hashing farms on several nodes agree on a flow.
struct Murmur {
    h: u32,
    len: u32,
}

impl Murmur {
    #[inline(always)]
    fn new() -> Self {
        Self { h: 0, len: 0 }
    }

    #[inline(always)]
    fn word(&mut self, w: u32) {
        let k = w
            .wrapping_mul(0xcc9e_2d51)
            .rotate_left(15)
            .wrapping_mul(0x1b87_3593);
        self.h = (self.h ^ k)
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
        self.len += 4;
    }

    #[inline(always)]
    fn addr(&mut self, a: &[u8; 16]) {
        for i in 0..4 {
            self.word(u32::from_ne_bytes([
                a[4 * i],
                a[4 * i + 1],
                a[4 * i + 2],
                a[4 * i + 3],
            ]));
        }
    }

    #[inline(always)]
    fn finish(&self) -> u32 {
        let mut h = self.h ^ self.len;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}
