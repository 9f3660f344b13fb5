//! Test data the file benches write and check.

/// `len` bytes of a xorshift stream seeded by `seed`: distinct for each
/// seed, so a copy that moves or swaps two files' bytes is caught.
pub fn seeded_bytes(seed: u64, len: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
