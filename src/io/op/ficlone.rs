//! FICLONE: the destination file shares the source's extents (btrfs, XFS,
//! bcachefs...). io_uring has no such opcode, and the ioctl can block on
//! the file system, so it never runs on the loop thread: the threads back
//! end runs it on a worker like any blocking call, and io_uring's back end
//! hands it to the small worker pool it keeps next to the ring
//! (io/ring.rs), whose completion comes back as an ordinary one.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    /// The destination's size once cloned, written by the worker (the
    /// whole source at the moment of the clone, whatever it held at
    /// admission); the owner keeps the other reference.
    size: Arc<AtomicU64>,
}

impl Ficlone {
    /// Clones all of `src` into `dst`; `size` gets the destination's size.
    pub fn new(src: SharedFd, dst: SharedFd, size: Arc<AtomicU64>) -> Ficlone {
        Ficlone { src, dst, size }
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
            size: Arc::as_ptr(&self.size),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub src: RawFd,
    pub dst: RawFd,
    /// Where the destination's size goes (the op's `size`).
    pub size: *const AtomicU64,
}

impl Call {
    /// The clone, then the destination's size into `size`: 0, or -1 with
    /// errno set.
    ///
    /// # Safety
    /// Both descriptors and `size` are held by the op.
    pub unsafe fn run(self) -> isize {
        // SAFETY: FICLONE takes the source descriptor as its argument, by
        // value: no memory of ours is read or written; the caller keeps both
        // descriptors open.
        if unsafe { libc::ioctl(self.dst, libc::FICLONE, self.src) } < 0 {
            return -1;
        }
        // SAFETY: a zeroed stat is valid; fstat only writes into it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is live and writable; the descriptor is open.
        if unsafe { libc::fstat(self.dst, &mut st) } < 0 {
            return -1;
        }
        // SAFETY: the op holds the Arc `size` points into until its
        // completion is reaped, which is after this returns; an atomic may
        // be written from any thread.
        unsafe { &*self.size }.store(st.st_size as u64, Ordering::Release);
        0
    }
}
