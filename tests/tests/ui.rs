//! End to end with the real viewers: the status page in Debian's headless
//! Chromium, and Debian's Prometheus scraping the agent. Both run inside
//! the test's lb namespace, against the agent's listener on its loopback.
//! Together they take about 35 s, so they run with every other test.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use lb_tests::{
    Spawned,
    browser::Browser,
    http_get,
    liveview::{self, LISTEN},
    rig::Rig,
    wait_until,
};
use lb_userspace::api::RealState;
use serde_json::Value;

fn testsrv() -> &'static str {
    env!("CARGO_BIN_EXE_lb-testsrv")
}

/// The rows the page shows, as `[key, state-or-address, ...cells]`.
const ROWS: &str = "JSON.stringify([...document.querySelectorAll('tbody tr[data-vip], tbody tr[data-real], tbody tr[data-drop]')].map(tr => [tr.dataset.vip || tr.dataset.real || tr.dataset.drop, ...[...tr.cells].map(c => c.textContent)]))";

fn rows(b: &mut Browser) -> Vec<Vec<String>> {
    let v = b.eval(ROWS);
    serde_json::from_str(v.as_str().expect("a JSON string")).expect("rows")
}

#[test]
fn the_status_page_shows_the_rows_and_a_real_going_down_without_a_reload() {
    let mut rig = liveview::rig(testsrv());
    let url = format!("http://{LISTEN}/");

    // A terminal browser, 80 columns, no script: the agent's first frame.
    let dump = rig.topo.lb.exec(&["w3m", "-dump", "-cols", "80", &url]);
    let text = String::from_utf8_lossy(&dump.stdout);
    println!("w3m -dump -cols 80:\n{text}");
    for needle in [
        "198.51.100.10:80",
        "least-conn",
        "203.0.113.11:8080",
        "203.0.113.13:7000",
    ] {
        assert!(text.contains(needle), "w3m shows {needle}:\n{text}");
    }
    let real_line = text
        .lines()
        .find(|l| l.contains("203.0.113.11:8080"))
        .expect("the real's line");
    assert!(real_line.contains(" up "), "{real_line}");

    // The same page in Chromium, first without scripts (the agent's rows),
    // then with (the script's rows from /api/status): the same rows.
    let mut b = Browser::start(&rig.topo.lb, 1280, 560);
    let all_rows = "document.querySelectorAll('#vips tr[data-vip]').length == 2 && document.querySelectorAll('#reals tr[data-real]').length == 3";
    b.scripts(false);
    b.navigate(&url);
    assert!(
        b.wait_for(all_rows, Duration::from_secs(15)),
        "rows without a script:\n{}",
        b.log()
    );
    let served = rows(&mut b);
    b.scripts(true);
    b.navigate(&url);
    let drawn = b.wait_for(
        &format!("document.body.dataset.updated != null && {all_rows}"),
        Duration::from_secs(15),
    );
    assert!(drawn, "the script's rows within 15 s:\n{}", b.log());
    let stable = |rows: &[Vec<String>]| -> Vec<Vec<String>> {
        // Leave out what moves between two answers: rates, check latency
        // and age.
        rows.iter()
            .map(|r| match r.len() {
                10 => r[..7].to_vec(),
                12 => [&r[..7], &r[9..10]].concat(),
                _ => r.clone(),
            })
            .collect()
    };
    let shown = rows(&mut b);
    println!("rendered rows: {shown:?}");
    assert_eq!(
        stable(&served),
        stable(&shown),
        "the agent's rows and the script's"
    );
    let row = |rows: &[Vec<String>], key: &str| -> Vec<String> {
        rows.iter()
            .find(|r| r[0] == key)
            .cloned()
            .unwrap_or_else(|| panic!("no row {key} in {rows:?}"))
    };
    let www = row(&shown, "www");
    assert_eq!(www[1], "198.51.100.10:80");
    assert_eq!(www[4], "least-conn");
    assert_eq!(www[5], "standalone");
    assert_eq!(www[6], "2/2");
    for r in [
        "web/203.0.113.11:8080",
        "web/203.0.113.12:8080",
        "echo/203.0.113.13:7000",
    ] {
        assert_eq!(row(&shown, r)[3], "up", "{r}");
    }
    // Marks this page load: a reload would lose it.
    b.eval("window.lbLoadMark = 7; true");

    // Traffic while a real dies: rates move and the real turns down, on the
    // page that was loaded once.
    let client = {
        let www = liveview::www();
        rig.topo.client.thread(move || {
            let mut ok = 0;
            for _ in 0..60 {
                if http_get(www, "/", Duration::from_secs(1)).is_ok() {
                    ok += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            ok
        })
    };
    // A few SYNs to a port the VIP does not serve: the datapath drops them
    // (`drop_no_vip_port`), and the page lists the reason as recent.
    rig.topo.client.run(|| {
        for _ in 0..5 {
            let _ = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::new(lb_tests::topology::vip(10).into(), 81),
                Duration::from_millis(200),
            );
        }
    });
    let dropped = b.wait_for(
        "document.querySelector('#drops tr[data-drop=\"drop_no_vip_port\"]') != null",
        Duration::from_secs(5),
    );
    assert!(
        dropped,
        "the page lists drop_no_vip_port: {:?}",
        rows(&mut b)
    );
    rig.servers[0].kill();
    let down = b.wait_for(
        "(document.querySelector('#reals tr[data-real=\"web/203.0.113.11:8080\"] td.state') || {}).textContent == 'down'",
        Duration::from_secs(8),
    );
    let now = rows(&mut b);
    assert!(down, "the page shows 203.0.113.11:8080 down: {now:?}");
    assert_eq!(
        b.eval("window.lbLoadMark"),
        Value::from(7),
        "the page was not reloaded"
    );
    assert_eq!(
        liveview::real_state(&rig, "web", "203.0.113.11:8080"),
        Some(RealState::Down),
        "the agent agrees"
    );
    assert_eq!(row(&now, "www")[6], "1/2");
    let rate: f64 = row(&now, "www")[8].parse().expect("conn/s is a number");
    assert!(rate > 0.0, "www's new flows/s while traffic runs: {now:?}");
    println!("after the kill: {now:?}");
    if let Some(path) = std::env::var_os("LB_SCREENSHOT") {
        b.screenshot(&PathBuf::from(&path));
        println!("screenshot: {}", PathBuf::from(path).display());
    }
    assert!(
        client.join().expect("client") > 30,
        "the client's requests went through"
    );
    rig.restart_server(0);
}

/// Debian's prometheus in the lb namespace, scraping the agent every
/// second, with its storage in a directory removed on drop.
struct Prometheus {
    proc: Option<Spawned>,
    dir: PathBuf,
}

const PROM: &str = "127.0.0.1:9090";

impl Prometheus {
    fn start(rig: &Rig) -> Prometheus {
        let dir = rig.topo.lb.log_dir().join("prometheus");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: lb\n    static_configs:\n      - targets: ['{LISTEN}']\n"
            ),
        )
        .expect("prometheus.yml");
        let proc = rig.topo.lb.spawn(&[
            "prometheus",
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address={PROM}"),
        ]);
        let p = Prometheus {
            proc: Some(proc),
            dir,
        };
        let ready = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            rig.topo
                .lb
                .run(|| http_get(PROM.parse().unwrap(), "/-/ready", Duration::from_secs(1)))
                .is_ok_and(|(s, _)| s == 200)
        });
        assert!(
            ready,
            "prometheus ready:\n{}",
            p.proc.as_ref().unwrap().report()
        );
        p
    }

    /// An instant query; the result vector as (labels, value).
    fn query(&self, rig: &Rig, promql: &str) -> Vec<(Value, f64)> {
        let path = format!("/api/v1/query?query={}", urlencode(promql));
        let (status, body) = rig
            .topo
            .lb
            .run(|| http_get(PROM.parse().unwrap(), &path, Duration::from_secs(3)))
            .unwrap_or_else(|e| panic!("querying prometheus for {promql}: {e}"));
        assert_eq!(status, 200, "{promql}: {body}");
        let v: Value = serde_json::from_str(&body).expect("prometheus answers JSON");
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"]["result"]
            .as_array()
            .expect("a vector")
            .iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|x| x.parse().ok())
                    .expect("a value");
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// The value of a query that yields one series.
    fn one(&self, rig: &Rig, promql: &str) -> Option<f64> {
        let r = self.query(rig, promql);
        assert!(r.len() <= 1, "{promql} gave {r:?}");
        r.first().map(|(_, v)| *v)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Stop it before its storage goes.
        drop(self.proc.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_rates_and_states_that_match_the_agent() {
    let mut rig = liveview::rig(testsrv());
    let prom = Prometheus::start(&rig);
    let www = r#"vip="www""#;
    // Up, with the agent's series, before any traffic.
    let scraped = wait_until(Duration::from_secs(10), Duration::from_millis(250), || {
        prom.one(&rig, &format!("lb_vip_new_flows_total{{{www}}}"))
            .is_some()
    });
    assert!(scraped, "prometheus has scraped the agent");

    // 10 requests a second for 12 s; the rate Prometheus computes over the
    // last 5 s and the one the agent shows must both be near 10/s.
    let client = {
        let www = liveview::www();
        rig.topo.client.thread(move || {
            let start = Instant::now();
            let mut ok = 0;
            for i in 0..120u32 {
                if http_get(www, "/", Duration::from_secs(1)).is_ok() {
                    ok += 1;
                }
                let next = start + Duration::from_millis(100) * (i + 1);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            ok
        })
    };
    std::thread::sleep(Duration::from_secs(9));
    let prom_rate = prom
        .one(&rig, &format!("rate(lb_vip_new_flows_total{{{www}}}[5s])"))
        .expect("a rate");
    let agent: lb_userspace::api::live::Status = liveview::json(&rig, &["top", "--once"]);
    let agent_rate = agent
        .vips
        .iter()
        .find(|v| v.name == "www")
        .unwrap()
        .new_flows_per_s;
    println!("www new flows/s: prometheus {prom_rate:.2}, agent {agent_rate:.2} (driven at 10/s)");
    for (who, r) in [("prometheus", prom_rate), ("agent", agent_rate)] {
        assert!(
            (7.0..=13.0).contains(&r),
            "{who}'s rate {r} is not near 10/s"
        );
    }
    assert_eq!(
        client.join().expect("client"),
        120,
        "every request went through"
    );

    // Quiet now: after the next scrapes Prometheus's latest samples equal
    // the agent's counters exactly.
    std::thread::sleep(Duration::from_millis(2500));
    let v = liveview::vip_row(&rig, "www");
    for (series, field, value) in [
        (
            format!("lb_vip_new_flows_total{{{www}}}"),
            "new_flows",
            v.new_flows,
        ),
        (
            format!("lb_vip_packets_total{{{www},direction=\"in\"}}"),
            "packets_in",
            v.packets_in,
        ),
        (
            format!("lb_vip_packets_total{{{www},direction=\"out\"}}"),
            "packets_out",
            v.packets_out,
        ),
    ] {
        let p = prom.one(&rig, &series).expect(&series);
        println!("{series} = {p}; lb vips {field} = {value}");
        assert_eq!(p as u64, value, "{series} vs lb vips {field}");
    }

    // Every expression of the Grafana dashboard runs on this Prometheus and,
    // but for the failover panels (no `ha:` here) and filters that may
    // leave nothing (`> 0`), finds series.
    let dashboard: Value = serde_json::from_str(include_str!("../../docs/grafana/lb.json"))
        .expect("docs/grafana/lb.json is JSON");
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let series = prom.query(&rig, expr);
            if !expr.contains("lb_ha_") && !expr.ends_with("> 0") {
                assert!(
                    !series.is_empty(),
                    "dashboard panel {}: {expr} found nothing",
                    panel["title"]
                );
            }
            checked += 1;
        }
    }
    println!("{checked} dashboard expressions evaluated by prometheus");

    // A real dies: Prometheus sees the state lb reals says.
    rig.servers[1].kill();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            liveview::real_state(&rig, "web", "203.0.113.12:8080") == Some(RealState::Down)
        }),
        "the agent marks 203.0.113.12:8080 down"
    );
    let seen = wait_until(Duration::from_secs(5), Duration::from_millis(250), || {
        prom.one(
            &rig,
            r#"lb_real_state{farm="web",real="203.0.113.12:8080",state="down"}"#,
        ) == Some(1.0)
    });
    assert!(seen, "prometheus sees 203.0.113.12:8080 down");
    for r in rig.lb.reals() {
        let real = format!("{}:{}", r.address, r.port);
        let state = r.state;
        let q = format!(
            r#"lb_real_state{{farm="{}",real="{real}",state="{state}"}}"#,
            r.farm
        );
        assert_eq!(prom.one(&rig, &q), Some(1.0), "{q}");
        let up = prom
            .one(&rig, &format!(r#"lb_real_up{{real="{real}"}}"#))
            .expect("lb_real_up");
        assert_eq!(
            up == 1.0,
            state == RealState::Up,
            "{real}: lb_real_up {up}, state {state}"
        );
    }
    rig.restart_server(1);
}
