//! A TCP RST for the client, made in place from the client's own packet and
//! sent back the way it came (`Pkt::tx`). Used when `purge` has removed the
//! flow: the client learns at its next packet instead of timing out.
use lb_common::{FlowKey, PROTO_TCP, reason};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr};

use crate::{
    ctx::Pkt,
    parse::{Facts, ptr_at},
};

const RST_TTL: u8 = 64;
const TCP_RST: u16 = 0x04;
const TCP_ACK: u16 = 0x10;

/// The one's-complement sum of 16-bit words, folded and inverted.
#[inline(always)]
fn checksum(words: &[u16]) -> [u8; 2] {
    let mut sum: u32 = 0;
    for w in words {
        sum += *w as u32;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

#[inline(always)]
fn hi(v: u32) -> u16 {
    (v >> 16) as u16
}

#[inline(always)]
fn lo(v: u32) -> u16 {
    v as u16
}

/// Rewrites the client's packet into the RST a server would send (RFC 793:
/// if the segment has an ACK, seq = SEG.ACK and no ACK flag; otherwise seq 0,
/// ACK = SEG.SEQ + SEG.LEN) and returns the verdict that sends it back.
/// Its own BPF function (see main.rs's to_vip on the stack limit).
#[inline(never)]
pub fn to_client<C: Pkt>(ctx: &C, l3_off: usize, key: &FlowKey, p: &Facts) -> Result<u32, u32> {
    let client: [u8; 4] = [
        key.src_addr[12],
        key.src_addr[13],
        key.src_addr[14],
        key.src_addr[15],
    ];
    let vip: [u8; 4] = [
        key.dst_addr[12],
        key.dst_addr[13],
        key.dst_addr[14],
        key.dst_addr[15],
    ];
    let (cport, vport) = (u16::from_be_bytes(p.sport), u16::from_be_bytes(p.dport));
    let (seq, ack, tcp_flags) = if p.flags.ack {
        (p.ack, 0, TCP_RST)
    } else {
        let len = p.payload_len + p.flags.syn as u32 + p.flags.fin as u32;
        (0, p.seq.wrapping_add(len), TCP_RST | TCP_ACK)
    };

    // Cut the frame to its headers: Ethernet (+tag), IPv4, 20 bytes of TCP.
    let want = l3_off + Ipv4Hdr::LEN + TcpHdr::LEN;
    let have = ctx.len();
    if have > want && !ctx.resize(want, 0) {
        return Err(reason::DROP_BAD_L4);
    }
    // Resizing invalidates every packet pointer: derive them again.
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| reason::DROP_BAD_L4)?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, l3_off).map_err(|_| reason::DROP_BAD_L4)?;
    let tcp: *mut TcpHdr = ptr_at(ctx, l3_off + Ipv4Hdr::LEN).map_err(|_| reason::DROP_BAD_L4)?;

    let src = u32::from_be_bytes(vip);
    let dst = u32::from_be_bytes(client);
    let ip_words = [
        0x4500,
        40,
        0,
        0x4000,
        (RST_TTL as u16) << 8 | PROTO_TCP as u16,
        0,
        hi(src),
        lo(src),
        hi(dst),
        lo(dst),
    ];
    let hdr_word = (5u16 << 12) | tcp_flags;
    let tcp_words = [
        // pseudo-header
        hi(src),
        lo(src),
        hi(dst),
        lo(dst),
        PROTO_TCP as u16,
        TcpHdr::LEN as u16,
        // header
        vport,
        cport,
        hi(seq),
        lo(seq),
        hi(ack),
        lo(ack),
        hdr_word,
        0,
        0,
        0,
    ];
    // SAFETY: all three headers were just bounds checked.
    unsafe {
        core::mem::swap(&mut (*eth).src_addr, &mut (*eth).dst_addr);
        let ip = &mut *ip;
        ip.vihl = 0x45;
        ip.tos = 0;
        ip.tot_len = 40u16.to_be_bytes();
        ip.id = [0, 0];
        ip.frags = [0x40, 0];
        ip.ttl = RST_TTL;
        ip.proto = PROTO_TCP;
        ip.src_addr = vip;
        ip.dst_addr = client;
        ip.check = checksum(&ip_words);
        let t = &mut *tcp;
        t.source = vport.to_be_bytes();
        t.dest = cport.to_be_bytes();
        t.seq = seq.to_be_bytes();
        t.ack_seq = ack.to_be_bytes();
        // Data offset 5, the flags, window 0, urgent 0.
        let bytes = hdr_word.to_be_bytes();
        let raw = (t as *mut TcpHdr).cast::<u8>();
        *raw.add(12) = bytes[0];
        *raw.add(13) = bytes[1];
        t.window = [0, 0];
        t.urg_ptr = [0, 0];
        t.check = checksum(&tcp_words);
    }
    Ok(ctx.tx())
}
