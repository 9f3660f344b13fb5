//! IORING_OP_LINKAT: a detached job's file linked into its directory
//! (engine/publish.rs); linkat(2).

use std::ffi::CString;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Keep, Operation};

/// linkat of `from` (under `old_dir`) to `to` (under `new_dir`); it owns the
/// paths and keeps the directories open.
pub struct LinkAt {
    old_dir: RawFd,
    from: CString,
    new_dir: RawFd,
    to: CString,
    flags: i32,
    _keep: Keep,
}

impl LinkAt {
    pub fn new(
        (old_dir, from): (RawFd, CString),
        (new_dir, to): (RawFd, CString),
        flags: i32,
        keep: Keep,
    ) -> LinkAt {
        LinkAt {
            old_dir,
            from,
            new_dir,
            to,
            flags,
            _keep: keep,
        }
    }
}

impl Operation for LinkAt {
    fn code(&self) -> u8 {
        opcode::LinkAt::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::LinkAt::new(
            types::Fd(self.old_dir),
            self.from.as_ptr(),
            types::Fd(self.new_dir),
            self.to.as_ptr(),
        )
        .flags(self.flags)
        .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::LinkAt(Call {
            old_dir: self.old_dir,
            from: self.from.as_ptr(),
            new_dir: self.new_dir,
            to: self.to.as_ptr(),
            flags: self.flags,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub old_dir: RawFd,
    pub from: *const libc::c_char,
    pub new_dir: RawFd,
    pub to: *const libc::c_char,
    pub flags: i32,
}

impl Call {
    /// # Safety
    /// The paths (NUL-terminated) and directories are the op's until its
    /// completion is reaped.
    pub unsafe fn run(self) -> isize {
        // SAFETY: the caller's guarantee.
        (unsafe { libc::linkat(self.old_dir, self.from, self.new_dir, self.to, self.flags) })
            as isize
    }
}
