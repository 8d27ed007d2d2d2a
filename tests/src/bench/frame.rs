//! Ethernet frames for BPF_PROG_TEST_RUN, checksums computed by pnet (the
//! datapath's incremental updates must start from valid sums): IPv4 TCP
//! segments, UDP datagrams and their fragments, ICMP errors quoting a packet
//! (the builders of tests/tests/datapath/edges.rs), and IPv6 TCP segments.
use std::net::{Ipv4Addr, Ipv6Addr};

use pnet::packet::{
    MutablePacket,
    ethernet::{EtherTypes, MutableEthernetPacket},
    icmp::{self, MutableIcmpPacket},
    ip::{IpNextHeaderProtocol, IpNextHeaderProtocols},
    ipv4::{self, MutableIpv4Packet},
    ipv6::MutableIpv6Packet,
    tcp::{self, MutableTcpPacket},
    udp::{self, MutableUdpPacket},
};

pub type Mac = [u8; 6];

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

/// IPv4's Don't Fragment flag (fragments: lb_tests::frames).
pub const DF: u8 = 0x2;

/// One TCP segment between two endpoints, with the MACs of the hop it
/// arrives on.
#[derive(Clone, Copy)]
pub struct Tcp {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
}

impl Tcp {
    /// The frame: 14 + 20 + 20 bytes, no payload (the smallest segment, as
    /// in Katran's perf fixtures; payload size does not change XDP's work).
    pub fn build(&self) -> Vec<u8> {
        self.build_with(&[], 64)
    }

    /// The frame with `payload` after the TCP header, sent with `ttl`.
    pub fn build_with(&self, payload: &[u8], ttl: u8) -> Vec<u8> {
        let seg = segment(
            self.src.1,
            self.dst.1,
            self.flags,
            (self.seq, self.ack),
            payload,
            |t| tcp::ipv4_checksum(t, &self.src.0, &self.dst.0),
        );
        let ip = Ip {
            ttl,
            ..Ip::new(self.src.0, self.dst.0)
        };
        ipv4_frame(
            self.src_mac,
            self.dst_mac,
            &ip,
            IpNextHeaderProtocols::Tcp,
            &seg,
        )
    }
}

/// [`Tcp`] over IPv6: a 40-byte header, no extension header, hop limit 64.
#[derive(Clone, Copy)]
pub struct Tcp6 {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: (Ipv6Addr, u16),
    pub dst: (Ipv6Addr, u16),
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
}

impl Tcp6 {
    /// The frame: 14 + 40 + 20 bytes.
    pub fn build(&self) -> Vec<u8> {
        let seg = segment(
            self.src.1,
            self.dst.1,
            self.flags,
            (self.seq, self.ack),
            &[],
            |t| tcp::ipv6_checksum(t, &self.src.0, &self.dst.0),
        );
        let mut f = vec![0u8; 14 + 40 + seg.len()];
        {
            let mut e = MutableEthernetPacket::new(&mut f).expect("frame size");
            e.set_destination(self.dst_mac.into());
            e.set_source(self.src_mac.into());
            e.set_ethertype(EtherTypes::Ipv6);
        }
        let mut ip = MutableIpv6Packet::new(&mut f[14..]).expect("frame size");
        ip.set_version(6);
        ip.set_payload_length(seg.len() as u16);
        ip.set_next_header(IpNextHeaderProtocols::Tcp);
        ip.set_hop_limit(64);
        ip.set_source(self.src.0);
        ip.set_destination(self.dst.0);
        ip.payload_mut().copy_from_slice(&seg);
        f
    }
}

/// A TCP header (window 64240, no options) and `payload`, its checksum
/// computed by `sum`, which knows the pseudo-header's family.
fn segment(
    sport: u16,
    dport: u16,
    flags: u8,
    (seq, ack): (u32, u32),
    payload: &[u8],
    sum: impl Fn(&tcp::TcpPacket) -> u16,
) -> Vec<u8> {
    let mut seg = vec![0u8; 20 + payload.len()];
    seg[20..].copy_from_slice(payload);
    let mut t = MutableTcpPacket::new(&mut seg).expect("segment size");
    t.set_source(sport);
    t.set_destination(dport);
    t.set_sequence(seq);
    t.set_acknowledgement(ack);
    t.set_data_offset(5);
    t.set_flags(flags);
    t.set_window(64240);
    let c = sum(&t.to_immutable());
    t.set_checksum(c);
    seg
}

