//! Header parsing. One bounds-check helper (`ptr_at`), one check per header.
use core::mem::size_of;
use lb_common::{PROTO_TCP, PROTO_UDP, reason};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr, vlan::VlanHdr};

use crate::ctx::Pkt;

const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const ETH_P_8021Q: [u8; 2] = [0x81, 0x00];
const ETH_P_8021AD: [u8; 2] = [0x88, 0xa8];
pub const PROTO_ICMP: u8 = 1;

/// A pointer to a `T` at `offset` into the packet, if the packet holds it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &impl Pkt, offset: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *mut T)
}

/// The IPv4 header of a frame and where it starts. At most one 802.1Q/802.1ad
/// tag is understood; the tag stays in place and goes out with the frame.
pub struct L3 {
    pub eth: *mut EthHdr,
    pub off: usize,
    pub ip: *mut Ipv4Hdr,
}

impl L3 {
    /// The headers again at a known offset, inside a BPF function of its
    /// own: packet pointers are not passed across BPF calls (the verifier
    /// loses their type once they sit in a caller's stack frame), offsets are.
    #[inline(always)]
    pub fn at<C: Pkt>(ctx: &C, off: usize) -> Result<L3, u32> {
        let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| reason::PASS_BAD_L2)?;
        let ip: *mut Ipv4Hdr = ptr_at(ctx, off).map_err(|_| reason::PASS_BAD_IPV4)?;
        Ok(L3 { eth, off, ip })
    }
}

#[inline(always)]
pub fn l3<C: Pkt>(ctx: &C) -> Result<L3, u32> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| reason::PASS_BAD_L2)?;
    // SAFETY: bounds checked by ptr_at.
    let mut ether_type = unsafe { (*eth).ether_type }.to_ne_bytes();
    let mut off = EthHdr::LEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let vlan: *mut VlanHdr = ptr_at(ctx, off).map_err(|_| reason::PASS_BAD_L2)?;
        // SAFETY: bounds checked by ptr_at.
        ether_type = unsafe { (*vlan).ether_type }.to_ne_bytes();
        off += VlanHdr::LEN;
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            return Err(reason::PASS_BAD_L2);
        }
    }
    if ether_type != ETH_P_IP {
        return Err(reason::PASS_NOT_IPV4);
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, off).map_err(|_| reason::PASS_BAD_IPV4)?;
    // SAFETY: bounds checked by ptr_at.
    let hdr = unsafe { &*ip };
    let ihl = (hdr.vihl & 0x0f) as usize * 4;
    let tot_len = u16::from_be_bytes(hdr.tot_len) as usize;
    // Ethernet may pad short frames, so the frame may be longer than tot_len,
    // never shorter.
    if hdr.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || tot_len < ihl || off + tot_len > ctx.len() {
        return Err(reason::PASS_BAD_IPV4);
    }
    Ok(L3 { eth, off, ip })
}

/// The parts of a TCP or UDP packet the balancer reads and rewrites.
pub struct L4 {
    pub proto: u8,
    /// Where the TCP/UDP header starts in the frame.
    pub off: usize,
    pub tcp: *mut TcpHdr,
    pub udp: *mut UdpHdr,
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// IPv4 total length, for byte counters.
    pub ip_len: u16,
    /// TCP only: payload length (for sequence tracking).
    pub payload_len: u32,
}

impl L4 {
    #[inline(always)]
    pub fn check(&self) -> [u8; 2] {
        // SAFETY: the pointer matching `proto` was bounds checked in `l4`.
        unsafe {
            if self.proto == PROTO_TCP {
                (*self.tcp).check
            } else {
                (*self.udp).check
            }
        }
    }

    /// Where the checksum field sits in the frame.
    #[inline(always)]
    pub fn check_off(&self) -> usize {
        self.off + if self.proto == PROTO_TCP { 16 } else { 6 }
    }

    #[inline(always)]
    pub fn set_check(&self, check: [u8; 2]) {
        // SAFETY: as in `check`.
        unsafe {
            if self.proto == PROTO_TCP {
                (*self.tcp).check = check;
            } else {
                (*self.udp).check = check;
            }
        }
    }
}

