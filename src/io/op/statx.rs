//! IORING_OP_STATX of a descriptor itself (empty path, AT_EMPTY_PATH), at
//! admission; statx(2). io_uring always runs it in an io-wq worker (the
//! threads back end on a worker thread): a getattr that waits on a FUSE or
//! NFS server never waits on the loop.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// A statx of `fd` for `mask` into a buffer the op owns.
pub struct Statx {
    fd: SharedFd,
    flags: i32,
    mask: u32,
    buf: Box<libc::statx>,
}

impl Statx {
    pub fn new(fd: SharedFd, flags: i32, mask: u32) -> Statx {
        Statx {
            fd,
            flags: flags | libc::AT_EMPTY_PATH,
            mask,
            // SAFETY: an all-zero statx is a valid value of a plain C struct.
            buf: Box::new(unsafe { std::mem::zeroed() }),
        }
    }

    /// What the kernel wrote; the op's share of the descriptors is dropped
    /// first, so the last statx back leaves them to their owner alone.
    pub fn into_buf(self) -> Box<libc::statx> {
        drop(self.fd);
        self.buf
    }
}

impl Operation for Statx {
    fn code(&self) -> u8 {
        opcode::Statx::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        let buf: *mut libc::statx = &mut *self.buf;
        opcode::Statx::new(
            types::Fd(self.fd.raw()),
            c"".as_ptr(),
            buf.cast::<types::statx>(),
        )
        .flags(self.flags)
        .mask(self.mask)
        .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Statx(Call {
            fd: self.fd.raw(),
            flags: self.flags,
            mask: self.mask,
            buf: &mut *self.buf,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
    pub flags: i32,
    pub mask: u32,
    pub buf: *mut libc::statx,
}

impl Call {
    /// # Safety
    /// The buffer and the descriptor are the op's until its completion is
    /// reaped.
    pub unsafe fn run(self) -> isize {
        // SAFETY: the caller's guarantee; the path is a static empty string.
        (unsafe { libc::statx(self.fd, c"".as_ptr(), self.flags, self.mask, self.buf) }) as isize
    }
}
