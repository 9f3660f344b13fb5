//! Queueing typed operations (io/op/), with their table entries.
//!
//! Every operation is recorded in the op table before its entry is built and
//! pushed, so its `user_data` is known and the table holds it, and what the
//! kernel will touch, until its final completion.

use std::any::Any;
use std::os::fd::OwnedFd;
use std::time::Duration;

use io_uring::squeue;

use super::buffer_pool::BufRef;
use super::fd::SharedFd;
use super::op::{self, AnyOp, PoolSpan, SendFrom};
use super::ops::{Op, Owner, CANCEL_USER_DATA};
use super::{EngineError, Io};

pub(crate) use super::op::rw::RwOpts;
pub(crate) use super::op::splice::SpliceEnd;

/// A receive buffer, with the `msghdr` recvmsg fills (a session's).
pub trait RecvTarget: Any {
    /// The `msghdr` the kernel writes through, pointing into `self`.
    fn prepare(&mut self) -> *mut libc::msghdr;
}

/// Bytes to send (a session's).
pub trait SendSource: Any {
    /// Where the bytes still to send start, and how many there are.
    fn unsent(&self) -> (*const u8, u32);
}

/// A buffer operation that could not be queued, and its buffer back.
#[derive(Debug)]
pub struct BufFailed {
    pub error: EngineError,
    pub buf: Option<BufRef>,
}

/// Where a buffer operation goes: a descriptor and a span of a pool buffer.
#[derive(Debug)]
pub struct BufIo {
    pub fd: SharedFd,
    pub buf: BufRef,
    pub at: usize,
    pub len: u32,
}

/// What a buffer operation does.
#[derive(Debug, Clone, Copy)]
pub enum BufWhat {
    /// Read into the buffer from `offset` (-1 as u64: the file position).
    Read { offset: u64, rw: RwOpts },
    /// Write from the buffer at `offset` (-1 as u64: the file position).
    Write { offset: u64, rw: RwOpts },
    /// Send from the buffer; zero-copy when `zc`.
    Send { zc: bool, fixed: bool },
}

impl Io {
    /// Records `op` for `owner` with `tag` and queues it.
    pub fn queue_op(
        &mut self,
        owner: Owner,
        tag: u32,
        op: impl Into<AnyOp>,
    ) -> Result<u64, EngineError> {
        self.queue(owner, tag, op.into(), squeue::Flags::empty())
            .map_err(|(e, _)| e)
    }

    /// Records the operation, builds its entry where the table keeps it and
    /// pushes it; an operation that never reached the ring comes back with
    /// the error.
    fn queue(
        &mut self,
        owner: Owner,
        tag: u32,
        op: AnyOp,
        flags: squeue::Flags,
    ) -> Result<u64, (EngineError, Option<AnyOp>)> {
        let personality = self.ops.personality(owner);
        let user_data = self.ops.insert(Op { owner, tag, op });
        let Some(entry) = self.ops.get_mut(user_data) else {
            // Just inserted: only a bug in the table could lose it.
            let error = EngineError::Config("the op table lost an operation".into());
            return Err((error, None));
        };
        // SAFETY: the op table now owns the operation, and through it
        // whatever its entry points at (heap memory that does not move when
        // the table grows, descriptors kept open by its `SharedFd`s), until this
        // entry's completion is reaped.
        let pushed = unsafe { self.ring.push(&mut entry.op, user_data, flags, personality) };
        match pushed {
            Ok(()) => Ok(user_data),
            // The entry never reached the kernel: its operation comes back.
            Err(e) => Err((e, self.ops.forget(user_data).map(|op| op.op))),
        }
    }

    /// Queues a splice of up to `len` bytes from `input` to `output`, one of
    /// which is a pipe's end. The op keeps both ends' owners alive.
    pub fn splice(
        &mut self,
        owner: Owner,
        tag: u32,
        input: SpliceEnd,
        output: SpliceEnd,
        len: u32,
    ) -> Result<u64, EngineError> {
        self.queue_op(owner, tag, op::Splice::new(input, output, len))
    }

