use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A full example config (line numbers below refer to it).
const EXAMPLE: &str = r#"interfaces: [eth0, eth1]        # XDP attaches here
xdp_mode: auto                  # auto | native | generic
probes:
  web-http:
    type: http                  # tcp | http (more may follow)
    path: /healthz
    expect: 200-399
    interval: 2s
    fast_interval: 500ms        # while a real is changing state
    down_interval: 5s           # while a real is down
    timeout: 1s
    rise: 2
    fall: 3
serverfarms:
  web:
    algorithm: round-robin      # round-robin | weighted-round-robin | least-conn | source-hash | maglev
    failaction: purge           # none | purge | reassign
    probes: [web-http]
    observe: { errors: 3 }      # passive health from the datapath (RST / unanswered SYN)
    slow_start: 30s
    reals:
      - { address: 10.0.2.11, port: 8080, weight: 10 }
      - { address: 10.0.2.12, port: 8080, weight: 10, max_conns: 5000 }
      - { address: 10.0.2.20, port: 8080, backup: true }
vips:
  www:
    address: 192.0.2.10
    port: 80
    protocol: tcp               # tcp | udp
    serverfarm: web
    sticky: { mode: source-ip, timeout: 10m }
    timeouts: { syn: 10s, established: 1h, fin: 30s, udp: 60s }
ha:                             # optional: stateful failover pair
  node_id: 1
  priority: 200
  listen: 10.0.9.1:7400
  peer: 10.0.9.2:7400
  key_file: /etc/lb/ha.key      # shared secret; every sync message is authenticated
  heartbeat: 100ms
  floating_ips:
    - { address: 192.0.2.10/24, interface: eth0 }
    - { address: 10.0.2.1/24, interface: eth1 }
api: { socket: /run/lb/lb.sock }
metrics: { listen: 127.0.0.1:9100 }
bpf: { pin_dir: /sys/fs/bpf/lb, flow_table_size: 1048576 }
"#;

fn parse_ok(src: &str) -> Config {
    Config::parse(src, "lb.yaml").unwrap_or_else(|e| panic!("config should parse:\n{e}"))
}

fn parse_err(src: &str) -> Vec<ConfigIssue> {
    match Config::parse(src, "lb.yaml") {
        Ok(c) => panic!("config should be refused, got {c:#?}"),
        Err(e) => e.errors,
    }
}

/// The example with `from` replaced (once) by `to`; panics if `from` is absent.
fn example_with(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "`{from}` is not in the example");
    EXAMPLE.replacen(from, to, 1)
}

/// (line, column, path) of each issue, for exact comparisons.
fn locs(issues: &[ConfigIssue]) -> Vec<(Option<usize>, Option<usize>, &str)> {
    issues
        .iter()
        .map(|i| (i.line, i.column, i.path.as_str()))
        .collect()
}

/// Asserts exactly one issue, at `line:column` and `path`, whose message
/// contains `needle`.
fn assert_one(issues: &[ConfigIssue], line: usize, column: usize, path: &str, needle: &str) {
    assert_eq!(issues.len(), 1, "expected one issue, got {issues:#?}");
    let issue = &issues[0];
    assert_eq!(
        (issue.line, issue.column, issue.path.as_str()),
        (Some(line), Some(column), path),
        "{issue}"
    );
    assert!(issue.message.contains(needle), "`{needle}` not in: {issue}");
}

const MINIMAL: &str = "interfaces: [eth0]\n";

#[test]
fn design_example_parses_with_its_values() {
    let c = parse_ok(EXAMPLE);
    assert_eq!(c.interface_names(), ["eth0", "eth1"]);
    assert_eq!(c.xdp_mode, XdpMode::Auto);

    let p = &c.probes["web-http"];
    assert_eq!(p.kind, ProbeKind::Http);
    assert_eq!(p.path, "/healthz");
    assert_eq!(p.expect, Expect { lo: 200, hi: 399 });
    assert_eq!(p.interval, Duration::from_secs(2));
    assert_eq!(p.fast_interval, Some(Duration::from_millis(500)));
    assert_eq!(p.down_interval, Some(Duration::from_secs(5)));
    assert_eq!(p.timeout, Duration::from_secs(1));
    assert_eq!((p.rise, p.fall), (2, 3));
    assert_eq!((p.port, &p.host, &p.body), (None, &None, &None));
    assert_eq!(p.method, "GET");

    let f = &c.serverfarms["web"];
    assert_eq!(f.algorithm, Algorithm::RoundRobin);
    assert_eq!(f.failaction, FailAction::Purge);
    assert_eq!(f.probes, ["web-http"]);
    assert_eq!(
        f.observe,
        Some(Observe {
            errors: 3,
            hold: None
        })
    );
    assert_eq!(f.slow_start, Some(Duration::from_secs(30)));
    let real = |last: u8, weight, max_conns, backup| RealCfg {
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 2, last)),
        port: Some(8080),
        weight,
        max_conns,
        backup,
        state: AdminState::Up,
        track: None,
    };
    assert_eq!(
        f.reals,
        [
            real(11, 10, None, false),
            real(12, 10, Some(5000), false),
            real(20, 1, None, true),
        ]
    );

    let v = &c.vips["www"];
    assert_eq!(v.address, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)));
    assert_eq!(v.port, 80);
    assert_eq!(v.protocol, Protocol::Tcp);
    assert_eq!(v.serverfarm, "web");
    assert_eq!(
        v.sticky,
        Some(Sticky {
            mode: StickyMode::SourceIp,
            timeout: Duration::from_secs(600),
            ipv6_prefix: None,
        })
    );
    assert_eq!(
        v.timeouts,
        Timeouts::default(),
        "the example spells out the defaults"
    );

    let ha = c.ha.as_ref().expect("ha section");
    assert_eq!((ha.node_id, ha.priority), (1, 200));
    assert_eq!(ha.listen, "10.0.9.1:7400".parse::<SocketAddr>().unwrap());
    assert_eq!(ha.peer, "10.0.9.2:7400".parse::<SocketAddr>().unwrap());
    assert_eq!(ha.key_file, Path::new("/etc/lb/ha.key"));
    assert_eq!(ha.heartbeat, Duration::from_millis(100));
    assert_eq!(ha.dead_interval, None);
    assert!(!ha.preempt);
    assert_eq!(
        ha.floating_ips,
        [
            FloatingIp {
                address: IpCidr {
                    addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
                    prefix_len: 24
                },
                interface: "eth0".into()
            },
            FloatingIp {
                address: IpCidr {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1)),
                    prefix_len: 24
                },
                interface: "eth1".into()
            },
        ]
    );

    assert_eq!(c.api.socket, Path::new("/run/lb/lb.sock"));
    assert_eq!(
        c.metrics.listen,
        "127.0.0.1:9100".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.bpf.pin_dir, Path::new("/sys/fs/bpf/lb"));
    assert_eq!(c.bpf.flow_table_size, 1_048_576);
}

