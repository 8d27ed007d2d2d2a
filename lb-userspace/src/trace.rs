//! `lb trace`: the request, the filter the datapath applies, the datapath's
//! records decoded and named, and the lines the CLI prints. The agent's
//! side (swapping the trace build in and out) is agent/tracing.rs.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use lb_common::{
    DIR_FORWARD, DIR_REVERSE, FlowKey, TRACE_WHY_NAMES, TraceEndpoint, TraceFilter, TraceRecord,
    from_map_addr, reason, to_map_addr,
};
use serde::{Deserialize, Serialize};

use crate::{api::FlowState, control::Programmed};

/// How long a trace runs unless told otherwise, and the longest it may.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(60);
pub const LONGEST: Duration = Duration::from_secs(3600);

/// What to trace (the API request's body; every part optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// A VIP's name, or ADDR[:PORT].
    #[serde(default)]
    pub vip: Option<String>,
    /// ADDR[:PORT] ([ADDR]:PORT for IPv6).
    #[serde(default)]
    pub client: Option<String>,
    #[serde(default)]
    pub real: Option<String>,
    /// Reason names (`lb stats`), `drops` or `passes`, comma-separated.
    #[serde(default)]
    pub reason: Option<String>,
    /// Stop after this many packets.
    #[serde(default)]
    pub count: Option<u64>,
    /// Stop after this long (seconds; the agent enforces it).
    #[serde(default)]
    pub max_duration_s: Option<u64>,
}

impl Spec {
    pub fn max_duration(&self) -> Result<Duration> {
        let d = self
            .max_duration_s
            .map_or(DEFAULT_MAX_DURATION, Duration::from_secs);
        if d.is_zero() || d > LONGEST {
            bail!(
                "max duration {}s: give 1 to {}s",
                d.as_secs(),
                LONGEST.as_secs()
            );
        }
        Ok(d)
    }

    /// The datapath's filter; a VIP by name is looked up in `programmed`.
    pub fn filter(&self, programmed: &Programmed) -> Result<TraceFilter> {
        let vip = match self.vip.as_deref() {
            None => TraceEndpoint::default(),
            Some(v) => match programmed.vips.get(v) {
                Some(e) => endpoint_at(e.addr.ip(), Some(e.addr.port())),
                None => endpoint(v).with_context(|| format!("--vip {v}: no VIP of that name"))?,
            },
        };
        let opt = |s: &Option<String>, what: &str| -> Result<TraceEndpoint> {
            s.as_deref().map_or(Ok(TraceEndpoint::default()), |v| {
                endpoint(v).with_context(|| format!("--{what} {v}"))
            })
        };
        Ok(TraceFilter {
            client: opt(&self.client, "client")?,
            vip,
            real: opt(&self.real, "real")?,
            reasons: self.reason.as_deref().map_or(Ok(0), reasons)?,
            on: 1,
            ..TraceFilter::default()
        })
    }
}

/// ADDR, ADDR:PORT or [ADDR]:PORT.
pub fn endpoint(s: &str) -> Result<TraceEndpoint> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(endpoint_at(a.ip(), Some(a.port())));
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(endpoint_at(ip, None)),
        Err(_) => bail!("not an address or ADDR:PORT: {s:?}"),
    }
}

fn endpoint_at(ip: IpAddr, port: Option<u16>) -> TraceEndpoint {
    TraceEndpoint {
        addr: to_map_addr(ip),
        port_be: port.unwrap_or(0).to_be(),
        set: if port.is_some() { 2 } else { 1 },
        _pad: 0,
    }
}

/// A bit per reason named in `s`: names as `lb stats` shows them, `drops`
/// (every `drop_*`) or `passes` (every `pass_*`), comma-separated.
pub fn reasons(s: &str) -> Result<u64> {
    let mut mask = 0u64;
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let prefix = match word {
            "drops" | "drop" => Some("drop_"),
            "passes" | "pass" => Some("pass_"),
            _ => None,
        };
        let mut found = false;
        for (i, name) in reason::NAMES.iter().enumerate() {
            if prefix.map_or(*name == word, |p| name.starts_with(p)) {
                mask |= 1 << i;
                found = true;
            }
        }
        if !found {
            bail!(
                "unknown reason {word:?}: `drops`, `passes`, or one of {}",
                reason::NAMES.join(", ")
            );
        }
    }
    if mask == 0 {
        bail!("--reason: name at least one reason");
    }
    Ok(mask)
}

