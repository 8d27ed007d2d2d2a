//! Stateful failover end to end: two lb nodes (the real `lb` binary, XDP in
//! native mode) on shared client and server segments with a direct sync
//! link, three real servers, real TCP through the VIPs (see
//! `lb_tests::ha_topology`). Node 1 (priority 200) starts first and is
//! active; node 2 (priority 100) joins as standby.
use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use lb_tests::{
    EchoConn, Fnv1a64, PatternGen, TestHook,
    ha_pair::{HaPair, KEY, SYNC_PORT, VIP, flow_set, ha, role, tcp_gap_probe, vip, vip6},
    ha_topology::HaTopology,
    rig::{ECHO, SINK},
    wait_until,
};
use lb_userspace::api::NodeRole;
use lb_userspace::ha::{
    Role,
    wire::{FlowBatch, FlowEvent, FlowTuple, Heartbeat, Key, Message, Sender, Upsert},
};

/// The pair every test starts from (lb_tests::ha_pair).
fn pair(preempt: bool) -> HaPair {
    HaPair::new(preempt, Path::new(env!("CARGO_BIN_EXE_lb-testsrv")))
}

/// Every idle connection still echoes.
fn all_echo(conns: &mut [EchoConn], what: &str) {
    for (k, c) in conns.iter_mut().enumerate() {
        let msg = format!("still there {k}\n");
        match c.roundtrip(msg.as_bytes()) {
            Ok(got) => assert_eq!(got, msg.as_bytes(), "{what}: connection {k}"),
            Err(e) => panic!(
                "{what}: idle connection {k} ({:?}) broke: {e}",
                c.local_addr()
            ),
        }
    }
}

/// A long transfer to the sink VIP: `chunks` of 64 KiB, one every 20 ms,
/// checked end to end by the sink's byte count and hash.
fn paced_transfer(topo: &HaTopology, chunks: usize) -> JoinHandle<Result<(u64, Duration), String>> {
    topo.client.thread(move || {
        let start = Instant::now();
        let c = EchoConn::connect(vip(SINK), Duration::from_secs(5)).map_err(|e| e.to_string())?;
        let s = c.stream().try_clone().map_err(|e| e.to_string())?;
        let mut w = &s;
        let mut pattern = PatternGen::new(7);
        let mut hash = Fnv1a64::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        let _ = s.set_write_timeout(Some(Duration::from_secs(20)));
        for _ in 0..chunks {
            pattern.fill(&mut buf);
            hash.update(&buf);
            w.write_all(&buf)
                .map_err(|e| format!("after {sent} bytes: {e}"))?;
            sent += buf.len() as u64;
            std::thread::sleep(Duration::from_millis(20));
        }
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&s), &mut line)
            .map_err(|e| format!("reading the sink's reply: {e}"))?;
        let want = format!("{sent} {:016x}", hash.finish());
        if line.trim() != want {
            return Err(format!("sink got {:?}, sent {want:?}", line.trim()));
        }
        Ok((sent, start.elapsed()))
    })
}

#[test]
fn failover_keeps_connections_and_the_old_node_returns_without_preempting() {
    failover_keeps_connections(TestHook::Xdp);
}

#[test]
fn failover_keeps_connections_on_the_tc_hook() {
    failover_keeps_connections(TestHook::Tc);
}

