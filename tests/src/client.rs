//! Clients for the `lb-testsrv` services. Call them inside `Netns::run` so
//! their sockets live in the client namespace. Every call is bounded by its
//! `timeout` (a deadline for the whole exchange, not per syscall).

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use crate::data::{Fnv1a64, PatternGen, SOURCE_SEED};

/// Largest HTTP response we accept; the test server's are tiny.
const MAX_RESPONSE: usize = 1 << 20;

/// Time left until `deadline`, or `TimedOut`. Never zero, because a zero
/// socket timeout is an error (not "no wait").
fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
    } else {
        Ok(left)
    }
}

fn connect(addr: SocketAddr, deadline: Instant) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, remaining(deadline)?)?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A blocking connect from `local` (port 0: chosen by the kernel); std
/// cannot bind before connecting, so the socket is made with libc.
/// `reuse_addr` sets SO_REUSEADDR before the bind, so a fixed port can be
/// bound again while an old connection on it is still in the tables.
fn connect_bound(
    local: SocketAddrV4,
    reuse_addr: bool,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(dst) = addr else {
        return Err(io::Error::other("IPv4 only"));
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: plain socket calls on a fresh fd that TcpStream then owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as i64,
            tv_usec: timeout.subsec_micros() as i64,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        );
        if reuse_addr {
            let one: libc::c_int = 1;
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let src = sin(*local.ip(), local.port());
        if libc::bind(
            fd,
            (&src as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let to = sin(*dst.ip(), dst.port());
        if libc::connect(
            fd,
            (&to as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Reads into `buf` until `done(buf)` says how many bytes form a complete
/// message, EOF, or the deadline.
fn read_until(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    done: impl Fn(&[u8]) -> Option<usize>,
) -> io::Result<Option<usize>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(n) = done(buf) {
            return Ok(Some(n));
        }
        if buf.len() > MAX_RESPONSE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response too large",
            ));
        }
        s.set_read_timeout(Some(remaining(deadline)?))?;
        match s.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Parsed HTTP response head: status, header length, Content-Length.
fn parse_head(buf: &[u8]) -> Option<io::Result<(u16, usize, Option<usize>)>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]);
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{m}: {head:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').nth(1).map(str::parse::<u16>) {
        Some(Ok(s)) if status_line.starts_with("HTTP/1.") => s,
        _ => return Some(Err(bad("bad status line"))),
    };
    let mut len = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            match v.trim().parse() {
                Ok(n) => len = Some(n),
                Err(_) => return Some(Err(bad("bad Content-Length"))),
            }
        }
    }
    Some(Ok((status, end, len)))
}

/// Reads one response from `s`; `buf` keeps bytes beyond it (keep-alive).
fn read_response(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<(u16, String)> {
    let head = read_until(s, buf, deadline, |b| parse_head(b).map(|_| 0))?;
    if head.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "connection closed before a response head ({} bytes)",
                buf.len()
            ),
        ));
    }
    let (status, head_len, content_len) = parse_head(buf).expect("head was complete")?;
    let total = match content_len {
        Some(n) => {
            let want = head_len + n;
            if read_until(s, buf, deadline, |b| (b.len() >= want).then_some(want))?.is_none() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
            }
            want
        }
        // No length: the body runs to EOF.
        None => {
            read_until(s, buf, deadline, |_| None)?;
            buf.len()
        }
    };
    let body = String::from_utf8_lossy(&buf[head_len..total]).into_owned();
    buf.drain(..total);
    Ok((status, body))
}

fn request(addr: SocketAddr, path: &str, keep_alive: bool) -> String {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: {conn}\r\n\r\n")
}

/// One HTTP/1.1 GET with `Connection: close`; returns status and body.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let deadline = Instant::now() + timeout;
    let mut s = connect(addr, deadline)?;
    s.set_write_timeout(Some(remaining(deadline)?))?;
    s.write_all(request(addr, path, false).as_bytes())?;
    read_response(&mut s, &mut Vec::new(), deadline)
}

