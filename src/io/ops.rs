//! The table of operations in flight, keyed by `user_data`.
//!
//! Each entry says who gets the completion and holds everything the kernel may
//! read or write for that operation (a receive buffer and its `msghdr`, the
//! bytes being sent, the pipe and descriptors of a splice). The entry is
//! removed only when its completion is reaped, so nothing the kernel can see is
//! freed or moved while the operation runs, whatever happened to its owner.

use std::any::Any;
use std::rc::Rc;

use slab::Slab;

use super::buffer_pool::BufRef;
use super::pipe_pool::Pipe;

/// `user_data` of cancel requests. Their own completions carry nothing the
/// loop needs (the cancelled operation completes separately), so they get no
/// table entry. Slab keys never reach this value.
pub const CANCEL_USER_DATA: u64 = u64::MAX;

/// Who is told when an operation completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The listening socket's accept.
    Listener,
    /// A client connection, by key in the session table.
    Session(usize),
    /// A transfer, by key in the job table.
    Job(usize),
    /// A submitted job being admitted, by key in `Admissions`.
    Admission(usize),
    /// The signalfd read that tells the loop to stop.
    Signal,
    /// A close of a descriptor nobody needs any more.
    Closer,
    /// The timer that wakes jobs waiting for a rate limit.
    Throttle,
    /// The end of the shutdown grace period.
    Grace,
    /// The periodic report to the loop's observer.
    Tick,
    /// The timer that sends held final events of batch jobs.
    HoldTimer,
    /// The once-a-second check of connections' deadlines.
    Housekeeping,
    /// The look for jobs stalled over their user's share (shares.rs).
    Stall,
}

/// What an operation was, so the owner knows which step completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Accept,
    Recv,
    Send,
    Read,
    Close,
    /// A delay before the listener accepts again.
    Timeout,
    /// Source to pipe, for the chunk with this index.
    SpliceIn(u16),
    /// Pipe to destination, for the chunk with this index.
    SpliceOut(u16),
    /// Wait for the source to be readable, after EAGAIN.
    PollIn(u16),
    /// Wait for the destination to be writable, after EAGAIN.
    PollOut(u16),
    /// Read into the buffer of the chunk with this index.
    BufIn(u16),
    /// Write (or send) from the buffer of the chunk with this index.
    BufOut(u16),
    /// The first completion of a SEND_ZC from the chunk's buffer: bytes
    /// sent, and a notification still to come.
    ZcSent(u16),
    /// The notification of a SEND_ZC: the kernel is done with the buffer.
    ZcNotif(u16),
    /// Preallocation of the destination.
    Prealloc,
    /// Truncation of the destination to its final (or original) size.
    Truncate,
    /// fdatasync of the destination before a job completes.
    Fsync,
    /// A read of the verification pass: of the source (`false`) or the
    /// destination (`true`).
    VerifyRead(bool),
    /// Truncation of an in-place destination to where the job's writes
    /// ended, once they all did (`SubmitRequest::truncate`).
    EndTruncate,
    /// A step of publishing a detached job's destination (engine/publish.rs).
    Publish,
    /// statx of a submitted job's descriptor, at admission: the source (0),
    /// the destination (1) or the directory to publish in (2).
    Statx(u8),
}

/// What the kernel may touch while the operation runs. What belongs to the
/// layers above (a session's buffers, a job's descriptors, a publish's
/// paths) is held as `dyn Any`: this layer keeps it alive and gives it back,
/// without knowing what it is.
pub enum Hold {
    Nothing,
    /// A session's receive buffer (with its `msghdr`), handed back to the
    /// session by the completion.
    Recv(Box<dyn Any>),
    /// A session's pending bytes, handed back likewise.
    Send(Box<dyn Any>),
    /// 128 bytes for signalfd reads.
    ReadBuf(Box<[u8; 128]>),
    Splice {
        pipe: Rc<Pipe>,
        ends: Rc<dyn Any>,
    },
    /// Polls, fallocate and ftruncate: the job's descriptors.
    Poll(Rc<dyn Any>),
    /// A read or write through a pool buffer: the buffer itself, moved in
    /// when the operation is queued and handed back to its owner by the
    /// completion (the notification, for SEND_ZC), and the job's descriptors.
    Buffer {
        buf: BufRef,
        ends: Rc<dyn Any>,
    },
    Timeout(Box<io_uring::types::Timespec>),
    /// Whatever an operation built above this layer points at (a publish's
    /// paths, its directory and the job's descriptors).
    Keep(Box<dyn Any>),
    /// A statx at admission: the buffer the kernel writes, and the
    /// submitted descriptors (one of which it looks at).
    Statx {
        buf: Box<libc::statx>,
        fds: Rc<dyn Any>,
    },
}

/// One operation in flight.
pub struct Op {
    pub owner: Owner,
    pub kind: OpKind,
    pub hold: Hold,
}

/// The operations in flight.
pub struct OpTable {
    ops: Slab<Op>,
    /// Per job key, the personality its operations run under (0: the
    /// daemon's credentials); see `crate::privileges`.
    personalities: Vec<u16>,
}

impl OpTable {
    pub fn with_capacity(n: usize) -> OpTable {
        OpTable {
            ops: Slab::with_capacity(n),
            personalities: Vec::new(),
        }
    }

    /// Makes every operation of the job at `key` from now on run under
    /// `personality` (0: the daemon's credentials). Set at admission, so a
    /// reused key never keeps the one before.
    pub fn set_personality(&mut self, key: usize, personality: u16) {
        if self.personalities.len() <= key {
            self.personalities.resize(key + 1, 0);
        }
        self.personalities[key] = personality;
    }

    /// The personality of `owner`'s operations: its job's, or 0.
    pub fn personality(&self, owner: Owner) -> u16 {
        match owner {
            Owner::Job(key) => self.personalities.get(key).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// Records an operation about to be submitted and returns its `user_data`.
    pub fn insert(&mut self, op: Op) -> u64 {
        self.ops.insert(op) as u64
    }

    /// The entry of an operation that completed but will complete again
    /// (IORING_CQE_F_MORE): it stays in the table.
    pub fn peek(&self, user_data: u64) -> Option<&Op> {
        let key = usize::try_from(user_data).ok()?;
        self.ops.get(key)
    }

    /// Takes back the entry of a completed operation. `None` for a
    /// `user_data` that is not in the table, which only a bug can cause.
    pub fn complete(&mut self, user_data: u64) -> Option<Op> {
        let key = usize::try_from(user_data).ok()?;
        self.ops.try_remove(key)
    }

    /// Undoes `insert` for an operation that never reached the ring.
    pub fn forget(&mut self, user_data: u64) -> Option<Op> {
        self.complete(user_data)
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
