//! One bounded piece of an in-kernel copy: copy_file_range(2) from a file
//! into a file (in the page cache on ext4 and tmpfs, on the server for NFS
//! 4.2, SMB or CephFS), or sendfile(2) from a file into a socket. io_uring
//! has no opcode for either and both block (on the disk, a server, or a
//! peer that reads slowly), so, like FICLONE (ficlone.rs), a worker runs
//! it under either back end and its completion comes back as an ordinary
//! one.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// The code of this operation in the op table and the back ends: outside
/// io_uring's opcodes, as FICLONE's (0xF0) is, so the restricted ring could
/// never pass it to the kernel by mistake.
pub(crate) const CODE: u8 = 0xF1;

/// Which syscall moves the piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// copy_file_range(src, &off_in, dst, &off_out, len, 0).
    CopyFileRange,
    /// sendfile(dst, src, &off_in, len): the destination is a socket,
    /// written at its position.
    Sendfile,
}

/// The offsets the syscall reads and advances: memory the kernel writes,
/// so the op owns them (on the heap: they stay put while the op table moves
/// its values) until its completion is reaped. The owner keeps its own
/// count; the result says how far they moved.
#[derive(Debug)]
pub struct Offsets {
    pub src: i64,
    pub dst: i64,
}

pub struct CopyRange {
    kind: Kind,
    src: SharedFd,
    dst: SharedFd,
    offsets: Box<Offsets>,
    len: usize,
}

impl CopyRange {
    /// Up to `len` bytes of `src` from `src_off` into `dst` at `dst_off`
    /// (unused by sendfile, which writes the socket at its position).
    /// Offsets were checked at admission to stay below 2^63.
    pub fn new(
        kind: Kind,
        src: SharedFd,
        dst: SharedFd,
        (src_off, dst_off): (u64, u64),
        len: usize,
    ) -> CopyRange {
        CopyRange {
            kind,
            src,
            dst,
            offsets: Box::new(Offsets {
                src: src_off as i64,
                dst: dst_off as i64,
            }),
            len,
        }
    }
}

impl Operation for CopyRange {
    fn code(&self) -> u8 {
        CODE
    }

    /// Never submitted to the kernel (the ring sends this code to its
    /// workers); a no-op entry that the restricted ring would refuse.
    fn entry(&mut self) -> squeue::Entry {
        opcode::Nop::new().build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::CopyRange(Call {
            kind: self.kind,
            src: self.src.raw(),
            dst: self.dst.raw(),
            offsets: &mut *self.offsets,
            len: self.len,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub kind: Kind,
    pub src: RawFd,
    pub dst: RawFd,
    /// The op's `offsets`, which the syscall advances.
    pub offsets: *mut Offsets,
    pub len: usize,
}

impl Call {
    /// The bytes moved (0 at the source's end), or -1 with errno set.
    ///
    /// # Safety
    /// Both descriptors and `offsets` are held by the op, and nothing else
    /// touches the offsets until its completion is reaped.
    pub unsafe fn run(self) -> isize {
        // SAFETY: the op owns the boxed offsets until its completion is
        // reaped, which is after this returns, and nothing else reads or
        // writes them meanwhile (the caller's guarantee).
        let off = unsafe { &mut *self.offsets };
        match self.kind {
            // SAFETY: the offsets are live, writable i64s (loff_t); the
            // descriptors are the op's, open for the call.
            Kind::CopyFileRange => unsafe {
                libc::copy_file_range(self.src, &mut off.src, self.dst, &mut off.dst, self.len, 0)
            },
            // SAFETY: as above; sendfile reads and advances one offset.
            Kind::Sendfile => unsafe { libc::sendfile(self.dst, self.src, &mut off.src, self.len) },
        }
    }
}
