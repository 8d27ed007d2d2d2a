//! The YAML configuration (`/etc/lb/lb.yaml`): typed structs, parsing and
//! validation. The README's Config section shows the schema by example.
//!
//! Parsing is two passes over the same text:
//! 1. serde_yaml deserializes into the structs below. Syntax errors, type
//!    errors and misspelled keys (`deny_unknown_fields` everywhere) stop it;
//!    its error carries the line:column, and is reported alone.
//! 2. `validate` checks what types cannot say (references between sections,
//!    ranges, duplicates, limits) and collects every issue. A position index
//!    (`index`) built from a span-reporting parser turns each issue's key
//!    path back into the line:column of the offending value.
//!
//! Every issue prints as `file:line:column: key.path: message`.

mod cluster;
pub mod duration;
mod host;
mod index;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

pub use duration::{format_duration, parse_duration};

pub use cluster::{Bgp, Cluster, Neighbor};
pub use host::HostIssues;
use index::PosIndex;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Interfaces the datapath attaches to, each by its hook.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub xdp_mode: XdpMode,
    #[serde(default)]
    pub probes: BTreeMap<String, Probe>,
    #[serde(default)]
    pub serverfarms: BTreeMap<String, Farm>,
    #[serde(default)]
    pub vips: BTreeMap<String, Vip>,
    #[serde(default)]
    pub ha: Option<Ha>,
    /// Exclusive with `ha`.
    #[serde(default)]
    pub cluster: Option<Cluster>,
    #[serde(default)]
    pub api: Api,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub bpf: Bpf,
}

/// An interface lb serves: `eth0` (hook `auto`), or
/// `{ name: eth0, hook: xdp | tc | auto }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub hook: Hook,
}

/// Where the datapath runs on an interface (`hook:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// Native XDP where the driver has it and the device is not a veth; tc
    /// otherwise. An `xdp_mode` other than `auto` asks for XDP.
    #[default]
    Auto,
    Xdp,
    /// tc clsact ingress (sched_cls): the skb layer, where veth and
    /// container hosts are better served than by XDP.
    Tc,
}

