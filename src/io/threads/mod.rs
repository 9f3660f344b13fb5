//! The threads back end: the engine's operations without io_uring.
//!
//! Where io_uring is refused (the kernel.io_uring_disabled sysctl, a
//! container's seccomp profile, a hardened kernel), the engine runs
//! unchanged on top of this: it queues the same typed operations (io/op/),
//! and `ThreadRing` carries out each one's blocking equivalent
//! (`Operation::blocking`) instead of its submission entry.
//!
//! - Operations that may block (splice, preadv2/pwritev2 on files, fallocate,
//!   ftruncate, fdatasync, close, statx at admission, a publish's directory
//!   operations) go to worker threads (`worker.rs`).
//! - Socket operations (accept, recvmsg, send) run on the loop thread with
//!   MSG_DONTWAIT (the listener is made non-blocking); one that would block
//!   waits for readiness in the loop's poll(2), as io_uring's poll-driven
//!   retry does.
//! - Reads and writes of pipes, sockets and other streams wait for readiness
//!   first, then go to a worker; polls and timeouts are the loop's own.
//!
//! The loop waits in poll(2) on the waiting descriptors and an eventfd the
//! workers write after each chain, with the nearest timer as its timeout.

mod worker;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tracing::debug;

use super::op::{accept, recvmsg};
use worker::{
    Cell, Work, WorkerPool, CQE_F_MORE, CQE_F_NOTIF, MAX_CHAIN, MAX_WORKERS, START_WORKERS,
};

use super::op::Blocking;
use super::opcodes;
use super::ops::CANCEL_USER_DATA;

/// One operation handed to the threads back end: its opcode (for the
/// restrictions), its blocking equivalent, and what the entry would carry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Submitted {
    pub code: u8,
    pub call: Blocking,
    pub user_data: u64,
    /// The next operation runs only if this one moved all it was asked.
    pub link: bool,
    /// The registered identity the operation runs under (0: the daemon's).
    pub personality: u16,
}

/// One completion, as either back end reports it.
#[derive(Debug, Clone, Copy)]
pub struct Cqe {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

/// How often a cancelled operation's worker is interrupted again while it
/// has not finished (the first signal may land before its syscall starts).
const CANCEL_REPEAT: Duration = Duration::from_millis(10);

/// An operation waiting for its descriptor to become ready.
struct Waiter {
    user_data: u64,
    fd: RawFd,
    events: i16,
    request: Blocking,
    personality: u16,
}

/// The threads back end's ring: entries in, completions out.
pub(super) struct ThreadRing {
    capacity: usize,
    /// Entries pushed and not yet submitted, in order.
    queued: Vec<Submitted>,
    pool: WorkerPool,
    done_rx: Receiver<Cqe>,
    wake: Arc<OwnedFd>,
    /// Completions not yet reaped.
    ready: Vec<Cqe>,
    /// Operations on workers, by user_data, and whether each is the last
    /// of its chain (whose completion frees the chain's cell).
    on_workers: HashMap<u64, (Arc<Cell>, bool)>,
    waiters: Vec<Waiter>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Timers not yet fired or cancelled, with their deadlines: a heap entry
    /// counts only if it matches (user_data is reused once an op completes).
    live_timers: HashMap<u64, Instant>,
    cancelling: Vec<Arc<Cell>>,
    pollfds: Vec<libc::pollfd>,
    /// Listening sockets already made non-blocking.
    nonblocking: HashSet<RawFd>,
}

impl ThreadRing {
    /// A back end that accepts `entries` entries per submission.
    pub(super) fn new(entries: u32) -> io::Result<ThreadRing> {
        ThreadRing::with_workers(entries, START_WORKERS, MAX_WORKERS)
    }

