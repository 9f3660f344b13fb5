//! The one io_uring instance and the two counters the stats report about it.

use std::io;

use io_uring::register::Restriction;
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::EngineError;

/// The ring, created on the thread that will drive it.
///
/// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` are asked for first:
/// completions then run only when this thread enters the kernel, which is exactly
/// when the loop wants them, and the kernel skips the locking a shared ring needs.
/// Older kernels refuse those flags with EINVAL, so the ring is retried without.
///
/// The ring is created disabled and allowed only the operations the engine
/// submits and the one registration it makes (IORING_REGISTER_RESTRICTIONS),
/// then enabled: a bug that built a wrong entry cannot make it open a path,
/// connect a socket or register anything else. seccomp does not see io_uring
/// operations, so this is the only filter on them.
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
            .setup_r_disabled()
            .setup_cqsize(cq)
            .build(entries);
        let (ring, setup) = match tuned {
            Ok(ring) => (ring, "single-issuer, defer-taskrun"),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let ring = IoUring::builder()
                    .setup_r_disabled()
                    .setup_cqsize(cq)
                    .build(entries)
                    .map_err(|source| EngineError::RingSetup { entries, source })?;
                (ring, "plain")
            }
            Err(source) => return Err(EngineError::RingSetup { entries, source }),
        };
        restrict(&ring).map_err(|source| EngineError::RingSetup { entries, source })?;
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

/// The operations the engine submits; keep in step with `engine/queue.rs`
/// (a missing one fails its operations with EACCES, which the tests see).
pub const ALLOWED_OPCODES: [u8; 16] = [
    opcode::Accept::CODE,
    opcode::AsyncCancel::CODE,
    opcode::Close::CODE,
    opcode::Fallocate::CODE,
    opcode::Fsync::CODE,
    opcode::Ftruncate::CODE,
    opcode::PollAdd::CODE,
    opcode::Read::CODE,
    opcode::ReadFixed::CODE,
    opcode::RecvMsg::CODE,
    opcode::Send::CODE,
    opcode::SendZc::CODE,
    opcode::Splice::CODE,
    opcode::Timeout::CODE,
    opcode::Write::CODE,
    opcode::WriteFixed::CODE,
];

/// IORING_REGISTER_BUFFERS, the one registration made after enabling.
const REGISTER_BUFFERS: u8 = 0;

/// Restricts the disabled ring to what the engine uses, then enables it.
fn restrict(ring: &IoUring) -> io::Result<()> {
    let mut rules: Vec<Restriction> = ALLOWED_OPCODES
        .iter()
        .map(|&op| Restriction::sqe_op(op))
        .collect();
    rules.push(Restriction::register_op(REGISTER_BUFFERS));
    // Linked splice pairs and worker-side closes; nothing else.
    rules.push(Restriction::sqe_flags_allowed(
        (squeue::Flags::IO_LINK | squeue::Flags::ASYNC).bits(),
    ));
    let submitter = ring.submitter();
    submitter.register_restrictions(&mut rules)?;
    submitter.register_enable_rings()
}

/// Fails with the OS error of a syscall that returned -1.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_refuses_operations_the_engine_does_not_use() {
        let mut ring = Ring::new(8).expect("ring");
        let path = c"/etc/hostname";
        let open = opcode::OpenAt::new(io_uring::types::Fd(libc::AT_FDCWD), path.as_ptr())
            .build()
            .user_data(7);
        let nop = opcode::Nop::new().build().user_data(8);
        let timeout_ts = io_uring::types::Timespec::new();
        let allowed = opcode::Timeout::new(&timeout_ts).build().user_data(9);
        // SAFETY: the path and the timespec outlive the wait below, which
        // reaps all three completions.
        unsafe {
            ring.push(&open).expect("push openat");
            ring.push(&nop).expect("push nop");
            ring.push(&allowed).expect("push timeout");
        }
        let mut got = Vec::new();
        while got.len() < 3 {
            ring.submit(1).expect("submit");
            ring.reap(&mut got);
        }
        let result = |ud: u64| {
            got.iter()
                .find(|c| c.user_data() == ud)
                .map(|c| c.result())
                .expect("completion")
        };
        assert_eq!(result(7), -libc::EACCES, "openat must be refused");
        assert_eq!(result(8), -libc::EACCES, "nop is not on the list either");
        assert_eq!(result(9), -libc::ETIME, "an allowed timeout runs");
    }
}