impl Serialize for Interface {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Full<'a> {
            name: &'a str,
            hook: Hook,
        }
        match self.hook {
            Hook::Auto => s.serialize_str(&self.name),
            hook => Full {
                name: &self.name,
                hook,
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Interface {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            name: String,
            #[serde(default)]
            hook: Hook,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Interface;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an interface name, or `{ name: IFACE, hook: xdp | tc | auto }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Interface, E> {
                Ok(Interface {
                    name: v.to_string(),
                    hook: Hook::Auto,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, m: A) -> Result<Interface, A::Error> {
                let f = Full::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(Interface {
                    name: f.name,
                    hook: f.hook,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A real of the config: its farm and its index in the farm's `reals`.
pub type RealAt = (String, usize);

impl Config {
    /// The ports a real serves on: its own, or that of each VIP of its farm.
    pub fn real_ports(&self, farm: &str, real: &RealCfg) -> Vec<u16> {
        match real.port {
            Some(p) => vec![p],
            None => {
                let mut ports: Vec<u16> = self
                    .vips
                    .values()
                    .filter(|v| v.serverfarm == farm)
                    .map(|v| v.port)
                    .collect();
                ports.sort_unstable();
                ports.dedup();
                ports
            }
        }
    }

    /// The real `track: FARM/ADDR[:PORT]` names, or why it names none.
    pub fn tracked(&self, track: &str) -> Result<RealAt, String> {
        let Some((farm, endpoint)) = track.split_once('/') else {
            return Err(format!(
                "track must be FARM/ADDR[:PORT] (e.g. web/10.0.0.11:8080), not {track:?}"
            ));
        };
        let Some(f) = self.serverfarms.get(farm) else {
            return Err(format!("track: no serverfarm `{farm}`"));
        };
        let Some((addr, port)) = crate::endpoint::parse(endpoint) else {
            return Err(format!(
                "track: {endpoint:?} is not ADDR or ADDR:PORT ([ADDR]:PORT for IPv6)"
            ));
        };
        let found: Vec<usize> = f
            .reals
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.address == addr && port.is_none_or(|p| self.real_ports(farm, r).contains(&p))
            })
            .map(|(i, _)| i)
            .collect();
        match found[..] {
            [i] => Ok((farm.to_string(), i)),
            [] => Err(format!("track: serverfarm `{farm}` has no real {endpoint}")),
            _ => Err(format!(
                "track: {endpoint} names {} reals of `{farm}`; add the port",
                found.len()
            )),
        }
    }

    /// Every tracking real and the real it follows, resolved; `lb check`
    /// has refused a config where one does not resolve.
    pub fn tracks(&self) -> Vec<(RealAt, RealAt)> {
        let mut out = Vec::new();
        for (farm, f) in &self.serverfarms {
            for (i, r) in f.reals.iter().enumerate() {
                if let Some(Ok(to)) = r.track.as_deref().map(|t| self.tracked(t)) {
                    out.push(((farm.clone(), i), to));
                }
            }
        }
        out
    }

    /// The names of `interfaces`, in order.
    pub fn interface_names(&self) -> Vec<String> {
        self.interfaces.iter().map(|i| i.name.clone()).collect()
    }
}

/// How XDP is attached (`xdp_mode:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native where the driver supports it, generic otherwise.
    #[default]
    Auto,
    Native,
    Generic,
}

/// A health probe (`probes.NAME`), run by [`crate::health`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// yaml: `type`.
    #[serde(rename = "type")]
    pub kind: ProbeKind,
    /// HTTP request path (http only).
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// Status codes that count as up (http only); default 200-399.
    #[serde(default)]
    pub expect: Expect,
    #[serde(default = "default_probe_interval", with = "duration::required")]
    pub interval: Duration,
    /// Interval while a real is changing state; `None`: `interval`.
    #[serde(default, with = "duration::optional")]
    pub fast_interval: Option<Duration>,
    /// Interval while a real is down; `None`: `interval`.
    #[serde(default, with = "duration::optional")]
    pub down_interval: Option<Duration>,
    #[serde(default = "default_probe_timeout", with = "duration::required")]
    pub timeout: Duration,
    /// Successes in a row to mark a real up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Failures in a row to mark a real down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Port to probe; `None`: the real's port.
    #[serde(default, deserialize_with = "de_opt_port")]
    pub port: Option<u16>,
    /// HTTP `Host` header (http only).
    #[serde(default)]
    pub host: Option<String>,
    /// Text the response body must contain (http only).
    #[serde(default)]
    pub body: Option<String>,
    /// HTTP method (http only).
    #[serde(default = "default_method")]
    pub method: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Tcp,
    Http,
}

/// An HTTP status or an inclusive range of them: `200` or `200-399`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub lo: u16,
    pub hi: u16,
}

impl Default for Expect {
    fn default() -> Self {
        Expect { lo: 200, hi: 399 }
    }
}

/// A serverfarm (`serverfarms.NAME`): the reals a VIP balances over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Farm {
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub failaction: FailAction,
    /// Names of probes (all must pass).
    #[serde(default)]
    pub probes: Vec<String>,
    #[serde(default)]
    pub observe: Option<Observe>,
    #[serde(default, with = "duration::optional")]
    pub slow_start: Option<Duration>,
    /// The health state a real starts in (`init_state:`); default down.
    #[serde(default)]
    pub init_state: InitState,
    #[serde(default)]
    pub reals: Vec<RealCfg>,
}