    /// The same with `start` worker threads made now, growing to at most
    /// `max_workers` (io_uring's side pool makes all of its own at once).
    pub(super) fn with_workers(
        entries: u32,
        start: usize,
        max_workers: usize,
    ) -> io::Result<ThreadRing> {
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let pool = WorkerPool::new(done_tx, Arc::clone(&wake), (start, max_workers))?;
        let capacity = entries as usize;
        Ok(ThreadRing {
            capacity,
            queued: Vec::with_capacity(capacity),
            pool,
            done_rx,
            wake,
            ready: Vec::with_capacity(capacity * 4),
            on_workers: HashMap::with_capacity(capacity * 2),
            waiters: Vec::with_capacity(64),
            timers: BinaryHeap::with_capacity(16),
            live_timers: HashMap::with_capacity(16),
            cancelling: Vec::new(),
            pollfds: Vec::with_capacity(64),
            nonblocking: HashSet::new(),
        })
    }

    /// Queues an operation; false when the queue is full (submit, then
    /// retry). One the engine does not use is refused with EACCES when it
    /// starts, as the restricted ring refuses it.
    ///
    /// # Safety
    /// As for io_uring: what the call points at stays valid until its
    /// completion has been reaped.
    pub(super) unsafe fn push(&mut self, mut op: Submitted) -> bool {
        if self.queued.len() >= self.capacity {
            return false;
        }
        if !opcodes::allowed(op.code) {
            debug!(
                opcode = op.code,
                "refused: not an operation the engine uses"
            );
            op.call = Blocking::Unsupported;
        }
        self.queued.push(op);
        true
    }

    pub(super) fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    pub(super) fn free_slots(&self) -> usize {
        self.capacity - self.queued.len()
    }

    /// Starts every queued entry; when `want` > 0, waits until at least that
    /// many completions are ready. Returns how many entries were started.
    pub(super) fn submit(&mut self, want: usize) -> usize {
        let started = self.start_queued();
        loop {
            self.collect();
            if want == 0 || self.ready.len() >= want {
                return started;
            }
            self.wait();
        }
    }

    /// Moves every ready completion into `out`.
    pub(super) fn reap(&mut self, out: &mut Vec<Cqe>) {
        out.append(&mut self.ready);
    }

    /// Registers `id` for operations to run under (the SQE's personality
    /// field), as IORING_REGISTER_PERSONALITY does: its number, from 1.
    pub(super) fn register_personality(
        &mut self,
        id: crate::privileges::Identity,
    ) -> io::Result<u16> {
        let mut table = self
            .pool
            .identities
            .write()
            .map_err(|_| io::Error::from_raw_os_error(libc::EIO))?;
        let n = u16::try_from(table.len() + 1)
            .map_err(|_| io::Error::from_raw_os_error(libc::ENOSPC))?;
        table.push(id);
        Ok(n)
    }

    /// The eventfd the workers write after each completion: io_uring's
    /// back end polls it through the ring (io/ring.rs, `SidePool`).
    pub(super) fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Whether completions are waiting to be reaped that no worker
    /// announced on the eventfd: those the loop made itself (a cancel that
    /// took back work no worker had started, a refused operation).
    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Worker threads running now.
    pub(super) fn workers(&self) -> usize {
        self.pool.threads()
    }

    fn start_queued(&mut self) -> usize {
        let queued = std::mem::take(&mut self.queued);
        let n = queued.len();
        let mut i = 0;
        while i < n {
            // A chain is the entries up to and including the first without
            // IO_LINK; a link at the very end of a submission ends there.
            let mut end = i;
            while queued[end].link && end + 1 < n {
                end += 1;
            }
            let chain = &queued[i..=end];
            if chain.len() == 1 {
                self.start(chain[0]);
            } else if chain.len() <= MAX_CHAIN {
                let mut ops = [None; MAX_CHAIN];
                for (slot, d) in ops.iter_mut().zip(chain) {
                    *slot = Some((d.user_data, d.call));
                }
                self.hand_to_worker(ops, chain[0].personality);
            } else {
                for d in chain {
                    self.complete(d.user_data, -libc::EINVAL, 0);
                }
            }
            i = end + 1;
        }
        self.queued = queued;
        self.queued.clear();
        n
    }

