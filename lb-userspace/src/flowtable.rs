//! Reading the flow table: joining each flow's two entries, expiring idle
//! flows by state, repairing a flow whose other half the LRU evicted, and
//! rendering rows for `lb flows`.
use std::{
    collections::{HashMap as StdMap, HashSet},
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use anyhow::Result;
use aya::maps::{HashMap, MapData};
use lb_common::{
    DIR_FORWARD, DIR_REVERSE, FLOW_COUNTED, Flow, FlowKey, PROTO_TCP, ST_CLOSED, ST_ESTABLISHED,
    ST_FIN, ST_SYN, ST_UDP,
};
use serde::Serialize;

use crate::{config::Timeouts, control::Control};

/// BPF_NOEXIST: a repair never overwrites an entry the datapath just made.
const BPF_NOEXIST: u64 = 1;

/// One flow: the forward entry and, normally, its reverse.
#[derive(Clone, Debug)]
pub struct Joined {
    pub fwd_key: FlowKey,
    pub fwd: Flow,
    pub rev: Option<(FlowKey, Flow)>,
}

/// All flows, plus reverse entries whose forward half is missing.
#[derive(Debug, Default)]
pub struct Table {
    pub flows: Vec<Joined>,
    pub lone_reverse: Vec<(FlowKey, Flow)>,
}

type JoinKey = ([u8; 16], u16, [u8; 16], u16, u8);

/// Reads the whole table once and pairs the directions.
pub fn read(map: &HashMap<MapData, FlowKey, Flow>) -> Result<Table> {
    let mut fwd = Vec::new();
    let mut rev: StdMap<JoinKey, (FlowKey, Flow)> = StdMap::new();
    for entry in map.iter() {
        let (k, v) = match entry {
            Ok(kv) => kv,
            // An entry deleted between get_next_key and lookup: skip it.
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(e.into()),
        };
        match v.dir {
            DIR_FORWARD => fwd.push((k, v)),
            DIR_REVERSE => {
                // Client, VIP as the forward key would name them.
                let jk = (
                    k.dst_addr,
                    k.dst_port_be,
                    v.nat_addr,
                    v.nat_port_be,
                    k.proto,
                );
                rev.insert(jk, (k, v));
            }
            _ => {}
        }
    }
    let mut t = Table::default();
    for (k, v) in fwd {
        let jk = (
            k.src_addr,
            k.src_port_be,
            k.dst_addr,
            k.dst_port_be,
            k.proto,
        );
        t.flows.push(Joined {
            fwd_key: k,
            fwd: v,
            rev: rev.remove(&jk),
        });
    }
    t.lone_reverse = rev.into_values().collect();
    Ok(t)
}

impl Joined {
    /// The later of the two directions' states (they only move forward).
    pub fn state(&self) -> u8 {
        if self.fwd_key.proto != PROTO_TCP {
            return ST_UDP;
        }
        self.rev
            .as_ref()
            .map_or(self.fwd.state, |(_, r)| r.state.max(self.fwd.state))
    }

    pub fn last_ns(&self) -> u64 {
        self.rev
            .as_ref()
            .map_or(self.fwd.last_ns, |(_, r)| r.last_ns.max(self.fwd.last_ns))
    }

    fn rev_key(&self) -> FlowKey {
        FlowKey {
            src_addr: self.fwd.nat_addr,
            dst_addr: self.fwd_key.src_addr,
            src_port_be: self.fwd.nat_port_be,
            dst_port_be: self.fwd_key.src_port_be,
            proto: self.fwd_key.proto,
            _pad: [0; 3],
        }
    }
}

pub fn timeout_for(t: &Timeouts, state: u8) -> Duration {
    match state {
        ST_SYN => t.syn,
        ST_ESTABLISHED => t.established,
        ST_FIN => t.fin,
        ST_CLOSED => t.closed,
        _ => t.udp,
    }
}

pub fn state_name(state: u8) -> &'static str {
    match state {
        ST_SYN => "syn",
        ST_ESTABLISHED => "established",
        ST_FIN => "fin",
        ST_CLOSED => "closed",
        ST_UDP => "udp",
        _ => "unknown",
    }
}

