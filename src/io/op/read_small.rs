//! IORING_OP_READ of the signalfd into 128 bytes the op owns; read(2).

use io_uring::{opcode, squeue, types};

use super::{rw, Blocking, Operation};
use crate::io::fd::SharedFd;

/// A read of up to 128 bytes (a signalfd's siginfo) into a buffer the op
/// owns and hands back.
pub struct ReadSmall {
    fd: SharedFd,
    pub buf: Box<[u8; 128]>,
    len: u32,
}

impl ReadSmall {
    pub fn new(fd: SharedFd, len: u32) -> ReadSmall {
        ReadSmall {
            fd,
            buf: Box::new([0; 128]),
            len: len.min(128),
        }
    }
}

impl Operation for ReadSmall {
    fn code(&self) -> u8 {
        opcode::Read::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::Read::new(types::Fd(self.fd.raw()), self.buf.as_mut_ptr(), self.len).build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Read(rw::Call {
            fd: self.fd.raw(),
            ptr: self.buf.as_mut_ptr(),
            len: self.len as usize,
            offset: -1,
            rw_flags: 0,
        })
    }
}