    fn start(&mut self, d: Submitted) {
        let ud = d.user_data;
        let who = d.personality;
        match d.call {
            Blocking::Timeout { after } => {
                let at = Instant::now() + after;
                self.timers.push(Reverse((at, ud)));
                self.live_timers.insert(ud, at);
            }
            Blocking::Cancel { target } => {
                let result = self.cancel(target);
                self.complete(ud, result, 0);
            }
            Blocking::Poll { fd, events } => self.wait_for(ud, fd, events, d.call, who),
            Blocking::RecvMsg(recvmsg::Call { fd, .. })
            | Blocking::Accept(accept::Call { fd, .. }) => {
                if !self.try_inline(ud, d.call) {
                    self.wait_for(ud, fd, libc::POLLIN, d.call, who);
                }
            }
            Blocking::Send(c) => {
                if !self.try_inline(ud, d.call) {
                    self.wait_for(ud, c.fd, libc::POLLOUT, d.call, who);
                }
            }
            // io_uring ignores the offset of a stream; preadv2 and pwritev2
            // would refuse it with ESPIPE, so streams use the position.
            Blocking::Read(c) if is_stream(c.fd) => {
                self.wait_for(ud, c.fd, libc::POLLIN, Blocking::Read(c.at_position()), who)
            }
            Blocking::Write(c) if is_stream(c.fd) => self.wait_for(
                ud,
                c.fd,
                libc::POLLOUT,
                Blocking::Write(c.at_position()),
                who,
            ),
            Blocking::Unsupported => self.complete(ud, -libc::EACCES, 0),
            Blocking::Splice(_)
            | Blocking::Read(_)
            | Blocking::Write(_)
            | Blocking::Close(_)
            | Blocking::Fallocate(_)
            | Blocking::Ftruncate(_)
            | Blocking::Fsync(_)
            | Blocking::LinkAt(_)
            | Blocking::RenameAt(_)
            | Blocking::UnlinkAt(_)
            | Blocking::Ficlone(_)
            | Blocking::DataMap(_)
            | Blocking::CopyRange(_)
            | Blocking::OpenAt2(_)
            | Blocking::MkdirAt(_)
            | Blocking::SetMeta(_)
            | Blocking::ListDir(_)
            | Blocking::Statx(_) => {
                let mut ops = [None; MAX_CHAIN];
                ops[0] = Some((ud, d.call));
                self.hand_to_worker(ops, who);
            }
        }
    }

    /// Hands a chain to a worker, which runs it under the identity
    /// registered as `personality` (0: the daemon's own).
    fn hand_to_worker(&mut self, ops: [Option<(u64, Blocking)>; MAX_CHAIN], personality: u16) {
        let mut cell = self.pool.cell();
        if let Some(c) = Arc::get_mut(&mut cell) {
            for (slot, (ud, request)) in c.chain.iter_mut().zip(ops.iter().flatten()) {
                *slot = *ud;
                c.closes |= matches!(request, Blocking::Close(_));
                c.chain_len += 1;
            }
        }
        let last = ops.iter().flatten().count();
        for (i, (ud, _)) in ops.iter().flatten().enumerate() {
            self.on_workers
                .insert(*ud, (Arc::clone(&cell), i + 1 == last));
        }
        self.pool.run(Work {
            ops,
            cell,
            personality,
        });
    }

    fn wait_for(
        &mut self,
        user_data: u64,
        fd: RawFd,
        events: i16,
        request: Blocking,
        personality: u16,
    ) {
        self.waiters.push(Waiter {
            user_data,
            fd,
            events,
            request,
            personality,
        });
    }

    fn complete(&mut self, user_data: u64, result: i32, flags: u32) {
        self.ready.push(Cqe {
            user_data,
            result,
            flags,
        });
    }