/// The TCP/UDP header after an option-less IPv4 header. Callers have already
/// refused IPv4 options and later fragments (a first fragment has its
/// header).
#[inline(always)]
pub fn l4<C: Pkt>(ctx: &C, l3: &L3) -> Result<L4, ()> {
    // SAFETY: bounds checked by `l3`.
    let ip = unsafe { &*l3.ip };
    let ip_len = u16::from_be_bytes(ip.tot_len);
    let l4_len = ip_len as u32 - Ipv4Hdr::LEN as u32;
    let off = l3.off + Ipv4Hdr::LEN;
    match ip.proto {
        PROTO_TCP => {
            let tcp: *mut TcpHdr = ptr_at(ctx, off)?;
            // SAFETY: bounds checked by ptr_at.
            let t = unsafe { &*tcp };
            let doff = t.doff() as u32 * 4;
            if doff < TcpHdr::LEN as u32 || doff > l4_len {
                return Err(());
            }
            Ok(L4 {
                proto: PROTO_TCP,
                off,
                tcp,
                udp: core::ptr::null_mut(),
                sport: t.source,
                dport: t.dest,
                ip_len,
                payload_len: l4_len - doff,
            })
        }
        PROTO_UDP => {
            let udp: *mut UdpHdr = ptr_at(ctx, off)?;
            // SAFETY: bounds checked by ptr_at.
            let u = unsafe { &*udp };
            let len = u16::from_be_bytes(u.len) as u32;
            // A first fragment carries only part of the datagram its
            // length counts.
            let first_fragment = ip.frags[0] & 0x20 != 0;
            if len < UdpHdr::LEN as u32 || (len > l4_len && !first_fragment) {
                return Err(());
            }
            Ok(L4 {
                proto: PROTO_UDP,
                off,
                tcp: core::ptr::null_mut(),
                udp,
                sport: u.src,
                dport: u.dst,
                ip_len,
                payload_len: 0,
            })
        }
        _ => Err(()),
    }
}

/// TCP flags the state machine looks at.
#[derive(Clone, Copy)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

#[inline(always)]
pub fn tcp_flags(l4: &L4) -> TcpFlags {
    if l4.proto != PROTO_TCP {
        return TcpFlags {
            syn: false,
            ack: false,
            fin: false,
            rst: false,
        };
    }
    // SAFETY: TCP header bounds checked in `l4`.
    let t = unsafe { &*l4.tcp };
    TcpFlags {
        syn: t.syn() != 0,
        ack: t.ack() != 0,
        fin: t.fin() != 0,
        rst: t.rst() != 0,
    }
}

/// What the flow table needs of a TCP/UDP packet: scalars only, so it can
/// be handed to other BPF functions (see `L3::at`).
#[derive(Clone, Copy)]
pub struct Facts {
    pub proto: u8,
    pub flags: TcpFlags,
    pub ip_len: u16,
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// TCP: the segment's sequence and acknowledgement numbers, payload
    /// length, and the next sequence number its sender will use.
    pub seq: u32,
    pub ack: u32,
    pub payload_len: u32,
    pub seq_next: u32,
}

impl L4 {
    #[inline(always)]
    pub fn facts(&self) -> Facts {
        let flags = tcp_flags(self);
        let (seq, ack) = if self.proto == PROTO_TCP {
            // SAFETY: TCP header bounds checked in `l4`.
            let t = unsafe { &*self.tcp };
            (u32::from_be_bytes(t.seq), u32::from_be_bytes(t.ack_seq))
        } else {
            (0, 0)
        };
        let seq_next = seq
            .wrapping_add(self.payload_len)
            .wrapping_add(flags.syn as u32)
            .wrapping_add(flags.fin as u32);
        Facts {
            proto: self.proto,
            flags,
            ip_len: self.ip_len,
            sport: self.sport,
            dport: self.dport,
            seq,
            ack,
            payload_len: self.payload_len,
            seq_next,
        }
    }
}
