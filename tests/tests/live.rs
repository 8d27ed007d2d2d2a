//! End to end: the live view on a real agent. The HTTP listener under 100
//! slow clients, and `lb top`: one frame for scripts (text and JSON,
//! checked against `lb vips|reals --json`), the live one under tmux, and
//! the failover roles of a pair.
use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use lb_tests::{
    ha_pair::{self, HaPair},
    lb_bin,
    liveview::{self, LISTEN},
    wait_until,
};
use lb_userspace::{
    api::{NodeRole, RealState, live::Status},
    config::Algorithm,
};

fn testsrv() -> &'static str {
    env!("CARGO_BIN_EXE_lb-testsrv")
}

/// One scrape with `Connection: close`; the whole answer.
fn scrape() -> String {
    let mut s = TcpStream::connect_timeout(&LISTEN.parse().unwrap(), Duration::from_secs(2))
        .expect("the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("reading the scrape");
    out
}

#[test]
fn a_scrape_answers_within_a_second_while_100_slow_clients_hold_connections() {
    let rig = liveview::rig(testsrv());
    rig.topo.lb.run(|| {
        // Half send nothing, half trickle a request head a byte at a time.
        let mut slow: Vec<TcpStream> = (0..100)
            .map(|_| {
                TcpStream::connect_timeout(&LISTEN.parse().unwrap(), Duration::from_secs(2))
                    .expect("a slow client connects")
            })
            .collect();
        for (i, s) in slow.iter_mut().enumerate() {
            if i % 2 == 0 {
                s.write_all(b"GET /metr").expect("a first byte");
            }
        }
        let mut worst = Duration::ZERO;
        for round in 0..5 {
            for s in slow.iter_mut().step_by(2) {
                let _ = s.write_all(&[b"ics H"[round]]);
            }
            let t = Instant::now();
            let text = scrape();
            let took = t.elapsed();
            worst = worst.max(took);
            assert!(
                text.starts_with("HTTP/1.1 200"),
                "{}",
                &text[..80.min(text.len())]
            );
            assert!(
                text.contains("lb_vip_new_flows_total{vip=\"www\""),
                "{text}"
            );
            assert!(
                took < Duration::from_secs(1),
                "scrape {round} took {took:?} with 100 slow clients connected"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        println!("100 slow clients: slowest of 5 scrapes took {worst:?}");
    });
}

fn top_once(rig: &lb_tests::rig::Rig, json: bool) -> String {
    let mut args = vec!["top", "--once"];
    if json {
        args.push("--json");
    }
    let out = rig.lb.cli(&args);
    assert!(
        out.status.success(),
        "lb top --once: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn lb_top_once_shows_the_agents_view_busiest_first() {
    let rig = liveview::rig(testsrv());
    assert_eq!(liveview::drive(&rig, 30, Duration::from_millis(50)), 30);

    let st: Status =
        serde_json::from_str(&top_once(&rig, true)).expect("lb top --json is a Status");
    println!("rates over {}s", st.rate_window_s);
    assert_eq!(st.role, NodeRole::Standalone);
    for v in rig.lb.vips() {
        let name = v.name.as_str();
        let mine = st
            .vips
            .iter()
            .find(|x| x.name == name)
            .unwrap_or_else(|| panic!("{name} in lb top"));
        assert_eq!(mine.address, format!("{}:{}", v.address, v.port));
        assert_eq!(
            Some(mine.algorithm.as_str()),
            v.algorithm.map(Algorithm::name)
        );
        assert_eq!(mine.reals_up, v.reals_up);
        // Nothing moved between the two calls.
        assert_eq!(mine.new_flows, v.new_flows, "{name}");
    }
    let www = st.vips.iter().find(|v| v.name == "www").unwrap();
    let echo = st.vips.iter().find(|v| v.name == "echo").unwrap();
    assert!(st.rate_window_s > 0.5, "the agent has recorded counters");
    assert!(
        www.new_flows_per_s > 0.0,
        "www took 30 flows within 10 s: {www:?}"
    );
    assert_eq!(echo.new_flows_per_s, 0.0);
    for r in rig.lb.reals() {
        let addr = format!("{}:{}", r.address, r.port);
        let mine = st
            .reals
            .iter()
            .find(|x| x.address == addr)
            .unwrap_or_else(|| panic!("{addr} in lb top"));
        assert_eq!(mine.state, r.state, "{addr}");
        assert_eq!(mine.last_check, r.last_check, "{addr}");
    }
    let probed = st.reals.iter().find(|r| r.farm == "web").unwrap();
    assert!(
        probed.last_check_age_ms.is_some_and(|ms| ms < 2000),
        "a probe every 300 ms: {probed:?}"
    );

    let frame = top_once(&rig, false);
    println!("{frame}");
    let at = |needle: &str| {
        frame
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} in the frame:\n{frame}"))
    };
    // www carried the traffic: its row comes before echo's, and the web
    // reals before the echo real.
    assert!(at("198.51.100.10:80 ") < at("198.51.100.10:7 "), "{frame}");
    assert!(at("203.0.113.11:8080") < at("203.0.113.13:7000"), "{frame}");
    assert!(at("203.0.113.12:8080") < at("203.0.113.13:7000"), "{frame}");
    for line in frame.lines().filter(|l| l.starts_with("203.0.113.1")) {
        assert!(line.contains(" up "), "{line}");
    }
}

/// A tmux server of the test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(cols: u16, rows: u16, command: &str) -> Tmux {
        let t = Tmux {
            socket: format!("lbt-top-{}-{}", std::process::id(), rand_suffix()),
        };
        let out = t.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            command,
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        t
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux (Debian's, installed by scripts/setup.sh)")
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "top"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

#[test]
fn lb_top_under_tmux_redraws_a_real_going_down_and_quits_on_q() {
    let mut rig = liveview::rig(testsrv());
    let command = format!("{} top -c {}", lb_bin().display(), rig.lb.config.display());
    let tmux = Tmux::new(180, 40, &command);
    let row = |pane: &str, real: &str| -> Option<String> {
        pane.lines()
            .find(|l| l.starts_with(real))
            .map(str::to_owned)
    };
    let shown = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let p = tmux.pane();
        p.contains("198.51.100.10:80")
            && row(&p, "203.0.113.11:8080").is_some_and(|l| l.contains(" up "))
            && row(&p, "203.0.113.13:7000").is_some()
    });
    assert!(shown, "lb top's rows within 5 s:\n{}", tmux.pane());
    println!("{}", tmux.pane());

    // The real dies; the same lb top shows it down within its probes' fall
    // time plus a refresh.
    rig.servers[0].kill();
    let down = wait_until(Duration::from_secs(6), Duration::from_millis(100), || {
        row(&tmux.pane(), "203.0.113.11:8080").is_some_and(|l| l.contains(" down "))
    });
    assert!(
        down,
        "lb top shows 203.0.113.11:8080 down:\n{}",
        tmux.pane()
    );
    assert_eq!(
        liveview::real_state(&rig, "web", "203.0.113.11:8080"),
        Some(RealState::Down)
    );
    println!("{}", tmux.pane());
    rig.restart_server(0);

    // In a terminal shorter than the frame, the head stays on top: the
    // frame is cut, not scrolled.
    let resized = tmux.run(&["resize-window", "-t", "top", "-x", "120", "-y", "8"]);
    assert!(resized.status.success(), "tmux resize-window: {resized:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let small = tmux.pane();
    assert!(
        small
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("lb top")),
        "the frame's head in an 8-line pane:\n{small}"
    );

    assert!(tmux.run(&["send-keys", "-t", "top", "q"]).status.success());
    let quit = wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        !tmux.alive()
    });
    assert!(quit, "lb top did not quit on q:\n{}", tmux.pane());
}

