//! The ring the loop drives (io_uring, or the threads back end in its place)
//! and the two counters the stats report about it.

use std::io;

use io_uring::register::Restriction;
use io_uring::{squeue, IoUring, Probe};

use super::op::Operation;
use super::opcodes::{Opcode, OPCODES};
pub(crate) use super::threads::Cqe;
use super::threads::{Submitted, ThreadRing};
use super::{unavailable, EngineError, EngineKind};

/// The one ring the loop drives: io_uring, or the threads back end, which
/// takes the same entries and gives the same completions.
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
/// operations, so this is the only filter on them. The threads back end
/// refuses the same opcodes the same way (EACCES).
pub struct Ring {
    backend: Backend,
    /// Entries handed to the kernel (or the workers) since start.
    pub sqes_submitted: u64,
    /// `io_uring_enter` calls (or turns of the threads back end's wait) since start.
    pub enter_calls: u64,
    /// A description of the set-up flags the kernel accepted, for the start-up log.
    pub setup: &'static str,
    /// Why io_uring is not used, when `auto` fell back to threads.
    pub fallback_reason: Option<String>,
    /// Client identities registered as personalities. Never unregistered:
    /// detached jobs outlive their connections, and there are no more
    /// identities than users and their group sets.
    personalities: std::collections::HashMap<crate::privileges::Identity, u16>,
}

enum Backend {
    Uring(IoUring),
    Threads(ThreadRing),
}

impl Ring {
    /// Creates the back end `kind` asks for, with `entries` submission slots.
    /// With `auto`, io_uring if the kernel allows it and has every opcode the
    /// engine uses, else threads, with the reason in `fallback_reason`.
    pub fn new(entries: u32, kind: EngineKind) -> Result<Ring, EngineError> {
        let uring = match kind {
            EngineKind::Threads => None,
            EngineKind::Uring | EngineKind::Auto => Some(setup_uring(entries)),
        };
        let fallback_reason = match uring {
            Some(Ok((ring, setup))) => {
                return Ok(Ring {
                    backend: Backend::Uring(ring),
                    sqes_submitted: 0,
                    enter_calls: 0,
                    setup,
                    fallback_reason: None,
                    personalities: Default::default(),
                })
            }
            Some(Err(e)) if kind == EngineKind::Uring => return Err(e),
            Some(Err(e)) => Some(e.to_string()),
            None => None,
        };
        let threads = ThreadRing::new(entries).map_err(EngineError::Threads)?;
        Ok(Ring {
            backend: Backend::Threads(threads),
            sqes_submitted: 0,
            enter_calls: 0,
            setup: "threads",
            fallback_reason,
            personalities: Default::default(),
        })
    }

    /// The back end in use: "uring" or "threads".
    pub fn kind(&self) -> EngineKind {
        match self.backend {
            Backend::Uring(_) => EngineKind::Uring,
            Backend::Threads(_) => EngineKind::Threads,
        }
    }

    /// Queues `op` as `user_data` (with `flags`, under `personality`; 0:
    /// the daemon's own), handing the queue to the kernel first if it is
    /// full: io_uring gets its entry, the threads back end its blocking
    /// equivalent.
    ///
    /// # Safety
    /// Every buffer, descriptor and structure that `op` points at must stay
    /// valid and unmoved until its completion has been reaped.
    pub unsafe fn push(
        &mut self,
        op: &mut dyn Operation,
        user_data: u64,
        flags: squeue::Flags,
        personality: u16,
    ) -> Result<(), EngineError> {
        let prepared = match self.backend {
            Backend::Uring(_) => {
                let mut entry = op.entry().user_data(user_data).flags(flags);
                if personality != 0 {
                    // A job's operations run with its client's credentials.
                    entry = entry.personality(personality);
                }
                Ok(entry)
            }
            Backend::Threads(_) => Err(Submitted {
                code: op.code(),
                call: op.blocking(),
                user_data,
                link: flags.contains(squeue::Flags::IO_LINK),
                personality,
            }),
        };
        loop {
            let pushed = match (&mut self.backend, &prepared) {
                (Backend::Uring(ring), Ok(entry)) => {
                    // SAFETY: the caller guarantees that what the entry points
                    // at outlives the operation; pushing only copies the entry.
                    unsafe { ring.submission().push(entry) }.is_ok()
                }
                // SAFETY: as above; the call's pointers are used until the
                // completion is reaped.
                (Backend::Threads(ring), Err(submitted)) => unsafe { ring.push(*submitted) },
                // The back end does not change after `Ring::new`.
                _ => return Err(EngineError::Config("the ring changed back end".into())),
            };
            if pushed {
                return Ok(());
            }
            self.submit(0)?;
        }
    }

