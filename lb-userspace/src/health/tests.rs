//! The checker against listeners the tests open on 127.0.0.1, with tiny
//! intervals. Every wait is bounded; every test ends well under 2 s.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedReceiver, error::TryRecvError};
use tokio::task::JoinHandle;

use super::check;
use super::*;
use crate::config::{Expect, ProbeKind};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Longest wait for something that should happen within a few intervals.
const SOON: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn probe(kind: ProbeKind, interval_ms: u64) -> Probe {
    Probe {
        kind,
        path: "/healthz".to_owned(),
        expect: Expect::default(),
        interval: ms(interval_ms),
        fast_interval: None,
        down_interval: None,
        timeout: ms(200),
        rise: 2,
        fall: 3,
        port: None,
        host: None,
        body: None,
        method: "GET".to_owned(),
    }
}

fn target(id: u32, port: u16, probes: Vec<(&str, Probe)>, init_up: bool) -> Target {
    Target {
        id,
        name: format!("web/127.0.0.1:{port}"),
        addr: LOCALHOST,
        port,
        probes: probes.into_iter().map(|(n, p)| (n.to_owned(), p)).collect(),
        init_up,
    }
}

fn checker() -> (Checker, UnboundedReceiver<Transition>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Checker::new(tx), rx)
}

async fn next(rx: &mut UnboundedReceiver<Transition>) -> Transition {
    tokio::time::timeout(SOON, rx.recv())
        .await
        .expect("no transition within 1s")
        .expect("transition channel closed")
}

/// The next `n` transitions, by id.
async fn next_n(rx: &mut UnboundedReceiver<Transition>, n: usize) -> Vec<Transition> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(next(rx).await);
    }
    all.sort_by_key(|t| t.id);
    all
}

async fn quiet(rx: &mut UnboundedReceiver<Transition>, for_: Duration) {
    if let Ok(t) = tokio::time::timeout(for_, rx.recv()).await {
        panic!("expected no transition, got {t:?}");
    }
}

/// Polls `cond` every 5 ms for at most 1 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < SOON, "timed out waiting until {what}");
        tokio::time::sleep(ms(5)).await;
    }
}

fn checks(c: &Checker, id: u32) -> u64 {
    c.status(id).expect("target is known").checks
}

