//! Section 2: end to end on the standard topology (client, lb, switch,
//! three reals; tests/src/topology.rs), the same load against four ways of
//! getting from the client to the reals:
//! - plain kernel routing, no balancer: the client addresses the reals
//!   directly through the lb namespace's forwarding (the topology's limit);
//! - nftables DNAT with `numgen inc mod 3`, what kube-proxy's nftables mode
//!   does (conntrack does the reverse NAT);
//! - HAProxy in TCP mode on the VIP (a local address of the lb namespace);
//!   it terminates TCP and opens its own connection to the real (SNAT);
//! - lb, the real agent and XDP datapath in native mode on the veths;
//! - and, to tell lb's own cost from what XDP costs on veth at all: plain
//!   routing again with lb attached but configured with no VIP, so its
//!   program passes every packet to the kernel.
//!
//! Loads, the same for every system: `wrk` with `Connection: close` (one
//! TCP connection per request: connections per second), `wrk` keep-alive
//! (requests per second), one `iperf3` stream (throughput). The reals serve
//! HTTP with HAProxy's `http-request return` (an event-driven responder
//! already installed for the comparison) and run `iperf3 -s` on the first.
//!
//! Plain routing, nftables (`ip6` DNAT) and lb on both hooks also run over
//! IPv6, on the same topology built dual-stack, addressing the reals' and
//! the VIP's IPv6 addresses.
//!
//! Each round builds a fresh topology per system, in turn, so slow drift on
//! the machine (the other core's work) spreads over all of them; the report
//! takes the median round.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    Netns, Spawned, TestHook, Topology,
    topology::{vip, vip6},
};

use super::{
    record::{Deadline, emit, progress},
    testrun::median,
};

const SECTION: &str = "e2e";
const HTTP_PORT: u16 = 8080;
const VIP_HTTP_PORT: u16 = 80;
const IPERF_PORT: u16 = 5201;
/// wrk threads: one per real, so plain routing spreads like a balancer.
const THREADS: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum System {
    Plain,
    Nft,
    Haproxy,
    Lb,
    /// lb on the tc hook.
    LbTc,
    /// Plain routing with lb's XDP attached and no VIP (a diagnostic).
    PlainUnderXdp,
}

impl System {
    const ALL: [System; 6] = [
        System::Plain,
        System::Nft,
        System::Haproxy,
        System::Lb,
        System::LbTc,
        System::PlainUnderXdp,
    ];

    /// The hook the topology is built for: only lb's XDP rows need the
    /// offloads changed (hook.rs); every other system runs with the
    /// kernel's defaults.
    fn hook(self) -> TestHook {
        match self {
            System::Lb | System::PlainUnderXdp => TestHook::Xdp,
            _ => TestHook::Tc,
        }
    }

    fn key(self) -> &'static str {
        match self {
            System::Plain => "plain",
            System::Nft => "nftables",
            System::Haproxy => "haproxy",
            System::Lb => "lb",
            System::LbTc => "lb-tc",
            System::PlainUnderXdp => "plain-under-xdp",
        }
    }
}

/// A system over one address family: what a row of the report measures.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Case {
    sys: System,
    v6: bool,
}

impl Case {
    /// Every system over IPv4, then the IPv6 ones.
    fn all() -> Vec<Case> {
        let v4 = System::ALL.map(|sys| Case { sys, v6: false });
        let v6 = [System::Plain, System::Nft, System::Lb, System::LbTc]
            .map(|sys| Case { sys, v6: true });
        v4.into_iter().chain(v6).collect()
    }

    fn key(self) -> String {
        if self.v6 {
            format!("{}-ipv6", self.sys.key())
        } else {
            self.sys.key().to_string()
        }
    }

    /// The VIP, or the reals, in the case's family.
    fn vip(self) -> IpAddr {
        if self.v6 {
            vip6(10).into()
        } else {
            vip(10).into()
        }
    }

    fn reals(self, topo: &Topology) -> Vec<IpAddr> {
        if self.v6 {
            topo.real_addrs6.iter().map(|&a| a.into()).collect()
        } else {
            topo.real_addrs.iter().map(|&a| a.into()).collect()
        }
    }
}

