//! Worker pieces: the I/O slots of the in-kernel copies a worker runs
//! (copy_file_range and sendfile, io/op/copy_range.rs). A piece holds no
//! memory; it is the right to have one such operation in flight, lent to
//! jobs through the same fair queues as pipes and buffers (engine/slots.rs),
//! so priorities, per-user shares, per-connection quotas and the cap on
//! operations in flight bind these copies as they bind splice.

/// Worker pieces the engine lends: copies in flight at once. One job
/// copies a piece at a time (two into one file spin on its inode lock), so
/// this many jobs copy at once; the io_uring engine keeps a worker thread
/// for each (io/ring.rs, the side pool).
pub(crate) const PIECES: usize = 8;

/// The right to one operation in flight on a worker. Neither `Copy` nor
/// `Clone`: whoever holds it holds the slot, and only the pool makes one.
#[derive(Debug)]
pub(crate) struct Piece {
    _only_the_pool: (),
}

/// A count of pieces, made at start-up.
#[derive(Debug)]
pub(crate) struct PiecePool {
    total: usize,
    idle: usize,
}

impl PiecePool {
    pub(crate) fn new(total: usize) -> PiecePool {
        PiecePool { total, idle: total }
    }

    /// A piece, if one is idle.
    pub(crate) fn take(&mut self) -> Option<Piece> {
        self.idle = self.idle.checked_sub(1)?;
        Some(Piece { _only_the_pool: () })
    }

    pub(crate) fn give_back(&mut self, _piece: Piece) {
        self.idle = (self.idle + 1).min(self.total);
    }

    pub(crate) fn idle(&self) -> usize {
        self.idle
    }

    pub(crate) fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_lent_up_to_the_total_and_come_back() {
        let mut pool = PiecePool::new(2);
        let a = pool.take().expect("first");
        let b = pool.take().expect("second");
        assert!(pool.take().is_none());
        assert_eq!(pool.idle(), 0);
        pool.give_back(a);
        pool.give_back(b);
        assert_eq!((pool.idle(), pool.total()), (2, 2));
    }
}