    /// Hands queued entries to the kernel and, when `want` > 0, waits until at
    /// least that many completions are ready.
    pub fn submit(&mut self, want: usize) -> Result<(), EngineError> {
        self.enter_calls += 1;
        let ring = match &mut self.backend {
            Backend::Uring(ring) => ring,
            Backend::Threads(ring) => {
                self.sqes_submitted += ring.submit(want) as u64;
                return Ok(());
            }
        };
        match ring.submit_and_wait(want) {
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
    pub fn reap(&mut self, out: &mut Vec<Cqe>) {
        match &mut self.backend {
            Backend::Uring(ring) => out.extend(ring.completion().map(|c| Cqe {
                user_data: c.user_data(),
                result: c.result(),
                flags: c.flags(),
            })),
            Backend::Threads(ring) => ring.reap(out),
        }
    }

    /// Registers `iovecs` as the ring's fixed buffers (the threads back end
    /// needs no registration: fixed reads and writes are plain ones there).
    ///
    /// # Safety
    /// The memory must stay valid and unmoved until the ring is closed.
    pub unsafe fn register_buffers(&mut self, iovecs: &[libc::iovec]) -> std::io::Result<()> {
        match &mut self.backend {
            // SAFETY: the caller keeps the memory valid for the ring's lifetime.
            Backend::Uring(ring) => unsafe { ring.submitter().register_buffers(iovecs) },
            Backend::Threads(_) => Ok(()),
        }
    }

    /// The personality that runs operations under `id`'s uid, gid and
    /// groups, without capabilities: registered once per identity (for
    /// io_uring, by this thread taking the identity for the moment of the
    /// registration, which captures its credentials), then reused. Only a
    /// daemon that dropped its privileges and kept CAP_SETUID/CAP_SETGID
    /// registers any; otherwise None, and jobs run as the daemon.
    pub fn personality(&mut self, id: &crate::privileges::Identity) -> io::Result<Option<u16>> {
        if !crate::privileges::dropped() || !crate::privileges::can_assume() {
            return Ok(None);
        }
        if let Some(&p) = self.personalities.get(id) {
            return Ok(Some(p));
        }
        let p = match &mut self.backend {
            Backend::Uring(ring) => {
                let submitter = ring.submitter();
                crate::privileges::with_identity(id, || submitter.register_personality())??
            }
            Backend::Threads(ring) => ring.register_personality(id.clone())?,
        };
        self.personalities.insert(id.clone(), p);
        Ok(Some(p))
    }

    /// Whether entries are queued but not yet handed to the kernel.
    pub fn has_queued(&mut self) -> bool {
        match &mut self.backend {
            Backend::Uring(ring) => !ring.submission().is_empty(),
            Backend::Threads(ring) => ring.has_queued(),
        }
    }

    /// Room left in the submission queue.
    pub fn free_slots(&mut self) -> usize {
        match &mut self.backend {
            Backend::Uring(ring) => {
                let sq = ring.submission();
                sq.capacity() - sq.len()
            }
            Backend::Threads(ring) => ring.free_slots(),
        }
    }

    /// Worker threads of the threads back end (0 for io_uring, whose io-wq
    /// workers are the kernel's).
    pub fn workers(&self) -> usize {
        match &self.backend {
            Backend::Uring(_) => 0,
            Backend::Threads(ring) => ring.workers(),
        }
    }
}

/// Makes the io_uring ring: tuned flags first, plain on EINVAL, then checks
/// the opcodes (io/opcodes.rs) and restricts it. Returns the ring, enabled,
/// and a description of its set-up flags. `ringxferd --check` calls this
/// too, so what it reports is what the engine does.
pub(crate) fn setup_uring(entries: u32) -> Result<(IoUring, &'static str), EngineError> {
    let cq = entries.saturating_mul(4);
    let setup_failed = |source: io::Error| EngineError::RingSetup {
        entries,
        cause: unavailable::cause(&source, entries),
        source,
    };
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
                .map_err(setup_failed)?;
            (ring, "plain")
        }
        Err(source) => return Err(setup_failed(source)),
    };
    let supported = supported_opcodes(&ring);
    let missing: Vec<&'static Opcode> = OPCODES
        .iter()
        .filter(|o| o.required && supported.as_ref().is_some_and(|s| !s.contains(&o.code)))
        .collect();
    if !missing.is_empty() {
        return Err(EngineError::MissingOpcodes(missing));
    }
    restrict(&ring, supported.as_deref()).map_err(|source| EngineError::RingSetup {
        entries,
        cause: "registering the ring's restrictions failed".into(),
        source,
    })?;
    Ok((ring, setup))
}

