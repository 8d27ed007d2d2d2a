//! End to end: health probes, passive health, fail actions, admin states and
//! backups, with real servers killed, frozen (SIGSTOP: the host stays up and
//! its sockets open, the service stops answering) and brought back.
use std::{
    collections::BTreeMap,
    io,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use lb_tests::{
    HttpConn, TestHook,
    rig::{HTTP, Rig, UDP},
    topology::vip,
    wait_until,
};
use lb_userspace::api::{RealRow, RealState};

const T: Duration = Duration::from_secs(2);

fn www() -> SocketAddr {
    SocketAddr::new(vip(10).into(), 80)
}

fn rig(config: &str) -> Rig {
    Rig::new(config, env!("CARGO_BIN_EXE_lb-testsrv"))
}

/// A farm of the three reals on `port`, with `extra` farm keys.
fn farm(name: &str, port: u16, extra: &str) -> String {
    format!(
        "  {name}:\n{extra}    reals:\n      - {{ address: 203.0.113.11, port: {port} }}\n      - {{ address: 203.0.113.12, port: {port} }}\n      - {{ address: 203.0.113.13, port: {port} }}\n"
    )
}

fn config(probe: &str, farms: &str, vips: &str) -> String {
    format!(
        "interfaces: [eth0, eth1]\nxdp_mode: native\nprobes:\n  hc: {probe}\nserverfarms:\n{farms}vips:\n{vips}"
    )
}

const WWW: &str = "  www: { address: 198.51.100.10, port: 80, serverfarm: web }\n";

/// `lb reals --json` as (address:port -> row).
fn reals(rig: &Rig) -> BTreeMap<String, RealRow> {
    rig.lb
        .reals()
        .into_iter()
        .map(|r| (format!("{}:{}", r.address, r.port), r))
        .collect()
}

fn state(rig: &Rig, real: &str) -> Option<RealState> {
    reals(rig).get(real).map(|r| r.state)
}

/// Waits for `real` to reach `want`; returns how long it took.
fn wait_state(rig: &Rig, real: &str, want: RealState, within: Duration) -> Duration {
    let start = Instant::now();
    assert!(
        wait_until(within, Duration::from_millis(25), || state(rig, real)
            == Some(want)),
        "{real} did not become {want} within {within:?}: {:?}\n{}",
        reals(rig).get(real),
        rig.lb.proc.log()
    );
    start.elapsed()
}

fn all_up(rig: &Rig) {
    for r in [
        "203.0.113.11:8080",
        "203.0.113.12:8080",
        "203.0.113.13:8080",
    ] {
        wait_state(rig, r, RealState::Up, Duration::from_secs(5));
    }
}

/// A keep-alive connection through the VIP that landed on `real`.
fn conn_on(rig: &Rig, real: &str) -> HttpConn {
    for _ in 0..30 {
        let mut c = rig
            .topo
            .client
            .run(|| HttpConn::connect(www(), T))
            .expect("connect");
        if rig
            .topo
            .client
            .run(|| c.get("/"))
            .expect("request")
            .1
            .trim()
            == real
        {
            return c;
        }
    }
    panic!("no connection landed on {real} in 30 tries");
}

/// Keep-alive connections through the VIP until each real holds one.
fn one_conn_per_real(rig: &Rig) -> BTreeMap<String, HttpConn> {
    let mut conns = BTreeMap::new();
    for _ in 0..12 {
        let mut c = rig
            .topo
            .client
            .run(|| HttpConn::connect(www(), T))
            .expect("connect");
        let (_, body) = rig.topo.client.run(|| c.get("/")).expect("first request");
        conns.entry(body.trim().to_string()).or_insert(c);
        if conns.len() == 3 {
            break;
        }
    }
    assert_eq!(conns.len(), 3, "round-robin reached every real");
    conns
}

fn gets(rig: &Rig, n: usize) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for i in 0..n {
        let body = rig
            .get(www())
            .unwrap_or_else(|e| panic!("request {i}: {e}\n{}", rig.lb.proc.log()));
        *t.entry(body).or_insert(0) += 1;
    }
    t
}

fn is_reset(r: &io::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(e) if e.kind() == io::ErrorKind::ConnectionReset)
}

