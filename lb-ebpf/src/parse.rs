//! Header parsing. One bounds-check helper (`ptr_at`), one check per header.
use core::mem::size_of;
use lb_common::{PROTO_TCP, PROTO_UDP, reason};
use network_types::{eth::EthHdr, tcp::TcpHdr, udp::UdpHdr, vlan::VlanHdr};

use crate::{
    ctx::Pkt,
    family::{Family, Transport, V4},
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

/// The parts of a TCP or UDP packet the balancer reads and rewrites. The
/// TCP fields are read once, by `l4`; what is written later goes through
/// pointers valid whatever the protocol (the ports lie at the same offsets
/// in both headers, `check` is each one's checksum field), because the
/// verifier cannot always tell `proto` on a path (it may reach a function
/// as a byte of a wider register) and must find every access safe.
pub struct L4 {
    pub proto: u8,
    /// The header's first 8 bytes (UDP's whole header): the ports.
    ports: *mut [[u8; 2]; 4],
    /// The checksum field, and where it sits in the frame.
    check: *mut [u8; 2],
    pub check_off: usize,
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// The IP packet's length, for byte counters.
    pub ip_len: u16,
    /// TCP only: flags, sequence and acknowledgement numbers, payload
    /// length (for sequence tracking).
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
    pub payload_len: u32,
}

impl L4 {
    #[inline(always)]
    pub fn is_tcp(&self) -> bool {
        self.proto == PROTO_TCP
    }

    #[inline(always)]
    pub fn check(&self) -> [u8; 2] {
        // SAFETY: bounds checked in `l4`.
        unsafe { *self.check }
    }

    #[inline(always)]
    pub fn set_check(&self, check: [u8; 2]) {
        // SAFETY: bounds checked in `l4`.
        unsafe { *self.check = check }
    }

    /// Writes the destination (`dst`) or source port.
    #[inline(always)]
    pub fn set_port(&self, port: [u8; 2], dst: bool) {
        // SAFETY: bounds checked in `l4`.
        unsafe { (*self.ports)[dst as usize] = port }
    }
}

/// The TCP/UDP header of a plain packet, where `t` (`Family::walk`) says.
/// Callers have already refused later fragments (a first fragment has its
/// header).
#[inline(always)]
pub fn l4<C: Pkt, F: Family>(ctx: &C, l3: &L3<F>, t: &Transport) -> Result<L4, ()> {
    // SAFETY: bounds checked by `l3`.
    let ip = unsafe { &*l3.ip };
    let ip_len = F::ip_len(ip);
    let hdrs = F::HDR_LEN as u32 + t.ext_len as u32;
    let l4_len = (ip_len as u32).checked_sub(hdrs).ok_or(())?;
    let off = l3.off + F::HDR_LEN + t.ext_len as usize;
    match t.proto {
        PROTO_TCP => {
            let tcp: *mut TcpHdr = ptr_at(ctx, off)?;
            // SAFETY: bounds checked by ptr_at.
            let h = unsafe { &mut *tcp };
            let doff = h.doff() as u32 * 4;
            if doff < TcpHdr::LEN as u32 || doff > l4_len {
                return Err(());
            }
            Ok(L4 {
                proto: PROTO_TCP,
                ports: tcp.cast(),
                check: &mut h.check,
                check_off: off + 16,
                sport: h.source,
                dport: h.dest,
                ip_len,
                flags: TcpFlags {
                    syn: h.syn() != 0,
                    ack: h.ack() != 0,
                    fin: h.fin() != 0,
                    rst: h.rst() != 0,
                },
                seq: u32::from_be_bytes(h.seq),
                ack: u32::from_be_bytes(h.ack_seq),
                payload_len: l4_len - doff,
            })
        }
        PROTO_UDP => {
            let udp: *mut UdpHdr = ptr_at(ctx, off)?;
            // SAFETY: bounds checked by ptr_at.
            let u = unsafe { &mut *udp };
            let len = u16::from_be_bytes(u.len) as u32;
            // A first fragment carries only part of the datagram its
            // length counts.
            let first_fragment = t.first_fragment();
            if len < UdpHdr::LEN as u32 || (len > l4_len && !first_fragment) {
                return Err(());
            }
            Ok(L4 {
                proto: PROTO_UDP,
                ports: udp.cast(),
                check: &mut u.check,
                check_off: off + 6,
                sport: u.src,
                dport: u.dst,
                ip_len,
                flags: TcpFlags::default(),
                seq: 0,
                ack: 0,
                payload_len: 0,
            })
        }
        _ => Err(()),
    }
}

/// TCP flags the state machine looks at.
#[derive(Clone, Copy, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
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
        let (flags, seq, ack) = (self.flags, self.seq, self.ack);
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