/// `lb top --json --once` of one agent of a pair.
fn live_of(lb: &lb_tests::LbAgent) -> Status {
    lb.json(&["top", "--once"])
}

#[test]
fn each_node_of_a_pair_shows_its_failover_role_and_its_peer() {
    let pair = HaPair::new(false, std::path::Path::new(testsrv()));
    let check = |active: usize| {
        let standby = 1 - active;
        for (i, want, peer) in [
            (active, NodeRole::Active, NodeRole::Standby),
            (standby, NodeRole::Standby, NodeRole::Active),
        ] {
            let st = live_of(&pair.lbs[i]);
            assert_eq!(st.role, want, "node {}", i + 1);
            assert_eq!(ha_pair::role(&pair.lbs[i]), want, "lb ha status agrees");
            let ha = st.ha.as_ref().expect("the ha section with `ha:`");
            assert_eq!(ha.peer_role, Some(peer), "node {}: {ha:?}", i + 1);
            assert!(ha.peer_alive, "node {}: {ha:?}", i + 1);
            assert!(!st.vips.is_empty());
            for v in &st.vips {
                assert_eq!(v.role, want, "{} follows its node", v.name);
            }
            let out = pair.lbs[i].cli(&["top", "--once"]);
            let frame = String::from_utf8_lossy(&out.stdout);
            assert!(
                frame.contains(&format!("role {want}"))
                    && frame.contains(&format!("peer {peer} (alive)")),
                "{frame}"
            );
        }
    };
    check(0);
    // Node 1 hands the role over (once it has heard that its peer holds a
    // complete copy); both views follow.
    let mut refused = String::new();
    let released = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let out = pair.lbs[0].cli(&["ha", "release"]);
        refused = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success()
    });
    assert!(released, "lb ha release: {refused}");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            live_of(&pair.lbs[1]).role == NodeRole::Active
                && live_of(&pair.lbs[0]).role == NodeRole::Standby
                && live_of(&pair.lbs[0])
                    .ha
                    .is_some_and(|h| h.peer_role == Some(NodeRole::Active))
        }),
        "roles swapped after release"
    );
    check(1);
}