/// An HTTP server on 127.0.0.1 answering with `status` (or the next
/// scripted one) and `body`; remembers when each request came and what it
/// said.
struct Http {
    port: u16,
    status: Arc<AtomicU16>,
    body: Arc<Mutex<String>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    hits: Arc<Mutex<Vec<Instant>>>,
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Http {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Http {
    async fn start(status: u16, body: &str) -> Http {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(status));
        let body = Arc::new(Mutex::new(body.to_owned()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (st, bo, sc, hi, rq) = (
            Arc::clone(&status),
            Arc::clone(&body),
            Arc::clone(&script),
            Arc::clone(&hits),
            Arc::clone(&requests),
        );
        let task = tokio::spawn(async move {
            for _ in 0..10_000 {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let (st, bo, sc, hi, rq) = (
                    Arc::clone(&st),
                    Arc::clone(&bo),
                    Arc::clone(&sc),
                    Arc::clone(&hi),
                    Arc::clone(&rq),
                );
                tokio::spawn(async move {
                    let head = read_head(&mut s).await;
                    hi.lock().unwrap().push(Instant::now());
                    rq.lock().unwrap().push(head);
                    let code = sc
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or_else(|| st.load(Ordering::SeqCst));
                    let body = bo.lock().unwrap().clone();
                    let reply = format!(
                        "HTTP/1.1 {code} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(reply.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Http {
            port,
            status,
            body,
            script,
            hits,
            requests,
            task,
        }
    }

    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn hits(&self) -> Vec<Instant> {
        self.hits.lock().unwrap().clone()
    }
}

/// Reads a request head: at most 8 KiB, within 1 s.
async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let _ = tokio::time::timeout(SOON, async {
        while !buf.ends_with(b"\r\n\r\n") && buf.len() < 8192 {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// A server that reads the request, writes `reply` and closes.
async fn raw_server(reply: &'static [u8]) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        for _ in 0..10_000 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                read_head(&mut s).await;
                let _ = s.write_all(reply).await;
            });
        }
    });
    (port, task)
}

/// A server that accepts and never answers (holds up to 1000 connections).
async fn silent_server() -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..1000 {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            held.push(s);
        }
    });
    (port, task)
}

/// A port nothing listens on: bound, then released.
fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn first_success_brings_an_initial_down_target_up() {
    let srv = Http::start(200, "").await;
    let (mut c, mut rx) = checker();
    let mut p = probe(ProbeKind::Http, 20);
    p.rise = 3;
    c.set_targets(vec![target(1, srv.port, vec![("web-http", p)], false)]);
    assert_eq!(c.is_up(1), Some(false));
    let s = c.status(1).unwrap();
    assert_eq!(
        (s.up, s.checks, s.last_check.as_str(), s.last_latency_ms),
        (false, 0, "not checked yet", None)
    );

    let t = next(&mut rx).await;
    assert_eq!(
        (t.id, t.up, t.reason.as_str()),
        (1, true, "http 200 (first check)"),
        "no rise needed for the first check"
    );
    assert_eq!(
        t.to_string(),
        format!("web/127.0.0.1:{} up: http 200 (first check)", srv.port)
    );
    assert_eq!(c.is_up(1), Some(true));
    let s = c.status(1).unwrap();
    assert!(s.up && s.checks >= 1, "{s:?}");
    assert!(
        s.last_check.starts_with("http 200 in ") && s.last_check.ends_with("ms"),
        "{s:?}"
    );
    assert!(s.last_latency_ms.is_some_and(|l| l >= 0.0), "{s:?}");
    assert_eq!(
        srv.requests.lock().unwrap()[0],
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nUser-Agent: lb-health\r\n\r\n"
    );
}

#[tokio::test]
async fn fall_takes_it_down_and_rise_brings_it_back() {
    let srv = Http::start(200, "").await;
    let (mut c, mut rx) = checker();
    c.set_targets(vec![target(
        1,
        srv.port,
        vec![("web-http", probe(ProbeKind::Http, 15))],
        true,
    )]);
    assert_eq!(c.is_up(1), Some(true));
    wait_until("two checks", || checks(&c, 1) >= 2).await;
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);

    srv.set(503);
    let t = next(&mut rx).await;
    assert_eq!(
        (t.id, t.up, t.reason.as_str()),
        (1, false, "http 503 (3/3)")
    );
    assert_eq!(
        t.to_string(),
        format!("web/127.0.0.1:{} down: http 503 (3/3)", srv.port)
    );
    let s = c.status(1).unwrap();
    assert!(!s.up && s.last_check.starts_with("http 503 in "), "{s:?}");

    srv.set(200);
    let t = next(&mut rx).await;
    assert_eq!(
        (t.id, t.up, t.reason.as_str()),
        (1, true, "http 200 (2/2)"),
        "after having been up, rise applies"
    );
    assert_eq!(c.is_up(1), Some(true));
}

#[tokio::test]
async fn a_single_failure_among_successes_does_not_take_it_down() {
    let srv = Http::start(200, "").await;
    let (mut c, mut rx) = checker();
    let mut p = probe(ProbeKind::Http, 10);
    p.fall = 2;
    c.set_targets(vec![target(1, srv.port, vec![("web-http", p)], true)]);
    wait_until("a check", || checks(&c, 1) >= 1).await;
    let before = checks(&c, 1);
    srv.script
        .lock()
        .unwrap()
        .extend([503, 200, 503, 200, 503, 200]);
    wait_until("the script is played", || {
        srv.script.lock().unwrap().is_empty()
    })
    .await;
    wait_until("the last scripted answer is recorded", || {
        checks(&c, 1) >= before + 6
    })
    .await;
    quiet(&mut rx, ms(50)).await;
    assert_eq!(c.is_up(1), Some(true));
}

#[tokio::test]
async fn tcp_connect_and_refusal() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let live = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        for _ in 0..10_000 {
            if listener.accept().await.is_err() {
                return;
            }
        }
    });
    let dead = refused_port();
    let (mut c, mut rx) = checker();
    let mut p = probe(ProbeKind::Tcp, 15);
    p.fall = 2;
    c.set_targets(vec![
        target(1, live, vec![("tcp", p.clone())], false),
        target(2, dead, vec![("tcp", p)], true),
    ]);
    let ts = next_n(&mut rx, 2).await;
    assert_eq!(
        (ts[0].id, ts[0].up, ts[0].reason.as_str()),
        (1, true, "tcp ok (first check)")
    );
    assert_eq!(
        (ts[1].id, ts[1].up, ts[1].reason.as_str()),
        (2, false, "tcp connect refused (2/2)")
    );
    let s = c.status(2).unwrap();
    assert_eq!(
        (s.last_check.as_str(), s.last_latency_ms),
        ("tcp connect refused", None)
    );
    assert!(c.status(1).unwrap().last_check.starts_with("tcp ok in "));
    accept.abort();
}