/// A record from the datapath, as aya-log delivers it: its bytes in hex.
pub fn decode(hex: &str) -> Option<TraceRecord> {
    let hex = hex.trim();
    if hex.len() != 2 * size_of::<TraceRecord>() {
        return None;
    }
    let mut bytes = [0u8; size_of::<TraceRecord>()];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    // SAFETY: TraceRecord is plain integers; every bit pattern is valid.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<TraceRecord>()) })
}

/// Collects aya-log's records (each a `TraceRecord` in hex) for `Records`.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<String>>>);

impl log::Log for Collector {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut v) = self.0.lock() {
            v.push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

/// The trace build's records as they come (its aya-log ring): readable
/// when its fd is.
pub struct Records {
    logger: aya_log::EbpfLogger<Collector>,
    collector: Collector,
    /// Records that did not decode (none, unless the builds disagree).
    pub malformed: u64,
}

impl Records {
    /// Takes the trace build's log ring out of `dp`.
    pub fn open(dp: &mut crate::datapath::Datapath) -> Result<Self> {
        let collector = Collector::default();
        let logger = dp.trace_logger(collector.clone())?;
        Ok(Records {
            logger,
            collector,
            malformed: 0,
        })
    }

    /// Every record in the ring now, oldest first.
    pub fn read(&mut self) -> Vec<TraceRecord> {
        self.logger.flush();
        let batch =
            std::mem::take(&mut *self.collector.0.lock().unwrap_or_else(|p| p.into_inner()));
        let mut out = Vec::with_capacity(batch.len());
        for hex in batch {
            match decode(&hex) {
                Some(r) => out.push(r),
                None => {
                    self.malformed += 1;
                    log::warn!("trace: a record of unexpected form: {hex:?}");
                }
            }
        }
        out
    }
}

impl std::os::fd::AsRawFd for Records {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.logger.as_raw_fd()
    }
}

/// What the ids in a record stand for, taken when the trace starts.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub ifaces: HashMap<u32, String>,
    /// VIP id: (name, farm).
    pub vips: HashMap<u32, (String, String)>,
    pub farms: HashMap<u32, String>,
    /// Real id: ADDR:PORT.
    pub reals: HashMap<u32, String>,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns: a record's time of day.
    pub realtime_offset_ns: i128,
}

impl Names {
    pub fn new(programmed: &Programmed, ifaces: &[String]) -> Self {
        let mut n = Names {
            realtime_offset_ns: realtime_offset_ns(),
            ..Names::default()
        };
        for iface in ifaces {
            if let Ok(i) = crate::datapath::ifindex(iface) {
                n.ifaces.insert(i, iface.clone());
            }
        }
        for v in programmed.vips.values() {
            n.vips.insert(v.id, (v.name.clone(), v.farm.clone()));
        }
        for (name, f) in &programmed.farms {
            n.farms.insert(f.id, name.clone());
        }
        for (key, (id, _)) in &programmed.reals {
            n.reals.insert(*id, key.endpoint().to_string());
        }
        n
    }
}

fn realtime_offset_ns() -> i128 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128;
    real - crate::datapath::now_ns() as i128
}

/// One side of a packet: its 5-tuple.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tuple {
    pub src: String,
    pub dst: String,
    pub proto: String,
}

/// One packet's line: what arrived, what lb made of it and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub interface: String,
    pub hook: String,
    /// `forward` (client to real), `reverse` (real to client) or `-`.
    pub direction: String,
    pub received: Tuple,
    /// After NAT; absent when lb did not rewrite the packet.
    pub sent: Option<Tuple>,
    pub vip: Option<String>,
    pub farm: Option<String>,
    pub real: Option<String>,
    /// new, sticky, established, reassigned, purged, reply, or `-`.
    pub why: String,
    /// A new flow's algorithm.
    pub algorithm: Option<String>,
    /// The flow's state before and after the packet (`-`: no flow).
    pub state_before: String,
    pub state_after: String,
    /// pass, drop, tx or redirect.
    pub verdict: String,
    pub reason: String,
}

/// The last line of a trace: why it ended and how many packets it showed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct End {
    pub end: String,
    pub packets: u64,
}

