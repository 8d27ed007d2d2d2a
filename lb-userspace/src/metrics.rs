//! Prometheus metrics: what `GET /metrics` on `metrics.listen` (default
//! `127.0.0.1:9100`, served by [`crate::http`]) answers, in the OpenMetrics
//! text format that Prometheus asks for first and parses natively.
//!
//! On each scrape the agent fills a fresh [`Snapshot`] and [`render`] turns
//! it into text with the Prometheus org's `prometheus-client` crate: one
//! collector per scrape, so nothing is cached between scrapes and every
//! series comes out in the snapshot's order.
//!
//! Families (`_total` is the sample suffix of a counter family):
//!
//! | family | kind | labels |
//! |---|---|---|
//! | `lb_vip_packets`, `lb_vip_bytes` | counter | `vip`, `address`, `protocol`, `direction` (`in`/`out`) |
//! | `lb_vip_new_flows` | counter | `vip`, `address`, `protocol` |
//! | `lb_vip_active_flows` | gauge | `vip`, `address`, `protocol` |
//! | `lb_real_packets`, `lb_real_bytes` | counter | `farm`, `real`, `direction` |
//! | `lb_real_new_flows` | counter | `farm`, `real` |
//! | `lb_real_connections` | counter | `farm`, `real`, `result` (`ok`/`failed`) |
//! | `lb_real_active_flows`, `lb_real_up`, `lb_real_weight` | gauge | `farm`, `real` |
//! | `lb_real_state` | gauge | `farm`, `real`, `state`: one series per state, 1 for the current one |
//! | `lb_real_probe_latency_seconds` | gauge | `farm`, `real` (only reals with a measurement) |
//! | `lb_datapath_packets` | counter | `reason` |
//! | `lb_flow_table_entries`, `lb_flow_table_capacity`, `lb_flows`, `lb_flow_sweep_seconds` | gauge | |
//! | `lb_half_open_table_entries`, `lb_half_open_table_capacity`, `lb_half_open_flows` | gauge | |
//! | `lb_ha_role` | gauge | `role` (only with HA) |
//! | `lb_ha_sync_lag_seconds`, `lb_ha_sync_unacked_events` | gauge | (only with HA) |
//! | `lb_ha_messages` | counter | `result`: `accepted` or the reject reason (only with HA) |
//! | `lb_ha_sync_events` | counter | `kind`: `sent`, `acked`, `received`, `resent_rounds`, `unmatched` (only with HA) |
//! | `lb_cluster_draining`, `lb_cluster_announced_prefixes` | gauge | (only in a cluster) |
//! | `lb_cluster_peer_up`, `lb_cluster_peer_synced`, `lb_cluster_peer_sync_lag_seconds`, `lb_cluster_peer_unacked_events` | gauge | `peer` (only in a cluster) |
//! | `lb_cluster_bgp_session_up` | gauge | `neighbor` (only in a cluster) |
//! | `lb_cluster_sync_events` | counter | `kind`: `sent`, `applied`, `refreshed`, `copies_sent`, `copies_received`, `unmatched` (only in a cluster) |
//!
//! A labelled family with no series (no VIPs yet, no latency measured) is
//! left out entirely rather than shown as a bare `# TYPE`.
use std::fmt;

use crate::api::{NodeRole, RealState};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

#[cfg(test)]
pub(crate) mod tests;

/// The `Content-Type` of a scrape's answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything one scrape shows. The agent fills it; all counters are totals
/// since the datapath was loaded.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    pub vips: Vec<VipSample>,
    pub reals: Vec<RealSample>,
    /// Datapath verdict and drop reasons with their packet counts, e.g.
    /// `("drop_no_vip_port", 3)`.
    pub reasons: Vec<(String, u64)>,
    /// Entries in the flow table (two per flow, one per direction).
    pub flow_entries: u64,
    /// The flow table's max entries.
    pub flow_capacity: u64,
    /// Flows (both directions joined).
    pub flows: u64,
    /// Entries in the half-open table (`EMBRYOS`, two per flow).
    pub half_open_entries: u64,
    /// The half-open table's max entries.
    pub half_open_capacity: u64,
    /// Half-open flows: TCP before the client's handshake ACK, UDP before
    /// the real's first answer.
    pub half_open: u64,
    /// Duration of the last flow sweep.
    pub sweep_seconds: f64,
    /// The HA role; `None` without HA, and then neither HA
    /// family is shown.
    pub ha_role: Option<NodeRole>,
    pub ha_sync_lag_seconds: Option<f64>,
    pub ha_sync_unacked: Option<u64>,
    /// Sync datagrams received, by `accepted` or reject reason.
    pub ha_messages: Vec<(String, u64)>,
    /// Sync events by what happened to them.
    pub ha_events: Vec<(String, u64)>,
    /// `None` outside a cluster, and then no cluster family is shown.
    pub cluster: Option<ClusterSample>,
}