#[test]
fn a_dead_real_is_marked_down_avoided_and_brought_back() {
    let probe = "{ type: http, path: /healthz, interval: 1s, fast_interval: 200ms, down_interval: 300ms, timeout: 300ms, rise: 2, fall: 2 }";
    let mut rig = rig(&config(
        probe,
        &farm("web", HTTP, "    probes: [hc]\n"),
        WWW,
    ));
    all_up(&rig);
    assert!(
        rig.lb
            .proc
            .log()
            .contains("web/203.0.113.12:8080 up: http 200 (first check)"),
        "{}",
        rig.lb.proc.log()
    );

    rig.servers[1].kill();
    // Bound: the next check comes within `interval`; then fall x fast_interval
    // more, each failing within `timeout` (connect refused is immediate).
    let took = wait_state(
        &rig,
        "203.0.113.12:8080",
        RealState::Down,
        Duration::from_secs(4),
    );
    println!("down {took:?} after the kill (bound: 1s + 2 x 200ms + 300ms)");
    assert!(took <= Duration::from_millis(1700 + 500), "{took:?}");
    assert!(
        rig.lb
            .proc
            .log()
            .contains("web/203.0.113.12:8080 down: http connect refused (2/2)"),
        "{}",
        rig.lb.proc.log()
    );
    let last = reals(&rig)["203.0.113.12:8080"].last_check.clone().unwrap();
    assert!(
        last.contains("refused"),
        "lb reals shows the last check: {last}"
    );
    let t = gets(&rig, 12);
    assert!(
        !t.contains_key("r2"),
        "new connections avoid the dead real: {t:?}"
    );

    rig.restart_server(1);
    let took = wait_state(
        &rig,
        "203.0.113.12:8080",
        RealState::Up,
        Duration::from_secs(4),
    );
    println!("up again {took:?} after the restart (rise 2 x down_interval 300ms)");
    assert!(
        rig.lb
            .proc
            .log()
            .contains("web/203.0.113.12:8080 up: http 200 (2/2)")
    );
    let t = gets(&rig, 12);
    assert_eq!(t.get("r2"), Some(&4), "back in the rotation: {t:?}");
}

#[test]
fn purge_resets_idle_and_active_clients_of_a_dead_real_only() {
    let probe = "{ type: http, path: /healthz, interval: 500ms, fast_interval: 100ms, timeout: 200ms, rise: 1, fall: 2 }";
    let rig = rig(&config(
        probe,
        &farm("web", HTTP, "    failaction: purge\n    probes: [hc]\n"),
        WWW,
    ));
    all_up(&rig);
    let mut conns = one_conn_per_real(&rig);
    // A second connection on r1: the active one.
    let mut active = conn_on(&rig, "r1");

    // Freeze r1: its host and sockets stay, its service stops answering.
    assert!(rig.servers[0].signal(libc::SIGSTOP));
    wait_state(
        &rig,
        "203.0.113.11:8080",
        RealState::Down,
        Duration::from_secs(3),
    );
    let verdict = Instant::now();
    // The idle client hears a RST from the agent's sweep.
    let idle = conns.get_mut("r1").unwrap();
    let r = idle.wait_closed(Duration::from_secs(2));
    let heard = verdict.elapsed();
    println!("idle client of the dead real: {r:?} {heard:?} after the down verdict was seen");
    assert!(is_reset(&r), "idle client gets a RST: {r:?}");
    assert!(heard < Duration::from_secs(1), "within a second: {heard:?}");
    // The active client's next request fails at once with a reset.
    let start = Instant::now();
    let r = rig.topo.client.run(|| active.get("/"));
    assert!(
        is_reset(&r) || matches!(&r, Err(e) if e.kind() == io::ErrorKind::BrokenPipe),
        "active client: {r:?}"
    );
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "at once: {:?}",
        start.elapsed()
    );
    // Flows on the other reals are untouched.
    for name in ["r2", "r3"] {
        let c = conns.get_mut(name).unwrap();
        let (_, body) = rig
            .topo
            .client
            .run(|| c.get("/"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(body.trim(), name);
    }
    assert!(
        rig.lb.proc.log().contains("purge: removed"),
        "{}",
        rig.lb.proc.log()
    );
    assert!(
        rig.lb.flows(&["--real", "203.0.113.11"]).is_empty(),
        "no flow left on the dead real"
    );
    rig.servers[0].signal(libc::SIGCONT);
}

#[test]
fn reassign_moves_udp_on_and_resets_tcp_through_the_new_real() {
    let probe = "{ type: http, port: 8080, path: /healthz, interval: 500ms, fast_interval: 100ms, timeout: 200ms, rise: 1, fall: 2 }";
    let farms = farm("web", HTTP, "    failaction: reassign\n    probes: [hc]\n")
        + &farm("dns", UDP, "    failaction: reassign\n    probes: [hc]\n");
    let vips = format!(
        "{WWW}  dns: {{ address: 198.51.100.10, port: 53, protocol: udp, serverfarm: dns }}\n"
    );
    let rig = rig(&config(probe, &farms, &vips));
    all_up(&rig);
    for r in [
        "203.0.113.11:5353",
        "203.0.113.12:5353",
        "203.0.113.13:5353",
    ] {
        wait_state(&rig, r, RealState::Up, Duration::from_secs(5));
    }
    // One UDP "connection": the same socket, so the same flow, throughout.
    let dns = SocketAddr::new(vip(10).into(), 53);
    let udp = rig.topo.client.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(dns).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s
    });
    let ask = |msg: &str| -> String {
        udp.send(msg.as_bytes()).unwrap();
        let mut b = [0u8; 512];
        let n = udp
            .recv(&mut b)
            .unwrap_or_else(|e| panic!("udp reply to {msg}: {e}"));
        String::from_utf8_lossy(&b[..n]).to_string()
    };
    let first = ask("a");
    let (real, _) = first.split_once(':').unwrap();
    let idx = real[1..].parse::<usize>().unwrap() - 1;
    let dead_addr = format!("203.0.113.{}", 11 + idx);
    // A TCP connection on the same real.
    let mut tcp = conn_on(&rig, real);

    assert!(rig.servers[idx].signal(libc::SIGSTOP));
    wait_state(
        &rig,
        &format!("{dead_addr}:5353"),
        RealState::Down,
        Duration::from_secs(3),
    );
    wait_state(
        &rig,
        &format!("{dead_addr}:8080"),
        RealState::Down,
        Duration::from_secs(3),
    );
    let second = ask("b");
    println!("udp: {first} then {second}");
    assert!(
        second.ends_with(":b") && !second.starts_with(&format!("{real}:")),
        "moved to a live real: {second}"
    );
    assert_eq!(
        ask("c").split_once(':').unwrap().0,
        second.split_once(':').unwrap().0,
        "and stays there"
    );
    let start = Instant::now();
    let r = rig.topo.client.run(|| tcp.get("/"));
    println!("tcp after reassign: {r:?} in {:?}", start.elapsed());
    assert!(is_reset(&r), "the new real's RST, not a hang: {r:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
    rig.servers[idx].signal(libc::SIGCONT);
}

