//! IORING_OP_FSYNC: fdatasync of a job's destination, fsync of a publish's
//! directory; fdatasync(2) or fsync(2).

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

pub struct Fsync {
    fd: SharedFd,
    datasync: bool,
}

impl Fsync {
    /// fsync of `fd`, or fdatasync with `datasync`.
    pub fn new(fd: SharedFd, datasync: bool) -> Fsync {
        Fsync { fd, datasync }
    }
}

impl Operation for Fsync {
    fn code(&self) -> u8 {
        opcode::Fsync::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        let entry = opcode::Fsync::new(types::Fd(self.fd.raw()));
        if self.datasync {
            entry.flags(types::FsyncFlags::DATASYNC).build()
        } else {
            entry.build()
        }
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Fsync(Call {
            fd: self.fd.raw(),
            datasync: self.datasync,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
    pub datasync: bool,
}

impl Call {
    /// # Safety
    /// The descriptor is held by the op.
    pub unsafe fn run(self) -> isize {
        // SAFETY: no memory; the caller keeps the descriptor open.
        (unsafe {
            if self.datasync {
                libc::fdatasync(self.fd)
            } else {
                libc::fsync(self.fd)
            }
        }) as isize
    }
}
