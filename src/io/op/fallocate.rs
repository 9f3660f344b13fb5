//! IORING_OP_FALLOCATE (mode 0): a direct job preallocates its destination;
//! fallocate(2).

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

pub struct Fallocate {
    fd: SharedFd,
    offset: u64,
    len: u64,
}

impl Fallocate {
    /// `len` bytes at `offset` of `fd`.
    pub fn new(fd: SharedFd, offset: u64, len: u64) -> Fallocate {
        Fallocate { fd, offset, len }
    }
}

impl Operation for Fallocate {
    fn code(&self) -> u8 {
        opcode::Fallocate::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::Fallocate::new(types::Fd(self.fd.raw()), self.len)
            .offset(self.offset)
            .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Fallocate(Call {
            fd: self.fd.raw(),
            offset: self.offset as i64,
            len: self.len as i64,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
    pub offset: i64,
    pub len: i64,
}

impl Call {
    /// # Safety
    /// The descriptor is held by the op.
    pub unsafe fn run(self) -> isize {
        // SAFETY: no memory; the caller keeps the descriptor open.
        (unsafe { libc::fallocate(self.fd, 0, self.offset, self.len) }) as isize
    }
}