/// Where a real's health starts (`init_state:`), at start and when it is
/// added by a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitState {
    /// No new flows until its first successful probe (which alone brings it
    /// up, without waiting for `rise`). A real without probes is up anyway.
    #[default]
    Down,
    /// Up at once; probes take it down after `fall` failures.
    Up,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    #[default]
    RoundRobin,
    WeightedRoundRobin,
    LeastConn,
    SourceHash,
    Maglev,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConn,
        Algorithm::SourceHash,
        Algorithm::Maglev,
    ];

    /// The YAML's spelling (serde's, which a config test holds it to).
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::WeightedRoundRobin => "weighted-round-robin",
            Algorithm::LeastConn => "least-conn",
            Algorithm::SourceHash => "source-hash",
            Algorithm::Maglev => "maglev",
        }
    }

    /// The datapath's number for it (`lb_common::ALG_*`).
    pub const fn datapath(self) -> u32 {
        match self {
            Algorithm::RoundRobin => lb_common::ALG_ROUND_ROBIN,
            Algorithm::WeightedRoundRobin => lb_common::ALG_WEIGHTED_ROUND_ROBIN,
            Algorithm::LeastConn => lb_common::ALG_LEAST_CONN,
            Algorithm::SourceHash => lb_common::ALG_SOURCE_HASH,
            Algorithm::Maglev => lb_common::ALG_MAGLEV,
        }
    }

    pub fn from_datapath(alg: u32) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.datapath() == alg)
    }
}

/// What happens to a real's flows when it goes down (the README's fail
/// actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailAction {
    #[default]
    None,
    Purge,
    Reassign,
}

/// Passive health from the datapath (`observe:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observe {
    /// Errors (RST / unanswered SYN) in a row that mark a real down.
    pub errors: u32,
    /// How long it stays down before probes may bring it back.
    #[serde(default, with = "duration::optional")]
    pub hold: Option<Duration>,
}

/// One real server of a farm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealCfg {
    pub address: IpAddr,
    /// `None`: the same port as the VIP.
    #[serde(default, deserialize_with = "de_opt_port")]
    pub port: Option<u16>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub max_conns: Option<u32>,
    /// Used only when no primary real is up.
    #[serde(default)]
    pub backup: bool,
    /// yaml: `state`.
    #[serde(default)]
    pub state: AdminState,
    /// `FARM/ADDR[:PORT]`: follow that real's health instead of being
    /// checked (HAProxy's `track`); the farm must not probe or observe.
    #[serde(default)]
    pub track: Option<String>,
}

/// The administrator's wish for a real; health decides within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    #[default]
    Up,
    /// No new flows; existing ones finish.
    Drain,
    Disabled,
}

/// A virtual server (`vips.NAME`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    pub address: IpAddr,
    #[serde(deserialize_with = "de_port")]
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    pub serverfarm: String,
    #[serde(default)]
    pub sticky: Option<Sticky>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// What a new flow gets when the farm has no real to take it.
    #[serde(default)]
    pub no_real: NoReal,
}

/// `no_real:` on a VIP: how a new flow the farm has no live real for is
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoReal {
    /// A TCP RST, or an ICMP port unreachable for UDP (rate-limited): the
    /// client fails at once.
    #[default]
    Reset,
    /// Silence: the client waits out its own timeout.
    Drop,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// From the IP protocol number the datapath keys on (TCP or UDP: it
    /// keeps no other flows).
    pub const fn from_datapath(proto: u8) -> Protocol {
        if proto == lb_common::PROTO_UDP {
            Protocol::Udp
        } else {
            Protocol::Tcp
        }
    }
}

/// Persistence (`sticky:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    #[serde(default)]
    pub mode: StickyMode,
    #[serde(with = "duration::required")]
    pub timeout: Duration,
    /// IPv6 VIPs only: clients whose addresses share this many leading bits
    /// share one sticky entry, so a host that changes its address within its
    /// /64 (privacy addresses) keeps its real. `None`: the whole address,
    /// as for IPv4 clients. 1..=128; refused on an IPv4 VIP ([`validate`]).
    #[serde(
        default,
        deserialize_with = "de_opt_prefix",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_prefix: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StickyMode {
    #[default]
    SourceIp,
}

