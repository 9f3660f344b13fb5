//! The threads back end's workers: blocking syscalls (splice, preadv2,
//! pwritev2, send, fallocate, ftruncate, fdatasync, close, statx, and
//! FICLONE, copy_file_range and sendfile, which io_uring's side pool runs
//! here too) run here, fed by a queue they sleep on (parking.rs), and
//! their results go back to the loop as completions.
//!
//! A worker may block for as long as a peer does not read, so the pool grows
//! when every worker is busy (up to `MAX_WORKERS`, as io-wq grows its
//! unbounded workers), and cancellation interrupts a blocked syscall with a
//! signal whose handler does nothing and is installed without SA_RESTART: the
//! syscall returns EINTR (or the bytes it moved) and the worker reports
//! -ECANCELED. A signal can land just before the worker enters the syscall;
//! the loop repeats it until the operation is done (`Cell::is_running`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Once, RwLock};

use crossbeam_channel::Sender;
use tracing::warn;

use super::Cqe;
use crate::io::op::Blocking;
use crate::io::parking::ParkingQueue;
use crate::privileges::{Identity, WorkerIdentity};

/// Client identities registered as personalities: personality N is entry
/// N - 1 (0 is none, as for io_uring). Only ever appended to.
pub(super) type Identities = Arc<RwLock<Vec<Identity>>>;

/// Workers made at start (unless the pool is asked for more).
pub(super) const START_WORKERS: usize = 2;
/// The most workers: each blocked one is a stalled peer or a slow disk, and
/// the engine caps the operations in flight well below this.
pub(super) const MAX_WORKERS: usize = 256;
/// The longest link chain the engine builds is a splice pair.
pub(super) const MAX_CHAIN: usize = 4;

/// IORING_CQE_F_MORE and IORING_CQE_F_NOTIF: SEND_ZC's two completions.
pub(super) const CQE_F_MORE: u32 = 1 << 1;
pub(super) const CQE_F_NOTIF: u32 = 1 << 3;

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

/// What the loop and the worker running an operation share.
#[derive(Default)]
pub(super) struct Cell {
    state: AtomicU8,
    cancel: AtomicBool,
    /// The pthread_t of the worker running it, for the cancel signal.
    thread: AtomicU64,
    /// The chain's user_data, set while the loop alone holds the cell.
    pub chain: [u64; MAX_CHAIN],
    pub chain_len: usize,
    /// Whether the chain closes a descriptor (never cancelled: it would leak).
    pub closes: bool,
}

impl Cell {
    /// Asks for the operation to end: before it starts it never does; while a
    /// worker runs it, that worker is interrupted (again on each call).
    pub(super) fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        if self.state.load(Ordering::SeqCst) == RUNNING {
            let thread = self.thread.load(Ordering::SeqCst) as libc::pthread_t;
            // SAFETY: the thread is a worker, and workers live as long as the
            // pool (they leave only when its channel closes, after the loop
            // is gone). If it has moved on to another operation the signal
            // costs that one an EINTR, which it retries (it was not cancelled).
            unsafe { libc::pthread_kill(thread, cancel_signal()) };
        }
    }

    /// Takes back work no worker has started: true if it will never run,
    /// and the caller then completes its operations itself.
    pub(super) fn take_back(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, DONE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Whether a worker is still inside the operation.
    pub(super) fn is_running(&self) -> bool {
        self.state.load(Ordering::SeqCst) == RUNNING
    }

    fn reset(&mut self) {
        *self = Cell::default();
    }
}

/// One chain of operations for a worker: each runs only if the one before
/// moved everything it was asked to.
pub(super) struct Work {
    pub ops: [Option<(u64, Blocking)>; MAX_CHAIN],
    pub cell: Arc<Cell>,
    /// The identity the chain runs under (0: the daemon's own).
    pub personality: u16,
}

// SAFETY: a Blocking call's raw pointers (buffers, a msghdr) point at memory the
// engine's op table holds until the operation's completion is reaped, which
// is after the worker has sent it; nothing else touches that memory
// meanwhile. Sending them to the worker thread is the point.
unsafe impl Send for Work {}

/// The workers and their queues.
pub(super) struct WorkerPool {
    work: ParkingQueue<Work>,
    done_tx: Sender<Cqe>,
    wake: Arc<OwnedFd>,
    /// Pieces of work handed out and not yet finished: raised here before
    /// the send, lowered by the worker only after the chain has run, so it
    /// never undercounts (a worker between taking work and starting it is
    /// still counted busy).
    unfinished: Arc<AtomicUsize>,
    threads: usize,
    /// The most threads this pool makes.
    max_workers: usize,
    /// Cells whose operations are over, reused once their worker let go.
    spare: Vec<Arc<Cell>>,
    pub identities: Identities,
}

