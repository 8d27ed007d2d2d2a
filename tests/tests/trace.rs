//! `lb trace` end to end: the real agent swaps the trace build into its
//! pinned links while a `lb trace` process runs and back when it ends, and
//! the lines name what the datapath did with a real client's packets.
use std::{
    net::{SocketAddr, SocketAddrV4},
    path::Path,
    time::{Duration, Instant},
};

use aya::programs::links::{FdLink, PinnedLink};
use lb_tests::{
    EchoConn, Spawned, http_get, lb_bin,
    rig::{ECHO, HTTP, Rig},
    topology::vip,
    wait_until,
};
use lb_userspace::{api::Status, reset, trace::Event};

const T: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(50);

fn config() -> String {
    let reals = |port: u16, n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "      - {{ address: 203.0.113.{}, port: {port} }}\n",
                    11 + i
                )
            })
            .collect()
    };
    format!(
        "interfaces: [eth0, eth1]\nxdp_mode: native\nserverfarms:\n  web:\n    algorithm: round-robin\n    reals:\n{}  echo:\n    reals:\n{}vips:\n  www: {{ address: 198.51.100.10, port: 80, serverfarm: web }}\n  echo: {{ address: 198.51.100.10, port: 7, serverfarm: echo }}\n",
        reals(HTTP, 3),
        reals(ECHO, 1),
    )
}

fn vip_addr(port: u16) -> SocketAddr {
    SocketAddr::new(vip(10).into(), port)
}

/// The program each pinned link of `pin_dir` runs, by link name.
fn link_programs(pin_dir: &Path) -> Vec<(String, u32)> {
    lb_userspace::datapath::pinned_links(pin_dir)
        .expect("pinned links")
        .into_iter()
        .map(|name| {
            let link = FdLink::from(PinnedLink::from_pin(pin_dir.join(&name)).expect("open link"));
            let id = link.info().expect("link info").program_id();
            (name, id)
        })
        .collect()
}

fn status(rig: &Rig) -> Status {
    rig.lb.status()
}

/// The production build's program ids (XDP, tc), as the agent reports them.
fn production(rig: &Rig) -> (u32, u32) {
    let ids = status(rig).program_ids;
    (ids.xdp, ids.tc)
}

/// Whether every link runs the production build.
fn production_everywhere(rig: &Rig) -> bool {
    let (xdp, tc) = production(rig);
    let links = link_programs(rig.lb.pin_dir());
    !links.is_empty()
        && links
            .iter()
            .all(|(name, id)| *id == if name.starts_with("tclink_") { tc } else { xdp })
}

/// Starts `lb trace --json` with `args`; returns once the agent says a
/// trace runs.
fn start_trace(rig: &Rig, args: &[&str]) -> Spawned {
    let config = rig.lb.config.to_str().unwrap().to_string();
    let bin = lb_bin();
    let mut argv = vec![bin.to_str().unwrap(), "trace", "--json", "-c", &config];
    argv.extend_from_slice(args);
    let p = rig.topo.lb.spawn_setns(&argv);
    assert!(
        wait_until(Duration::from_secs(10), POLL, || status(rig)
            .trace
            .is_some()),
        "the trace did not start:\n{}\n{}",
        p.report(),
        rig.lb.proc.report()
    );
    p
}

/// The trace's lines so far, parsed.
fn events(p: &Spawned) -> Vec<Event> {
    p.log()
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        .collect()
}

