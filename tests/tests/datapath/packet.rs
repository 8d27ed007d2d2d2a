//! A small packet builder for fixtures. Checksums are computed from scratch
//! by pnet, never by lb's code, so an expected packet is an independent
//! statement of what the wire should carry.
use std::net::{Ipv4Addr, Ipv6Addr};

use pnet::packet::{
    MutablePacket,
    ethernet::{EtherType, EtherTypes, MutableEthernetPacket},
    icmp::{self, IcmpPacket},
    icmpv6::{self, Icmpv6Packet},
    ip::IpNextHeaderProtocols,
    ipv4::{self, MutableIpv4Packet},
    tcp::{self, MutableTcpPacket},
    udp::{self, MutableUdpPacket},
    vlan::MutableVlanPacket,
};

pub type Mac = [u8; 6];

/// The addresses a transport checksum's pseudo-header holds (ICMP's has
/// none; ICMPv6's does).
#[derive(Clone, Copy)]
pub enum Pseudo {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        doff: u8,
        payload: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
        zero_csum: bool,
    },
    Icmp {
        kind: u8,
        code: u8,
        payload: Vec<u8>,
    },
}

impl L4 {
    pub fn bytes(&self, pseudo: Pseudo) -> Vec<u8> {
        match self {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                doff,
                payload,
            } => {
                let hdr = (*doff).max(5) as usize * 4;
                let mut b = vec![0u8; hdr + payload.len()];
                let mut t = MutableTcpPacket::new(&mut b).unwrap();
                t.set_source(*sport);
                t.set_destination(*dport);
                t.set_sequence(*seq);
                t.set_acknowledgement(*ack);
                t.set_data_offset(*doff);
                t.set_flags(*flags);
                t.set_window(64240);
                b[hdr..].copy_from_slice(payload);
                let mut t = MutableTcpPacket::new(&mut b).unwrap();
                let c = match pseudo {
                    Pseudo::V4(src, dst) => tcp::ipv4_checksum(&t.to_immutable(), &src, &dst),
                    Pseudo::V6(src, dst) => tcp::ipv6_checksum(&t.to_immutable(), &src, &dst),
                };
                t.set_checksum(c);
                b
            }
            L4::Udp {
                sport,
                dport,
                payload,
                zero_csum,
            } => {
                let mut b = vec![0u8; 8 + payload.len()];
                let mut u = MutableUdpPacket::new(&mut b).unwrap();
                u.set_source(*sport);
                u.set_destination(*dport);
                u.set_length((8 + payload.len()) as u16);
                u.set_payload(payload);
                if !zero_csum {
                    let c = match pseudo {
                        Pseudo::V4(src, dst) => udp::ipv4_checksum(&u.to_immutable(), &src, &dst),
                        Pseudo::V6(src, dst) => udp::ipv6_checksum(&u.to_immutable(), &src, &dst),
                    };
                    u.set_checksum(if c == 0 { 0xffff } else { c });
                }
                b
            }
            L4::Icmp {
                kind,
                code,
                payload,
            } => {
                let mut b = vec![0u8; 8 + payload.len()];
                b[0] = *kind;
                b[1] = *code;
                b[8..].copy_from_slice(payload);
                let c = match pseudo {
                    Pseudo::V4(..) => {
                        b[4..6].copy_from_slice(&[0x42, 0x42]); // echo id
                        b[6..8].copy_from_slice(&[0, 1]); // echo seq
                        icmp::checksum(&IcmpPacket::new(&b).unwrap())
                    }
                    // ICMPv6 covers a pseudo-header; its bytes 4..8 are the
                    // caller's (v6.rs).
                    Pseudo::V6(src, dst) => {
                        icmpv6::checksum(&Icmpv6Packet::new(&b).unwrap(), &src, &dst)
                    }
                };
                b[2..4].copy_from_slice(&c.to_be_bytes());
                b
            }
        }
    }
}

pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const PSH: u8 = 0x08;

#[derive(Clone, Debug)]
pub struct Pkt {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub vlan: Option<u16>,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub id: u16,
    /// (flags, fragment offset in 8-byte units)
    pub frag: (u8, u16),
    pub options: Vec<u8>,
    pub l4: L4,
    /// Bytes of Ethernet padding after the IP packet.
    pub pad: usize,
}

impl Pkt {
    pub fn tcp(
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        flags: u8,
        seq: u32,
        payload: &[u8],
    ) -> Self {
        Self::ip(
            src.0,
            dst.0,
            L4::Tcp {
                sport: src.1,
                dport: dst.1,
                seq,
                ack: 0,
                flags,
                doff: 5,
                payload: payload.to_vec(),
            },
        )
    }

