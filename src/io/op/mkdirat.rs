//! IORING_OP_MKDIRAT: a directory a host-to-host receiver makes beneath an
//! export for a file whose directories do not exist yet; mkdirat(2).

use std::ffi::CString;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// mkdir of `name` (one component) in `dir`; it owns the name and shares
/// the directory.
pub struct MkdirAt {
    dir: SharedFd,
    name: CString,
    mode: u32,
}

impl MkdirAt {
    pub fn new(dir: SharedFd, name: CString, mode: u32) -> MkdirAt {
        MkdirAt { dir, name, mode }
    }
}

impl Operation for MkdirAt {
    fn code(&self) -> u8 {
        opcode::MkDirAt::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::MkDirAt::new(types::Fd(self.dir.raw()), self.name.as_ptr())
            .mode(self.mode)
            .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::MkdirAt(Call {
            dir: self.dir.raw(),
            name: self.name.as_ptr(),
            mode: self.mode,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub dir: RawFd,
    pub name: *const libc::c_char,
    pub mode: u32,
}

impl Call {
    /// # Safety
    /// The name (NUL-terminated) and the directory are the op's until its
    /// completion is reaped.
    pub unsafe fn run(self) -> isize {
        // SAFETY: the caller's guarantee.
        (unsafe { libc::mkdirat(self.dir, self.name, self.mode) }) as isize
    }
}
