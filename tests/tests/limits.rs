//! lb at its limits, end to end: an agent programmed with `MAX_VIPS` VIPs
//! and `MAX_REALS` reals serves traffic through one of them, a reload that
//! changes one VIP writes only that VIP and keeps an open connection, and a
//! config one real over the limit is refused with the limit named.
use std::time::{Duration, Instant};

use lb_common::{MAX_REALS, MAX_VIPS};
use lb_tests::{HttpConn, limits::fillers, rig::Rig, topology::vip};

fn vip_addr(port: u16) -> std::net::SocketAddr {
    (vip(10), port).into()
}

const T: Duration = Duration::from_secs(3);

/// The rig's three reals behind `www`, and fillers up to the limits.
fn config(changed: Option<u32>) -> String {
    let (farms, vips) = fillers(1, 3, changed);
    let reals: String = (0..3)
        .map(|i| format!("      - {{ address: 203.0.113.{}, port: 8080 }}\n", 11 + i))
        .collect();
    format!(
        "interfaces: [eth0, eth1]\nserverfarms:\n  web:\n    reals:\n{reals}{farms}vips:\n  www: {{ address: 198.51.100.10, port: 80, serverfarm: web }}\n{vips}"
    )
}

#[test]
fn at_the_limits_lb_serves_and_a_one_vip_reload_writes_one_vip() {
    let started = Instant::now();
    let rig = Rig::new(&config(None), env!("CARGO_BIN_EXE_lb-testsrv"));
    println!("started at the limits in {:?}", started.elapsed());

    let vips = rig.lb.vips();
    assert_eq!(vips.len(), MAX_VIPS as usize);
    let reals: usize = vips.iter().map(|v| v.reals).sum();
    assert_eq!(reals, MAX_REALS as usize);

    // Traffic through the one VIP with live reals, spread over all three.
    let mut seen: Vec<String> = (0..9)
        .map(|i| {
            rig.get(vip_addr(80))
                .unwrap_or_else(|e| panic!("request {i}: {e}"))
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["r1", "r2", "r3"]);

    // A connection open across a reload that moves one filler VIP's port.
    let mut conn = rig
        .topo
        .client
        .run(|| HttpConn::connect(vip_addr(80), T))
        .expect("connect");
    let (_, first) = rig.topo.client.run(|| conn.get("/")).expect("request");
    rig.lb.write_config(&config(Some(17)));
    let at = Instant::now();
    let msg = rig.lb.reload();
    println!("{} in {:?}", msg.trim(), at.elapsed());
    assert!(
        msg.contains("vips +[] -[], reals +0 -0, 2 map writes"),
        "{msg}"
    );
    let (_, again) = rig.topo.client.run(|| conn.get("/")).expect("after reload");
    assert_eq!(again, first, "the open connection stays on its real");

    // One real more than the limit: refused with the limit, nothing changes.
    rig.lb.write_config(&config(None).replacen(
        "serverfarms:\n  web:\n    reals:\n",
        "serverfarms:\n  web:\n    reals:\n      - { address: 203.0.113.99, port: 8080 }\n",
        1,
    ));
    let out = rig.lb.cli(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "over the limit is refused");
    assert!(
        err.contains(&format!(
            "{} reals over all serverfarms; at most {MAX_REALS} are supported",
            MAX_REALS + 1
        )),
        "{err}"
    );
    rig.get(vip_addr(80)).expect("still serving");
}
