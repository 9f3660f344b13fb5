//! The CRC-32C block sums a resume compares (`PeerMessage::Sums`): the
//! side that kept a part sums its whole blocks; the side that has the file
//! reads its own and agrees on the end of the longest prefix that
//! matches. Both ends of a push and of a pull use these.

use ringxfer_ipc::proto::peer::PeerMessage;

/// The bytes one sum covers.
pub(crate) const BLOCK: u64 = 1 << 20;
/// Sums a frame carries (5 bytes each at most, within a 64 KiB frame).
pub(crate) const SUMS_PER_FRAME: usize = 8192;
/// The longest part summed: 1 TiB (4 MiB of sums); beyond it is sent
/// again.
pub(crate) const MAX_BLOCKS: usize = 1 << 20;

/// The CRC-32C of the first `blocks` blocks, from their sums.
pub(crate) fn combined(sums: &[u32], blocks: usize, block: u64) -> u32 {
    let len = usize::try_from(block).unwrap_or(usize::MAX);
    sums[..blocks.min(sums.len())]
        .iter()
        .fold(0, |crc, &sum| crc32c::crc32c_combine(crc, sum, len))
}

/// Sums received, as they come (several frames for a long part).
#[derive(Debug, Default)]
pub(crate) struct Received {
    pub block: u64,
    pub sums: Vec<u32>,
}

impl Received {
    /// Takes a `Sums` frame of a file of `size` bytes; false if it does not
    /// fit (another block size, out of order, past the file).
    pub(crate) fn take(&mut self, block: u32, first: u64, crcs: &[u32], size: u64) -> bool {
        let block = u64::from(block);
        let fits = block > 0
            && (self.sums.is_empty() || block == self.block)
            && first == self.sums.len() as u64
            && (first + crcs.len() as u64).saturating_mul(block) <= size
            && self.sums.len() + crcs.len() <= MAX_BLOCKS;
        if fits {
            self.block = block;
            self.sums.extend_from_slice(crcs);
        }
        fits
    }

    /// The bytes the sums cover.
    pub(crate) fn covered(&self) -> u64 {
        self.sums.len() as u64 * self.block
    }
}

/// The `Sums` frames for `sums[*sent..]`: every full frame's worth, or
/// (`all`) every one; `*sent` moves past them.
pub(crate) fn frames(xfer: u64, sums: &[u32], sent: &mut usize, all: bool) -> Vec<PeerMessage> {
    let mut out = Vec::new();
    loop {
        let unsent = sums.len() - *sent;
        if unsent == 0 || (!all && unsent < SUMS_PER_FRAME) {
            return out;
        }
        let n = unsent.min(SUMS_PER_FRAME);
        out.push(PeerMessage::Sums {
            xfer,
            block: BLOCK as u32,
            first: *sent as u64,
            crcs: sums[*sent..*sent + n].to_vec(),
        });
        *sent += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_sums_are_the_crc_of_the_blocks() {
        let data: Vec<u8> = (0..3 * 64).map(|i| (i * 7) as u8).collect();
        let sums: Vec<u32> = data.chunks(64).map(crc32c::crc32c).collect();
        assert_eq!(combined(&sums, 2, 64), crc32c::crc32c(&data[..128]));
        assert_eq!(combined(&sums, 0, 64), 0);
    }

    #[test]
    fn sums_must_come_in_order_within_the_file() {
        let mut r = Received::default();
        assert!(r.take(64, 0, &[1, 2], 200));
        assert!(!r.take(64, 5, &[3], 200), "out of order");
        assert!(!r.take(32, 2, &[3], 200), "another block size");
        assert!(!r.take(64, 2, &[3, 4], 200), "past the file");
        assert!(r.take(64, 2, &[3], 200));
        assert_eq!(r.covered(), 192);
    }

    #[test]
    fn frames_hold_at_most_their_share_and_all_of_them_go_at_the_end() {
        let sums = vec![7u32; SUMS_PER_FRAME + 3];
        let mut sent = 0;
        assert_eq!(frames(1, &sums, &mut sent, false).len(), 1);
        assert_eq!(sent, SUMS_PER_FRAME);
        assert!(frames(1, &sums, &mut sent, false).is_empty());
        assert_eq!(frames(1, &sums, &mut sent, true).len(), 1);
        assert_eq!(sent, sums.len());
    }
}
