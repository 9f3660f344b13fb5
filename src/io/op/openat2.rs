//! IORING_OP_OPENAT2: a name beneath a directory the daemon holds (an
//! export of a host-to-host receiver), resolved by the kernel with
//! RESOLVE_BENEATH so that no `..`, absolute path or symlink can lead out
//! of it; openat2(2).

use std::ffi::CString;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// What an open asks for: open(2)'s flags and mode, and openat2's RESOLVE_*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct How {
    pub flags: u64,
    pub mode: u64,
    pub resolve: u64,
}

/// openat2 of `path` under `dir`; it owns the path and its `open_how` (on
/// the heap: the kernel reads both when the op starts, wherever the table
/// has moved the op since) and shares the directory.
pub struct OpenAt2 {
    dir: SharedFd,
    path: CString,
    how: Box<types::OpenHow>,
    plain: How,
}

impl OpenAt2 {
    pub fn new(dir: SharedFd, path: CString, how: How) -> OpenAt2 {
        let kernel = types::OpenHow::new()
            .flags(how.flags)
            .mode(how.mode)
            .resolve(how.resolve);
        OpenAt2 {
            dir,
            path,
            how: Box::new(kernel),
            plain: how,
        }
    }
}

impl Operation for OpenAt2 {
    fn code(&self) -> u8 {
        opcode::OpenAt2::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::OpenAt2::new(
            types::Fd(self.dir.raw()),
            self.path.as_ptr(),
            &*self.how as *const types::OpenHow,
        )
        .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::OpenAt2(Call {
            dir: self.dir.raw(),
            path: self.path.as_ptr(),
            how: self.plain,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub dir: RawFd,
    pub path: *const libc::c_char,
    pub how: How,
}

impl Call {
    /// # Safety
    /// The path (NUL-terminated) and the directory are the op's until its
    /// completion is reaped.
    pub unsafe fn run(self) -> isize {
        // struct open_how (linux/openat2.h), version 0: three u64s.
        let how = [self.how.flags, self.how.mode, self.how.resolve];
        // SAFETY: the caller's guarantee for `dir` and `path`; `how` lives
        // on this stack for the call, and its size is the one passed.
        (unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.dir,
                self.path,
                how.as_ptr(),
                std::mem::size_of_val(&how),
            )
        }) as isize
    }
}
