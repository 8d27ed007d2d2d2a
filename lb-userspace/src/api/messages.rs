//! Every request the API takes and every answer it gives, as serde types.
//! The agent builds these, the CLI renders them, the metrics and the tests
//! read them: a field renamed here is renamed for all of them, and the
//! compiler finds every reader. Scripts read the JSON names (the README's
//! "CLI"): change none without keeping the old spelling (`#[serde(alias)]`).
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use crate::config::{Algorithm, Protocol, XdpMode};

/// One request per connection, one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// `lb reload`: answered with a [`Message`].
    Reload,
    /// `lb status`: [`Status`].
    Status,
    /// `lb reals [--farm F]`: [`RealRow`]s.
    Reals {
        #[serde(default)]
        farm: Option<String>,
    },
    /// `lb real enable|disable|drain FARM ADDR[:PORT]`: a [`Message`].
    Real {
        action: RealAction,
        farm: String,
        real: String,
    },
    /// `lb vips`: [`VipRow`]s.
    Vips,
    /// `lb stats`: [`Stats`].
    Stats,
    /// `lb top`: the live view ([`live::Status`](super::live::Status)).
    Live,
    /// `lb flows clear [filters]`: [`Cleared`].
    FlowsClear {
        #[serde(default)]
        vip: Option<String>,
        #[serde(default)]
        real: Option<String>,
        #[serde(default)]
        client: Option<String>,
        #[serde(default)]
        state: Option<String>,
    },
    /// `lb ha status|takeover|release`: [`HaAnswer`].
    Ha { action: HaAction },
    /// `lb cluster status|drain|undrain`: [`ClusterAnswer`].
    Cluster { action: ClusterAction },
    /// `lb teardown`: a [`Message`], then hand over (HA), detach, unpin and
    /// exit.
    Teardown,
    /// `lb trace`: [`TraceStarted`], then a line per traced packet
    /// (`trace::Line`) until the trace ends or the client goes.
    Trace(crate::trace::Spec),
}

/// `lb real ACTION`: the admin state it sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RealAction {
    /// Back to up (health decides).
    Enable,
    /// Down now: the farm's fail action applies to its flows.
    Disable,
    /// No new flows; existing ones finish.
    Drain,
}

impl RealAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RealAction::Enable => "enable",
            RealAction::Disable => "disable",
            RealAction::Drain => "drain",
        }
    }
}

/// `lb ha ACTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HaAction {
    Status,
    /// Become active now (the peer yields).
    Takeover,
    /// Hand the active role to the peer.
    Release,
}

/// `lb cluster ACTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClusterAction {
    Status,
    /// Withdraw this node's routes: new flows go to the other nodes, its
    /// existing flows finish (here, or wherever ECMP now sends them).
    Drain,
    /// Announce again.
    Undrain,
}

/// The answer of a request that only reports what it did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub message: String,
}

/// `lb flows clear`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cleared {
    pub cleared: u64,
}

/// `lb flows --count` (read from the pinned maps, not the agent).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlowCount {
    pub count: u64,
}

/// `lb trace`'s first answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceStarted {
    pub message: String,
    /// 0: until the count is reached or the client goes.
    pub max_duration_s: u64,
}

/// What a node is: on its own, or its role in an HA pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    #[default]
    Standalone,
    Init,
    Standby,
    Active,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Standalone => "standalone",
            NodeRole::Init => "init",
            NodeRole::Standby => "standby",
            NodeRole::Active => "active",
        }
    }
}

impl From<crate::ha::Role> for NodeRole {
    fn from(r: crate::ha::Role) -> NodeRole {
        match r {
            crate::ha::Role::Init => NodeRole::Init,
            crate::ha::Role::Standby => NodeRole::Standby,
            crate::ha::Role::Active => NodeRole::Active,
        }
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A real's state as the datapath holds it (`lb_common::REAL_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RealState {
    Up,
    Down,
    Drain,
    Disabled,
    /// A value this agent does not know (never written by it).
    #[default]
    Unknown,
}

impl RealState {
    /// The states the agent writes.
    pub const KNOWN: [RealState; 4] = [
        RealState::Up,
        RealState::Down,
        RealState::Drain,
        RealState::Disabled,
    ];

