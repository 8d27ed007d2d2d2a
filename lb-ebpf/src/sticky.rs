//! Source-IP persistence (`sticky: { mode: source-ip, timeout }`): a
//! client's new flows to a VIP go to the real its last one went to, while
//! the entry is younger than the timeout and the real can take flows.
use lb_common::{Sticky, StickyKey, VIP_STICKY, VipInfo};

use crate::{maps::STICKY, select};

/// `key` is (VIP id, client address), built by the caller in scratch memory.
#[inline(always)]
pub fn lookup(vip: &VipInfo, key: &StickyKey, now: u64) -> Option<u32> {
    if vip.flags & VIP_STICKY == 0 {
        return None;
    }
    // SAFETY: read-only use of the value.
    let s = unsafe { STICKY.get(key) }?;
    if now.saturating_sub(s.last_ns) > vip.sticky_secs as u64 * 1_000_000_000 {
        return None;
    }
    select::usable(s.real_id).map(|_| s.real_id)
}

/// Records (or refreshes) the client's real.
#[inline(always)]
pub fn remember(vip: &VipInfo, key: &StickyKey, real_id: u32, now: u64) {
    if vip.flags & VIP_STICKY != 0 {
        let _ = STICKY.insert(
            key,
            Sticky {
                real_id,
                _pad: 0,
                last_ns: now,
            },
            0,
        );
    }
}
