//! The glue the agent's one-shot rtnetlink requests share (floating IPs in
//! ha/floating.rs, the veth checks in datapath/attach_warnings.rs): a
//! request/reply exchange on a netlink-sys socket, with the messages
//! encoded and decoded by netlink-packet-route.
//!
//! What is left here is what those crates leave to their caller: matching a
//! reply to its request by sequence number, reading to the end of a dump,
//! a receive timeout, and the kernel's errno handed back as an
//! `io::Error`, so callers tell EEXIST or EADDRNOTAVAIL from real failures.
//!
//! Synchronous on purpose, not the async `rtnetlink` crate: the callers run
//! inside the HA event loop and in plain threads, and its requests need a
//! connection task on a runtime. A socket acts in the network namespace of
//! the thread that opened it; callers open one per task (a role change, a
//! check at attach time), so which namespace they act in is plain to see.
//! Nothing here is a hot path. The change notifications routewatch.rs
//! listens to need a non-blocking, subscribed socket instead, and it keeps
//! its own.

use std::{
    io,
    os::fd::AsRawFd,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_ALIGNTO, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{SocketAddr, protocols::NETLINK_ROUTE};

/// One rtnetlink message, header and all.
pub(crate) type Message = NetlinkMessage<RouteNetlinkMessage>;

/// Receive buffer for one netlink datagram. The kernel sizes dump datagrams
/// to the reader's buffer but never above 32 KiB; anything larger is
/// reported as truncated rather than silently cut.
const RECV_BUF: usize = 32 * 1024;

/// Sequence numbers for our requests, so a reply is matched to the request
/// that caused it. Process-wide so two requests never share one.
static SEQ: AtomicU32 = AtomicU32::new(1);

/// `Err` with errno for a negative libc return value.
pub(crate) fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn bad_msg(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed netlink reply: {what}"),
    )
}

/// `msg` as a request with `flags` and sequence number `seq`, ready to send.
pub(crate) fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut m = Message::new(header, NetlinkPayload::InnerMessage(msg));
    m.finalize();
    let mut buf = vec![0; m.buffer_len()];
    m.serialize(&mut buf);
    buf
}

/// The messages of one datagram, each cut to its header's length (checked
/// against what is left of the datagram).
pub(crate) fn split(mut datagram: &[u8]) -> io::Result<Vec<NetlinkBuffer<&[u8]>>> {
    let mut out = Vec::new();
    while !datagram.is_empty() {
        let len = NetlinkBuffer::new_checked(datagram)
            .map_err(bad_msg)?
            .length() as usize;
        out.push(NetlinkBuffer::new(&datagram[..len]));
        // The last message may omit its alignment padding.
        let next = len.next_multiple_of(usize::from(NLMSG_ALIGNTO));
        datagram = &datagram[next.min(datagram.len())..];
    }
    Ok(out)
}

/// Decodes one message that [`split`] cut out.
pub(crate) fn decode(m: &NetlinkBuffer<&[u8]>) -> io::Result<Message> {
    Message::deserialize(m.buffer).map_err(bad_msg)
}

/// `Ok` for 0, the errno otherwise: an NLMSG_ERROR's or NLMSG_DONE's code
/// is a negative errno.
fn errno_result(code: i32) -> io::Result<()> {
    match code {
        0 => Ok(()),
        code => Err(io::Error::from_raw_os_error(
            code.checked_neg().unwrap_or(i32::MAX),
        )),
    }
}

/// A NETLINK_ROUTE socket, closed on drop.
pub(crate) struct Socket {
    sock: netlink_sys::Socket,
}

