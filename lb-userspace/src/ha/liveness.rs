//! Peer liveness over the data plane: ICMP echo to the peer's own client- or
//! server-side addresses, never over the sync link. It is the second opinion
//! [`super::election::Election::on_peer_liveness`] needs to tell a dead peer
//! (no heartbeat, no echo reply) from a cut sync link (no heartbeat, but the
//! peer still answers on the other segments).
//!
//! A raw ICMP socket, not ICMP datagram ("ping") sockets: those depend on
//! `net.ipv4.ping_group_range`, which is closed by default, and the agent
//! runs as root anyway. A raw socket sees every echo reply in the network
//! namespace, so a reply counts only if its identifier, sequence number and
//! payload (which carries a per-[`Pinger`] random nonce) all match what this
//! pinger sent, and it comes from one of the targets.
//!
//! The echo request and the reply check use pnet's ICMP packet types; an
//! ICMPv6 pinger would use its `icmpv6` twins (and no IP header to skip:
//! raw ICMPv6 sockets hand over the message alone).

use std::{
    hash::{BuildHasher, Hasher},
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use pnet_packet::{
    Packet,
    icmp::{
        self, IcmpPacket, IcmpTypes,
        echo_reply::{self, EchoReplyPacket},
        echo_request::MutableEchoRequestPacket,
    },
    ip::IpNextHeaderProtocols,
    ipv4::Ipv4Packet,
};
use tokio::io::{Interest, unix::AsyncFd};

/// `ICMP_FILTER` from linux/icmp.h (a SOL_RAW option libc does not export).
const ICMP_FILTER: libc::c_int = 1;
/// Fixed tail of the payload, so a capture shows who sent the probe.
const PAYLOAD_TAG: &[u8; 8] = b"lb-alive";
/// Payload length: the 8-byte nonce, then the tag.
const PAYLOAD_LEN: usize = 16;
/// Our replies are 20-60 bytes of IPv4 header plus 24 of ICMP; anything that
/// does not fit is not ours, and a truncated read of it is harmless.
const RECV_BUF: usize = 512;
/// Stale datagrams read per probe before sending; a bound so a flood of
/// replies to someone else's pings cannot keep a probe from starting.
const MAX_DRAIN: usize = 1024;

/// Sends ICMP echo requests to a fixed set of addresses and waits for any of
/// them to answer.
pub struct Pinger {
    fd: AsyncFd<OwnedFd>,
    targets: Vec<Ipv4Addr>,
    /// Echo identifier: the low 16 bits of the pid, as ping(8) does.
    id: u16,
    /// Sequence number of the last probe sent.
    seq: u16,
    /// The echo payload, constant for this pinger: a random nonce then
    /// [`PAYLOAD_TAG`]. Two pingers in one process share the identifier;
    /// the nonce keeps them from taking each other's replies.
    payload: [u8; PAYLOAD_LEN],
}

impl Pinger {
    /// Opens the raw ICMP socket (needs CAP_NET_RAW) in the calling thread's
    /// network namespace. Must be called inside a tokio runtime with I/O
    /// enabled; outside any runtime it returns an error.
    pub fn new(targets: Vec<Ipv4Addr>) -> io::Result<Pinger> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "Pinger::new must be called inside a tokio runtime",
            ));
        }
        // SAFETY: plain socket(2); the fd is owned right below.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("opening a raw ICMP socket (needs CAP_NET_RAW): {e}"),
            ));
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Let the kernel drop everything but echo replies (a set bit filters
        // that type out): saves waking up for every ICMP packet on the host,
        // our own requests to local addresses included. Best effort: the
        // matching below does not rely on it.
        let filter: u32 = !(1u32 << IcmpTypes::EchoReply.0);
        // SAFETY: `filter` is a live u32 of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_RAW,
                ICMP_FILTER,
                (&raw const filter).cast(),
                size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            log::debug!(
                "ICMP_FILTER on the liveness socket: {}",
                io::Error::last_os_error()
            );
        }
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[..8].copy_from_slice(&nonce().to_be_bytes());
        payload[8..].copy_from_slice(PAYLOAD_TAG);
        // Readable only: sends never wait (a full send buffer fails that
        // target's request, which the next probe retries).
        // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and the
        // same for exactly as long as the registration.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(Pinger {
            fd,
            targets,
            id: std::process::id() as u16,
            seq: 0,
            payload,
        })
    }

    /// The addresses this pinger probes.
    pub fn targets(&self) -> &[Ipv4Addr] {
        &self.targets
    }

    /// Sends one echo request to every target and waits up to `timeout` for
    /// a matching reply from any of them: `true` if one arrives. `false` at
    /// once if no request could be sent (no targets, no route to any of
    /// them), so the caller paces its probes itself.
    pub async fn probe(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        // Replies to earlier, timed-out probes would not match the new
        // sequence number anyway; dropping them keeps the wait below short.
        self.drain();
        self.seq = self.seq.wrapping_add(1);
        let request = echo_request(self.id, self.seq, &self.payload);
        let mut sent = 0;
        for &target in &self.targets {
            match self.send_to(&request, target) {
                Ok(()) => sent += 1,
                Err(e) => log::debug!("liveness: echo request to {target}: {e}"),
            }
        }
        if sent == 0 {
            return false;
        }
        tokio::time::timeout_at(deadline, self.wait_reply())
            .await
            .unwrap_or(false)
    }

    fn send_to(&self, packet: &[u8], to: Ipv4Addr) -> io::Result<()> {
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: the buffer and address are valid for the call's duration.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const dst).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Reads without waiting, bypassing the readiness tracking: a stale
    /// "ready" left behind is cleared by the next `try_io` that would block.
    fn drain(&self) {
        let mut buf = [0u8; RECV_BUF];
        for _ in 0..MAX_DRAIN {
            if recv(&self.fd, &mut buf).is_err() {
                return;
            }
        }
    }

    async fn wait_reply(&self) -> bool {
        let mut buf = [0u8; RECV_BUF];
        loop {
            let mut guard = match self.fd.readable().await {
                Ok(guard) => guard,
                Err(e) => {
                    log::warn!("liveness: waiting on the ICMP socket: {e}");
                    return false;
                }
            };
            match guard.try_io(|fd| recv(fd, &mut buf)) {
                Ok(Ok(n)) => {
                    if is_echo_reply(&buf[..n], self.id, self.seq, &self.payload, &self.targets) {
                        return true;
                    }
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                // No evidence of life either way; say so rather than spin
                // on a socket error until the timeout.
                Ok(Err(e)) => {
                    log::warn!("liveness: reading the ICMP socket: {e}");
                    return false;
                }
                // Spurious readiness: `try_io` cleared it; wait again.
                Err(_would_block) => {}
            }
        }
    }
}

/// One datagram, `Err(WouldBlock)` if none is queued.
fn recv(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length; the socket is
    // non-blocking.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// 64 random bits from std's per-process randomly keyed hasher (no RNG
/// crate among the dependencies), mixed with the pid and the clock.
fn nonce() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// An ICMP echo request (no IP header: the kernel adds it), checksum
/// filled.
fn echo_request(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; MutableEchoRequestPacket::minimum_packet_size() + payload.len()];
    let mut echo = MutableEchoRequestPacket::new(&mut p).expect("sized for the header");
    echo.set_icmp_type(IcmpTypes::EchoRequest);
    echo.set_identifier(id);
    echo.set_sequence_number(seq);
    echo.set_payload(payload);
    let sum = icmp::checksum(&IcmpPacket::new(echo.packet()).expect("sized for the header"));
    echo.set_checksum(sum);
    p
}

/// Whether `packet` (as a raw socket returns it: IPv4 header first) is the
/// echo reply to our request `id`/`seq` with our `payload`, from one of
/// `targets`. The checksum is not verified: the kernel passes raw sockets
/// packets before ICMP validates them, but a damaged reply that still
/// carries our nonce proves the peer alive all the same.
fn is_echo_reply(packet: &[u8], id: u16, seq: u16, payload: &[u8], targets: &[Ipv4Addr]) -> bool {
    let Some(ip) = Ipv4Packet::new(packet) else {
        return false;
    };
    // The ICMP message starts after the header's own length (options
    // included) and ends with the datagram read, whatever the header's
    // total length says.
    let ihl = usize::from(ip.get_header_length()) * 4;
    if ip.get_version() != 4
        || ihl < Ipv4Packet::minimum_packet_size()
        || ip.get_next_level_protocol() != IpNextHeaderProtocols::Icmp
        || !targets.contains(&ip.get_source())
    {
        return false;
    }
    let Some(reply) = packet.get(ihl..).and_then(EchoReplyPacket::new) else {
        return false;
    };
    reply.get_icmp_type() == IcmpTypes::EchoReply
        && reply.get_icmp_code() == echo_reply::IcmpCodes::NoCode
        && reply.get_identifier() == id
        && reply.get_sequence_number() == seq
        && reply.payload().starts_with(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &[u8; PAYLOAD_LEN] = b"\x01\x02\x03\x04\x05\x06\x07\x08lb-alive";
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
    const ICMP_ECHO_REPLY: u8 = 0;
    const ICMP_ECHO_REQUEST: u8 = 8;

    /// The RFC 1071 checksum of `data` with no word skipped: 0 over a
    /// message whose checksum is correct.
    fn checksum(data: &[u8]) -> u16 {
        pnet_packet::util::checksum(data, usize::MAX)
    }

    /// What the kernel hands a raw socket for the peer's reply to
    /// `echo_request(id, seq, PAYLOAD)`.
    fn reply_from(src: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
        let mut icmp = echo_request(id, seq, PAYLOAD);
        icmp[0] = ICMP_ECHO_REPLY;
        icmp[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&[192, 0, 2, 1]);
        p.extend(icmp);
        p
    }

    #[test]
    fn checksum_rfc1071_example() {
        // RFC 1071 section 3: these bytes sum to 0xddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // Odd length: the last byte is padded with a zero.
        assert_eq!(checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn echo_request_bytes() {
        let p = echo_request(0x1234, 0xabcd, PAYLOAD);
        assert_eq!(p.len(), 24);
        assert_eq!(p[0..2], [8, 0], "type echo request, code 0");
        assert_eq!(p[4..6], [0x12, 0x34], "identifier");
        assert_eq!(p[6..8], [0xab, 0xcd], "sequence");
        assert_eq!(p[8..], PAYLOAD[..]);
        // A correct checksum makes the whole message sum to zero.
        assert_eq!(checksum(&p), 0);
        // Odd payload too.
        assert_eq!(checksum(&echo_request(1, 2, b"abc")), 0);
    }

    #[test]
    fn matches_only_our_reply() {
        let targets = [PEER];
        let ok = reply_from(PEER, 7, 3);
        assert!(is_echo_reply(&ok, 7, 3, PAYLOAD, &targets));
        assert!(!is_echo_reply(&ok, 8, 3, PAYLOAD, &targets), "wrong id");
        assert!(!is_echo_reply(&ok, 7, 4, PAYLOAD, &targets), "wrong seq");
        let other_nonce = b"\x09\x02\x03\x04\x05\x06\x07\x08lb-alive";
        assert!(
            !is_echo_reply(&ok, 7, 3, other_nonce, &targets),
            "other pinger's payload"
        );
        assert!(
            !is_echo_reply(&ok, 7, 3, PAYLOAD, &[Ipv4Addr::new(192, 0, 2, 8)]),
            "not from a target"
        );
        let mut request = ok.clone();
        request[20] = ICMP_ECHO_REQUEST;
        assert!(
            !is_echo_reply(&request, 7, 3, PAYLOAD, &targets),
            "our own request"
        );
    }

    #[test]
    fn bounds_and_header_length() {
        let targets = [PEER];
        let ok = reply_from(PEER, 7, 3);
        for n in 0..ok.len() {
            assert!(
                !is_echo_reply(&ok[..n], 7, 3, PAYLOAD, &targets),
                "cut at {n}"
            );
        }
        // IHL beyond the packet.
        let mut long_ihl = ok.clone();
        long_ihl[0] = 0x4f;
        assert!(!is_echo_reply(&long_ihl[..40], 7, 3, PAYLOAD, &targets));
        // IHL below the minimum.
        let mut short_ihl = ok.clone();
        short_ihl[0] = 0x44;
        assert!(!is_echo_reply(&short_ihl, 7, 3, PAYLOAD, &targets));
        // With 4 bytes of IP options the ICMP message starts at 24.
        let mut opts = ok[..20].to_vec();
        opts[0] = 0x46;
        opts.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        opts.extend_from_slice(&ok[20..]);
        assert!(is_echo_reply(&opts, 7, 3, PAYLOAD, &targets));
        // Not IPv4.
        let mut v6 = ok.clone();
        v6[0] = 0x65;
        assert!(!is_echo_reply(&v6, 7, 3, PAYLOAD, &targets));
    }

    #[test]
    fn new_outside_a_runtime_is_an_error() {
        let err = Pinger::new(vec![Ipv4Addr::LOCALHOST])
            .err()
            .expect("no runtime here");
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }
}
