//! The ring the loop drives (io_uring, or the threads back end in its place)
//! and the two counters the stats report about it.

use std::io;

use io_uring::register::Restriction;
use io_uring::{opcode, squeue, types, IoUring, Probe};

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
    /// Under io_uring, the workers of the operations it has no opcode for
    /// (`opcodes::on_workers`).
    side: Option<SidePool>,
}

/// The user_data of the ring's poll on the side pool's eventfd: never an
/// op table key (slab keys stay far below it) nor CANCEL_USER_DATA.
const SIDE_WAKE: u64 = u64::MAX - 1;

/// A worker pool next to the io_uring ring, for the operations io_uring
/// cannot run (FICLONE, copy_file_range, sendfile): the threads back end's
/// own ring, whose workers run the blocking call and post its completion
/// on a channel, then write an eventfd. The ring keeps a one-shot poll on that eventfd,
/// so a loop waiting in io_uring_enter wakes up; `reap` then hands the
/// pool's completions out with the kernel's, and the loop dispatches them
/// exactly alike (the op table keeps each operation until then).
struct SidePool {
    ring: ThreadRing,
    /// Operations handed to the pool and not yet reaped, by user_data.
    in_flight: Vec<u64>,
    /// The poll on the eventfd is in the ring.
    armed: bool,
    /// The kernel's personality number -> the pool's, for the same identity.
    personalities: std::collections::HashMap<u16, u16>,
}

/// Entries the side pool takes per submission: each push is started at
/// once, so this never fills.
const SIDE_ENTRIES: u32 = 64;
/// Its threads, all made with the ring (before the daemon says it is
/// ready, so none appears while it runs): one per worker piece (a
/// copy_file_range or sendfile in flight, lent like pipes, so no more can
/// be in flight than there are threads for them, and a sendfile blocked
/// on a peer that does not read holds up no other job's piece), and two
/// for clones, which are disk work and otherwise wait their turn.
const SIDE_WORKERS: usize = super::piece_pool::PIECES + 2;

impl SidePool {
    fn new() -> Result<SidePool, EngineError> {
        Ok(SidePool {
            ring: ThreadRing::with_workers(SIDE_ENTRIES, SIDE_WORKERS, SIDE_WORKERS)
                .map_err(EngineError::Threads)?,
            in_flight: Vec::with_capacity(16),
            armed: false,
            personalities: Default::default(),
        })
    }

    /// Hands `d` to a worker at once (the pool's queue never fills: each
    /// push is started before the next).
    fn start(&mut self, d: Submitted) {
        // SAFETY: the caller of `Ring::push` keeps what the call names
        // alive until its completion is reaped.
        if unsafe { self.ring.push(d) } {
            if d.user_data != super::ops::CANCEL_USER_DATA {
                self.in_flight.push(d.user_data);
            }
            self.ring.submit(0);
            if self.ring.has_ready() {
                // Completed here, not by a worker (a cancel took back a
                // piece no worker had started): no worker writes the
                // eventfd for it, so this does, or a loop waiting in
                // io_uring_enter for it would wait for ever.
                self.poke();
            }
        }
    }

