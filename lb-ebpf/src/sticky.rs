//! Source-IP persistence (`sticky: { mode: source-ip, timeout }`): a
//! client's new flows to a VIP go to the real its last one went to, while
//! the entry is younger than the timeout and the real can take flows.
use lb_common::{Sticky, StickyKey, VIP_STICKY, VipInfo, sticky_prefix};

use crate::{maps::STICKY, select};

/// `key` is (VIP id, client address), built by the caller in scratch
/// memory; its address is cut to the VIP's IPv6 prefix here, if it has one.
#[inline(always)]
pub fn lookup(vip: &VipInfo, key: &mut StickyKey, now: u64) -> Option<u32> {
    if vip.flags & VIP_STICKY == 0 {
        return None;
    }
    let prefix = sticky_prefix(vip.flags);
    if prefix != 0 {
        cut(key, prefix);
    }
    // SAFETY: read-only use of the value.
    let s = unsafe { STICKY.get(key) }?;
    if now.saturating_sub(s.last_ns) > vip.sticky_secs as u64 * 1_000_000_000 {
        return None;
    }
    select::usable(s.real_id).map(|_| s.real_id)
}

/// Records (or refreshes) the client's real, under the key `lookup` cut.
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

/// Clears the bits of `key.addr` past the first `prefix`, a 32-bit word at
/// a time: byte by byte, the cut's registers spill past what the stack
/// under the deepest call chain can spare.
#[inline(always)]
fn cut(key: &mut StickyKey, prefix: u8) {
    let words = key.addr.as_mut_ptr() as *mut u32;
    let mut bits = prefix as u32;
    for i in 0..4 {
        let keep = match bits {
            0 => 0,
            1..32 => u32::MAX << (32 - bits),
            _ => u32::MAX,
        };
        // SAFETY: four u32 words in the 16-byte address, which is 4-aligned
        // (below).
        unsafe {
            let w = words.add(i);
            *w = (u32::from_be(*w) & keep).to_be();
        }
        bits = bits.saturating_sub(32);
    }
}
const _: () = assert!(core::mem::offset_of!(StickyKey, addr) % 4 == 0);