#[test]
fn defaults_fill_everything_left_out() {
    let c = parse_ok(MINIMAL);
    assert_eq!(c.xdp_mode, XdpMode::Auto);
    assert!(c.probes.is_empty() && c.serverfarms.is_empty() && c.vips.is_empty());
    assert_eq!(c.ha, None);
    assert_eq!(c.api.socket, PathBuf::from("/run/lb/lb.sock"));
    assert_eq!(c.metrics.listen, SocketAddr::from(([127, 0, 0, 1], 9100)));
    assert_eq!(c.bpf.pin_dir, PathBuf::from("/sys/fs/bpf/lb"));
    assert_eq!(c.bpf.flow_table_size, lb_common::FLOW_TABLE_DEFAULT);

    let c = parse_ok(
        "interfaces: [eth0]
probes:
  p: { type: http }
serverfarms:
  f:
    reals: [{ address: 10.0.0.1 }]
vips:
  v: { address: 192.0.2.1, port: 53, protocol: udp, serverfarm: f, timeouts: { udp: 5s } }
ha: { node_id: 2, listen: 10.0.9.2:7400, peer: 10.0.9.1:7400, key_file: /k }
",
    );
    let p = &c.probes["p"];
    assert_eq!(
        (p.path.as_str(), p.expect, p.method.as_str()),
        ("/", Expect { lo: 200, hi: 399 }, "GET")
    );
    assert_eq!(
        (p.interval, p.timeout),
        (Duration::from_secs(2), Duration::from_secs(1))
    );
    assert_eq!(
        (p.fast_interval, p.down_interval, p.rise, p.fall),
        (None, None, 2, 3)
    );
    let f = &c.serverfarms["f"];
    assert_eq!(
        (f.algorithm, f.failaction),
        (Algorithm::RoundRobin, FailAction::None)
    );
    assert_eq!(
        (&f.probes, &f.observe, f.slow_start),
        (&vec![], &None, None)
    );
    let r = &f.reals[0];
    assert_eq!(
        (r.port, r.weight, r.max_conns, r.backup, r.state),
        (None, 1, None, false, AdminState::Up)
    );
    let v = &c.vips["v"];
    assert_eq!((v.protocol, &v.sticky), (Protocol::Udp, &None));
    assert_eq!(
        v.timeouts,
        Timeouts {
            syn: Duration::from_secs(10),
            established: Duration::from_secs(3600),
            fin: Duration::from_secs(30),
            udp: Duration::from_secs(5),
            closed: Duration::from_secs(10),
        }
    );
    let ha = c.ha.unwrap();
    assert_eq!(
        (ha.priority, ha.heartbeat, ha.dead_interval, ha.preempt),
        (100, Duration::from_millis(100), None, false)
    );
    assert!(ha.floating_ips.is_empty());
}

#[test]
fn enum_spellings() {
    for (yaml, want) in [
        ("round-robin", Algorithm::RoundRobin),
        ("weighted-round-robin", Algorithm::WeightedRoundRobin),
        ("least-conn", Algorithm::LeastConn),
        ("source-hash", Algorithm::SourceHash),
        ("maglev", Algorithm::Maglev),
    ] {
        let c = parse_ok(&format!(
            "interfaces: [eth0]\nserverfarms: {{ f: {{ algorithm: {yaml} }} }}\n"
        ));
        assert_eq!(c.serverfarms["f"].algorithm, want);
        assert_eq!(want.name(), yaml, "Algorithm::name");
        assert_eq!(Algorithm::from_datapath(want.datapath()), Some(want));
    }
    for (yaml, want) in [
        ("auto", XdpMode::Auto),
        ("native", XdpMode::Native),
        ("generic", XdpMode::Generic),
    ] {
        assert_eq!(
            parse_ok(&format!("interfaces: [eth0]\nxdp_mode: {yaml}\n")).xdp_mode,
            want
        );
    }
    let c = parse_ok(
        "interfaces: [eth0]
serverfarms:
  f:
    failaction: reassign
    reals: [{ address: 10.0.0.1, state: drain }, { address: 10.0.0.2, state: disabled }]
",
    );
    let f = &c.serverfarms["f"];
    assert_eq!(f.failaction, FailAction::Reassign);
    assert_eq!(
        (f.reals[0].state, f.reals[1].state),
        (AdminState::Drain, AdminState::Disabled)
    );

    let issues = parse_err("interfaces: [eth0]\nxdp_mode: fast\n");
    assert_one(
        &issues,
        2,
        11,
        "xdp_mode",
        "unknown variant `fast`, expected one of `auto`, `native`, `generic`",
    );
}

#[test]
fn duration_table() {
    let ms = Duration::from_millis;
    for (text, want) in [
        ("500ms", ms(500)),
        ("2s", ms(2_000)),
        ("10m", ms(600_000)),
        ("1h", ms(3_600_000)),
        ("1h30m", ms(5_400_000)),
        ("1m30s500ms", ms(90_500)),
        ("1d", ms(86_400_000)),
        ("0s", ms(0)),
    ] {
        assert_eq!(parse_duration(text), Ok(want), "{text}");
        assert_eq!(format_duration(want), text, "{text} round trip");
    }
    assert_eq!(format_duration(ms(90_000)), "1m30s");
    for (text, needle) in [
        ("2", "`2` has no unit; write a unit, e.g. 2s"),
        ("", "empty duration"),
        ("s", "not a duration"),
        ("10x", "unknown unit `x` in `10x`; use ms, s, m, h or d"),
        ("1h30", "ends without a unit"),
        ("30m1h", "larger units first"),
        ("1s1s", "larger units first"),
        (
            "1.5s",
            "has a fraction; use a smaller unit instead, e.g. 1500ms",
        ),
        ("1 s", "without spaces"),
        ("-1s", "not a duration"),
        ("99999999999999999999s", "too long"),
    ] {
        let err = parse_duration(text).expect_err(text);
        assert!(err.contains(needle), "{text:?}: `{needle}` not in `{err}`");
    }
}

#[test]
fn bare_number_duration_is_refused_with_its_location() {
    // Line 8 is `    interval: 2s`.
    let issues = parse_err(&example_with("interval: 2s", "interval: 2"));
    assert_one(
        &issues,
        8,
        15,
        "probes.web-http.interval",
        "`2` has no unit; write a unit, e.g. 2s",
    );
}