/// A cluster node's view of its peers and BGP sessions.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ClusterSample {
    pub draining: bool,
    pub announced: u64,
    pub peers: Vec<PeerSample>,
    /// (neighbor, established)
    pub sessions: Vec<(String, bool)>,
    pub events: Vec<(String, u64)>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct PeerSample {
    /// Its sync address.
    pub peer: String,
    pub up: bool,
    pub synced: bool,
    pub lag_seconds: f64,
    pub unacked: u64,
}

/// One virtual server. `in` is client to VIP, `out` is the replies.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct VipSample {
    /// The key under `vips:` in the config.
    pub name: String,
    /// `"198.51.100.10:80"`
    pub address: String,
    /// `"tcp"` / `"udp"`
    pub protocol: String,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub new_flows: u64,
    pub active_flows: u64,
}

/// One real server of one farm. `in` is towards the real, `out` is its
/// replies.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RealSample {
    pub farm: String,
    /// `"203.0.113.11:8080"`
    pub address: String,
    pub state: RealState,
    pub weight: u32,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub new_flows: u64,
    pub active_flows: u64,
    /// Connections the real accepted / refused or left unanswered.
    pub conn_ok: u64,
    pub conn_fail: u64,
    /// The last health probe's round trip; `None` before the first probe
    /// or for a farm without probes.
    pub probe_latency_seconds: Option<f64>,
}

/// Renders the snapshot in the OpenMetrics text format, `# EOF` line
/// included.
pub fn render(s: &Snapshot) -> String {
    // The registry only takes `'static` collectors, hence the clone: cheap
    // next to a scrape, and it keeps `render` a plain function of `&Snapshot`.
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(s.clone())));
    let mut out = String::new();
    text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let enc = &mut enc;
        encode_vips(enc, s)?;
        encode_reals(enc, s)?;
        encode_datapath(enc, s)?;
        encode_ha(enc, s)?;
        if let Some(c) = &s.cluster {
            encode_cluster(enc, c)?;
        }
        Ok(())
    }
}

/// The virtual servers' traffic and flows.
fn encode_vips(enc: &mut DescriptorEncoder<'_>, s: &Snapshot) -> fmt::Result {
    family(
        enc,
        "lb_vip_packets",
        None,
        "Packets through a virtual server; in: from clients, out: replies to them",
        s.vips.iter().flat_map(|v| {
            [
                (vip_with(v, "in"), counter(v.packets_in)),
                (vip_with(v, "out"), counter(v.packets_out)),
            ]
        }),
    )?;
    family(
        enc,
        "lb_vip_bytes",
        Some(Unit::Bytes),
        "Bytes through a virtual server; in: from clients, out: replies to them",
        s.vips.iter().flat_map(|v| {
            [
                (vip_with(v, "in"), counter(v.bytes_in)),
                (vip_with(v, "out"), counter(v.bytes_out)),
            ]
        }),
    )?;
    family(
        enc,
        "lb_vip_new_flows",
        None,
        "Flows created on a virtual server",
        s.vips.iter().map(|v| (vip(v), counter(v.new_flows))),
    )?;
    family(
        enc,
        "lb_vip_active_flows",
        None,
        "Flows a virtual server holds in the flow table now",
        s.vips.iter().map(|v| (vip(v), gauge(v.active_flows))),
    )?;
    Ok(())
}

