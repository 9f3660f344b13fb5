//! IORING_OP_LINKAT: a detached job's file linked into its directory
//! (engine/publish.rs); linkat(2).

use std::ffi::CString;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// linkat of an open file to `to` under `dir`. The file is named by its
/// `/proc/self/fd/N` path, followed (AT_SYMLINK_FOLLOW): AT_EMPTY_PATH
/// would need CAP_DAC_READ_SEARCH. The op owns the paths and shares both
/// descriptors: the file's number is in the path, so it must stay open.
pub struct LinkAt {
    from: CString,
    to: CString,
    /// The file (its number is in `from`) and the directory, boxed: every
    /// entry of the op table is as big as the largest op, and a publish is
    /// once a job where a chunk's ops are many.
    fds: Box<[SharedFd; 2]>,
}

impl LinkAt {
    pub fn new(file: SharedFd, dir: SharedFd, to: CString) -> LinkAt {
        LinkAt {
            from: proc_fd_path(file.raw()),
            to,
            fds: Box::new([file, dir]),
        }
    }

    fn dir(&self) -> RawFd {
        self.fds[1].raw()
    }
}

/// `/proc/self/fd/N`: the daemon's own descriptor `N`.
fn proc_fd_path(fd: RawFd) -> CString {
    // Digits only: no NUL.
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

impl Operation for LinkAt {
    fn code(&self) -> u8 {
        opcode::LinkAt::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::LinkAt::new(
            types::Fd(libc::AT_FDCWD),
            self.from.as_ptr(),
            types::Fd(self.dir()),
            self.to.as_ptr(),
        )
        .flags(libc::AT_SYMLINK_FOLLOW)
        .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::LinkAt(Call {
            old_dir: libc::AT_FDCWD,
            from: self.from.as_ptr(),
            new_dir: self.dir(),
            to: self.to.as_ptr(),
            flags: libc::AT_SYMLINK_FOLLOW,
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