/// What one sweep did.
#[derive(Debug, Default)]
pub struct Sweep {
    pub flows: usize,
    pub expired: usize,
    pub removed_vip: usize,
    pub repaired: usize,
    pub vips_in_use: HashSet<u32>,
    pub reals_in_use: HashSet<u32>,
    /// Counted flows (see `FLOW_COUNTED`) this sweep removed, per real id:
    /// the agent adds them to `EXPIRED`.
    pub uncounted: std::collections::HashMap<u32, u64>,
}

/// Expires idle flows by their VIP's per-state timeouts, removes the flows
/// of removed VIPs, and rebuilds a missing half of a live flow.
pub fn sweep(map: &mut HashMap<MapData, FlowKey, Flow>, ctl: &Control, now: u64) -> Result<Sweep> {
    let table = read(map)?;
    let vips: StdMap<u32, &Timeouts> = ctl
        .programmed()
        .vips
        .values()
        .map(|v| (v.id, &v.timeouts))
        .collect();
    let mut s = Sweep {
        flows: table.flows.len(),
        ..Sweep::default()
    };
    for f in &table.flows {
        let Some(timeouts) = vips.get(&f.fwd.vip_id) else {
            delete(map, &f.fwd_key, f.rev.as_ref().map(|r| &r.0));
            s.removed_vip += 1;
            uncount(&mut s.uncounted, &f.fwd);
            continue;
        };
        let idle = now.saturating_sub(f.last_ns());
        if idle > timeout_for(timeouts, f.state()).as_nanos() as u64 {
            delete(map, &f.fwd_key, f.rev.as_ref().map(|r| &r.0));
            s.expired += 1;
            uncount(&mut s.uncounted, &f.fwd);
            continue;
        }
        if f.rev.is_none() {
            let rev = Flow {
                nat_addr: f.fwd_key.dst_addr,
                nat_port_be: f.fwd_key.dst_port_be,
                dir: DIR_REVERSE,
                packets: 0,
                bytes: 0,
                seq_next: 0,
                ..f.fwd
            };
            if map.insert(f.rev_key(), rev, BPF_NOEXIST).is_ok() {
                s.repaired += 1;
            }
        }
        s.vips_in_use.insert(f.fwd.vip_id);
        s.reals_in_use.insert(f.fwd.real_id);
    }
    for (k, r) in &table.lone_reverse {
        let live = vips.get(&r.vip_id).is_some_and(|t| {
            now.saturating_sub(r.last_ns) <= timeout_for(t, r.state).as_nanos() as u64
        });
        if !live {
            let _ = map.remove(k);
            s.expired += 1;
            continue;
        }
        let fwd_key = FlowKey {
            src_addr: k.dst_addr,
            dst_addr: r.nat_addr,
            src_port_be: k.dst_port_be,
            dst_port_be: r.nat_port_be,
            proto: k.proto,
            _pad: [0; 3],
        };
        let fwd = Flow {
            nat_addr: k.src_addr,
            nat_port_be: k.src_port_be,
            dir: DIR_FORWARD,
            packets: 0,
            bytes: 0,
            seq_next: 0,
            ..*r
        };
        if map.insert(fwd_key, fwd, BPF_NOEXIST).is_ok() {
            s.repaired += 1;
        }
        s.vips_in_use.insert(r.vip_id);
        s.reals_in_use.insert(r.real_id);
    }
    Ok(s)
}

/// A removed forward entry that still counted as active on its real.
fn uncount(removed: &mut std::collections::HashMap<u32, u64>, fwd: &Flow) {
    if fwd.flags & FLOW_COUNTED != 0 {
        *removed.entry(fwd.real_id).or_default() += 1;
    }
}

