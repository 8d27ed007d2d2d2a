//! Frame surgery shared by the datapath fixtures and the bench: what both
//! need of a built frame that their own builders do not make.
use pnet::packet::ipv4::{self, MutableIpv4Packet};

/// More Fragments, in the IPv4 header's 3-bit flags.
const MF: u8 = 0x1;

/// An untagged frame's IPv4 datagram cut into fragments of at most `max`
/// payload bytes (a multiple of 8), each with its own header and checksum,
/// as a sending kernel cuts it.
pub fn fragments(frame: &[u8], max: usize) -> Vec<Vec<u8>> {
    assert_eq!(max % 8, 0, "fragment payloads are multiples of 8 bytes");
    let (eth, ip) = frame.split_at(14);
    let (hdr, payload) = ip.split_at(20);
    let chunks: Vec<&[u8]> = payload.chunks(max).collect();
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = [eth, hdr, chunk].concat();
            let mut p = MutableIpv4Packet::new(&mut f[14..]).expect("fragment size");
            p.set_total_length((20 + chunk.len()) as u16);
            p.set_flags(if i < last { MF } else { 0 });
            p.set_fragment_offset((i * max / 8) as u16);
            let c = ipv4::checksum(&p.to_immutable());
            p.set_checksum(c);
            f
        })
        .collect()
}
