//! Rules the types cannot express. Every rule runs and every issue is kept;
//! the result is sorted into file order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_common::{MAGLEV_SLOTS, MAX_FARMS, MAX_IFACES, MAX_REALS, MAX_VIPS};

use super::index::{PosIndex, join};
use super::{
    Algorithm, Cluster, Config, ConfigIssue, Farm, Ha, Probe, ProbeKind, Vip, format_duration,
};

const MAX_WEIGHT: u32 = 10_000;
const FLOW_TABLE_MIN: u32 = 1024;
const FLOW_TABLE_MAX: u32 = 64 * 1024 * 1024;
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

pub(super) fn check(config: &Config, index: &PosIndex, file: &str) -> Vec<ConfigIssue> {
    let mut c = Checker {
        file,
        index,
        issues: Vec::new(),
    };
    for dup in &index.duplicates {
        c.push(
            dup.path.clone(),
            Some(dup.at),
            format!(
                "this key is written twice (first at line {}); the first one would be ignored, remove one",
                dup.first.line
            ),
        );
    }
    c.interfaces(&config.interface_names());
    for (name, probe) in &config.probes {
        c.probe(name, probe);
    }
    for (name, farm) in &config.serverfarms {
        c.farm(name, farm, &config.probes);
    }
    c.tracks(config);
    let vips = c.vips_in_file_order(config);
    c.vips(config, &vips);
    c.families(config, &vips);
    c.reals_are_not_vips(config, &vips);
    c.limits(config);
    if !(FLOW_TABLE_MIN..=FLOW_TABLE_MAX).contains(&config.bpf.flow_table_size) {
        c.value(
            "bpf.flow_table_size",
            format!("flow_table_size must be {FLOW_TABLE_MIN}..={FLOW_TABLE_MAX}"),
        );
    }
    if !config.bpf.pin_dir.is_absolute() {
        c.value(
            "bpf.pin_dir",
            "pin_dir must be an absolute path on a bpffs mount, e.g. /sys/fs/bpf/lb",
        );
    }
    if let Some(ha) = &config.ha {
        c.ha(ha);
    }
    if let Some(cl) = &config.cluster {
        c.cluster(config, cl, &vips);
    }

    let mut issues = c.issues;
    // File order; issues without a position go last, in the order found.
    issues.sort_by_key(|i| (i.line.is_none(), i.line, i.column));
    issues
}

struct Checker<'a> {
    file: &'a str,
    index: &'a PosIndex,
    issues: Vec<ConfigIssue>,
}