#[test]
fn unknown_key_reports_its_line_and_column() {
    // Line 20 is `    slow_start: 30s`.
    let issues = parse_err(&example_with("slow_start", "slow_strat"));
    assert_one(
        &issues,
        20,
        5,
        "serverfarms.web",
        "unknown field `slow_strat`, expected one of `algorithm`,",
    );
    // In a flow mapping, line 22: `      - { address: 10.0.2.11, port: 8080, weight: 10 }`.
    let issues = parse_err(&example_with("weight: 10 }", "wieght: 10 }"));
    assert_one(
        &issues,
        22,
        43,
        "serverfarms.web.reals[0]",
        "unknown field `wieght`",
    );
    // At the top level.
    let issues = parse_err("interfaces: [eth0]\nvip:\n  www: {}\n");
    assert_one(&issues, 2, 1, "", "unknown field `vip`, expected one of");
}

#[test]
fn type_error_reports_its_line_and_column() {
    let issues = parse_err(&example_with("weight: 10 }", "weight: \"ten\" }"));
    assert_one(
        &issues,
        22,
        51,
        "serverfarms.web.reals[0].weight",
        "invalid type: string \"ten\", expected u32",
    );
    let issues = parse_err(&example_with("address: 192.0.2.10", "address: 192.0.2.300"));
    assert_one(
        &issues,
        27,
        14,
        "vips.www.address",
        "invalid IP address syntax",
    );
}

#[test]
fn syntax_error_has_a_location_and_no_path() {
    let issues = parse_err("interfaces: [eth0\nvips: {}\n");
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_eq!(issues[0].path, "");
    assert!(
        issues[0].line.is_some() && issues[0].column.is_some(),
        "{}",
        issues[0]
    );
    let issues = parse_err("  \n");
    assert_eq!(
        issues[0].to_string(),
        "lb.yaml: the file is empty; it needs at least `interfaces:` (see the README, Config)"
    );
}

#[test]
fn missing_serverfarm_points_at_the_reference() {
    // Line 30 is `    serverfarm: web`.
    let issues = parse_err(&example_with("serverfarm: web", "serverfarm: webb"));
    assert_one(
        &issues,
        30,
        17,
        "vips.www.serverfarm",
        "serverfarm `webb` is not defined; defined serverfarms: web",
    );
    assert_eq!(
        issues[0].to_string(),
        "lb.yaml:30:17: vips.www.serverfarm: serverfarm `webb` is not defined; defined serverfarms: web"
    );
    // Quoted values are located at their opening quote, like serde_yaml's.
    let issues = parse_err(&example_with("serverfarm: web", "serverfarm: \"webb\""));
    assert_eq!(locs(&issues), [(Some(30), Some(17), "vips.www.serverfarm")]);
}

#[test]
fn missing_probe_lists_the_defined_ones() {
    // Line 18 is `    probes: [web-http]`.
    let issues = parse_err(&example_with(
        "probes: [web-http]",
        "probes: [web-http, web-tcp]",
    ));
    assert_one(
        &issues,
        18,
        24,
        "serverfarms.web.probes[1]",
        "probe `web-tcp` is not defined; defined probes: web-http",
    );
    let issues = parse_err("interfaces: [eth0]\nserverfarms:\n  f: { probes: [p] }\n");
    assert_one(
        &issues,
        3,
        17,
        "serverfarms.f.probes[0]",
        "there are none; add it under `probes:`",
    );
}

#[test]
fn interfaces_must_be_listed_once_each() {
    let issues = parse_err("xdp_mode: native\n");
    assert_eq!(issues.len(), 1);
    assert_eq!(
        issues[0].to_string(),
        "lb.yaml: interfaces: list at least one interface for the datapath to attach to, e.g. `interfaces: [eth0, eth1]`"
    );
    let issues = parse_err("interfaces: []\n");
    assert_one(&issues, 1, 13, "interfaces", "list at least one interface");
    let issues = parse_err("interfaces: [eth0, eth1, eth0, a-name-far-too-long]\n");
    assert_eq!(
        locs(&issues),
        [
            (Some(1), Some(26), "interfaces[2]"),
            (Some(1), Some(32), "interfaces[3]")
        ]
    );
    assert!(issues[0].message.contains("listed twice"));
    assert!(issues[1].message.contains("1 to 15 characters"));
}

#[test]
fn two_vips_cannot_share_address_port_and_protocol() {
    let src = "interfaces: [eth0]
serverfarms: { f: {} }
vips:
  b: { address: 192.0.2.1, port: 80, serverfarm: f }
  a: { address: 192.0.2.1, port: 80, serverfarm: f }
  dns: { address: 192.0.2.1, port: 80, protocol: udp, serverfarm: f }
";
    let issues = parse_err(src);
    // Reported at the later one in the file, naming the earlier one.
    assert_one(
        &issues,
        5,
        3,
        "vips.a",
        "192.0.2.1:80/tcp is already the address of vip `b`",
    );
    // A farm without reals is fine.
    parse_ok(&src.replace(
        "port: 80, serverfarm: f }\n  dns",
        "port: 443, serverfarm: f }\n  dns",
    ));
}

#[test]
fn a_farm_cannot_list_a_real_twice() {
    let issues = parse_err(&example_with(
        "10.0.2.20, port: 8080",
        "10.0.2.11, port: 8080",
    ));
    assert_one(
        &issues,
        24,
        9,
        "serverfarms.web.reals[2]",
        "real 10.0.2.11:8080 is already in this farm as reals[0]",
    );
    // The same address on another port, or in another farm, is fine.
    parse_ok(&example_with(
        "10.0.2.20, port: 8080",
        "10.0.2.11, port: 8081",
    ));
}

#[test]
fn weight_range() {
    parse_ok(&example_with("weight: 10 }", "weight: 10000 }"));
    parse_ok(&example_with("weight: 10 }", "weight: 0 }"));
    let issues = parse_err(&example_with("weight: 10 }", "weight: 10001 }"));
    assert_one(
        &issues,
        22,
        51,
        "serverfarms.web.reals[0].weight",
        "weight must be 0..=10000",
    );
}

#[test]
fn ports_must_be_1_to_65535() {
    // 0 fits the type: a validation issue, collected with the others.
    let issues =
        parse_err(&example_with("port: 80\n", "port: 0\n").replacen("port: 8080", "port: 0", 1));
    assert_eq!(
        locs(&issues),
        [
            (Some(22), Some(37), "serverfarms.web.reals[0].port"),
            (Some(28), Some(11), "vips.www.port")
        ]
    );
    assert!(issues.iter().all(|i| i.message == "port must be 1..=65535"));
    // Too big for 16 bits: reported while parsing.
    let issues = parse_err(&example_with("port: 80\n", "port: 65536\n"));
    assert_one(&issues, 28, 11, "vips.www.port", "port must be 1..=65535");
    let issues = parse_err("interfaces: [eth0]\nprobes: { p: { type: tcp, port: -1 } }\n");
    assert_one(&issues, 2, 33, "probes.p.port", "port must be 1..=65535");
}

