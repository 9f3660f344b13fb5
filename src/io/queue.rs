//! Building and queueing submission entries, with their table entries.
//!
//! Every entry is recorded in the op table before it is pushed, so its
//! `user_data` is known, and the table entry holds what the kernel will touch.

use std::any::Any;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use io_uring::{opcode, squeue, types};

use super::buffer_pool::BufRef;
use super::ops::{Hold, Op, OpKind, Owner, CANCEL_USER_DATA};
use super::pipe_pool::Pipe;
use super::{EngineError, Io};

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

/// A share of what an operation's descriptors belong to, kept by the op.
fn keep<T: Any>(x: &Rc<T>) -> Rc<dyn Any> {
    Rc::clone(x) as Rc<dyn Any>
}

/// How a buffered read or write goes to the kernel.
#[derive(Debug, Clone, Copy)]
pub struct RwOpts {
    /// Use READ_FIXED/WRITE_FIXED: the pool is registered with the ring.
    pub fixed: bool,
    /// RWF_* flags (RWF_DONTCACHE for the uncached strategy).
    pub flags: i32,
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
    pub fd: RawFd,
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

/// One side of a splice: a descriptor and its offset (`None` for streams).
#[derive(Debug, Clone, Copy)]
pub struct SpliceEnd {
    pub fd: RawFd,
    pub offset: Option<u64>,
}

impl SpliceEnd {
    fn raw_offset(self) -> i64 {
        // Offsets were checked at admission to stay below 2^63.
        self.offset.map_or(-1, |o| o as i64)
    }
}

fn splice_entry(input: SpliceEnd, output: SpliceEnd, len: u32) -> squeue::Entry {
    opcode::Splice::new(
        types::Fd(input.fd),
        input.raw_offset(),
        types::Fd(output.fd),
        output.raw_offset(),
        len,
    )
    .build()
}

impl Io {
    /// Records `op` and pushes the entry `build` makes, tagged with its
    /// `user_data`; for builders outside this file (engine/publish.rs).
    pub fn queue_op(
        &mut self,
        op: Op,
        build: impl FnOnce() -> io_uring::squeue::Entry,
    ) -> Result<u64, EngineError> {
        self.queue(op, build)
    }

    fn queue(
        &mut self,
        op: Op,
        build: impl FnOnce() -> io_uring::squeue::Entry,
    ) -> Result<u64, EngineError> {
        let personality = self.ops.personality(op.owner);
        let user_data = self.ops.insert(op);
        let mut entry = build().user_data(user_data);
        if personality != 0 {
            // A job's operations run with its client's credentials.
            entry = entry.personality(personality);
        }
        // SAFETY: the op table now owns, until this entry's completion is
        // reaped, whatever the entry points at (see `Hold`): heap buffers that
        // do not move when the table grows, and descriptors kept open by `Rc`s.
        match unsafe { self.ring.push(&entry) } {
            Ok(()) => Ok(user_data),
            Err(e) => {
                // The entry never reached the kernel, so its hold can go now.
                self.ops.forget(user_data);
                Err(e)
            }
        }
    }

    /// Queues a splice of up to `len` bytes from `input` to `output`, one of
    /// which is `pipe`. The op keeps the pipe and the job's descriptors alive.
    #[allow(clippy::too_many_arguments)]
    pub fn splice(
        &mut self,
        owner: Owner,
        kind: OpKind,
        pipe: &Rc<Pipe>,
        ends: &Rc<impl Any>,
        input: SpliceEnd,
        output: SpliceEnd,
        len: u32,
    ) -> Result<u64, EngineError> {
        let op = Op {
            owner,
            kind,
            hold: Hold::Splice {
                pipe: Rc::clone(pipe),
                ends: keep(ends),
            },
        };
        self.queue(op, || splice_entry(input, output, len))
    }

