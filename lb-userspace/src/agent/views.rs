//! What the agent answers about itself: `lb status`, `lb vips`, `lb reals`,
//! `lb stats`, and the snapshot a Prometheus scrape renders.
use std::collections::HashMap;

use super::Agent;
use crate::{
    api::{self, NodeRole, RealState, TableUse},
    datapath, flowtable, metrics,
};

impl Agent {
    /// The sizes of `FLOWS` and `EMBRYOS`: as made, which for adopted
    /// tables may differ from what the config says now.
    pub(super) fn table_sizes(&self) -> (u64, u64) {
        let size = self.cfg.bpf.flow_table_size;
        let maps = &self.dp.maps;
        (
            flowtable::max_entries(&maps.flows).unwrap_or(size).into(),
            flowtable::max_entries(&maps.embryos)
                .unwrap_or_else(|| datapath::embryo_table_size(size))
                .into(),
        )
    }

    /// A datapath counter (`lb_common::reason`), summed over CPUs.
    pub(super) fn reason_count(&self, reason: u32) -> u64 {
        self.dp
            .maps
            .stats
            .get(&reason, 0)
            .map(|p| p.iter().sum())
            .unwrap_or(0)
    }

    /// `lb status`.
    pub(super) fn status(&self) -> api::Status {
        use lb_common::reason;
        let sw = self.last_sweep.as_ref();
        let (capacity, half_open_capacity) = self.table_sizes();
        let programmed = self.ctl.programmed();
        api::Status {
            role: self.role(),
            ha: self.ha.as_ref().map(|h| (&h.status()).into()),
            cluster: self.cluster.as_ref().map(|c| (&c.status()).into()),
            config: self.path.clone(),
            interfaces: self.cfg.interface_names(),
            hooks: self
                .dp
                .hooks()
                .into_iter()
                .map(|(i, h)| (i, h.to_string()))
                .collect(),
            xdp_mode: self.cfg.xdp_mode,
            pin_dir: self.cfg.bpf.pin_dir.clone(),
            adopted: self.dp.adopted(),
            uptime_s: self.started.elapsed().as_secs(),
            vips: programmed.vips.len(),
            reals: programmed.reals.len(),
            reals_up: programmed
                .reals
                .values()
                .filter(|(_, r)| r.state == lb_common::REAL_UP)
                .count(),
            flows: sw.map_or(0, |s| s.flows),
            flow_table: TableUse::new(sw.map_or(0, |s| s.entries), capacity),
            half_open: sw.map_or(0, |s| s.half_open),
            half_open_table: TableUse::new(
                sw.map_or(0, |s| s.half_open_entries),
                half_open_capacity,
            ),
            new_flows: api::NewFlows {
                created: self.reason_count(reason::NEW_FLOW),
                assured: self.reason_count(reason::ASSURED),
                refused: self.reason_count(reason::DROP_TABLE_FULL),
            },
            last_sweep_ms: self.sweep_took.as_secs_f64() * 1000.0,
            swept: sw.is_some(),
            program_ids: api::ProgramIds {
                xdp: self.program_ids.0,
                tc: self.program_ids.1,
            },
            trace: self.trace.as_ref().map(|t| api::TraceOwner { pid: t.pid }),
        }
    }

    /// Standalone, or the node's role in its pair.
    pub(super) fn role(&self) -> NodeRole {
        self.ha
            .as_ref()
            .map_or(NodeRole::Standalone, |h| h.role().into())
    }

    /// `lb vips`.
    pub(super) fn vips(&self) -> Vec<api::VipRow> {
        let snap = self.snapshot();
        let programmed = self.ctl.programmed();
        programmed
            .vips
            .values()
            .zip(&snap.vips)
            .map(|(v, s)| {
                let (reals_up, reals) = programmed.farm_up(&v.farm);
                api::VipRow {
                    name: v.name.clone(),
                    address: v.addr.ip().to_string(),
                    port: v.addr.port(),
                    protocol: s.protocol.clone(),
                    serverfarm: v.farm.clone(),
                    algorithm: self.cfg.serverfarms.get(&v.farm).map(|f| f.algorithm),
                    sticky_s: v.sticky_secs.unwrap_or(0),
                    reals_up,
                    reals,
                    active_flows: s.active_flows,
                    new_flows: s.new_flows,
                    packets_in: s.packets_in,
                    bytes_in: s.bytes_in,
                    packets_out: s.packets_out,
                    bytes_out: s.bytes_out,
                }
            })
            .collect()
    }

    /// `lb stats`: datapath verdicts and drops by reason, and totals.
    pub(super) fn stats(&self) -> api::Stats {
        let snap = self.snapshot();
        api::Stats {
            reasons: snap.reasons.iter().cloned().collect(),
            flows: snap.flows,
            flow_capacity: snap.flow_capacity,
            half_open: snap.half_open,
            half_open_capacity: snap.half_open_capacity,
            packets_in: snap.vips.iter().map(|v| v.packets_in).sum(),
            packets_out: snap.vips.iter().map(|v| v.packets_out).sum(),
            new_flows: snap.vips.iter().map(|v| v.new_flows).sum(),
        }
    }