/// The example as a dual-stack setup: `www` and its farm IPv6 (lines 22-27).
fn example_v6() -> String {
    example_with("address: 192.0.2.10", "address: 2001:db8::10")
        .replacen("10.0.2.11", "2001:db8:2::11", 1)
        .replacen("10.0.2.12", "2001:db8:2::12", 1)
        .replacen("10.0.2.20", "2001:db8:2::20", 1)
}

#[test]
fn ipv6_addresses_parse_wherever_an_address_goes() {
    let src = example_v6()
        .replacen("timeout: 10m }", "timeout: 10m, ipv6_prefix: 64 }", 1)
        .replacen(
            "listen: 10.0.9.1:7400",
            "listen: \"[2001:db8:9::1]:7400\"",
            1,
        )
        .replacen("peer: 10.0.9.2:7400", "peer: '[2001:db8:9::2]:7400'", 1)
        .replacen("listen: 127.0.0.1:9100", "listen: \"[::1]:9100\"", 1);
    let c = parse_ok(&src);
    let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(c.vips["www"].address, v6("2001:db8::10"));
    let reals: Vec<IpAddr> = c.serverfarms["web"]
        .reals
        .iter()
        .map(|r| r.address)
        .collect();
    assert_eq!(
        reals,
        [
            v6("2001:db8:2::11"),
            v6("2001:db8:2::12"),
            v6("2001:db8:2::20")
        ]
    );
    assert_eq!(c.vips["www"].sticky.as_ref().unwrap().ipv6_prefix, Some(64));
    let ha = c.ha.as_ref().unwrap();
    assert_eq!(
        ha.listen,
        "[2001:db8:9::1]:7400".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        ha.peer,
        "[2001:db8:9::2]:7400".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        c.metrics.listen,
        "[::1]:9100".parse::<SocketAddr>().unwrap()
    );
    // Any spelling of an address is the address (`lb` prints RFC 5952's).
    let long = parse_ok(&src.replacen("2001:db8:2::11", "2001:0DB8:2:0:0:0:0:11", 1));
    assert_eq!(
        long.serverfarms["web"].reals[0].address,
        v6("2001:db8:2::11")
    );
    // The sync link is no datapath matter: IPv6 there needs no gate.
    let ha_only = example_with("listen: 10.0.9.1:7400", "listen: \"[2001:db8:9::1]:7400\"")
        .replacen("peer: 10.0.9.2:7400", "peer: \"[2001:db8:9::2]:7400\"", 1);
    assert!(parse_ok(&ha_only).ha.unwrap().listen.is_ipv6());
    // JSON and YAML carry IPv6 as written; YAML reads back to the same config.
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["vips"]["www"]["address"], "2001:db8::10");
    assert_eq!(json["vips"]["www"]["sticky"]["ipv6_prefix"], 64);
    assert_eq!(json["ha"]["listen"], "[2001:db8:9::1]:7400");
    assert_eq!(parse_ok(&serde_yaml::to_string(&c).unwrap()), c);
}

#[test]
fn yaml_that_cannot_hold_an_ipv6_address_says_to_quote_it() {
    // YAML reads `[` as a list: `[addr]:port` must be quoted.
    let issues = parse_err(&example_with(
        "listen: 10.0.9.1:7400",
        "listen: [2001:db8:9::1]:7400",
    ));
    assert_one(
        &issues,
        36,
        11,
        "ha.listen",
        "quote an IPv6 address with a port, e.g. \"[2001:db8::1]:7400\"",
    );
    // Inside `{ }`, a plain value cannot start or end with `:`.
    for (addr, column) in [("::1", 20), ("2001:db8::", 29)] {
        let issues = parse_err(&example_with("10.0.2.11", addr));
        assert_eq!(issues.len(), 1, "{issues:#?}");
        assert_eq!((issues[0].line, issues[0].column), (Some(22), Some(column)));
        assert!(
            issues[0].message.contains("quote such an IPv6 address"),
            "{}",
            issues[0]
        );
    }
    // Quoted, or in a block mapping, they read as addresses.
    let quoted = parse_ok(&example_v6().replacen("2001:db8:2::11", "\"2001:db8:2::\"", 1));
    assert_eq!(
        quoted.serverfarms["web"].reals[0].address,
        "2001:db8:2::".parse::<IpAddr>().unwrap()
    );
    let block = parse_ok(&example_v6().replacen("address: 2001:db8::10", "address: ::10", 1));
    assert_eq!(block.vips["www"].address, "::10".parse::<IpAddr>().unwrap());
}

#[test]
fn a_vip_and_its_reals_are_one_family() {
    // www is IPv4, one of its reals IPv6: refused at the real, naming both.
    let issues = parse_err(&example_with("10.0.2.12", "2001:db8:2::12"));
    assert_one(
        &issues,
        23,
        20,
        "serverfarms.web.reals[1].address",
        "real 2001:db8:2::12 is IPv6 but vip `www` (192.0.2.10) is IPv4; a VIP and its serverfarm's reals must be one family (NAT44 or NAT66)",
    );
    // The other way round, with the gate out of the way.
    let issues = parse_err(&example_v6().replacen("2001:db8:2::20", "10.0.2.20", 1));
    assert_one(
        &issues,
        24,
        20,
        "serverfarms.web.reals[2].address",
        "real 10.0.2.20 is IPv4 but vip `www` (2001:db8::10) is IPv6",
    );
    // A farm serving VIPs of both families: the later VIP is the odd one.
    let src = format!(
        "{}  www6: {{ address: 2001:db8::10, port: 80, serverfarm: web }}\n",
        MINIMAL_FARM
    );
    let issues = parse_err(&src);
    assert_one(
        &issues,
        7,
        20,
        "vips.www6.address",
        "2001:db8::10 is IPv6 but serverfarm `web` also serves vip `www` (192.0.2.10), which is IPv4",
    );
    // A farm no VIP uses is judged by its first real.
    let src = "interfaces: [eth0]\nserverfarms:\n  spare:\n    reals:\n      - { address: 10.0.2.11 }\n      - { address: 2001:db8::11 }\n";
    assert_one(
        &parse_err(src),
        6,
        20,
        "serverfarms.spare.reals[1].address",
        "real 2001:db8::11 is IPv6 but reals[0] (10.0.2.11) is IPv4",
    );
}

/// A farm and one IPv4 VIP on it (lines 1-6); tests add VIPs after it.
const MINIMAL_FARM: &str = "interfaces: [eth0]
serverfarms:
  web:
    reals: [{ address: 10.0.2.11 }]
vips:
  www: { address: 192.0.2.10, port: 80, serverfarm: web }
";

