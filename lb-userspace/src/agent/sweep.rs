//! The flow sweep (idle expiry, flows of removed VIPs, repairs) of both
//! flow tables, `FLOWS` and the half-open `EMBRYOS`, run off the agent's
//! loop. Reading a table of millions of flows takes seconds, and
//! the loop meanwhile answers health probes, the API and the HA peer: a
//! probe whose timeout ran out while the loop stood still would count as a
//! failure of its real.
//!
//! The sweep works from a snapshot taken on the loop (each VIP id's
//! timeouts, the HA refresh window, the retired ids) with its own handle on
//! the pinned table, and hands back what needs the agent's state: flows of
//! VIP ids the snapshot lacked (a reload may have added them meanwhile),
//! what the HA peer must hear, the ids it found in use.
use std::{collections::HashSet, time::Instant};

use anyhow::Result;
use log::{info, warn};
use tokio::task::{JoinError, JoinHandle};

use super::Agent;
use crate::{
    datapath,
    flowtable::{self, Joined, Kind, Sweep, Unknown, VipTimeouts},
    ha::node,
};

/// What a sweep found: the tally, and the flows the HA peer must hear
/// about (`(flow, removed)`), collected only while a refresh window is open.
type Found = (Sweep, Vec<(Joined, bool)>);

/// A sweep under way on a blocking thread.
pub(super) struct Sweeping {
    pub(super) task: JoinHandle<Result<Found>>,
    start: Start,
}

/// The loop's side of a sweep, taken when it starts.
struct Start {
    at: Instant,
    now_ns: u64,
    window: Option<u64>,
    /// Ids retired before the sweep read the table. Only these may be
    /// released by its result: an id retired later may have flows the
    /// sweep did not see.
    retired: (HashSet<u32>, HashSet<u32>),
}

/// Whether a sweep's result may release retired ids for reuse. Only the
/// periodic sweep does, one at a time: a sweep off the loop removes flows
/// of the ids retired at its start, so no other sweep may hand those ids to
/// a new VIP meanwhile.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Release {
    Retired,
    No,
}

/// A flow table as the sweep opens it.
type Map = aya::maps::HashMap<aya::maps::MapData, lb_common::FlowKey, lb_common::Flow>;

/// One pass over both tables, `embryos` (the half-open flows) first, by
/// `vips`. Half-open flows the sweep removes are sent to the HA peer like
/// any other (its copies of them, from the datapath's creation records,
/// live in its `FLOWS`).
fn sweep_job(
    flows: &mut Map,
    embryos: Option<&mut Map>,
    vips: &VipTimeouts,
    unknown: Unknown<'_>,
    now_ns: u64,
    window: Option<u64>,
) -> Result<Found> {
    let mut peer = Vec::new();
    let s = flowtable::sweep_tables(flows, embryos, vips, unknown, now_ns, &mut |f, removed| {
        if let Some(w) = window
            && (removed || node::refresh_due(f, w, now_ns))
        {
            peer.push((f.clone(), removed));
        }
    })?;
    Ok((s, peer))
}

impl Agent {
    fn start(&mut self) -> Start {
        if self.ctl.ramping()
            && let Err(e) = self.ctl.reapply(&mut self.dp.maps)
        {
            warn!("slow start: {e:#}");
        }
        let now_ns = datapath::now_ns();
        Start {
            at: Instant::now(),
            now_ns,
            window: match (self.ha.as_mut(), self.cluster.as_mut()) {
                (Some(h), _) => h.refresh_window(now_ns),
                (_, Some(c)) => c.node.refresh_window(now_ns),
                _ => None,
            },
            retired: self.ctl.retired_ids(),
        }
    }

