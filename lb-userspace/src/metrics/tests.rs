use std::{
    collections::{HashMap, HashSet},
    panic::{AssertUnwindSafe, catch_unwind},
};

use super::*;

/// Two VIPs, three reals (up with a probe latency, down without one, drain),
/// two datapath reasons, HA active.
pub(crate) fn sample() -> Snapshot {
    let real = |farm: &str, address: &str, state: RealState, weight: u32| RealSample {
        farm: farm.into(),
        address: address.into(),
        state,
        weight,
        ..RealSample::default()
    };
    Snapshot {
        vips: vec![
            VipSample {
                name: "www".into(),
                address: "198.51.100.10:80".into(),
                protocol: "tcp".into(),
                packets_in: 1000,
                bytes_in: 64_000,
                packets_out: 900,
                bytes_out: 1_200_000,
                new_flows: 40,
                active_flows: 12,
            },
            VipSample {
                name: "dns".into(),
                address: "198.51.100.20:53".into(),
                protocol: "udp".into(),
                packets_in: 500,
                bytes_in: 32_000,
                packets_out: 499,
                bytes_out: 48_000,
                new_flows: 250,
                active_flows: 30,
            },
        ],
        reals: vec![
            RealSample {
                packets_in: 600,
                bytes_in: 38_400,
                packets_out: 540,
                bytes_out: 720_000,
                new_flows: 24,
                active_flows: 7,
                conn_ok: 23,
                conn_fail: 1,
                probe_latency_seconds: Some(0.0012),
                ..real("web", "203.0.113.11:8080", RealState::Up, 10)
            },
            RealSample {
                packets_in: 400,
                conn_fail: 5,
                ..real("web", "203.0.113.12:8080", RealState::Down, 10)
            },
            RealSample {
                active_flows: 30,
                probe_latency_seconds: Some(0.25),
                ..real("dns", "203.0.113.21:53", RealState::Drain, 5)
            },
        ],
        reasons: vec![
            ("pass_not_ours".into(), 12_345),
            ("drop_no_vip_port".into(), 3),
        ],
        flow_entries: 84,
        flow_capacity: 1_048_576,
        flows: 42,
        half_open_entries: 10,
        half_open_capacity: 262_144,
        half_open: 5,
        sweep_seconds: 0.0042,
        ha_role: Some(crate::api::NodeRole::Active),
        ha_sync_lag_seconds: Some(0.05),
        ha_sync_unacked: Some(3),
        ha_messages: vec![("accepted".into(), 10), ("bad_mac".into(), 2)],
        ha_events: vec![("sent".into(), 7)],
        cluster: Some(ClusterSample {
            draining: false,
            announced: 2,
            peers: vec![PeerSample {
                peer: "203.0.113.252:7400".into(),
                up: true,
                synced: true,
                lag_seconds: 0.0,
                unacked: 4,
            }],
            sessions: vec![("198.18.11.1".into(), true)],
            events: vec![("applied".into(), 9)],
        }),
    }
}

fn assert_has_lines(text: &str, want: &[&str]) {
    for line in want {
        assert!(
            text.lines().any(|l| l == *line),
            "missing line {line:?} in:\n{text}"
        );
    }
}