impl Socket {
    /// Opens a socket whose reads give up after `timeout`. The kernel answers
    /// synchronously, so the timeout only bounds a wedged kernel or a lost
    /// reply, never a normal call.
    pub(crate) fn open(timeout: Duration) -> io::Result<Socket> {
        let sock = netlink_sys::Socket::new(NETLINK_ROUTE)?;
        // netlink-sys has no setter for SO_RCVTIMEO.
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: `tv` is a live timeval of the size passed.
        check(unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
        Ok(Socket { sock })
    }

    /// Asks for NETLINK_GET_STRICT_CHK (Linux >= 4.20): dumps honour the
    /// request's filters, and requests with fields the kernel ignores are
    /// rejected instead.
    pub(crate) fn strict_checking(&self) -> io::Result<()> {
        self.sock.set_netlink_get_strict_chk(true)
    }

    /// Sends `msg` with `flags` (NLM_F_REQUEST is added); returns the
    /// sequence number its answers will carry.
    fn send(&self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let buf = encode(msg, NLM_F_REQUEST | flags, seq);
        let n = self.sock.send_to(&buf, &SocketAddr::new(0, 0), 0)?;
        if n != buf.len() {
            return Err(io::Error::other("short netlink send"));
        }
        Ok(seq)
    }

    /// One datagram into `buf`; an error if it did not fit.
    fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
        loop {
            // MSG_TRUNC makes the kernel return the datagram's real length.
            match self.sock.recv(&mut &mut buf[..], libc::MSG_TRUNC) {
                Ok(n) if n > buf.len() => {
                    return Err(bad_msg("datagram larger than the receive buffer"));
                }
                Ok(n) => return Ok(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer from the kernel (netlink)",
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands every message answering `seq` to `each` until it returns a
    /// value; messages for other (earlier, abandoned) requests are skipped
    /// without being decoded.
    fn replies<T>(
        &self,
        seq: u32,
        mut each: impl FnMut(Message) -> io::Result<Option<T>>,
    ) -> io::Result<T> {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let datagram = self.recv(&mut buf)?;
            for m in split(datagram)? {
                if m.sequence_number() != seq {
                    continue;
                }
                if let Some(v) = each(decode(&m)?)? {
                    return Ok(v);
                }
            }
        }
    }

    /// Sends `msg` with NLM_F_ACK and `flags` and waits for the kernel's
    /// answer: `Ok` for an ack, the kernel's errno otherwise.
    pub(crate) fn ack(&self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, NLM_F_ACK | flags)?;
        self.replies(seq, |m| match m.payload {
            NetlinkPayload::Error(e) => errno_result(e.raw_code()).map(Some),
            _ => Ok(None),
        })
    }

    /// Sends the get request `msg` and returns its single answer, or the
    /// kernel's errno.
    pub(crate) fn get(&self, msg: RouteNetlinkMessage) -> io::Result<RouteNetlinkMessage> {
        let seq = self.send(msg, 0)?;
        self.replies(seq, |m| match m.payload {
            NetlinkPayload::InnerMessage(inner) => Ok(Some(inner)),
            NetlinkPayload::Error(e) => {
                errno_result(e.raw_code())?;
                Err(bad_msg("an ack where an answer was expected"))
            }
            _ => Ok(None),
        })
    }

    /// Sends the dump request `msg` and hands each entry to `each` until
    /// NLMSG_DONE. An errno in NLMSG_DONE or NLMSG_ERROR ends it with that
    /// error. `Ok(true)` if the kernel marked it NLM_F_DUMP_INTR: the dumped
    /// objects changed while it ran, so entries may be missing or doubled
    /// and the caller should ask again.
    pub(crate) fn dump(
        &self,
        msg: RouteNetlinkMessage,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> io::Result<bool> {
        let seq = self.send(msg, NLM_F_DUMP)?;
        let mut interrupted = false;
        self.replies(seq, |m| {
            interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
            match m.payload {
                NetlinkPayload::Done(done) => errno_result(done.code).map(Some),
                NetlinkPayload::Error(e) => errno_result(e.raw_code()).map(|()| None),
                NetlinkPayload::InnerMessage(inner) => {
                    each(inner);
                    Ok(None)
                }
                _ => Ok(None),
            }
        })?;
        Ok(interrupted)
    }
}

/// Raw messages as the kernel sends them, for the tests of the modules that
/// decode them.
#[cfg(test)]
pub(crate) mod kernel {
    /// A netlink message of type `ty` with `payload`.
    pub(crate) fn msg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m
    }

    /// An attribute, padded to 4 bytes.
    pub(crate) fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&(4 + data.len() as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(data);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NLMSG_DONE;

    use super::{kernel::msg, *};

    #[test]
    fn splits_a_multipart_datagram() {
        let mut d = msg(20, 2, 3, &[1, 2, 3, 4, 5]);
        d.resize(d.len().next_multiple_of(4), 0);
        d.extend(msg(NLMSG_DONE, 2, 3, &0i32.to_ne_bytes()));
        let msgs = split(&d).expect("well-formed");
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            (msgs[0].message_type(), msgs[0].payload()),
            (20, &[1, 2, 3, 4, 5][..])
        );
        assert_eq!(msgs[1].message_type(), NLMSG_DONE);
        assert!(msgs.iter().all(|m| m.sequence_number() == 3));
        assert!(matches!(
            decode(&msgs[1]).expect("a done message").payload,
            NetlinkPayload::Done(_)
        ));
    }

    #[test]
    fn rejects_bad_message_lengths() {
        let good = msg(20, 0, 1, &[0; 8]);
        // Shorter than a header.
        assert!(split(&good[..10]).is_err());
        // Length field beyond the datagram.
        assert!(split(&good[..good.len() - 1]).is_err());
        // Length field below the header size.
        let mut tiny = good.clone();
        tiny[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(split(&tiny).is_err());
    }

    #[test]
    fn errors_carry_the_positive_errno() {
        let e = errno_result(-libc::EEXIST).expect_err("an error");
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert!(errno_result(0).is_ok());
        // A kernel's NLMSG_ERROR: the errno, then the request's header.
        let mut payload = (-libc::EADDRNOTAVAIL).to_ne_bytes().to_vec();
        payload.extend(msg(21, 5, 9, &[]));
        let d = msg(2, 0, 9, &payload);
        let m = decode(&split(&d).unwrap()[0]).unwrap();
        let NetlinkPayload::Error(e) = m.payload else {
            panic!("not an error: {m:?}");
        };
        let e = errno_result(e.raw_code()).expect_err("an error");
        assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL));
    }
}
