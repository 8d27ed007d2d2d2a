//! Prometheus metrics: `GET /metrics` on `metrics.listen` (default
//! `127.0.0.1:9100`), in the OpenMetrics text format that Prometheus asks
//! for first and parses natively.
//!
//! The agent owns the BPF maps and the health state, so this module reads
//! neither. On each scrape the HTTP task sends a [`SnapshotRequest`] (a
//! oneshot sender) over an mpsc channel, the agent's main loop answers it
//! with a fresh [`Snapshot`], and [`render`] turns that into text with the
//! Prometheus org's `prometheus-client` crate: one collector per scrape, so
//! nothing is cached between scrapes and every series comes out in the
//! snapshot's order. This is the same request/answer shape as
//! [`crate::api`], so the collecting code runs on the agent's own
//! (current_thread) runtime and needs to be neither `Send` nor `Sync`.
//!
//! Wiring, in the agent:
//!
//! ```ignore
//! let (metrics_tx, mut metrics_rx) = tokio::sync::mpsc::channel(4);
//! metrics::serve(config.metrics.listen, metrics_tx)?;
//! loop {
//!     tokio::select! {
//!         Some(reply) = metrics_rx.recv() => { let _ = reply.send(snapshot()); }
//!         // ... the agent's other events
//!     }
//! }
//! ```
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
//!
//! A labelled family with no series (no VIPs yet, no latency measured) is
//! left out entirely rather than shown as a bare `# TYPE`.
use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
    task::JoinHandle,
    time::timeout,
};

#[cfg(test)]
mod tests;

/// The `Content-Type` of a scrape's answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The states `lb_real_state` always shows, so a state's series exists (at
/// 0) before a real first enters it and alerts can match on `== 1`.
pub const REAL_STATES: [&str; 4] = ["up", "down", "drain", "disabled"];