#[tokio::test]
async fn http_timeout() {
    let (port, task) = silent_server().await;
    let (mut c, mut rx) = checker();
    let mut p = probe(ProbeKind::Http, 30);
    p.timeout = ms(50);
    p.fall = 1;
    c.set_targets(vec![target(1, port, vec![("web-http", p)], true)]);
    let t = next(&mut rx).await;
    assert_eq!(
        (t.id, t.up, t.reason.as_str()),
        (1, false, "http timeout 50ms (1/1)")
    );
    let s = c.status(1).unwrap();
    assert_eq!(
        (s.last_check.as_str(), s.last_latency_ms),
        ("http timeout 50ms", None)
    );
    task.abort();
}

#[tokio::test]
async fn http_refused_and_bad_response() {
    let (port, task) = raw_server(b"SSH-2.0-OpenSSH_9.6\r\n").await;
    let dead = refused_port();
    let (mut c, mut rx) = checker();
    let mut p = probe(ProbeKind::Http, 15);
    p.fall = 1;
    c.set_targets(vec![
        target(1, port, vec![("web-http", p.clone())], true),
        target(2, dead, vec![("web-http", p)], true),
    ]);
    let ts = next_n(&mut rx, 2).await;
    assert_eq!(ts[0].reason, "http bad response (1/1)");
    assert_eq!(ts[1].reason, "http connect refused (1/1)");
    task.abort();
}

