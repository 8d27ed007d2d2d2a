use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::{
    api::live::{Status, VipStatus},
    metrics::{
        render,
        tests::{parse, sample},
    },
};

/// How the test agent answers.
enum Agent {
    Answers(Box<Snapshot>),
    /// Takes the request and drops it unanswered.
    DropsRequests,
    /// Its receiving end is gone (the agent is stopping).
    Gone,
}

fn status() -> Status {
    Status {
        role: crate::api::NodeRole::Standalone,
        vips: vec![VipStatus {
            name: "www".into(),
            address: "198.51.100.10:80".into(),
            ..VipStatus::default()
        }],
        ..Status::default()
    }
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
                let (tx, mut rx) = mpsc::channel::<Ask>(4);
                let server = serve_on(listener, tx).expect("serve_on");
                if let Agent::Gone = agent {
                    drop(rx);
                    let _ = stopped.await;
                } else {
                    loop {
                        tokio::select! {
                            Some(ask) = rx.recv() => {
                                if let Agent::Answers(s) = &agent {
                                    match ask {
                                        Ask::Metrics(reply) => { let _ = reply.send((**s).clone()); }
                                        Ask::Status(reply) => { let _ = reply.send(status()); }
                                    }
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

/// One raw request over a std TcpStream, read to the server's close.
fn http(addr: SocketAddr, request: &str) -> HttpReply {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
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

/// A request that asks the server to close after answering.
fn request(method: &str, path: &str, addr: SocketAddr) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\nConnection: close\r\n\r\n"
    )
}

#[test]
fn serves_metrics_status_and_page_and_404_elsewhere() {
    let server = TestServer::start(Agent::Answers(Box::new(sample())));
    let addr = server.addr;

    let ok = http(addr, &request("GET", "/metrics", addr));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.headers["content-type"], metrics::CONTENT_TYPE);
    assert_eq!(ok.headers["content-length"], ok.body.len().to_string());
    assert_eq!(ok.body, render(&sample()));
    parse(&ok.body);

    let query = http(addr, &request("GET", "/metrics?x=1", addr));
    assert_eq!(query.status, 200);

    let head = http(addr, &request("HEAD", "/metrics", addr));
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], ok.body.len().to_string());
    assert!(head.body.is_empty(), "HEAD has no body: {:?}", head.body);

    let api = http(addr, &request("GET", "/api/status", addr));
    assert_eq!(api.status, 200, "{}", api.body);
    assert_eq!(api.headers["content-type"], "application/json");
    let back: Status = serde_json::from_str(&api.body).expect("/api/status is a Status");
    assert_eq!(back, status());

    let page = http(addr, &request("GET", "/", addr));
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert!(page.body.contains("/api/status"), "the page polls the API");
    assert!(
        page.body
            .contains(r#"<tr data-vip="www"><td>198.51.100.10:80</td>"#),
        "the first frame is in the page: {}",
        page.body
    );
    // Self-contained: nothing is loaded from anywhere else.
    for external in ["src=", "://", "@import", "url("] {
        assert!(!page.body.contains(external), "the page loads {external}");
    }

    for path in ["/other", "/metrics/x", "/api"] {
        let missing = http(addr, &request("GET", path, addr));
        assert_eq!(missing.status, 404, "GET {path}");
    }

    let post = http(addr, &request("POST", "/metrics", addr));
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");

    let garbage = http(addr, "hello\r\n\r\n");
    assert_eq!(garbage.status, 400);

    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(MAX_REQUEST_HEAD + 1)
    );
    assert_eq!(http(addr, &huge).status, 431);
}

#[test]
fn answers_are_503_when_the_agent_does_not_answer() {
    for agent in [Agent::DropsRequests, Agent::Gone] {
        let server = TestServer::start(agent);
        for path in ["/metrics", "/api/status", "/"] {
            let reply = http(server.addr, &request("GET", path, server.addr));
            assert_eq!(reply.status, 503, "{path}: {}", reply.body);
            assert!(reply.body.contains("agent"), "{}", reply.body);
        }
    }
}

/// 100 clients hold connections open, half sending nothing, half
/// trickling a request head a byte at a time; a scrape still answers within
/// a second, and all of them are cut off after [`HEAD_TIMEOUT`].
#[test]
fn slow_clients_do_not_starve_a_scrape() {
    let server = TestServer::start(Agent::Answers(Box::new(sample())));
    let addr = server.addr;
    let mut idle = Vec::new();
    let mut trickling = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        if i % 2 == 0 {
            s.write_all(b"GET /metr").expect("a first byte");
            trickling.push(s);
        } else {
            idle.push(s);
        }
    }
    let started = Instant::now();
    // Keep trickling while scraping: one more byte from each every 200 ms.
    for round in 0..5 {
        for s in &mut trickling {
            let _ = s.write_all(&[b"ics H"[round]]);
        }
        let t = Instant::now();
        let reply = http(addr, &request("GET", "/metrics", addr));
        let took = t.elapsed();
        assert_eq!(reply.status, 200);
        assert!(
            took < Duration::from_secs(1),
            "scrape {round} took {took:?} with 100 slow clients connected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // After HEAD_TIMEOUT the trickling and the silent ones are closed: a
    // read sees EOF (or a reset), not a hang.
    std::thread::sleep(
        (HEAD_TIMEOUT + Duration::from_millis(500)).saturating_sub(started.elapsed()),
    );
    for s in trickling.iter_mut().chain(&mut idle) {
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("read timeout");
        // The server closed: whatever it sent, then EOF.
        match s.read_to_end(&mut Vec::new()) {
            Ok(_) => {}
            Err(e) => assert!(
                e.kind() == std::io::ErrorKind::ConnectionReset,
                "a slow client was not cut off after {HEAD_TIMEOUT:?}: {e}"
            ),
        }
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
