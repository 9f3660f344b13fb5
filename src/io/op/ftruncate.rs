//! IORING_OP_FTRUNCATE: a destination cut to its final (or original) size;
//! ftruncate(2).

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

pub struct Ftruncate {
    fd: SharedFd,
    len: u64,
}

impl Ftruncate {
    /// `fd` cut (or grown) to `len` bytes.
    pub fn new(fd: SharedFd, len: u64) -> Ftruncate {
        Ftruncate { fd, len }
    }
}

impl Operation for Ftruncate {
    fn code(&self) -> u8 {
        opcode::Ftruncate::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::Ftruncate::new(types::Fd(self.fd.raw()), self.len).build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Ftruncate(Call {
            fd: self.fd.raw(),
            len: self.len as i64,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
    pub len: i64,
}

impl Call {
    /// # Safety
    /// The descriptor is held by the op.
    pub unsafe fn run(self) -> isize {
        // SAFETY: no memory; the caller keeps the descriptor open.
        (unsafe { libc::ftruncate(self.fd, self.len) }) as isize
    }
}
