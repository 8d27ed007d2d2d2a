//! One check, over the network: a TCP connect or an HTTP exchange, bounded
//! by the probe's `timeout` as a whole.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Outcome;
use crate::config::{Probe, ProbeKind, format_duration};

/// Most of a response head read before calling it bad.
const MAX_HEAD: usize = 16 * 1024;
/// Most of a body searched for `body:`.
const MAX_BODY: usize = 64 * 1024;

pub(super) async fn run(addr: IpAddr, port: u16, probe: &Probe) -> Outcome {
    let start = Instant::now();
    let to = SocketAddr::new(addr, port);
    match probe.kind {
        ProbeKind::Tcp => tcp(to, probe.timeout, start).await,
        ProbeKind::Http => http(to, probe, start).await,
    }
}

fn ok(text: String, start: Instant) -> Outcome {
    Outcome {
        ok: true,
        text,
        latency: Some(start.elapsed()),
    }
}

/// A failure after the real answered.
fn answered_fail(text: String, start: Instant) -> Outcome {
    Outcome {
        ok: false,
        text,
        latency: Some(start.elapsed()),
    }
}

/// A failure without an answer (refused, timeout, I/O error).
fn silent_fail(text: String) -> Outcome {
    Outcome {
        ok: false,
        text,
        latency: None,
    }
}

fn io_text(kind: &str, err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => format!("{kind} connect refused"),
        _ => format!("{kind} {err}"),
    }
}

fn timeout_text(kind: &str, timeout: Duration) -> String {
    format!("{kind} timeout {}", format_duration(timeout))
}

async fn tcp(to: SocketAddr, timeout: Duration, start: Instant) -> Outcome {
    match tokio::time::timeout(timeout, TcpStream::connect(to)).await {
        // Dropping the stream closes it.
        Ok(Ok(_stream)) => ok("tcp ok".to_owned(), start),
        Ok(Err(err)) => silent_fail(io_text("tcp", &err)),
        Err(_) => silent_fail(timeout_text("tcp", timeout)),
    }
}

/// The request line and headers the probe sends.
pub(super) fn request(probe: &Probe, addr: IpAddr) -> String {
    let host = match (&probe.host, addr) {
        (Some(host), _) => host.clone(),
        (None, IpAddr::V4(a)) => a.to_string(),
        (None, IpAddr::V6(a)) => format!("[{a}]"),
    };
    format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: lb-health\r\n\r\n",
        probe.method, probe.path
    )
}

async fn http(to: SocketAddr, probe: &Probe, start: Instant) -> Outcome {
    let exchange = exchange(to, request(probe, to.ip()), probe.body.as_deref());
    let response = match tokio::time::timeout(probe.timeout, exchange).await {
        Err(_) => return silent_fail(timeout_text("http", probe.timeout)),
        Ok(Err(err)) => return silent_fail(io_text("http", &err)),
        Ok(Ok(response)) => response,
    };
    let Some(status) = response.status else {
        return answered_fail("http bad response".to_owned(), start);
    };
    let text = format!("http {status}");
    if !(probe.expect.lo..=probe.expect.hi).contains(&status) {
        return answered_fail(text, start);
    }
    if let Some(needle) = &probe.body
        && !contains(&response.body, needle.as_bytes())
    {
        return answered_fail("http body mismatch".to_owned(), start);
    }
    ok(text, start)
}

#[derive(Debug, PartialEq)]
pub(super) struct Response {
    /// `None`: not an HTTP response.
    pub status: Option<u16>,
    /// What was read of the body (raw: a chunked body keeps its chunk
    /// sizes, so a `body:` text split across chunks is not found; health
    /// pages are small enough for one chunk).
    pub body: Vec<u8>,
}

/// Sends `request` and reads the head, and the body when `needle` is set
/// (up to [`MAX_BODY`], `Content-Length`, the end of the stream, or as soon
/// as `needle` is seen).
async fn exchange(to: SocketAddr, request: String, needle: Option<&str>) -> io::Result<Response> {
    let mut stream = TcpStream::connect(to).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    // Bounded: every round adds at least one byte, and stops past
    // MAX_HEAD + MAX_BODY.
    loop {
        let n = stream.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        let head_end = find(&buf, b"\r\n\r\n").map(|i| i + 4);
        let done = match head_end {
            None => n == 0 || buf.len() > MAX_HEAD,
            Some(_) if n == 0 => true,
            Some(end) => match needle {
                None => true,
                Some(needle) => {
                    let body = &buf[end..];
                    let length = content_length(&buf[..end]).unwrap_or(usize::MAX);
                    body.len() >= length.min(MAX_BODY) || contains(body, needle.as_bytes())
                }
            },
        };
        if done {
            return Ok(parse(&buf, head_end));
        }
    }
}

/// The status and body of what was read; a complete status line alone is
/// enough when the stream ended before the head did.
pub(super) fn parse(buf: &[u8], head_end: Option<usize>) -> Response {
    let body = head_end
        .map(|end| buf[end..buf.len().min(end + MAX_BODY)].to_vec())
        .unwrap_or_default();
    Response {
        status: find(buf, b"\r\n").and_then(|end| status(&buf[..end])),
        body,
    }
}

/// `HTTP/1.1 200 OK` -> 200.
fn status(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix("HTTP/1.")?;
    let mut parts = rest.splitn(3, ' ');
    let _minor = parts.next().filter(|v| v.len() == 1)?;
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok().filter(|c| (100..=599).contains(c))
}

fn content_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("content-length") {
            value.trim().parse().ok()
        } else {
            None
        }
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}