/// Idle timeouts of a VIP's flows, by state. Each key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    #[serde(with = "duration::required")]
    pub syn: Duration,
    #[serde(with = "duration::required")]
    pub established: Duration,
    #[serde(with = "duration::required")]
    pub fin: Duration,
    #[serde(with = "duration::required")]
    pub udp: Duration,
    #[serde(with = "duration::required")]
    pub closed: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            syn: Duration::from_secs(10),
            established: Duration::from_secs(3600),
            fin: Duration::from_secs(30),
            udp: Duration::from_secs(60),
            closed: Duration::from_secs(10),
        }
    }
}

/// Stateful failover (`ha:`): see `crate::ha`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ha {
    /// 1..=255, unique within the pair.
    #[serde(deserialize_with = "de_node_id")]
    pub node_id: u8,
    /// The higher priority becomes active; default 100.
    #[serde(default = "default_priority")]
    pub priority: u8,
    pub listen: SocketAddr,
    pub peer: SocketAddr,
    /// Shared secret that authenticates every sync message.
    pub key_file: PathBuf,
    #[serde(default = "default_heartbeat", with = "duration::required")]
    pub heartbeat: Duration,
    /// `None`: 3 × heartbeat.
    #[serde(default, with = "duration::optional")]
    pub dead_interval: Option<Duration>,
    /// Take the active role back from a lower-priority peer.
    #[serde(default)]
    pub preempt: bool,
    /// Held by the active node. A node that is not active pings them over
    /// the data plane: an answer means another box still serves them (the
    /// sync link alone is cut, or the peer's datapath forwards while its
    /// agent restarts), so heartbeat silence alone does not promote it.
    #[serde(default)]
    pub floating_ips: Vec<FloatingIp>,
}

/// An address the active node holds (`{ address: 192.0.2.10/24, interface: eth0 }`,
/// or `2001:db8::10/64`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIp {
    pub address: IpCidr,
    pub interface: String,
}

/// `a.b.c.d/len` (0..=32) or `x:y::z/len` (0..=128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// The API socket (`api:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    pub socket: PathBuf,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            socket: PathBuf::from("/run/lb/lb.sock"),
        }
    }
}

/// The Prometheus endpoint (`metrics:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
        }
    }
}

/// BPF object settings (`bpf:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bpf {
    /// Where maps are pinned (a bpffs mount).
    pub pin_dir: PathBuf,
    /// `FLOWS` entries, two per flow.
    pub flow_table_size: u32,
}

impl Default for Bpf {
    fn default() -> Self {
        Bpf {
            pin_dir: PathBuf::from("/sys/fs/bpf/lb"),
            flow_table_size: lb_common::FLOW_TABLE_DEFAULT,
        }
    }
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigIssue {
    pub file: String,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    /// Key path such as `serverfarms.web.reals[2].weight`; empty for the
    /// file as a whole (syntax errors).
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    /// `lb.yaml:14:17: serverfarms.web.reals[2].weight: weight must be 0..=10000`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Everything wrong with a file, in file order where known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.errors))]
pub struct ConfigError {
    pub errors: Vec<ConfigIssue>,
}

fn lines(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads and validates `path`; issues name the file as given.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file_name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(src) => Config::parse(&src, &file_name),
            Err(err) => Err(ConfigError {
                errors: vec![ConfigIssue {
                    file: file_name,
                    line: None,
                    column: None,
                    path: String::new(),
                    message: format!("cannot read the config file: {err}; pass another with -c"),
                }],
            }),
        }
    }