/// The IPv4 header fields the frames here vary.
#[derive(Clone, Copy)]
pub struct Ip {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub tos: u8,
    pub id: u16,
    /// `DF` or none.
    pub flags: u8,
    pub ttl: u8,
}

impl Ip {
    /// DF set, TTL 64, id 1: what the TCP frames above carry.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Ip {
            src,
            dst,
            tos: 0,
            id: 1,
            flags: DF,
            ttl: 64,
        }
    }
}

/// An Ethernet frame carrying one IPv4 packet (a 20-byte header, then
/// `l4`), the header checksum computed.
pub fn ipv4_frame(
    src_mac: Mac,
    dst_mac: Mac,
    h: &Ip,
    proto: IpNextHeaderProtocol,
    l4: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + l4.len()];
    {
        let mut e = MutableEthernetPacket::new(&mut f).expect("frame size");
        e.set_destination(dst_mac.into());
        e.set_source(src_mac.into());
        e.set_ethertype(EtherTypes::Ipv4);
    }
    {
        let mut ip = MutableIpv4Packet::new(&mut f[14..]).expect("frame size");
        ip.set_version(4);
        ip.set_header_length(5);
        ip.set_dscp(h.tos >> 2);
        ip.set_total_length((20 + l4.len()) as u16);
        ip.set_identification(h.id);
        ip.set_flags(h.flags);
        ip.set_ttl(h.ttl);
        ip.set_next_level_protocol(proto);
        ip.set_source(h.src);
        ip.set_destination(h.dst);
        ip.payload_mut().copy_from_slice(l4);
        let c = ipv4::checksum(&ip.to_immutable());
        ip.set_checksum(c);
    }
    f
}

/// A UDP datagram's frame, its checksum computed over the whole payload.
pub fn udp_frame(
    src_mac: Mac,
    dst_mac: Mac,
    h: &Ip,
    (sport, dport): (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut d = vec![0u8; 8 + payload.len()];
    {
        let mut u = MutableUdpPacket::new(&mut d).expect("datagram size");
        u.set_source(sport);
        u.set_destination(dport);
        u.set_length((8 + payload.len()) as u16);
        u.set_payload(payload);
        let c = udp::ipv4_checksum(&u.to_immutable(), &h.src, &h.dst);
        u.set_checksum(if c == 0 { 0xffff } else { c });
    }
    ipv4_frame(src_mac, dst_mac, h, IpNextHeaderProtocols::Udp, &d)
}

/// An ICMP error `kind`/`code` (its four bytes after the checksum `rest`:
/// unused, or the next-hop MTU) quoting the first `quote` bytes of the IPv4
/// packet in `inner` (a frame), as the message's frame.
pub fn icmp_error_frame(
    src_mac: Mac,
    dst_mac: Mac,
    h: &Ip,
    (kind, code, rest): (u8, u8, [u8; 4]),
    inner: &[u8],
    quote: usize,
) -> Vec<u8> {
    let mut m = vec![0u8; 8 + quote];
    m[0] = kind;
    m[1] = code;
    m[4..8].copy_from_slice(&rest);
    m[8..].copy_from_slice(&inner[14..14 + quote]);
    {
        let mut i = MutableIcmpPacket::new(&mut m).expect("message size");
        let c = icmp::checksum(&i.to_immutable());
        i.set_checksum(c);
    }
    ipv4_frame(src_mac, dst_mac, h, IpNextHeaderProtocols::Icmp, &m)
}

/// Sets an IPv4 frame's identification, its header checksum recomputed.
pub fn set_ip_id(frame: &mut [u8], id: u16) {
    let mut p = MutableIpv4Packet::new(&mut frame[14..]).expect("an IPv4 frame");
    p.set_identification(id);
    let c = ipv4::checksum(&p.to_immutable());
    p.set_checksum(c);
}