#[test]
fn trace_shows_a_request_through_the_vip_and_both_swaps_keep_every_flow() {
    let rig = Rig::new(&config(), env!("CARGO_BIN_EXE_lb-testsrv"));
    assert!(
        production_everywhere(&rig),
        "production build attached at start"
    );
    let prod = production(&rig);

    // A connection open across both swaps.
    let mut echo = rig
        .topo
        .client
        .run(|| EchoConn::connect(vip_addr(7), T))
        .expect("echo connect");
    assert_eq!(
        rig.topo.client.run(|| echo.roundtrip(b"before")).unwrap(),
        b"before"
    );

    let tracer = start_trace(&rig, &["--vip", "www", "--max-duration", "60s"]);
    let links = link_programs(rig.lb.pin_dir());
    println!("links while tracing: {links:?}; production {prod:?}");
    assert!(
        links.iter().all(|(_, id)| *id != prod.0 && *id != prod.1),
        "the trace build runs on every link: {links:?}"
    );
    assert_eq!(
        rig.topo.client.run(|| echo.roundtrip(b"during")).unwrap(),
        b"during",
        "the open connection kept its flow across the swap in"
    );

    let body = rig
        .topo
        .client
        .run(|| http_get(vip_addr(80), "/", T))
        .expect("HTTP through the VIP")
        .1;
    // Every packet of the request: the handshake, the request and answer,
    // and both FINs, each way.
    assert!(
        wait_until(Duration::from_secs(5), POLL, || {
            let ev = events(&tracer);
            ev.iter().filter(|e| e.direction == "forward").count() >= 4
                && ev
                    .iter()
                    .any(|e| e.direction == "reverse" && e.state_after == "fin")
        }),
        "trace lines:\n{}",
        tracer.log()
    );
    let ev = events(&tracer);
    for e in &ev {
        println!("{}", lb_userspace::trace::render(e));
    }
    let client = rig.topo.client_addr.to_string();
    let syn = &ev[0];
    assert_eq!(syn.direction, "forward", "{syn:?}");
    assert_eq!(syn.why, "new");
    assert_eq!(syn.algorithm.as_deref(), Some("round-robin"));
    assert_eq!(
        (syn.state_before.as_str(), syn.state_after.as_str()),
        ("-", "syn")
    );
    assert_eq!(syn.vip.as_deref(), Some("www"));
    assert_eq!(syn.farm.as_deref(), Some("web"));
    assert_eq!(syn.reason, "forward");
    assert!(
        syn.received.src.starts_with(&format!("{client}:")),
        "{syn:?}"
    );
    assert_eq!(syn.received.dst, "198.51.100.10:80");
    let real = syn.real.clone().expect("the SYN's real");
    let sent = syn.sent.as_ref().expect("the SYN was rewritten");
    assert_eq!(sent.dst, real, "sent to the real it names");
    assert_eq!(sent.src, syn.received.src, "from the client, unchanged");
    let r = real.split(':').next().unwrap();
    let n: usize = r.rsplit('.').next().unwrap().parse().unwrap();
    assert_eq!(
        body.trim(),
        format!("r{}", n - 10),
        "the real that answered is the one traced"
    );

    let synack = ev
        .iter()
        .find(|e| e.direction == "reverse")
        .expect("the SYN-ACK");
    assert_eq!(synack.why, "reply");
    assert_eq!(synack.received.src, real, "from the real");
    let back = synack.sent.as_ref().expect("reversed");
    assert_eq!(back.src, "198.51.100.10:80", "translated back to the VIP");
    assert_eq!(back.dst, syn.received.src);
    assert_eq!(synack.reason, "reverse");
    assert!(
        ev.iter().any(|e| e.direction == "forward"
            && e.why == "established"
            && e.state_before == "syn"
            && e.state_after == "established"),
        "the handshake's ACK establishes the flow"
    );
    assert!(
        ev.iter()
            .all(|e| e.received.dst.ends_with(":80") || e.received.src == real),
        "only the www VIP's packets (the echo connection is not traced)"
    );

    // kill -9: the agent sees the connection go and swaps back at once.
    tracer.signal(libc::SIGKILL);
    let gone = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), POLL, || production_everywhere(&rig)
            && status(&rig).trace.is_none()),
        "the production build is back after the tracer died:\n{}",
        rig.lb.proc.report()
    );
    println!("production back {:?} after kill -9", gone.elapsed());
    assert_eq!(
        rig.topo.client.run(|| echo.roundtrip(b"after")).unwrap(),
        b"after",
        "the open connection kept its flow across the swap back"
    );
    assert!(
        rig.get(vip_addr(80)).is_ok(),
        "new connections after the trace"
    );
}

#[test]
fn the_agent_ends_a_trace_at_max_duration_even_if_its_client_hangs() {
    let rig = Rig::new(&config(), env!("CARGO_BIN_EXE_lb-testsrv"));
    let tracer = start_trace(&rig, &["--max-duration", "2s"]);
    assert!(!production_everywhere(&rig));
    // A second trace is refused, naming the first one's pid.
    let out = rig.lb.cli(&["trace", "--count", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "a trace is already running (pid {})",
            tracer.pid()
        )),
        "{err}"
    );
    // The client stops reading (SIGSTOP): only the agent can end it.
    assert!(tracer.freeze(), "SIGSTOP the tracer");
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), POLL, || production_everywhere(&rig)),
        "the agent ended the trace at --max-duration:\n{}",
        rig.lb.proc.report()
    );
    println!("production back after {:?} of a 2s trace", t0.elapsed());
    assert!(
        rig.lb
            .proc
            .log()
            .contains("trace ended (max duration reached)")
    );
    assert!(rig.get(vip_addr(80)).is_ok());
}

