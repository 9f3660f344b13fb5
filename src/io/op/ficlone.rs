//! FICLONE: the destination file shares the source's extents (btrfs, XFS,
//! bcachefs...). io_uring has no such opcode, and the ioctl can block on
//! the file system, so it never runs on the loop thread: the threads back
//! end runs it on a worker like any blocking call, and io_uring's back end
//! hands it to the small worker pool it keeps next to the ring
//! (io/ring.rs), whose completion comes back as an ordinary one.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// The code of this operation in the op table and the back ends: outside
/// io_uring's opcodes (a u8 the kernel has not reached), so the ring's
/// restrictions could never let it through to the kernel by mistake.
pub(crate) const CODE: u8 = 0xF0;

pub struct Ficlone {
    src: SharedFd,
    dst: SharedFd,
}

impl Ficlone {
    /// Clones all of `src` into `dst`.
    pub fn new(src: SharedFd, dst: SharedFd) -> Ficlone {
        Ficlone { src, dst }
    }
}

impl Operation for Ficlone {
    fn code(&self) -> u8 {
        CODE
    }

    /// Never submitted to the kernel (the ring sends this code to its
    /// workers); a no-op entry that the restricted ring would refuse.
    fn entry(&mut self) -> squeue::Entry {
        opcode::Nop::new().build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Ficlone(Call {
            src: self.src.raw(),
            dst: self.dst.raw(),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub src: RawFd,
    pub dst: RawFd,
}

impl Call {
    /// # Safety
    /// Both descriptors are held by the op.
    pub unsafe fn run(self) -> isize {
        // SAFETY: FICLONE takes the source descriptor as its argument, by
        // value: no memory of ours is read or written; the caller keeps both
        // descriptors open.
        (unsafe { libc::ioctl(self.dst, libc::FICLONE, self.src) }) as isize
    }
}
