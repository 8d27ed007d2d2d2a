//! Incremental Internet checksum updates (RFC 1624, eqn. 3:
//! HC' = ~(~HC + ~m + m')). Checksums, addresses and ports stay as the
//! big-endian bytes they are on the wire; 16-bit words are read big-endian
//! throughout, which is all one's-complement arithmetic needs.

#[inline(always)]
fn word(b: [u8; 2]) -> u32 {
    ((b[0] as u32) << 8) | b[1] as u32
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    // Two folds bring any sum of up to 65537 16-bit words below 0x10000;
    // written out because the verifier wants no unbounded loop.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

#[inline(always)]
fn finish(check: [u8; 2], sum_of_changes: u32) -> [u8; 2] {
    let sum = (!word(check) & 0xffff) + sum_of_changes;
    (!fold(sum)).to_be_bytes()
}

/// The checksum after one 16-bit field changed from `old` to `new`.
#[inline(always)]
pub fn replace2(check: [u8; 2], old: [u8; 2], new: [u8; 2]) -> [u8; 2] {
    finish(check, (!word(old) & 0xffff) + word(new))
}

/// The checksum after one 32-bit field (an IPv4 address) changed.
#[inline(always)]
pub fn replace4(check: [u8; 2], old: [u8; 4], new: [u8; 4]) -> [u8; 2] {
    let changes = (!word([old[0], old[1]]) & 0xffff)
        + (!word([old[2], old[3]]) & 0xffff)
        + word([new[0], new[1]])
        + word([new[2], new[3]]);
    finish(check, changes)
}

/// The L4 checksum after an address and a port changed (both are covered:
/// the address through the pseudo-header).
#[inline(always)]
pub fn replace_addr_port(
    check: [u8; 2],
    old_addr: [u8; 4],
    new_addr: [u8; 4],
    old_port: [u8; 2],
    new_port: [u8; 2],
) -> [u8; 2] {
    replace2(replace4(check, old_addr, new_addr), old_port, new_port)
}
