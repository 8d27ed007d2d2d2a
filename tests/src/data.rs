//! Byte-stream integrity helpers shared by `lb-testsrv` and the clients, so
//! both ends of a bulk transfer compute the same digest with the same code.

/// FNV-1a, 64-bit. Not cryptographic; it only has to notice a reordered,
/// dropped, duplicated or corrupted segment in a NAT'd stream, and it is
/// simple enough to implement identically on both ends.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a64(u64);

impl Fnv1a64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Self {
        Self(Self::OFFSET)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(Self::PRIME);
        }
        self.0 = h;
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a 64 of `bytes` in one call.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a64::new();
    h.update(bytes);
    h.finish()
}

/// Seed of the stream `lb-testsrv`'s source service sends; the client that
/// downloads it generates the same stream to check what arrived.
pub const SOURCE_SEED: u64 = 0x6c62_2d73_6f75_7263;

/// Deterministic pseudo-random bytes (xorshift64*), fast enough that the
/// generator is never the bottleneck of a bulk transfer. Random-looking data
/// matters: a constant pattern would hide misordered segments.
#[derive(Clone, Debug)]
pub struct PatternGen(u64);

impl PatternGen {
    pub fn new(seed: u64) -> Self {
        // xorshift has one fixed point, zero; never start there.
        Self(seed | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&v[..rest.len()]);
        }
    }
}