/// The real servers' traffic, connections, states and probes.
fn encode_reals(enc: &mut DescriptorEncoder<'_>, s: &Snapshot) -> fmt::Result {
    family(
        enc,
        "lb_real_packets",
        None,
        "Packets through a real server; in: towards it, out: its replies",
        s.reals.iter().flat_map(|r| {
            [
                (real_with(r, "direction", "in"), counter(r.packets_in)),
                (real_with(r, "direction", "out"), counter(r.packets_out)),
            ]
        }),
    )?;
    family(
        enc,
        "lb_real_bytes",
        Some(Unit::Bytes),
        "Bytes through a real server; in: towards it, out: its replies",
        s.reals.iter().flat_map(|r| {
            [
                (real_with(r, "direction", "in"), counter(r.bytes_in)),
                (real_with(r, "direction", "out"), counter(r.bytes_out)),
            ]
        }),
    )?;
    family(
        enc,
        "lb_real_new_flows",
        None,
        "Flows assigned to a real server",
        s.reals.iter().map(|r| (real(r), counter(r.new_flows))),
    )?;
    family(
        enc,
        "lb_real_connections",
        None,
        "Connections to a real server by outcome; failed: reset or unanswered",
        s.reals.iter().flat_map(|r| {
            [
                (real_with(r, "result", "ok"), counter(r.conn_ok)),
                (real_with(r, "result", "failed"), counter(r.conn_fail)),
            ]
        }),
    )?;
    family(
        enc,
        "lb_real_active_flows",
        None,
        "Flows a real server holds in the flow table now",
        s.reals.iter().map(|r| (real(r), gauge(r.active_flows))),
    )?;
    family(
        enc,
        "lb_real_up",
        None,
        "1 when the real server is up (takes new flows), else 0",
        s.reals
            .iter()
            .map(|r| (real(r), gauge(u64::from(r.state == RealState::Up)))),
    )?;
    family(
        enc,
        "lb_real_state",
        None,
        "The real server's state: 1 on the current one of up, down, drain, disabled",
        s.reals.iter().flat_map(|r| {
            // Every known state always shows, so its series exists (at
            // 0) before a real first enters it and alerts can match on
            // `== 1`; a state this agent does not know shows as `unknown`.
            let extra = (!RealState::KNOWN.contains(&r.state)).then_some(r.state);
            RealState::KNOWN.into_iter().chain(extra).map(|st| {
                (
                    real_with(r, "state", st.as_str()),
                    gauge(u64::from(st == r.state)),
                )
            })
        }),
    )?;
    family(
        enc,
        "lb_real_weight",
        None,
        "The real server's configured weight",
        s.reals
            .iter()
            .map(|r| (real(r), gauge(u64::from(r.weight)))),
    )?;
    family(
        enc,
        "lb_real_probe_latency_seconds",
        Some(Unit::Seconds),
        "Round trip of the last health probe of the real server",
        s.reals.iter().filter_map(|r| {
            r.probe_latency_seconds
                .map(|secs| (real(r), gauge_f64(secs)))
        }),
    )?;
    Ok(())
}

/// The datapath's verdicts, and the flow tables' fill.
fn encode_datapath(enc: &mut DescriptorEncoder<'_>, s: &Snapshot) -> fmt::Result {
    family(
        enc,
        "lb_datapath_packets",
        None,
        "Packets by datapath verdict or drop reason",
        s.reasons
            .iter()
            .map(|(reason, n)| ([("reason", reason.as_str())], counter(*n))),
    )?;

    single(
        enc,
        "lb_flow_table_entries",
        None,
        "Entries in the flow table, two per flow (one per direction)",
        gauge(s.flow_entries),
    )?;
    single(
        enc,
        "lb_flow_table_capacity",
        None,
        "The flow table's maximum number of entries",
        gauge(s.flow_capacity),
    )?;
    single(
        enc,
        "lb_flows",
        None,
        "Flows in the flow table",
        gauge(s.flows),
    )?;
    single(
        enc,
        "lb_half_open_table_entries",
        None,
        "Entries in the half-open flow table, two per flow (one per direction)",
        gauge(s.half_open_entries),
    )?;
    single(
        enc,
        "lb_half_open_table_capacity",
        None,
        "The half-open flow table's maximum number of entries",
        gauge(s.half_open_capacity),
    )?;
    single(
        enc,
        "lb_half_open_flows",
        None,
        "Half-open flows: TCP before the client's handshake ACK, UDP before the real's first answer",
        gauge(s.half_open),
    )?;
    single(
        enc,
        "lb_flow_sweep_seconds",
        Some(Unit::Seconds),
        "Duration of the last flow table sweep",
        gauge_f64(s.sweep_seconds),
    )?;
    Ok(())
}

/// The failover pair (series only with `ha:`).
fn encode_ha(enc: &mut DescriptorEncoder<'_>, s: &Snapshot) -> fmt::Result {
    family(
        enc,
        "lb_ha_role",
        None,
        "This node's failover role: 1 on the current one",
        s.ha_role
            .iter()
            .map(|role| ([("role", role.as_str())], gauge(1))),
    )?;
    if let Some(lag) = s.ha_sync_lag_seconds {
        single(
            enc,
            "lb_ha_sync_lag_seconds",
            Some(Unit::Seconds),
            "How long the oldest unacknowledged sync event has waited",
            gauge_f64(lag),
        )?;
    }
    if let Some(n) = s.ha_sync_unacked {
        single(
            enc,
            "lb_ha_sync_unacked_events",
            None,
            "Flow events sent to the peer and not yet acknowledged",
            gauge(n),
        )?;
    }
    family(
        enc,
        "lb_ha_messages",
        None,
        "Sync datagrams received, accepted or rejected by reason",
        s.ha_messages
            .iter()
            .map(|(r, n)| ([("result", r.as_str())], counter(*n))),
    )?;
    family(
        enc,
        "lb_ha_sync_events",
        None,
        "Flow sync events by what happened to them",
        s.ha_events
            .iter()
            .map(|(k, n)| ([("kind", k.as_str())], counter(*n))),
    )?;
    Ok(())
}