/// What `purge_reals` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purge {
    pub flows: usize,
    pub resets: usize,
    /// Counted flows removed, per real id (for `EXPIRED`).
    pub uncounted: std::collections::HashMap<u32, u64>,
}

/// `purge` for reals that went down: removes their flows and resets their
/// TCP clients now, so an idle client learns within the second instead of at
/// its next packet. The RST carries the server's next sequence number as the
/// reverse entry saw it, which the client accepts.
pub fn purge_reals(
    map: &mut HashMap<MapData, FlowKey, Flow>,
    reals: &HashSet<u32>,
    resets: Option<&crate::reset::ResetSender>,
) -> Result<Purge> {
    let table = read(map)?;
    let mut p = Purge::default();
    for f in table
        .flows
        .iter()
        .filter(|f| reals.contains(&f.fwd.real_id))
    {
        if f.fwd_key.proto == PROTO_TCP
            && !matches!(f.state(), ST_CLOSED)
            && let (Some(tx), Some((_, rev))) = (resets, f.rev.as_ref())
        {
            let vip = sock(&f.fwd_key.dst_addr, f.fwd_key.dst_port_be);
            let client = sock(&f.fwd_key.src_addr, f.fwd_key.src_port_be);
            match tx.send(vip, client, rev.seq_next, f.fwd.seq_next) {
                Ok(()) => p.resets += 1,
                Err(e) => log::warn!("reset to {client}: {e}"),
            }
        }
        delete(map, &f.fwd_key, f.rev.as_ref().map(|r| &r.0));
        uncount(&mut p.uncounted, &f.fwd);
        p.flows += 1;
    }
    for (k, _) in table
        .lone_reverse
        .iter()
        .filter(|(_, r)| reals.contains(&r.real_id))
    {
        let _ = map.remove(k);
    }
    Ok(p)
}

fn delete(map: &mut HashMap<MapData, FlowKey, Flow>, fwd: &FlowKey, rev: Option<&FlowKey>) {
    // Either may already be gone (LRU eviction, a concurrent sweep): fine.
    let _ = map.remove(fwd);
    if let Some(rev) = rev {
        let _ = map.remove(rev);
    }
}

/// A flow as `lb flows --json` prints it (field names are the contract in
/// shared/design.md).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FlowRow {
    pub client: String,
    pub vip: String,
    pub real: String,
    pub protocol: &'static str,
    pub state: &'static str,
    pub age_ms: u64,
    pub idle_ms: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

pub fn sock(addr: &[u8; 16], port_be: u16) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(addr[12], addr[13], addr[14], addr[15]),
        u16::from_be(port_be),
    )
}

impl FlowRow {
    pub fn new(f: &Joined, now: u64) -> Self {
        let (packets_out, bytes_out) = f.rev.as_ref().map_or((0, 0), |(_, r)| (r.packets, r.bytes));
        Self {
            client: sock(&f.fwd_key.src_addr, f.fwd_key.src_port_be).to_string(),
            vip: sock(&f.fwd_key.dst_addr, f.fwd_key.dst_port_be).to_string(),
            real: sock(&f.fwd.nat_addr, f.fwd.nat_port_be).to_string(),
            protocol: if f.fwd_key.proto == PROTO_TCP {
                "tcp"
            } else {
                "udp"
            },
            state: state_name(f.state()),
            age_ms: now.saturating_sub(f.fwd.created_ns) / 1_000_000,
            idle_ms: now.saturating_sub(f.last_ns()) / 1_000_000,
            packets_in: f.fwd.packets,
            bytes_in: f.fwd.bytes,
            packets_out,
            bytes_out,
        }
    }
}

/// `lb flows` filters. Addresses match with or without a port.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub vip: Option<String>,
    pub real: Option<String>,
    pub client: Option<String>,
    pub state: Option<String>,
}

