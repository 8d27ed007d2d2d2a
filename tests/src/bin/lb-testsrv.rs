//! `lb-testsrv`: the real servers of the end-to-end tests.
//!
//! ```text
//! lb-testsrv --name r1 [--http ADDR:PORT]... [--udp ADDR:PORT]...
//!                      [--echo ADDR:PORT]... [--sink ADDR:PORT]...
//!                      [--source ADDR:PORT]...
//! ```
//! - http: HTTP/1.1, body `<name>\n`, keep-alive unless `Connection: close`;
//!   `/status/NNN` answers NNN (200-599), anything else (e.g. `/healthz`) 200.
//!   Responses carry `X-Served-By` and `X-Client-Addr` (the peer as seen
//!   here, to check that the lb preserves client addresses).
//! - udp: replies `<name>:<payload>` to each datagram.
//! - echo: TCP echo.
//! - sink: reads to EOF, answers `<count> <fnv1a64 hex>\n`, closes.
//! - source: reads `<count>\n`, sends `count` bytes of the pattern stream
//!   seeded with `data::SOURCE_SEED`, closes (a download of known content).
//!
//! Prints `listening <kind> <addr>` once per bound listener (tests wait for
//! it) and `conn <kind> <peer>` per accepted TCP connection. Plain std
//! threads, one per connection: the tests need correctness, not scale.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::exit,
    sync::Arc,
    thread,
};

use lb_tests::{Fnv1a64, PatternGen, data::SOURCE_SEED};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Http,
    Udp,
    Echo,
    Sink,
    Source,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Udp => "udp",
            Kind::Echo => "echo",
            Kind::Sink => "sink",
            Kind::Source => "source",
        }
    }
}

const USAGE: &str = "usage: lb-testsrv --name NAME [--http ADDR:PORT]... [--udp ADDR:PORT]... \
                     [--echo ADDR:PORT]... [--sink ADDR:PORT]... [--source ADDR:PORT]...";

fn usage(msg: &str) -> ! {
    eprintln!("lb-testsrv: {msg}\n{USAGE}");
    exit(2)
}

fn parse_args() -> (String, Vec<(Kind, SocketAddr)>) {
    let mut name = None;
    let mut listeners = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let kind = match flag.as_str() {
            "--name" => {
                name = Some(args.next().unwrap_or_else(|| usage("--name needs a value")));
                continue;
            }
            "--http" => Kind::Http,
            "--udp" => Kind::Udp,
            "--echo" => Kind::Echo,
            "--sink" => Kind::Sink,
            "--source" => Kind::Source,
            "-h" | "--help" => {
                println!("{USAGE}");
                exit(0)
            }
            other => usage(&format!("unknown argument {other:?}")),
        };
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs ADDR:PORT")));
        let addr = value
            .parse()
            .unwrap_or_else(|_| usage(&format!("{flag}: bad address {value:?}")));
        listeners.push((kind, addr));
    }
    let name = name.unwrap_or_else(|| usage("--name is required"));
    if listeners.is_empty() {
        usage("no listener given");
    }
    (name, listeners)
}

fn main() {
    let (name, listeners) = parse_args();
    let name: Arc<str> = name.into();
    let mut threads = Vec::new();
    for (kind, addr) in listeners {
        let name = Arc::clone(&name);
        // Bind on the main thread: a bind failure ends the process at once,
        // which the test sees instead of waiting for a `listening` line.
        let fail = |e: io::Error| -> ! {
            eprintln!("lb-testsrv: cannot bind {} {addr}: {e}", kind.label());
            exit(1)
        };
        if kind == Kind::Udp {
            let sock = UdpSocket::bind(addr).unwrap_or_else(|e| fail(e));
            announce(kind, sock.local_addr());
            threads.push(thread::spawn(move || serve_udp(&name, sock)));
        } else {
            let listener = TcpListener::bind(addr).unwrap_or_else(|e| fail(e));
            announce(kind, listener.local_addr());
            threads.push(thread::spawn(move || accept_loop(kind, name, listener)));
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

fn announce(kind: Kind, addr: io::Result<SocketAddr>) {
    match addr {
        // println! is line-buffered even into a file, so the test sees it now.
        Ok(a) => println!("listening {} {a}", kind.label()),
        Err(e) => eprintln!("lb-testsrv: local_addr: {e}"),
    }
}

fn accept_loop(kind: Kind, name: Arc<str>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                eprintln!("lb-testsrv: accept {}: {e}", kind.label());
                continue;
            }
        };
        println!("conn {} {peer}", kind.label());
        let name = Arc::clone(&name);
        let spawned = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = stream.set_nodelay(true);
                let r = match kind {
                    Kind::Http => serve_http(&name, stream, peer),
                    Kind::Echo => serve_echo(stream),
                    Kind::Sink => serve_sink(stream),
                    Kind::Source => serve_source(stream),
                    Kind::Udp => unreachable!("udp has no accept loop"),
                };
                if let Err(e) = r {
                    println!("error {} {peer}: {e}", kind.label());
                }
            });
        if let Err(e) = spawned {
            eprintln!("lb-testsrv: spawning a connection thread: {e}");
        }
    }
}

