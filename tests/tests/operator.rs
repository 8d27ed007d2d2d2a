//! End to end: the operator's view. A hitless agent restart (SIGKILL while
//! clients keep going), the Prometheus endpoint, and every CLI command in its
//! table and JSON forms.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use lb_common::{Flow, FlowKey, PROTO_TCP, ST_CLOSED, ST_ESTABLISHED, v4_mapped};
use lb_tests::{EchoConn, TestHook, http_get, rig::Rig, topology::vip, wait_until};
use lb_userspace::{
    api::{Cleared, FlowCount, FlowRow, Message, NodeRole, RealRow, RealState, Status, VipRow},
    datapath, flowtable,
};

const T: Duration = Duration::from_secs(3);

fn www() -> SocketAddr {
    SocketAddr::new(vip(10).into(), 80)
}

const CONFIG: &str = "interfaces: [eth0, eth1]\nxdp_mode: native\nprobes:\n  hc: { type: http, path: /healthz, interval: 500ms, timeout: 300ms }\nserverfarms:\n  web:\n    algorithm: least-conn\n    failaction: purge\n    probes: [hc]\n    reals:\n      - { address: 203.0.113.11, port: 8080 }\n      - { address: 203.0.113.12, port: 8080 }\n  echo:\n    reals:\n      - { address: 203.0.113.13, port: 7000 }\nvips:\n  www: { address: 198.51.100.10, port: 80, serverfarm: web }\n  echo: { address: 198.51.100.10, port: 7, serverfarm: echo }\n";

fn rig() -> Rig {
    rig_sized(65536)
}

fn rig_sized(flow_table_size: u32) -> Rig {
    rig_with(flow_table_size, TestHook::Xdp)
}

fn rig_with(flow_table_size: u32, hook: TestHook) -> Rig {
    let rig = Rig::with_hook(
        CONFIG,
        env!("CARGO_BIN_EXE_lb-testsrv"),
        flow_table_size,
        hook,
    );
    for r in ["203.0.113.11:8080", "203.0.113.12:8080"] {
        assert!(
            wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
                let out = rig.lb.cli(&["reals", "--json"]);
                let rows: Vec<RealRow> = serde_json::from_slice(&out.stdout).unwrap_or_default();
                rows.iter()
                    .any(|x| format!("{}:{}", x.address, x.port) == r && x.state == RealState::Up)
            }),
            "{r} up"
        );
    }
    rig
}

#[test]
fn the_agent_restarts_without_dropping_a_request_or_a_connection() {
    restart_drops_nothing(TestHook::Xdp);
}

#[test]
fn the_agent_restarts_without_dropping_anything_on_the_tc_hook() {
    restart_drops_nothing(TestHook::Tc);
}