#[test]
fn render_shows_exact_lines() {
    let text = render(&sample());
    assert_has_lines(
        &text,
        &[
            "# HELP lb_vip_packets Packets through a virtual server; in: from clients, out: replies to them",
            "# TYPE lb_vip_packets counter",
            r#"lb_vip_packets_total{vip="www",address="198.51.100.10:80",protocol="tcp",direction="in"} 1000"#,
            r#"lb_vip_packets_total{vip="dns",address="198.51.100.20:53",protocol="udp",direction="out"} 499"#,
            "# TYPE lb_vip_bytes counter",
            "# UNIT lb_vip_bytes bytes",
            r#"lb_vip_bytes_total{vip="www",address="198.51.100.10:80",protocol="tcp",direction="out"} 1200000"#,
            r#"lb_vip_new_flows_total{vip="dns",address="198.51.100.20:53",protocol="udp"} 250"#,
            "# TYPE lb_vip_active_flows gauge",
            r#"lb_vip_active_flows{vip="www",address="198.51.100.10:80",protocol="tcp"} 12"#,
            r#"lb_real_packets_total{farm="web",real="203.0.113.12:8080",direction="in"} 400"#,
            r#"lb_real_bytes_total{farm="web",real="203.0.113.11:8080",direction="out"} 720000"#,
            r#"lb_real_new_flows_total{farm="web",real="203.0.113.11:8080"} 24"#,
            r#"lb_real_connections_total{farm="web",real="203.0.113.11:8080",result="ok"} 23"#,
            r#"lb_real_connections_total{farm="web",real="203.0.113.12:8080",result="failed"} 5"#,
            r#"lb_real_active_flows{farm="dns",real="203.0.113.21:53"} 30"#,
            r#"lb_real_up{farm="web",real="203.0.113.11:8080"} 1"#,
            r#"lb_real_up{farm="web",real="203.0.113.12:8080"} 0"#,
            r#"lb_real_up{farm="dns",real="203.0.113.21:53"} 0"#,
            r#"lb_real_state{farm="web",real="203.0.113.12:8080",state="up"} 0"#,
            r#"lb_real_state{farm="web",real="203.0.113.12:8080",state="down"} 1"#,
            r#"lb_real_state{farm="dns",real="203.0.113.21:53",state="drain"} 1"#,
            r#"lb_real_weight{farm="dns",real="203.0.113.21:53"} 5"#,
            "# TYPE lb_real_probe_latency_seconds gauge",
            "# UNIT lb_real_probe_latency_seconds seconds",
            r#"lb_real_probe_latency_seconds{farm="web",real="203.0.113.11:8080"} 0.0012"#,
            r#"lb_real_probe_latency_seconds{farm="dns",real="203.0.113.21:53"} 0.25"#,
            "# TYPE lb_datapath_packets counter",
            r#"lb_datapath_packets_total{reason="drop_no_vip_port"} 3"#,
            "lb_flow_table_entries 84",
            "lb_flow_table_capacity 1048576",
            "lb_flows 42",
            "# TYPE lb_half_open_table_entries gauge",
            "lb_half_open_table_entries 10",
            "lb_half_open_table_capacity 262144",
            "lb_half_open_flows 5",
            "lb_flow_sweep_seconds 0.0042",
            r#"lb_ha_role{role="active"} 1"#,
            "lb_ha_sync_lag_seconds 0.05",
            "lb_ha_sync_unacked_events 3",
            r#"lb_ha_messages_total{result="bad_mac"} 2"#,
            r#"lb_ha_sync_events_total{kind="sent"} 7"#,
            "lb_cluster_draining 0",
            "lb_cluster_announced_prefixes 2",
            r#"lb_cluster_peer_up{peer="203.0.113.252:7400"} 1"#,
            r#"lb_cluster_peer_unacked_events{peer="203.0.113.252:7400"} 4"#,
            r#"lb_cluster_bgp_session_up{neighbor="198.18.11.1"} 1"#,
            r#"lb_cluster_sync_events_total{kind="applied"} 9"#,
        ],
    );
    assert!(
        !text.contains(r#"lb_real_probe_latency_seconds{farm="web",real="203.0.113.12:8080"}"#),
        "a real without a probe measurement shows no latency:\n{text}"
    );
    assert!(text.ends_with("\n# EOF\n"), "{text}");
}

#[test]
fn render_parses_strictly() {
    let text = render(&sample());
    let series = parse(&text);
    let count = |name: &str| series.iter().filter(|s| s.name == name).count();
    assert_eq!(count("lb_vip_packets_total"), 4);
    assert_eq!(count("lb_vip_bytes_total"), 4);
    assert_eq!(count("lb_vip_active_flows"), 2);
    assert_eq!(count("lb_real_packets_total"), 6);
    assert_eq!(count("lb_real_connections_total"), 6);
    assert_eq!(count("lb_real_up"), 3);
    assert_eq!(count("lb_real_state"), 3 * RealState::KNOWN.len());
    assert_eq!(count("lb_real_probe_latency_seconds"), 2);
    assert_eq!(count("lb_datapath_packets_total"), 2);
    // Each real is in exactly one state.
    for real in &sample().reals {
        let on: Vec<&str> = series
            .iter()
            .filter(|s| s.name == "lb_real_state" && s.label("real") == real.address)
            .filter(|s| s.value == 1.0)
            .map(|s| s.label("state"))
            .collect();
        assert_eq!(on, [real.state.as_str()], "{text}");
    }
    let value = |name: &str| {
        series
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .value
    };
    assert_eq!(value("lb_flow_table_capacity"), 1_048_576.0);
    assert_eq!(value("lb_flow_sweep_seconds"), 0.0042);
    assert_eq!(value("lb_ha_sync_lag_seconds"), 0.05);
}

#[test]
fn empty_snapshot_shows_only_the_flow_tables() {
    let text = render(&Snapshot::default());
    let names: Vec<String> = parse(&text).into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "lb_flow_table_entries",
            "lb_flow_table_capacity",
            "lb_flows",
            "lb_half_open_table_entries",
            "lb_half_open_table_capacity",
            "lb_half_open_flows",
            "lb_flow_sweep_seconds"
        ],
        "{text}"
    );
    assert!(
        !text.contains("lb_ha_"),
        "no HA families without HA:\n{text}"
    );
    assert!(!text.contains("lb_vip_"), "no empty families:\n{text}");
}

