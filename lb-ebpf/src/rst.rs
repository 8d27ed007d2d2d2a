//! A TCP RST for the client, made in place from the client's own packet and
//! sent back the way it came (`Pkt::tx`). Used when `purge` has removed the
//! flow: the client learns at its next packet instead of timing out.
use lb_common::{FlowKey, PROTO_TCP, reason};
use network_types::{eth::EthHdr, tcp::TcpHdr};

use crate::{
    csum,
    ctx::Pkt,
    family::Family,
    parse::{Facts, ptr_at},
};

const RST_TTL: u8 = 64;
const TCP_RST: u16 = 0x04;
const TCP_ACK: u16 = 0x10;

/// Rewrites the client's packet into the RST a server would send (RFC 793:
/// if the segment has an ACK, seq = SEG.ACK and no ACK flag; otherwise seq 0,
/// ACK = SEG.SEQ + SEG.LEN) and returns the verdict that sends it back.
/// Its own BPF function (see main.rs's to_vip on the stack limit).
#[inline(never)]
pub fn to_client<C: Pkt, F: Family>(
    ctx: &C,
    l3_off: usize,
    key: &FlowKey,
    p: &Facts,
) -> Result<u32, u32> {
    let (client, vip) = (&key.src_addr, &key.dst_addr);
    let (cport, vport) = (u16::from_be_bytes(p.sport), u16::from_be_bytes(p.dport));
    let (seq, ack, tcp_flags) = if p.flags.ack {
        (p.ack, 0, TCP_RST)
    } else {
        let len = p.payload_len + p.flags.syn as u32 + p.flags.fin as u32;
        (0, p.seq.wrapping_add(len), TCP_RST | TCP_ACK)
    };

    // Cut the frame to its headers: Ethernet (+tag), IP, 20 bytes of TCP.
    let want = l3_off + F::HDR_LEN + TcpHdr::LEN;
    let have = ctx.len();
    if have > want && !ctx.resize(want, 0) {
        return Err(reason::DROP_BAD_L4);
    }
    // Resizing invalidates every packet pointer: derive them again.
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| reason::DROP_BAD_L4)?;
    let ip: *mut F::Hdr = ptr_at(ctx, l3_off).map_err(|_| reason::DROP_BAD_L4)?;
    let tcp: *mut TcpHdr = ptr_at(ctx, l3_off + F::HDR_LEN).map_err(|_| reason::DROP_BAD_L4)?;

    let hdr_word = (5u16 << 12) | tcp_flags;
    let l4_len = TcpHdr::LEN as u16;
    // The header's words, the checksum's and the zero window's left out.
    let tcp_sum = vport as u32
        + cport as u32
        + (seq >> 16)
        + (seq & 0xffff)
        + (ack >> 16)
        + (ack & 0xffff)
        + hdr_word as u32;
    let check = csum::fold_inverted(F::pseudo_sum(vip, client, PROTO_TCP, l4_len) + tcp_sum);
    // SAFETY: all three headers were just bounds checked.
    unsafe {
        core::mem::swap(&mut (*eth).src_addr, &mut (*eth).dst_addr);
        F::write_header(&mut *ip, vip, client, PROTO_TCP, l4_len, RST_TTL);
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
        t.check = check;
    }
    Ok(ctx.answer())
}
