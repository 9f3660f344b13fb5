//! IORING_OP_UNLINKAT: a hidden name removed after a failed publish
//! (engine/publish.rs); unlinkat(2).

use std::ffi::CString;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// unlink of `path` under `dir`; it owns the path and shares the directory.
pub struct UnlinkAt {
    dir: SharedFd,
    path: CString,
}

impl UnlinkAt {
    pub fn new(dir: SharedFd, path: CString) -> UnlinkAt {
        UnlinkAt { dir, path }
    }
}

impl Operation for UnlinkAt {
    fn code(&self) -> u8 {
        opcode::UnlinkAt::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::UnlinkAt::new(types::Fd(self.dir.raw()), self.path.as_ptr()).build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::UnlinkAt(Call {
            dir: self.dir.raw(),
            path: self.path.as_ptr(),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub dir: RawFd,
    pub path: *const libc::c_char,
}

impl Call {
    /// # Safety
    /// The path (NUL-terminated) and the directory are the op's until its
    /// completion is reaped.
    pub unsafe fn run(self) -> isize {
        // SAFETY: the caller's guarantee.
        (unsafe { libc::unlinkat(self.dir, self.path, 0) }) as isize
    }
}