    pub fn from_datapath(state: u32) -> RealState {
        match state {
            lb_common::REAL_UP => RealState::Up,
            lb_common::REAL_DOWN => RealState::Down,
            lb_common::REAL_DRAIN => RealState::Drain,
            lb_common::REAL_DISABLED => RealState::Disabled,
            _ => RealState::Unknown,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            RealState::Up => "up",
            RealState::Down => "down",
            RealState::Drain => "drain",
            RealState::Disabled => "disabled",
            RealState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for RealState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `lb status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub role: NodeRole,
    pub ha: Option<HaSummary>,
    pub cluster: Option<ClusterSummary>,
    /// The config file's path.
    pub config: PathBuf,
    pub interfaces: Vec<String>,
    /// Each interface's hook as attached: `xdp` or `tc`.
    pub hooks: BTreeMap<String, String>,
    pub xdp_mode: XdpMode,
    pub pin_dir: PathBuf,
    /// The maps came from a previous agent's pins.
    pub adopted: bool,
    pub uptime_s: u64,
    pub vips: usize,
    pub reals: usize,
    pub reals_up: usize,
    /// Flows in `FLOWS` and half-open ones, from the last sweep.
    pub flows: usize,
    pub flow_table: TableUse,
    pub half_open: usize,
    pub half_open_table: TableUse,
    pub new_flows: NewFlows,
    pub last_sweep_ms: f64,
    /// The table counts come from the last sweep: false until the first
    /// one, so a fresh agent's zeros are not read as empty tables.
    pub swept: bool,
    pub program_ids: ProgramIds,
    /// The `lb trace` running now.
    pub trace: Option<TraceOwner>,
}

/// A flow table's fill.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct TableUse {
    pub entries: usize,
    pub capacity: u64,
    /// One decimal.
    pub used_pct: f64,
}

impl TableUse {
    pub fn new(entries: usize, capacity: u64) -> TableUse {
        TableUse {
            entries,
            capacity,
            used_pct: used_pct(entries as u64, capacity),
        }
    }
}

/// `entries` of `capacity` in percent, one decimal.
pub fn used_pct(entries: u64, capacity: u64) -> f64 {
    (1000.0 * entries as f64 / capacity.max(1) as f64).round() / 10.0
}

/// What a flood of new flows moves: flows created, half-open flows assured
/// into `FLOWS`, new flows a full table refused.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct NewFlows {
    pub created: u64,
    pub assured: u64,
    pub refused: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ProgramIds {
    pub xdp: u32,
    pub tc: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct TraceOwner {
    pub pid: Option<u32>,
}

/// The HA part of `lb status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HaSummary {
    pub peer_role: Option<NodeRole>,
    pub peer_alive: bool,
    pub bulk_synced: bool,
    pub sync_unacked: u64,
    pub sync_stalled_ms: f64,
    pub messages_accepted: u64,
    pub messages_rejected: Rejected,
}

impl From<&HaStatus> for HaSummary {
    fn from(st: &HaStatus) -> HaSummary {
        HaSummary {
            peer_role: st.peer.role,
            peer_alive: st.peer.alive,
            bulk_synced: st.bulk_synced,
            sync_unacked: st.sync.unacked,
            sync_stalled_ms: st.sync.stalled_ms,
            messages_accepted: st.messages.accepted,
            messages_rejected: st.messages.rejected,
        }
    }
}

/// The cluster part of `lb status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterSummary {
    pub node_id: u8,
    pub draining: bool,
    pub nodes_up: usize,
    /// This node included.
    pub nodes: usize,
    pub bgp_established: usize,
    pub announced: Vec<String>,
}

impl From<&ClusterStatus> for ClusterSummary {
    fn from(st: &ClusterStatus) -> ClusterSummary {
        ClusterSummary {
            node_id: st.node_id,
            draining: st.draining,
            nodes_up: st.nodes.iter().filter(|n| n.state == PeerState::Up).count(),
            nodes: st.nodes.len() + 1,
            bgp_established: st
                .bgp
                .sessions
                .iter()
                .filter(|s| s.state == "Established")
                .count(),
            announced: st.bgp.announced.clone(),
        }
    }
}

/// A row of `lb vips`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VipRow {
    pub name: String,
    /// The plain address (tables bracket IPv6 with the port).
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub serverfarm: String,
    pub algorithm: Option<Algorithm>,
    /// `sticky.timeout` in seconds, 0 without sticky.
    pub sticky_s: u32,
    pub reals_up: usize,
    pub reals: usize,
    pub active_flows: u64,
    pub new_flows: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

/// A row of `lb reals`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RealRow {
    pub farm: String,
    pub address: String,
    pub port: u16,
    pub state: RealState,
    /// The configured weight.
    pub weight: u32,
    /// The weight in force (slow start ramps it).
    pub effective_weight: u32,
    pub backup: bool,
    pub active_flows: u64,
    /// The last check's result, `None` for a real nothing checks.
    pub last_check: Option<String>,
    pub check_latency_ms: Option<f64>,
    pub since_ms: Option<u64>,
    /// `FARM/ADDR:PORT` whose health this real follows.
    pub tracks: Option<String>,
}

/// `lb stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Packets per datapath verdict and drop reason.
    pub reasons: BTreeMap<String, u64>,
    pub flows: u64,
    pub flow_capacity: u64,
    pub half_open: u64,
    pub half_open_capacity: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub new_flows: u64,
}

/// `lb ha ACTION`: the whole status, or what a role change did (and, on a
/// standalone node, that there is no pair).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum HaAnswer {
    Status(Box<HaStatus>),
    Role(RoleChange),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoleChange {
    pub role: NodeRole,
    pub message: String,
}

/// `lb ha status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HaStatus {
    pub role: NodeRole,
    pub node_id: u8,
    pub priority: u8,
    pub preempt: bool,
    pub term: u64,
    pub bulk_synced: bool,
    pub yielding: bool,
    pub listen: SocketAddr,
    pub boot_id: u64,
    pub peer: HaPeer,
    pub floating_ips: Vec<FloatingIp>,
    pub sync: HaSync,
    pub messages: HaMessages,
    pub transitions: Transitions,
    pub garps_sent: u64,
    pub floating_errors: u64,
}