#[test]
fn trace_reason_drops_shows_malformed_packets_and_nothing_else() {
    let rig = Rig::new(&config(), env!("CARGO_BIN_EXE_lb-testsrv"));
    let tracer = start_trace(&rig, &["--reason", "drops", "--count", "2"]);
    // Good traffic, which the filter leaves out.
    assert!(rig.get(vip_addr(80)).is_ok());
    // A SYN cut short inside its TCP header, then a SYN to a port no VIP has.
    let client = SocketAddrV4::new(rig.topo.client_addr, 40001);
    let to = |port| SocketAddrV4::new(vip(10), port);
    rig.topo.client.run(|| {
        let sock = reset::ResetSender::new().expect("raw socket");
        let syn = reset::tcp_segment(client, to(80), reset::SYN, 1, 0, 64240);
        sock.send_raw(&syn[..30], to(80))
            .expect("send the short SYN");
        let syn = reset::tcp_segment(client, to(81), reset::SYN, 1, 0, 64240);
        sock.send_raw(&syn, to(81)).expect("send the SYN to :81");
    });
    assert!(
        wait_until(Duration::from_secs(5), POLL, || !tracer.is_running()),
        "--count 2 ends the trace:\n{}",
        tracer.log()
    );
    let ev = events(&tracer);
    for e in &ev {
        println!("{}", lb_userspace::trace::render(e));
    }
    let reasons: Vec<&str> = ev.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["drop_bad_l4", "drop_no_vip_port"],
        "{}",
        tracer.log()
    );
    assert!(ev.iter().all(|e| e.verdict == "drop"));
    assert!(
        tracer
            .log()
            .contains("trace ended (count reached): 2 packets"),
        "{}",
        tracer.log()
    );
    assert!(wait_until(Duration::from_secs(3), POLL, || {
        production_everywhere(&rig)
    }));
}

#[test]
fn an_agent_stopped_or_killed_during_a_trace_leaves_production_in_place() {
    let mut rig = Rig::new(&config(), env!("CARGO_BIN_EXE_lb-testsrv"));
    let mut echo = rig
        .topo
        .client
        .run(|| EchoConn::connect(vip_addr(7), T))
        .expect("echo connect");
    let mut roundtrip = |rig: &Rig, what: &str| {
        assert_eq!(
            rig.topo
                .client
                .run(|| echo.roundtrip(what.as_bytes()))
                .unwrap(),
            what.as_bytes(),
            "{what}"
        );
    };

    // SIGTERM (a restart by systemd): the agent swaps production back
    // before it leaves the datapath forwarding.
    let tracer = start_trace(&rig, &[]);
    assert!(!production_everywhere(&rig));
    let prod = production(&rig);
    rig.lb.stop_with(libc::SIGTERM);
    let links = link_programs(rig.lb.pin_dir());
    assert!(
        links.iter().all(|(_, id)| *id == prod.0 || *id == prod.1),
        "production on every link after SIGTERM: {links:?} (production {prod:?})"
    );
    assert!(
        wait_until(Duration::from_secs(3), POLL, || !tracer.is_running()),
        "the tracer ends with the agent"
    );
    roundtrip(&rig, "after SIGTERM");
    rig.lb.restart(&rig.topo.lb, &[]);
    roundtrip(&rig, "after the restart");

    // SIGKILL: nothing swaps back until the next agent attaches its own
    // production build, as every start does.
    let _tracer = start_trace(&rig, &[]);
    rig.lb.proc.signal(libc::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), POLL, || !rig
        .lb
        .proc
        .is_running()));
    roundtrip(&rig, "with the trace build left running");
    rig.lb.restart(&rig.topo.lb, &[]);
    assert!(
        production_everywhere(&rig),
        "the restarted agent's production build on every link: {:?}",
        link_programs(rig.lb.pin_dir())
    );
    roundtrip(&rig, "after the restart");
    assert!(rig.get(vip_addr(80)).is_ok());
}

#[test]
fn ctrl_c_ends_a_trace_cleanly_with_its_count() {
    let rig = Rig::new(&config(), env!("CARGO_BIN_EXE_lb-testsrv"));
    let tracer = start_trace(&rig, &["--vip", "www"]);
    assert!(rig.get(vip_addr(80)).is_ok());
    assert!(wait_until(Duration::from_secs(5), POLL, || events(&tracer)
        .len()
        >= 5));
    tracer.signal(libc::SIGINT);
    assert!(
        wait_until(Duration::from_secs(5), POLL, || !tracer.is_running()),
        "Ctrl-C ends lb trace"
    );
    assert!(
        tracer.exit_status().is_some_and(|s| s.success()),
        "{}",
        tracer.log()
    );
    // The count the agent reports is every line the client printed (more
    // may have come after the first five).
    let shown = events(&tracer).len();
    assert!(
        tracer.log().contains(&format!(
            "trace ended (stopped by the client): {shown} packets"
        )),
        "{}",
        tracer.log()
    );
    assert!(production_everywhere(&rig));
}

/// The production object carries nothing of the trace build: no aya-log
/// ring, no trace map (their names appear in an object's symbols and BTF).
#[test]
fn the_production_object_has_no_trace_code() {
    let has = |obj: &[u8], name: &str| obj.windows(name.len()).any(|w| w == name.as_bytes());
    for name in ["AYA_LOGS", "TRACE_FILTER"] {
        assert!(
            !has(lb_userspace::datapath::OBJECT, name),
            "{name} in the production object"
        );
        assert!(
            has(lb_userspace::datapath::TRACE_OBJECT, name),
            "{name} in the trace build"
        );
    }
}
