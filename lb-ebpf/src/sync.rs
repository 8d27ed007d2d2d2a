//! Flow changes for the HA peer: the active node's agent streams what this
//! module writes to `SYNC` (the README's HA section).
//!
//! Only the forward entry's changes are reported: the standby rebuilds the
//! reverse entry from it, and a change seen only on the reply side (the
//! server's FIN) reaches the peer with the agent's periodic refresh.
use lb_common::{FlowKey, SyncEvent, reason};

use crate::{
    maps::{SYNC, SYNC_ON},
    stats,
};

/// Whether an HA peer wants flow changes: one array load.
#[inline(always)]
pub fn wanted() -> bool {
    SYNC_ON.get(0).is_some_and(|on| *on != 0)
}

/// Writes one record. Its own BPF function so the record is assembled in the
/// ring buffer, never on the callers' stack frames; a full ring loses the
/// record (counted as `sync_lost`; the agent's refresh and bulk copies
/// repair the peer), never the packet.
#[inline(never)]
pub fn emit(kind: u8, key: &FlowKey, real_id: u32, state: u8) {
    if let Some(mut entry) = SYNC.reserve::<SyncEvent>(0) {
        let ev = entry.as_mut_ptr();
        // SAFETY: `reserve` handed out room for one `SyncEvent`; every field
        // is written before the record is submitted.
        unsafe {
            (*ev).key = *key;
            (*ev).real_id = real_id;
            (*ev).kind = kind;
            (*ev).state = state;
            (*ev)._pad = [0; 2];
        }
        entry.submit(0);
    } else {
        stats::count(reason::SYNC_LOST);
    }
}
