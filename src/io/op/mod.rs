//! The operations the engine submits, one file each, as typed values.
//!
//! An operation owns everything the kernel touches while it runs (a pool
//! buffer moved in, a session's buffer, a statx buffer, a timespec, a
//! publish's paths) and shares the descriptors it names (`SharedFd`, never
//! a bare number: io/fd.rs). It builds its
//! io_uring submission entry (`Operation::entry`) and says what the same
//! operation is as a blocking syscall (`Operation::blocking`), which the
//! threads back end runs instead: both back ends carry out one description,
//! and neither reads the other's bytes. The op table holds the value until
//! its final completion, then hands it back to its owner.

pub(crate) mod accept;
pub(crate) mod bytes;
pub(crate) mod cancel;
pub(crate) mod close;
pub(crate) mod copy_range;
pub(crate) mod data_map;
pub(crate) mod fallocate;
pub(crate) mod ficlone;
pub(crate) mod fsync;
pub(crate) mod ftruncate;
pub(crate) mod linkat;
pub(crate) mod list_dir;
pub(crate) mod mkdirat;
pub(crate) mod openat2;
pub(crate) mod poll;
pub(crate) mod read_small;
pub(crate) mod recvmsg;
pub(crate) mod renameat;
pub(crate) mod rw;
pub(crate) mod send;
pub(crate) mod send_zc;
pub(crate) mod set_meta;
pub(crate) mod splice;
pub(crate) mod statx;
pub(crate) mod timeout;
pub(crate) mod unlinkat;

use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::squeue;

use super::buffer_pool::BufRef;

pub(crate) use accept::Accept;
pub(crate) use bytes::{ReadInto, WriteFrom};
pub(crate) use cancel::Cancel;
pub(crate) use close::Close;
pub(crate) use copy_range::CopyRange;
pub(crate) use data_map::DataMap;
pub(crate) use fallocate::Fallocate;
pub(crate) use ficlone::Ficlone;
pub(crate) use fsync::Fsync;
pub(crate) use ftruncate::Ftruncate;
pub(crate) use linkat::LinkAt;
pub(crate) use list_dir::ListDir;
pub(crate) use mkdirat::MkdirAt;
pub(crate) use openat2::OpenAt2;
pub(crate) use poll::Poll;
pub(crate) use read_small::ReadSmall;
pub(crate) use recvmsg::RecvMsg;
pub(crate) use renameat::RenameAt;
pub(crate) use rw::{Read, Write};
pub(crate) use send::{Send, SendFrom};
pub(crate) use send_zc::SendZc;
pub(crate) use set_meta::SetMeta;
pub(crate) use splice::Splice;
pub(crate) use statx::Statx;
pub(crate) use timeout::Timeout;
pub(crate) use unlinkat::UnlinkAt;

/// One operation, as either back end carries it out (like monoio's `OpAble`).
///
/// What `entry` and `blocking` point at must be on the heap (a `Box`, a
/// `Vec`, a `CString`, a pool buffer), never inside the value itself: the op
/// table moves its values when it grows.
pub trait Operation {
    /// The opcode, one of the list in io/opcodes.rs.
    fn code(&self) -> u8;
    /// The io_uring submission entry (without user_data, personality or link).
    fn entry(&mut self) -> squeue::Entry;
    /// The same operation as the blocking syscall the threads back end runs.
    fn blocking(&mut self) -> Blocking;
}

/// The blocking equivalent of an operation: the syscall and its arguments,
/// pointing into memory the operation owns. Plain values, so a worker thread
/// can carry it out while the op table keeps the operation.
#[derive(Debug, Clone, Copy)]
pub enum Blocking {
    Splice(splice::Call),
    /// preadv2 (READ and READ_FIXED: a registered buffer is ordinary memory).
    Read(rw::Call),
    /// pwritev2 (WRITE and WRITE_FIXED).
    Write(rw::Call),
    Send(send::Call),
    RecvMsg(recvmsg::Call),
    Accept(accept::Call),
    /// Readiness of `fd`: the threads back end's own poll(2) answers it.
    Poll {
        fd: RawFd,
        events: i16,
    },
    /// A timer: the threads back end's own timer heap answers it.
    Timeout {
        after: Duration,
    },
    /// A cancel of the operation with this user_data: the back end's own.
    Cancel {
        target: u64,
    },
    Close(close::Call),
    Fallocate(fallocate::Call),
    Ftruncate(ftruncate::Call),
    Fsync(fsync::Call),
    Statx(statx::Call),
    LinkAt(linkat::Call),
    RenameAt(renameat::Call),
    UnlinkAt(unlinkat::Call),
    /// ioctl(FICLONE): a worker runs it under either back end (io_uring
    /// has no opcode for it).
    Ficlone(ficlone::Call),
    /// lseek(SEEK_DATA/SEEK_HOLE) over a range: on a worker under either
    /// back end, as FICLONE.
    DataMap(data_map::Call),
    /// copy_file_range or sendfile, one bounded piece: a worker runs it
    /// under either back end (io_uring has no opcode for either).
    CopyRange(copy_range::Call),
    /// openat2(2) beneath a directory.
    OpenAt2(openat2::Call),
    MkdirAt(mkdirat::Call),
    /// fchmod and futimens: on a worker under either back end, as FICLONE.
    SetMeta(set_meta::Call),
    /// A directory's tree read (getdents, fstatat): on a worker, as FICLONE.
    ListDir(list_dir::Call),
    /// No blocking equivalent: an operation only io_uring runs (none of
    /// the engine's; tests' operations off the list, which both back ends
    /// refuse by their opcode before looking at this).
    Unsupported,
}

