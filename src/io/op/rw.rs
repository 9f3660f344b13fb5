//! IORING_OP_READ/WRITE and READ_FIXED/WRITE_FIXED through a pool buffer;
//! preadv2(2) and pwritev2(2).

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation, PoolSpan};
use crate::io::fd::SharedFd;

/// How a buffered read or write goes to the kernel.
#[derive(Debug, Clone, Copy)]
pub struct RwOpts {
    /// Use READ_FIXED/WRITE_FIXED: the pool is registered with the ring.
    pub fixed: bool,
    /// RWF_* flags (RWF_DONTCACHE for the uncached strategy).
    pub flags: i32,
}

/// A read into a span of a pool buffer, at `offset` (-1 as u64: the file
/// position); the buffer comes back with the completion.
pub struct Read {
    fd: SharedFd,
    pub(super) span: PoolSpan,
    offset: u64,
    rw: RwOpts,
}

/// A write from a span of a pool buffer, at `offset` (-1 as u64: the file
/// position); the buffer comes back with the completion.
pub struct Write {
    fd: SharedFd,
    pub(super) span: PoolSpan,
    offset: u64,
    rw: RwOpts,
}

impl Read {
    pub fn new(fd: SharedFd, span: PoolSpan, offset: u64, rw: RwOpts) -> Read {
        Read {
            fd,
            span,
            offset,
            rw,
        }
    }
}

impl Write {
    pub fn new(fd: SharedFd, span: PoolSpan, offset: u64, rw: RwOpts) -> Write {
        Write {
            fd,
            span,
            offset,
            rw,
        }
    }
}

impl Operation for Read {
    fn code(&self) -> u8 {
        if self.rw.fixed {
            opcode::ReadFixed::CODE
        } else {
            opcode::Read::CODE
        }
    }

    fn entry(&mut self) -> squeue::Entry {
        let (fd, ptr, len) = (types::Fd(self.fd.raw()), self.span.ptr(), self.span.len());
        if self.rw.fixed {
            opcode::ReadFixed::new(fd, ptr, len, self.span.index())
                .offset(self.offset)
                .rw_flags(self.rw.flags)
                .build()
        } else {
            opcode::Read::new(fd, ptr, len)
                .offset(self.offset)
                .rw_flags(self.rw.flags)
                .build()
        }
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Read(call(self.fd.raw(), &self.span, self.offset, self.rw))
    }
}

impl Operation for Write {
    fn code(&self) -> u8 {
        if self.rw.fixed {
            opcode::WriteFixed::CODE
        } else {
            opcode::Write::CODE
        }
    }

    fn entry(&mut self) -> squeue::Entry {
        let (fd, ptr, len) = (types::Fd(self.fd.raw()), self.span.ptr(), self.span.len());
        if self.rw.fixed {
            opcode::WriteFixed::new(fd, ptr, len, self.span.index())
                .offset(self.offset)
                .rw_flags(self.rw.flags)
                .build()
        } else {
            opcode::Write::new(fd, ptr, len)
                .offset(self.offset)
                .rw_flags(self.rw.flags)
                .build()
        }
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Write(call(self.fd.raw(), &self.span, self.offset, self.rw))
    }
}

fn call(fd: RawFd, span: &PoolSpan, offset: u64, rw: RwOpts) -> Call {
    Call {
        fd,
        ptr: span.ptr(),
        len: span.len() as usize,
        offset: offset as i64,
        rw_flags: rw.flags,
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
    pub ptr: *mut u8,
    pub len: usize,
    /// -1: the file position.
    pub offset: i64,
    pub rw_flags: i32,
}

impl Call {
    /// The same at the descriptor's position: io_uring ignores the offset
    /// of a stream, where preadv2 and pwritev2 would refuse it (ESPIPE).
    pub fn at_position(mut self) -> Call {
        self.offset = -1;
        self
    }

    /// # Safety
    /// `ptr..ptr + len` is the op's buffer, which nothing else touches until
    /// its completion is reaped; the descriptor is held by the op.
    pub unsafe fn read(self) -> isize {
        let iov = libc::iovec {
            iov_base: self.ptr.cast(),
            iov_len: self.len,
        };
        // SAFETY: the caller's guarantee; `iov` is a live local.
        unsafe { libc::preadv2(self.fd, &iov, 1, self.offset, self.rw_flags) }
    }

    /// # Safety
    /// As for `read`.
    pub unsafe fn write(self) -> isize {
        let iov = libc::iovec {
            iov_base: self.ptr.cast(),
            iov_len: self.len,
        };
        // SAFETY: the caller's guarantee; `iov` is a live local.
        unsafe { libc::pwritev2(self.fd, &iov, 1, self.offset, self.rw_flags) }
    }
}