fn addr_matches(want: &str, have: &str) -> bool {
    if want.contains(':') {
        want == have
    } else {
        have.split(':').next() == Some(want)
    }
}

impl Filter {
    pub fn matches(&self, r: &FlowRow) -> bool {
        self.vip.as_deref().is_none_or(|v| addr_matches(v, &r.vip))
            && self
                .real
                .as_deref()
                .is_none_or(|v| addr_matches(v, &r.real))
            && self
                .client
                .as_deref()
                .is_none_or(|v| addr_matches(v, &r.client))
            && self.state.as_deref().is_none_or(|s| s == r.state)
    }
}

/// Aligned human table.
pub fn render(rows: &[FlowRow]) -> String {
    let mut out = format!(
        "{:<21} {:<21} {:<21} {:<5} {:<11} {:>9} {:>9} {:>8} {:>10} {:>8} {:>10}\n",
        "CLIENT",
        "VIP",
        "REAL",
        "PROTO",
        "STATE",
        "AGE",
        "IDLE",
        "PKTS_IN",
        "BYTES_IN",
        "PKTS_OUT",
        "BYTES_OUT"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<21} {:<21} {:<21} {:<5} {:<11} {:>9} {:>9} {:>8} {:>10} {:>8} {:>10}\n",
            r.client,
            r.vip,
            r.real,
            r.protocol,
            r.state,
            human_ms(r.age_ms),
            human_ms(r.idle_ms),
            r.packets_in,
            r.bytes_in,
            r.packets_out,
            r.bytes_out
        ));
    }
    out
}

fn human_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(vip: &str, real: &str, client: &str, state: &'static str) -> FlowRow {
        FlowRow {
            client: client.into(),
            vip: vip.into(),
            real: real.into(),
            protocol: "tcp",
            state,
            age_ms: 0,
            idle_ms: 0,
            packets_in: 0,
            bytes_in: 0,
            packets_out: 0,
            bytes_out: 0,
        }
    }

    #[test]
    fn filters_match_address_with_or_without_port() {
        let r = row(
            "198.51.100.10:80",
            "203.0.113.11:8080",
            "192.0.2.2:40000",
            "established",
        );
        assert!(
            Filter {
                vip: Some("198.51.100.10".into()),
                ..Default::default()
            }
            .matches(&r)
        );
        assert!(
            Filter {
                vip: Some("198.51.100.10:80".into()),
                ..Default::default()
            }
            .matches(&r)
        );
        assert!(
            !Filter {
                vip: Some("198.51.100.10:81".into()),
                ..Default::default()
            }
            .matches(&r)
        );
        assert!(
            !Filter {
                real: Some("203.0.113.1".into()),
                ..Default::default()
            }
            .matches(&r)
        );
        assert!(
            Filter {
                state: Some("established".into()),
                ..Default::default()
            }
            .matches(&r)
        );
        assert!(
            !Filter {
                state: Some("syn".into()),
                ..Default::default()
            }
            .matches(&r)
        );
    }

    #[test]
    fn merged_state_is_the_later_one() {
        let k = FlowKey {
            proto: PROTO_TCP,
            ..Default::default()
        };
        let f = Flow {
            state: ST_ESTABLISHED,
            ..Default::default()
        };
        let r = Flow {
            state: ST_FIN,
            dir: DIR_REVERSE,
            ..Default::default()
        };
        let j = Joined {
            fwd_key: k,
            fwd: f,
            rev: Some((k, r)),
        };
        assert_eq!(j.state(), ST_FIN);
        let udp = Joined {
            fwd_key: FlowKey { proto: 17, ..k },
            fwd: f,
            rev: None,
        };
        assert_eq!(udp.state(), ST_UDP);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_ms(12), "12ms");
        assert_eq!(human_ms(1500), "1.5s");
        assert_eq!(human_ms(61_000), "1m1s");
        assert_eq!(human_ms(3_660_000), "1h1m");
    }
}
