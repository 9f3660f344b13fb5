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
    /// Ranges copied after the first, in order (`CopyRange::then`): read
    /// by the worker, so the op's until its completion is reaped too.
    pub more: Box<[Span]>,
}

/// A further range a piece copies once the one before it is whole:
/// source and destination offsets and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub src: i64,
    pub dst: i64,
    pub len: usize,
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
                more: Box::default(),
            }),
            len,
        }
    }

    /// Copies `more` too, each once the one before it moved its whole
    /// length: a sparse file's small runs of data, one worker hand-off for
    /// all of them instead of one each. The result is then the bytes moved
    /// by all, up to the first range that came back short, at its end or
    /// failed (that range's own result, if it is the first).
    pub fn then(mut self, more: Vec<Span>) -> CopyRange {
        self.offsets.more = more.into_boxed_slice();
        self
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
    /// The bytes moved (0 at the source's end), or -1 with errno set: of
    /// the first range, then of each further one while every range before
    /// it moved its whole length.
    ///
    /// # Safety
    /// Both descriptors and `offsets` (with its ranges) are held by the op,
    /// and nothing else touches them until its completion is reaped.
    pub unsafe fn run(self) -> isize {
        // SAFETY: the caller's guarantee, passed on.
        let first = unsafe { self.one(self.len) };
        if first < 0 || first as usize != self.len {
            return first;
        }
        // SAFETY: the op's offsets, alive and touched by nothing else until
        // its completion is reaped (the caller's guarantee); the ranges are
        // only read, and copied out so that no borrow of them is held while
        // `one` writes the offsets.
        let more = unsafe { (*self.offsets).more.to_vec() };
        let mut total = first;
        for span in more {
            // SAFETY: as for the first range; the offsets are the op's and
            // only this worker touches them until the completion is reaped.
            let n = unsafe {
                let off = &mut *self.offsets;
                off.src = span.src;
                off.dst = span.dst;
                self.one(span.len)
            };
            // A failure (or an interruption, a cancel) of a later range
            // ends the piece with what moved before it; the owner goes on
            // from that range, whose next copy says what is wrong.
            if n < 0 {
                break;
            }
            total += n;
            if n as usize != span.len {
                break;
            }
        }
        total
    }

    /// One syscall over `len` bytes at the current offsets.
    ///
    /// # Safety
    /// As for `run`.
    unsafe fn one(&self, len: usize) -> isize {
        // SAFETY: the op owns the boxed offsets until its completion is
        // reaped, which is after this returns, and nothing else reads or
        // writes them meanwhile (the caller's guarantee).
        let off = unsafe { &mut *self.offsets };
        match self.kind {
            // SAFETY: the offsets are live, writable i64s (loff_t); the
            // descriptors are the op's, open for the call.
            Kind::CopyFileRange => unsafe {
                libc::copy_file_range(self.src, &mut off.src, self.dst, &mut off.dst, len, 0)
            },
            // SAFETY: as above; sendfile reads and advances one offset.
            Kind::Sendfile => unsafe { libc::sendfile(self.dst, self.src, &mut off.src, len) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::os::unix::fs::FileExt;
    use std::rc::Rc;

    fn file(dir: &std::path::Path, name: &str) -> Rc<OwnedFd> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(name))
            .expect("open");
        Rc::new(OwnedFd::from(f))
    }

    fn span(off: i64, len: usize) -> Span {
        Span {
            src: off,
            dst: off,
            len,
        }
    }

    /// Runs a piece of `first` then `more` from `src` into `dst` as a worker would.
    fn piece(src: &Rc<OwnedFd>, dst: &Rc<OwnedFd>, first: Span, more: Vec<Span>) -> isize {
        let mut op = CopyRange::new(
            Kind::CopyFileRange,
            SharedFd::owned(src),
            SharedFd::owned(dst),
            (first.src as u64, first.dst as u64),
            first.len,
        )
        .then(more);
        let Blocking::CopyRange(call) = op.blocking() else {
            panic!("a copy range runs as CopyRange");
        };
        // SAFETY: the op (descriptors, offsets, ranges) outlives the call.
        unsafe { call.run() }
    }

    #[test]
    fn a_piece_copies_its_ranges_in_order_until_one_comes_back_short() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (file(dir.path(), "src"), file(dir.path(), "dst"));
        let data: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
        let f = std::fs::File::from(src.try_clone().expect("dup"));
        f.write_all_at(&data, 0).expect("write");
        // Three ranges, holes between: all of them.
        let got = piece(
            &src,
            &dst,
            span(0, 1000),
            vec![span(4096, 4096), span(12288, 4096)],
        );
        assert_eq!(got, 9192);
        let out = std::fs::File::from(dst.try_clone().expect("dup"));
        let mut back = vec![0u8; 16384];
        out.read_exact_at(&mut back, 0).expect("read back");
        assert_eq!(back[..1000], data[..1000]);
        assert!(back[1000..4096].iter().all(|&b| b == 0));
        assert_eq!(back[4096..8192], data[4096..8192]);
        assert_eq!(back[12288..], data[12288..]);
        // A range past the end comes back with 0: the piece ends there,
        // with what the ranges before it moved; the one after is not copied.
        let got = piece(
            &src,
            &dst,
            span(0, 4096),
            vec![span(20000, 10), span(8192, 4096)],
        );
        assert_eq!(got, 4096);
        out.read_exact_at(&mut back, 0).expect("read back");
        assert!(back[8192..12288].iter().all(|&b| b == 0));
        // A first range that fails says why; a later one ends the piece
        // with the bytes before it (its next piece starts there and says).
        let bad = Rc::new(OwnedFd::from(
            std::fs::File::open(dir.path().join("src")).expect("open read-only"),
        ));
        assert_eq!(piece(&src, &bad, span(0, 4096), Vec::new()), -1);
        let got = piece(&src, &dst, span(0, 4096), vec![span(-5, 4096)]);
        assert_eq!(got, 4096);
    }
}