/// Which of the engine's opcodes this kernel has (`None` when it cannot
/// say: a kernel without IORING_REGISTER_PROBE is older than every opcode
/// check would help with, and restrictions will refuse what is missing).
fn supported_opcodes(ring: &IoUring) -> Option<Vec<u8>> {
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).ok()?;
    Some(
        OPCODES
            .iter()
            .map(|o| o.code)
            .filter(|&code| probe.is_supported(code))
            .collect(),
    )
}

/// IORING_REGISTER_BUFFERS, made after enabling.
const REGISTER_BUFFERS: u8 = 0;
/// IORING_REGISTER_PERSONALITY: each client identity, for its jobs.
const REGISTER_PERSONALITY: u8 = 9;

/// Restricts the disabled ring to the engine's opcodes (those of them the
/// kernel has, when it says) and the registrations it makes, then enables it.
fn restrict(ring: &IoUring, supported: Option<&[u8]>) -> io::Result<()> {
    let mut rules: Vec<Restriction> = OPCODES
        .iter()
        .map(|o| o.code)
        .filter(|code| supported.is_none_or(|s| s.contains(code)))
        .map(Restriction::sqe_op)
        .collect();
    rules.push(Restriction::register_op(REGISTER_BUFFERS));
    rules.push(Restriction::register_op(REGISTER_PERSONALITY));
    // Linked splice pairs and worker-side closes; nothing else.
    rules.push(Restriction::sqe_flags_allowed(
        (squeue::Flags::IO_LINK | squeue::Flags::ASYNC).bits(),
    ));
    let submitter = ring.submitter();
    submitter.register_restrictions(&mut rules)?;
    submitter.register_enable_rings()
}

/// Fails with the OS error of a syscall that returned -1.
pub(crate) fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;

    #[test]
    fn the_ring_refuses_operations_the_engine_does_not_use() {
        for kind in [EngineKind::Uring, EngineKind::Threads] {
            refuses_operations_the_engine_does_not_use(kind);
        }
    }

    /// An operation the engine never submits, built by hand.
    struct OffList(fn() -> io_uring::squeue::Entry, u8);

    impl Operation for OffList {
        fn code(&self) -> u8 {
            self.1
        }

        fn entry(&mut self) -> io_uring::squeue::Entry {
            (self.0)()
        }

        fn blocking(&mut self) -> crate::io::op::Blocking {
            crate::io::op::Blocking::Unsupported
        }
    }

    fn refuses_operations_the_engine_does_not_use(kind: EngineKind) {
        let mut ring = Ring::new(8, kind).expect("ring");
        assert_eq!(ring.kind(), kind);
        let open = || {
            opcode::OpenAt::new(
                io_uring::types::Fd(libc::AT_FDCWD),
                c"/etc/hostname".as_ptr(),
            )
            .build()
        };
        let mut open = OffList(open, opcode::OpenAt::CODE);
        let mut nop = OffList(|| opcode::Nop::new().build(), opcode::Nop::CODE);
        let mut allowed = crate::io::op::Timeout::new(std::time::Duration::ZERO);
        let none = squeue::Flags::empty();
        // SAFETY: the path is static and the timer owns its timespec, which
        // outlives the wait below that reaps all three completions.
        unsafe {
            ring.push(&mut open, 7, none, 0).expect("push openat");
            ring.push(&mut nop, 8, none, 0).expect("push nop");
            ring.push(&mut allowed, 9, none, 0).expect("push timeout");
        }
        let mut got = Vec::new();
        while got.len() < 3 {
            ring.submit(1).expect("submit");
            ring.reap(&mut got);
        }
        let result = |ud: u64| {
            got.iter()
                .find(|c| c.user_data == ud)
                .map(|c| c.result)
                .expect("completion")
        };
        assert_eq!(result(7), -libc::EACCES, "openat must be refused");
        assert_eq!(result(8), -libc::EACCES, "nop is not on the list either");
        assert_eq!(result(9), -libc::ETIME, "an allowed timeout runs");
    }
}