fn encode_cluster(enc: &mut DescriptorEncoder<'_>, c: &ClusterSample) -> fmt::Result {
    single(
        enc,
        "lb_cluster_draining",
        None,
        "1 while this node's routes are withdrawn (lb cluster drain, or stopping)",
        gauge(u64::from(c.draining)),
    )?;
    single(
        enc,
        "lb_cluster_announced_prefixes",
        None,
        "VIP prefixes this node announces over BGP",
        gauge(c.announced),
    )?;
    let peer = |p: &PeerSample| [("peer", p.peer.clone())];
    type PerPeer = (&'static str, &'static str, fn(&PeerSample) -> u64);
    let per_peer: [PerPeer; 3] = [
        (
            "lb_cluster_peer_up",
            "1 while the peer's heartbeats arrive",
            |p| u64::from(p.up),
        ),
        (
            "lb_cluster_peer_synced",
            "1 once this node holds a complete copy of the peer's flows",
            |p| u64::from(p.synced),
        ),
        (
            "lb_cluster_peer_unacked_events",
            "Flow events sent to the peer and not yet acknowledged",
            |p| p.unacked,
        ),
    ];
    for (name, help, value) in per_peer {
        family(
            enc,
            name,
            None,
            help,
            c.peers.iter().map(|p| (peer(p), gauge(value(p)))),
        )?;
    }
    family(
        enc,
        "lb_cluster_peer_sync_lag_seconds",
        Some(Unit::Seconds),
        "How long the oldest event the peer has not acknowledged has waited",
        c.peers.iter().map(|p| (peer(p), gauge_f64(p.lag_seconds))),
    )?;
    family(
        enc,
        "lb_cluster_bgp_session_up",
        None,
        "1 while the BGP session to the neighbor is established",
        c.sessions
            .iter()
            .map(|(n, up)| ([("neighbor", n.as_str())], gauge(u64::from(*up)))),
    )?;
    family(
        enc,
        "lb_cluster_sync_events",
        None,
        "Cluster flow sync events by what happened to them",
        c.events
            .iter()
            .map(|(k, n)| ([("kind", k.as_str())], counter(*n))),
    )
}

fn vip(v: &VipSample) -> [(&'static str, &str); 3] {
    [
        ("vip", &v.name),
        ("address", &v.address),
        ("protocol", &v.protocol),
    ]
}

fn vip_with<'a>(v: &'a VipSample, direction: &'static str) -> [(&'static str, &'a str); 4] {
    let [a, b, c] = vip(v);
    [a, b, c, ("direction", direction)]
}

fn real(r: &RealSample) -> [(&'static str, &str); 2] {
    [("farm", &r.farm), ("real", &r.address)]
}

fn real_with<'a>(
    r: &'a RealSample,
    key: &'static str,
    value: &'a str,
) -> [(&'static str, &'a str); 3] {
    let [a, b] = real(r);
    [a, b, (key, value)]
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: u64) -> ConstGauge<u64> {
    ConstGauge::new(v)
}

fn gauge_f64(v: f64) -> ConstGauge<f64> {
    ConstGauge::new(v)
}

/// The name prometheus-client wants: the family's name without the unit,
/// which it appends itself (and `_total` after it for a counter). Written in
/// full at the call sites so they grep as the families scrapes show.
fn base_name<'a>(family: &'a str, unit: Option<&Unit>) -> &'a str {
    match unit {
        Some(unit) => family
            .strip_suffix(unit.as_str())
            .and_then(|n| n.strip_suffix('_'))
            .expect("a family with a unit ends in _<unit>"),
        None => family,
    }
}

/// One labelled family, one series per item in order; none at all when
/// there are no items.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    unit: Option<Unit>,
    help: &str,
    series: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut series = series.into_iter().peekable();
    let Some((_, first)) = series.peek() else {
        return Ok(());
    };
    let kind = first.metric_type();
    let unit = unit.as_ref();
    let mut metric = enc.encode_descriptor(base_name(name, unit), help, unit, kind)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family of one unlabelled series.
fn single<M: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    unit: Option<Unit>,
    help: &str,
    value: M,
) -> fmt::Result {
    let unit = unit.as_ref();
    let metric = enc.encode_descriptor(base_name(name, unit), help, unit, value.metric_type())?;
    value.encode(metric)
}