    /// Queues two splices, `first` then `second`, linked: the kernel's worker
    /// runs the second right after the first, without a trip through the
    /// loop. If the first moves fewer bytes than asked, or fails, the second
    /// completes with -ECANCELED and the caller decides what to do instead.
    pub fn splice_linked(
        &mut self,
        owner: Owner,
        tags: (u32, u32),
        first: (SpliceEnd, SpliceEnd),
        second: (SpliceEnd, SpliceEnd),
        len: u32,
    ) -> Result<(u64, u64), EngineError> {
        // Both entries must reach the ring in one submission, or the link
        // would join the first to whatever the next submission starts with.
        if self.ring.free_slots() < 2 {
            self.ring.submit(0)?;
            if self.ring.free_slots() < 2 {
                return Err(EngineError::Config(
                    "the submission queue has room for fewer than two entries".into(),
                ));
            }
        }
        let a = op::Splice::new(first.0, first.1, len);
        let a = self
            .queue(owner, tags.0, a.into(), squeue::Flags::IO_LINK)
            .map_err(|(e, _)| e)?;
        let b = op::Splice::new(second.0, second.1, len);
        let b = self.queue_op(owner, tags.1, b)?;
        Ok((a, b))
    }

    /// Queues a one-shot poll for `events` on `fd` (one of the job's ends).
    pub fn poll(
        &mut self,
        owner: Owner,
        tag: u32,
        fd: SharedFd,
        events: i16,
    ) -> Result<u64, EngineError> {
        self.queue_op(owner, tag, op::Poll::new(fd, events))
    }

    /// Asks the kernel to cancel the operation with `user_data`. The target
    /// still completes on its own (with -ECANCELED or its result), and that
    /// completion is where its owner cleans up.
    pub fn cancel(&mut self, user_data: u64) -> Result<(), EngineError> {
        let mut cancel = op::Cancel::new(user_data);
        // SAFETY: a cancel points at no memory; it names its target by
        // user_data only, and gets no table entry.
        unsafe {
            self.ring
                .push(&mut cancel, CANCEL_USER_DATA, squeue::Flags::empty(), 0)
        }
    }

    /// Queues a recvmsg on the session's socket into the session's buffer,
    /// which the op holds.
    pub fn recvmsg(
        &mut self,
        owner: Owner,
        fd: SharedFd,
        buf: Box<impl RecvTarget>,
    ) -> Result<u64, EngineError> {
        self.queue_op(owner, 0, op::RecvMsg::new(fd, buf))
    }

    /// Queues a send of the session's pending bytes, which the op holds.
    /// With `dont_wait`, a full socket ends the send with EAGAIN instead of
    /// waiting: a closing session does not wait for a client that stopped
    /// reading.
    pub fn send(
        &mut self,
        owner: Owner,
        fd: SharedFd,
        buf: Box<impl SendSource>,
        dont_wait: bool,
    ) -> Result<u64, EngineError> {
        let flags = if dont_wait { libc::MSG_DONTWAIT } else { 0 };
        self.queue_op(owner, 0, op::Send::new(fd, SendFrom::Bytes(buf), flags))
    }

    /// Queues an accept on the listening socket.
    pub fn accept(&mut self, fd: SharedFd) -> Result<u64, EngineError> {
        self.queue_op(Owner::Listener, 0, op::Accept::new(fd))
    }

    /// Closes `fd` in one of the kernel's io_uring workers, never on the loop
    /// thread. The last close of a file can do real work (ext4 starts
    /// writeback of a file that was truncated to zero; network file systems
    /// flush), and the release runs in whichever thread drops the last
    /// reference: with IOSQE_ASYNC that is the worker.
    ///
    /// Why not inline (no IOSQE_ASYNC), though the client usually still holds
    /// its own reference: the kernel punts only files with ->flush; for the
    /// rest, when ours is the last reference, the release runs as task work
    /// of the loop thread on its way out of io_uring_enter. That can be a
    /// socket's SO_LINGER wait, or the eviction of an O_TMPFILE destination
    /// whose client died before linking it (truncation waits for pages under
    /// writeback). Nothing visible from user space says whether a reference
    /// is the last, and one client's descriptor must not stall everyone's
    /// jobs. Chaining a turn's closes behind one ASYNC head does not help
    /// either: with DEFER_TASKRUN the links after the head are issued from
    /// the loop thread's task work (measured on 6.18: io_close ran on the
    /// submitter). A close that is not the last costs the worker well under
    /// a microsecond, and a worker takes several queued closes per wake-up
    /// (measured: 8 closes queued at once cost about 2.6 context switches).
    /// Returns whether the close went to the ring (and so will complete).
    pub fn close_async(&mut self, fd: OwnedFd) -> bool {
        let close = op::Close::new(fd);
        match self.queue(Owner::Closer, 0, close.into(), squeue::Flags::empty()) {
            Ok(_) => true,
            Err((_, Some(AnyOp::Close(close)))) => {
                close.close_now();
                false
            }
            Err(_) => false,
        }
    }

