//! IORING_OP_UNLINKAT: a hidden name removed after a failed publish
//! (engine/publish.rs); unlinkat(2).

use std::ffi::CString;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Keep, Operation};

/// unlink of `path` under `dir`; it owns the path and keeps the directory open.
pub struct UnlinkAt {
    dir: RawFd,
    path: CString,
    _keep: Keep,
}

impl UnlinkAt {
    pub fn new(dir: RawFd, path: CString, keep: Keep) -> UnlinkAt {
        UnlinkAt {
            dir,
            path,
            _keep: keep,
        }
    }
}

impl Operation for UnlinkAt {
    fn code(&self) -> u8 {
        opcode::UnlinkAt::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::UnlinkAt::new(types::Fd(self.dir), self.path.as_ptr()).build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::UnlinkAt(Call {
            dir: self.dir,
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