    /// Queues two splices, `first` then `second`, linked: the kernel's worker
    /// runs the second right after the first, without a trip through the
    /// loop. If the first moves fewer bytes than asked, or fails, the second
    /// completes with -ECANCELED and the caller decides what to do instead.
    #[allow(clippy::too_many_arguments)]
    pub fn splice_linked(
        &mut self,
        owner: Owner,
        kinds: (OpKind, OpKind),
        pipe: &Rc<Pipe>,
        ends: &Rc<impl Any>,
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
        let hold = |pipe: &Rc<Pipe>, ends: &Rc<_>| Hold::Splice {
            pipe: Rc::clone(pipe),
            ends: keep(ends),
        };
        let a = self.queue(
            Op {
                owner,
                kind: kinds.0,
                hold: hold(pipe, ends),
            },
            || splice_entry(first.0, first.1, len).flags(squeue::Flags::IO_LINK),
        )?;
        let b = self.queue(
            Op {
                owner,
                kind: kinds.1,
                hold: hold(pipe, ends),
            },
            || splice_entry(second.0, second.1, len),
        )?;
        Ok((a, b))
    }

    /// Queues a one-shot poll for `events` on `fd` (one of the job's ends).
    pub fn poll(
        &mut self,
        owner: Owner,
        kind: OpKind,
        ends: &Rc<impl Any>,
        fd: RawFd,
        events: i16,
    ) -> Result<u64, EngineError> {
        let op = Op {
            owner,
            kind,
            hold: Hold::Poll(keep(ends)),
        };
        self.queue(op, || {
            opcode::PollAdd::new(types::Fd(fd), events as u32).build()
        })
    }

    /// Asks the kernel to cancel the operation with `user_data`. The target
    /// still completes on its own (with -ECANCELED or its result), and that
    /// completion is where its owner cleans up.
    pub fn cancel(&mut self, user_data: u64) -> Result<(), EngineError> {
        let entry = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(CANCEL_USER_DATA);
        // SAFETY: a cancel entry points at no memory; it names its target by
        // user_data only.
        unsafe { self.ring.push(&entry) }
    }

    /// Queues a recvmsg into the session's buffer, which the op holds.
    pub fn recvmsg(
        &mut self,
        owner: Owner,
        fd: &impl AsRawFd,
        mut buf: Box<impl RecvTarget>,
    ) -> Result<u64, EngineError> {
        let msg = buf.prepare();
        let fd = fd.as_raw_fd();
        let op = Op {
            owner,
            kind: OpKind::Recv,
            hold: Hold::Recv(buf),
        };
        self.queue(op, || {
            opcode::RecvMsg::new(types::Fd(fd), msg)
                .flags(libc::MSG_CMSG_CLOEXEC as u32)
                .build()
        })
    }

    /// Queues a send of the session's pending bytes, which the op holds.
    /// With `dont_wait`, a full socket ends the send with EAGAIN instead of
    /// waiting: a closing session does not wait for a client that stopped
    /// reading.
    pub fn send(
        &mut self,
        owner: Owner,
        fd: RawFd,
        buf: Box<impl SendSource>,
        dont_wait: bool,
    ) -> Result<u64, EngineError> {
        let (ptr, len) = buf.unsent();
        let op = Op {
            owner,
            kind: OpKind::Send,
            hold: Hold::Send(buf),
        };
        self.queue(op, || {
            opcode::Send::new(types::Fd(fd), ptr, len)
                .flags(libc::MSG_NOSIGNAL | if dont_wait { libc::MSG_DONTWAIT } else { 0 })
                .build()
        })
    }

    /// Queues an accept on the listening socket. The peer address is not
    /// asked for (SO_PEERCRED says who the peer is), so nothing is held.
    pub fn accept(&mut self, fd: RawFd) -> Result<u64, EngineError> {
        let op = Op {
            owner: Owner::Listener,
            kind: OpKind::Accept,
            hold: Hold::Nothing,
        };
        self.queue(op, || {
            opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        })
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
        let raw = fd.into_raw_fd();
        let op = Op {
            owner: Owner::Closer,
            kind: OpKind::Close,
            hold: Hold::Nothing,
        };
        let queued = self.queue(op, || {
            opcode::Close::new(types::Fd(raw))
                .build()
                .flags(squeue::Flags::ASYNC)
        });
        if queued.is_err() {
            // SAFETY: `raw` came from an OwnedFd given up above and the close
            // entry never reached the kernel, so this is its only close.
            unsafe { libc::close(raw) };
            return false;
        }
        true
    }

