//! What the live-view tests share: a rig with two VIPs whose probes react
//! within about a second, steady traffic through one of them, and the
//! agent's own answers (`lb vips|reals --json`) to compare the views with.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use lb_userspace::api::{RealState, VipRow};
use serde::de::DeserializeOwned;

use crate::{http_get, rig::Rig, topology::vip, wait_until};

/// `www` (least-conn over two reals, probed every 300 ms, down after two
/// failures) and `echo` (one real, no probe).
pub const CONFIG: &str = "interfaces: [eth0, eth1]\nxdp_mode: native\nprobes:\n  hc: { type: http, path: /healthz, interval: 300ms, timeout: 200ms, rise: 1, fall: 2 }\nserverfarms:\n  web:\n    algorithm: least-conn\n    failaction: purge\n    probes: [hc]\n    reals:\n      - { address: 203.0.113.11, port: 8080 }\n      - { address: 203.0.113.12, port: 8080 }\n  echo:\n    reals:\n      - { address: 203.0.113.13, port: 7000 }\nvips:\n  www: { address: 198.51.100.10, port: 80, serverfarm: web }\n  echo: { address: 198.51.100.10, port: 7, serverfarm: echo }\n";

/// The agent's HTTP listener inside the lb namespace (the default
/// `metrics.listen`).
pub const LISTEN: &str = "127.0.0.1:9100";

pub fn www() -> SocketAddr {
    SocketAddr::new(vip(10).into(), 80)
}

/// The standard rig with [`CONFIG`], both web reals up.
pub fn rig(testsrv: &str) -> Rig {
    let rig = Rig::new(CONFIG, testsrv);
    for r in ["203.0.113.11:8080", "203.0.113.12:8080"] {
        assert!(
            wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
                real_state(&rig, "web", r) == Some(RealState::Up)
            }),
            "{r} up"
        );
    }
    rig
}

/// `lb ARGS --json`, read as the API type `T`.
pub fn json<T: DeserializeOwned>(rig: &Rig, args: &[&str]) -> T {
    rig.lb.json(args)
}

/// A real's state as `lb reals --json` gives it.
pub fn real_state(rig: &Rig, farm: &str, real: &str) -> Option<RealState> {
    rig.lb.real(farm, real).map(|r| r.state)
}

/// A VIP's row of `lb vips --json`.
pub fn vip_row(rig: &Rig, name: &str) -> VipRow {
    rig.lb
        .vips()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vip {name} in lb vips"))
}

/// `count` requests through `www` from the client, `every` apart; returns
/// how many succeeded. Bounded: each request times out after 2 s.
pub fn drive(rig: &Rig, count: usize, every: Duration) -> usize {
    rig.topo.client.run(|| {
        let mut ok = 0;
        for _ in 0..count {
            let start = Instant::now();
            if http_get(www(), "/", Duration::from_secs(2)).is_ok_and(|(s, _)| s == 200) {
                ok += 1;
            }
            std::thread::sleep(every.saturating_sub(start.elapsed()));
        }
        ok
    })
}