#[test]
fn none_keeps_flows_drain_finishes_them_and_backups_serve() {
    let probe = "{ type: http, path: /healthz, interval: 500ms, fast_interval: 100ms, timeout: 200ms, rise: 1, fall: 2 }";
    let web = "  web:\n    probes: [hc]\n    reals:\n      - { address: 203.0.113.11, port: 8080 }\n      - { address: 203.0.113.12, port: 8080 }\n      - { address: 203.0.113.13, port: 8080, backup: true }\n";
    let rig = rig(&config(probe, web, WWW));
    all_up(&rig);
    let t = gets(&rig, 6);
    assert!(
        !t.contains_key("r3"),
        "the backup takes nothing while primaries serve: {t:?}"
    );

    // none: a frozen real keeps its flow; when it answers again, so does the flow.
    let mut on_r1 = conn_on(&rig, "r1");
    assert!(rig.servers[0].signal(libc::SIGSTOP));
    wait_state(
        &rig,
        "203.0.113.11:8080",
        RealState::Down,
        Duration::from_secs(3),
    );
    assert_eq!(
        rig.lb
            .flows(&["--real", "203.0.113.11", "--state", "established"])
            .len(),
        1,
        "the flow stays"
    );
    let t = gets(&rig, 4);
    assert_eq!(
        t.get("r2"),
        Some(&4),
        "new flows go to the live primary: {t:?}"
    );
    rig.servers[0].signal(libc::SIGCONT);
    let (_, body) = rig
        .topo
        .client
        .run(|| on_r1.get("/"))
        .expect("the kept flow works again");
    assert_eq!(body.trim(), "r1");
    wait_state(
        &rig,
        "203.0.113.11:8080",
        RealState::Up,
        Duration::from_secs(3),
    );

    // drain: the open connection continues, new ones go elsewhere.
    let out = rig.lb.cli(&["real", "drain", "web", "203.0.113.11:8080"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&rig, "203.0.113.11:8080"), Some(RealState::Drain));
    for _ in 0..5 {
        let (_, body) = rig
            .topo
            .client
            .run(|| on_r1.get("/"))
            .expect("draining flow continues");
        assert_eq!(body.trim(), "r1");
    }
    let t = gets(&rig, 6);
    assert_eq!(
        t.get("r2"),
        Some(&6),
        "no new flows on a draining real: {t:?}"
    );

    // No primary can take new flows: the backup serves.
    let out = rig.lb.cli(&["real", "disable", "web", "203.0.113.12"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = gets(&rig, 6);
    assert_eq!(
        t.get("r3"),
        Some(&6),
        "backup serves while no primary can: {t:?}"
    );
    let table = String::from_utf8_lossy(&rig.lb.cli(&["reals"]).stdout).to_string();
    println!("{table}");
    assert!(
        table.contains("disabled") && table.contains("drain") && table.contains("yes"),
        "{table}"
    );
    rig.lb.cli(&["real", "enable", "web", "203.0.113.11"]);
    let t = gets(&rig, 6);
    assert_eq!(
        t.get("r1"),
        Some(&6),
        "a primary is back: the backup steps aside: {t:?}"
    );
}

#[test]
fn passive_health_catches_a_closed_port_before_the_next_probe() {
    // The probe checks a health port that answers; the service port on r2
    // is closed, which only real connections reveal.
    let probe = "{ type: tcp, port: 8080, interval: 30s, timeout: 500ms }";
    let web = "  web:\n    probes: [hc]\n    init_state: up\n    observe: { errors: 2, hold: 20s }\n    reals:\n      - { address: 203.0.113.11, port: 8080 }\n      - { address: 203.0.113.12, port: 8081 }\n";
    let rig = rig(&config(probe, web, WWW));
    let start = Instant::now();
    let mut refused = 0;
    let mut served = 0;
    for _ in 0..12 {
        match rig.get(www()) {
            Ok(_) => served += 1,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
        if state(&rig, "203.0.113.12:8081") == Some(RealState::Down) && refused >= 2 {
            break;
        }
    }
    let took = wait_state(
        &rig,
        "203.0.113.12:8081",
        RealState::Down,
        Duration::from_secs(2),
    ) + start.elapsed();
    println!(
        "{refused} refused connections took r2 down in {took:?} (probe interval 30s); {served} served"
    );
    assert_eq!(
        refused, 2,
        "down after exactly `errors` consecutive failures"
    );
    assert!(
        took < Duration::from_secs(5),
        "long before the next probe: {took:?}"
    );
    let last = reals(&rig)["203.0.113.12:8081"].last_check.clone().unwrap();
    assert!(last.contains("passive"), "{last}");
    let t = gets(&rig, 8);
    assert_eq!(
        t.get("r1"),
        Some(&8),
        "every new connection now succeeds on r1: {t:?}"
    );
}

/// `lb stats --json`'s count for `reason`.
fn reason_count(rig: &Rig, reason: &str) -> u64 {
    rig.lb.stats().reasons.get(reason).copied().unwrap_or(0)
}

#[test]
fn a_vip_with_no_live_real_refuses_at_once_unless_told_to_drop() {
    no_live_real(TestHook::Xdp);
}

#[test]
fn a_vip_with_no_live_real_refuses_at_once_on_the_tc_hook() {
    no_live_real(TestHook::Tc);
}

/// Every real of both farms dead: a connect and a datagram through the VIP
/// fail within 100 ms; a VIP with `no_real: drop` keeps silent (which also
/// shows the test tells the two apart).
fn no_live_real(hook: TestHook) {
    let probe = "{ type: http, port: 8080, path: /healthz, interval: 500ms, fast_interval: 100ms, timeout: 200ms, rise: 1, fall: 2 }";
    let farms = farm("web", HTTP, "    probes: [hc]\n") + &farm("dns", UDP, "    probes: [hc]\n");
    let vips = format!(
        "{WWW}  dns: {{ address: 198.51.100.10, port: 53, protocol: udp, serverfarm: dns }}\n  quiet: {{ address: 198.51.100.10, port: 81, serverfarm: web, no_real: drop }}\n"
    );
    let config = config(probe, &farms, &vips);
    let mut rig = Rig::with_hook(&config, env!("CARGO_BIN_EXE_lb-testsrv"), 65536, hook);
    all_up(&rig);
    for s in &mut rig.servers {
        s.kill();
    }
    for port in [HTTP, UDP] {
        for i in 11..=13 {
            let real = format!("203.0.113.{i}:{port}");
            wait_state(&rig, &real, RealState::Down, Duration::from_secs(5));
        }
    }
    let stats = || String::from_utf8_lossy(&rig.lb.cli(&["stats"]).stdout).to_string();

    // TCP: refused by the datapath's RST, not left to the connect timeout.
    let (r, took) = rig.topo.client.run(|| {
        let start = Instant::now();
        let r = std::net::TcpStream::connect_timeout(&www(), Duration::from_secs(3));
        (r, start.elapsed())
    });
    let err = r.expect_err("no real can take the connection");
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionRefused,
        "{err}\n{}",
        stats()
    );
    assert!(took < Duration::from_millis(100), "refused after {took:?}");
    println!("{hook:?}: TCP connect refused after {took:?}");

    // UDP: the port unreachable reaches the client's connected socket.
    let dns = SocketAddr::new(vip(10).into(), 53);
    let (r, took) = rig.topo.client.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(dns).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let start = Instant::now();
        s.send(b"anyone?").unwrap();
        let mut b = [0u8; 64];
        (s.recv(&mut b), start.elapsed())
    });
    let err = r.expect_err("no real can answer");
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionRefused,
        "{err}\n{}",
        stats()
    );
    assert!(took < Duration::from_millis(100), "refused after {took:?}");
    println!("{hook:?}: UDP refused after {took:?}");

    // `no_real: drop`: silence, as before; the client's own timeout ends it.
    let quiet = SocketAddr::new(vip(10).into(), 81);
    let r = rig
        .topo
        .client
        .run(|| std::net::TcpStream::connect_timeout(&quiet, Duration::from_millis(500)));
    let err = r.expect_err("dropped");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");

    for reason in ["no_real_rst", "no_real_unreach", "drop_no_real"] {
        assert!(reason_count(&rig, reason) >= 1, "{reason}\n{}", stats());
    }
}