fn restart_drops_nothing(hook: TestHook) {
    let mut rig = rig_with(65536, hook);
    let mut echo = rig
        .topo
        .client
        .run(|| EchoConn::connect(SocketAddr::new(vip(10).into(), 7), T))
        .expect("echo");
    assert_eq!(
        rig.topo.client.run(|| echo.roundtrip(b"before")).unwrap(),
        b"before"
    );

    // 50 requests, 0.2 s apart, 1 s timeout each, from a client thread.
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let client = rig.topo.client.thread(move || {
        let mut failures = Vec::new();
        for i in 0..50 {
            let start = Instant::now();
            if let Err(e) = http_get(www(), "/", Duration::from_secs(1)) {
                failures.push(format!("request {i}: {e}"));
            }
            std::thread::sleep(Duration::from_millis(200).saturating_sub(start.elapsed()));
        }
        d2.store(true, Ordering::SeqCst);
        failures
    });
    std::thread::sleep(Duration::from_secs(2));
    rig.lb.proc.signal(libc::SIGKILL);
    assert!(
        wait_until(T, Duration::from_millis(20), || !rig.lb.proc.is_running()),
        "agent killed"
    );
    // The datapath forwards on; the pinned flow table is readable meanwhile.
    let out = rig.lb.cli(&["flows", "--count"]);
    assert!(
        out.status.success(),
        "lb flows without an agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "flows while the agent is down: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    std::thread::sleep(Duration::from_secs(2));
    rig.lb.restart(&rig.topo.lb, &[]);
    assert!(
        rig.lb.proc.log().contains("adopted"),
        "{}",
        rig.lb.proc.log()
    );
    let failures = client.join().expect("client thread");
    assert!(done.load(Ordering::SeqCst));
    assert!(
        failures.is_empty(),
        "requests failed across the restart: {failures:?}\n{}",
        rig.lb.proc.log()
    );
    assert_eq!(
        rig.topo.client.run(|| echo.roundtrip(b"after")).unwrap(),
        b"after",
        "the open connection survived"
    );
    // The adopted agent serves the API with the same state.
    let status = rig.lb.status();
    assert!(status.adopted);
    assert_eq!(status.reals_up, 3);
    // Its first sweep runs at once: `lb status` counts the adopted flows
    // (the open echo connection at least) right after the start, not a
    // sweep interval later.
    let counted = wait_until(
        Duration::from_millis(500),
        Duration::from_millis(20),
        || {
            let s = rig.lb.status();
            s.swept && s.flows >= 1
        },
    );
    assert!(counted, "lb status counted no adopted flow within 500 ms");
    // --reset starts clean.
    rig.lb.proc.signal(libc::SIGKILL);
    assert!(wait_until(T, Duration::from_millis(20), || !rig
        .lb
        .proc
        .is_running()));
    rig.lb.restart(&rig.topo.lb, &["--reset"]);
    assert!(!rig.lb.status().adopted);
}

fn scrape(rig: &Rig) -> String {
    rig.topo.lb.run(|| {
        let mut s = TcpStream::connect_timeout(&"127.0.0.1:9100".parse().unwrap(), T)
            .expect("metrics endpoint");
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

/// Parses Prometheus text: every sample line is `name{labels} value` with a
/// number, and its family was declared by a `# TYPE` line.
fn samples(text: &str) -> Vec<(String, f64)> {
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    let mut families = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.insert(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        let family = ["_total", "_created"]
            .iter()
            .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(families.contains(family), "{name} has no # TYPE");
        out.push((series.to_string(), value));
    }
    out
}

fn value(s: &[(String, f64)], series: &str) -> f64 {
    s.iter()
        .find(|(k, _)| k == series)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {series}"))
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    let rig = rig();
    let before = samples(&scrape(&rig));
    for _ in 0..10 {
        rig.get(www()).expect("request");
    }
    let text = scrape(&rig);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..100.min(text.len())]
    );
    let after = samples(&text);
    let key = "lb_vip_new_flows_total{vip=\"www\",address=\"198.51.100.10:80\",protocol=\"tcp\"}";
    assert_eq!(
        value(&after, key) - value(&before, key),
        10.0,
        "new flows counted"
    );
    let pk = "lb_vip_packets_total{vip=\"www\",address=\"198.51.100.10:80\",protocol=\"tcp\",direction=\"in\"}";
    assert!(value(&after, pk) > value(&before, pk) + 30.0);
    assert_eq!(
        value(
            &after,
            "lb_real_up{farm=\"web\",real=\"203.0.113.11:8080\"}"
        ),
        1.0
    );
    assert!(value(&after, "lb_datapath_packets_total{reason=\"forward\"}") > 0.0);
    assert!(
        after
            .iter()
            .any(|(k, _)| k.starts_with("lb_real_probe_latency_seconds")),
        "probe latency"
    );
    println!("{} samples; e.g. {pk} = {}", after.len(), value(&after, pk));
}

#[test]
fn every_command_answers_in_table_and_json() {
    let rig = rig();
    let mut held = rig
        .topo
        .client
        .run(|| EchoConn::connect(SocketAddr::new(vip(10).into(), 7), T))
        .expect("echo");
    assert_eq!(rig.topo.client.run(|| held.roundtrip(b"x")).unwrap(), b"x");
    for _ in 0..4 {
        rig.get(www()).expect("request");
    }
    let run = |args: &[&str]| -> String {
        let out = rig.lb.cli(args);
        assert!(
            out.status.success(),
            "lb {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The JSON as scripts read it: the contract's field names are there
    // (`keys`), and the answer is the API's type.
    let raw = |args: &[&str]| -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&run(&a)).unwrap_or_else(|e| panic!("lb {args:?} --json: {e}"))
    };
    fn typed<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> T {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
    }
    let keys = |what: &str, row: &serde_json::Value, want: &[&str]| {
        let obj = row
            .as_object()
            .unwrap_or_else(|| panic!("{what} --json: not an object: {row}"));
        for k in want {
            assert!(obj.contains_key(*k), "{what} --json has {k}: {row}");
        }
    };
    // status
    let t = run(&["status"]);
    assert!(
        t.contains("role:        standalone") && t.contains("vips:        2"),
        "{t}"
    );
    let j: Status = rig.lb.status();
    assert_eq!((j.vips, j.reals, j.role), (2, 3, NodeRole::Standalone));
    // vips
    let t = run(&["vips"]);
    assert!(
        t.starts_with("NAME") && t.contains("www") && t.contains("least-conn") && t.contains("2/2"),
        "{t}"
    );
    let j = raw(&["vips"]);
    let rows: Vec<VipRow> = typed(&j);
    let at = rows.iter().position(|v| v.name == "www").unwrap();
    assert_eq!(rows[at].new_flows, 4);
    keys(
        "vips",
        &j[at],
        &[
            "name",
            "address",
            "port",
            "protocol",
            "serverfarm",
            "algorithm",
            "reals_up",
            "reals",
            "active_flows",
            "packets_in",
            "bytes_in",
            "packets_out",
            "bytes_out",
        ],
    );
    // reals
    let t = run(&["reals", "--farm", "web"]);
    assert!(
        t.starts_with("FARM") && t.lines().count() == 3 && t.contains("http 200"),
        "{t}"
    );
    let j = raw(&["reals"]);
    for r in j.as_array().unwrap() {
        keys(
            "reals",
            r,
            &[
                "farm",
                "address",
                "port",
                "state",
                "weight",
                "active_flows",
                "last_check",
            ],
        );
    }
    let rows: Vec<RealRow> = typed(&j);
    let echo_real = rows.iter().find(|r| r.farm == "echo").unwrap();
    assert_eq!(echo_real.active_flows, 1, "the held echo connection");
    // stats
    let t = run(&["stats"]);
    assert!(
        t.starts_with("REASON") && t.contains("forward") && t.contains("new_flow"),
        "{t}"
    );
    let j = rig.lb.stats();
    assert!(j.reasons["forward"] > 0 && j.new_flows == 5, "{j:?}");
    // flows (table, JSON, count, filters)
    let t = run(&["flows", "--vip", "echo"]);
    assert_eq!(t.lines().count(), 2, "{t}");
    let j = raw(&["flows", "--vip", "www"]);
    for f in j.as_array().unwrap() {
        keys(
            "flows",
            f,
            &[
                "client",
                "vip",
                "real",
                "protocol",
                "state",
                "age_ms",
                "idle_ms",
                "packets_in",
                "bytes_in",
                "packets_out",
                "bytes_out",
            ],
        );
    }
    let rows: Vec<FlowRow> = typed(&j);
    assert_eq!(rows.len(), 4);
    assert_eq!(run(&["flows", "--count"]).trim(), "5");
    // Another instance's flows, named by its socket alone: lb asks that
    // agent for its pin directory (no config file to read it from).
    let sock = rig.lb.socket().to_str().unwrap().to_string();
    assert_eq!(
        run(&[
            "flows",
            "--count",
            "--socket",
            &sock,
            "-c",
            "/nonexistent/lb.yaml"
        ])
        .trim(),
        "5"
    );
    assert_eq!(
        rig.lb
            .json::<FlowCount>(&["flows", "--count", "--state", "established"])
            .count,
        1
    );
    // real
    assert!(
        run(&["real", "drain", "web", "203.0.113.11:8080"])
            .contains("drain: web/203.0.113.11:8080")
    );
    assert_eq!(
        rig.lb
            .json::<Message>(&["real", "enable", "web", "203.0.113.11"])
            .message,
        "enable: web/203.0.113.11:8080"
    );
    // reload
    assert!(run(&["reload"]).contains("reloaded"));
    // ha: answered plainly
    assert!(run(&["ha", "status"]).contains("standalone"));
    let out = rig.lb.cli(&["ha", "takeover"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no `ha:` section")
    );
    // flows clear with a filter: only the echo flow goes.
    assert_eq!(
        rig.lb
            .json::<Cleared>(&["flows", "clear", "--vip", "198.51.100.10:7"])
            .cleared,
        1
    );
    assert_eq!(run(&["flows", "--count"]).trim(), "4");
    let j: Vec<RealRow> = rig.lb.json(&["reals", "--farm", "echo"]);
    assert_eq!(j[0].active_flows, 0, "the cleared flow no longer counts");
}

/// `n` flows shaped like `model` (its VIP and real ids), from clients
/// 10.200.0.0 and up, in `state`, last seen at `last_ns`.
fn fill(
    flows: &mut BpfHashMap<MapData, FlowKey, Flow>,
    model: &Flow,
    n: u32,
    state: u8,
    last_ns: u64,
) {
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for i in 0..n {
        let client = [10, 200 + (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let key = FlowKey {
            src_addr: v4_mapped(client),
            dst_addr: v4_mapped(vip(10).octets()),
            src_port_be: 40000u16.to_be(),
            dst_port_be: 80u16.to_be(),
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        for (k, v) in lb_tests::filled::entries(model, key, state, last_ns) {
            keys.push(k);
            values.push(v);
        }
    }
    flowtable::insert_batch(flows, &keys, &values).expect("filling the table");
}

/// Polls `lb status` every 20 ms until `done()` (at most 60 s), and for
/// 250 ms after: the slowest answer, and the longest sweep the agent
/// reported meanwhile. The work's last flow leaves the table before its
/// result reaches the agent's loop, which is when the loop records it (a
/// sweep's time); the extra polls see that.
fn watch(rig: &Rig, mut done: impl FnMut() -> bool) -> (Duration, Duration) {
    let (start, mut slowest, mut sweep) = (Instant::now(), Duration::ZERO, Duration::ZERO);
    let mut done_at: Option<Instant> = None;
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not done in 60 s:\n{}",
            rig.lb.proc.report()
        );
        let t = Instant::now();
        let out = rig.lb.cli(&["status", "--json"]);
        slowest = slowest.max(t.elapsed());
        let j: Status = serde_json::from_slice(&out.stdout).expect("status");
        let ms = j.last_sweep_ms;
        sweep = sweep.max(Duration::from_secs_f64(ms / 1000.0));
        if done_at.is_none() && done() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|t| t.elapsed() >= Duration::from_millis(250)) {
            return (slowest, sweep);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The agent's answers while `what` ran for `took`: the work must be long
/// enough to tell (300 ms), and the slowest answer a third of it at most.
fn assert_answered_beside(what: &str, took: Duration, slowest: Duration) {
    assert!(
        took > Duration::from_millis(300),
        "the {what} took {took:?}: too short to tell"
    );
    assert!(
        slowest < took / 3,
        "the agent took {slowest:?} to answer while a {took:?} {what} ran: the loop waited for it"
    );
}

/// The agent's table-wide work runs beside its loop, not on it: while a
/// sweep expires 600k flows, a purge removes 600k flows of a real set down,
/// or `lb flows clear` removes 600k flows (seconds each), the API answers
/// at once, and so do the health checks that share the loop (a probe whose
/// timeout ran out while the loop stood still would count against its
/// real).
#[test]
fn table_wide_work_does_not_stop_the_agent() {
    const N: u32 = 600_000;
    let rig = rig_sized(2 * N + 200_000);
    // One flow the datapath made: the model for the rest (its VIP and real
    // ids), as the failover bench fills tables.
    rig.get(www()).expect("a request through the VIP");
    let mut flows = datapath::open_flows(rig.lb.pin_dir()).expect("FLOWS");
    let table = flowtable::read(&flows).expect("read");
    let model = table
        .flows
        .iter()
        .find(|f| u16::from_be(f.fwd_key.dst_port_be) == 80)
        .expect("the request's flow")
        .fwd;
    let on_model_real = |flows: &BpfHashMap<MapData, FlowKey, Flow>| {
        let t = flowtable::read(flows).expect("read");
        t.flows
            .iter()
            .filter(|f| f.fwd.real_id == model.real_id)
            .count()
    };

    // Closed and idle since the clock's start: every one expires at the
    // next sweep (or two, if one began during the fill). Closed, for its
    // 10 s timeout: an established flow's hour is longer than a fresh
    // machine has been up.
    fill(&mut flows, &model, N, ST_CLOSED, 1);
    let (slowest, sweep) = watch(&rig, || {
        flowtable::read(&flows).expect("read").flows.len() < 10
    });
    println!(
        "sweeps of {N} expired flows: the longest {sweep:?}; slowest `lb status` meanwhile: {slowest:?}"
    );
    assert_answered_beside("sweep", sweep, slowest);

    // Live flows on one real, which an operator then disables (`purge`):
    // closed ones, so the purge resets nobody.
    fill(&mut flows, &model, N, ST_CLOSED, datapath::now_ns());
    let real = Ipv4Addr::from(<[u8; 4]>::try_from(&model.nat_addr[12..]).unwrap());
    let start = Instant::now();
    let out = rig.lb.cli(&["real", "disable", "web", &real.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let disable = start.elapsed();
    let (slowest, _) = watch(&rig, || on_model_real(&flows) == 0);
    let purge = start.elapsed();
    println!(
        "purge of {N} flows: {purge:?}; `lb real disable` took {disable:?}, the slowest `lb status` {slowest:?}"
    );
    // `lb real disable` is answered beside the purge it starts, too.
    assert_answered_beside("purge", purge, disable.max(slowest));
    // N, and the model flow if no sweep has expired it yet. The purge logs
    // when its result reaches the loop, which can be just after the last
    // flow left the table.
    let logged = Instant::now();
    while !rig.lb.proc.log().contains("purge: removed ")
        && logged.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = rig.lb.proc.log();
    let removed: u32 = log
        .split("purge: removed ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no purge logged:\n{log}"));
    assert!(removed >= N, "purge removed {removed} flows");
    // `lb flows clear` waits for its answer; the loop does not.
    fill(&mut flows, &model, N, ST_ESTABLISHED, datapath::now_ns());
    let (start, lb) = (Instant::now(), &rig.lb);
    let (slowest, clear) = std::thread::scope(|s| {
        let clear = s.spawn(|| {
            let out = lb.cli(&["flows", "clear", "--vip", "www"]);
            (out, start.elapsed())
        });
        let (slowest, _) = watch(&rig, || clear.is_finished());
        (slowest, clear.join().expect("the clear"))
    });
    let (out, took) = clear;
    let said = String::from_utf8_lossy(&out.stdout);
    println!(
        "`lb flows clear` of {N} flows: {took:?} ({}); the slowest `lb status` meanwhile {slowest:?}",
        said.trim()
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(&format!("cleared {N} flows")), "{said}");
    assert_answered_beside("clear", took, slowest);

    // The probes kept answering: the other real is still up.
    for r in rig
        .lb
        .reals()
        .iter()
        .filter(|r| r.farm == "web" && r.address != real.to_string())
    {
        assert_eq!(r.state, RealState::Up, "{r:?}");
    }
}

/// One agent per pin directory: a second one with a socket of its own is
/// refused before it touches the pins, and so is a teardown through a
/// socket that is not the owner's. A reload that names another pin
/// directory leaves the running one in use until a restart.
#[test]
fn one_agent_owns_its_pins_and_a_reload_does_not_move_them() {
    let rig = rig();
    let mut echo = rig
        .topo
        .client
        .run(|| EchoConn::connect(SocketAddr::new(vip(10).into(), 7), T))
        .expect("echo");
    let mut roundtrip = |m: &str| {
        assert_eq!(
            rig.topo
                .client
                .run(|| echo.roundtrip(m.as_bytes()))
                .unwrap(),
            m.as_bytes()
        );
    };
    roundtrip("before");

    let text = std::fs::read_to_string(&rig.lb.config).unwrap();
    let sock = rig.lb.socket().to_str().unwrap().to_string();
    let other_sock = rig.lb.config.with_file_name("other.sock");
    let other = rig.lb.config.with_file_name("other.yaml");
    std::fs::write(&other, text.replace(&sock, other_sock.to_str().unwrap())).unwrap();
    let lb = lb_tests::lb_bin();
    let second =
        rig.topo
            .lb
            .spawn_setns(&[lb.to_str().unwrap(), "run", "-c", other.to_str().unwrap()]);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            !second.is_running()
        }),
        "a second agent on the same pins kept running:\n{}",
        second.report()
    );
    assert!(!second.exit_status().unwrap().success());
    let owner = format!(
        "another lb agent (pid {}) owns the datapath pinned in",
        rig.lb.proc.pid()
    );
    assert!(second.log().contains(&owner), "{}", second.report());
    let out = rig.lb.cli(&["teardown", "-c", other.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "teardown through another socket: {err}"
    );
    assert!(err.contains("but does not answer on"), "{err}");
    assert!(rig.lb.pin_dir().exists(), "the pins stay");
    roundtrip("after the second agent");

    // A reload naming another pin dir: warned about, not followed.
    let pins = rig.lb.pin_dir().to_str().unwrap().to_string();
    std::fs::write(
        &rig.lb.config,
        text.replace(&pins, &format!("{pins}-moved")),
    )
    .unwrap();
    assert!(rig.lb.reload().contains("reloaded"));
    let status = rig.lb.status();
    assert_eq!(status.pin_dir, Path::new(&pins), "{status:?}");
    // Two sweeps later, none failed and the table still reads.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !rig.lb.proc.log().contains("flow sweep failed"),
        "{}",
        rig.lb.proc.report()
    );
    assert!(
        rig.lb
            .proc
            .log()
            .contains("`bpf` changed; it takes effect at the next restart")
    );
    roundtrip("after the reload");
    let count = rig.lb.cli(&["flows", "--count"]);
    assert!(count.status.success(), "{count:?}");
    assert!(!std::path::Path::new(&format!("{pins}-moved")).exists());
}

/// The API socket under a careless or hostile client: idle connections
/// do not hold up `lb status`, an endless line is cut off, and a client
/// that never sends is answered and closed.
#[test]
fn the_api_socket_bounds_idle_and_oversized_clients() {
    use std::os::unix::net::UnixStream;
    let rig = rig();
    let idle: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(rig.lb.socket()).expect("connect"))
        .collect();
    let at = Instant::now();
    let out = rig.lb.cli(&["status"]);
    assert!(out.status.success(), "{out:?}");
    let took = at.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "lb status took {took:?} beside 200 idle connections"
    );

    // 10 MB without a newline: refused once past the cap, not buffered.
    let mut big = UnixStream::connect(rig.lb.socket()).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..10 {
        if big.write_all(&chunk).is_err() {
            break; // the agent answered and closed
        }
    }
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(
        answer.contains("request longer than 65536 bytes"),
        "{answer}"
    );

    // An idle connection is answered and closed within the request time.
    let mut first = idle.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    first
        .read_to_string(&mut answer)
        .expect("answered and closed");
    assert!(answer.contains("no request within 5s"), "{answer}");
    assert!(rig.lb.cli(&["status"]).status.success());
}

/// The rules that need the host: a VIP at one of lb's own interface
/// addresses is refused by `lb check` and by a reload (the running config
/// stays), and a real no route reaches is a warning.
#[test]
fn a_vip_at_lbs_own_address_is_refused_and_an_unrouted_real_warned() {
    let rig = rig();
    // 203.0.113.1 is the lb's own eth1 address in the standard topology.
    let own = CONFIG.replace(
        "  echo: { address: 198.51.100.10, port: 7,",
        "  echo: { address: 203.0.113.1, port: 7,",
    );
    rig.lb.write_config(&own);
    let text = std::fs::read_to_string(&rig.lb.config).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("203.0.113.1, port: 7"))
        .unwrap()
        + 1;
    // lb check runs where the agent runs: in the lb namespace.
    let lb = lb_tests::lb_bin();
    let check = || {
        std::process::Command::new("ip")
            .args(["netns", "exec", rig.topo.lb.name()])
            .arg(&lb)
            .args(["check", "-c"])
            .arg(&rig.lb.config)
            .output()
            .expect("lb check")
    };
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(":{line}:"))
            && err.contains("vips.echo.address")
            && err.contains("203.0.113.1 is eth1's own address"),
        "{err}"
    );
    let out = rig.lb.cli(&["reload"]);
    assert!(!out.status.success(), "a reload is refused too");
    assert!(String::from_utf8_lossy(&out.stderr).contains("eth1's own address"));
    rig.get(www()).expect("still serving");

    // A real on a subnet no route reaches: a warning, and the config is ok.
    rig.lb.write_config(&CONFIG.replace(
        "      - { address: 203.0.113.13, port: 7000 }",
        "      - { address: 203.0.113.13, port: 7000 }\n      - { address: 172.31.9.9, port: 7000 }",
    ));
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: ") && err.contains("no route to 172.31.9.9"),
        "{err}"
    );
}
