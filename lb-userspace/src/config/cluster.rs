//! `cluster:`: N active nodes behind a router that spreads flows by ECMP,
//! each announcing its VIPs over BGP (see `crate::cluster`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// 1..=255, unique within the cluster.
    #[serde(deserialize_with = "super::de_node_id")]
    pub node_id: u8,
    /// Where this node receives flow events.
    pub listen: SocketAddr,
    /// Every other node's `listen`.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// Shared secret that authenticates every sync message.
    pub key_file: PathBuf,
    /// How long a node keeps serving after it withdrew its routes on
    /// SIGTERM, before the agent exits.
    #[serde(default = "default_drain_timeout", with = "duration::required")]
    pub drain_timeout: Duration,
    /// How often a node tells each peer it lives (and how far its stream
    /// got); a peer silent for 3 of these is shown down.
    #[serde(default = "default_heartbeat", with = "duration::required")]
    pub heartbeat: Duration,
    pub bgp: Bgp,
}

/// `cluster.bgp`: what lb tells the BGP daemon it runs (BIRD 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bgp {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// BGP hold time: a router drops a silent node after this. 3s is the
    /// least BGP allows; keepalives go at a third of it.
    #[serde(default = "default_hold_time", with = "duration::required")]
    pub hold_time: Duration,
    pub neighbors: Vec<Neighbor>,
    /// A VIP is announced while its farm has at least this many up reals.
    #[serde(default = "default_min_up")]
    pub min_up: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbor {
    pub address: IpAddr,
    pub remote_as: u32,
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_heartbeat() -> Duration {
    Duration::from_millis(200)
}

fn default_hold_time() -> Duration {
    Duration::from_secs(3)
}

fn default_min_up() -> u32 {
    1
}

/// A real's endpoint and the one VIP it answers for: what lets any node of
/// a cluster translate a reply it holds no flow for (the real's SYN-ACK may
/// come back through another node than the SYN went, before the flow's
/// sync arrives). Only a real:port that serves one VIP has one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRoute {
    pub real: SocketAddr,
    pub protocol: super::Protocol,
    pub vip: SocketAddr,
    pub vip_name: String,
    pub farm: String,
    /// The real's index in its farm, for the position of an error.
    pub index: usize,
}

impl super::Config {
    /// Every real endpoint's VIP, in VIP then real order. A real:port that
    /// serves two VIP endpoints appears twice (validation refuses that in a
    /// cluster).
    pub fn reply_routes(&self) -> Vec<ReplyRoute> {
        let mut out = Vec::new();
        for (name, vip) in &self.vips {
            let Some(farm) = self.serverfarms.get(&vip.serverfarm) else {
                continue;
            };
            for (index, real) in farm.reals.iter().enumerate() {
                out.push(ReplyRoute {
                    real: SocketAddr::new(real.address, real.port.unwrap_or(vip.port)),
                    protocol: vip.protocol,
                    vip: SocketAddr::new(vip.address, vip.port),
                    vip_name: name.clone(),
                    farm: vip.serverfarm.clone(),
                    index,
                });
            }
        }
        out
    }
}