    pub fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Self {
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

    pub fn ip(src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Self {
        Self {
            src_mac: [2, 0, 0, 0, 0, 0x99],
            dst_mac: [2, 0, 0, 0, 0, 0x01],
            vlan: None,
            src,
            dst,
            ttl: 64,
            id: 0x1234,
            frag: (0x2, 0), // DF
            options: Vec::new(),
            l4,
            pad: 0,
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        self.l4.bytes(Pseudo::V4(self.src, self.dst))
    }

    pub fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } => 1,
        }
    }

    /// The frame, with every checksum computed from scratch.
    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let ihl = 20 + self.options.len();
        let mut ipb = vec![0u8; ihl + l4.len()];
        {
            let mut ip = MutableIpv4Packet::new(&mut ipb).unwrap();
            ip.set_version(4);
            ip.set_header_length((ihl / 4) as u8);
            ip.set_total_length((ihl + l4.len()) as u16);
            ip.set_identification(self.id);
            ip.set_flags(self.frag.0);
            ip.set_fragment_offset(self.frag.1);
            ip.set_ttl(self.ttl);
            ip.set_next_level_protocol(pnet::packet::ip::IpNextHeaderProtocol(self.proto()));
            ip.set_source(self.src);
            ip.set_destination(self.dst);
        }
        ipb[20..ihl].copy_from_slice(&self.options);
        ipb[ihl..].copy_from_slice(&l4);
        {
            let mut ip = MutableIpv4Packet::new(&mut ipb).unwrap();
            let c = ipv4::checksum(&ip.to_immutable());
            ip.set_checksum(c);
        }
        let _ = IpNextHeaderProtocols::Tcp;
        let eth_len = if self.vlan.is_some() { 18 } else { 14 };
        let mut f = vec![0u8; eth_len + ipb.len() + self.pad];
        {
            let mut e = MutableEthernetPacket::new(&mut f).unwrap();
            e.set_destination(self.dst_mac.into());
            e.set_source(self.src_mac.into());
            match self.vlan {
                Some(vid) => {
                    e.set_ethertype(EtherTypes::Vlan);
                    let mut v = MutableVlanPacket::new(e.payload_mut()).unwrap();
                    v.set_vlan_identifier(vid);
                    v.set_ethertype(EtherTypes::Ipv4);
                }
                None => e.set_ethertype(EtherTypes::Ipv4),
            }
        }
        f[eth_len..eth_len + ipb.len()].copy_from_slice(&ipb);
        f
    }
}

/// Independent check that every checksum in an IPv4 frame verifies.
pub fn checksums_valid(frame: &[u8]) -> bool {
    let mut off = 14;
    if frame[12..14] == [0x81, 0x00] {
        off = 18;
    }
    let Some(ip) = pnet::packet::ipv4::Ipv4Packet::new(&frame[off..]) else {
        return false;
    };
    if ipv4::checksum(&ip) != ip.get_checksum() {
        return false;
    }
    // A fragment's TCP/UDP checksum covers the whole datagram: only the
    // fixture's expected bytes can judge it.
    if ip.get_flags() & 0x1 != 0 || ip.get_fragment_offset() != 0 {
        return true;
    }
    let l4 =
        &frame[off + ip.get_header_length() as usize * 4..off + ip.get_total_length() as usize];
    match ip.get_next_level_protocol().0 {
        6 => {
            let t = pnet::packet::tcp::TcpPacket::new(l4).unwrap();
            tcp::ipv4_checksum(&t, &ip.get_source(), &ip.get_destination()) == t.get_checksum()
        }
        17 => {
            let u = pnet::packet::udp::UdpPacket::new(l4).unwrap();
            u.get_checksum() == 0
                || udp::ipv4_checksum(&u, &ip.get_source(), &ip.get_destination())
                    == u.get_checksum()
                || (u.get_checksum() == 0xffff
                    && udp::ipv4_checksum(&u, &ip.get_source(), &ip.get_destination()) == 0)
        }
        1 => {
            let i = pnet::packet::icmp::IcmpPacket::new(l4).unwrap();
            icmp::checksum(&i) == i.get_checksum()
        }
        _ => true,
    }
}

#[allow(dead_code)]
pub fn ether(frame: &[u8]) -> EtherType {
    pnet::packet::ethernet::EthernetPacket::new(frame)
        .unwrap()
        .get_ethertype()
}