    /// The API socket and the pin directory a config names, read leniently
    /// (defaults where the file is unreadable or broken), so the CLI can
    /// still reach the agent and the pinned maps; the agent judges the file.
    pub fn paths(path: &Path) -> (PathBuf, PathBuf) {
        let doc: Option<serde_yaml::Value> = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| serde_yaml::from_str(&s).ok());
        let get = |section: &str, key: &str| {
            doc.as_ref()?
                .get(section)?
                .get(key)?
                .as_str()
                .map(PathBuf::from)
        };
        (
            get("api", "socket").unwrap_or_else(|| Api::default().socket),
            get("bpf", "pin_dir").unwrap_or_else(|| Bpf::default().pin_dir),
        )
    }

    /// Parses and validates `src`; `file_name` is only used in messages.
    pub fn parse(src: &str, file_name: &str) -> Result<Config, ConfigError> {
        let issue = |line, column, path: &str, message: String| ConfigIssue {
            file: file_name.to_owned(),
            line,
            column,
            path: path.to_owned(),
            message,
        };
        let empty = || ConfigError {
            errors: vec![issue(
                None,
                None,
                "",
                "the file is empty; it needs at least `interfaces:` (see the README, Config)"
                    .to_owned(),
            )],
        };
        if src.trim().is_empty() {
            return Err(empty());
        }
        let index = PosIndex::build(src);
        let config: Config = match serde_yaml::from_str(src) {
            Ok(config) => config,
            Err(err) => {
                let (path, mut message) = split_serde_error(&err, &index);
                let mut location = err.location().map(|l| (l.line(), l.column()));
                if let Some(hint) = ipv6_hint(src, location.map(|l| l.0), &path, &message) {
                    message = format!("{message}; {hint}");
                }
                // serde places a repeated field at its mapping; the index
                // knows the repeat itself.
                if let Some(field) = message
                    .strip_prefix("duplicate field `")
                    .and_then(|rest| rest.strip_suffix('`'))
                {
                    let repeat = index::join(&path, field);
                    if let Some(dup) = index.duplicates.iter().find(|d| d.path == repeat) {
                        location = Some((dup.at.line, dup.at.column));
                    }
                }
                return Err(ConfigError {
                    errors: vec![issue(
                        location.map(|l| l.0),
                        location.map(|l| l.1),
                        &path,
                        message,
                    )],
                });
            }
        };
        // Only comments: serde_yaml reads that as an empty mapping.
        if !index.contains("") {
            return Err(empty());
        }
        let errors = validate::check(&config, &index, file_name);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { errors })
        }
    }
}

/// serde_yaml's message is `key.path: message at line L column C`; the
/// location is reported apart, so split it into (path, message).
fn split_serde_error(err: &serde_yaml::Error, index: &PosIndex) -> (String, String) {
    let mut text = err.to_string();
    if let Some(l) = err.location() {
        text = text.replacen(
            &format!(" at line {} column {}", l.line(), l.column()),
            "",
            1,
        );
    }
    match text.split_once(": ") {
        // The index knows every path serde_yaml can name (both walk the same
        // document); the whitespace test covers paths through aliases.
        Some((path, message)) if index.contains(path) || !path.contains(char::is_whitespace) => {
            (path.to_owned(), message.to_owned())
        }
        _ => (String::new(), text),
    }
}

/// What to write instead, for the two YAML mistakes IPv6 invites: `[`
/// starts a list (`listen: [2001:db8::1]:7400`), and inside `{ }` a plain
/// value cannot start or end with `:` (`{ address: ::1 }`). Block mappings
/// take `address: ::1` as it is.
fn ipv6_hint(src: &str, line: Option<usize>, path: &str, message: &str) -> Option<&'static str> {
    if message.starts_with("invalid type: sequence, expected socket address") {
        return Some(
            "YAML reads `[` as the start of a list: quote an IPv6 address with a port, e.g. \"[2001:db8::1]:7400\"",
        );
    }
    // A syntax error (no key path) on a line holding `::`.
    let text = src.lines().nth(line?.checked_sub(1)?)?;
    (path.is_empty() && text.contains("::")).then_some(
        "inside `{ }` YAML cannot read a value that starts or ends with `:`: quote such an IPv6 address, e.g. \"::1\" or \"2001:db8::\"",
    )
}