    /// Makes the ring's poll on the eventfd fire.
    fn poke(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to the pool's own
        // eventfd; it cannot block before the counter nears 2^64.
        unsafe {
            libc::write(
                self.ring.wake_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Moves the pool's ready completions into `out`.
    fn reap(&mut self, out: &mut Vec<Cqe>) {
        if self.in_flight.is_empty() {
            return;
        }
        self.ring.submit(0);
        let from = out.len();
        self.ring.reap(out);
        for c in &out[from..] {
            if let Some(i) = self.in_flight.iter().position(|&ud| ud == c.user_data) {
                self.in_flight.swap_remove(i);
            }
        }
    }

    /// Empties the eventfd, so the next poll waits for new completions.
    fn drain_wake(&self) {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from the pool's own
        // non-blocking eventfd; EAGAIN (already empty) is fine.
        unsafe {
            libc::read(
                self.ring.wake_fd(),
                (&mut count as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
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
                let side = Some(SidePool::new()?);
                return Ok(Ring {
                    backend: Backend::Uring(ring),
                    sqes_submitted: 0,
                    enter_calls: 0,
                    setup,
                    fallback_reason: None,
                    personalities: Default::default(),
                    side,
                });
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
            side: None,
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
            Backend::Uring(_) if self.goes_to_side(op) => {
                let d = Submitted {
                    code: op.code(),
                    call: op.blocking(),
                    user_data,
                    link: false,
                    personality,
                };
                return self.push_side(d);
            }
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

    /// Under io_uring, whether `op` goes to the side pool: an operation
    /// io_uring has no opcode for, or a cancel of one there.
    fn goes_to_side(&self, op: &mut dyn Operation) -> bool {
        let code = op.code();
        if super::opcodes::on_workers(code) {
            return true;
        }
        if code != opcode::AsyncCancel::CODE {
            return false;
        }
        match (op.blocking(), &self.side) {
            (super::op::Blocking::Cancel { target }, Some(side)) => {
                side.in_flight.contains(&target)
            }
            _ => false,
        }
    }

    /// Hands `d` to the side pool, under the pool's number for the
    /// identity of the kernel's personality.
    fn push_side(&mut self, mut d: Submitted) -> Result<(), EngineError> {
        let Some(side) = self.side.as_mut() else {
            return Err(EngineError::Config("the side pool is gone".into()));
        };
        if d.personality != 0 {
            d.personality = match side.personalities.get(&d.personality) {
                Some(&p) => p,
                None => {
                    let id = self
                        .personalities
                        .iter()
                        .find(|&(_, &p)| p == d.personality)
                        .map(|(id, _)| id.clone());
                    // An identity the pool cannot wear fails the operation
                    // (an unregistered number) rather than run it as the daemon.
                    let p = match id.map(|id| side.ring.register_personality(id)) {
                        Some(Ok(p)) => p,
                        _ => u16::MAX,
                    };
                    side.personalities.insert(d.personality, p);
                    p
                }
            };
        }
        side.start(d);
        Ok(())
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
        if let Some(side) = self.side.as_mut() {
            arm_side(ring, side)?;
        }
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

    /// Moves every ready completion into `out` (under io_uring, the side
    /// pool's too).
    pub fn reap(&mut self, out: &mut Vec<Cqe>) {
        match &mut self.backend {
            Backend::Uring(ring) => {
                for c in ring.completion() {
                    if c.user_data() == SIDE_WAKE {
                        if let Some(side) = self.side.as_mut() {
                            side.armed = false;
                            side.drain_wake();
                        }
                        continue;
                    }
                    out.push(Cqe {
                        user_data: c.user_data(),
                        result: c.result(),
                        flags: c.flags(),
                    });
                }
                if let Some(side) = self.side.as_mut() {
                    side.reap(out);
                }
            }
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

/// Puts the poll on the side pool's eventfd in the ring while the pool has
/// work, so that waiting for completions also waits for the pool's.
fn arm_side(ring: &mut IoUring, side: &mut SidePool) -> Result<(), EngineError> {
    if side.armed || side.in_flight.is_empty() {
        return Ok(());
    }
    let poll = opcode::PollAdd::new(types::Fd(side.ring.wake_fd()), libc::POLLIN as u32)
        .build()
        .user_data(SIDE_WAKE);
    loop {
        // SAFETY: a poll points at no memory; the eventfd lives as long as
        // the side pool, which lives as long as the ring.
        if unsafe { ring.submission().push(&poll) }.is_ok() {
            side.armed = true;
            return Ok(());
        }
        ring.submit()
            .map_err(|source| EngineError::Enter { source })?;
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

    #[test]
    fn a_clone_runs_on_a_worker_and_wakes_a_ring_waiting_for_it() {
        for kind in [EngineKind::Uring, EngineKind::Threads] {
            let mut ring = Ring::new(8, kind).expect("ring");
            let dir = tempfile::tempdir().expect("tempdir");
            let open = |name: &str| {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(dir.path().join(name))
                    .expect("open");
                std::rc::Rc::new(std::os::fd::OwnedFd::from(f))
            };
            let (src, dst) = (open("src"), open("dst"));
            std::fs::write(dir.path().join("src"), b"data").expect("write");
            let size = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut op = crate::io::op::Ficlone::new(
                crate::io::fd::SharedFd::owned(&src),
                crate::io::fd::SharedFd::owned(&dst),
                size,
            );
            // SAFETY: the op (its descriptors and size) lives until the
            // completion below is reaped.
            unsafe { ring.push(&mut op, 3, squeue::Flags::empty(), 0) }.expect("push");
            let mut got = Vec::new();
            // Waiting in the kernel (io_uring) or in poll (threads): the
            // worker's completion must end the wait, on either back end.
            while got.is_empty() {
                ring.submit(1).expect("submit");
                ring.reap(&mut got);
            }
            assert_eq!(got.len(), 1, "{kind:?}: {got:?}");
            assert_eq!(got[0].user_data, 3);
            let r = got[0].result;
            // Whatever this file system says (cloned, or not supported),
            // it is FICLONE's answer, not the restricted ring's EACCES.
            assert!(
                r == 0 || matches!(-r, libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL),
                "{kind:?}: {r}"
            );
        }
    }

    #[test]
    fn a_cancel_that_takes_back_work_no_worker_started_wakes_the_ring() {
        // Cancelled at once, a piece is often still on the pool's channel:
        // the pool completes it itself, and the ring waiting in
        // io_uring_enter must hear of it. Under a watchdog: the bug was a
        // wait for ever.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("f");
            std::fs::write(&path, vec![7u8; 1 << 16]).expect("write");
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .expect("open");
            let fd = std::rc::Rc::new(std::os::fd::OwnedFd::from(file));
            let mut ring = Ring::new(8, EngineKind::Uring).expect("ring");
            for round in 0..50u64 {
                let mut op = crate::io::op::CopyRange::new(
                    crate::io::op::copy_range::Kind::CopyFileRange,
                    crate::io::fd::SharedFd::owned(&fd),
                    crate::io::fd::SharedFd::owned(&fd),
                    (0, 1 << 16),
                    1 << 16,
                );
                let mut cancel = crate::io::op::Cancel::new(round);
                // SAFETY: the op (its descriptors and offsets) lives until
                // its completion is reaped below; a cancel points at nothing.
                unsafe {
                    ring.push(&mut op, round, squeue::Flags::empty(), 0)
                        .expect("push");
                    ring.push(&mut cancel, u64::MAX, squeue::Flags::empty(), 0)
                        .expect("push cancel");
                }
                let mut got = Vec::new();
                while !got.iter().any(|c: &Cqe| c.user_data == round) {
                    ring.submit(1).expect("submit");
                    ring.reap(&mut got);
                }
            }
            let _ = tx.send(());
        });
        let done = rx.recv_timeout(std::time::Duration::from_secs(20));
        assert!(
            done.is_ok(),
            "the ring waited for a completion the pool had made itself"
        );
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
