//! TCP resets the agent sends on a real's behalf: when `purge` removes the
//! flows of a real that went down, idle clients hear a RST at once instead of
//! at their next packet. The datapath answers active clients itself.
//!
//! A raw IPv4 socket with a header we build: the source is the VIP (not an
//! address of this host), and the kernel routes it to the client.
use std::{
    io,
    net::SocketAddrV4,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
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

fn sum(words: impl Iterator<Item = u16>) -> u16 {
    let mut s: u32 = words.map(u32::from).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn words(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
}

/// TCP flags of [`tcp_segment`].
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

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
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64; // TTL
    p[9] = 6; // TCP
    p[12..16].copy_from_slice(&from.ip().octets());
    p[16..20].copy_from_slice(&to.ip().octets());
    let c = sum(words(&p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&from.port().to_be_bytes());
    t[2..4].copy_from_slice(&to.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&window.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&from.ip().octets());
    pseudo.extend_from_slice(&to.ip().octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(t);
    let c = sum(words(&pseudo));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A correct one's-complement sum over a header including its checksum
    /// is 0.
    fn checksums_verify(p: &[u8; 40]) {
        assert_eq!(sum(words(&p[..20])), 0, "IPv4 header");
        let mut pseudo = p[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        pseudo.extend_from_slice(&p[20..]);
        assert_eq!(sum(words(&pseudo)), 0, "TCP segment");
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
        assert_eq!(&p[24..28], &7u32.to_be_bytes());
        assert_eq!(p[33], 0x14);
        assert_eq!(&p[34..36], &[0, 0], "window 0");
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
            sum(words(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            !0xddf2
        );
    }
}