    /// Queues a read, write or send of `io.len` bytes through pool buffer
    /// `io.buf` (from `io.at`). The buffer moves into the op's entry, with
    /// the job's descriptors, and comes back with its last completion; if
    /// the entry cannot be queued it comes back in the error.
    pub fn buffer_op(
        &mut self,
        owner: Owner,
        kind: OpKind,
        ends: &Rc<impl Any>,
        io: BufIo,
        what: BufWhat,
    ) -> Result<u64, BufFailed> {
        let BufIo { fd, buf, at, len } = io;
        // The kernel writes `len` bytes from `at`: past the buffer would be
        // another job's memory. Callers size every operation to the buffer
        // (and admission refuses a direct job whose alignment does not divide
        // it), so this never fires; if a bug ever broke that, the daemon
        // stops here rather than let the kernel write there.
        assert!(
            at.checked_add(len as usize)
                .is_some_and(|end| end <= buf.len as usize),
            "an operation of {len} bytes at {at} does not fit a buffer of {} bytes",
            buf.len
        );
        // SAFETY: `at + len` is within the buffer (asserted above); the
        // pointer is only computed here.
        let ptr = unsafe { buf.ptr.as_ptr().add(at) };
        let index = buf.index;
        let fd = types::Fd(fd);
        let entry = match what {
            BufWhat::Read { offset, rw } if rw.fixed => opcode::ReadFixed::new(fd, ptr, len, index)
                .offset(offset)
                .rw_flags(rw.flags)
                .build(),
            BufWhat::Read { offset, rw } => opcode::Read::new(fd, ptr, len)
                .offset(offset)
                .rw_flags(rw.flags)
                .build(),
            BufWhat::Write { offset, rw } if rw.fixed => {
                opcode::WriteFixed::new(fd, ptr, len, index)
                    .offset(offset)
                    .rw_flags(rw.flags)
                    .build()
            }
            BufWhat::Write { offset, rw } => opcode::Write::new(fd, ptr, len)
                .offset(offset)
                .rw_flags(rw.flags)
                .build(),
            // SEND_ZC sends straight from the buffer and posts a notification
            // when the kernel is done with it.
            BufWhat::Send { zc: true, fixed } => opcode::SendZc::new(fd, ptr, len)
                .buf_index(fixed.then_some(index))
                .flags(libc::MSG_NOSIGNAL)
                .build(),
            BufWhat::Send { zc: false, .. } => opcode::Send::new(fd, ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build(),
        };
        let op = Op {
            owner,
            kind,
            hold: Hold::Buffer {
                buf,
                ends: keep(ends),
            },
        };
        let personality = self.ops.personality(op.owner);
        let user_data = self.ops.insert(op);
        let mut entry = entry.user_data(user_data);
        if personality != 0 {
            entry = entry.personality(personality);
        }
        // SAFETY: the op table now owns the buffer the entry points into and
        // the descriptors (see `Hold::Buffer`) until its completion is reaped.
        match unsafe { self.ring.push(&entry) } {
            Ok(()) => Ok(user_data),
            Err(error) => {
                // The entry never reached the kernel: the buffer goes back.
                let buf = match self.ops.forget(user_data) {
                    Some(Op {
                        hold: Hold::Buffer { buf, .. },
                        ..
                    }) => Some(buf),
                    _ => None,
                };
                Err(BufFailed { error, buf })
            }
        }
    }

    /// Queues fallocate(mode 0) of `len` bytes at `offset` of `fd`.
    pub fn fallocate(
        &mut self,
        owner: Owner,
        ends: &Rc<impl Any>,
        fd: RawFd,
        offset: u64,
        len: u64,
    ) -> Result<u64, EngineError> {
        let op = Op {
            owner,
            kind: OpKind::Prealloc,
            hold: Hold::Poll(keep(ends)),
        };
        self.queue(op, || {
            opcode::Fallocate::new(types::Fd(fd), len)
                .offset(offset)
                .build()
        })
    }

    /// Queues ftruncate of `fd` to `len` bytes.
    pub fn ftruncate(
        &mut self,
        owner: Owner,
        ends: &Rc<impl Any>,
        fd: RawFd,
        len: u64,
    ) -> Result<u64, EngineError> {
        let op = Op {
            owner,
            kind: OpKind::Truncate,
            hold: Hold::Poll(keep(ends)),
        };
        self.queue(op, || opcode::Ftruncate::new(types::Fd(fd), len).build())
    }

    /// Queues the final ftruncate of an in-place destination to `len`.
    pub fn end_truncate(
        &mut self,
        owner: Owner,
        ends: &Rc<impl Any>,
        fd: RawFd,
        len: u64,
    ) -> Result<u64, EngineError> {
        let op = Op {
            owner,
            kind: OpKind::EndTruncate,
            hold: Hold::Poll(keep(ends)),
        };
        self.queue(op, || opcode::Ftruncate::new(types::Fd(fd), len).build())
    }

    /// Queues fdatasync of `fd` (IORING_OP_FSYNC with DATASYNC).
    pub fn fdatasync(
        &mut self,
        owner: Owner,
        ends: &Rc<impl Any>,
        fd: RawFd,
    ) -> Result<u64, EngineError> {
        let op = Op {
            owner,
            kind: OpKind::Fsync,
            hold: Hold::Poll(keep(ends)),
        };
        self.queue(op, || {
            opcode::Fsync::new(types::Fd(fd))
                .flags(types::FsyncFlags::DATASYNC)
                .build()
        })
    }

    /// Queues a statx of `fd` itself (an empty path with AT_EMPTY_PATH) for
    /// `mask`, into a buffer the op holds with the descriptors `fd` is one
    /// of. io_uring always runs it in an io-wq worker (and the threads back
    /// end on a worker thread): a getattr that waits on a FUSE or NFS server
    /// never waits on the loop.
    pub fn statx(
        &mut self,
        owner: Owner,
        kind: OpKind,
        fds: &Rc<impl Any>,
        fd: RawFd,
        flags: i32,
        mask: u32,
    ) -> Result<u64, EngineError> {
        // SAFETY: an all-zero statx is a valid value of a plain C struct.
        let mut buf: Box<libc::statx> = Box::new(unsafe { std::mem::zeroed() });
        let ptr: *mut libc::statx = &mut *buf;
        let op = Op {
            owner,
            kind,
            hold: Hold::Statx {
                buf,
                fds: keep(fds),
            },
        };
        self.queue(op, || {
            opcode::Statx::new(types::Fd(fd), c"".as_ptr(), ptr.cast::<types::statx>())
                .flags(flags | libc::AT_EMPTY_PATH)
                .mask(mask)
                .build()
        })
    }

    /// Queues a timer that completes after `delay`.
    pub fn timeout(
        &mut self,
        owner: Owner,
        delay: std::time::Duration,
    ) -> Result<u64, EngineError> {
        let ts = Box::new(
            types::Timespec::new()
                .sec(delay.as_secs())
                .nsec(delay.subsec_nanos()),
        );
        let ptr: *const types::Timespec = &*ts;
        let op = Op {
            owner,
            kind: OpKind::Timeout,
            hold: Hold::Timeout(ts),
        };
        self.queue(op, || opcode::Timeout::new(ptr).build())
    }

    /// Queues a read of a signalfd or eventfd into a buffer the op holds.
    pub fn read_small(&mut self, owner: Owner, fd: RawFd, len: u32) -> Result<u64, EngineError> {
        let mut buf = Box::new([0u8; 128]);
        let ptr = buf.as_mut_ptr();
        let op = Op {
            owner,
            kind: OpKind::Read,
            hold: Hold::ReadBuf(buf),
        };
        self.queue(op, || {
            opcode::Read::new(types::Fd(fd), ptr, len.min(128)).build()
        })
    }
}
