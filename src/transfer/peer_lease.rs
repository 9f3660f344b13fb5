//! The share another daemon's transfer takes of this daemon's I/O: a file
//! it pushes here is written, and a file it pulls from here is read, by
//! the peer connection itself (engine/peers/), in buffers of its own; the
//! lease makes each of those writes or reads wait for a pool buffer, lent
//! through the same fair queues as every local job's, under the export's
//! user. So a peer is one user among the local ones: shares, the daemon's
//! rate limit and `--max-inflight` hold it as they hold a copy.
//!
//! The buffer lent is a permit, never touched: the kernel reads or writes
//! the connection's own buffer, so a permit can go back at any moment
//! without waiting for an operation (a stalled lease gives its permits
//! back at once).

use ringxfer_ipc::Strategy;

use super::pipeline::Returned;
use super::TransferError;
use crate::io::buffer_pool::BufRef;

/// Which connection and file a lease stands for: the peer connection's
/// slab key and the file's transfer number on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseFor {
    pub conn: usize,
    pub xfer: u64,
}

pub(crate) struct PeerLease {
    pub(crate) serves: LeaseFor,
    /// Writes (or reads) waiting for a permit.
    waiting: usize,
    /// Permits held, and how many of them an operation in flight uses.
    permits: Vec<BufRef>,
    in_use: usize,
    /// The most permits it may hold at once (the connection's buffers).
    most: usize,
    /// Bytes written (received) or read (served) so far.
    pub(crate) moved: u64,
    total: Option<u64>,
    failure: Option<TransferError>,
    ended: bool,
}

impl PeerLease {
    pub(crate) fn new(serves: LeaseFor, most: usize, total: Option<u64>) -> PeerLease {
        let most = most.max(1);
        PeerLease {
            serves,
            waiting: 0,
            permits: Vec::with_capacity(most),
            in_use: 0,
            most,
            moved: 0,
            total,
            failure: None,
            ended: false,
        }
    }

    pub(crate) fn strategy(&self) -> Strategy {
        Strategy::Peer
    }

    pub(crate) fn total(&self) -> Option<u64> {
        self.total
    }

    fn live(&self) -> bool {
        !self.ended && self.failure.is_none()
    }

    /// Permits held that no operation uses.
    fn idle(&self) -> usize {
        self.permits.len() - self.in_use
    }

    /// `n` operations wait for a permit.
    pub(crate) fn set_waiting(&mut self, n: usize) {
        self.waiting = n;
    }

    /// Another permit would let a waiting operation go.
    pub(crate) fn wants_buffer(&self) -> bool {
        self.live() && self.waiting > self.idle() && self.permits.len() < self.most
    }

    /// A permit from the pool.
    pub(crate) fn lend(&mut self, buf: BufRef, out: &mut Vec<Returned>) {
        if !self.wants_buffer() {
            return out.push(Returned::Buffer(buf));
        }
        self.permits.push(buf);
    }

    /// An operation waits and a permit is idle: `take` would succeed.
    pub(crate) fn ready(&self) -> bool {
        self.live() && self.waiting > 0 && self.idle() > 0
    }

    /// An operation may go on an idle permit: true if it took one.
    pub(crate) fn take(&mut self) -> bool {
        if !self.live() || self.idle() == 0 {
            return false;
        }
        self.in_use += 1;
        self.waiting = self.waiting.saturating_sub(1);
        true
    }

    /// An operation that held a permit ended, having moved `bytes`: its
    /// permit goes back to the pool.
    pub(crate) fn give(&mut self, bytes: u64, out: &mut Vec<Returned>) {
        self.moved += bytes;
        if self.in_use == 0 {
            return;
        }
        self.in_use -= 1;
        out.extend(self.permits.pop().map(Returned::Buffer));
    }

    /// Every permit goes back, in use or not (nothing reads them); the
    /// operations in flight go on without one. True if any went.
    pub(crate) fn give_all(&mut self, out: &mut Vec<Returned>) -> bool {
        self.in_use = 0;
        let any = !self.permits.is_empty();
        out.extend(self.permits.drain(..).map(Returned::Buffer));
        any
    }

    /// The file ended here (`failure`: how, if it failed).
    pub(crate) fn end(&mut self, failure: Option<TransferError>, out: &mut Vec<Returned>) {
        self.give_all(out);
        self.ended = true;
        if self.failure.is_none() {
            self.failure = failure;
        }
    }

    /// Cancelled through the daemon (`ringxfer cancel`) or stopping: the
    /// engine tells the connection.
    pub(crate) fn fail(&mut self, err: TransferError, out: &mut Vec<Returned>) {
        self.give_all(out);
        self.failure.get_or_insert(err);
    }

    pub(crate) fn is_finished(&self) -> bool {
        !self.live()
    }

    pub(crate) fn failure(&self) -> Option<&TransferError> {
        self.failure.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::buffer_pool::BufferPool;

    fn lease(most: usize) -> PeerLease {
        PeerLease::new(LeaseFor { conn: 0, xfer: 1 }, most, Some(10))
    }

    #[test]
    fn permits_follow_the_operations_waiting_up_to_the_most() {
        let mut pool = BufferPool::new(4, 4096).expect("a pool");
        let mut out = Vec::new();
        let mut l = lease(2);
        assert!(!l.wants_buffer(), "nothing waits");
        l.set_waiting(3);
        assert!(l.wants_buffer());
        l.lend(pool.take().expect("a buffer"), &mut out);
        l.lend(pool.take().expect("a buffer"), &mut out);
        assert!(out.is_empty());
        assert!(!l.wants_buffer(), "at the most it may hold");
        l.lend(pool.take().expect("a buffer"), &mut out);
        assert_eq!(out.len(), 1, "a permit past the most goes back");
        assert!(l.take() && l.take() && !l.take());
        l.give(5, &mut out);
        assert_eq!((out.len(), l.moved), (2, 5));
        assert!(l.wants_buffer(), "one operation still waits");
    }

    #[test]
    fn an_ended_lease_holds_nothing_and_wants_nothing() {
        let mut pool = BufferPool::new(2, 4096).expect("a pool");
        let mut out = Vec::new();
        let mut l = lease(2);
        l.set_waiting(1);
        l.lend(pool.take().expect("a buffer"), &mut out);
        assert!(l.take());
        l.end(None, &mut out);
        assert_eq!(out.len(), 1);
        assert!(l.is_finished() && l.failure().is_none());
        l.set_waiting(1);
        assert!(!l.wants_buffer() && !l.take());
    }
}