/// The peer as this node last heard it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HaPeer {
    pub address: SocketAddr,
    pub node_id: Option<u8>,
    pub role: Option<NodeRole>,
    pub priority: Option<u8>,
    pub term: Option<u64>,
    pub bulk_synced: Option<bool>,
    pub alive: bool,
    pub last_heard_ms: Option<f64>,
    /// Whether another box answers on the floating IPs.
    pub liveness: Option<bool>,
    pub boot_id: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FloatingIp {
    pub address: String,
    pub interface: String,
    /// Whether the address is on the interface now; `None` when netlink
    /// could not say.
    pub held: Option<bool>,
}

/// The flow stream, both ways.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HaSync {
    pub unacked: u64,
    pub stalled_ms: f64,
    pub events_queued: u64,
    pub events_acked: u64,
    pub datagrams_sent: u64,
    pub resends: u64,
    pub overflows: u64,
    pub refreshed: u64,
    pub wire_version: u8,
    pub ipv6_held_back: u64,
    pub bulk_copies_sent: u64,
    pub bulk_requests_sent: u64,
    pub events_received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub unplaced: u64,
    pub applied_upserts: u64,
    pub applied_removes: u64,
    pub unmatched: u64,
    pub apply_errors: u64,
    pub bulk_copies_received: u64,
    pub stale_removed: u64,
    pub last_bulk: Option<LastBulk>,
    pub send_errors: u64,
}

/// The last bulk copy this node received.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct LastBulk {
    pub flows: u64,
    pub stale_removed: u64,
    /// From this node's request; `None` for a copy it did not ask for.
    pub took_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct HaMessages {
    pub accepted: u64,
    pub rejected: Rejected,
    pub peer_restarts: u64,
}

/// Datagrams the receiver refused, by why.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Rejected {
    pub bad_mac: u64,
    pub replay: u64,
    pub stale: u64,
    pub malformed: u64,
    pub wrong_version: u64,
    pub from_self: u64,
}