/// One HTTP/1.1 GET with `Connection: close` from a fixed local address
/// and port (SO_REUSEADDR), for tests that open the same 4-tuple again.
/// After the response it waits for the server's FIN before closing, so the
/// server is the side that closed first and holds the TIME_WAIT: the
/// client's end of the tuple is free again once its own FIN is acknowledged.
pub fn http_get_from(
    local: SocketAddrV4,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let deadline = Instant::now() + timeout;
    let mut s = connect_bound(local, true, addr, remaining(deadline)?)?;
    s.set_write_timeout(Some(remaining(deadline)?))?;
    s.write_all(request(addr, path, false).as_bytes())?;
    let mut buf = Vec::new();
    let resp = read_response(&mut s, &mut buf, deadline)?;
    if read_until(&mut s, &mut buf, deadline, |_| None)?.is_none() && buf.is_empty() {
        Ok(resp)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes after the response", buf.len()),
        ))
    }
}

/// A persistent HTTP/1.1 connection (keep-alive), for tests where one TCP
/// flow carries many requests (stickiness, failover of an open connection).
pub struct HttpConn {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl HttpConn {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        Self::connect_from(None, addr, timeout)
    }

    /// Like `connect`, from the given local address (one of the client's
    /// own), so one client host can act as many clients.
    pub fn connect_from(
        local: Option<std::net::Ipv4Addr>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<Self> {
        let stream = match local {
            None => connect(addr, Instant::now() + timeout)?,
            Some(ip) => connect_bound(SocketAddrV4::new(ip, 0), false, addr, timeout)?,
        };
        Ok(Self {
            addr,
            stream,
            buf: Vec::new(),
            timeout,
        })
    }

    /// GET `path` on this connection; each call has its own `timeout`.
    pub fn get(&mut self, path: &str) -> io::Result<(u16, String)> {
        let deadline = Instant::now() + self.timeout;
        self.stream.set_write_timeout(Some(remaining(deadline)?))?;
        self.stream
            .write_all(request(self.addr, path, true).as_bytes())?;
        read_response(&mut self.stream, &mut self.buf, deadline)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Waits up to `timeout` for the peer to end an idle connection without
    /// sending anything: `Ok(true)` on an orderly close (FIN), `Err` with
    /// `ConnectionReset` on a RST, `Ok(false)` if it is still open.
    pub fn wait_closed(&mut self, timeout: Duration) -> io::Result<bool> {
        self.stream.set_read_timeout(Some(timeout))?;
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(0) => Ok(true),
            Ok(_) => Err(io::Error::other("unexpected data on an idle connection")),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// Sends one datagram from a fresh socket and returns the reply as text.
pub fn udp_request(addr: SocketAddr, payload: &[u8], timeout: Duration) -> io::Result<String> {
    let deadline = Instant::now() + timeout;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let s = UdpSocket::bind(bind)?;
    // connect() so that only datagrams from `addr` are accepted, and an ICMP
    // port unreachable surfaces as ConnectionRefused instead of a timeout.
    s.connect(addr)?;
    s.send(payload)?;
    let mut buf = vec![0u8; 65536];
    s.set_read_timeout(Some(remaining(deadline)?))?;
    let n = s.recv(&mut buf)?;
    String::from_utf8(buf[..n].to_vec()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Outcome of [`bulk_send`]. The transfer is intact iff
/// `server_count == sent && server_hash == local_hash`.
#[derive(Clone, Copy, Debug)]
pub struct BulkResult {
    pub sent: u64,
    pub server_count: u64,
    pub server_hash: u64,
    pub local_hash: u64,
    pub elapsed: Duration,
}

impl BulkResult {
    pub fn intact(&self) -> bool {
        self.server_count == self.sent && self.server_hash == self.local_hash
    }

    /// Payload throughput in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        self.sent as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Seed of the bulk stream; fixed so failures reproduce.
const BULK_SEED: u64 = 0x6c62_2d74_6573_7473;

/// Streams `total_bytes` of deterministic pseudo-random data to a sink,
/// half-closes, and reads the sink's `<count> <hash>` line.
pub fn bulk_send(addr: SocketAddr, total_bytes: u64, timeout: Duration) -> io::Result<BulkResult> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut s = connect(addr, deadline)?;
    let mut pattern = PatternGen::new(BULK_SEED);
    let mut hash = Fnv1a64::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < total_bytes {
        let n = (total_bytes - sent).min(buf.len() as u64) as usize;
        pattern.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        s.set_write_timeout(Some(remaining(deadline)?))?;
        s.write_all(&buf[..n])?;
        sent += n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut line = Vec::new();
    let got = read_until(&mut s, &mut line, deadline, |b| {
        b.iter().position(|&c| c == b'\n').map(|p| p + 1)
    })?;
    let elapsed = start.elapsed();
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad sink reply {:?}", String::from_utf8_lossy(&line)),
        )
    };
    let n = got.ok_or_else(bad)?;
    let text = std::str::from_utf8(&line[..n]).map_err(|_| bad())?;
    let (count, hex) = text.trim_end().split_once(' ').ok_or_else(bad)?;
    Ok(BulkResult {
        sent,
        server_count: count.parse().map_err(|_| bad())?,
        server_hash: u64::from_str_radix(hex, 16).map_err(|_| bad())?,
        local_hash: hash.finish(),
        elapsed,
    })
}

/// Outcome of [`bulk_receive`]. Intact iff every byte asked for arrived and
/// they hash like the stream the server generated.
#[derive(Clone, Copy, Debug)]
pub struct DownloadResult {
    pub requested: u64,
    pub received: u64,
    pub hash: u64,
    pub want_hash: u64,
    pub elapsed: Duration,
}

impl DownloadResult {
    pub fn intact(&self) -> bool {
        self.received == self.requested && self.hash == self.want_hash
    }

    /// Payload throughput in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        self.received as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Asks a source service for `total_bytes` and reads them to EOF: a
/// download of known content ([`SOURCE_SEED`]), the reverse of
/// [`bulk_send`].
pub fn bulk_receive(
    addr: SocketAddr,
    total_bytes: u64,
    timeout: Duration,
) -> io::Result<DownloadResult> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut s = connect(addr, deadline)?;
    s.set_write_timeout(Some(remaining(deadline)?))?;
    s.write_all(format!("{total_bytes}\n").as_bytes())?;
    let mut hash = Fnv1a64::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        s.set_read_timeout(Some(remaining(deadline)?))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                received += n as u64;
                if received > total_bytes {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("more than the {total_bytes} bytes asked for"),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("after {received} of {total_bytes} bytes: {e}"),
                ));
            }
        }
    }
    let elapsed = start.elapsed();
    let mut want = Fnv1a64::new();
    let mut pattern = PatternGen::new(SOURCE_SEED);
    let mut left = total_bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        pattern.fill(&mut buf[..n]);
        want.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(DownloadResult {
        requested: total_bytes,
        received,
        hash: hash.finish(),
        want_hash: want.finish(),
        elapsed,
    })
}

/// A TCP connection to an echo service.
pub struct EchoConn {
    stream: TcpStream,
    timeout: Duration,
}

impl EchoConn {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        Ok(Self {
            stream: connect(addr, Instant::now() + timeout)?,
            timeout,
        })
    }