    /// Tries a socket operation without blocking; true when it completed.
    fn try_inline(&mut self, ud: u64, request: Blocking) -> bool {
        let (ret, zc) = match request {
            Blocking::RecvMsg(mut c) => {
                c.msg_flags |= libc::MSG_DONTWAIT;
                // SAFETY: the msghdr and everything it points at are held by
                // the op table until this operation's completion is reaped.
                (retry_eintr(|| unsafe { c.run() }), false)
            }
            Blocking::Send(mut c) => {
                let asked_not_to_wait = c.msg_flags & libc::MSG_DONTWAIT != 0;
                c.msg_flags |= libc::MSG_DONTWAIT;
                // SAFETY: the bytes are held by the op table until this
                // operation's completion is reaped.
                let ret = retry_eintr(|| unsafe { c.run() });
                if ret == -(libc::EAGAIN as isize) && asked_not_to_wait {
                    // The engine asked not to wait: EAGAIN is its answer.
                    self.complete_send(ud, -libc::EAGAIN, c.zc);
                    return true;
                }
                (ret, c.zc)
            }
            Blocking::Accept(c) => {
                if self.nonblocking.insert(c.fd) {
                    set_nonblocking(c.fd);
                }
                // SAFETY: no address is asked for; the listener is open.
                (retry_eintr(|| unsafe { c.run() }), false)
            }
            _ => return false,
        };
        if ret == -(libc::EAGAIN as isize) {
            return false;
        }
        self.complete_send(
            ud,
            ret.clamp(i32::MIN as isize, i32::MAX as isize) as i32,
            zc,
        );
        true
    }

    fn complete_send(&mut self, ud: u64, result: i32, zc: bool) {
        if zc {
            self.complete(ud, result, CQE_F_MORE);
            self.complete(ud, 0, CQE_F_NOTIF);
        } else {
            self.complete(ud, result, 0);
        }
    }

    /// Cancels `target`; the result of the cancel entry itself.
    fn cancel(&mut self, target: u64) -> i32 {
        if self.live_timers.remove(&target).is_some() {
            self.complete(target, -libc::ECANCELED, 0);
            return 0;
        }
        if let Some(i) = self.waiters.iter().position(|w| w.user_data == target) {
            let w = self.waiters.swap_remove(i);
            let zc = matches!(w.request, Blocking::Send(c) if c.zc);
            self.complete_send(target, -libc::ECANCELED, zc);
            return 0;
        }
        if let Some((cell, _)) = self.on_workers.get(&target) {
            let cell = Arc::clone(cell);
            if cell.closes {
                // A close runs to the end: cancelling it would leak the descriptor.
                return -libc::EALREADY;
            }
            if cell.take_back() {
                // No worker has it: the whole chain ends here and now.
                for &ud in &cell.chain[..cell.chain_len] {
                    if let Some((_, last)) = self.on_workers.remove(&ud) {
                        self.complete(ud, -libc::ECANCELED, 0);
                        if last {
                            self.pool.retire(Arc::clone(&cell));
                        }
                    }
                }
                return 0;
            }
            cell.cancel();
            if cell.is_running() {
                self.cancelling.push(cell);
            }
            return -libc::EALREADY;
        }
        -libc::ENOENT
    }

    /// Takes the workers' completions and fires due timers.
    fn collect(&mut self) {
        while let Ok(cqe) = self.done_rx.try_recv() {
            // SEND_ZC's first completion leaves the op on its worker's books
            // until the notification.
            if cqe.flags & CQE_F_MORE == 0 {
                if let Some((cell, true)) = self.on_workers.remove(&cqe.user_data) {
                    self.pool.retire(cell);
                }
            }
            self.ready.push(cqe);
        }
        let now = Instant::now();
        while let Some(&Reverse((at, ud))) = self.timers.peek() {
            if self.live_timers.get(&ud) != Some(&at) {
                self.timers.pop();
                continue;
            }
            if at > now {
                break;
            }
            self.timers.pop();
            self.live_timers.remove(&ud);
            self.complete(ud, -libc::ETIME, 0);
        }
        self.cancelling.retain(|c| c.is_running());
    }

