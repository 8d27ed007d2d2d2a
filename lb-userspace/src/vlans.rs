//! The datapath's `VLANS` map: every 802.1Q device over an interface lb
//! attached to, by ifindex, with its parent and VLAN id. A tagged frame
//! whose route leaves by one of them is sent by redirect with its tag
//! rewritten (lb-ebpf's fwd.rs); without an entry it goes to the kernel.
//!
//! The kernel lists its VLAN devices in `/proc/net/vlan/config` (present
//! while the 8021q module is loaded, that is while any VLAN device can
//! exist). The route watcher calls `sync` at every link change.
use std::{collections::BTreeMap, fs};

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData};
use lb_common::VlanPort;
use log::{debug, warn};

use crate::datapath;

const CONFIG: &str = "/proc/net/vlan/config";

/// One line of `/proc/net/vlan/config`: (device, VLAN id, parent).
pub fn parse_config(text: &str) -> Vec<(String, u16, String)> {
    text.lines()
        .filter_map(|line| {
            let mut cols = line.split('|').map(str::trim);
            let (dev, vid, parent) = (cols.next()?, cols.next()?, cols.next()?);
            let vid = vid.parse().ok()?;
            Some((dev.to_owned(), vid, parent.to_owned()))
        })
        .collect()
}

/// Keeps `VLANS` equal to the kernel's VLAN devices over `interfaces`.
pub struct Vlans {
    map: HashMap<MapData, u32, VlanPort>,
    interfaces: Vec<String>,
}

impl Vlans {
    pub fn new(map: HashMap<MapData, u32, VlanPort>, interfaces: &[String]) -> Self {
        Self {
            map,
            interfaces: interfaces.to_vec(),
        }
    }

    /// Writes what the kernel has now and removes what it no longer has.
    /// Returns the number of VLAN devices the datapath can send through.
    pub fn sync(&mut self) -> Result<usize> {
        // No file: no 8021q, so no VLAN device exists.
        let text = fs::read_to_string(CONFIG).unwrap_or_default();
        let mut want = BTreeMap::new();
        for (dev, vid, parent) in parse_config(&text) {
            if !self.interfaces.contains(&parent) {
                continue;
            }
            let (Ok(ifindex), Ok(parent_ifindex)) =
                (datapath::ifindex(&dev), datapath::ifindex(&parent))
            else {
                continue;
            };
            want.insert(
                ifindex,
                VlanPort {
                    parent_ifindex,
                    vid,
                    _pad: 0,
                },
            );
        }
        let stale: Vec<u32> = self
            .map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains_key(k))
            .collect();
        for k in stale {
            let _ = self.map.remove(&k);
        }
        for (k, v) in &want {
            self.map.insert(k, v, 0).context("VLANS")?;
        }
        debug!("VLANS: {} VLAN devices over lb's interfaces", want.len());
        Ok(want.len())
    }

    /// `sync`, logging a failure instead of returning it.
    pub fn sync_or_warn(&mut self) {
        if let Err(e) = self.sync() {
            warn!("VLAN devices: {e:#}; tagged frames go to the kernel to forward");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_list() {
        let text = "VLAN Dev name    | VLAN ID\n\
                    Name-Type: VLAN_NAME_TYPE_RAW_PLUS_VID_NO_PAD\n\
                    eth1.20        | 20  | eth1\n\
                    vlan300        | 300  | eth0\n";
        assert_eq!(
            parse_config(text),
            vec![
                ("eth1.20".to_owned(), 20, "eth1".to_owned()),
                ("vlan300".to_owned(), 300, "eth0".to_owned()),
            ]
        );
    }
}
