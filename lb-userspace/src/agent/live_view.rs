//! The agent's answer for the live view (`GET /api/status`, `lb top`).
use std::time::Instant;

use super::Agent;
use crate::api::live::{HaStatus, RealStatus, Status, TableFill, VipStatus};

impl Agent {
    /// The live view now, with rates from the recorded counters.
    pub(super) fn live_status(&self) -> Status {
        let snap = self.snapshot();
        let rates = self.history.rates(Instant::now(), &snap);
        let role = self.role();
        let programmed = self.ctl.programmed();
        // The snapshot lists VIPs and reals in the programmed order.
        let vips = programmed
            .vips
            .values()
            .zip(&snap.vips)
            .map(|(v, s)| {
                let (reals_up, reals) = programmed.farm_up(&v.farm);
                let (new_flows_per_s, packets_per_s) = rates.vip(&s.name);
                VipStatus {
                    name: s.name.clone(),
                    address: s.address.clone(),
                    protocol: s.protocol.clone(),
                    serverfarm: v.farm.clone(),
                    algorithm: self
                        .cfg
                        .serverfarms
                        .get(&v.farm)
                        .map_or("-", |f| f.algorithm.name())
                        .to_owned(),
                    role,
                    reals_up,
                    reals,
                    active_flows: s.active_flows,
                    new_flows_per_s,
                    packets_per_s,
                    new_flows: s.new_flows,
                    packets: s.packets_in + s.packets_out,
                }
            })
            .collect();
        let reals = programmed
            .reals
            .iter()
            .zip(&snap.reals)
            .map(|((key, (id, r)), s)| {
                let cfg = self.cfg.serverfarms.get(&key.farm).and_then(|f| {
                    f.reals
                        .iter()
                        .find(|c| c.address == key.addr && c.port.unwrap_or(key.port) == key.port)
                });
                let check = self.checker.status(*id);
                let (new_flows_per_s, packets_per_s, conn_failed_recent) =
                    rates.real(&s.farm, &s.address);
                // Failures count as in a row only while no success came since.
                let consecutive_failures = self
                    .passive
                    .get(id)
                    .filter(|p| p.conn_ok == s.conn_ok)
                    .map_or(0, |p| p.failures);
                RealStatus {
                    farm: s.farm.clone(),
                    address: s.address.clone(),
                    state: s.state,
                    backup: cfg.is_some_and(|c| c.backup),
                    weight: cfg.map_or(r.weight, |c| c.weight),
                    effective_weight: r.weight,
                    active_flows: s.active_flows,
                    new_flows_per_s,
                    packets_per_s,
                    last_check: check.as_ref().map(|c| c.last_check.clone()),
                    last_check_age_ms: check.as_ref().and_then(|c| c.last_check_age_ms),
                    check_latency_ms: check.as_ref().and_then(|c| c.last_latency_ms),
                    conn_ok: s.conn_ok,
                    conn_failed: s.conn_fail,
                    conn_failed_recent,
                    consecutive_failures,
                }
            })
            .collect();
        let ha = self.ha.as_ref().map(|h| {
            let st = h.status();
            HaStatus {
                peer_role: st.peer.role,
                peer_alive: st.peer.alive,
                bulk_synced: st.bulk_synced,
                sync_unacked: st.sync.unacked,
                sync_lag_ms: st.sync.stalled_ms,
            }
        });
        let mut st = Status {
            role,
            uptime_s: self.started.elapsed().as_secs(),
            rate_window_s: (rates.window_s() * 10.0).round() / 10.0,
            ha,
            flow_table: TableFill::new(snap.flows, snap.flow_entries, snap.flow_capacity),
            half_open_table: TableFill::new(
                snap.half_open,
                snap.half_open_entries,
                snap.half_open_capacity,
            ),
            vips,
            reals,
            drops: rates.drops(),
        };
        st.sort_busiest_first();
        st
    }
}