impl WorkerPool {
    /// Starts `start` workers; completions go to `done_tx`, and each batch
    /// of them is announced on the eventfd `wake`. It grows up to
    /// `max_workers` threads (at least the first ones).
    pub(super) fn new(
        done_tx: Sender<Cqe>,
        wake: Arc<OwnedFd>,
        (start, max_workers): (usize, usize),
    ) -> std::io::Result<WorkerPool> {
        install_cancel_handler();
        let mut pool = WorkerPool {
            work: ParkingQueue::with_capacity(64),
            done_tx,
            wake,
            unfinished: Arc::new(AtomicUsize::new(0)),
            threads: 0,
            max_workers: max_workers.max(start),
            spare: Vec::with_capacity(64),
            identities: Arc::default(),
        };
        // The first workers make their splice pipes (`warm_splice_pipe`)
        // before this returns, so before the daemon drops its capabilities.
        let (warmed_tx, warmed) = crossbeam_channel::bounded(start);
        for _ in 0..start {
            pool.spawn(Some(warmed_tx.clone()))?;
        }
        for _ in 0..start {
            // A worker that cannot say so within this is slow, not lost:
            // its pipe is only made later.
            let _ = warmed.recv_timeout(std::time::Duration::from_secs(5));
        }
        Ok(pool)
    }

    /// Starts a worker; `warmed` hears when its splice pipe is made.
    fn spawn(&mut self, warmed: Option<Sender<()>>) -> std::io::Result<()> {
        let rx = self.work.clone();
        let done = self.done_tx.clone();
        let wake = Arc::clone(&self.wake);
        let unfinished = Arc::clone(&self.unfinished);
        let identities = Arc::clone(&self.identities);
        std::thread::Builder::new()
            .name("ringxfer-worker".into())
            .spawn(move || {
                warm_splice_pipe();
                if let Some(w) = warmed {
                    let _ = w.send(());
                }
                worker(rx, done, wake, unfinished, identities)
            })?;
        self.threads += 1;
        Ok(())
    }

    /// A cell for a new piece of work: a spare one whose worker is done with
    /// it, or a new one.
    pub(super) fn cell(&mut self) -> Arc<Cell> {
        if let Some(i) = self.spare.iter().position(|c| Arc::strong_count(c) == 1) {
            let mut cell = self.spare.swap_remove(i);
            if let Some(c) = Arc::get_mut(&mut cell) {
                c.reset();
                return cell;
            }
        }
        Arc::new(Cell::default())
    }

    /// Keeps a cell whose operations have all completed, for reuse.
    pub(super) fn retire(&mut self, cell: Arc<Cell>) {
        if self.spare.len() < self.spare.capacity() {
            self.spare.push(cell);
        }
    }

    /// Hands `work` to a worker, making one more if all are busy.
    pub(super) fn run(&mut self, work: Work) {
        // Each unfinished piece may be blocked on a peer for good, so this
        // one gets a thread of its own unless one is free for certain.
        let unfinished = self.unfinished.fetch_add(1, Ordering::SeqCst) + 1;
        if unfinished > self.threads && self.threads < self.max_workers {
            if let Err(e) = self.spawn(None) {
                warn!(
                    workers = self.threads,
                    "cannot start another worker thread: {e}; work waits for a free one"
                );
            }
        }
        // Closed only when the pool goes.
        let _ = self.work.put(work);
    }

    pub(super) fn threads(&self) -> usize {
        self.threads
    }
}

impl Drop for WorkerPool {
    /// The workers finish what was queued, then leave.
    fn drop(&mut self) {
        self.work.close();
    }
}

/// The signal that interrupts a worker's blocked syscall.
fn cancel_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn on_cancel_signal(_: libc::c_int) {}

fn install_cancel_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler does nothing (so
        // it is async-signal-safe) and SA_RESTART is left out so blocked
        // syscalls return EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_cancel_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(cancel_signal(), &action, std::ptr::null_mut());
        }
    });
}

