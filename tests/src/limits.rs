//! Configs at lb's limits: filler VIPs, farms and reals added to a config
//! until it holds `MAX_VIPS` VIPs and `MAX_REALS` reals.
//!
//! The fillers are never sent to: their VIPs are in 198.18.0.0/15 (the
//! benchmarking range) and their reals in 100.64.0.0/10, which no test
//! namespace routes, and their farms have no probes, so the agent itself
//! sends them nothing either.
use std::net::Ipv4Addr;

use lb_common::{MAX_REALS, MAX_VIPS};

/// Filler `serverfarms:` and `vips:` entries (indented for those sections)
/// for a config that already has `vips` VIPs and `reals` reals: `fN` farms
/// of round-robin, one per filler VIP `fillN`, sharing out the reals left.
/// `changed`: the filler VIP whose port is 81 instead of 80, to reload a
/// config that differs in one VIP.
pub fn fillers(vips: u32, reals: u32, changed: Option<u32>) -> (String, String) {
    let n = MAX_VIPS - vips;
    let left = MAX_REALS - reals;
    let (per, extra) = (left / n, left % n);
    let mut farms = String::new();
    let mut entries = String::new();
    let mut next_real = 0u32;
    for i in 0..n {
        farms += &format!("  f{i}:\n    reals:\n");
        for _ in 0..per + u32::from(i < extra) {
            let addr = Ipv4Addr::from(0x6440_0000 + next_real);
            farms += &format!("      - {{ address: {addr}, port: 8080 }}\n");
            next_real += 1;
        }
        let addr = Ipv4Addr::from(0xc612_0000 + i);
        let port = if changed == Some(i) { 81 } else { 80 };
        entries += &format!("  fill{i}: {{ address: {addr}, port: {port}, serverfarm: f{i} }}\n");
    }
    (farms, entries)
}
