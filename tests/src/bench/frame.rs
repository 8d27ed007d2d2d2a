//! TCP/IPv4 Ethernet frames for BPF_PROG_TEST_RUN, checksums computed by
//! pnet (the datapath's incremental updates must start from valid sums).
use std::net::Ipv4Addr;

use pnet::packet::{
    MutablePacket,
    ethernet::{EtherTypes, MutableEthernetPacket},
    ip::IpNextHeaderProtocols,
    ipv4::{self, MutableIpv4Packet},
    tcp::{self, MutableTcpPacket},
};

pub type Mac = [u8; 6];

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

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
        let mut f = vec![0u8; 14 + 20 + 20];
        {
            let mut e = MutableEthernetPacket::new(&mut f).expect("frame size");
            e.set_destination(self.dst_mac.into());
            e.set_source(self.src_mac.into());
            e.set_ethertype(EtherTypes::Ipv4);
        }
        {
            let mut ip = MutableIpv4Packet::new(&mut f[14..]).expect("frame size");
            ip.set_version(4);
            ip.set_header_length(5);
            ip.set_total_length(40);
            ip.set_identification(1);
            ip.set_flags(2); // DF
            ip.set_ttl(64);
            ip.set_next_level_protocol(IpNextHeaderProtocols::Tcp);
            ip.set_source(self.src.0);
            ip.set_destination(self.dst.0);
            let c = ipv4::checksum(&ip.to_immutable());
            ip.set_checksum(c);
            let mut t = MutableTcpPacket::new(ip.payload_mut()).expect("frame size");
            t.set_source(self.src.1);
            t.set_destination(self.dst.1);
            t.set_sequence(self.seq);
            t.set_acknowledgement(self.ack);
            t.set_data_offset(5);
            t.set_flags(self.flags);
            t.set_window(64240);
            let c = tcp::ipv4_checksum(&t.to_immutable(), &self.src.0, &self.dst.0);
            t.set_checksum(c);
        }
        f
    }
}
