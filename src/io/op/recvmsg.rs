//! IORING_OP_RECVMSG into a session's buffer, descriptors and all; recvmsg(2).

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;
use crate::io::queue::RecvTarget;

/// A recvmsg into a session's receive buffer, which it owns and hands back.
pub struct RecvMsg {
    fd: SharedFd,
    /// Points into `target` (on the heap, so moving the op moves no byte).
    msg: *mut libc::msghdr,
    target: Box<dyn RecvTarget>,
}

impl RecvMsg {
    pub fn new(fd: SharedFd, mut target: Box<dyn RecvTarget>) -> RecvMsg {
        let msg = target.prepare();
        RecvMsg { fd, msg, target }
    }

    /// The session's buffer, handed back.
    pub fn into_target(self) -> Box<dyn RecvTarget> {
        self.target
    }
}

impl Operation for RecvMsg {
    fn code(&self) -> u8 {
        opcode::RecvMsg::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::RecvMsg::new(types::Fd(self.fd.raw()), self.msg)
            .flags(libc::MSG_CMSG_CLOEXEC as u32)
            .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::RecvMsg(Call {
            fd: self.fd.raw(),
            msg: self.msg,
            msg_flags: libc::MSG_CMSG_CLOEXEC,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
    pub msg: *mut libc::msghdr,
    pub msg_flags: i32,
}

impl Call {
    /// # Safety
    /// The msghdr and what it points at are the op's until its completion
    /// is reaped.
    pub unsafe fn run(self) -> isize {
        // SAFETY: the caller's guarantee.
        unsafe { libc::recvmsg(self.fd, self.msg, self.msg_flags) }
    }
}
