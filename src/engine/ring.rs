//! The one io_uring instance and the two counters the stats report about it.

use std::io;

use io_uring::{cqueue, squeue, IoUring};

use super::EngineError;

/// The ring, created on the thread that will drive it.
///
/// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` are asked for first:
/// completions then run only when this thread enters the kernel, which is exactly
/// when the loop wants them, and the kernel skips the locking a shared ring needs.
/// Older kernels refuse those flags with EINVAL, so the ring is retried without.
pub struct Ring {
    ring: IoUring,
    /// Entries handed to the kernel since start.
    pub sqes_submitted: u64,
    /// `io_uring_enter` calls made since start.
    pub enter_calls: u64,
    /// A description of the set-up flags the kernel accepted, for the start-up log.
    pub setup: &'static str,
}

impl Ring {
    /// Creates a ring with `entries` submission slots and four times as many
    /// completion slots, so that bursts of completions do not overflow.
    pub fn new(entries: u32) -> Result<Ring, EngineError> {
        let cq = entries.saturating_mul(4);
        let tuned = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_submit_all()
            .setup_cqsize(cq)
            .build(entries);
        let (ring, setup) = match tuned {
            Ok(ring) => (ring, "single-issuer, defer-taskrun"),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let ring = IoUring::builder()
                    .setup_cqsize(cq)
                    .build(entries)
                    .map_err(|source| EngineError::RingSetup { entries, source })?;
                (ring, "plain")
            }
            Err(source) => return Err(EngineError::RingSetup { entries, source }),
        };
        Ok(Ring {
            ring,
            sqes_submitted: 0,
            enter_calls: 0,
            setup,
        })
    }

    /// Queues one entry, handing the queue to the kernel first if it is full.
    ///
    /// # Safety
    /// Every buffer, descriptor and structure that `entry` points at must stay
    /// valid and unmoved until its completion has been reaped.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> Result<(), EngineError> {
        loop {
            // SAFETY: the caller guarantees that what the entry points at outlives
            // the operation; pushing only copies the entry into the ring.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.submit(0)?;
        }
    }

    /// Hands queued entries to the kernel and, when `want` > 0, waits until at
    /// least that many completions are ready.
    pub fn submit(&mut self, want: usize) -> Result<(), EngineError> {
        self.enter_calls += 1;
        match self.ring.submit_and_wait(want) {
            Ok(n) => {
                self.sqes_submitted += n as u64;
                Ok(())
            }
            // A signal, a full completion queue or a short-lived lack of kernel
            // memory: each clears once the loop has reaped what is ready, and
            // entries the kernel did not take stay queued for the next call.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(source) => Err(EngineError::Enter { source }),
        }
    }

    /// Moves every ready completion into `out`.
    pub fn reap(&mut self, out: &mut Vec<cqueue::Entry>) {
        out.extend(self.ring.completion());
    }

    /// Registers `iovecs` as the ring's fixed buffers.
    ///
    /// # Safety
    /// The memory must stay valid and unmoved until the ring is closed.
    pub unsafe fn register_buffers(&mut self, iovecs: &[libc::iovec]) -> std::io::Result<()> {
        // SAFETY: the caller keeps the memory valid for the ring's lifetime.
        unsafe { self.ring.submitter().register_buffers(iovecs) }
    }

    /// Whether entries are queued but not yet handed to the kernel.
    pub fn has_queued(&mut self) -> bool {
        !self.ring.submission().is_empty()
    }

    /// Room left in the submission queue.
    pub fn free_slots(&mut self) -> usize {
        let sq = self.ring.submission();
        sq.capacity() - sq.len()
    }
}

/// Fails with the OS error of a syscall that returned -1.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