fn worker(
    rx: ParkingQueue<Work>,
    done: Sender<Cqe>,
    wake: Arc<OwnedFd>,
    unfinished: Arc<AtomicUsize>,
    identities: Identities,
) {
    // Workers inherit the loop thread's mask (SIGTERM and SIGINT blocked for
    // its signalfd); only the cancel signal must get through.
    // SAFETY: a sigset filled by sigemptyset/sigaddset, used on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, cancel_signal());
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as u64;
    let mut wearing = WorkerIdentity::default();
    while let Some(work) = rx.take() {
        run_chain(&work, me, &done, &wake, &identities, &mut wearing);
        unfinished.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Makes this thread's in-kernel splice pipe now, as the daemon itself.
///
/// copy_file_range within a file system and sendfile move their bytes
/// through a pipe the kernel keeps per thread, made on the thread's first
/// such call and sized then: 16 pages, or 2 when the thread's user holds
/// more than fs.pipe-user-pages-soft in pipes and the thread lacks
/// CAP_SYS_RESOURCE. A worker wearing a client's identity has no
/// capabilities, and root's pipes count every root process's (the daemon's
/// own pool is 8192 pages): with 2 pages a hot 1 GiB copy_file_range took
/// 0.54 s of CPU instead of 0.26 s. Made here, the pipe is charged to the
/// daemon (with its capabilities, for the workers made at start-up) and
/// kept whatever identity the worker wears later. One byte copied within a
/// memfd; any failure only leaves the kernel to make the pipe later.
fn warm_splice_pipe() {
    // SAFETY: the name is a valid C string; the result is checked.
    let raw = unsafe { libc::memfd_create(c"ringxfer-warm".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return;
    }
    // SAFETY: `raw` is a new descriptor nothing else owns.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let byte = [0u8; 1];
    // SAFETY: writes one byte from a live array into our own memfd.
    if unsafe { libc::pwrite(fd.as_raw_fd(), byte.as_ptr().cast(), 1, 0) } != 1 {
        return;
    }
    let (mut from, mut to): (libc::off64_t, libc::off64_t) = (0, 1);
    // SAFETY: both offsets are live locals; the descriptor is ours and
    // open; the ranges do not overlap.
    unsafe { libc::copy_file_range(fd.as_raw_fd(), &mut from, fd.as_raw_fd(), &mut to, 1, 0) };
}

/// Tells the loop a completion is waiting (after each one, not each chain:
/// the first of a pair must not wait for a second that blocks).
fn announce(wake: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to our eventfd. It cannot
    // block: the counter would have to reach 2^64 - 1 first.
    unsafe {
        libc::write(
            wake.as_raw_fd(),
            (&one as *const u64).cast(),
            std::mem::size_of::<u64>(),
        )
    };
}

fn run_chain(
    work: &Work,
    me: u64,
    done: &Sender<Cqe>,
    wake: &OwnedFd,
    identities: &Identities,
    wearing: &mut WorkerIdentity,
) {
    let cell = &work.cell;
    cell.thread.store(me, Ordering::SeqCst);
    let started = cell
        .state
        .compare_exchange(QUEUED, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if !started {
        // The loop took it back and completed its operations itself.
        return;
    }
    let mut broken = cell.cancel.load(Ordering::SeqCst);
    // The client's identity, as io_uring applies a personality: an identity
    // that cannot be worn fails the chain rather than run it as the daemon.
    let refused = match wear(work.personality, identities, wearing) {
        Ok(()) => None,
        Err(e) => Some(-e.raw_os_error().unwrap_or(libc::EPERM)),
    };
    for &(user_data, request) in work.ops.iter().flatten() {
        // A close always runs: cancelling it would leak the descriptor.
        let closes = matches!(request, Blocking::Close(_));
        let result = if let Some(errno) = refused.filter(|_| !closes) {
            errno
        } else if broken && !closes {
            -libc::ECANCELED
        } else {
            execute(request, cell)
        };
        let send = |result: i32, flags: u32| {
            let _ = done.send(Cqe {
                user_data,
                result,
                flags,
            });
            announce(wake);
        };
        if matches!(request, Blocking::Send(c) if c.zc) {
            send(result, CQE_F_MORE);
            send(0, CQE_F_NOTIF);
        } else {
            send(result, 0);
        }
        // A link breaks on an error or a short transfer, as io_uring's does.
        broken |= result < 0 || request.full_len().is_some_and(|len| result as usize != len);
    }
    cell.state.store(DONE, Ordering::SeqCst);
}

/// Makes this worker wear the identity registered as `personality`.
fn wear(
    personality: u16,
    identities: &Identities,
    wearing: &mut WorkerIdentity,
) -> std::io::Result<()> {
    if personality == 0 {
        return wearing.wear(0, None);
    }
    let table = identities
        .read()
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EPERM))?;
    match table.get(usize::from(personality) - 1) {
        Some(id) => wearing.wear(personality, Some(id)),
        None => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
    }
}

/// Runs one request; EINTR is retried unless the operation was cancelled.
fn execute(request: Blocking, cell: &Cell) -> i32 {
    let cancellable = !matches!(request, Blocking::Close(_));
    loop {
        if cancellable && cell.cancel.load(Ordering::SeqCst) {
            return -libc::ECANCELED;
        }
        // SAFETY: the descriptors and memory a call names are held by the
        // engine's op table until its completion is reaped (see `Work`);
        // lengths are the ones the engine sized to its buffers.
        let ret = unsafe { request.run() };
        if ret >= 0 {
            return ret.min(i32::MAX as isize) as i32;
        }
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        // What the kernel would retry inside io_uring: the errno table's
        // interruptions (only EINTR reaches user space from a syscall).
        if crate::io::errno::interrupted(errno) {
            continue;
        }
        return -errno;
    }
}