fn failover_keeps_connections(hook: TestHook) {
    let mut p = HaPair::with_hook(
        false,
        Path::new(env!("CARGO_BIN_EXE_lb-testsrv")),
        65536,
        hook,
    );
    let mut idle = p.idle_conns(200);
    let transfer = paced_transfer(&p.topo, 250); // 16 MB over ~5 s
    let stop = Arc::new(AtomicBool::new(false));
    let probe = tcp_gap_probe(&p.topo, stop.clone(), Duration::from_millis(10));
    p.wait_copy(1, 0);
    std::thread::sleep(Duration::from_millis(500));
    let before = ha(&p.lbs[1]);
    println!(
        "standby before the kill: {} flows applied, {} messages accepted",
        before.sync.applied_upserts, before.messages.accepted
    );

    // Traffic goes through node 1: the client's and the reals' gateways
    // resolve to its interfaces.
    p.assert_gateways_at(0);

    // Node 1 dies: its agent is killed and its links go down.
    let killed = Instant::now();
    p.lbs[0].proc.kill();
    p.topo.node_down(0);
    let ok = wait_until(Duration::from_secs(3), Duration::from_millis(10), || {
        role(&p.lbs[1]) == NodeRole::Active
    });
    let promoted = killed.elapsed();
    assert!(
        ok,
        "node 2 did not take over: {:?}\n{}",
        ha(&p.lbs[1]),
        p.lbs[1].proc.report()
    );
    println!(
        "node 2 active {:.0} ms after the kill",
        promoted.as_secs_f64() * 1e3
    );
    assert!(promoted < Duration::from_secs(1), "took {promoted:?}");

    let (sent, took) = transfer
        .join()
        .expect("transfer thread")
        .unwrap_or_else(|e| panic!("the transfer broke: {e}\n{}", p.lbs[1].proc.report()));
    println!("transfer: {sent} bytes intact in {took:?} across the failover");
    p.assert_gateways_at(1);
    all_echo(&mut idle, "after failover");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let gap = probe.join().expect("probe thread").expect("gap probe");
    println!(
        "failover gap seen by a steady echo stream: {:.0} ms",
        gap.as_secs_f64() * 1e3
    );
    let human = p.lbs[1].cli(&["ha", "status"]);
    assert!(human.status.success());
    println!(
        "lb ha status on node 2:\n{}",
        String::from_utf8_lossy(&human.stdout)
    );

    // The old node comes back (a reboot: clean datapath). It becomes a
    // synced standby and, without preempt, does not take the role.
    p.topo.node_up(0);
    p.topo.wait_ready();
    p.lbs[0].restart(&p.topo.lbs[0], &["--reset"]);
    p.wait_standby_synced(0, Duration::from_secs(10));
    p.wait_copy(0, 1);
    let s = ha(&p.lbs[0]);
    assert_eq!(s.transitions.to_active, 0, "it never was active: {s:?}");
    assert_eq!(role(&p.lbs[1]), NodeRole::Active);
    assert!(
        s.floating_ips.iter().all(|f| f.held == Some(false)),
        "a standby holds no floating ip: {s:?}"
    );
    println!("node 1 back: standby, bulk copy {:?}", s.sync.last_bulk);

    // A manual takeover back, with traffic running, loses nothing.
    let transfer = paced_transfer(&p.topo, 100);
    std::thread::sleep(Duration::from_millis(300));
    let out = p.lbs[0].cli(&["ha", "takeover"]);
    assert!(
        out.status.success(),
        "takeover: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
            role(&p.lbs[1]) == NodeRole::Standby
        }),
        "node 2 did not step down: {:?}",
        ha(&p.lbs[1])
    );
    assert_eq!(role(&p.lbs[0]), NodeRole::Active);
    transfer
        .join()
        .expect("transfer thread")
        .unwrap_or_else(|e| panic!("the transfer broke at the takeover: {e}"));
    all_echo(&mut idle, "after the takeover back");
    p.wait_standby_synced(1, Duration::from_secs(10));
}