struct Params {
    rounds: usize,
    secs: u64,
    /// A short untimed load first: neighbours, conntrack, JIT caches warm.
    warmup_secs: u64,
    conns: usize,
}

impl Params {
    fn new(quick: bool) -> Self {
        if quick {
            Params {
                rounds: 1,
                secs: 3,
                warmup_secs: 1,
                conns: 48,
            }
        } else {
            Params {
                rounds: 5,
                secs: 6,
                warmup_secs: 1,
                conns: 48,
            }
        }
    }
}

/// One round's numbers for one system.
#[derive(Default)]
struct Sample {
    cps: f64,
    rps: f64,
    mbit: f64,
    errors: u64,
    note: String,
}

pub fn run(quick: bool) {
    let p = Params::new(quick);
    // Per round and system: topology, warm-ups, three loads, teardown.
    let per_run = 20 + 3 * (p.secs + p.warmup_secs + 5);
    let deadline = Deadline::new(
        "the end-to-end section",
        Duration::from_secs(per_run * Case::all().len() as u64 * p.rounds as u64 + 120),
    );
    emit(SECTION, "setup", "rounds", p.rounds);
    emit(SECTION, "setup", "secs", p.secs);
    emit(SECTION, "setup", "conns", p.conns);
    emit(SECTION, "setup", "threads", THREADS);
    let mut samples: BTreeMap<Case, Vec<Sample>> = BTreeMap::new();
    let mut failed = Vec::new();
    for round in 0..p.rounds {
        for case in Case::all() {
            deadline.check();
            progress(format!(
                "e2e round {}/{}: {}",
                round + 1,
                p.rounds,
                case.key()
            ));
            // One failed round (a tool that did not start, a timeout) costs
            // that round, not the run; its namespaces are gone either way.
            let s = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                measure(case, &p, deadline)
            }));
            let Ok(s) = s else {
                progress(format!("  round {} of {} failed", round + 1, case.key()));
                failed.push(format!("{} round {}", case.key(), round + 1));
                continue;
            };
            progress(format!(
                "  {:.0} conn/s, {:.0} req/s, {:.0} Mbit/s, {} errors {}",
                s.cps, s.rps, s.mbit, s.errors, s.note
            ));
            samples.entry(case).or_default().push(s);
        }
    }
    if !failed.is_empty() {
        emit(SECTION, "setup", "failed", failed.join(", "));
    }
    for case in Case::all() {
        let Some(runs) = samples.get(&case) else {
            continue;
        };
        let col = |f: fn(&Sample) -> f64| median(runs.iter().map(f).collect());
        let all = |f: fn(&Sample) -> f64| -> String {
            runs.iter()
                .map(|s| format!("{:.0}", f(s)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let row = &case.key();
        emit(SECTION, row, "cps", format!("{:.0}", col(|s| s.cps)));
        emit(SECTION, row, "rps", format!("{:.0}", col(|s| s.rps)));
        emit(SECTION, row, "mbit", format!("{:.0}", col(|s| s.mbit)));
        emit(SECTION, row, "cps_runs", all(|s| s.cps));
        emit(SECTION, row, "rps_runs", all(|s| s.rps));
        emit(SECTION, row, "mbit_runs", all(|s| s.mbit));
        emit(
            SECTION,
            row,
            "errors",
            runs.iter().map(|s| s.errors).sum::<u64>(),
        );
        if let Some(note) = runs.iter().map(|s| &s.note).find(|n| !n.is_empty()) {
            emit(SECTION, row, "note", note);
        }
    }
}

/// Builds the topology, starts the servers and the system, runs the loads.
/// Everything is torn down when this returns or unwinds (the guards drop in
/// reverse order: balancer, servers, namespaces).
fn measure(case: Case, p: &Params, deadline: Deadline) -> Sample {
    let topo = if case.v6 {
        Topology::dual_stack(3, case.sys.hook())
    } else {
        Topology::for_hook(3, case.sys.hook())
    };
    tune(&topo);
    topo.wait_ready();
    let _servers = start_servers(&topo, &case.reals(&topo));
    let balancer = Balancer::start(case, &topo);
    let (http, iperf) = targets(case, &topo);
    let script = wrk_script(&topo.client, &http);

    let mut s = Sample::default();
    // SocketAddr's Display brackets an IPv6 address, as a URL wants.
    let url = format!("http://{}/", http[0]);
    if p.warmup_secs > 0 {
        wrk(
            &topo.client,
            &script,
            &url,
            p,
            p.warmup_secs,
            true,
            deadline,
        );
    }
    let close = wrk(&topo.client, &script, &url, p, p.secs, true, deadline);
    if p.warmup_secs > 0 {
        wrk(
            &topo.client,
            &script,
            &url,
            p,
            p.warmup_secs,
            false,
            deadline,
        );
    }
    let keep = wrk(&topo.client, &script, &url, p, p.secs, false, deadline);
    s.cps = close.rate;
    s.rps = keep.rate;
    s.errors = close.errors + keep.errors;
    s.mbit = iperf3(&topo.client, iperf, p, deadline);
    s.note = balancer.note();
    s
}

/// Settings every system gets alike: room for many short connections.
fn tune(topo: &Topology) {
    for ns in [&topo.client, &topo.lb] {
        ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
        ns.sysctl("net.ipv4.tcp_tw_reuse", "1");
    }
    for ns in topo.reals.iter().chain([&topo.lb]) {
        ns.sysctl("net.core.somaxconn", "4096");
        ns.sysctl("net.ipv4.tcp_max_syn_backlog", "4096");
    }
}

/// HTTP on every real, iperf3 on the first, at `addrs` (one per real).
/// Returned guards kill them.
fn start_servers(topo: &Topology, addrs: &[IpAddr]) -> Vec<Spawned> {
    let mut procs = Vec::new();
    for (i, (ns, &addr)) in topo.reals.iter().zip(addrs).enumerate() {
        let at = SocketAddr::new(addr, HTTP_PORT);
        let cfg = format!(
            "global\n    maxconn 8000\n    nbthread 1\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\nfrontend http\n    bind {at} backlog 4096\n    http-request return status 200 content-type text/plain string r{}\n",
            i + 1
        );
        procs.push(haproxy(ns, &cfg));
        wait_listening(ns, at);
    }
    let r1 = addrs[0].to_string();
    let iperf = topo.reals[0].spawn(&[
        "iperf3",
        "-s",
        "--forceflush",
        "-B",
        &r1,
        "-p",
        &IPERF_PORT.to_string(),
    ]);
    assert!(
        iperf.wait_log_contains("Server listening", Duration::from_secs(5)),
        "iperf3 server did not start\n{}",
        iperf.report()
    );
    procs.push(iperf);
    procs
}

fn haproxy(ns: &Netns, cfg: &str) -> Spawned {
    let n = std::fs::read_dir(ns.log_dir()).map_or(0, |d| d.count());
    let path = ns.log_dir().join(format!("haproxy-{n}.cfg"));
    std::fs::write(&path, cfg).expect("writing haproxy.cfg");
    ns.spawn(&["haproxy", "-db", "-f", path.to_str().expect("utf-8")])
}

/// Polls a TCP connect from inside `ns` until `addr` accepts (at most 5 s).
fn wait_listening(ns: &Netns, addr: SocketAddr) {
    let ok = ns.run(|| {
        let deadline = Instant::now() + Duration::from_secs(5);
        for _ in 0..500 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    });
    assert!(ok, "nothing listens on {addr} in {}", ns.name());
}

/// What runs in the lb namespace for a system.
struct Balancer {
    sys: System,
    proc: Option<Spawned>,
    lb_config: Option<PathBuf>,
}

impl Balancer {
    fn start(case: Case, topo: &Topology) -> Balancer {
        let (sys, vip, reals) = (case.sys, case.vip(), &case.reals(topo));
        let mut b = Balancer {
            sys,
            proc: None,
            lb_config: None,
        };
        match sys {
            System::Plain => {}
            System::Nft => {
                let (table, daddr) = if case.v6 {
                    ("ip6", "ip6 daddr")
                } else {
                    ("ip", "ip daddr")
                };
                let rules = format!(
                    "table {table} lbbench {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    {daddr} {vip} tcp dport {VIP_HTTP_PORT} dnat to numgen inc mod 3 map {{ 0 : {}, 1 : {}, 2 : {} }} : {HTTP_PORT}\n    {daddr} {vip} tcp dport {IPERF_PORT} dnat to {}\n  }}\n}}\n",
                    reals[0],
                    reals[1],
                    reals[2],
                    SocketAddr::new(reals[0], IPERF_PORT)
                );
                let path = topo.lb.log_dir().join("rules.nft");
                std::fs::write(&path, rules).expect("writing rules.nft");
                topo.lb.exec(&["nft", "-f", path.to_str().expect("utf-8")]);
            }
            System::Haproxy => {
                let prefix = if case.v6 { 128 } else { 32 };
                topo.lb
                    .ip(&["addr", "add", &format!("{vip}/{prefix}"), "dev", "lo"]);
                let servers: String = reals
                    .iter()
                    .enumerate()
                    .map(|(i, &a)| {
                        format!("    server r{} {}\n", i + 1, SocketAddr::new(a, HTTP_PORT))
                    })
                    .collect();
                let (www, bulk) = (
                    SocketAddr::new(vip, VIP_HTTP_PORT),
                    SocketAddr::new(vip, IPERF_PORT),
                );
                let cfg = format!(
                    "global\n    maxconn 4000\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\nfrontend www\n    bind {www} backlog 4096\n    default_backend web\nbackend web\n    balance roundrobin\n{servers}frontend bulk\n    bind {bulk}\n    default_backend bulk\nbackend bulk\n    server r1 {}\n",
                    SocketAddr::new(reals[0], IPERF_PORT)
                );
                b.proc = Some(haproxy(&topo.lb, &cfg));
                wait_listening(&topo.lb, SocketAddr::new(vip, VIP_HTTP_PORT));
            }
            System::Lb | System::LbTc | System::PlainUnderXdp => {
                let mut cfg = sys
                    .hook()
                    .apply("interfaces: [eth0, eth1]\nxdp_mode: native\n");
                if sys != System::PlainUnderXdp {
                    cfg += "serverfarms:\n  web:\n    algorithm: round-robin\n    reals:\n";
                    for a in reals {
                        writeln!(cfg, "      - {{ address: {a}, port: {HTTP_PORT} }}").unwrap();
                    }
                    write!(
                        cfg,
                        "  bulk:\n    reals:\n      - {{ address: {}, port: {IPERF_PORT} }}\nvips:\n  www: {{ address: {vip}, port: {VIP_HTTP_PORT}, serverfarm: web }}\n  bulk: {{ address: {vip}, port: {IPERF_PORT}, serverfarm: bulk }}\n",
                        reals[0]
                    )
                    .unwrap();
                } else {
                    cfg += "serverfarms: {}\nvips: {}\n";
                }
                write!(
                    cfg,
                    "api: {{ socket: {} }}\nbpf: {{ pin_dir: {}, flow_table_size: 1048576 }}\n",
                    topo.lb.log_dir().join("lb.sock").display(),
                    topo.lb.bpf_pin_dir().display()
                )
                .unwrap();
                let path = topo.lb.log_dir().join("lb.yaml");
                std::fs::write(&path, cfg).expect("writing lb.yaml");
                let bin = lb_tests::lb_bin();
                let agent = topo.lb.spawn_setns(&[
                    bin.to_str().expect("utf-8"),
                    "run",
                    "-c",
                    path.to_str().expect("utf-8"),
                ]);
                assert!(
                    agent.wait_log_contains("lb running", Duration::from_secs(20)),
                    "lb did not start\n{}",
                    agent.report()
                );
                b.proc = Some(agent);
                b.lb_config = Some(path);
            }
        }
        b
    }

    /// lb only: how many packets the XDP program forwarded itself and how
    /// many it handed to the kernel, from `lb stats`.
    fn note(&self) -> String {
        let Some(cfg) = &self.lb_config else {
            return String::new();
        };
        let out = std::process::Command::new(lb_tests::lb_bin())
            .args(["stats", "--json", "-c", cfg.to_str().expect("utf-8")])
            .output()
            .expect("running lb stats");
        let Ok(v) = serde_json::from_slice::<lb_userspace::api::Stats>(&out.stdout) else {
            return format!("lb stats failed: {}", String::from_utf8_lossy(&out.stderr));
        };
        let n = |k: &str| v.reasons.get(k).copied().unwrap_or(0);
        if self.sys != System::PlainUnderXdp {
            format!(
                "the datapath forwarded {} packets ({} to reals, {} replies); handed to the kernel after NAT: {}",
                n("forward") + n("reverse"),
                n("forward"),
                n("reverse"),
                n("pass_fib")
            )
        } else {
            format!(
                "XDP passed {} packets to the kernel (not ours)",
                n("pass_not_ours")
            )
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // lb: `lb teardown` asks the agent to detach, unpin and exit (a
        // stop alone keeps the datapath); the namespace's drop kills
        // whatever is left.
        if let (Some(p), Some(cfg)) = (&self.proc, &self.lb_config) {
            let _ = std::process::Command::new(lb_tests::lb_bin())
                .args(["teardown", "-c", cfg.to_str().expect("utf-8")])
                .output();
            p.wait_log(Duration::from_secs(5), |_| p.exit_status().is_some());
        }
    }
}

/// HTTP targets (one per wrk thread, round robin) and the iperf3 server.
fn targets(case: Case, topo: &Topology) -> (Vec<SocketAddr>, SocketAddr) {
    match case.sys {
        System::Plain | System::PlainUnderXdp => {
            let reals = case.reals(topo);
            (
                reals
                    .iter()
                    .map(|&a| SocketAddr::new(a, HTTP_PORT))
                    .collect(),
                SocketAddr::new(reals[0], IPERF_PORT),
            )
        }
        _ => (
            vec![SocketAddr::new(case.vip(), VIP_HTTP_PORT)],
            SocketAddr::new(case.vip(), IPERF_PORT),
        ),
    }
}

/// A wrk script that only sets each thread's address (no per-request Lua,
/// so it costs nothing per request): thread i connects to target i mod n.
fn wrk_script(client: &Netns, targets: &[SocketAddr]) -> PathBuf {
    let list: Vec<String> = targets
        .iter()
        .map(|t| format!("{{ \"{}\", \"{}\" }}", t.ip(), t.port()))
        .collect();
    let lua = format!(
        "local targets = {{ {} }}\nlocal n = 0\nfunction setup(thread)\n  n = n + 1\n  local t = targets[(n - 1) % #targets + 1]\n  thread.addr = wrk.lookup(t[1], t[2])[1]\nend\n",
        list.join(", ")
    );
    let path = client.log_dir().join("targets.lua");
    std::fs::write(&path, lua).expect("writing the wrk script");
    path
}

struct WrkResult {
    rate: f64,
    errors: u64,
}

/// One wrk run from the client namespace, bounded by `-d` and by `timeout`.
fn wrk(
    client: &Netns,
    script: &Path,
    url: &str,
    p: &Params,
    secs: u64,
    close: bool,
    deadline: Deadline,
) -> WrkResult {
    deadline.check();
    let (d, limit) = (format!("{secs}s"), (secs + 20).to_string());
    let (t, c) = (THREADS.to_string(), p.conns.to_string());
    #[rustfmt::skip]
    let mut args = vec!["timeout", "-k", "5", &limit, "wrk", "-t", &t, "-c", &c, "-d", &d,
                        "--timeout", "3s", "-s", script.to_str().expect("utf-8")];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(url);
    let out = client.exec(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_wrk(&text).unwrap_or_else(|| panic!("could not read wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    // "Socket errors: connect 0, read 0, write 0, timeout 0" and
    // "Non-2xx or 3xx responses: N" appear only when non-zero.
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Some(WrkResult { rate, errors })
}

/// One iperf3 stream for `p.secs`: received Mbit/s.
fn iperf3(client: &Netns, server: SocketAddr, p: &Params, deadline: Deadline) -> f64 {
    deadline.check();
    let (t, limit) = (p.secs.to_string(), (p.secs + 20).to_string());
    let (host, port) = (server.ip().to_string(), server.port().to_string());
    #[rustfmt::skip]
    let args = ["timeout", "-k", "5", &limit, "iperf3", "-c", &host, "-p", &port, "-t", &t,
                "-O", "1", "-J"];
    let out = client.exec(&args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J output");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 gave no result: {v}"))
        / 1e6
}