    /// Starts a sweep on a blocking thread.
    pub(super) fn start_sweep(&mut self) -> Sweeping {
        // The sweep judges idle time by the datapath's clock.
        self.dp.keep_clock();
        let start = self.start();
        let vips = flowtable::vip_timeouts(&self.ctl);
        let pin_dir = self.cfg.bpf.pin_dir.clone();
        let (now_ns, window) = (start.now_ns, start.window);
        let retired = start.retired.0.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut t = flowtable::Tables::open(&pin_dir)?;
            let unknown = Unknown::Report { retired: &retired };
            sweep_job(
                &mut t.flows,
                t.embryos.as_mut(),
                &vips,
                unknown,
                now_ns,
                window,
            )
        });
        Sweeping { task, start }
    }

    /// Sweeps now, on the loop: after a reload, so the flows of removed
    /// VIPs are gone when the operator's command returns.
    pub(super) fn sweep_now(&mut self) {
        let start = self.start();
        let vips = flowtable::vip_timeouts(&self.ctl);
        let maps = &mut self.dp.maps;
        let found = sweep_job(
            &mut maps.flows,
            Some(&mut maps.embryos),
            &vips,
            Unknown::Remove,
            start.now_ns,
            start.window,
        );
        self.finish_sweep(start, found, Release::No);
    }

    /// Applies a finished sweep's result on the loop; returns how long the
    /// sweep took from its start.
    pub(super) fn finish_swept(
        &mut self,
        s: Sweeping,
        r: std::result::Result<Result<Found>, JoinError>,
    ) -> std::time::Duration {
        let found = r.unwrap_or_else(|e| Err(anyhow::anyhow!("the sweep's thread: {e}")));
        self.finish_sweep(s.start, found, Release::Retired)
    }

    fn finish_sweep(
        &mut self,
        start: Start,
        found: Result<Found>,
        release: Release,
    ) -> std::time::Duration {
        let took = start.at.elapsed();
        self.sweep_took = took;
        let (mut s, mut peer) = match found {
            Ok(f) => f,
            Err(e) => {
                warn!("flow sweep failed: {e:#}");
                return took;
            }
        };
        // Flows of VIP ids the snapshot neither had nor knew as retired: a
        // VIP programmed since keeps them (the next sweep judges them); the
        // rest name no VIP.
        let live: HashSet<u32> = self.ctl.programmed().vips.values().map(|v| v.id).collect();
        let unknown = std::mem::take(&mut s.unknown)
            .into_iter()
            .map(|f| (f, Kind::Assured))
            .chain(
                std::mem::take(&mut s.unknown_half_open)
                    .into_iter()
                    .map(|f| (f, Kind::HalfOpen)),
            );
        for (f, kind) in unknown {
            if live.contains(&f.fwd.vip_id) {
                s.vips_in_use.insert(f.fwd.vip_id);
                s.reals_in_use.insert(f.fwd.real_id);
                continue;
            }
            let map = match kind {
                Kind::Assured => &mut self.dp.maps.flows,
                Kind::HalfOpen => &mut self.dp.maps.embryos,
            };
            flowtable::remove_flow(map, kind, &f, &mut s);
            if start.window.is_some() {
                peer.push((f, true));
            }
        }
        if let Some(h) = self.ha.as_mut() {
            if let Some(w) = start.window {
                for (f, removed) in &peer {
                    h.on_swept(f, *removed, w, start.now_ns);
                }
            }
            h.flush(Instant::now());
            h.set_flows(s.flows as u64);
        }
        if let Some(c) = self.cluster.as_mut() {
            if let Some(w) = start.window {
                for (f, removed) in &peer {
                    c.node.on_swept(f, *removed, w, start.now_ns);
                }
            }
            c.node.flush(Instant::now());
            c.node.set_flows(s.flows as u64);
        }
        if s.expired + s.removed_vip + s.repaired + s.broken > 0 {
            info!(
                "sweep: {} flows, {} half-open, {} expired, {} of removed vips, {} repaired, {} half-open missing a half removed",
                s.flows, s.half_open, s.expired, s.removed_vip, s.repaired, s.broken
            );
        }
        if release == Release::Retired {
            let (vips, reals) = self.ctl.retired_ids();
            s.vips_in_use.extend(vips.difference(&start.retired.0));
            s.reals_in_use.extend(reals.difference(&start.retired.1));
            if let Err(e) =
                self.ctl
                    .release_unused(&s.vips_in_use, &s.reals_in_use, &mut self.dp.maps)
            {
                warn!("releasing retired ids: {e:#}");
            }
        }
        if let Err(e) = self.dp.maps.add_expired(&s.uncounted) {
            warn!("active flow counts: {e:#}");
        }
        self.last_sweep = Some(s);
        took
    }
}
