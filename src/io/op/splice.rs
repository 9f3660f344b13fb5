//! IORING_OP_SPLICE: between a job's descriptor and a lent pipe; splice(2).

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{raw_offset, Blocking, Operation};
use crate::io::fd::SharedFd;

/// One side of a splice: a descriptor and its offset (`None` for streams).
#[derive(Debug, Clone)]
pub struct SpliceEnd {
    pub fd: SharedFd,
    pub offset: Option<u64>,
}

/// A splice of up to `len` bytes from `input` to `output`, one of which is
/// a lent pipe's end (its `SharedFd` holds the `Rc<Pipe>`).
pub struct Splice {
    fd_in: SharedFd,
    fd_out: SharedFd,
    /// As the kernel takes them (-1: none), which keeps a chunk's op small.
    off_in: i64,
    off_out: i64,
    len: u32,
}

impl Splice {
    pub fn new(input: SpliceEnd, output: SpliceEnd, len: u32) -> Splice {
        Splice {
            off_in: raw_offset(input.offset),
            off_out: raw_offset(output.offset),
            fd_in: input.fd,
            fd_out: output.fd,
            len,
        }
    }
}

/// An offset for splice(2): none for -1 (see `raw_offset`).
fn call_offset(offset: i64) -> Option<i64> {
    (offset >= 0).then_some(offset)
}

impl Operation for Splice {
    fn code(&self) -> u8 {
        opcode::Splice::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::Splice::new(
            types::Fd(self.fd_in.raw()),
            self.off_in,
            types::Fd(self.fd_out.raw()),
            self.off_out,
            self.len,
        )
        .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Splice(Call {
            fd_in: self.fd_in.raw(),
            off_in: call_offset(self.off_in),
            fd_out: self.fd_out.raw(),
            off_out: call_offset(self.off_out),
            len: self.len as usize,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd_in: RawFd,
    pub off_in: Option<i64>,
    pub fd_out: RawFd,
    pub off_out: Option<i64>,
    pub len: usize,
}

impl Call {
    /// # Safety
    /// The descriptors are the op's, open until its completion is reaped.
    pub unsafe fn run(self) -> isize {
        let mut oin = self.off_in.unwrap_or(0);
        let mut oout = self.off_out.unwrap_or(0);
        let at = |off: Option<i64>, o: &mut i64| {
            if off.is_some() {
                o as *mut i64
            } else {
                std::ptr::null_mut()
            }
        };
        let (pin, pout) = (at(self.off_in, &mut oin), at(self.off_out, &mut oout));
        // SAFETY: the offsets are live locals (or null for streams); the
        // descriptors are held by the op (the caller's guarantee).
        unsafe { libc::splice(self.fd_in, pin, self.fd_out, pout, self.len, 0) }
    }
}