fn default_probe_path() -> String {
    "/".to_owned()
}
fn default_probe_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_method() -> String {
    "GET".to_owned()
}
fn default_weight() -> u32 {
    1
}
fn default_priority() -> u8 {
    100
}
fn default_heartbeat() -> Duration {
    Duration::from_millis(100)
}

/// An integer in `0..=max`, refused with `message` otherwise.
///
/// The check runs inside the visitor: an error raised there gets the
/// scalar's line:column from serde_yaml, one raised after `deserialize`
/// returns only gets the enclosing mapping's.
struct UpTo {
    max: u64,
    message: &'static str,
}

impl Visitor<'_> for UpTo {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an integer 0..={}", self.max)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v <= self.max {
            Ok(v)
        } else {
            Err(E::custom(self.message))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(self.message))
            .and_then(|v| self.visit_u64(v))
    }
}

const PORT: UpTo = UpTo {
    max: u16::MAX as u64,
    message: "port must be 1..=65535",
};

/// A port that fits in 16 bits; 0 is left to [`validate`] so that it is
/// reported with the other issues.
fn de_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    d.deserialize_any(PORT).map(|v| v as u16)
}

fn de_opt_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<u16>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a port 1..=65535")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            de_port(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

/// `sticky.ipv6_prefix`: at most 128 bits (0 is left to [`validate`]).
fn de_opt_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    const PREFIX: UpTo = UpTo {
        max: 128,
        message: "ipv6_prefix must be 1..=128 (bits of the client address)",
    };
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<u8>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a prefix length 1..=128")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(PREFIX).map(|v| Some(v as u8))
        }
    }
    d.deserialize_option(Opt)
}

/// Like [`de_port`], for `ha.node_id` (0 is left to [`validate`]).
fn de_node_id<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    d.deserialize_any(UpTo {
        max: u8::MAX as u64,
        message: "node_id must be 1..=255",
    })
    .map(|v| v as u8)
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl Serialize for Expect {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Expect {
    /// `200` (a YAML integer) or `"200-399"`; the range is checked by
    /// [`validate`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const HOW: &str = "write a status like 200 or a range like 200-399";
        impl Visitor<'_> for V {
            type Value = Expect;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an HTTP status like 200 or a range like 200-399")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Expect, E> {
                let code = u16::try_from(v)
                    .map_err(|_| E::custom(format!("`{v}` is not an HTTP status; {HOW}")))?;
                Ok(Expect { lo: code, hi: code })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Expect, E> {
                Err(E::custom(format!("`{v}` is not an HTTP status; {HOW}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Expect, E> {
                let code = |s: &str| s.trim().parse::<u16>().ok();
                let parsed = match v.split_once('-') {
                    Some((lo, hi)) => code(lo).zip(code(hi)),
                    None => code(v).map(|c| (c, c)),
                };
                let (lo, hi) = parsed
                    .ok_or_else(|| E::custom(format!("`{v}` is not an HTTP status; {HOW}")))?;
                Ok(Expect { lo, hi })
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl std::str::FromStr for IpCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not an IP address with a prefix length; write e.g. 192.0.2.10/24 or 2001:db8::10/64"
            )
        };
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr = addr.parse::<IpAddr>().map_err(|_| bad())?;
        let max = if addr.is_ipv6() { 128 } else { 32 };
        let prefix_len = len
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(bad)?;
        Ok(IpCidr { addr, prefix_len })
    }
}

impl Serialize for IpCidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpCidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor, so that the error carries the scalar's position.
        struct V;
        impl Visitor<'_> for V {
            type Value = IpCidr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IP address with a prefix length, e.g. 192.0.2.10/24")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IpCidr, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}