#[test]
fn ipv6_addresses_must_be_unicast_and_not_ipv4_mapped() {
    // Quoted: inside `{ }` YAML cannot read a value starting with `:`.
    for (addr, needle) in [
        ("\"::\"", ":: is not a unicast address"),
        ("ff02::1", "ff02::1 is not a unicast address"),
        (
            "\"::ffff:10.0.2.11\"",
            "::ffff:10.0.2.11 is an IPv4-mapped IPv6 address; write the IPv4 address 10.0.2.11",
        ),
    ] {
        let issues = parse_err(&example_v6().replacen("2001:db8:2::12", addr, 1));
        assert!(
            issues
                .iter()
                .any(|i| i.path == "serverfarms.web.reals[1].address" && i.message.contains(needle)),
            "{addr}: {issues:#?}"
        );
    }
}

#[test]
fn sticky_ipv6_prefix_is_1_to_128_bits_on_ipv6_vips() {
    // Line 31: `    sticky: { mode: source-ip, timeout: 10m, ipv6_prefix: N }`.
    let with = |n: &str| {
        example_v6().replacen(
            "timeout: 10m }",
            &format!("timeout: 10m, ipv6_prefix: {n} }}"),
            1,
        )
    };
    for n in [1, 48, 64, 128] {
        let c = parse_ok(&with(&n.to_string()));
        assert_eq!(c.vips["www"].sticky.as_ref().unwrap().ipv6_prefix, Some(n));
    }
    assert_one(
        &parse_err(&with("0")),
        31,
        59,
        "vips.www.sticky.ipv6_prefix",
        "ipv6_prefix must be 1..=128",
    );
    assert_one(
        &parse_err(&with("129")),
        31,
        59,
        "vips.www.sticky.ipv6_prefix",
        "ipv6_prefix must be 1..=128",
    );
    // On an IPv4 VIP the key would do nothing: refused at the key.
    let v4 = example_with("timeout: 10m }", "timeout: 10m, ipv6_prefix: 64 }");
    assert_one(
        &parse_err(&v4),
        31,
        46,
        "vips.www.sticky.ipv6_prefix",
        "`ipv6_prefix` applies to IPv6 VIPs only, and vip `www` is IPv4 (192.0.2.10); remove it",
    );
}

#[test]
fn ha_listen_and_peer_are_one_family() {
    let issues = parse_err(&example_with(
        "peer: 10.0.9.2:7400",
        "peer: \"[2001:db8:9::2]:7400\"",
    ));
    assert_one(
        &issues,
        37,
        9,
        "ha.peer",
        "peer [2001:db8:9::2]:7400 is IPv6 but listen 10.0.9.1:7400 is IPv4",
    );
}

#[test]
fn floating_ips_may_be_ipv6() {
    // Line 41: `    - { address: 192.0.2.10/24, interface: eth0 }`.
    let c = parse_ok(&example_with("192.0.2.10/24", "2001:db8::1/64"));
    let ip = &c.ha.as_ref().unwrap().floating_ips[0];
    assert_eq!(ip.address.addr, "2001:db8::1".parse::<IpAddr>().unwrap());
    assert_eq!(ip.address.prefix_len, 64);
    assert_eq!(ip.address.to_string(), "2001:db8::1/64");
    assert!(
        parse_ok(&example_with("192.0.2.10/24", "2001:db8::1/128"))
            .ha
            .is_some()
    );
    for (bad, needle) in [
        (
            "2001:db8::1/129",
            "is not an IP address with a prefix length",
        ),
        ("2001:db8::1", "write e.g. 192.0.2.10/24 or 2001:db8::10/64"),
    ] {
        let issues = parse_err(&example_with("192.0.2.10/24", bad));
        assert_one(&issues, 41, 18, "ha.floating_ips[0].address", needle);
    }
    // An address no interface can hold as its own.
    for (bad, needle) in [
        ("ff02::1/64", "ff02::1 is not a unicast address"),
        (
            "\"::ffff:192.0.2.10/120\"",
            "write the IPv4 address 192.0.2.10",
        ),
        ("224.0.0.1/24", "224.0.0.1 is not a unicast address"),
    ] {
        let issues = parse_err(&example_with("192.0.2.10/24", bad));
        assert_eq!(issues.len(), 1, "{bad}: {issues:#?}");
        assert_eq!(issues[0].path, "ha.floating_ips[0].address", "{bad}");
        assert!(issues[0].message.contains(needle), "{bad}: {}", issues[0]);
    }
}

#[test]
fn limits_on_vips_farms_and_reals() {
    let mut src = String::from("interfaces: [eth0]\nserverfarms:\n  f:\n    reals:\n");
    for i in 0..=lb_common::MAX_REALS {
        let addr = std::net::Ipv4Addr::from(0x0a00_0001 + i);
        src.push_str(&format!("      - {{ address: {addr} }}\n"));
    }
    src.push_str("vips:\n");
    let vips_line = src.lines().count();
    for i in 0..=lb_common::MAX_VIPS {
        src.push_str(&format!(
            "  v{i}: {{ address: 192.0.2.1, port: {}, serverfarm: f }}\n",
            i + 1
        ));
    }
    let issues = parse_err(&src);
    assert_eq!(
        locs(&issues),
        [
            (Some(2), Some(1), "serverfarms"),
            (Some(vips_line), Some(1), "vips")
        ]
    );
    assert_eq!(
        issues[0].message,
        "65537 reals over all serverfarms; at most 65536 are supported"
    );
    assert_eq!(issues[1].message, "4097 vips; at most 4096 are supported");

    let mut src = String::from("interfaces: [eth0]\nserverfarms:\n");
    for i in 0..=lb_common::MAX_FARMS {
        src.push_str(&format!("  f{i}: {{}}\n"));
    }
    assert_one(
        &parse_err(&src),
        2,
        1,
        "serverfarms",
        "4097 serverfarms; at most 4096 are supported",
    );
}

#[test]
fn hashing_farms_must_fit_the_ring_array_with_room_to_rebuild_one() {
    let farms = |n: usize, algorithm: &str| {
        let mut src = String::from("interfaces: [eth0]\nserverfarms:\n");
        for i in 0..n {
            src.push_str(&format!(
                "  f{i}: {{ algorithm: {algorithm}, reals: [{{ address: 10.0.0.1 }}] }}\n"
            ));
        }
        src
    };
    // 62 rings of 65,537 and a 63rd for a rebuild fit in 2^22 slots.
    Config::parse(&farms(62, "maglev"), "lb.yaml").expect("62 hashing farms fit");
    Config::parse(&farms(200, "round-robin"), "lb.yaml").expect("only hashing farms count");
    assert_one(
        &parse_err(&farms(63, "source-hash")),
        2,
        1,
        "serverfarms",
        "63 hashing serverfarms (maglev, source-hash) need 4194368 ring slots, with room to rebuild the largest; at most 4194304 are supported: let VIPs share a farm, or use another algorithm",
    );
}