/// A line of the trace stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    End(End),
    Event(Box<Event>),
}

fn tuple(k: &FlowKey, family: u8) -> Tuple {
    let at = |a: &[u8; 16], port_be: u16| {
        let ip = from_map_addr(a);
        match (family, k.proto) {
            (0, _) => "-".to_string(),
            (_, lb_common::PROTO_TCP | lb_common::PROTO_UDP) => {
                SocketAddr::new(ip, u16::from_be(port_be)).to_string()
            }
            _ => ip.to_string(),
        }
    };
    Tuple {
        src: at(&k.src_addr, k.src_port_be),
        dst: at(&k.dst_addr, k.dst_port_be),
        proto: match k.proto {
            lb_common::PROTO_TCP => "tcp".into(),
            lb_common::PROTO_UDP => "udp".into(),
            0 => "-".into(),
            p => p.to_string(),
        },
    }
}

fn state(s: u8) -> String {
    if s == 0 {
        "-"
    } else {
        FlowState::from_datapath(s).as_str()
    }
    .to_string()
}

/// The verdict's name: XDP's actions, or tc's (TC_ACT_OK 0, SHOT 2,
/// REDIRECT 7).
fn verdict(tc: bool, action: u32) -> String {
    match (tc, action) {
        (false, 1) | (true, 2) => "drop",
        (false, 2) | (true, 0) => "pass",
        (false, 3) => "tx",
        (false, 4) | (true, 7) => "redirect",
        (false, 0) => "aborted",
        _ => return action.to_string(),
    }
    .to_string()
}

impl Event {
    pub fn new(r: &TraceRecord, n: &Names) -> Self {
        let vip = n.vips.get(&r.vip_id);
        let new = r.why == lb_common::TRACE_WHY_NEW;
        Event {
            time_ns: (r.ktime_ns as i128 + n.realtime_offset_ns).max(0) as u64,
            interface: n
                .ifaces
                .get(&r.ifindex)
                .cloned()
                .unwrap_or_else(|| format!("if{}", r.ifindex)),
            hook: if r.tc != 0 { "tc" } else { "xdp" }.into(),
            direction: match r.dir {
                DIR_FORWARD => "forward",
                DIR_REVERSE => "reverse",
                _ => "-",
            }
            .into(),
            received: tuple(&r.received, r.family),
            sent: (r.rewritten != 0).then(|| tuple(&r.sent, r.family)),
            vip: vip.map(|v| v.0.clone()),
            farm: vip
                .map(|v| v.1.clone())
                .or_else(|| n.farms.get(&r.farm_id).cloned()),
            real: n.reals.get(&r.real_id).cloned(),
            why: TRACE_WHY_NAMES
                .get(r.why as usize)
                .copied()
                .unwrap_or("?")
                .into(),
            algorithm: new.then(|| {
                crate::config::Algorithm::from_datapath(r.alg.into())
                    .map_or("?", |a| a.name())
                    .to_string()
            }),
            state_before: state(r.state_before),
            state_after: state(r.state_after),
            verdict: verdict(r.tc != 0, r.action),
            reason: reason::NAMES
                .get(r.reason as usize)
                .copied()
                .unwrap_or("?")
                .into(),
        }
    }
}

/// The table's header and one event as a row of it.
pub const HEADER: &str = "TIME             IFACE  DIR  RECEIVED                                    SENT                                        VIP/REAL                WHY              STATE         VERDICT";

pub fn render(e: &Event) -> String {
    let secs = e.time_ns / 1_000_000_000;
    let time = format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        e.time_ns % 1_000_000_000 / 1000
    );
    let t = |t: &Tuple| format!("{} {} > {}", t.proto, t.src, t.dst);
    let sent = e.sent.as_ref().map_or_else(|| "-".to_string(), t);
    let dir = match e.direction.as_str() {
        "forward" => "->",
        "reverse" => "<-",
        _ => "-",
    };
    let target = match (&e.vip, &e.real) {
        (Some(v), Some(r)) => format!("{v} {r}"),
        (Some(v), None) => v.clone(),
        (None, Some(r)) => r.clone(),
        (None, None) => "-".into(),
    };
    let why = match &e.algorithm {
        Some(a) => format!("{} ({a})", e.why),
        None => e.why.clone(),
    };
    let state = if e.state_before == "-" && e.state_after == "-" {
        "-".to_string()
    } else {
        format!("{}>{}", e.state_before, e.state_after)
    };
    format!(
        "{time}  {:<6} {dir:<4} {:<43} {sent:<43} {target:<23} {why:<16} {state:<13} {} ({})",
        e.interface,
        t(&e.received),
        e.verdict,
        e.reason
    )
}

