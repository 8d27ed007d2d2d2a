//! Header parsing. One bounds-check helper (`ptr_at`), one check per header.
use core::mem::size_of;
use lb_common::{PROTO_TCP, PROTO_UDP, reason};
use network_types::{eth::EthHdr, tcp::TcpHdr, udp::UdpHdr, vlan::VlanHdr};

use crate::{
    ctx::Pkt,
    family::{Family, V4},
};

const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
const ETH_P_8021Q: [u8; 2] = [0x81, 0x00];
const ETH_P_8021AD: [u8; 2] = [0x88, 0xa8];

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

/// The IP header of a frame (IPv4 unless named) and where it starts.
pub struct L3<F: Family = V4> {
    pub eth: *mut EthHdr,
    pub off: usize,
    pub ip: *mut F::Hdr,
}

impl<F: Family> L3<F> {
    /// The headers again at a known offset, inside a BPF function of its
    /// own: packet pointers are not passed across BPF calls (the verifier
    /// loses their type once they sit in a caller's stack frame), offsets are.
    #[inline(always)]
    pub fn at<C: Pkt>(ctx: &C, off: usize) -> Result<Self, u32> {
        let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| reason::PASS_BAD_L2)?;
        let ip: *mut F::Hdr = ptr_at(ctx, off).map_err(|_| F::BAD)?;
        Ok(L3 { eth, off, ip })
    }

    /// The header, checked well formed (`Family::valid`).
    #[inline(always)]
    pub fn checked<C: Pkt>(ctx: &C, off: usize) -> Result<Self, u32> {
        let l3 = Self::at(ctx, off)?;
        // SAFETY: bounds checked by ptr_at.
        if !F::valid(unsafe { &*l3.ip }, off, ctx.len()) {
            return Err(F::BAD);
        }
        Ok(l3)
    }
}

/// The frame's IP family and where its header starts. At most one
/// 802.1Q/802.1ad tag is understood; the tag stays in place and goes out
/// with the frame.
pub enum Ip {
    V4(usize),
    V6(usize),
}

#[inline(always)]
pub fn l2<C: Pkt>(ctx: &C) -> Result<Ip, u32> {
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
    match ether_type {
        ETH_P_IP => Ok(Ip::V4(off)),
        ETH_P_IPV6 => Ok(Ip::V6(off)),
        _ => Err(reason::PASS_NOT_IPV4),
    }
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
    /// The IP packet's length, for byte counters.
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

/// The TCP/UDP header after a plain IP header (`Family::plain`). Callers
/// have already refused later fragments (a first fragment has its header).
#[inline(always)]
pub fn l4<C: Pkt, F: Family>(ctx: &C, l3: &L3<F>) -> Result<L4, ()> {
    // SAFETY: bounds checked by `l3`.
    let ip = unsafe { &*l3.ip };
    let ip_len = F::ip_len(ip);
    let l4_len = (ip_len as u32).checked_sub(F::HDR_LEN as u32).ok_or(())?;
    let off = l3.off + F::HDR_LEN;
    match F::proto(ip) {
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
            let first_fragment = F::first_fragment(ip);
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