#[test]
fn probe_rules() {
    let src = "interfaces: [eth0]
probes:
  a: { type: http, expect: 200 }
  b: { type: http, expect: 399-200 }
  c: { type: http, expect: 600 }
  d: { type: tcp, rise: 0, fall: 0 }
  e: { type: tcp, interval: 1s, timeout: 1s }
  f: { type: tcp, interval: 500ms }
  g: { type: tcp, path: /x }
  h: { type: http, path: x, method: get }
";
    let issues = parse_err(src);
    let got: Vec<(usize, usize, &str, &str)> = issues
        .iter()
        .map(|i| {
            (
                i.line.unwrap(),
                i.column.unwrap(),
                i.path.as_str(),
                i.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                4,
                28,
                "probes.b.expect",
                "expect `399-200` must be a status or a range within 100..=599, low end first, e.g. 200-399"
            ),
            (
                5,
                28,
                "probes.c.expect",
                "expect `600` must be a status or a range within 100..=599, low end first, e.g. 200-399"
            ),
            (6, 25, "probes.d.rise", "rise must be at least 1"),
            (6, 34, "probes.d.fall", "fall must be at least 1"),
            (
                7,
                42,
                "probes.e.timeout",
                "timeout 1s must be shorter than interval 1s; lower the timeout or raise the interval"
            ),
            // The timeout is the default here, so the interval is blamed.
            (
                8,
                29,
                "probes.f.interval",
                "timeout 1s must be shorter than interval 500ms; lower the timeout or raise the interval"
            ),
            (
                9,
                19,
                "probes.g.path",
                "`path` is used by http probes only; remove it or set `type: http`"
            ),
            (10, 26, "probes.h.path", "path `x` must start with /"),
            (
                10,
                37,
                "probes.h.method",
                "`get` is not an HTTP method; use e.g. GET or HEAD"
            ),
        ]
    );
    assert_eq!(
        parse_ok(&example_with("expect: 200-399", "expect: 200")).probes["web-http"].expect,
        Expect { lo: 200, hi: 200 }
    );
    let issues = parse_err(&example_with("expect: 200-399", "expect: ok"));
    assert_one(
        &issues,
        7,
        13,
        "probes.web-http.expect",
        "`ok` is not an HTTP status",
    );
}

#[test]
fn flow_table_size_range() {
    for ok in [1024, 67_108_864] {
        parse_ok(&format!(
            "interfaces: [eth0]\nbpf: {{ flow_table_size: {ok} }}\n"
        ));
    }
    for bad in [1023, 67_108_865] {
        let issues = parse_err(&format!(
            "interfaces: [eth0]\nbpf: {{ flow_table_size: {bad} }}\n"
        ));
        assert_one(
            &issues,
            2,
            25,
            "bpf.flow_table_size",
            "flow_table_size must be 1024..=67108864",
        );
    }
}

#[test]
fn ha_rules() {
    let src = example_with("node_id: 1", "node_id: 0").replacen(
        "heartbeat: 100ms",
        "heartbeat: 5ms\n  dead_interval: 5ms",
        1,
    );
    let issues = parse_err(&src);
    assert_eq!(
        locs(&issues),
        [
            (Some(34), Some(12), "ha.node_id"),
            (Some(39), Some(14), "ha.heartbeat"),
            (Some(40), Some(18), "ha.dead_interval")
        ]
    );
    assert_eq!(issues[0].message, "node_id must be 1..=255");
    assert_eq!(issues[1].message, "heartbeat must be at least 10ms");
    assert!(
        issues[2]
            .message
            .starts_with("dead_interval must be longer than heartbeat (5ms)")
    );

    let issues = parse_err(&example_with("node_id: 1", "node_id: 256"));
    assert_one(&issues, 34, 12, "ha.node_id", "node_id must be 1..=255");
    // Line 41: `    - { address: 192.0.2.10/24, interface: eth0 }`.
    let issues = parse_err(&example_with("192.0.2.10/24", "192.0.2.10"));
    assert_one(
        &issues,
        41,
        18,
        "ha.floating_ips[0].address",
        "write e.g. 192.0.2.10/24",
    );
    let issues = parse_err(&example_with("192.0.2.10/24", "192.0.2.10/33"));
    assert_one(
        &issues,
        41,
        18,
        "ha.floating_ips[0].address",
        "is not an IP address with a prefix length",
    );
    let c = parse_ok(&example_with(
        "heartbeat: 100ms",
        "heartbeat: 100ms\n  dead_interval: 1s\n  preempt: true",
    ));
    let ha = c.ha.unwrap();
    assert_eq!(
        (ha.dead_interval, ha.preempt),
        (Some(Duration::from_secs(1)), true)
    );
}

#[test]
fn names_are_checked_at_their_key() {
    let issues = parse_err(
        "interfaces: [eth0]
serverfarms:
  \"web farm\": {}
vips:
  \"\": { address: 192.0.2.1, port: 80, serverfarm: \"web farm\" }
",
    );
    assert_eq!(
        locs(&issues),
        [
            (Some(3), Some(3), "serverfarms.web farm"),
            (Some(5), Some(3), "vips.")
        ]
    );
    assert!(issues.iter().all(|i| {
        i.message
            .contains("is not a valid name: use 1 to 63 of A-Z a-z 0-9 _ . -")
    }));
    let long = "x".repeat(64);
    let issues = parse_err(&format!(
        "interfaces: [eth0]\nprobes:\n  {long}: {{ type: tcp }}\n"
    ));
    assert_eq!(
        locs(&issues),
        [(Some(3), Some(3), format!("probes.{long}").as_str())]
    );
}

#[test]
fn duplicate_map_keys_are_reported() {
    let issues = parse_err("interfaces: [eth0]\nserverfarms:\n  web: {}\n  api: {}\n  web: {}\n");
    assert_one(
        &issues,
        5,
        3,
        "serverfarms.web",
        "written twice (first at line 3)",
    );
}

#[test]
fn all_issues_are_collected_in_file_order() {
    // Four unrelated mistakes; serde accepts the file, validation finds all.
    let src = example_with("interfaces: [eth0, eth1]", "interfaces: [eth0, eth0]")
        .replacen("rise: 2", "rise: 0", 1)
        .replacen("weight: 10, max_conns", "weight: 20000, max_conns", 1)
        .replacen("serverfarm: web", "serverfarm: nope", 1)
        .replacen("flow_table_size: 1048576", "flow_table_size: 12", 1);
    let err = Config::parse(&src, "lb.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "\
lb.yaml:1:20: interfaces[1]: interface `eth0` is listed twice; remove one
lb.yaml:12:11: probes.web-http.rise: rise must be at least 1
lb.yaml:23:51: serverfarms.web.reals[1].weight: weight must be 0..=10000
lb.yaml:30:17: vips.www.serverfarm: serverfarm `nope` is not defined; defined serverfarms: web
lb.yaml:45:50: bpf.flow_table_size: flow_table_size must be 1024..=67108864"
    );
}