    /// Queues a read, write or send of `io.len` bytes through pool buffer
    /// `io.buf` (from `io.at`). The buffer moves into the op, with a share
    /// of the descriptor, and comes back with its last completion; if the
    /// op cannot be queued it comes back in the error.
    pub fn buffer_op(
        &mut self,
        owner: Owner,
        tag: u32,
        io: BufIo,
        what: BufWhat,
    ) -> Result<u64, BufFailed> {
        let BufIo { fd, buf, at, len } = io;
        let span = PoolSpan::new(buf, at, len);
        let op: AnyOp = match what {
            BufWhat::Read { offset, rw } => op::Read::new(fd, span, offset, rw).into(),
            BufWhat::Write { offset, rw } => op::Write::new(fd, span, offset, rw).into(),
            // SEND_ZC sends straight from the buffer and posts a notification
            // when the kernel is done with it.
            BufWhat::Send { zc: true, fixed } => op::SendZc::new(fd, span, fixed).into(),
            BufWhat::Send { zc: false, .. } => op::Send::new(fd, SendFrom::Pool(span), 0).into(),
        };
        self.queue(owner, tag, op, squeue::Flags::empty())
            .map_err(|(error, op)| BufFailed {
                error,
                buf: op.and_then(AnyOp::into_buffer),
            })
    }

    /// Queues fallocate(mode 0) of `len` bytes at `offset` of `fd`.
    pub fn fallocate(
        &mut self,
        owner: Owner,
        tag: u32,
        fd: SharedFd,
        offset: u64,
        len: u64,
    ) -> Result<u64, EngineError> {
        self.queue_op(owner, tag, op::Fallocate::new(fd, offset, len))
    }

    /// Queues a punch of `len` bytes at `offset` of `fd` (a hole; the size
    /// stays).
    pub fn punch_hole(
        &mut self,
        owner: Owner,
        tag: u32,
        fd: SharedFd,
        offset: u64,
        len: u64,
    ) -> Result<u64, EngineError> {
        self.queue_op(owner, tag, op::Fallocate::punch(fd, offset, len))
    }

    /// Queues ftruncate of `fd` to `len` bytes.
    pub fn ftruncate(
        &mut self,
        owner: Owner,
        tag: u32,
        fd: SharedFd,
        len: u64,
    ) -> Result<u64, EngineError> {
        self.queue_op(owner, tag, op::Ftruncate::new(fd, len))
    }

    /// Queues fdatasync of `fd` (IORING_OP_FSYNC with DATASYNC).
    pub fn fdatasync(&mut self, owner: Owner, tag: u32, fd: SharedFd) -> Result<u64, EngineError> {
        self.queue_op(owner, tag, op::Fsync::new(fd, true))
    }

    /// Queues a statx of `fd` itself (an empty path with AT_EMPTY_PATH) for
    /// `mask`, into a buffer the op holds (see io/op/statx.rs).
    pub fn statx(
        &mut self,
        owner: Owner,
        tag: u32,
        fd: SharedFd,
        flags: i32,
        mask: u32,
    ) -> Result<u64, EngineError> {
        self.queue_op(owner, tag, op::Statx::new(fd, flags, mask))
    }

    /// Queues a timer that completes after `delay`.
    pub fn timeout(&mut self, owner: Owner, delay: Duration) -> Result<u64, EngineError> {
        self.queue_op(owner, 0, op::Timeout::new(delay))
    }

    /// Queues a read of a signalfd or eventfd into a buffer the op holds.
    pub fn read_small(&mut self, owner: Owner, fd: SharedFd, len: u32) -> Result<u64, EngineError> {
        self.queue_op(owner, 0, op::ReadSmall::new(fd, len))
    }
}