    /// Sends `msg` and reads back exactly as many bytes. Writes all before
    /// reading, so keep `msg` within the socket buffers (up to ~64 KiB).
    pub fn roundtrip(&mut self, msg: &[u8]) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        self.stream.set_write_timeout(Some(remaining(deadline)?))?;
        self.stream.write_all(msg)?;
        let mut buf = Vec::with_capacity(msg.len());
        let want = msg.len();
        match read_until(&mut self.stream, &mut buf, deadline, |b| {
            (b.len() >= want).then_some(want)
        })? {
            Some(_) => Ok(buf),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("echo closed after {} of {want} bytes", buf.len()),
            )),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// The underlying stream, e.g. to check how it fails after a fault.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

/// `n` established echo connections to `addr`, each checked with one round
/// trip (run it in the client's namespace).
pub fn echo_conns(addr: SocketAddr, n: usize) -> Vec<EchoConn> {
    (0..n)
        .map(|k| {
            let mut c = EchoConn::connect(addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connection {k}: {e}"));
            let msg = format!("hello {k}\n");
            assert_eq!(c.roundtrip(msg.as_bytes()).expect("echo"), msg.as_bytes());
            c
        })
        .collect()
}

/// Polls `cond` every `interval` until it holds or `timeout` passes; returns
/// whether it held. Bounded in time and (since each round sleeps) in count.
pub fn wait_until(timeout: Duration, interval: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let interval = interval.max(Duration::from_millis(1));
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(interval.min(deadline - now));
    }
}