/// `track:`: the echo farm has no probes of its own; each of its reals
/// follows the web real on the same host. A dead host's web real goes down
/// by its probe and its echo real with it (without `track` it would stay
/// up, unchecked), and both come back together.
#[test]
fn a_tracking_real_follows_the_health_of_the_real_it_tracks() {
    let probe = "{ type: http, path: /healthz, interval: 1s, fast_interval: 200ms, down_interval: 300ms, timeout: 300ms, rise: 2, fall: 2 }";
    let echo = "  echo:\n    reals:\n      - { address: 203.0.113.11, port: 7000, track: web/203.0.113.11:8080 }\n      - { address: 203.0.113.12, port: 7000, track: web/203.0.113.12:8080 }\n      - { address: 203.0.113.13, port: 7000, track: web/203.0.113.13:8080 }\n";
    let mut rig = rig(&config(
        probe,
        &format!("{}{echo}", farm("web", HTTP, "    probes: [hc]\n")),
        &format!("{WWW}  echo: {{ address: 198.51.100.10, port: 7, serverfarm: echo }}\n"),
    ));
    all_up(&rig);
    for i in 1..=3 {
        wait_state(
            &rig,
            &format!("203.0.113.1{i}:7000"),
            RealState::Up,
            Duration::from_secs(5),
        );
    }
    let row = &reals(&rig)["203.0.113.12:7000"];
    assert_eq!(row.tracks.as_deref(), Some("web/203.0.113.12:8080"));
    let out = rig.lb.cli(&["reals", "--farm", "echo"]);
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert!(table.contains("tracks web/203.0.113.12:8080"), "{table}");

    rig.servers[1].kill();
    wait_state(
        &rig,
        "203.0.113.12:8080",
        RealState::Down,
        Duration::from_secs(4),
    );
    let took = wait_state(
        &rig,
        "203.0.113.12:7000",
        RealState::Down,
        Duration::from_secs(1),
    );
    println!("the tracking real went down {took:?} after the real it tracks");
    assert!(
        rig.lb
            .proc
            .log()
            .contains("track: echo/203.0.113.12:7000 down, as web/203.0.113.12:8080 is"),
        "{}",
        rig.lb.proc.log()
    );
    // New echo connections avoid it.
    let vip7 = SocketAddr::new(vip(10).into(), 7);
    for i in 0..9 {
        let mut c = rig
            .topo
            .client
            .run(|| lb_tests::EchoConn::connect(vip7, T))
            .unwrap_or_else(|e| panic!("echo connection {i} to a live real: {e}"));
        let m = format!("m{i}");
        assert_eq!(
            rig.topo.client.run(|| c.roundtrip(m.as_bytes())).unwrap(),
            m.as_bytes()
        );
    }

    rig.restart_server(1);
    wait_state(
        &rig,
        "203.0.113.12:8080",
        RealState::Up,
        Duration::from_secs(4),
    );
    wait_state(
        &rig,
        "203.0.113.12:7000",
        RealState::Up,
        Duration::from_secs(1),
    );
}