    /// Sleeps in poll(2) until a worker finishes, a waiting descriptor is
    /// ready or the nearest timer is due; then runs what became ready.
    fn wait(&mut self) {
        let mut timeout: Option<Duration> = None;
        while let Some(&Reverse((at, ud))) = self.timers.peek() {
            if self.live_timers.get(&ud) == Some(&at) {
                timeout = Some(at.saturating_duration_since(Instant::now()));
                break;
            }
            self.timers.pop();
        }
        if !self.cancelling.is_empty() {
            for cell in &self.cancelling {
                cell.cancel();
            }
            timeout = Some(timeout.map_or(CANCEL_REPEAT, |t| t.min(CANCEL_REPEAT)));
        }
        self.pollfds.clear();
        self.pollfds.push(libc::pollfd {
            fd: self.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for w in &self.waiters {
            self.pollfds.push(libc::pollfd {
                fd: w.fd,
                events: w.events,
                revents: 0,
            });
        }
        let ms = timeout.map_or(-1, |t| {
            // Round up, so a timer is never woken for early and spun on.
            t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
        });
        // SAFETY: `pollfds` is a live array of as many entries as passed.
        let n = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                ms,
            )
        };
        if n <= 0 {
            // A timeout, or EINTR: the caller looks at timers and comes back.
            return;
        }
        if self.pollfds[0].revents != 0 {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd.
            unsafe {
                libc::read(
                    self.wake.as_raw_fd(),
                    (&mut count as *mut u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
        // Waiters were pushed in order after the eventfd; walk back so
        // swap_remove does not disturb the entries still to visit.
        for i in (0..self.waiters.len()).rev() {
            let revents = self.pollfds[i + 1].revents;
            if revents == 0 {
                continue;
            }
            let w = self.waiters.swap_remove(i);
            self.ready_waiter(w, revents);
        }
    }

    fn ready_waiter(&mut self, w: Waiter, revents: i16) {
        if revents & libc::POLLNVAL != 0 {
            let zc = matches!(w.request, Blocking::Send(c) if c.zc);
            return self.complete_send(w.user_data, -libc::EBADF, zc);
        }
        match w.request {
            Blocking::Poll { .. } => self.complete(w.user_data, i32::from(revents), 0),
            Blocking::RecvMsg(_) | Blocking::Accept(_) | Blocking::Send(_) => {
                if !self.try_inline(w.user_data, w.request) {
                    self.waiters.push(w);
                }
            }
            request => {
                let mut ops = [None; MAX_CHAIN];
                ops[0] = Some((w.user_data, request));
                self.hand_to_worker(ops, w.personality);
            }
        }
    }
}

/// Whether `fd` is a pipe, socket or other stream rather than a file or block
/// device (an fstat error counts as a stream: the operation then reports it).
fn is_stream(fd: RawFd) -> bool {
    // statx with AT_STATX_DONT_SYNC and only the type asked for: fstat on
    // NFS waits for the file's dirty pages, and on FUSE may ask a server
    // that hangs; neither may stall the loop.
    // SAFETY: a zeroed statx is valid; statx only writes into it, and the
    // empty path with AT_EMPTY_PATH names `fd` itself.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `stx` is live and writable.
    let ret = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE,
            &mut stx,
        )
    };
    if ret < 0 {
        return true;
    }
    let kind = u32::from(stx.stx_mode) & libc::S_IFMT;
    kind != libc::S_IFREG && kind != libc::S_IFBLK
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor the engine owns (its listener).
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Runs a syscall returning -1 and errno as the negative errno, retrying EINTR.
fn retry_eintr(mut call: impl FnMut() -> isize) -> isize {
    loop {
        let ret = call();
        if ret >= 0 {
            return ret;
        }
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if !crate::io::errno::interrupted(errno) {
            return -(errno as isize);
        }
    }
}

// The reserved user_data of cancel entries is never an operation's.
const _: () = assert!(CANCEL_USER_DATA == u64::MAX);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::op::splice;
    use io_uring::opcode;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the live array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both are new descriptors nothing else owns.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn submitted(code: u8, call: Blocking, user_data: u64) -> Submitted {
        Submitted {
            code,
            call,
            user_data,
            link: false,
            personality: 0,
        }
    }

    fn splice(from: &OwnedFd, to: &OwnedFd, ud: u64) -> Submitted {
        let call = Blocking::Splice(splice::Call {
            fd_in: from.as_raw_fd(),
            off_in: None,
            fd_out: to.as_raw_fd(),
            off_out: None,
            len: 4096,
        });
        submitted(opcode::Splice::CODE, call, ud)
    }

    fn timer(after: Duration, ud: u64) -> Submitted {
        submitted(opcode::Timeout::CODE, Blocking::Timeout { after }, ud)
    }

    fn cancel(target: u64) -> Submitted {
        let call = Blocking::Cancel { target };
        submitted(opcode::AsyncCancel::CODE, call, CANCEL_USER_DATA)
    }

    /// Waits (up to `limit`) for the completion of `ud`.
    fn wait_for(ring: &mut ThreadRing, got: &mut Vec<Cqe>, ud: u64, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(c) = got.iter().find(|c| c.user_data == ud) {
                return c.result;
            }
            assert!(
                Instant::now() < deadline,
                "no completion for {ud} in {limit:?}"
            );
            let tick = timer(Duration::from_millis(20), 1000);
            // SAFETY: a timer points at no memory (tick ids are ignored).
            assert!(unsafe { ring.push(tick) });
            ring.submit(1);
            ring.reap(got);
        }
    }

    #[test]
    fn ready_work_does_not_wait_behind_blocked_workers_and_queued_work_cancels_at_once() {
        let mut ring = ThreadRing::new(64).expect("threads ring");
        let (empty_a, _keep_a) = pipe();
        let (empty_b, _keep_b) = pipe();
        let (full_r, full_w) = pipe();
        let (out_r, out_w) = pipe();
        // SAFETY: writes 4096 bytes from a live buffer into our pipe.
        let wrote = unsafe { libc::write(full_w.as_raw_fd(), [7u8; 4096].as_ptr().cast(), 4096) };
        assert_eq!(wrote, 4096);
        let (sink_r, sink_w) = pipe();
        let (blocked_r, _keep_c) = pipe();
        // SAFETY: every descriptor outlives the ring's use of it below.
        unsafe {
            assert!(ring.push(splice(&empty_a, &sink_w, 1)));
            assert!(ring.push(splice(&empty_b, &sink_w, 2)));
            assert!(ring.push(splice(&blocked_r, &sink_w, 3)));
            assert!(ring.push(splice(&full_r, &out_w, 4)));
        }
        ring.submit(0);
        let mut got = Vec::new();
        assert_eq!(
            wait_for(&mut ring, &mut got, 4, Duration::from_secs(5)),
            4096
        );
        // Every blocked splice is cancelled, wherever it is (running or
        // still queued), and completes exactly once.
        for target in [1, 2, 3] {
            // SAFETY: a cancel points at no memory.
            assert!(unsafe { ring.push(cancel(target)) });
        }
        ring.submit(0);
        for target in [1, 2, 3] {
            let r = wait_for(&mut ring, &mut got, target, Duration::from_secs(5));
            assert_eq!(r, -libc::ECANCELED, "splice {target}");
        }
        for target in [1, 2, 3, 4] {
            assert_eq!(got.iter().filter(|c| c.user_data == target).count(), 1);
        }
        drop((out_r, sink_r));
    }

    #[test]
    fn a_reused_user_data_does_not_inherit_a_cancelled_timer() {
        let mut ring = ThreadRing::new(8).expect("threads ring");
        // SAFETY: timers and cancels point at no memory.
        unsafe {
            assert!(ring.push(timer(Duration::from_millis(100), 5)));
        }
        ring.submit(0);
        // SAFETY: as above.
        unsafe {
            assert!(ring.push(cancel(5)));
            // The op table would hand out 5 again at once.
            assert!(ring.push(timer(Duration::from_secs(30), 5)));
        }
        ring.submit(0);
        let mut got = Vec::new();
        ring.reap(&mut got);
        assert!(got
            .iter()
            .any(|c| c.user_data == 5 && c.result == -libc::ECANCELED));
        // Past the cancelled timer's deadline, the new one has not fired.
        std::thread::sleep(Duration::from_millis(200));
        ring.submit(0);
        got.clear();
        ring.reap(&mut got);
        assert!(
            !got.iter().any(|c| c.user_data == 5),
            "the 30 s timer fired early: {got:?}"
        );
    }
}
