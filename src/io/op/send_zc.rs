//! IORING_OP_SEND_ZC from a pool buffer: bytes sent, then a notification
//! when the kernel is done with the buffer; send(2) for the threads back end.

use io_uring::{opcode, squeue, types};

use super::{send, Blocking, Operation, PoolSpan};
use crate::io::fd::SharedFd;

/// A zero-copy send from a span of a pool buffer, registered (`fixed`) or
/// not; the buffer comes back with the notification.
pub struct SendZc {
    fd: SharedFd,
    pub(super) span: PoolSpan,
    fixed: bool,
}

impl SendZc {
    pub fn new(fd: SharedFd, span: PoolSpan, fixed: bool) -> SendZc {
        SendZc { fd, span, fixed }
    }
}

impl Operation for SendZc {
    fn code(&self) -> u8 {
        opcode::SendZc::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::SendZc::new(types::Fd(self.fd.raw()), self.span.ptr(), self.span.len())
            .buf_index(self.fixed.then_some(self.span.index()))
            .flags(libc::MSG_NOSIGNAL)
            .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Send(send::Call {
            fd: self.fd.raw(),
            ptr: self.span.ptr().cast_const(),
            len: self.span.len() as usize,
            msg_flags: libc::MSG_NOSIGNAL,
            zc: true,
        })
    }
}
