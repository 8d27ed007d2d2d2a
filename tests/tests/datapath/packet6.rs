//! IPv6 frames for the fixtures, as packet.rs builds IPv4 ones: checksums
//! computed from scratch by pnet (the pseudo-header included), never by
//! lb's code.
use std::net::Ipv6Addr;

use pnet::packet::{
    icmpv6::{self, Icmpv6Packet},
    ipv6::{Ipv6Packet, MutableIpv6Packet},
    tcp::{self, TcpPacket},
    udp::{self, UdpPacket},
};

use super::packet::{L4, Mac, Pseudo};

/// ICMPv6 neighbour solicitation.
pub const NEIGHBOR_SOLICIT: u8 = 135;

#[derive(Clone, Debug)]
pub struct Pkt6 {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    /// Extension headers between the IPv6 header and the transport's, in
    /// order: each one's number and its 8 bytes (the first, its next
    /// header, is filled in).
    pub ext: Vec<(u8, [u8; 8])>,
    /// `L4::Icmp` is ICMPv6 here.
    pub l4: L4,
}

impl Pkt6 {
    pub fn tcp(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), flags: u8, seq: u32, ack: u32) -> Self {
        Self::ip(
            src.0,
            dst.0,
            L4::Tcp {
                sport: src.1,
                dport: dst.1,
                seq,
                ack,
                flags,
                doff: 5,
                payload: Vec::new(),
            },
        )
    }

    pub fn udp(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), payload: &[u8]) -> Self {
        Self::ip(
            src.0,
            dst.0,
            L4::Udp {
                sport: src.1,
                dport: dst.1,
                payload: payload.to_vec(),
                zero_csum: false,
            },
        )
    }

    pub fn ip(src: Ipv6Addr, dst: Ipv6Addr, l4: L4) -> Self {
        Self {
            src_mac: [2, 0, 0, 0, 0, 0x99],
            dst_mac: [2, 0, 0, 0, 0, 0x01],
            src,
            dst,
            hop_limit: 64,
            ext: Vec::new(),
            l4,
        }
    }

    pub fn with_payload(mut self, data: &[u8]) -> Self {
        if let L4::Tcp { payload, .. } | L4::Udp { payload, .. } = &mut self.l4 {
            *payload = data.to_vec();
        }
        self
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } => 58,
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        self.l4.bytes(Pseudo::V6(self.src, self.dst))
    }

    /// The frame, with every checksum computed from scratch.
    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let next = |i: usize| self.ext.get(i).map_or(self.proto(), |(kind, _)| *kind);
        let ext: Vec<u8> = (0..self.ext.len())
            .flat_map(|i| {
                let mut bytes = self.ext[i].1;
                bytes[0] = next(i + 1);
                bytes
            })
            .collect();
        let mut f = vec![0u8; 14 + 40 + ext.len() + l4.len()];
        f[..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        {
            let mut ip = MutableIpv6Packet::new(&mut f[14..]).unwrap();
            ip.set_version(6);
            ip.set_payload_length((ext.len() + l4.len()) as u16);
            ip.set_next_header(pnet::packet::ip::IpNextHeaderProtocol(next(0)));
            ip.set_hop_limit(self.hop_limit);
            ip.set_source(self.src);
            ip.set_destination(self.dst);
        }
        f[54..54 + ext.len()].copy_from_slice(&ext);
        f[54 + ext.len()..].copy_from_slice(&l4);
        f
    }
}

/// A hop-by-hop options header: length 0 (8 bytes), PadN over the rest.
pub const HOP_BY_HOP: (u8, [u8; 8]) = (0, [0, 0, 1, 4, 0, 0, 0, 0]);
/// A destination options header, likewise.
pub const DEST_OPTS: (u8, [u8; 8]) = (60, [0, 0, 1, 4, 0, 0, 0, 0]);

/// A whole frame (no extension header) cut into two fragments after `at`
/// bytes of its transport header and payload (a multiple of 8), each with
/// a fragment header of identification `id`, as a sending kernel cuts it.
pub fn fragments6(frame: &[u8], at: usize, id: u32) -> [Vec<u8>; 2] {
    assert_eq!(at % 8, 0, "fragment offsets are in 8-byte units");
    let (head, l4) = frame.split_at(54);
    let proto = head[14 + 6];
    let part = |first: bool| {
        let (offset, data) = if first {
            (0, &l4[..at])
        } else {
            (at, &l4[at..])
        };
        let mut f = head.to_vec();
        let len = (8 + data.len()) as u16;
        f[14 + 4..14 + 6].copy_from_slice(&len.to_be_bytes());
        f[14 + 6] = 44;
        let off_m = ((offset / 8) as u16) << 3 | first as u16;
        f.extend_from_slice(&[proto, 0]);
        f.extend_from_slice(&off_m.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(data);
        f
    };
    [part(true), part(false)]
}

/// Independent check that the transport checksum of an IPv6 frame (no
/// extension header) verifies.
pub fn checksums_valid6(frame: &[u8]) -> bool {
    let Some(ip) = Ipv6Packet::new(&frame[14..]) else {
        return false;
    };
    let l4 = &frame[54..54 + ip.get_payload_length() as usize];
    let (src, dst) = (ip.get_source(), ip.get_destination());
    match ip.get_next_header().0 {
        6 => {
            let t = TcpPacket::new(l4).unwrap();
            tcp::ipv6_checksum(&t, &src, &dst) == t.get_checksum()
        }
        17 => {
            let u = UdpPacket::new(l4).unwrap();
            udp::ipv6_checksum(&u, &src, &dst) == u.get_checksum()
                || (u.get_checksum() == 0xffff && udp::ipv6_checksum(&u, &src, &dst) == 0)
        }
        58 => {
            let i = Icmpv6Packet::new(l4).unwrap();
            icmpv6::checksum(&i, &src, &dst) == i.get_checksum()
        }
        _ => true,
    }
}