#[test]
fn issue_display_without_a_location() {
    let issue = ConfigIssue {
        file: "lb.yaml".into(),
        line: None,
        column: None,
        path: "vips.www.serverfarm".into(),
        message: "gone".into(),
    };
    assert_eq!(issue.to_string(), "lb.yaml: vips.www.serverfarm: gone");
    let issue = ConfigIssue {
        line: Some(14),
        column: Some(17),
        path: "serverfarms.web.reals[2].weight".into(),
        message: "weight must be 0..=10000".into(),
        ..issue
    };
    assert_eq!(
        issue.to_string(),
        "lb.yaml:14:17: serverfarms.web.reals[2].weight: weight must be 0..=10000"
    );
}

#[test]
fn from_file_reads_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("lb-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lb.yaml");
    std::fs::write(&path, example_with("serverfarm: web", "serverfarm: webb")).unwrap();
    let err = Config::from_file(&path).unwrap_err();
    assert_eq!(err.errors[0].file, path.display().to_string());
    assert_eq!(
        (err.errors[0].line, err.errors[0].column),
        (Some(30), Some(17))
    );
    std::fs::write(&path, EXAMPLE).unwrap();
    assert_eq!(Config::from_file(&path).unwrap(), parse_ok(EXAMPLE));
    std::fs::remove_dir_all(&dir).unwrap();

    let err = Config::from_file(&dir.join("missing.yaml")).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    assert!(
        err.to_string()
            .contains("missing.yaml: cannot read the config file"),
        "{err}"
    );
}

#[test]
fn serializes_to_json_with_yaml_spellings() {
    let c = parse_ok(EXAMPLE);
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["probes"]["web-http"]["type"], "http");
    assert_eq!(json["probes"]["web-http"]["expect"], "200-399");
    assert_eq!(json["probes"]["web-http"]["fast_interval"], "500ms");
    assert_eq!(json["serverfarms"]["web"]["algorithm"], "round-robin");
    assert_eq!(
        json["serverfarms"]["web"]["reals"][0]["address"],
        "10.0.2.11"
    );
    assert_eq!(json["vips"]["www"]["sticky"]["mode"], "source-ip");
    assert_eq!(json["vips"]["www"]["timeouts"]["established"], "1h");
    assert_eq!(json["ha"]["floating_ips"][0]["address"], "192.0.2.10/24");
    // The YAML form of the same value reads back to it.
    let yaml = serde_yaml::to_string(&c).unwrap();
    assert_eq!(parse_ok(&yaml), c);
}

#[test]
fn repeated_field_points_at_the_repeat() {
    let issues = parse_err(
        "interfaces: [eth0]\nvips: { a: { address: 1.2.3.4, port: 1, port: 2, serverfarm: f } }\n",
    );
    assert_one(&issues, 2, 41, "vips.a", "duplicate field `port`");
}

#[test]
fn comments_only_is_an_empty_file() {
    let issues = parse_err("# nothing yet\n\n");
    assert_eq!(issues.len(), 1);
    assert!(
        issues[0].message.starts_with("the file is empty"),
        "{}",
        issues[0]
    );
    // A section left empty is the same as leaving it out.
    assert!(
        parse_ok("interfaces: [eth0]\nprobes:\nvips:\n")
            .vips
            .is_empty()
    );
}

#[test]
fn init_state_parses_and_defaults_to_down() {
    let c = parse_ok(EXAMPLE);
    assert_eq!(c.serverfarms["web"].init_state, InitState::Down);
    for (yaml, want) in [("down", InitState::Down), ("up", InitState::Up)] {
        let c = parse_ok(&example_with(
            "    slow_start: 30s\n",
            &format!("    slow_start: 30s\n    init_state: {yaml}\n"),
        ));
        assert_eq!(c.serverfarms["web"].init_state, want);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["serverfarms"]["web"]["init_state"], yaml);
        let yaml_out = serde_yaml::to_string(&c).unwrap();
        assert_eq!(parse_ok(&yaml_out), c);
    }
    let issues = parse_err(&example_with(
        "    slow_start: 30s\n",
        "    slow_start: 30s\n    init_state: maybe\n",
    ));
    assert_one(
        &issues,
        21,
        17,
        "serverfarms.web.init_state",
        "unknown variant `maybe`, expected `down` or `up`",
    );
}

#[test]
fn interfaces_take_a_hook_each() {
    let c = parse_ok(
        "interfaces: [eth0, { name: eth1, hook: tc }, { name: eth2, hook: xdp }, { name: eth3 }]\n",
    );
    let hooks: Vec<(&str, Hook)> = c
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.hook))
        .collect();
    assert_eq!(
        hooks,
        [
            ("eth0", Hook::Auto),
            ("eth1", Hook::Tc),
            ("eth2", Hook::Xdp),
            ("eth3", Hook::Auto)
        ]
    );
    // Written back as it was read: a bare name for auto.
    let yaml = serde_yaml::to_string(&c.interfaces).unwrap();
    assert_eq!(
        yaml,
        "- eth0\n- name: eth1\n  hook: tc\n- name: eth2\n  hook: xdp\n- eth3\n"
    );
}

#[test]
fn an_unknown_hook_is_refused_at_its_position() {
    let issues = parse_err("interfaces: [{ name: eth0, hook: dpdk }]\n");
    assert_eq!(issues.len(), 1, "{issues:?}");
    let text = issues[0].to_string();
    assert!(text.starts_with("lb.yaml:1:"), "{text}");
    assert!(text.contains("dpdk"), "{text}");
}

#[test]
fn a_real_at_a_vip_address_is_refused() {
    let src = "interfaces: [eth0]\nserverfarms:\n  web:\n    reals:\n      - { address: 203.0.113.11, port: 8080 }\n      - { address: 198.51.100.10, port: 8080 }\nvips:\n  www: { address: 198.51.100.10, port: 80, serverfarm: web }\n";
    assert_one(
        &parse_err(src),
        6,
        20,
        "serverfarms.web.reals[1].address",
        "198.51.100.10 is the address of vip `www`: a real must have an address of its own, or lb takes what is sent to it for the VIP",
    );
}

/// `track:` configs: web probes its reals, `api` tracks them.
fn tracking(api_reals: &str) -> String {
    format!(
        "interfaces: [eth0]\nprobes:\n  hc: {{ type: tcp }}\nserverfarms:\n  web:\n    probes: [hc]\n    reals:\n      - {{ address: 203.0.113.11, port: 8080 }}\n      - {{ address: 203.0.113.12 }}\n  api:\n    reals:\n{api_reals}vips:\n  www: {{ address: 198.51.100.10, port: 80, serverfarm: web }}\n  api: {{ address: 198.51.100.10, port: 81, serverfarm: api }}\n"
    )
}

