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
        let pkt = rst_packet(from, to, seq, ack);
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

/// IPv4 + TCP RST|ACK, 40 bytes, checksums filled.
pub fn rst_packet(from: SocketAddrV4, to: SocketAddrV4, seq: u32, ack: u32) -> [u8; 40] {
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
    t[13] = 0x04 | 0x10; // RST|ACK
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

    #[test]
    fn rst_packet_checksums_verify() {
        let p = rst_packet(
            "198.51.100.10:80".parse().unwrap(),
            "192.0.2.2:40000".parse().unwrap(),
            7,
            9,
        );
        // A correct one's-complement sum over a header including its checksum is 0.
        assert_eq!(sum(words(&p[..20])), 0);
        let mut pseudo = p[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        pseudo.extend_from_slice(&p[20..]);
        assert_eq!(sum(words(&pseudo)), 0);
        assert_eq!(&p[24..28], &7u32.to_be_bytes());
        assert_eq!(p[33], 0x14);
    }
}