/// The client's socket while `follow` runs, for its SIGINT handler.
static FOLLOWING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_sigint(_: libc::c_int) {
    let fd = FOLLOWING.load(std::sync::atomic::Ordering::SeqCst);
    if fd >= 0 {
        // Async-signal-safe: the agent reads the end of the request side,
        // ends the trace, and sends its last line, which ends `follow`.
        // SAFETY: shutdown(2) on our own socket.
        unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    }
}

/// `lb trace`: asks the agent for a trace and prints its lines (a table,
/// or with `json` the agent's objects, one per line) until it ends. Ctrl-C
/// ends it cleanly: the agent swaps the production build back and says so.
pub fn follow(socket: &std::path::Path, spec: &Spec, json: bool) -> Result<End> {
    use std::io::{BufRead, BufReader, Write};
    use std::os::fd::AsRawFd;
    let mut s = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to the agent at {} (is `lb run` running?)",
            socket.display()
        )
    })?;
    let mut req = serde_json::to_string(&crate::api::Request::Trace(spec.clone()))?;
    req.push('\n');
    s.write_all(req.as_bytes())?;
    let mut rd = BufReader::new(s.try_clone()?);
    let mut first = String::new();
    rd.read_line(&mut first)?;
    let resp: crate::api::Response =
        serde_json::from_str(first.trim()).context("bad response from the agent")?;
    if !resp.ok {
        bail!("{}", resp.error.unwrap_or_default());
    }
    FOLLOWING.store(s.as_raw_fd(), std::sync::atomic::Ordering::SeqCst);
    // SAFETY: installs a handler that only calls shutdown(2).
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    if !json {
        println!("{HEADER}");
    }
    let mut out = std::io::stdout().lock();
    let mut line = String::new();
    let end = loop {
        line.clear();
        match rd.read_line(&mut line) {
            Ok(0) => {
                break End {
                    end: "the agent closed the connection".into(),
                    packets: 0,
                };
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        match serde_json::from_str::<Line>(line.trim()) {
            Ok(Line::End(e)) => break e,
            Ok(Line::Event(_)) if json => writeln!(out, "{}", line.trim())?,
            Ok(Line::Event(e)) => writeln!(out, "{}", render(&e))?,
            Err(e) => bail!("bad trace line from the agent ({e}): {line}"),
        }
        out.flush()?;
    };
    FOLLOWING.store(-1, std::sync::atomic::Ordering::SeqCst);
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_by_name_and_group() {
        let m = reasons("drops").unwrap();
        assert!(m & (1 << reason::DROP_BAD_L4) != 0);
        assert!(m & (1 << reason::FORWARD) == 0);
        assert_eq!(
            reasons("forward,reverse").unwrap(),
            (1 << reason::FORWARD) | (1 << reason::REVERSE)
        );
        let e = reasons("forwrad").unwrap_err().to_string();
        assert!(e.contains("unknown reason \"forwrad\""), "{e}");
    }

    #[test]
    fn endpoints() {
        let e = endpoint("10.0.0.1:80").unwrap();
        assert_eq!((e.set, u16::from_be(e.port_be)), (2, 80));
        assert_eq!(endpoint("10.0.0.1").unwrap().set, 1);
        assert_eq!(endpoint("[2001:db8::1]:443").unwrap().set, 2);
        assert_eq!(endpoint("2001:db8::1").unwrap().set, 1);
        assert!(endpoint("www").is_err());
    }

    #[test]
    fn a_record_survives_hex() {
        let r = TraceRecord {
            ktime_ns: 5,
            reason: reason::FORWARD,
            vip_id: 3,
            real_id: u32::MAX,
            why: lb_common::TRACE_WHY_NEW,
            ..TraceRecord::default()
        };
        // SAFETY: plain integers.
        let bytes: [u8; size_of::<TraceRecord>()] = unsafe { std::mem::transmute(r) };
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(decode(&hex), Some(r));
        assert_eq!(decode("00"), None);
    }
}
