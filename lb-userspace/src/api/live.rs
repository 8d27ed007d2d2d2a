//! The live view's answer: what the status page (`GET /api/status`) and
//! `lb top` show. `crate::live` fills it and renders it.
use serde::{Deserialize, Serialize};

use super::{NodeRole, RealState};

/// The whole live view, as `GET /api/status` and `lb top --json --once`
/// give it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// This node's role: `standalone`, or with `ha:` `init`, `standby` or
    /// `active`.
    pub role: NodeRole,
    pub uptime_s: u64,
    /// The seconds the rates cover: [`RATE_WINDOW`] once the agent has run
    /// that long, less before (0 before the first second: no rates yet).
    pub rate_window_s: f64,
    /// The failover pair, with `ha:` only.
    pub ha: Option<HaStatus>,
    pub flow_table: TableFill,
    pub half_open_table: TableFill,
    pub vips: Vec<VipStatus>,
    pub reals: Vec<RealStatus>,
    /// Drop reasons whose count moved within the rate window, busiest first.
    pub drops: Vec<DropStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HaStatus {
    /// The peer's role as last heard; `None` before it was heard.
    pub peer_role: Option<NodeRole>,
    pub peer_alive: bool,
    /// This node holds the bulk copy of the peer's flows.
    pub bulk_synced: bool,
    /// Flow events sent to the peer and not yet acknowledged.
    pub sync_unacked: u64,
    /// How long the oldest unacknowledged event has waited.
    pub sync_lag_ms: f64,
}

/// A flow table's fill (from the last sweep).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableFill {
    /// Flows (both directions of one count once).
    pub flows: u64,
    /// Entries, two per flow.
    pub entries: u64,
    pub capacity: u64,
    /// `entries` of `capacity`, in percent.
    pub used_pct: f64,
}

impl TableFill {
    pub fn new(flows: u64, entries: u64, capacity: u64) -> Self {
        Self {
            flows,
            entries,
            capacity,
            used_pct: super::used_pct(entries, capacity),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    pub name: String,
    /// `198.51.100.10:80`, `[2001:db8::10]:80`
    pub address: String,
    pub protocol: String,
    pub serverfarm: String,
    pub algorithm: String,
    /// The node's role, which the VIP follows: `standalone`, `active`,
    /// `standby`, `init`.
    pub role: NodeRole,
    pub reals_up: usize,
    pub reals: usize,
    pub active_flows: u64,
    pub new_flows_per_s: f64,
    /// Both directions.
    pub packets_per_s: f64,
    /// Totals since the datapath was loaded.
    pub new_flows: u64,
    pub packets: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RealStatus {
    pub farm: String,
    /// `203.0.113.11:8080`
    pub address: String,
    pub state: RealState,
    /// A backup real: takes flows only while no primary of its farm is up.
    pub backup: bool,
    /// The configured weight.
    pub weight: u32,
    /// The weight the datapath uses now: lower than `weight` while slow
    /// start ramps the real up.
    pub effective_weight: u32,
    pub active_flows: u64,
    pub new_flows_per_s: f64,
    pub packets_per_s: f64,
    /// The latest health check result, `None` for a real nobody checks.
    pub last_check: Option<String>,
    /// How long ago that check ran.
    pub last_check_age_ms: Option<u64>,
    pub check_latency_ms: Option<f64>,
    /// Passive health: connections the real answered / refused or left
    /// unanswered (totals), the failures within the rate window, and the
    /// failures in a row now counting towards `observe.errors`.
    pub conn_ok: u64,
    pub conn_failed: u64,
    pub conn_failed_recent: u64,
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DropStatus {
    pub reason: String,
    /// Packets within the rate window.
    pub packets_recent: u64,
    pub per_s: f64,
    /// Since the datapath was loaded.
    pub packets: u64,
}