fn serve_udp(name: &str, sock: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    let prefix = format!("{name}:");
    loop {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("lb-testsrv: udp recv: {e}");
                continue;
            }
        };
        let mut reply = Vec::with_capacity(prefix.len() + n);
        reply.extend_from_slice(prefix.as_bytes());
        reply.extend_from_slice(&buf[..n]);
        if let Err(e) = sock.send_to(&reply, peer) {
            eprintln!("lb-testsrv: udp send to {peer}: {e}");
        }
    }
}

fn serve_echo(mut s: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return s.shutdown(Shutdown::Write);
        }
        s.write_all(&buf[..n])?;
    }
}

fn serve_sink(mut s: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut hash = Fnv1a64::new();
    let mut count = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        count += n as u64;
    }
    s.write_all(format!("{count} {:016x}\n", hash.finish()).as_bytes())?;
    s.shutdown(Shutdown::Write)
}

/// Largest download the source service agrees to send (the tests ask for
/// a few MB).
const MAX_SOURCE: u64 = 1 << 34;

fn serve_source(mut s: TcpStream) -> io::Result<()> {
    // The request is one short line; read it byte by byte so nothing after
    // it is consumed.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b)? == 0 {
            return Ok(());
        }
        if b[0] == b'\n' {
            break;
        }
        if line.len() >= 24 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request line too long",
            ));
        }
        line.push(b[0]);
    }
    let count: u64 = std::str::from_utf8(&line)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .filter(|&n| n <= MAX_SOURCE)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad byte count"))?;
    let mut pattern = PatternGen::new(SOURCE_SEED);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = count;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        pattern.fill(&mut buf[..n]);
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write)
}

/// Request heads larger than this are refused (the tests send tiny ones).
const MAX_HEAD: usize = 64 * 1024;

struct Request {
    path: String,
    keep_alive: bool,
    body_len: usize,
}

fn parse_request(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (_method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    let mut connection = String::new();
    let mut body_len = 0;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("connection") {
            connection = v.to_ascii_lowercase();
        } else if k.eq_ignore_ascii_case("content-length") {
            body_len = v.parse().ok()?;
        }
    }
    // HTTP/1.1 defaults to keep-alive, HTTP/1.0 to close.
    let keep_alive = if version == "HTTP/1.0" {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    Some(Request {
        path: path.to_string(),
        keep_alive,
        body_len,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn serve_http(name: &str, mut s: TcpStream, peer: SocketAddr) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Read one request head (a keep-alive client may pipeline more).
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Ok(()); // client closed between requests
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let Some(req) = parse_request(&head) else {
            s.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        };
        // Skip a request body; we never look at it.
        while buf.len() < head_end + req.body_len {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_end + req.body_len);

        let status = match req.path.strip_prefix("/status/") {
            Some(code) => match code.parse::<u16>() {
                Ok(c) if (200..=599).contains(&c) => c,
                _ => 400,
            },
            None => 200,
        };
        // 204 and 304 must not carry a body; real health checkers care.
        let body = if status == 204 || status == 304 {
            String::new()
        } else {
            format!("{name}\n")
        };
        let conn = if req.keep_alive {
            "keep-alive"
        } else {
            "close"
        };
        let resp = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: {conn}\r\nX-Served-By: {name}\r\nX-Client-Addr: {peer}\r\n\r\n{body}",
            reason(status),
            body.len()
        );
        s.write_all(resp.as_bytes())?;
        if !req.keep_alive {
            return s.shutdown(Shutdown::Write);
        }
    }
}