#[test]
fn an_ipv6_flow_survives_a_failover_and_the_ipv6_gateways_move() {
    let p = HaPair::dual_stack(Path::new(env!("CARGO_BIN_EXE_lb-testsrv")));
    let mut conns: Vec<EchoConn> = p.topo.client.run(|| {
        (0..12)
            .map(|k| {
                let mut c = EchoConn::connect(vip6(ECHO), Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("IPv6 connection {k}: {e}"));
                let msg = format!("hello {k}\n");
                assert_eq!(c.roundtrip(msg.as_bytes()).expect("echo"), msg.as_bytes());
                c
            })
            .collect()
    });
    // The standby holds the IPv6 flows: synced in wire version 2.
    p.wait_copy(1, 0);
    let v6_flows = flow_set(&p.lbs[1])
        .into_iter()
        .filter(|(_, vip, _)| vip.starts_with("[2001:db8:10::10]"))
        .count();
    assert_eq!(v6_flows, 12, "{:?}", flow_set(&p.lbs[1]));
    let s = ha(&p.lbs[0]);
    assert_eq!(s.sync.wire_version, 2, "{s:?}");
    assert_eq!(s.sync.ipv6_held_back, 0, "{s:?}");
    p.assert_gateways6_at(0);

    p.lbs[0].proc.kill();
    p.topo.node_down(0);
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(10), || {
            role(&p.lbs[1]) == NodeRole::Active
        }),
        "node 2 did not take over: {:?}",
        ha(&p.lbs[1])
    );
    p.assert_gateways6_at(1);
    all_echo(&mut conns, "IPv6 after failover");
    let s = ha(&p.lbs[1]);
    assert!(s.garps_sent >= 4, "{s:?}");
}

#[test]
fn cutting_only_the_sync_link_changes_no_role_and_the_tables_converge() {
    let p = pair(false);
    let mut conns = p.idle_conns(50);
    p.wait_copy(1, 0);
    p.topo.cut_sync();
    // Well past the dead interval (300 ms): the standby hears no heartbeat
    // but still reaches node 1 over the data plane.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(role(&p.lbs[0]), NodeRole::Active);
    let s = ha(&p.lbs[1]);
    assert_eq!(s.role, NodeRole::Standby, "{s:?}");
    assert!(!s.peer.alive, "{s:?}");
    // The table changes while the link is down: 20 connections close, 30
    // new ones open.
    for c in conns.drain(..20) {
        drop(c);
    }
    let _new = p.idle_conns(30);
    std::thread::sleep(Duration::from_millis(2500)); // fin timeout 1 s + a sweep
    assert_eq!(role(&p.lbs[0]), NodeRole::Active);
    assert_eq!(role(&p.lbs[1]), NodeRole::Standby);
    p.topo.heal_sync();
    p.wait_standby_synced(1, Duration::from_secs(10));
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        flow_set(&p.lbs[0]) == flow_set(&p.lbs[1])
    });
    assert!(
        ok,
        "tables differ after the heal: {} vs {} flows\n{:?}",
        flow_set(&p.lbs[0]).len(),
        flow_set(&p.lbs[1]).len(),
        ha(&p.lbs[1])
    );
    println!(
        "converged at {} flows; standby: {:?}",
        flow_set(&p.lbs[0]).len(),
        ha(&p.lbs[1]).sync
    );
    all_echo(&mut conns, "after the heal");
}

