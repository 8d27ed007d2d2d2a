//! Fail actions, applied to a flow at its next client packet from its real's
//! state word: flipping one `REALS` entry re-points every flow of that real
//! with no table scan (the README's fail actions).
use lb_common::{FAIL_PURGE, FAIL_REASSIGN, Flow, REAL_DRAIN, REAL_UP, reason};

use crate::{
    flow::{self, Scratch},
    maps::REALS,
    select, stats,
};

pub enum Outcome {
    /// Forward as usual (real up or draining, or fail action `none`).
    Keep,
    /// The flow was removed (`purge`): a TCP client gets a RST, anything
    /// else starts a new flow.
    Purged,
    /// The flow now points at another real (`reassign`).
    Reassigned,
}

/// Applied alike to assured and half-open flows (`s.embryo` says which
/// table `f` is in); `s.key` is its forward key, `s.build` scratch space.
/// Its own BPF function (see main.rs's to_vip on the stack limit).
#[inline(never)]
pub fn apply(s: &mut Scratch, f: &mut Flow, now: u64) -> Result<Outcome, u32> {
    let Some(real) = REALS.get(f.real_id) else {
        return Ok(Outcome::Keep);
    };
    if real.state == REAL_UP || real.state == REAL_DRAIN {
        return Ok(Outcome::Keep);
    }
    let (fwd_key, embryo) = (&s.key, s.embryo);
    match real.failaction {
        FAIL_PURGE => {
            flow::uncount(f);
            flow::remove(fwd_key, f, embryo);
            stats::count(reason::PURGED);
            Ok(Outcome::Purged)
        }
        FAIL_REASSIGN => {
            let new_id = select::pick(real.farm_id, fwd_key).ok_or(reason::DROP_NO_REAL)?;
            let new = REALS.get(new_id).ok_or(reason::DROP_NO_REAL)?;
            // The old real's replies are no longer ours to translate.
            flow::remove_key(&fwd_key.reverse(f.nat_addr, f.nat_port_be), embryo);
            flow::uncount(f);
            f.nat_addr = new.addr;
            f.nat_port_be = new.port_be;
            f.real_id = new_id;
            f.last_ns = now;
            // The cached next hop led to the old real; an IPv6 hop is
            // checked against a fold of its destination only
            // (`Family::hop_tag`), so it is dropped here, not left to that
            // check.
            f.hop.ifindex = 0;
            // The new reverse entry is built in scratch space: the map value
            // `f` keeps its counters.
            let b = &mut s.build;
            b.flow = *f;
            b.flow.packets = 0;
            b.flow.bytes = 0;
            b.flow.seq_next = 0;
            flow::insert_reverse(fwd_key, b, embryo).ok_or(reason::DROP_TABLE_FULL)?;
            // A half-open flow is counted only once assured.
            if !embryo {
                flow::count(f);
            }
            stats::count(reason::REASSIGNED);
            Ok(Outcome::Reassigned)
        }
        _ => Ok(Outcome::Keep),
    }
}