#[test]
fn a_real_tracks_a_checked_real_of_another_farm() {
    let cfg = parse_ok(&tracking(
        "      - { address: 203.0.113.11, port: 9000, track: web/203.0.113.11:8080 }\n      - { address: 203.0.113.12, port: 9000, track: web/203.0.113.12 }\n      - { address: 203.0.113.13, port: 9000, track: api/203.0.113.12 }\n",
    ));
    let t = cfg.tracks();
    assert_eq!(
        t,
        [
            (("api".into(), 0), ("web".into(), 0)),
            (("api".into(), 1), ("web".into(), 1)),
            // A chain: api's third real follows its second.
            (("api".into(), 2), ("api".into(), 1)),
        ]
    );
    // A real without a port of its own serves on its VIP's.
    assert!(cfg.tracked("web/203.0.113.12:80").is_ok());
    assert!(cfg.tracked("web/203.0.113.12:81").is_err());
}

#[test]
fn track_refuses_loops_unchecked_reals_and_checked_trackers() {
    let issues = parse_err(&tracking(
        "      - { address: 203.0.113.21, port: 9000, track: api/203.0.113.22 }\n      - { address: 203.0.113.22, port: 9000, track: api/203.0.113.21 }\n",
    ));
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert_eq!(issues[0].path, "serverfarms.api.reals[0].track");
    assert_eq!(
        issues[0].message,
        "tracking loop: api/203.0.113.21:9000 -> api/203.0.113.22:9000 -> api/203.0.113.21:9000"
    );
    assert_eq!((issues[0].line, issues[0].column), (Some(12), Some(53)));

    let issues = parse_err(&tracking(
        "      - { address: 203.0.113.21, port: 9000 }\n      - { address: 203.0.113.22, port: 9000, track: api/203.0.113.21 }\n",
    ));
    assert_eq!(
        issues[0].message,
        "api/203.0.113.21:9000 is checked by nothing (serverfarm `api` has no probes and no `observe`): there is no health to follow"
    );

    let src = tracking("      - { address: 203.0.113.21, port: 9000 }\n").replace(
        "      - { address: 203.0.113.12 }\n",
        "      - { address: 203.0.113.12, track: api/203.0.113.21 }\n",
    );
    let issues = parse_err(&src);
    assert!(
        issues[0]
            .message
            .starts_with("a real either is checked or tracks another: serverfarm `web` probes"),
        "{issues:?}"
    );

    for (track, want) in [
        ("web", "track must be FARM/ADDR[:PORT]"),
        ("db/203.0.113.11", "track: no serverfarm `db`"),
        (
            "web/203.0.113.99",
            "track: serverfarm `web` has no real 203.0.113.99",
        ),
        ("web/www", "track: \"www\" is not ADDR or ADDR:PORT"),
    ] {
        let issues = parse_err(&tracking(&format!(
            "      - {{ address: 203.0.113.21, port: 9000, track: {track} }}\n"
        )));
        assert!(issues[0].message.starts_with(want), "{track}: {issues:?}");
    }
}

const CLUSTER: &str = r#"interfaces: [eth0, eth1]
serverfarms:
  web:
    algorithm: maglev
    reals:
      - { address: 203.0.113.11, port: 8080 }
      - { address: 203.0.113.12, port: 8080 }
vips:
  www: { address: 198.51.100.10, port: 80, serverfarm: web }
cluster:
  node_id: 1
  listen: 203.0.113.251:7400
  peers: [203.0.113.252:7400, 203.0.113.253:7400]
  key_file: /etc/lb/cluster.key
  bgp:
    local_as: 65001
    router_id: 198.18.11.2
    neighbors:
      - { address: 198.18.11.1, remote_as: 65000 }
"#;

#[test]
fn a_cluster_config_parses_with_its_defaults() {
    let c = parse_ok(CLUSTER);
    let cl = c.cluster.expect("cluster");
    assert_eq!(cl.drain_timeout, Duration::from_secs(30));
    assert_eq!(cl.heartbeat, Duration::from_millis(200));
    assert_eq!(cl.bgp.hold_time, Duration::from_secs(3));
    assert_eq!(cl.bgp.min_up, 1);
}

#[test]
fn a_cluster_needs_a_choice_every_node_makes_alike() {
    let src = CLUSTER
        .replace("algorithm: maglev", "algorithm: round-robin")
        .replace(
            "serverfarm: web }",
            "serverfarm: web, sticky: { timeout: 10m } }",
        );
    let issues = parse_err(&src);
    assert_eq!(
        locs(&issues),
        [
            (Some(4), Some(16), "serverfarms.web.algorithm"),
            (Some(9), Some(69), "vips.www.sticky"),
        ]
    );
    assert!(
        issues[0].message.contains("use maglev or source-hash"),
        "{}",
        issues[0].message
    );
    assert!(
        issues[1].message.contains("source-hash"),
        "{}",
        issues[1].message
    );
}

#[test]
fn a_cluster_real_endpoint_serves_one_vip() {
    let src = CLUSTER.replace(
        "  www: { address: 198.51.100.10, port: 80, serverfarm: web }\n",
        "  www: { address: 198.51.100.10, port: 80, serverfarm: web }\n  \
         www2: { address: 198.51.100.11, port: 80, serverfarm: web }\n",
    );
    let issues = parse_err(&src);
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert!(
        issues[0]
            .message
            .contains("203.0.113.11:8080 also serves 198.51.100.10:80"),
        "{}",
        issues[0].message
    );
    // A real without a port takes each VIP's: two VIPs on other ports do
    // not collide.
    let ok = CLUSTER
        .replace(", port: 8080", "")
        .replace(
            "  www: { address: 198.51.100.10, port: 80, serverfarm: web }\n",
            "  www: { address: 198.51.100.10, port: 80, serverfarm: web }\n  \
             other: { address: 198.51.100.10, port: 81, serverfarm: other }\n",
        )
        .replace(
            "vips:",
            "  other:\n    algorithm: source-hash\n    reals:\n      - { address: 203.0.113.11 }\nvips:",
        );
    parse_ok(&ok);
}

#[test]
fn cluster_rules() {
    let src = CLUSTER
        .replace("node_id: 1", "node_id: 0")
        .replace("peers: [203.0.113.252:7400,", "peers: [203.0.113.251:7400,")
        .replace("local_as: 65001", "local_as: 65001\n    hold_time: 2s")
        + "ha:\n  node_id: 1\n  listen: 10.0.9.1:7400\n  peer: 10.0.9.2:7400\n  key_file: /k\n";
    let issues = parse_err(&src);
    let paths: Vec<&str> = locs(&issues).iter().map(|l| l.2).collect();
    assert_eq!(
        paths,
        [
            "cluster",
            "cluster.node_id",
            "cluster.peers[0]",
            "cluster.bgp.hold_time"
        ],
        "{issues:?}"
    );
    assert!(issues[0].message.contains("cannot both be set"));
}
