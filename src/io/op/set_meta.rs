//! A received file's mode and times (a host-to-host receiver's, before it
//! publishes): fchmod(2) and futimens(2). io_uring has neither, and both
//! may block on the file system, so a worker runs them under either back
//! end, as FICLONE.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// The code of this operation in the op table and the back ends: outside
/// io_uring's opcodes, like FICLONE's (ficlone.rs).
pub(crate) const CODE: u8 = 0xF3;

/// Permission bits and access and modification times for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// st_mode & 0o7777.
    pub mode: u32,
    /// (seconds, nanoseconds) since the epoch.
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
}

pub struct SetMeta {
    fd: SharedFd,
    meta: Meta,
}

impl SetMeta {
    pub fn new(fd: SharedFd, meta: Meta) -> SetMeta {
        SetMeta { fd, meta }
    }
}

impl Operation for SetMeta {
    fn code(&self) -> u8 {
        CODE
    }

    /// Never submitted to the kernel (the ring sends this code to its
    /// workers); a no-op entry that the restricted ring would refuse.
    fn entry(&mut self) -> squeue::Entry {
        opcode::Nop::new().build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::SetMeta(Call {
            fd: self.fd.raw(),
            meta: self.meta,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
    pub meta: Meta,
}

impl Call {
    /// 0, or -1 with errno set.
    ///
    /// # Safety
    /// The descriptor is held by the op.
    pub unsafe fn run(self) -> isize {
        // SAFETY: fchmod reads no memory of ours; the caller keeps the
        // descriptor open.
        if unsafe { libc::fchmod(self.fd, self.meta.mode & 0o7777) } < 0 {
            return -1;
        }
        let at = |(secs, nanos): (i64, u32)| libc::timespec {
            tv_sec: secs,
            tv_nsec: i64::from(nanos.min(999_999_999)),
        };
        let times = [at(self.meta.atime), at(self.meta.mtime)];
        // SAFETY: `times` holds the two timespecs futimens reads, alive on
        // this stack for the call; the descriptor is open.
        (unsafe { libc::futimens(self.fd, times.as_ptr()) }) as isize
    }
}