#[tokio::test]
async fn body_substring_match_and_mismatch() {
    let srv = Http::start(200, "status: all healthy\n").await;
    // No Content-Length: the body ends with the stream.
    let (raw, task) =
        raw_server(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n<html>ready to serve</html>").await;
    let (mut c, mut rx) = checker();
    let with_body = |text: &str| {
        let mut p = probe(ProbeKind::Http, 15);
        p.body = Some(text.to_owned());
        p
    };
    c.set_targets(vec![
        target(1, srv.port, vec![("p", with_body("all healthy"))], false),
        target(2, srv.port, vec![("p", with_body("sick"))], false),
        target(3, raw, vec![("p", with_body("ready to serve"))], false),
    ]);
    let ts = next_n(&mut rx, 2).await;
    assert_eq!(
        (ts[0].id, ts[0].reason.as_str()),
        (1, "http 200 (first check)")
    );
    assert_eq!(
        (ts[1].id, ts[1].reason.as_str()),
        (3, "http 200 (first check)")
    );
    wait_until("target 2 is checked", || checks(&c, 2) >= 1).await;
    quiet(&mut rx, ms(60)).await;
    let s = c.status(2).unwrap();
    assert!(
        !s.up && s.last_check.starts_with("http body mismatch in "),
        "{s:?}"
    );

    // The same status with another page is a failure.
    *srv.body.lock().unwrap() = "status: degraded\n".to_owned();
    let t = next(&mut rx).await;
    assert_eq!(
        (t.id, t.up, t.reason.as_str()),
        (1, false, "http body mismatch (3/3)")
    );
    task.abort();
}

#[tokio::test]
async fn expect_range() {
    let no_content = Http::start(204, "").await;
    let redirect = Http::start(302, "").await;
    let unavailable = Http::start(503, "").await;
    let (mut c, mut rx) = checker();
    let expecting = |lo, hi| {
        let mut p = probe(ProbeKind::Http, 15);
        p.expect = Expect { lo, hi };
        p
    };
    c.set_targets(vec![
        target(1, no_content.port, vec![("p", expecting(200, 204))], false),
        target(2, redirect.port, vec![("p", expecting(200, 299))], false),
        target(3, unavailable.port, vec![("p", expecting(503, 503))], false),
    ]);
    let ts = next_n(&mut rx, 2).await;
    assert_eq!(
        (ts[0].id, ts[0].reason.as_str()),
        (1, "http 204 (first check)")
    );
    assert_eq!(
        (ts[1].id, ts[1].reason.as_str()),
        (3, "http 503 (first check)")
    );
    wait_until("target 2 is checked", || checks(&c, 2) >= 2).await;
    quiet(&mut rx, ms(50)).await;
    let s = c.status(2).unwrap();
    assert!(!s.up && s.last_check.starts_with("http 302 in "), "{s:?}");
}

#[tokio::test]
async fn probes_are_anded() {
    let a = Http::start(200, "").await;
    let b = Http::start(503, "").await;
    let (mut c, mut rx) = checker();
    let mut on_b = probe(ProbeKind::Http, 15);
    on_b.port = Some(b.port);
    c.set_targets(vec![target(
        1,
        a.port,
        vec![("a", probe(ProbeKind::Http, 15)), ("b", on_b)],
        false,
    )]);
    wait_until("both probes ran twice", || {
        a.hits().len() >= 2 && b.hits().len() >= 2
    })
    .await;
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    let s = c.status(1).unwrap();
    assert!(
        !s.up && s.last_check.starts_with("b: http 503 in "),
        "a down real shows its failing probe: {s:?}"
    );

    b.set(200);
    let t = next(&mut rx).await;
    assert_eq!((t.up, t.reason.as_str()), (true, "http 200 (first check)"));

    a.set(503);
    let t = next(&mut rx).await;
    assert_eq!((t.up, t.reason.as_str()), (false, "http 503 (3/3)"));
    let s = c.status(1).unwrap();
    assert!(s.last_check.starts_with("a: http 503 in "), "{s:?}");
}

#[tokio::test]
async fn set_targets_keeps_starts_and_stops() {
    let a = Http::start(200, "").await;
    let b = Http::start(200, "").await;
    let cc = Http::start(200, "").await;
    let (mut c, mut rx) = checker();
    let web = |id, port| target(id, port, vec![("p", probe(ProbeKind::Http, 15))], false);
    c.set_targets(vec![web(1, a.port), web(2, b.port)]);
    let ts = next_n(&mut rx, 2).await;
    assert!(ts.iter().all(|t| t.up), "{ts:?}");
    let before = checks(&c, 1);

    let mut renamed = web(1, a.port);
    renamed.name = "web2/127.0.0.1".to_owned();
    c.set_targets(vec![renamed, web(3, cc.port)]);
    assert_eq!(c.is_up(1), Some(true), "unchanged target keeps its state");
    assert!(checks(&c, 1) >= before, "and its counters");
    assert_eq!((c.is_up(2), c.status(2).is_none()), (None, true));
    assert_eq!(
        c.is_up(3),
        Some(false),
        "new target starts in its init state"
    );

    let t = next(&mut rx).await;
    assert_eq!(
        (t.id, t.up, t.reason.as_str()),
        (3, true, "http 200 (first check)")
    );

    // Let a request already sent to b land, then b must hear nothing more.
    tokio::time::sleep(ms(30)).await;
    let b_hits = b.hits().len();
    b.set(503);
    a.set(200);
    quiet(&mut rx, ms(200)).await;
    assert_eq!(b.hits().len(), b_hits, "removed target is no longer probed");
    assert!(checks(&c, 1) > before, "kept target is still probed");
    assert!(c.status(1).unwrap().since_ms >= 200);
}

#[tokio::test]
async fn changed_probes_keep_the_state_and_restart_the_probes() {
    let srv = Http::start(200, "").await;
    let (mut c, mut rx) = checker();
    c.set_targets(vec![target(
        1,
        srv.port,
        vec![("p", probe(ProbeKind::Http, 15))],
        false,
    )]);
    next(&mut rx).await;
    let mut other = probe(ProbeKind::Http, 15);
    other.path = "/other".to_owned();
    c.set_targets(vec![target(1, srv.port, vec![("p", other)], false)]);
    assert_eq!(c.is_up(1), Some(true));
    wait_until("the new probe runs", || {
        srv.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with("GET /other "))
    })
    .await;
    quiet(&mut rx, ms(50)).await;
    assert_eq!(c.is_up(1), Some(true));
}