impl Blocking {
    /// Runs the syscall: its result, or -1 with errno set.
    ///
    /// # Safety
    /// The memory and descriptors the call names are alive and touched by
    /// nothing else until it returns: the operation it came from is held by
    /// the op table until its completion is reaped, which is after this.
    pub unsafe fn run(self) -> isize {
        // SAFETY: (every arm) the caller's guarantee, passed on.
        unsafe {
            match self {
                Blocking::Splice(c) => c.run(),
                Blocking::Read(c) => c.read(),
                Blocking::Write(c) => c.write(),
                Blocking::Send(c) => c.run(),
                Blocking::RecvMsg(c) => c.run(),
                Blocking::Accept(c) => c.run(),
                Blocking::Close(c) => c.run(),
                Blocking::Fallocate(c) => c.run(),
                Blocking::Ftruncate(c) => c.run(),
                Blocking::Fsync(c) => c.run(),
                Blocking::Statx(c) => c.run(),
                Blocking::LinkAt(c) => c.run(),
                Blocking::RenameAt(c) => c.run(),
                Blocking::UnlinkAt(c) => c.run(),
                Blocking::Ficlone(c) => c.run(),
                Blocking::DataMap(c) => c.run(),
                Blocking::CopyRange(c) => c.run(),
                Blocking::OpenAt2(c) => c.run(),
                Blocking::MkdirAt(c) => c.run(),
                Blocking::SetMeta(c) => c.run(),
                Blocking::ListDir(c) => c.run(),
                // Refused, as the restricted ring refuses what is off the list.
                Blocking::Unsupported => {
                    *libc::__errno_location() = libc::EACCES;
                    -1
                }
                // The back end answers these itself; none reaches a worker.
                Blocking::Poll { .. } | Blocking::Timeout { .. } | Blocking::Cancel { .. } => {
                    *libc::__errno_location() = libc::EINVAL;
                    -1
                }
            }
        }
    }

    /// What a transfer moves when it moves everything it was asked: a link
    /// breaks on less, as io_uring's does.
    pub fn full_len(&self) -> Option<usize> {
        match self {
            Blocking::Splice(c) => Some(c.len),
            Blocking::Read(c) | Blocking::Write(c) => Some(c.len),
            Blocking::Send(c) => Some(c.len),
            _ => None,
        }
    }
}

/// A span of a pool buffer an operation reads into or writes from; the
/// buffer moves into the operation and comes back with its completion.
#[derive(Debug)]
pub struct PoolSpan {
    pub buf: BufRef,
    at: usize,
    len: u32,
}

impl PoolSpan {
    /// `len` bytes of `buf` from `at`.
    pub fn new(buf: BufRef, at: usize, len: u32) -> PoolSpan {
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
        PoolSpan { buf, at, len }
    }

    /// Where the span starts.
    pub fn ptr(&self) -> *mut u8 {
        // SAFETY: `at + len` is within the buffer (checked at `new`); the
        // pointer is only computed here.
        unsafe { self.buf.ptr.as_ptr().add(self.at) }
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's index among the ring's registered buffers.
    pub fn index(&self) -> u16 {
        self.buf.index
    }
}

/// An offset as the kernel takes it: -1 for "the file position" (or none,
/// for a stream); offsets were checked at admission to stay below 2^63.
fn raw_offset(offset: Option<u64>) -> i64 {
    offset.map_or(-1, |o| o as i64)
}

macro_rules! any_op {
    ($($variant:ident),* $(,)?) => {
        /// Every operation, as the op table holds it: in place, no box per
        /// chunk.
        pub enum AnyOp {
            $($variant($variant),)*
        }

        $(impl From<$variant> for AnyOp {
            fn from(op: $variant) -> AnyOp {
                AnyOp::$variant(op)
            }
        })*

        impl Operation for AnyOp {
            fn code(&self) -> u8 {
                match self {
                    $(AnyOp::$variant(op) => op.code(),)*
                }
            }

            fn entry(&mut self) -> squeue::Entry {
                match self {
                    $(AnyOp::$variant(op) => op.entry(),)*
                }
            }

            fn blocking(&mut self) -> Blocking {
                match self {
                    $(AnyOp::$variant(op) => op.blocking(),)*
                }
            }
        }
    };
}

any_op!(
    Accept, Close, CopyRange, DataMap, Fallocate, Ficlone, Fsync, Ftruncate, LinkAt, ListDir,
    MkdirAt, OpenAt2, Poll, Read, ReadInto, ReadSmall, RecvMsg, RenameAt, Send, SendZc, SetMeta,
    Splice, Statx, Timeout, UnlinkAt, Write, WriteFrom,
);

impl AnyOp {
    /// The pool buffer the operation held, handed back; its other
    /// references (a pipe, descriptors) go with the rest of it.
    pub fn into_buffer(self) -> Option<BufRef> {
        match self {
            AnyOp::Read(op) => Some(op.span.buf),
            AnyOp::Write(op) => Some(op.span.buf),
            AnyOp::SendZc(op) => Some(op.span.buf),
            AnyOp::Send(op) => op.into_buffer(),
            _ => None,
        }
    }
}
