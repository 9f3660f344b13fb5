//! Closing the descriptors clients passed, on a thread of its own.
//!
//! The loop never closes a client's descriptor itself: the last close of a
//! file can start writeback (ext4 does for a file truncated to zero), a
//! socket with SO_LINGER can wait, a network file system flushes. These
//! closes used to go through the ring as IORING_OP_CLOSE with IOSQE_ASYNC,
//! and each then cost an entry, a hand-off to an io-wq worker and a
//! completion for the loop to reap: about half a microsecond per descriptor,
//! 15% of the daemon's CPU time when it copied 10,000 files of 4 KiB. Here the
//! loop hands the descriptor over through a bounded queue, which wakes the
//! thread only when it sleeps (and the thread sleeps at once when it is
//! empty: `ParkingQueue`), and the thread closes whatever has queued.
//!
//! The queue's room is fixed at start-up, so handing over never allocates
//! and never waits: when it is full (closes stuck on a dead NFS server, say)
//! `hand_over` gives the descriptor back and the loop closes it through the
//! ring as before. The thread is never joined: the loop does not wait for
//! closes when it stops, and the thread ends once the queue is closed (when
//! the loop drops its end) and drained.

use std::os::fd::OwnedFd;

use tracing::warn;

use crate::io::parking::ParkingQueue;
use crate::io::Io;

/// Descriptors queued for closing at most before `hand_over` refuses more.
const QUEUE: usize = 4096;

/// The closing thread's end of the loop.
pub(super) struct FdCloser {
    queue: ParkingQueue<OwnedFd>,
}

impl Drop for FdCloser {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl FdCloser {
    /// Starts the thread and waits until it runs (so it carries its name
    /// before the daemon says it is ready). An error (no thread could be
    /// made) leaves the loop to close through the ring.
    pub(super) fn start() -> std::io::Result<FdCloser> {
        let queue = ParkingQueue::with_capacity(QUEUE);
        let rx = queue.clone();
        let (started_tx, started) = crossbeam_channel::bounded::<()>(1);
        std::thread::Builder::new()
            .name("ringxfer-close".into())
            .spawn(move || {
                let _ = started_tx.send(());
                // Dropping closes; a failed close (EIO from a network file
                // system's writeback) has nobody left to tell.
                while let Some(fd) = rx.take() {
                    drop(fd);
                }
            })?;
        // The thread sends before anything else; an error means it ended
        // (panicked) before, which leaves closing to the ring.
        started
            .recv()
            .map_err(|_| std::io::Error::other("the closing thread ended at start"))?;
        Ok(FdCloser { queue })
    }

    /// Queues `fd` for closing; gives it back if the queue is full or the
    /// thread is gone.
    pub(super) fn hand_over(&self, fd: OwnedFd) -> Result<(), OwnedFd> {
        self.queue.try_put(fd, QUEUE)
    }
}

/// Client descriptors dropped this turn, and how they get closed.
pub(super) struct Closing {
    /// Client descriptors to close at the end of this turn, off the loop
    /// thread: a client's descriptor can be a socket with SO_LINGER or a file
    /// on a network file system, whose last close may block.
    pub doomed: Vec<OwnedFd>,
    /// The thread that closes them; without it, or when its queue is full,
    /// they are closed through the ring.
    pub closer: Option<FdCloser>,
    /// Close operations in flight; the loop does not wait for them to stop.
    pub in_flight: usize,
}

impl Closing {
    /// Starts the closing thread (or, failing that, closes through the ring).
    pub(super) fn new() -> Closing {
        let closer = FdCloser::start()
            .map_err(|e| warn!("cannot start the closing thread ({e}); closing through the ring"))
            .ok();
        Closing {
            doomed: Vec::with_capacity(16),
            closer,
            in_flight: 0,
        }
    }

    /// Closes the client descriptors dropped this turn: hands them to the
    /// closing thread, or closes them through the ring.
    pub(super) fn close_doomed(&mut self, io: &mut Io) {
        while let Some(fd) = self.doomed.pop() {
            let fd = match &self.closer {
                Some(closer) => match closer.hand_over(fd) {
                    Ok(()) => continue,
                    Err(fd) => fd,
                },
                None => fd,
            };
            if io.close_async(fd) {
                self.in_flight += 1;
            }
        }
    }

    /// A close through the ring completed.
    pub(super) fn on_closed(&mut self, result: i32) {
        self.in_flight -= 1;
        if result < 0 {
            // A close can report a failed writeback (EIO) or a full
            // disk on network file systems.
            warn!(
                "closing a job's descriptor failed: {}",
                std::io::Error::from_raw_os_error(-result)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn closes_what_it_is_handed() {
        let closer = FdCloser::start().unwrap();
        let (mut reader, writer) = std::io::pipe().unwrap();
        closer.hand_over(OwnedFd::from(writer)).unwrap();
        // The read end turns readable (end-of-file) only once the write end,
        // its one other reference, is closed.
        let mut pfd = libc::pollfd {
            fd: reader.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd that outlives the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 5_000) };
        assert_eq!(ready, 1, "the write end was not closed within 5 s");
        let mut rest = Vec::new();
        assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0);
    }
}
