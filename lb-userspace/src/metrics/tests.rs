use std::{
    collections::{HashMap, HashSet},
    io::{Read, Write},
    net::SocketAddr,
    panic::{AssertUnwindSafe, catch_unwind},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};

use super::*;

/// Two VIPs, three reals (up with a probe latency, down without one, drain),
/// two datapath reasons, HA active.
fn sample() -> Snapshot {
    let real = |farm: &str, address: &str, state: &str, weight: u32| RealSample {
        farm: farm.into(),
        address: address.into(),
        state: state.into(),
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
                ..real("web", "203.0.113.11:8080", "up", 10)
            },
            RealSample {
                packets_in: 400,
                conn_fail: 5,
                ..real("web", "203.0.113.12:8080", "down", 10)
            },
            RealSample {
                active_flows: 30,
                probe_latency_seconds: Some(0.25),
                ..real("dns", "203.0.113.21:53", "drain", 5)
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
        ha_role: Some("active".into()),
        ha_sync_lag_seconds: Some(0.05),
        ha_sync_unacked: Some(3),
        ha_messages: vec![("accepted".into(), 10), ("bad_mac".into(), 2)],
        ha_events: vec![("sent".into(), 7)],
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
    assert_eq!(count("lb_real_state"), 3 * REAL_STATES.len());
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
fn a_state_not_listed_still_shows() {
    let mut s = Snapshot::default();
    s.reals.push(RealSample {
        farm: "web".into(),
        address: "203.0.113.11:8080".into(),
        state: "warming".into(),
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
            ("warming", 1.0)
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
struct Series {
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
fn parse(text: &str) -> Vec<Series> {
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

/// How the test agent answers scrapes.
enum Agent {
    Answers(Box<Snapshot>),
    /// Takes the request and drops it unanswered.
    DropsRequests,
    /// Its receiving end is gone (the agent is stopping).
    Gone,
}

/// `serve_on` on 127.0.0.1:0 in a current_thread runtime of its own, as the
/// agent runs it, with a main loop that answers as told; stopped on drop.
struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    fn start(agent: Agent) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let (stop, mut stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a runtime");
            rt.block_on(async move {
                let (tx, mut rx) = mpsc::channel::<SnapshotRequest>(4);
                let server = serve_on(listener, tx).expect("serve_on");
                if let Agent::Gone = agent {
                    drop(rx);
                    let _ = stopped.await;
                } else {
                    loop {
                        tokio::select! {
                            Some(reply) = rx.recv() => {
                                if let Agent::Answers(s) = &agent {
                                    let _ = reply.send((**s).clone());
                                }
                            }
                            _ = &mut stopped => break,
                        }
                    }
                }
                server.abort();
            });
        });
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct HttpReply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// One raw request over a std TcpStream; the server closes after answering.
fn http(addr: SocketAddr, request: &str) -> HttpReply {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    stream
        .write_all(request.as_bytes())
        .expect("sending the request");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the answer to {request:?}: {e}"));
    let raw = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line:?}");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .map(|l| {
            let (k, v) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad header {l:?}"));
            (k.to_ascii_lowercase(), v.to_owned())
        })
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn request(method: &str, path: &str, addr: SocketAddr) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n"
    )
}

#[test]
fn serves_metrics_and_404_elsewhere() {
    let server = TestServer::start(Agent::Answers(Box::new(sample())));
    let addr = server.addr;

    let ok = http(addr, &request("GET", "/metrics", addr));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.headers["content-type"], CONTENT_TYPE);
    assert_eq!(ok.headers["content-length"], ok.body.len().to_string());
    assert_eq!(ok.body, render(&sample()));
    parse(&ok.body);

    let query = http(addr, &request("GET", "/metrics?x=1", addr));
    assert_eq!(query.status, 200);

    let head = http(addr, &request("HEAD", "/metrics", addr));
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], ok.body.len().to_string());
    assert!(head.body.is_empty(), "HEAD has no body: {:?}", head.body);

    for path in ["/other", "/", "/metrics/x"] {
        let missing = http(addr, &request("GET", path, addr));
        assert_eq!(missing.status, 404, "GET {path}");
    }

    let post = http(addr, &request("POST", "/metrics", addr));
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");

    let garbage = http(addr, "hello\r\n\r\n");
    assert_eq!(garbage.status, 400);
}

#[test]
fn scrape_is_503_when_the_agent_does_not_answer() {
    for agent in [Agent::DropsRequests, Agent::Gone] {
        let server = TestServer::start(agent);
        let reply = http(server.addr, &request("GET", "/metrics", server.addr));
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(reply.body.contains("agent"), "{}", reply.body);
    }
}

#[tokio::test]
async fn bind_failure_says_what_to_do() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let addr = held.local_addr().expect("local_addr");
    let (tx, _rx) = mpsc::channel(1);
    let err = serve(addr, tx).expect_err("the port is taken");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("metrics.listen") && msg.contains(&addr.to_string()),
        "{msg}"
    );
}

#[test]
fn serve_outside_a_runtime_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let (tx, _rx) = mpsc::channel(1);
    let err = serve_on(listener, tx).expect_err("no runtime");
    assert!(format!("{err:#}").contains("tokio runtime"), "{err:#}");
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
