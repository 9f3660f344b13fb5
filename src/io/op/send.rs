//! IORING_OP_SEND: a session's events, or file data from a pool buffer to
//! a socket; send(2).

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation, PoolSpan};
use crate::io::buffer_pool::BufRef;
use crate::io::fd::SharedFd;
use crate::io::queue::SendSource;

/// What a send sends from, which it owns until its completion.
pub enum SendFrom {
    /// A session's pending bytes, handed back to the session.
    Bytes(Box<dyn SendSource>),
    /// A span of a pool buffer, handed back to the job.
    Pool(PoolSpan),
}

pub struct Send {
    fd: SharedFd,
    from: SendFrom,
    flags: i32,
}

impl Send {
    /// A send of `from` on `fd` with MSG_* `flags` (MSG_NOSIGNAL is added).
    pub fn new(fd: SharedFd, from: SendFrom, flags: i32) -> Send {
        Send {
            fd,
            from,
            flags: flags | libc::MSG_NOSIGNAL,
        }
    }

    /// The session's bytes, handed back.
    pub fn into_bytes(self) -> Option<Box<dyn SendSource>> {
        match self.from {
            SendFrom::Bytes(b) => Some(b),
            SendFrom::Pool(_) => None,
        }
    }

    /// The pool buffer, handed back.
    pub fn into_buffer(self) -> Option<BufRef> {
        match self.from {
            SendFrom::Pool(span) => Some(span.buf),
            SendFrom::Bytes(_) => None,
        }
    }

    fn bytes(&self) -> (*const u8, u32) {
        match &self.from {
            SendFrom::Bytes(b) => b.unsent(),
            SendFrom::Pool(span) => (span.ptr().cast_const(), span.len()),
        }
    }
}

impl Operation for Send {
    fn code(&self) -> u8 {
        opcode::Send::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        let (ptr, len) = self.bytes();
        opcode::Send::new(types::Fd(self.fd.raw()), ptr, len)
            .flags(self.flags)
            .build()
    }

    fn blocking(&mut self) -> Blocking {
        let (ptr, len) = self.bytes();
        Blocking::Send(Call {
            fd: self.fd.raw(),
            ptr,
            len: len as usize,
            msg_flags: self.flags,
            zc: false,
        })
    }
}

/// send(2); `zc` makes the threads back end post SEND_ZC's notification too.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
    pub ptr: *const u8,
    pub len: usize,
    pub msg_flags: i32,
    pub zc: bool,
}

impl Call {
    /// # Safety
    /// `ptr..ptr + len` is owned by the op until its completion is reaped.
    pub unsafe fn run(self) -> isize {
        // SAFETY: the caller's guarantee.
        unsafe { libc::send(self.fd, self.ptr.cast(), self.len, self.msg_flags) }
    }
}