impl Rejected {
    /// Each count with its name, for the metrics' `reason` label.
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        [
            ("bad_mac", self.bad_mac),
            ("replay", self.replay),
            ("stale", self.stale),
            ("malformed", self.malformed),
            ("wrong_version", self.wrong_version),
            ("from_self", self.from_self),
        ]
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Transitions {
    pub to_active: u64,
    pub to_standby: u64,
}

/// `lb cluster ACTION`: the status, with what the action did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub status: ClusterStatus,
}

/// `lb cluster status --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterStatus {
    pub node_id: u8,
    pub listen: SocketAddr,
    /// Withdrawn by `lb cluster drain` or a stop in progress.
    pub draining: bool,
    /// Every live peer's copy of its flows is in: until then nothing is
    /// announced.
    pub caught_up: bool,
    /// Set while the agent stops: how long it still serves.
    pub stopping_in_ms: Option<u64>,
    /// The other nodes.
    pub nodes: Vec<PeerStatus>,
    pub bgp: BgpStatus,
    pub sync: SyncCounters,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BgpStatus {
    pub sessions: Vec<BgpSession>,
    /// What BIRD announces now (`198.51.100.10/32`).
    pub announced: Vec<String>,
    /// What this node would announce: differs from `announced` only for
    /// the moment a change takes.
    pub wanted: Vec<String>,
    pub daemon_starts: u64,
    pub error: Option<String>,
}

/// A peer's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Heard within 3 heartbeats.
    Up,
    Down,
    /// Never heard.
    Unknown,
}

/// A peer as `lb cluster status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    pub node_id: Option<u8>,
    pub address: SocketAddr,
    pub state: PeerState,
    /// How long this node's oldest event not yet acknowledged by the peer
    /// has waited: 0 when the peer has everything.
    pub sync_lag_ms: u64,
    pub unacked: u64,
    /// This node holds a complete copy of the peer's table.
    pub synced: bool,
    pub flows: u64,
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct SyncCounters {
    pub events_sent: u64,
    pub events_applied: u64,
    pub copies_sent: u64,
    pub copies_received: u64,
    pub refreshed: u64,
    pub unmatched: u64,
    pub rejected_datagrams: u64,
    pub unknown_senders: u64,
    pub send_errors: u64,
    pub apply_errors: u64,
}

/// One BGP session as BIRD reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpSession {
    pub neighbor: IpAddr,
    /// BIRD's word: `Established` when up; `Active`, `Connect`, `OpenSent`…
    /// while trying; `down` with the last error otherwise.
    pub state: String,
}

/// A row of `lb flows --json`. Endpoints print as `SocketAddr` does:
/// `198.51.100.10:80`, `[2001:db8::10]:80`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlowRow {
    pub client: String,
    pub vip: String,
    pub real: String,
    pub protocol: Protocol,
    pub state: FlowState,
    pub age_ms: u64,
    pub idle_ms: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// The flow is half-open (`EMBRYOS`): a TCP handshake not yet
    /// completed by the client's ACK, or a UDP flow its real has not
    /// answered yet.
    pub half_open: bool,
}

/// A flow's state (`lb_common::ST_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    Syn,
    Established,
    Fin,
    Closed,
    Udp,
    /// A value this agent does not know.
    Unknown,
}

impl FlowState {
    /// The states the datapath writes (and `lb flows --state` takes).
    pub const KNOWN: [FlowState; 5] = [
        FlowState::Syn,
        FlowState::Established,
        FlowState::Fin,
        FlowState::Closed,
        FlowState::Udp,
    ];

    pub const fn datapath(self) -> u8 {
        match self {
            FlowState::Syn => lb_common::ST_SYN,
            FlowState::Established => lb_common::ST_ESTABLISHED,
            FlowState::Fin => lb_common::ST_FIN,
            FlowState::Closed => lb_common::ST_CLOSED,
            FlowState::Udp => lb_common::ST_UDP,
            FlowState::Unknown => u8::MAX,
        }
    }

    pub fn from_datapath(state: u8) -> FlowState {
        Self::KNOWN
            .into_iter()
            .find(|s| s.datapath() == state)
            .unwrap_or(FlowState::Unknown)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            FlowState::Syn => "syn",
            FlowState::Established => "established",
            FlowState::Fin => "fin",
            FlowState::Closed => "closed",
            FlowState::Udp => "udp",
            FlowState::Unknown => "unknown",
        }
    }
}
