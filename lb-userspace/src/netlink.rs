//! The rtnetlink plumbing the agent's one-shot requests share (floating IPs
//! in ha/floating.rs, the veth checks in datapath/attach_warnings.rs): a
//! NETLINK_ROUTE socket with a receive timeout, request encoding, and the
//! readers for an ack, a single answer and a dump, every length checked.
//!
//! Raw netlink rather than `ip` or a netlink crate: the kernel's errno comes
//! back as is (callers tell EEXIST or EADDRNOTAVAIL from real failures), there
//! is no output to parse and no dependency on iproute2. A socket acts in the
//! network namespace of the thread that opened it. Callers open one per task
//! (a role change, a check at attach time): nothing here is a hot path. The
//! change notifications routewatch.rs listens to need a non-blocking,
//! subscribed socket instead, and it keeps its own.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

/// `sizeof(struct nlmsghdr)`.
pub(crate) const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct rtattr)`.
pub(crate) const RTA_HDRLEN: usize = 4;
/// Receive buffer for one netlink datagram. The kernel sizes dump datagrams
/// to the reader's buffer but never above 32 KiB; anything larger is
/// reported as truncated rather than silently cut.
const RECV_BUF: usize = 32 * 1024;

/// Sequence numbers for our requests, so a reply is matched to the request
/// that caused it. Process-wide so two requests never share one.
static SEQ: AtomicU32 = AtomicU32::new(1);

/// The sequence number for the next request.
pub(crate) fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// `Err` with errno for a negative libc return value.
pub(crate) fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

// ---------------------------------------------------------------------------
// Encoding

/// Starts a request: a `struct nlmsghdr` whose length [`finish`] fills in.
pub(crate) fn put_nlmsghdr(m: &mut Vec<u8>, ty: u16, flags: u16, seq: u32) {
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in our port id.
    m.extend_from_slice(&0u32.to_ne_bytes());
}

/// Appends one attribute, padded to 4 bytes.
pub(crate) fn put_attr(m: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = RTA_HDRLEN + data.len();
    m.extend_from_slice(&(len as u16).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(data);
    m.resize(align4(m.len()), 0);
}

/// Patches the message length into the header [`put_nlmsghdr`] wrote.
pub(crate) fn finish(mut m: Vec<u8>) -> Vec<u8> {
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m
}

// ---------------------------------------------------------------------------
// Parsing

pub(crate) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub(crate) fn ne_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

pub(crate) fn ne_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn bad_msg(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed netlink reply: {what}"),
    )
}

/// One netlink message of a received datagram.
#[derive(Debug)]
pub(crate) struct Msg<'a> {
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) payload: &'a [u8],
}

/// Splits a datagram into its messages, checking every length against what
/// is left of the buffer.
pub(crate) fn parse_messages(mut buf: &[u8]) -> io::Result<Vec<Msg<'_>>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.len() < NLMSG_HDRLEN {
            return Err(bad_msg("truncated header"));
        }
        let len = ne_u32(buf, 0) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(bad_msg("message length out of bounds"));
        }
        out.push(Msg {
            ty: ne_u16(buf, 4),
            flags: ne_u16(buf, 6),
            seq: ne_u32(buf, 8),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        // The last message may omit its alignment padding.
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// The attributes in `buf` as (type, data), checking every length. The type
/// has NLA_F_NESTED / NLA_F_NET_BYTEORDER (the top two bits) cleared.
pub(crate) fn attrs(mut buf: &[u8]) -> io::Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.len() < RTA_HDRLEN {
            return Err(bad_msg("truncated attribute header"));
        }
        let len = usize::from(ne_u16(buf, 0));
        if len < RTA_HDRLEN || len > buf.len() {
            return Err(bad_msg("attribute length out of bounds"));
        }
        out.push((ne_u16(buf, 2) & 0x3fff, &buf[RTA_HDRLEN..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// The errno of an NLMSG_ERROR or NLMSG_DONE payload (`struct nlmsgerr`,
/// or the dump's `int` status): 0 for success, otherwise positive.
fn ack_errno(payload: &[u8]) -> io::Result<i32> {
    if payload.len() < 4 {
        return Err(bad_msg("truncated error message"));
    }
    let err = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    Ok(err.checked_neg().unwrap_or(i32::MAX))
}

fn errno_result(errno: i32) -> io::Result<()> {
    match errno {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

// ---------------------------------------------------------------------------
// The socket

/// A NETLINK_ROUTE socket, closed on drop.
pub(crate) struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// Opens a socket whose reads give up after `timeout`. The kernel answers
    /// synchronously, so the timeout only bounds a wedged kernel or a lost
    /// reply, never a normal call.
    pub(crate) fn open(timeout: Duration) -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned right below.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sock = Socket { fd };
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        sock.setsockopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
        Ok(sock)
    }

    /// Asks for NETLINK_GET_STRICT_CHK (Linux >= 4.20): dumps honour the
    /// request's filters, and requests with fields the kernel ignores are
    /// rejected instead.
    pub(crate) fn strict_checking(&self) -> io::Result<()> {
        self.setsockopt(libc::SOL_NETLINK, libc::NETLINK_GET_STRICT_CHK, &1i32)
    }

    fn setsockopt<T>(&self, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
        // SAFETY: `val` points to a live `T` of the size passed.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (val as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// Sends one request to the kernel.
    pub(crate) fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and address are valid for the call's duration.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const kernel).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != msg.len() {
            return Err(io::Error::other("short netlink send"));
        }
        Ok(())
    }

    /// One datagram into `buf`; an error if it did not fit.
    fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
        loop {
            // SAFETY: `buf` is valid for writes of its length. MSG_TRUNC
            // makes the kernel return the datagram's real length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no answer from the kernel (netlink)",
                        ));
                    }
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            if n > buf.len() {
                return Err(bad_msg("datagram larger than the receive buffer"));
            }
            return Ok(&buf[..n]);
        }
    }

    /// Hands every message answering `seq` to `each` until it returns a
    /// value; messages for other (earlier, abandoned) requests are skipped.
    fn replies<T>(
        &self,
        seq: u32,
        mut each: impl FnMut(&Msg<'_>) -> io::Result<Option<T>>,
    ) -> io::Result<T> {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let datagram = self.recv(&mut buf)?;
            for m in parse_messages(datagram)? {
                if m.seq != seq {
                    continue;
                }
                if let Some(v) = each(&m)? {
                    return Ok(v);
                }
            }
        }
    }

    /// Reads until the NLMSG_ERROR answering `seq` (a request sent with
    /// NLM_F_ACK): `Ok` for an ack, the kernel's errno otherwise.
    pub(crate) fn wait_ack(&self, seq: u32) -> io::Result<()> {
        self.replies(seq, |m| {
            if m.ty != libc::NLMSG_ERROR as u16 {
                return Ok(None);
            }
            errno_result(ack_errno(m.payload)?).map(Some)
        })
    }

    /// Reads until the message of type `ty` answering `seq` and parses its
    /// payload, or returns the errno of an NLMSG_ERROR in its place.
    pub(crate) fn wait_reply<T>(
        &self,
        seq: u32,
        ty: u16,
        parse: impl Fn(&[u8]) -> io::Result<T>,
    ) -> io::Result<T> {
        self.replies(seq, |m| {
            if m.ty == libc::NLMSG_ERROR as u16 {
                return Err(io::Error::from_raw_os_error(ack_errno(m.payload)?));
            }
            if m.ty == ty {
                return parse(m.payload).map(Some);
            }
            Ok(None)
        })
    }

    /// Reads the dump answering `seq` (a request sent with NLM_F_DUMP),
    /// handing each entry to `each`, until NLMSG_DONE. An errno in
    /// NLMSG_DONE or NLMSG_ERROR ends it with that error. `Ok(true)` if the
    /// kernel marked it NLM_F_DUMP_INTR: the dumped objects changed while it
    /// ran, so entries may be missing or doubled and the caller should ask
    /// again.
    pub(crate) fn read_dump(
        &self,
        seq: u32,
        mut each: impl FnMut(&Msg<'_>) -> io::Result<()>,
    ) -> io::Result<bool> {
        let mut interrupted = false;
        self.replies(seq, |m| {
            interrupted |= m.flags & libc::NLM_F_DUMP_INTR as u16 != 0;
            match m.ty {
                t if t == libc::NLMSG_DONE as u16 => {
                    // NLMSG_DONE carries the dump's own error, if any.
                    if m.payload.len() >= 4 {
                        errno_result(ack_errno(m.payload)?)?;
                    }
                    Ok(Some(()))
                }
                t if t == libc::NLMSG_ERROR as u16 => {
                    errno_result(ack_errno(m.payload)?)?;
                    Ok(None)
                }
                _ => each(m).map(|()| None),
            }
        })?;
        Ok(interrupted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of type `ty` with `payload`, as the kernel sends it.
    fn msg(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        put_nlmsghdr(&mut m, ty, 0, seq);
        m.extend_from_slice(payload);
        finish(m)
    }

    #[test]
    fn request_encoding() {
        let mut m = Vec::new();
        put_nlmsghdr(&mut m, 20, 0x405, 42);
        put_attr(&mut m, 2, &[192, 0, 2, 10]);
        put_attr(&mut m, 3, b"lo\0");
        let m = finish(m);
        let mut want = Vec::new();
        want.extend_from_slice(&32u32.to_ne_bytes());
        want.extend_from_slice(&20u16.to_ne_bytes());
        want.extend_from_slice(&0x405u16.to_ne_bytes());
        want.extend_from_slice(&42u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&2u16.to_ne_bytes());
        want.extend_from_slice(&[192, 0, 2, 10]);
        want.extend_from_slice(&7u16.to_ne_bytes());
        want.extend_from_slice(&3u16.to_ne_bytes());
        want.extend_from_slice(b"lo\0\0");
        assert_eq!(m, want);
    }

    #[test]
    fn splits_a_multipart_datagram() {
        let mut d = msg(20, 3, &[1, 2, 3, 4, 5]);
        d.resize(align4(d.len()), 0);
        d.extend(msg(3, 3, &0i32.to_ne_bytes()));
        let msgs = parse_messages(&d).expect("well-formed");
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[0].ty, msgs[0].payload), (20, &[1, 2, 3, 4, 5][..]));
        assert_eq!(msgs[1].ty, 3);
        assert!(msgs.iter().all(|m| m.seq == 3));
    }

    #[test]
    fn rejects_bad_message_lengths() {
        let good = msg(20, 1, &[0; 8]);
        // Shorter than a header.
        assert!(parse_messages(&good[..10]).is_err());
        // Length field beyond the datagram.
        assert!(parse_messages(&good[..good.len() - 1]).is_err());
        // Length field below the header size.
        let mut tiny = good.clone();
        tiny[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(parse_messages(&tiny).is_err());
    }

    #[test]
    fn walks_attributes_and_rejects_bad_lengths() {
        let mut a = Vec::new();
        put_attr(&mut a, 3 | 0x8000, b"x\0");
        put_attr(&mut a, 5, &9u32.to_ne_bytes());
        let got = attrs(&a).expect("well-formed");
        assert_eq!(got, [(3, &b"x\0"[..]), (5, &9u32.to_ne_bytes()[..])]);
        // Longer than what is left.
        assert!(attrs(&[40, 0, 8, 0]).is_err());
        // Header cut short.
        assert!(attrs(&[8, 0]).is_err());
    }

    #[test]
    fn ack_errno_is_positive() {
        assert_eq!(
            ack_errno(&(-libc::EEXIST).to_ne_bytes()).unwrap(),
            libc::EEXIST
        );
        assert_eq!(ack_errno(&0i32.to_ne_bytes()).unwrap(), 0);
        assert!(ack_errno(&[0, 0]).is_err());
    }
}