    /// What a Prometheus scrape shows.
    pub(super) fn snapshot(&self) -> metrics::Snapshot {
        let maps = &self.dp.maps;
        let mut s = metrics::Snapshot::default();
        // Each real's active flows, read once, and their sum per farm.
        let active: HashMap<u32, u64> = self
            .ctl
            .programmed()
            .reals
            .values()
            .map(|(id, _)| (*id, maps.active_flows(*id)))
            .collect();
        let mut farm_active: HashMap<&str, u64> = HashMap::new();
        for (k, (id, _)) in &self.ctl.programmed().reals {
            *farm_active.entry(k.farm.as_str()).or_default() += active[id];
        }
        for v in self.ctl.programmed().vips.values() {
            let c = maps
                .vip_stats
                .get(&v.id, 0)
                .map(|p| datapath::sum_counters(p.iter()))
                .unwrap_or_default();
            // The active flows of the VIP's farm (a farm shared by several
            // VIPs counts for each).
            let vip_active = farm_active.get(v.farm.as_str()).copied().unwrap_or(0);
            s.vips.push(metrics::VipSample {
                name: v.name.clone(),
                address: v.addr.to_string(),
                protocol: if v.proto == lb_common::PROTO_UDP {
                    "udp"
                } else {
                    "tcp"
                }
                .into(),
                packets_in: c.packets_in,
                bytes_in: c.bytes_in,
                packets_out: c.packets_out,
                bytes_out: c.bytes_out,
                new_flows: c.new_flows,
                active_flows: vip_active,
            });
        }
        for (key, (id, r)) in &self.ctl.programmed().reals {
            let c = maps.real_counters(*id).unwrap_or_default();
            s.reals.push(metrics::RealSample {
                farm: key.farm.clone(),
                address: key.endpoint().to_string(),
                state: RealState::from_datapath(r.state),
                weight: r.weight,
                packets_in: c.packets_in,
                bytes_in: c.bytes_in,
                packets_out: c.packets_out,
                bytes_out: c.bytes_out,
                new_flows: c.new_flows,
                active_flows: active[id],
                conn_ok: c.conn_ok,
                conn_fail: c.conn_fail,
                probe_latency_seconds: self
                    .checker
                    .status(*id)
                    .and_then(|st| st.last_latency_ms)
                    .map(|ms| ms / 1000.0),
            });
        }
        if let Some(sw) = &self.last_sweep {
            s.flows = sw.flows as u64;
            s.flow_entries = sw.entries as u64;
            s.half_open = sw.half_open as u64;
            s.half_open_entries = sw.half_open_entries as u64;
        }
        s.sweep_seconds = self.sweep_took.as_secs_f64();
        for (i, name) in lb_common::reason::NAMES.iter().enumerate() {
            s.reasons
                .push((name.to_string(), self.reason_count(i as u32)));
        }
        (s.flow_capacity, s.half_open_capacity) = self.table_sizes();
        if let Some(h) = &self.ha {
            let st = h.status();
            let (y, m) = (&st.sync, &st.messages);
            s.ha_role = Some(st.role);
            s.ha_sync_lag_seconds = Some(y.stalled_ms / 1000.0);
            s.ha_sync_unacked = Some(y.unacked);
            s.ha_messages.push(("accepted".into(), m.accepted));
            for (k, n) in m.rejected.by_reason() {
                s.ha_messages.push((k.into(), n));
            }
            for (kind, n) in [
                ("sent", y.events_queued),
                ("acked", y.events_acked),
                ("received", y.events_received),
                ("resent_rounds", y.resends),
                ("unmatched", y.unmatched),
            ] {
                s.ha_events.push((kind.into(), n));
            }
        }
        s.cluster = self.cluster.as_ref().map(|c| {
            let st = c.status();
            let y = st.sync;
            crate::metrics::ClusterSample {
                draining: st.draining,
                announced: st.bgp.announced.len() as u64,
                peers: st
                    .nodes
                    .iter()
                    .map(|p| crate::metrics::PeerSample {
                        peer: p.address.to_string(),
                        up: p.state == api::PeerState::Up,
                        synced: p.synced,
                        lag_seconds: p.sync_lag_ms as f64 / 1000.0,
                        unacked: p.unacked,
                    })
                    .collect(),
                sessions: st
                    .bgp
                    .sessions
                    .iter()
                    .map(|b| (b.neighbor.to_string(), b.state == "Established"))
                    .collect(),
                events: [
                    ("sent", y.events_sent),
                    ("applied", y.events_applied),
                    ("refreshed", y.refreshed),
                    ("copies_sent", y.copies_sent),
                    ("copies_received", y.copies_received),
                    ("unmatched", y.unmatched),
                ]
                .into_iter()
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
            }
        });
        s
    }

    /// Rows for `lb reals`.
    pub(super) fn reals(&self, farm: Option<&str>) -> Vec<api::RealRow> {
        let mut rows = Vec::new();
        for (key, (id, r)) in &self.ctl.programmed().reals {
            if farm.is_some_and(|f| f != key.farm) {
                continue;
            }
            let cfg = self.cfg.serverfarms.get(&key.farm).and_then(|f| {
                f.reals
                    .iter()
                    .find(|c| c.address == key.addr && c.port.unwrap_or(key.port) == key.port)
            });
            let status = self.checker.status(*id);
            rows.push(api::RealRow {
                farm: key.farm.clone(),
                address: key.addr.to_string(),
                port: key.port,
                state: RealState::from_datapath(r.state),
                weight: cfg.map_or(r.weight, |c| c.weight),
                effective_weight: r.weight,
                backup: cfg.is_some_and(|c| c.backup),
                active_flows: self.dp.maps.active_flows(*id),
                last_check: status.as_ref().map(|s| s.last_check.clone()),
                check_latency_ms: status.as_ref().and_then(|s| s.last_latency_ms),
                since_ms: status.as_ref().map(|s| s.since_ms),
                tracks: cfg.and_then(|c| c.track.clone()),
            });
        }
        rows
    }
}
