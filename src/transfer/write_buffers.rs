//! File data on its way from a connection to the disk: a few buffers made
//! once and reused, one being filled at a time, each written whole at its
//! offset when full (or at the end). How much room they have left is what
//! a receiver checks before it reads more, so a sender faster than the
//! disk waits in TCP and nothing is allocated per chunk.

pub(crate) struct WriteBuffers {
    /// The buffer being filled, from file offset `fill_at`.
    fill: Option<Vec<u8>>,
    fill_at: u64,
    /// Empty buffers.
    spare: Vec<Vec<u8>>,
    size: usize,
}

impl WriteBuffers {
    /// `count` buffers of `size` bytes.
    pub(crate) fn new(count: usize, size: usize) -> WriteBuffers {
        WriteBuffers {
            fill: None,
            fill_at: 0,
            spare: (0..count).map(|_| Vec::with_capacity(size)).collect(),
            size,
        }
    }

    /// Bytes of file data they can take now.
    pub(crate) fn room(&self) -> usize {
        let in_fill = self
            .fill
            .as_ref()
            .map_or(0, |f| self.size.saturating_sub(f.len()));
        in_fill + self.spare.len() * self.size
    }

    /// Copies `bytes`, the file's from `offset`, in; each buffer filled
    /// goes to `full` with its offset. The caller made sure they fit
    /// (`room`); false if they did not, and the rest was not taken.
    #[must_use]
    pub(crate) fn copy_in(
        &mut self,
        mut offset: u64,
        mut bytes: &[u8],
        full: &mut Vec<(u64, Vec<u8>)>,
    ) -> bool {
        while !bytes.is_empty() {
            if self.fill.is_none() {
                let Some(buf) = self.spare.pop() else {
                    return false;
                };
                self.fill = Some(buf);
                self.fill_at = offset;
            }
            let Some(fill) = self.fill.as_mut() else {
                return false;
            };
            let n = (self.size - fill.len()).min(bytes.len());
            fill.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            offset += n as u64;
            if fill.len() == self.size {
                self.flush_into(full);
            }
        }
        true
    }

    /// Bytes of file data they could take once the buffer being filled
    /// went to the disk (`flush_into`): the empty ones'.
    pub(crate) fn room_after_flush(&self) -> usize {
        self.spare.len() * self.size
    }

    /// Bytes in the buffer being filled.
    pub(crate) fn filling(&self) -> usize {
        self.fill.as_ref().map_or(0, Vec::len)
    }

    /// Hands the buffer being filled, if it holds anything, to `full`.
    pub(crate) fn flush_into(&mut self, full: &mut Vec<(u64, Vec<u8>)>) {
        if let Some(fill) = self.fill.take() {
            if fill.is_empty() {
                self.spare.push(fill);
            } else {
                full.push((self.fill_at, fill));
            }
        }
    }

    /// Lends an empty buffer, `size` bytes long, for a read (a kept part
    /// being summed); it comes back through `give_back`.
    pub(crate) fn take_spare(&mut self) -> Option<Vec<u8>> {
        let mut buf = self.spare.pop()?;
        buf.resize(self.size, 0);
        Some(buf)
    }

    /// Takes a buffer back, emptied.
    pub(crate) fn give_back(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.spare.push(buf);
    }

    /// Drops what a failed file left in the buffer being filled.
    pub(crate) fn discard_fill(&mut self) {
        if let Some(fill) = self.fill.take() {
            self.give_back(fill);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_fills_buffers_in_order_and_full_ones_go_out() {
        const SIZE: usize = 1000;
        let mut w = WriteBuffers::new(3, SIZE);
        assert_eq!(w.room(), 3 * SIZE);
        let data: Vec<u8> = (0..SIZE + 10).map(|i| i as u8).collect();
        let mut full = Vec::new();
        assert!(w.copy_in(100, &data[..7], &mut full));
        assert!(w.copy_in(107, &data[7..], &mut full));
        assert_eq!(full.len(), 1);
        assert_eq!((full[0].0, &full[0].1[..]), (100, &data[..SIZE]));
        w.flush_into(&mut full);
        assert_eq!(
            (full[1].0, &full[1].1[..]),
            (100 + SIZE as u64, &data[SIZE..])
        );
        assert_eq!(w.room(), SIZE);
        for (_, buf) in full.drain(..) {
            w.give_back(buf);
        }
        assert_eq!(w.room(), 3 * SIZE);
        let too_much = vec![0u8; 3 * SIZE + 1];
        assert!(
            !w.copy_in(0, &too_much, &mut full),
            "more than the room is refused"
        );
    }

    #[test]
    fn a_partly_filled_buffer_sent_to_the_disk_takes_its_free_room_with_it() {
        const SIZE: usize = 1000;
        let mut w = WriteBuffers::new(2, SIZE);
        let mut full = Vec::new();
        assert!(w.copy_in(0, &[7u8; 10], &mut full));
        assert_eq!((w.room(), w.room_after_flush()), (2 * SIZE - 10, SIZE));
        w.flush_into(&mut full);
        assert_eq!(w.room(), w.room_after_flush());
    }
}