#[test]
fn label_values_are_escaped() {
    let name = "we\"b\\1\nx";
    let mut s = Snapshot::default();
    s.vips.push(VipSample {
        name: name.into(),
        address: "198.51.100.10:80".into(),
        protocol: "tcp".into(),
        ..VipSample::default()
    });
    let text = render(&s);
    assert_has_lines(
        &text,
        &[
            r#"lb_vip_new_flows_total{vip="we\"b\\1\nx",address="198.51.100.10:80",protocol="tcp"} 0"#,
        ],
    );
    let series = parse(&text);
    assert!(
        series
            .iter()
            .filter(|s| s.name.starts_with("lb_vip_"))
            .all(|s| s.label("vip") == name),
        "{text}"
    );
}

#[test]
fn a_state_the_agent_does_not_know_shows_as_unknown() {
    let mut s = Snapshot::default();
    s.reals.push(RealSample {
        farm: "web".into(),
        address: "203.0.113.11:8080".into(),
        state: RealState::Unknown,
        ..RealSample::default()
    });
    let text = render(&s);
    let series = parse(&text);
    let states: Vec<(&str, f64)> = series
        .iter()
        .filter(|s| s.name == "lb_real_state")
        .map(|s| (s.label("state"), s.value))
        .collect();
    assert_eq!(
        states,
        [
            ("up", 0.0),
            ("down", 0.0),
            ("drain", 0.0),
            ("disabled", 0.0),
            ("unknown", 1.0)
        ]
    );
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_b A.\n# TYPE a_b counter\na_b_total{x=\"1\"} 2\n# EOF\n";
    parse(good);
    let bad = [
        ("no EOF", "# HELP a A.\n# TYPE a gauge\na 1\n"),
        ("no TYPE", "# HELP a A.\na 1\n# EOF\n"),
        ("no HELP", "# TYPE a gauge\na 1\n# EOF\n"),
        (
            "counter without _total",
            "# HELP a A.\n# TYPE a counter\na 1\n# EOF\n",
        ),
        (
            "bad escape",
            "# HELP a A.\n# TYPE a gauge\na{x=\"\\t\"} 1\n# EOF\n",
        ),
        (
            "unquoted value",
            "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n# EOF\n",
        ),
        ("bad number", "# HELP a A.\n# TYPE a gauge\na 1x\n# EOF\n"),
        ("two spaces", "# HELP a A.\n# TYPE a gauge\na  1\n# EOF\n"),
        (
            "duplicate series",
            "# HELP a A.\n# TYPE a gauge\na 1\na 2\n# EOF\n",
        ),
        (
            "interleaved families",
            "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\n# HELP b B.\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n# EOF\n",
        ),
        (
            "negative counter",
            "# HELP a A.\n# TYPE a counter\na_total -1\n# EOF\n",
        ),
        ("bad name", "# HELP a A.\n# TYPE a gauge\n1a 1\n# EOF\n"),
    ];
    for (why, text) in bad {
        let parsed = catch_unwind(AssertUnwindSafe(|| parse(text)));
        assert!(parsed.is_err(), "the parser accepted {why}: {text:?}");
    }
}

