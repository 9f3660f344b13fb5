//! IORING_OP_SPLICE: between a job's descriptor and a lent pipe; splice(2).

use std::os::fd::RawFd;
use std::rc::Rc;

use io_uring::{opcode, squeue, types};

use super::{raw_offset, Blocking, Keep, Operation};
use crate::io::pipe_pool::Pipe;

/// One side of a splice: a descriptor and its offset (`None` for streams).
#[derive(Debug, Clone, Copy)]
pub struct SpliceEnd {
    pub fd: RawFd,
    pub offset: Option<u64>,
}

/// A splice of up to `len` bytes from `input` to `output`, one of which is
/// the pipe it holds; it keeps the job's descriptors too.
pub struct Splice {
    input: SpliceEnd,
    output: SpliceEnd,
    len: u32,
    _pipe: Rc<Pipe>,
    _keep: Keep,
}

impl Splice {
    pub fn new(
        pipe: &Rc<Pipe>,
        keep: Keep,
        input: SpliceEnd,
        output: SpliceEnd,
        len: u32,
    ) -> Splice {
        Splice {
            input,
            output,
            len,
            _pipe: Rc::clone(pipe),
            _keep: keep,
        }
    }
}

impl Operation for Splice {
    fn code(&self) -> u8 {
        opcode::Splice::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::Splice::new(
            types::Fd(self.input.fd),
            raw_offset(self.input.offset),
            types::Fd(self.output.fd),
            raw_offset(self.output.offset),
            self.len,
        )
        .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Splice(Call {
            fd_in: self.input.fd,
            off_in: self.input.offset.map(|o| o as i64),
            fd_out: self.output.fd,
            off_out: self.output.offset.map(|o| o as i64),
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
