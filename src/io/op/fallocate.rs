//! IORING_OP_FALLOCATE: a direct job preallocates its destination (mode
//! 0), a sparse copy punches the holes an existing destination must get
//! (FALLOC_FL_PUNCH_HOLE); fallocate(2).

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

pub struct Fallocate {
    fd: SharedFd,
    mode: i32,
    offset: u64,
    len: u64,
}

impl Fallocate {
    /// `len` bytes at `offset` of `fd` allocated.
    pub fn new(fd: SharedFd, offset: u64, len: u64) -> Fallocate {
        Fallocate {
            fd,
            mode: 0,
            offset,
            len,
        }
    }

    /// `len` bytes at `offset` of `fd` made a hole, the size kept.
    pub fn punch(fd: SharedFd, offset: u64, len: u64) -> Fallocate {
        Fallocate {
            fd,
            mode: libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        }
    }
}

impl Operation for Fallocate {
    fn code(&self) -> u8 {
        opcode::Fallocate::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::Fallocate::new(types::Fd(self.fd.raw()), self.len)
            .offset(self.offset)
            .mode(self.mode)
            .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Fallocate(Call {
            fd: self.fd.raw(),
            mode: self.mode,
            offset: self.offset as i64,
            len: self.len as i64,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
    pub mode: i32,
    pub offset: i64,
    pub len: i64,
}

impl Call {
    /// # Safety
    /// The descriptor is held by the op.
    pub unsafe fn run(self) -> isize {
        // SAFETY: no memory; the caller keeps the descriptor open.
        (unsafe { libc::fallocate(self.fd, self.mode, self.offset, self.len) }) as isize
    }
}
