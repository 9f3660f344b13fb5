//! IORING_OP_READ and IORING_OP_WRITE through a buffer the operation owns
//! (a host-to-host connection's receive buffer, the data it writes into a
//! file), not a pool buffer: each connection keeps its few buffers for its
//! life and lends them to one op at a time, so nothing is allocated per
//! chunk. preadv2(2) and pwritev2(2).

use io_uring::{opcode, squeue, types};

use super::{rw, Blocking, Operation};
use crate::io::fd::SharedFd;

/// A read into `buf[at..]` at `offset` (None: the position, or a stream);
/// the buffer comes back with the completion.
pub struct ReadInto {
    fd: SharedFd,
    pub buf: Vec<u8>,
    at: usize,
    /// Where the room read into ends (the buffer's end unless capped).
    end: usize,
    offset: Option<u64>,
}

/// A write of all of `buf` at `offset`; the buffer comes back with the
/// completion (a short write is the owner's to go on with).
pub struct WriteFrom {
    fd: SharedFd,
    pub buf: Vec<u8>,
    pub offset: u64,
}

impl ReadInto {
    /// Reads into the room of `buf` after its first `at` bytes.
    pub fn new(fd: SharedFd, buf: Vec<u8>, at: usize, offset: Option<u64>) -> ReadInto {
        let at = at.min(buf.len());
        let end = buf.len();
        ReadInto {
            fd,
            buf,
            at,
            end,
            offset,
        }
    }

    /// Reads at most `limit` bytes (if any limit).
    pub fn at_most(mut self, limit: Option<usize>) -> ReadInto {
        if let Some(limit) = limit {
            self.end = self.end.min(self.at.saturating_add(limit));
        }
        self
    }

    fn span(&mut self) -> (*mut u8, u32) {
        let room = &mut self.buf[self.at..self.end];
        (
            room.as_mut_ptr(),
            u32::try_from(room.len()).unwrap_or(u32::MAX),
        )
    }
}

impl WriteFrom {
    pub fn new(fd: SharedFd, buf: Vec<u8>, offset: u64) -> WriteFrom {
        WriteFrom { fd, buf, offset }
    }

    fn len(&self) -> u32 {
        u32::try_from(self.buf.len()).unwrap_or(u32::MAX)
    }
}

impl Operation for ReadInto {
    fn code(&self) -> u8 {
        opcode::Read::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        let offset = super::raw_offset(self.offset) as u64;
        let fd = types::Fd(self.fd.raw());
        let (ptr, len) = self.span();
        opcode::Read::new(fd, ptr, len).offset(offset).build()
    }

    fn blocking(&mut self) -> Blocking {
        let offset = super::raw_offset(self.offset);
        let fd = self.fd.raw();
        let (ptr, len) = self.span();
        Blocking::Read(rw::Call {
            fd,
            ptr,
            len: len as usize,
            offset,
            rw_flags: 0,
        })
    }
}

impl Operation for WriteFrom {
    fn code(&self) -> u8 {
        opcode::Write::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::Write::new(types::Fd(self.fd.raw()), self.buf.as_ptr(), self.len())
            .offset(self.offset)
            .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Write(rw::Call {
            fd: self.fd.raw(),
            ptr: self.buf.as_ptr().cast_mut(),
            len: self.len() as usize,
            offset: self.offset as i64,
            rw_flags: 0,
        })
    }
}
