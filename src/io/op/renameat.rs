//! IORING_OP_RENAMEAT: a detached job's file replacing an existing name
//! (engine/publish.rs); renameat2(2).

use std::ffi::CString;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// rename of `from` to `to`, both under `dir`; it owns the paths and
/// shares the directory.
pub struct RenameAt {
    dir: SharedFd,
    from: CString,
    to: CString,
}

impl RenameAt {
    pub fn new(dir: SharedFd, from: CString, to: CString) -> RenameAt {
        RenameAt { dir, from, to }
    }
}

impl Operation for RenameAt {
    fn code(&self) -> u8 {
        opcode::RenameAt::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        let dir = types::Fd(self.dir.raw());
        opcode::RenameAt::new(dir, self.from.as_ptr(), dir, self.to.as_ptr()).build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::RenameAt(Call {
            dir: self.dir.raw(),
            from: self.from.as_ptr(),
            to: self.to.as_ptr(),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub dir: RawFd,
    pub from: *const libc::c_char,
    pub to: *const libc::c_char,
}

impl Call {
    /// # Safety
    /// The paths (NUL-terminated) and the directory are the op's until its
    /// completion is reaped.
    pub unsafe fn run(self) -> isize {
        // SAFETY: the caller's guarantee.
        (unsafe { libc::renameat2(self.dir, self.from, self.dir, self.to, 0) }) as isize
    }
}