impl Checker<'_> {
    /// An issue with the value at `path`.
    fn value(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let pos = self.index.get(&path).map(|n| n.value);
        self.push(path, pos, message);
    }

    /// An issue with the key that names `path` (a bad name, a duplicate).
    fn key(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let pos = self.index.get(&path).map(|n| n.key.unwrap_or(n.value));
        self.push(path, pos, message);
    }

    fn push(&mut self, path: String, pos: Option<super::index::Pos>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            file: self.file.to_owned(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            path,
            message: message.into(),
        });
    }

    /// `path` if the file writes it, else `fallback` (for a rule between two
    /// keys where one may be a default).
    fn written_or<'p>(&self, path: &'p str, fallback: &'p str) -> &'p str {
        if self.index.contains(path) {
            path
        } else {
            fallback
        }
    }

    fn name(&mut self, path: &str, name: &str) {
        let ok = (1..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            self.key(
                path,
                format!("`{name}` is not a valid name: use 1 to 63 of A-Z a-z 0-9 _ . -"),
            );
        }
    }

    fn port(&mut self, path: String, port: Option<u16>) {
        if port == Some(0) {
            self.value(path, "port must be 1..=65535");
        }
    }

    /// VIPs and reals: unicast, IPv4 or IPv6.
    fn address(&mut self, path: String, addr: IpAddr) {
        match addr {
            IpAddr::V4(v4) if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() => {
                self.value(path, format!("{v4} is not a unicast address"))
            }
            IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => {
                self.value(path, format!("{v6} is not a unicast address"))
            }
            // The maps store IPv4 in exactly this form (lb_common::v4_mapped),
            // so it would be the IPv4 address under another name.
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => self.value(
                path,
                format!(
                    "{v6} is an IPv4-mapped IPv6 address; write the IPv4 address {}",
                    v6.to_canonical()
                ),
            ),
            IpAddr::V4(_) | IpAddr::V6(_) => {}
        }
    }

    fn positive(&mut self, path: String, d: Duration) {
        if d.is_zero() {
            self.value(path, "must be longer than 0s");
        }
    }

    fn interfaces(&mut self, interfaces: &[String]) {
        if interfaces.is_empty() {
            self.value(
                "interfaces",
                "list at least one interface for the datapath to attach to, e.g. `interfaces: [eth0, eth1]`",
            );
        }
        if interfaces.len() > MAX_IFACES as usize {
            self.value(
                "interfaces",
                format!(
                    "{} interfaces; at most {MAX_IFACES} are supported",
                    interfaces.len()
                ),
            );
        }
        let mut seen = HashSet::new();
        for (i, name) in interfaces.iter().enumerate() {
            let path = format!("interfaces[{i}]");
            // IFNAMSIZ is 16 with the terminating NUL.
            let ok = (1..=15).contains(&name.len())
                && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
            if !ok {
                self.value(
                    path,
                    format!(
                        "`{name}` is not an interface name: Linux names are 1 to 15 characters without `/`, `:` or spaces"
                    ),
                );
            } else if !seen.insert(name) {
                self.value(
                    path,
                    format!("interface `{name}` is listed twice; remove one"),
                );
            }
        }
    }

    fn probe(&mut self, name: &str, p: &Probe) {
        let base = join("probes", name);
        let at = |key: &str| join(&base, key);
        self.name(&base, name);
        if p.kind == ProbeKind::Tcp {
            for key in ["path", "expect", "host", "body", "method"] {
                if self.index.contains(&at(key)) {
                    self.key(
                        at(key),
                        format!(
                            "`{key}` is used by http probes only; remove it or set `type: http`"
                        ),
                    );
                }
            }
        } else {
            if !p.path.starts_with('/') {
                self.value(at("path"), format!("path `{}` must start with /", p.path));
            }
            let e = p.expect;
            if !(100..=599).contains(&e.lo) || !(100..=599).contains(&e.hi) || e.lo > e.hi {
                self.value(
                    at("expect"),
                    format!(
                        "expect `{e}` must be a status or a range within 100..=599, low end first, e.g. 200-399"
                    ),
                );
            }
            if p.method.is_empty() || !p.method.bytes().all(|b| b.is_ascii_uppercase()) {
                self.value(
                    at("method"),
                    format!("`{}` is not an HTTP method; use e.g. GET or HEAD", p.method),
                );
            }
        }
        self.positive(at("interval"), p.interval);
        if let Some(d) = p.fast_interval {
            self.positive(at("fast_interval"), d);
        }
        if let Some(d) = p.down_interval {
            self.positive(at("down_interval"), d);
        }
        if p.timeout.is_zero() {
            self.positive(at("timeout"), p.timeout);
        } else if p.timeout >= p.interval {
            let (timeout_path, interval_path) = (at("timeout"), at("interval"));
            let path = self.written_or(&timeout_path, &interval_path).to_owned();
            self.value(
                path,
                format!(
                    "timeout {} must be shorter than interval {}; lower the timeout or raise the interval",
                    format_duration(p.timeout),
                    format_duration(p.interval)
                ),
            );
        }
        for (key, n) in [("rise", p.rise), ("fall", p.fall)] {
            if n < 1 {
                self.value(at(key), format!("{key} must be at least 1"));
            }
        }
        self.port(at("port"), p.port);
    }

    fn farm(&mut self, name: &str, farm: &Farm, probes: &BTreeMap<String, Probe>) {
        let base = join("serverfarms", name);
        self.name(&base, name);
        let mut listed = HashSet::new();
        for (i, probe) in farm.probes.iter().enumerate() {
            let path = format!("{base}.probes[{i}]");
            if !probes.contains_key(probe) {
                self.value(path, not_defined("probe", probe, probes.keys()));
            } else if !listed.insert(probe) {
                self.value(path, format!("probe `{probe}` is listed twice; remove one"));
            }
        }
        if let Some(observe) = &farm.observe
            && observe.errors < 1
        {
            self.value(
                format!("{base}.observe.errors"),
                "errors must be at least 1; remove `observe` to turn passive health off",
            );
        }
        // (address, port) -> index of the first real with it.
        let mut seen: HashMap<(IpAddr, Option<u16>), usize> = HashMap::new();
        for (i, real) in farm.reals.iter().enumerate() {
            let path = format!("{base}.reals[{i}]");
            self.address(format!("{path}.address"), real.address);
            self.port(format!("{path}.port"), real.port);
            if real.weight > MAX_WEIGHT {
                self.value(
                    format!("{path}.weight"),
                    format!("weight must be 0..={MAX_WEIGHT}"),
                );
            }
            if real.max_conns == Some(0) {
                self.value(
                    format!("{path}.max_conns"),
                    "max_conns must be at least 1; leave it out for no limit",
                );
            }
            if let Some(first) = seen.insert((real.address, real.port), i) {
                // Keep pointing at the first for a third copy.
                seen.insert((real.address, real.port), first);
                let real_name = match real.port {
                    Some(port) => SocketAddr::new(real.address, port).to_string(),
                    None => format!("{} (the VIP's port)", real.address),
                };
                self.value(
                    path,
                    format!(
                        "real {real_name} is already in this farm as reals[{first}]; remove one"
                    ),
                );
            }
        }
    }

    /// `track:`: each names one real, which something checks (its farm's
    /// probes or passive health, or a real it tracks in turn), of a farm
    /// that does not check the tracking real itself; and no chain of them
    /// comes back to where it started.
    fn tracks(&mut self, config: &Config) {
        let checked = |farm: &str| {
            config
                .serverfarms
                .get(farm)
                .is_some_and(|f| !f.probes.is_empty() || f.observe.is_some())
        };
        for (farm, f) in &config.serverfarms {
            for (i, real) in f.reals.iter().enumerate() {
                let Some(track) = real.track.as_deref() else {
                    continue;
                };
                let path = format!("{}.reals[{i}].track", join("serverfarms", farm));
                if checked(farm) {
                    self.value(
                        path,
                        format!(
                            "a real either is checked or tracks another: serverfarm `{farm}` probes or observes its reals; move this real to a farm that does not, or remove `track`"
                        ),
                    );
                    continue;
                }
                let to = match config.tracked(track) {
                    Ok(to) => to,
                    Err(e) => {
                        self.value(path, e);
                        continue;
                    }
                };
                // Follow the chain: to a checked real, or back to a real
                // already on it (a loop), or to one that nothing checks.
                let mut chain = vec![(farm.clone(), i)];
                let mut at = to;
                let problem = loop {
                    if chain.contains(&at) {
                        chain.push(at);
                        break Some(format!("tracking loop: {}", names(config, &chain)));
                    }
                    let r = &config.serverfarms[&at.0].reals[at.1];
                    chain.push(at.clone());
                    match r.track.as_deref().map(|t| config.tracked(t)) {
                        // Its own line says what is wrong with it.
                        Some(Err(_)) => break None,
                        Some(Ok(next)) => at = next,
                        None if checked(&at.0) => break None,
                        None => {
                            break Some(format!(
                                "{} is checked by nothing (serverfarm `{}` has no probes and no `observe`): there is no health to follow",
                                names(config, &chain[chain.len() - 1..]),
                                at.0
                            ));
                        }
                    }
                };
                if let Some(p) = problem {
                    self.value(path, p);
                }
            }
        }
    }

    /// A real at a VIP's address: the datapath takes every packet to that
    /// address for the VIP, so what the farm sends the real comes back to
    /// lb as a new flow instead of reaching it.
    fn reals_are_not_vips(&mut self, config: &Config, vips: &[(&String, &Vip)]) {
        let mut vip_at: HashMap<IpAddr, &str> = HashMap::new();
        for &(name, vip) in vips {
            vip_at.entry(vip.address).or_insert(name);
        }
        for (farm, f) in &config.serverfarms {
            for (i, real) in f.reals.iter().enumerate() {
                if let Some(vip) = vip_at.get(&real.address) {
                    self.value(
                        format!("{}.reals[{i}].address", join("serverfarms", farm)),
                        format!(
                            "{} is the address of vip `{vip}`: a real must have an address of its own, or lb takes what is sent to it for the VIP",
                            real.address
                        ),
                    );
                }
            }
        }
    }

    /// The VIPs in file order, so that "already used by" names the earlier one.
    fn vips_in_file_order<'c>(&self, config: &'c Config) -> Vec<(&'c String, &'c Vip)> {
        let mut vips: Vec<(&String, &Vip)> = config.vips.iter().collect();
        vips.sort_by_key(|(name, _)| {
            self.index
                .get(&join("vips", name))
                .and_then(|n| n.key)
                .map(|p| (p.line, p.column))
        });
        vips
    }

    fn vips(&mut self, config: &Config, vips: &[(&String, &Vip)]) {
        let mut seen = HashMap::new();
        for &(name, vip) in vips {
            let base = join("vips", name);
            self.name(&base, name);
            self.address(format!("{base}.address"), vip.address);
            self.port(format!("{base}.port"), Some(vip.port));
            if !config.serverfarms.contains_key(&vip.serverfarm) {
                self.value(
                    format!("{base}.serverfarm"),
                    not_defined("serverfarm", &vip.serverfarm, config.serverfarms.keys()),
                );
            }
            if let Some(sticky) = &vip.sticky {
                self.positive(format!("{base}.sticky.timeout"), sticky.timeout);
                self.ipv6_prefix(name, vip, sticky.ipv6_prefix);
            }
            let t = &vip.timeouts;
            for (key, d) in [
                ("syn", t.syn),
                ("established", t.established),
                ("fin", t.fin),
                ("udp", t.udp),
                ("closed", t.closed),
            ] {
                self.positive(format!("{base}.timeouts.{key}"), d);
            }
            let id = (vip.address, vip.port, vip.protocol);
            if let Some(first) = seen.insert(id, name) {
                seen.insert(id, first);
                let proto = format!("{:?}", vip.protocol).to_lowercase();
                self.key(
                    base,
                    format!(
                        "{}/{proto} is already the address of vip `{first}`; change the address, port or protocol",
                        SocketAddr::new(vip.address, vip.port)
                    ),
                );
            }
        }
    }

    /// `sticky.ipv6_prefix`: 1..=128 (above 128 is refused while parsing),
    /// and on IPv6 VIPs only. An IPv4 client's address is its whole
    /// identity, so on an IPv4 VIP the key would silently do nothing.
    fn ipv6_prefix(&mut self, name: &str, vip: &Vip, prefix: Option<u8>) {
        let path = format!("vips.{name}.sticky.ipv6_prefix");
        match prefix {
            None => {}
            Some(_) if vip.address.is_ipv4() => self.key(
                path,
                format!(
                    "`ipv6_prefix` applies to IPv6 VIPs only, and vip `{name}` is IPv4 ({}); remove it",
                    vip.address
                ),
            ),
            Some(0) => self.value(
                path,
                "ipv6_prefix must be 1..=128 (bits of the client address)",
            ),
            Some(_) => {}
        }
    }

    /// A VIP and its serverfarm's reals are one family: lb translates IPv4
    /// to IPv4 (NAT44) and IPv6 to IPv6 (NAT66), never one into the other.
    /// Each farm is judged against the first VIP (in file order) that uses
    /// it, or its first real when no VIP does, so that each mismatch is
    /// reported once, where it is written, naming both addresses.
    fn families(&mut self, config: &Config, vips: &[(&String, &Vip)]) {
        for (farm_name, farm) in &config.serverfarms {
            let mut users = vips.iter().filter(|(_, v)| v.serverfarm == *farm_name);
            let (reference, ipv6, skip_first_real) = match users.next() {
                Some((name, v)) => (
                    format!("vip `{name}` ({})", v.address),
                    v.address.is_ipv6(),
                    false,
                ),
                None => match farm.reals.first() {
                    Some(r) => (
                        format!("reals[0] ({})", r.address),
                        r.address.is_ipv6(),
                        true,
                    ),
                    None => continue,
                },
            };
            let base = join("serverfarms", farm_name);
            for (i, real) in farm
                .reals
                .iter()
                .enumerate()
                .skip(usize::from(skip_first_real))
            {
                if real.address.is_ipv6() != ipv6 {
                    self.value(
                        format!("{base}.reals[{i}].address"),
                        format!(
                            "real {} is {} but {reference} is {}; {ONE_FAMILY}: give the {} reals a serverfarm of their own",
                            real.address,
                            family(!ipv6),
                            family(ipv6),
                            family(!ipv6),
                        ),
                    );
                }
            }
            for (name, v) in users.filter(|(_, v)| v.address.is_ipv6() != ipv6) {
                self.value(
                    format!("vips.{name}.address"),
                    format!(
                        "{} is {} but serverfarm `{farm_name}` also serves {reference}, which is {}; {ONE_FAMILY}: give this VIP a serverfarm of {} reals",
                        v.address,
                        family(!ipv6),
                        family(ipv6),
                        family(!ipv6),
                    ),
                );
            }
        }
    }

    fn limits(&mut self, config: &Config) {
        let count = |what: &str, n: usize, max: u32| {
            (n > max as usize).then(|| format!("{n} {what}; at most {max} are supported"))
        };
        if let Some(msg) = count("vips", config.vips.len(), MAX_VIPS) {
            self.key("vips", msg);
        }
        if let Some(msg) = count("serverfarms", config.serverfarms.len(), MAX_FARMS) {
            self.key("serverfarms", msg);
        }
        let reals = config.serverfarms.values().map(|f| f.reals.len()).sum();
        if let Some(msg) = count("reals over all serverfarms", reals, MAX_REALS) {
            self.key("serverfarms", msg);
        }
        // Hashing farms' lookup rings share one array; a changed ring is
        // built beside the old one before the swap, so the largest needs
        // room twice.
        let rings: Vec<u64> = config
            .serverfarms
            .values()
            .filter(|f| matches!(f.algorithm, Algorithm::Maglev | Algorithm::SourceHash))
            .filter(|f| !f.reals.is_empty())
            .map(|f| u64::from(crate::maglev::table_size(f.reals.len())))
            .collect();
        let need = rings.iter().sum::<u64>() + rings.iter().max().unwrap_or(&0);
        if need > u64::from(MAGLEV_SLOTS) {
            self.key(
                "serverfarms",
                format!(
                    "{} hashing serverfarms (maglev, source-hash) need {need} ring slots, with room to rebuild the largest; at most {MAGLEV_SLOTS} are supported: let VIPs share a farm, or use another algorithm",
                    rings.len()
                ),
            );
        }
    }

    fn ha(&mut self, ha: &Ha) {
        if ha.node_id == 0 {
            self.value("ha.node_id", "node_id must be 1..=255");
        }
        if ha.heartbeat < MIN_HEARTBEAT {
            self.value("ha.heartbeat", "heartbeat must be at least 10ms");
        }
        if let Some(dead) = ha.dead_interval
            && dead <= ha.heartbeat
        {
            self.value(
                "ha.dead_interval",
                format!(
                    "dead_interval must be longer than heartbeat ({}); leave it out for 3 × heartbeat",
                    format_duration(ha.heartbeat)
                ),
            );
        }
        if ha.listen == ha.peer {
            self.value(
                "ha.peer",
                "peer must be the other node's address, not `listen`",
            );
        }
        // One socket, bound to `listen`, sends to `peer`.
        if ha.listen.is_ipv6() != ha.peer.is_ipv6() {
            self.value(
                "ha.peer",
                format!(
                    "peer {} is {} but listen {} is {}; the sync socket bound to `listen` can only reach a peer of its own family",
                    ha.peer,
                    family(ha.peer.is_ipv6()),
                    ha.listen,
                    family(ha.listen.is_ipv6()),
                ),
            );
        }
        if ha.key_file.as_os_str().is_empty() {
            self.value(
                "ha.key_file",
                "key_file must name the file with the shared secret",
            );
        }
        for (i, ip) in ha.floating_ips.iter().enumerate() {
            self.address(format!("ha.floating_ips[{i}].address"), ip.address.addr);
            if ip.interface.is_empty() {
                self.value(
                    format!("ha.floating_ips[{i}].interface"),
                    "name the interface that holds this address, e.g. eth0",
                );
            }
        }
    }
}

