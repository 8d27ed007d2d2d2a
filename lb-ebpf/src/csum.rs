//! Incremental Internet checksum updates (RFC 1624, eqn. 3:
//! HC' = ~(~HC + ~m + m')). Checksums, addresses and ports stay as the
//! big-endian bytes they are on the wire; 16-bit words are read big-endian
//! throughout, which is all one's-complement arithmetic needs.
use aya_ebpf::helpers::generated::bpf_csum_diff;
use core::ptr::null_mut;

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

/// The checksum after the changes summed in `sum_of_changes` (`change`).
#[inline(always)]
pub fn apply(check: [u8; 2], sum_of_changes: u32) -> [u8; 2] {
    let sum = (!word(check) & 0xffff) + sum_of_changes;
    (!fold(sum)).to_be_bytes()
}

/// The checksum after one 16-bit field changed from `old` to `new`.
#[inline(always)]
pub fn replace2(check: [u8; 2], old: [u8; 2], new: [u8; 2]) -> [u8; 2] {
    apply(check, change2(old, new))
}

/// `change` for a 16-bit field.
#[inline(always)]
pub fn change2(old: [u8; 2], new: [u8; 2]) -> u32 {
    (!word(old) & 0xffff) + word(new)
}

/// The checksum after one 32-bit field (an IPv4 address) changed.
#[inline(always)]
pub fn replace4(check: [u8; 2], old: [u8; 4], new: [u8; 4]) -> [u8; 2] {
    apply(check, change(old, new))
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

/// The checksum of data whose 16-bit words (read big-endian) sum to `sum`
/// (at most 65537 words): folded and inverted, as stored on the wire.
#[inline(always)]
pub fn fold_inverted(sum: u32) -> [u8; 2] {
    (!fold(sum)).to_be_bytes()
}

/// The sum of four bytes' two 16-bit words, read big-endian.
#[inline(always)]
pub fn sum4(a: [u8; 4]) -> u32 {
    word([a[0], a[1]]) + word([a[2], a[3]])
}

/// What a checksum over four bytes changes by when they go from `old` to
/// `new` (RFC 1624: ~m + m'), for `apply`. Sums of several changes add up.
#[inline(always)]
pub fn change(old: [u8; 4], new: [u8; 4]) -> u32 {
    (!word([old[0], old[1]]) & 0xffff) + (!word([old[2], old[3]]) & 0xffff) + sum4(new)
}

/// The sum of an IPv6 address's 16-bit words, read big-endian, folded.
/// By the kernel's helper: byte by byte in BPF, 16 bytes take registers
/// enough to spill onto the stack.
#[inline(always)]
pub fn sum16(a: &[u8; 16]) -> u32 {
    // SAFETY: `a` is 16 readable bytes; the helper only reads.
    from_wsum(unsafe { bpf_csum_diff(null_mut(), 0, a.as_ptr() as *mut u32, 16, 0) })
}

/// `change` for a 16-byte field (an IPv6 address), in four 32-bit words
/// as they lie in memory (a helper call would cost more than these dozen
/// instructions on the established path). Neither may be on the stack: see
/// `family::copy16` on alignment.
#[inline(always)]
pub fn change16(old: &[u8; 16], new: &[u8; 16]) -> u32 {
    let (o, n) = (old.as_ptr() as *const u32, new.as_ptr() as *const u32);
    let mut sum = 0u32;
    for i in 0..4 {
        // SAFETY: 16 readable bytes each.
        let (a, b) = unsafe { (!*o.add(i), *n.add(i)) };
        // At most 16 words of 0xffff: no overflow.
        sum += (a & 0xffff) + (a >> 16) + (b & 0xffff) + (b >> 16);
    }
    from_wsum(sum as i64)
}

/// The sum of `len` bytes at `p` (a multiple of 4), words read big-endian,
/// folded.
///
/// # Safety
/// `p` must point at `len` readable bytes the verifier knows the bounds of.
#[inline(always)]
pub unsafe fn sum_wsum(p: *mut u32, len: usize) -> u32 {
    // SAFETY: as the caller promised.
    from_wsum(unsafe { bpf_csum_diff(null_mut(), 0, p, len as u32, 0) })
}

/// A kernel `__wsum` (sums of 16-bit words as they lie in memory) as a
/// sum of words read big-endian, folded.
#[inline(always)]
fn from_wsum(w: i64) -> u32 {
    u16::from_be_bytes(fold(w as u32).to_ne_bytes()) as u32
}

/// `change` folded and in the byte order of a kernel `__wsum`, for
/// `bpf_l4_csum_replace` (its "by diff" form).
#[inline(always)]
pub fn wsum(change: u32) -> u32 {
    u16::from_ne_bytes(fold(change).to_be_bytes()) as u32
}
