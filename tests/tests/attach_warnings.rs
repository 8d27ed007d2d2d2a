//! The attach-time warnings of the real `lb` binary: a veth peer without
//! NAPI (GRO off, no XDP) and one with tx checksum offload on are named with
//! their fix, and go away once the fix is applied; a bpffs lb had to mount
//! inside a private mount namespace (`ip netns exec`) is warned about, and
//! only then.
//!
//! Both ends of the veth are in the lb's namespace, so the agent can read the
//! peer's settings. Needs root.
use std::{fs, os::unix::fs::MetadataExt, time::Duration};

use lb_tests::{LbAgent, Netns, Spawned, lb_bin, require_root, veth};

const IF: &str = "lbv0";
const PEER: &str = "lbp0";
const CONFIG: &str = "interfaces: [lbv0]\nxdp_mode: native\nserverfarms:\n  web:\n    reals:\n      - { address: 10.99.0.2, port: 8080 }\nvips:\n  www: { address: 198.51.100.10, port: 80, serverfarm: web }\n";
const T: Duration = Duration::from_secs(20);

const NAPI_FIX: &str = "fix: `ethtool -K lbp0 gro on`";
const CSUM_FIX: &str = "fix: `ethtool -K lbp0 tx off`";
const BPFFS: &str = "inside a private mount namespace";

/// The WARN lines of the agent's log that contain `needle`.
fn warned(log: &str, needle: &str) -> bool {
    log.lines()
        .any(|l| l.contains("WARN") && l.contains(needle))
}

fn pair(role: &str) -> Netns {
    require_root();
    let ns = Netns::new(role);
    veth(&ns, IF, &ns, PEER);
    ns
}

fn ethtool(ns: &Netns, settings: &[&str]) {
    let mut args = vec!["ethtool", "-K", PEER];
    args.extend_from_slice(settings);
    ns.exec(&args);
}

/// SIGINT (Ctrl-C: a clean stop, XDP detached, pins removed) and wait for
/// the exit.
fn stop(p: &Spawned) {
    assert!(p.signal(libc::SIGINT), "lb exited early:\n{}", p.report());
    for _ in 0..200 {
        if let Some(status) = p.exit_status() {
            assert!(
                status.success(),
                "lb stopped with {status}:\n{}",
                p.report()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("lb did not stop on SIGINT:\n{}", p.report());
}

/// `systemctl stop` (SIGTERM: the datapath stays) and then `lb teardown`,
/// so the next start attaches afresh and warns afresh.
fn stop_and_teardown(agent: &LbAgent) {
    agent.stop_with(libc::SIGTERM);
    agent.teardown();
}

/// Whether an agent sharing this test's mount namespace should warn about
/// the bpffs it mounted: only if that namespace is not pid 1's (lb compares
/// the same way; with pid 1's unreadable it compares with its parent, this
/// test, and so finds nothing to say).
fn bpffs_warning_expected_here(log: &str) -> bool {
    let ns = |p: &str| fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    log.contains("mounted a bpf filesystem")
        && matches!(
            (ns("/proc/self/ns/mnt"), ns("/proc/1/ns/mnt")),
            (Some(own), Some(init)) if own != init
        )
}

#[test]
fn veth_peer_warnings_name_their_fix_and_go_away_when_fixed() {
    let ns = pair("aw-veth");
    // A fresh veth already has GRO off and tx checksumming on; say so anyway.
    ethtool(&ns, &["gro", "off", "tx", "on"]);
    let mut agent = LbAgent::start(&ns, CONFIG);
    let log = agent.proc.log();
    assert!(warned(&log, NAPI_FIX), "no NAPI warning:\n{log}");
    assert!(
        warned(&log, &format!("{IF}: its veth peer {PEER} has GRO off")),
        "{log}"
    );
    assert!(warned(&log, CSUM_FIX), "no checksum warning:\n{log}");
    assert!(
        warned(&log, &format!("{IF}: its veth peer {PEER} has tx checksum")),
        "{log}"
    );
    assert_eq!(
        warned(&log, BPFFS),
        bpffs_warning_expected_here(&log),
        "{log}"
    );
    stop_and_teardown(&agent);

    ethtool(&ns, &["gro", "on", "tx", "off"]);
    agent.restart(&ns, &[]);
    let log = agent.proc.log();
    assert!(
        !log.contains(NAPI_FIX),
        "NAPI warning after the fix:\n{log}"
    );
    assert!(
        !log.contains(CSUM_FIX),
        "checksum warning after the fix:\n{log}"
    );
    assert!(!warned(&log, IF), "{log}");
    stop_and_teardown(&agent);
}

#[test]
fn bpffs_warning_only_in_a_private_mount_namespace() {
    let ns = pair("aw-bpffs");
    ethtool(&ns, &["gro", "on", "tx", "off"]);

    // The harness's way: only the network namespace is entered, the pins go
    // to this test's bpffs and outlive the agent.
    let agent = LbAgent::start(&ns, CONFIG);
    let log = agent.proc.log();
    assert_eq!(
        warned(&log, BPFFS),
        bpffs_warning_expected_here(&log),
        "{log}"
    );
    stop_and_teardown(&agent);

    // `ip netns exec`: a private mount namespace with a fresh sysfs on /sys,
    // so lb mounts its own bpffs there, which dies with it.
    let bin = lb_bin();
    let exec = ns.spawn(&[
        bin.to_str().unwrap(),
        "run",
        "-c",
        agent.config.to_str().unwrap(),
    ]);
    assert!(
        exec.wait_log_contains("lb running", T),
        "lb did not start under ip netns exec:\n{}",
        exec.report()
    );
    let log = exec.log();
    assert!(
        log.contains("mounted a bpf filesystem on /sys/fs/bpf"),
        "{log}"
    );
    assert!(warned(&log, BPFFS), "no bpffs warning:\n{log}");
    assert!(
        warned(&log, "`nsenter --net=/run/netns/NAME lb run -c FILE`"),
        "{log}"
    );
    // The veth peer is fixed: nothing else to warn about.
    assert!(!log.contains(NAPI_FIX) && !log.contains(CSUM_FIX), "{log}");
    stop(&exec);
}