#[test]
fn forged_or_replayed_sync_messages_change_nothing() {
    let p = pair(false);
    let _conns = p.idle_conns(10);
    p.wait_copy(1, 0);
    let before = ha(&p.lbs[1]);
    let flows_before = flow_set(&p.lbs[1]);
    let peer_boot = before.peer.boot_id.expect("peer boot id");

    // What each forgery tries: a heartbeat claiming the active role with a
    // huge term, and a bulk copy that names one made-up flow (applied, it
    // would replace the standby's table).
    let fake = FlowTuple::new(
        SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 99), 4242).into(),
        SocketAddrV4::new(VIP, ECHO).into(),
        6,
    )
    .expect("one family");
    let messages = [
        Message::Heartbeat(Heartbeat {
            priority: 255,
            role: Role::Active,
            term: 1_000_000,
            bulk_synced: true,
            yielding: false,
            flows: 1,
            next_seq: 1,
        }),
        Message::FlowBatch(FlowBatch {
            first_seq: 1,
            events: vec![
                FlowEvent::BulkStart,
                FlowEvent::Upsert(
                    Upsert::new(
                        fake,
                        SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 11), ECHO).into(),
                        2,
                        0,
                        0,
                    )
                    .expect("one family"),
                ),
                FlowEvent::BulkEnd { total: 1 },
            ],
        }),
    ];
    let wrong_key = Key::from_bytes(b"not-the-shared-key-0123456789").expect("key");
    let right_key = Key::from_bytes(KEY).expect("key");
    let now_boot = lb_userspace::ha::wire::boot_id(SystemTime::now());
    // (what, key, boot id): a wrong key; the right key with the live boot's
    // sequence numbers from 1 again (a replay of old datagrams); the right
    // key from an earlier boot.
    let senders = [
        ("wrong key", Sender::new(wrong_key, 1, now_boot)),
        (
            "old sequence numbers",
            Sender::new(right_key.clone(), 1, peer_boot),
        ),
        ("an earlier boot", Sender::new(right_key, 1, peer_boot - 1)),
    ];
    let target = SocketAddr::new(HaTopology::lb_sync_addr(1).into(), SYNC_PORT);
    p.topo.lbs[0].run(|| {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for (_, mut tx) in senders {
            for m in &messages {
                sock.send_to(&tx.seal(m).expect("seal"), target)
                    .expect("send");
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let after = ha(&p.lbs[1]);
    let (rej, rej_before) = (after.messages.rejected, before.messages.rejected);
    println!(
        "standby messages after the forgeries: {:?} (before: {:?}), term {} peer {:?}",
        after.messages, before.messages, after.term, after.peer
    );
    assert_eq!(rej.bad_mac - rej_before.bad_mac, 2, "{after:?}");
    let old = (rej.stale + rej.replay) - (rej_before.stale + rej_before.replay);
    assert_eq!(
        old, 4,
        "two replayed and two from an earlier boot: {after:?}"
    );
    assert_eq!(after.role, NodeRole::Standby);
    assert_eq!(after.term, before.term, "no forged term was taken");
    assert_eq!(role(&p.lbs[0]), NodeRole::Active);
    let flows_after = flow_set(&p.lbs[1]);
    assert_eq!(
        flows_after, flows_before,
        "the standby's table did not change"
    );
    assert!(!flows_after.iter().any(|(c, _, _)| c == "192.0.2.99:4242"));
    // The real stream still works.
    let _more = p.idle_conns(5);
    p.wait_copy(1, 0);
}

/// `systemctl stop` and `restart` on the active node (SIGTERM, then a new
/// `lb run`) keep the role, the floating IPs and every connection: the peer
/// sees a node that still answers and stays standby. Taking the node down
/// is `lb teardown`, which hands the role to the synced peer first.
#[test]
fn a_stop_keeps_the_active_role_and_teardown_hands_it_over() {
    let mut p = pair(false);
    let mut idle = p.idle_conns(20);
    p.wait_copy(1, 0);

    p.lbs[0].stop_with(libc::SIGTERM);
    // Longer than the peer's dead interval (3 heartbeats of 100 ms): its
    // liveness ping hears the floating IPs, still held, and it stays put.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(role(&p.lbs[1]), NodeRole::Standby, "{:?}", ha(&p.lbs[1]));
    assert_eq!(p.topo.holds_floating(0), [true, true]);
    all_echo(&mut idle, "with node 1's agent stopped");
    p.lbs[0].restart(&p.topo.lbs[0], &[]);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            let s = ha(&p.lbs[0]);
            s.role == NodeRole::Active && s.peer.alive && s.peer.bulk_synced == Some(true)
        }),
        "node 1 did not resume as active beside a synced peer: {:?}",
        ha(&p.lbs[0])
    );
    assert_eq!(role(&p.lbs[1]), NodeRole::Standby);
    all_echo(&mut idle, "after node 1's restart");

    let out = p.lbs[0].teardown();
    assert!(out.contains("tore the datapath down"), "{out}");
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
            role(&p.lbs[1]) == NodeRole::Active
        }),
        "node 2 did not take the role at node 1's teardown: {:?}",
        ha(&p.lbs[1])
    );
    assert!(
        p.lbs[0].proc.log().contains("ha: standby"),
        "{}",
        p.lbs[0].proc.report()
    );
    assert_eq!(p.topo.holds_floating(0), [false, false]);
    p.assert_gateways_at(1);
    all_echo(&mut idle, "after node 1's teardown");
}