#[tokio::test]
async fn hold_down_forces_down_and_holds_despite_successes() {
    let srv = Http::start(200, "").await;
    let (mut c, mut rx) = checker();
    c.set_targets(vec![
        target(1, srv.port, vec![("p", probe(ProbeKind::Http, 15))], true),
        // No probes: up whatever init_up says.
        target(2, 9, vec![], false),
    ]);
    assert_eq!(c.is_up(2), Some(true));
    assert_eq!(c.status(2).unwrap().last_check, "no probes");
    wait_until("a check", || checks(&c, 1) >= 1).await;

    c.hold_down(7, ms(10), "unknown ids are ignored".to_owned());
    let held_at = Instant::now();
    c.hold_down(1, ms(300), "passive health (3 errors)".to_owned());
    let t = rx.try_recv().expect("the hold is a transition, at once");
    assert_eq!(
        (t.id, t.up, t.reason.as_str()),
        (1, false, "passive health (3 errors)")
    );
    let s = c.status(1).unwrap();
    assert_eq!(
        (s.up, s.last_check.as_str()),
        (false, "held down by passive health (3 errors)")
    );
    c.hold_down(2, ms(100), "passive health (5 errors)".to_owned());
    let t = rx.try_recv().expect("the hold is a transition, at once");
    assert_eq!((t.id, t.up), (2, false));

    let during = checks(&c, 1);
    let t = next(&mut rx).await;
    assert_eq!(
        (t.id, t.up, t.reason.as_str()),
        (2, true, "hold of 100ms over (no probes)")
    );
    assert!(held_at.elapsed() >= ms(100));
    let t = next(&mut rx).await;
    let back = held_at.elapsed();
    assert_eq!(
        (t.id, t.up, t.reason.as_str()),
        (1, true, "http 200 (2/2)"),
        "after the hold, rise applies"
    );
    assert!(back >= ms(300), "up after {back:?}, before the hold ended");
    assert!(back < ms(600), "up only after {back:?}");
    assert!(checks(&c, 1) >= during + 2, "probes ran during the hold");
}

#[tokio::test]
async fn fast_interval_while_changing_state_and_down_interval_while_down() {
    let srv = Http::start(200, "").await;
    let (mut c, mut rx) = checker();
    let mut p = probe(ProbeKind::Http, 150);
    p.fast_interval = Some(ms(15));
    p.down_interval = Some(ms(300));
    c.set_targets(vec![target(1, srv.port, vec![("p", p)], true)]);
    wait_until("two checks", || srv.hits().len() >= 2).await;
    let hits = srv.hits();
    let stable = hits[1] - hits[0];
    assert!(stable >= ms(120), "stable gap {stable:?}, want ~150ms");

    let flipped = Instant::now();
    srv.set(503);
    let t = next(&mut rx).await;
    assert_eq!(t.reason, "http 503 (3/3)");
    let failing: Vec<Instant> = srv.hits().into_iter().filter(|h| *h > flipped).collect();
    assert_eq!(failing.len(), 3, "{failing:?}");
    for gap in [failing[1] - failing[0], failing[2] - failing[1]] {
        assert!(gap < ms(80), "gap {gap:?} while changing, want ~15ms");
    }

    wait_until("a check while down", || {
        srv.hits().iter().filter(|h| **h > flipped).count() >= 4
    })
    .await;
    let down: Vec<Instant> = srv.hits().into_iter().filter(|h| *h > flipped).collect();
    let gap = down[3] - down[2];
    assert!(gap >= ms(240), "gap {gap:?} while down, want ~300ms");
}

#[test]
fn request_and_response_parsing() {
    let mut p = probe(ProbeKind::Http, 1000);
    assert_eq!(
        check::request(&p, IpAddr::V6(Ipv6Addr::LOCALHOST)),
        "GET /healthz HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\nUser-Agent: lb-health\r\n\r\n"
    );
    p.method = "HEAD".to_owned();
    p.host = Some("www.example.com".to_owned());
    p.path = "/ping?x=1".to_owned();
    assert_eq!(
        check::request(&p, LOCALHOST),
        "HEAD /ping?x=1 HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\nUser-Agent: lb-health\r\n\r\n"
    );

    let parse = |raw: &[u8]| {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        check::parse(raw, end)
    };
    let r = parse(b"HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\nbody");
    assert_eq!((r.status, r.body.as_slice()), (Some(503), &b"body"[..]));
    assert_eq!(parse(b"HTTP/1.0 200 OK\r\n").status, Some(200));
    assert_eq!(parse(b"HTTP/1.1 204\r\n\r\n").status, Some(204));
    for bad in [
        &b""[..],
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 099 OK\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n",
        b"HTTP/1.1 200",
    ] {
        assert_eq!(
            parse(bad).status,
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn jitter_stays_within_ten_percent_and_varies() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let d = jitter(ms(100));
        assert!(d >= ms(90) && d <= ms(110), "{d:?}");
        seen.insert(d);
        let u = random_unit();
        assert!((0.0..1.0).contains(&u), "{u}");
    }
    assert!(seen.len() > 900, "only {} distinct waits", seen.len());
}