/// What the HTTP task sends the agent for each scrape; the agent answers
/// with the current [`Snapshot`].
pub type SnapshotRequest = oneshot::Sender<Snapshot>;

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
    /// `"active"` / `"standby"`; `None` without HA, and then neither HA
    /// family is shown.
    pub ha_role: Option<String>,
    pub ha_sync_lag_seconds: Option<f64>,
    pub ha_sync_unacked: Option<u64>,
    /// Sync datagrams received, by `accepted` or reject reason.
    pub ha_messages: Vec<(String, u64)>,
    /// Sync events by what happened to them.
    pub ha_events: Vec<(String, u64)>,
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
    /// One of [`REAL_STATES`].
    pub state: String,
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
                .map(|r| (real(r), gauge(u64::from(r.state == "up")))),
        )?;
        family(
            enc,
            "lb_real_state",
            None,
            "The real server's state: 1 on the current one of up, down, drain, disabled",
            s.reals.iter().flat_map(|r| {
                let known = REAL_STATES.contains(&r.state.as_str());
                // A state this list does not know yet still shows, as itself.
                let extra = (!known).then_some(r.state.as_str());
                REAL_STATES
                    .into_iter()
                    .chain(extra)
                    .map(|st| (real_with(r, "state", st), gauge(u64::from(st == r.state))))
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

/// A request head larger than this is refused (431).
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request head, and then to read the
/// answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a scrape waits for the agent's snapshot: Prometheus's default
/// scrape timeout.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;

/// Binds `listen` and serves `GET /metrics` there (404 elsewhere), asking
/// `ask` for a snapshot on each scrape: see the module docs for the agent's
/// side. Must be called inside a tokio runtime (any flavour); the returned
/// task runs until aborted.
pub fn serve(listen: SocketAddr, ask: mpsc::Sender<SnapshotRequest>) -> Result<JoinHandle<()>> {
    let listener = std::net::TcpListener::bind(listen).with_context(|| {
        format!(
            "binding the metrics endpoint on {listen}; stop what holds the port or set another `metrics.listen`"
        )
    })?;
    serve_on(listener, ask)
}

/// As [`serve`], on a listener the caller bound (tests bind port 0 and read
/// the port back with `local_addr`).
pub fn serve_on(
    listener: std::net::TcpListener,
    ask: mpsc::Sender<SnapshotRequest>,
) -> Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Handle::try_current()
        .context("metrics::serve must be called inside a tokio runtime")?;
    let _entered = runtime.enter();
    listener
        .set_nonblocking(true)
        .context("making the metrics listener non-blocking")?;
    let listener = TcpListener::from_std(listener).context("registering the metrics listener")?;
    Ok(runtime.spawn(accept_loop(listener, ask)))
}

async fn accept_loop(listener: TcpListener, ask: mpsc::Sender<SnapshotRequest>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let ask = ask.clone();
                tokio::spawn(async move {
                    handle(stream, &ask).await;
                    drop(slot);
                });
            }
            Err(e) => {
                // Out of file descriptors, usually: back off instead of spinning.
                log::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One request per connection, then close: all a scraper needs.
async fn handle(mut stream: TcpStream, ask: &mpsc::Sender<SnapshotRequest>) {
    let reply = match timeout(CLIENT_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => route(&head, ask).await,
        Ok(Err(HeadError::TooLarge)) => Reply::text(431, "Request Header Fields Too Large", ""),
        Ok(Err(HeadError::Malformed)) => Reply::text(400, "Bad Request", ""),
        // The client went away or went quiet: nobody to answer.
        Ok(Err(HeadError::Io)) | Err(_) => return,
    };
    let _ = timeout(CLIENT_TIMEOUT, async {
        stream.write_all(&reply.encode()).await?;
        stream.shutdown().await
    })
    .await;
}

enum HeadError {
    TooLarge,
    Malformed,
    Io,
}

/// Reads up to the blank line that ends the request head. Reading all of it
/// before answering matters: closing a socket with unread input resets the
/// connection, and the client may lose the answer.
async fn read_head(stream: &mut TcpStream) -> Result<String, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.truncate(end);
            return String::from_utf8(buf).map_err(|_| HeadError::Malformed);
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn route(head: &str, ask: &mpsc::Sender<SnapshotRequest>) -> Reply {
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Reply::text(400, "Bad Request", "");
    };
    if !version.starts_with("HTTP/1.") {
        return Reply::text(400, "Bad Request", "");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Reply::text(404, "Not Found", "not found; metrics are at /metrics\n");
    }
    if method != "GET" && method != "HEAD" {
        let mut reply = Reply::text(405, "Method Not Allowed", "");
        reply.allow = true;
        return reply;
    }
    let mut reply = match snapshot(ask).await {
        Ok(s) => Reply {
            status: 200,
            reason: "OK",
            content_type: CONTENT_TYPE,
            body: render(&s),
            allow: false,
            head_only: false,
        },
        Err(why) => {
            log::warn!("metrics: scrape failed: {why}");
            Reply::text(503, "Service Unavailable", &format!("{why}\n"))
        }
    };
    reply.head_only = method == "HEAD";
    reply
}

async fn snapshot(ask: &mpsc::Sender<SnapshotRequest>) -> Result<Snapshot, &'static str> {
    let (tx, rx) = oneshot::channel();
    let asked = async {
        ask.send(tx)
            .await
            .map_err(|_| "the agent is shutting down")?;
        rx.await.map_err(|_| "the agent dropped the request")
    };
    timeout(AGENT_TIMEOUT, asked)
        .await
        .unwrap_or(Err("the agent did not answer within 10s"))
}

struct Reply {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    /// Send `Allow: GET, HEAD` (with a 405).
    allow: bool,
    /// A HEAD request: the head of the GET answer, no body.
    head_only: bool,
}

impl Reply {
    fn text(status: u16, reason: &'static str, body: &str) -> Self {
        Self {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
            allow: false,
            head_only: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        if !self.head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}
