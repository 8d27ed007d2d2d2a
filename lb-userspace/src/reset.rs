//! TCP resets the agent sends on a real's behalf: when `purge` removes the
//! flows of a real that went down, idle clients hear a RST at once instead of
//! at their next packet. The datapath answers active clients itself.
//!
//! A raw IPv4 socket with a header we build: the source is the VIP (not an
//! address of this host), and the kernel routes it to the client. The
//! packets are pnet's types, checksums included; the TCP header is built
//! apart from the IP header, so an IPv6 segment needs only its own IP
//! header and `tcp::ipv6_checksum`.
use std::{
    io,
    net::SocketAddrV4,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use pnet_packet::{
    ip::IpNextHeaderProtocols,
    ipv4::{self, Ipv4Flags, MutableIpv4Packet},
    tcp::{self, MutableTcpPacket, TcpFlags},
};

/// Where resets go out.
pub struct ResetSender {
    fd: OwnedFd,
}

impl ResetSender {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends `from` -> `to` RST|ACK with the given sequence numbers: `seq` is
    /// the next sequence number the client expects from the server (so the
    /// client accepts it, RFC 5961), `ack` the next it will send.
    pub fn send(&self, from: SocketAddrV4, to: SocketAddrV4, seq: u32, ack: u32) -> io::Result<()> {
        self.send_raw(&rst_packet(from, to, seq, ack), to)
    }

    /// Sends `pkt`, a whole IPv4 packet (header included), toward `to`'s
    /// address. The tests' flood of spoofed SYNs goes out this way too.
    pub fn send_raw(&self, pkt: &[u8], to: SocketAddrV4) -> io::Result<()> {
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: valid buffer and address for the call's duration.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&dst as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else if n as usize != pkt.len() {
            Err(io::Error::other(format!("sent {n} of {} bytes", pkt.len())))
        } else {
            Ok(())
        }
    }
}

/// TCP flags of [`tcp_segment`].
pub const SYN: u8 = TcpFlags::SYN;
pub const RST: u8 = TcpFlags::RST;
pub const ACK: u8 = TcpFlags::ACK;

/// IPv4 + TCP RST|ACK, 40 bytes, checksums filled.
pub fn rst_packet(from: SocketAddrV4, to: SocketAddrV4, seq: u32, ack: u32) -> [u8; 40] {
    tcp_segment(from, to, RST | ACK, seq, ack, 0)
}

/// IPv4 (DF, TTL 64) + a TCP header without options or payload, 40 bytes,
/// checksums filled.
pub fn tcp_segment(
    from: SocketAddrV4,
    to: SocketAddrV4,
    flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
) -> [u8; 40] {
    let mut p = [0u8; 40];
    let (ip, tcp) = p.split_at_mut(20);
    let mut ip = MutableIpv4Packet::new(ip).expect("20 bytes hold an IPv4 header");
    ip.set_version(4);
    ip.set_header_length(5);
    ip.set_total_length(40);
    ip.set_flags(Ipv4Flags::DontFragment);
    ip.set_ttl(64);
    ip.set_next_level_protocol(IpNextHeaderProtocols::Tcp);
    ip.set_source(*from.ip());
    ip.set_destination(*to.ip());
    ip.set_checksum(ipv4::checksum(&ip.to_immutable()));
    let mut tcp = tcp_header(tcp, from.port(), to.port(), flags, seq, ack, window);
    tcp.set_checksum(tcp::ipv4_checksum(&tcp.to_immutable(), from.ip(), to.ip()));
    p
}

/// A TCP header without options into `buf` (20 bytes), checksum left zero:
/// it depends on the IP version's pseudo-header.
fn tcp_header(
    buf: &mut [u8],
    from_port: u16,
    to_port: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
) -> MutableTcpPacket<'_> {
    let mut tcp = MutableTcpPacket::new(buf).expect("20 bytes hold a TCP header");
    tcp.set_source(from_port);
    tcp.set_destination(to_port);
    tcp.set_sequence(seq);
    tcp.set_acknowledgement(ack);
    tcp.set_data_offset(5);
    tcp.set_flags(flags);
    tcp.set_window(window);
    tcp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's check: the one's-complement sum over a header including
    /// its checksum is all ones, so its complement is 0. (pnet's sum with
    /// no word skipped.)
    fn verifies(b: &[u8]) -> bool {
        pnet_packet::util::checksum(b, usize::MAX) == 0
    }

    fn checksums_verify(p: &[u8; 40]) {
        assert!(verifies(&p[..20]), "IPv4 header");
        let mut pseudo = p[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        pseudo.extend_from_slice(&p[20..]);
        assert!(verifies(&pseudo), "TCP segment");
    }

    #[test]
    fn rst_packet_checksums_verify() {
        let p = rst_packet(
            "198.51.100.10:80".parse().unwrap(),
            "192.0.2.2:40000".parse().unwrap(),
            7,
            9,
        );
        checksums_verify(&p);
        assert_eq!(
            p[..12],
            [0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, p[10], p[11]]
        );
        assert_eq!(p[12..20], [198, 51, 100, 10, 192, 0, 2, 2]);
        assert_eq!(&p[20..24], &[0, 80, 0x9c, 0x40], "ports");
        assert_eq!(&p[24..28], &7u32.to_be_bytes());
        assert_eq!(&p[28..32], &9u32.to_be_bytes());
        assert_eq!(p[32], 5 << 4, "data offset");
        assert_eq!(p[33], 0x14);
        assert_eq!(&p[34..36], &[0, 0], "window 0");
        assert_eq!(&p[38..40], &[0, 0], "urgent pointer");
    }

    #[test]
    fn syn_segment_checksums_verify() {
        let p = tcp_segment(
            "198.18.0.1:1024".parse().unwrap(),
            "198.51.100.10:7".parse().unwrap(),
            SYN,
            0x1234_5678,
            0,
            64240,
        );
        checksums_verify(&p);
        assert_eq!(p[33], SYN);
        assert_eq!(&p[34..36], &64240u16.to_be_bytes());
        // RFC 1071's example: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(
            pnet_packet::util::checksum(
                &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7],
                usize::MAX
            ),
            !0xddf2
        );
    }
}