/// The rule [`Checker::families`] enforces, as its messages state it.
const ONE_FAMILY: &str = "a VIP and its serverfarm's reals must be one family (NAT44 or NAT66)";

/// Reals as `FARM/ADDR[:PORT]`, joined by arrows.
impl Checker<'_> {
    /// `cluster:`. Every node must make the same choice for a flow without
    /// talking to the others: hashing farms only, no per-node sticky
    /// table, and one VIP per real endpoint (see `Config::reply_routes`).
    fn cluster(&mut self, config: &Config, cl: &Cluster, vips: &[(&String, &Vip)]) {
        if config.ha.is_some() {
            self.key(
                "cluster",
                "`cluster:` and `ha:` cannot both be set: a cluster's nodes are all active, an HA pair has one; keep one of them",
            );
        }
        if cl.node_id == 0 {
            self.value("cluster.node_id", "node_id must be 1..=255");
        }
        if cl.heartbeat < MIN_HEARTBEAT {
            self.value("cluster.heartbeat", "heartbeat must be at least 10ms");
        }
        if cl.key_file.as_os_str().is_empty() {
            self.value(
                "cluster.key_file",
                "key_file must name the file with the shared secret",
            );
        }
        let mut seen = HashSet::new();
        for (i, p) in cl.peers.iter().enumerate() {
            if *p == cl.listen {
                self.value(
                    format!("cluster.peers[{i}]"),
                    "this is the node's own `listen` address; list the other nodes",
                );
            } else if !seen.insert(*p) {
                self.value(format!("cluster.peers[{i}]"), "this peer is listed twice");
            }
        }
        let b = &cl.bgp;
        if b.local_as == 0 {
            self.value("cluster.bgp.local_as", "local_as must be 1..=4294967295");
        }
        if b.hold_time < Duration::from_secs(3) || b.hold_time > Duration::from_secs(65535) {
            self.value(
                "cluster.bgp.hold_time",
                "hold_time must be 3s..=65535s (BGP allows no less than 3 seconds)",
            );
        } else if b.hold_time.subsec_nanos() != 0 {
            self.value(
                "cluster.bgp.hold_time",
                "hold_time must be whole seconds (BGP counts it in seconds)",
            );
        }
        if b.neighbors.is_empty() {
            self.value(
                "cluster.bgp.neighbors",
                "name at least one router to announce the VIPs to",
            );
        }
        for (i, n) in b.neighbors.iter().enumerate() {
            if n.remote_as == 0 {
                self.value(
                    format!("cluster.bgp.neighbors[{i}].remote_as"),
                    "remote_as must be 1..=4294967295",
                );
            }
        }
        let mut farms_told = HashSet::new();
        for &(name, vip) in vips {
            if let Some(farm) = config.serverfarms.get(&vip.serverfarm)
                && !matches!(farm.algorithm, Algorithm::Maglev | Algorithm::SourceHash)
                && farms_told.insert(&vip.serverfarm)
            {
                let path = join("serverfarms", &vip.serverfarm);
                let at = format!("{path}.algorithm");
                self.value(
                    self.written_or(&at, &path).to_string(),
                    format!(
                        "serverfarm `{}` serves vip `{name}` in a cluster: every node must pick the same real for a flow, so use maglev or source-hash (the other algorithms depend on each node's own counters)",
                        vip.serverfarm
                    ),
                );
            }
            if vip.sticky.is_some() {
                self.value(
                    format!("{}.sticky", join("vips", name)),
                    "sticky tables are each node's own, so in a cluster two nodes could send one client to two reals; use a source-hash serverfarm for persistence by client address",
                );
            }
        }
        let mut serves: HashMap<(SocketAddr, super::Protocol), SocketAddr> = HashMap::new();
        for r in config.reply_routes() {
            match serves.get(&(r.real, r.protocol)) {
                Some(vip) if *vip != r.vip => self.value(
                    format!("{}.reals[{}]", join("serverfarms", &r.farm), r.index),
                    format!(
                        "{} also serves {vip}: in a cluster, a reply may come back through a node that has not yet heard of its flow, which translates it by the real's address and port alone; give each VIP its own real port",
                        r.real
                    ),
                ),
                Some(_) => {}
                None => {
                    serves.insert((r.real, r.protocol), r.vip);
                }
            }
        }
    }
}

fn names(config: &Config, chain: &[super::RealAt]) -> String {
    chain
        .iter()
        .map(|(farm, i)| {
            let r = &config.serverfarms[farm].reals[*i];
            match r.port {
                Some(p) => format!("{farm}/{}", SocketAddr::new(r.address, p)),
                None => format!("{farm}/{}", r.address),
            }
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn family(ipv6: bool) -> &'static str {
    if ipv6 { "IPv6" } else { "IPv4" }
}

/// "serverfarm `webb` is not defined; defined serverfarms: web, api"
fn not_defined<'a>(what: &str, name: &str, defined: impl Iterator<Item = &'a String>) -> String {
    let defined: Vec<&str> = defined.map(String::as_str).collect();
    if defined.is_empty() {
        format!("{what} `{name}` is not defined, and there are none; add it under `{what}s:`")
    } else {
        format!(
            "{what} `{name}` is not defined; defined {what}s: {}",
            defined.join(", ")
        )
    }
}