/// One sample line, parsed.
#[derive(Debug)]
pub(crate) struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Series {
    fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{} has no label {key}: {:?}", self.name, self.labels))
    }
}

/// A strict reader of the text exposition, panicking on anything Prometheus
/// (classic text or OpenMetrics) would reject and on a few things they
/// tolerate that we never write: every line is `# HELP|TYPE|UNIT name ...`
/// or `name{label="value",...} number` with nothing more, label values use
/// only the `\\`, `\"`, `\n` escapes, every sample belongs to a family with
/// a `# HELP` and a `# TYPE` given before it (a counter's samples end in
/// `_total`), a family's lines are contiguous, no series repeats, counters
/// are finite and non-negative, and the text ends with `# EOF`.
pub(crate) fn parse(text: &str) -> Vec<Series> {
    let body = text
        .strip_suffix("# EOF\n")
        .unwrap_or_else(|| panic!("does not end with `# EOF`:\n{text}"));
    let mut types: HashMap<&str, &str> = HashMap::new();
    let mut helps: HashSet<&str> = HashSet::new();
    let mut current: Option<&str> = None;
    let mut closed: HashSet<&str> = HashSet::new();
    let mut seen: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    let mut out = Vec::new();
    for (i, line) in body.split_terminator('\n').enumerate() {
        let at = format!("line {}: {line:?}", i + 1);
        assert!(!line.is_empty(), "{at}: empty line");
        if let Some(meta) = line.strip_prefix("# ") {
            let (keyword, rest) = meta.split_once(' ').unwrap_or_else(|| panic!("{at}"));
            let (name, arg) = rest.split_once(' ').unwrap_or_else(|| panic!("{at}"));
            assert!(is_metric_name(name), "{at}: bad metric name");
            if current != Some(name) {
                if let Some(prev) = current.take() {
                    closed.insert(prev);
                }
                assert!(!closed.contains(name), "{at}: family {name} seen before");
                current = Some(name);
            }
            match keyword {
                "HELP" => {
                    assert!(helps.insert(name), "{at}: second HELP");
                    assert!(!arg.is_empty(), "{at}: empty HELP");
                    let mut chars = arg.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' {
                            assert!(
                                matches!(chars.next(), Some('\\' | 'n' | '"')),
                                "{at}: bad escape in HELP"
                            );
                        }
                    }
                }
                "TYPE" => {
                    assert!(
                        matches!(arg, "counter" | "gauge" | "histogram" | "summary"),
                        "{at}: unknown type"
                    );
                    assert!(types.insert(name, arg).is_none(), "{at}: second TYPE");
                }
                "UNIT" => {
                    assert!(
                        name.ends_with(&format!("_{arg}")),
                        "{at}: the unit must end the name"
                    );
                }
                _ => panic!("{at}: unknown comment"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "{at}: malformed comment");
        let (name, labels, value) = parse_sample(line).unwrap_or_else(|e| panic!("{at}: {e}"));
        let family = match name.strip_suffix("_total") {
            Some(base) if types.get(base) == Some(&"counter") => base,
            _ if types.get(name) == Some(&"gauge") => name,
            _ => panic!("{at}: no # TYPE for this sample's family"),
        };
        assert_eq!(current, Some(family), "{at}: sample outside its family");
        assert!(helps.contains(family), "{at}: family without # HELP");
        if types[family] == "counter" {
            assert!(value.is_finite() && value >= 0.0, "{at}: bad counter value");
        }
        let mut key = labels.clone();
        key.sort();
        assert!(seen.insert((name.to_owned(), key)), "{at}: series repeated");
        out.push(Series {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for family in types.keys() {
        assert!(helps.contains(family), "{family}: # TYPE without # HELP");
    }
    out
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

type Sample<'a> = (&'a str, Vec<(String, String)>, f64);

fn parse_sample(line: &str) -> Result<Sample<'_>, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            let eq = rest.find('=').ok_or("label without =")?;
            let key = &rest[..eq];
            if !is_label_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            if labels.iter().any(|(k, _)| k == key) {
                return Err(format!("label {key} repeated"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let close = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &rest[close + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else {
                rest = rest.strip_prefix('}').ok_or("expected , or }")?;
                break;
            }
        }
    }
    let number = rest.strip_prefix(' ').ok_or("expected one space")?;
    let value = match number {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        n if !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) =>
        {
            n.parse().map_err(|e| format!("bad value {n:?}: {e}"))?
        }
        n => return Err(format!("bad value {n:?}")),
    };
    Ok((name, labels, value))
}

#[test]
fn ipv6_endpoints_label_their_series_as_lb_prints_them() {
    // The agent labels with `VipEntry::addr` and `RealKey::endpoint`, which
    // print IPv6 bracketed (control's tests); the scrape carries them as is.
    let mut s = sample();
    s.vips[0].address = "[2001:db8::10]:80".into();
    s.reals[0].address = "[2001:db8:2::11]:8080".into();
    let text = render(&s);
    assert!(
        text.contains(
            r#"lb_vip_active_flows{vip="www",address="[2001:db8::10]:80",protocol="tcp"} 12"#
        ),
        "{text}"
    );
    let series = parse(&text);
    assert!(
        series
            .iter()
            .any(|x| x.name == "lb_real_up" && x.label("real") == "[2001:db8:2::11]:8080"),
        "{text}"
    );
}

/// The metric names in a PromQL expression: identifiers starting `lb_`
/// outside quoted label values.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut quoted = false;
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("lb_") {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
    }
    names
}

/// Every series name the agent can show: a snapshot with every optional
/// family filled (HA, probe latency), rendered.
fn exported_names() -> HashSet<String> {
    render(&sample())
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_grafana_dashboard_names_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/grafana/lb.json"))
            .expect("docs/grafana/lb.json is JSON");
    let exported = exported_names();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    assert!(exprs.len() >= 20, "{} expressions", exprs.len());
    let mut used = HashSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr} names no lb metric");
        for name in names {
            assert!(
                exported.contains(&name),
                "{expr} uses {name}, which the agent does not export"
            );
            used.insert(name);
        }
    }
    // The views the status page has, in the dashboard too.
    for name in [
        "lb_vip_new_flows_total",
        "lb_vip_packets_total",
        "lb_real_state",
        "lb_real_active_flows",
        "lb_real_new_flows_total",
        "lb_real_connections_total",
        "lb_real_weight",
        "lb_flow_table_entries",
        "lb_datapath_packets_total",
        "lb_ha_role",
    ] {
        assert!(used.contains(name), "the dashboard shows no {name}");
    }
}

#[test]
fn metric_names_skip_label_values_and_functions() {
    assert_eq!(
        metric_names(
            r#"sum by (reason) (rate(lb_datapath_packets_total{reason=~"lb_x|drop_.*"}[1m])) / lb_flows"#
        ),
        ["lb_datapath_packets_total", "lb_flows"]
    );
}
