//! Where a file's data is: lseek(SEEK_DATA) and lseek(SEEK_HOLE) over a
//! range, for a copy that keeps the source's holes. io_uring has no such
//! opcode, and lseek can wait on the file system (NFS asks the server, FUSE
//! its daemon), so it never runs on the loop thread: like FICLONE
//! (ficlone.rs), the threads back end runs it on a worker and io_uring's
//! back end on the worker pool next to the ring (io/ring.rs).
//!
//! One operation maps at most `cap` data segments; a file with more is
//! mapped in windows, each starting where the last one stopped.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use io_uring::{opcode, squeue};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// The code of this operation in the op table and the back ends, outside
/// io_uring's opcodes as FICLONE's is (ficlone::CODE).
pub(crate) const CODE: u8 = 0xF2;

/// What a map found, written by the worker and read by the owner once the
/// completion is in (the owner keeps the other reference).
#[derive(Debug, Default)]
pub struct Mapped {
    /// Data segments, `(start, end)` in file offsets, ascending, within
    /// the range asked; what lies between them is hole.
    pub segments: Vec<(u64, u64)>,
    /// Where the map stops: the range's end, or, when `cap` segments were
    /// found first, the end of the last one (the next window starts there).
    pub mapped_to: u64,
    /// The file's size once mapped: past it there is no hole but the end
    /// of the file (one that shrank, or a range asked past its end).
    pub size: u64,
}

pub struct DataMap {
    fd: SharedFd,
    start: u64,
    end: u64,
    cap: usize,
    out: Arc<Mutex<Mapped>>,
}

impl DataMap {
    /// The data of `fd` between `start` and `end`, at most `cap` segments,
    /// into `out`.
    pub fn new(fd: SharedFd, start: u64, end: u64, cap: usize, out: Arc<Mutex<Mapped>>) -> Self {
        DataMap {
            fd,
            start,
            end,
            cap,
            out,
        }
    }
}

impl Operation for DataMap {
    fn code(&self) -> u8 {
        CODE
    }

    /// Never submitted to the kernel (the ring sends this code to its
    /// workers); a no-op entry that the restricted ring would refuse.
    fn entry(&mut self) -> squeue::Entry {
        opcode::Nop::new().build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::DataMap(Call {
            fd: self.fd.raw(),
            start: self.start,
            end: self.end,
            cap: self.cap,
            out: Arc::as_ptr(&self.out),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
    pub start: u64,
    pub end: u64,
    pub cap: usize,
    /// Where the segments go (the op's `out`).
    pub out: *const Mutex<Mapped>,
}

impl Call {
    /// The map, into `out`: the number of segments, or -1 with errno set
    /// (EINVAL from a file system that cannot say where its holes are).
    /// The descriptor's file position, which its client shares, is put
    /// back as it was.
    ///
    /// # Safety
    /// The descriptor and `out` are held by the op.
    pub unsafe fn run(self) -> isize {
        // SAFETY: the op holds the Arc `out` points into until its
        // completion is reaped, which is after this returns; a Mutex may be
        // locked from any thread.
        let out = unsafe { &*self.out };
        let Ok(mut mapped) = out.lock() else {
            set_errno(libc::EIO);
            return -1;
        };
        // SAFETY: lseek touches no memory of ours; the op keeps the
        // descriptor open.
        let position = unsafe { libc::lseek(self.fd, 0, libc::SEEK_CUR) };
        if position < 0 {
            return -1;
        }
        let found = self.walk(&mut mapped);
        // SAFETY: a zeroed stat is valid; fstat only writes into it, and
        // the op keeps the descriptor open.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `st` is live and writable.
        let stated = unsafe { libc::fstat(self.fd, &mut st) } == 0;
        mapped.size = if stated { st.st_size as u64 } else { u64::MAX };
        let errno = std::io::Error::last_os_error().raw_os_error();
        // SAFETY: as above.
        unsafe { libc::lseek(self.fd, position, libc::SEEK_SET) };
        if found < 0 {
            set_errno(errno.unwrap_or(libc::EIO));
        }
        found
    }

    /// SEEK_DATA then SEEK_HOLE from `start`, segment by segment.
    fn walk(self, mapped: &mut Mapped) -> isize {
        mapped.segments.clear();
        let mut at = self.start;
        while at < self.end {
            if mapped.segments.len() >= self.cap {
                mapped.mapped_to = at;
                return mapped.segments.len() as isize;
            }
            let Some(data) = seek(self.fd, at, libc::SEEK_DATA) else {
                // ENXIO: no data from here to the end of the file.
                if last_errno() == libc::ENXIO {
                    break;
                }
                return -1;
            };
            if data >= self.end {
                break;
            }
            let hole = match seek(self.fd, data, libc::SEEK_HOLE) {
                Some(hole) => hole.min(self.end),
                // The file was cut between the two calls: it ends here.
                None if last_errno() == libc::ENXIO => break,
                None => return -1,
            };
            if hole <= data {
                break;
            }
            mapped.segments.push((data, hole));
            at = hole;
        }
        mapped.mapped_to = self.end;
        mapped.segments.len() as isize
    }
}

/// lseek to `whence` from `offset`: the new offset, or `None` with errno set.
fn seek(fd: RawFd, offset: u64, whence: libc::c_int) -> Option<u64> {
    // SAFETY: lseek touches no memory of ours; the caller's op keeps the
    // descriptor open. Offsets were checked at admission to stay below 2^63.
    let r = unsafe { libc::lseek(fd, offset as libc::off_t, whence) };
    (r >= 0).then_some(r as u64)
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn set_errno(errno: i32) {
    // SAFETY: errno is this thread's own variable.
    unsafe { *libc::__errno_location() = errno };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::fd::AsRawFd;

    fn map(file: &std::fs::File, start: u64, end: u64, cap: usize) -> (isize, Mapped) {
        let out = Mutex::new(Mapped::default());
        let call = Call {
            fd: file.as_raw_fd(),
            start,
            end,
            cap,
            out: &out,
        };
        // SAFETY: `out` and the file outlive the call.
        let r = unsafe { call.run() };
        (r, out.into_inner().expect("lock"))
    }

    #[test]
    fn segments_are_the_data_between_holes_in_windows_and_the_position_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("sparse"))
            .expect("open");
        const M: u64 = 1 << 20;
        for at in [M, 3 * M, 5 * M] {
            f.seek(SeekFrom::Start(at)).expect("seek");
            f.write_all(&[7u8; 4096]).expect("write");
        }
        f.set_len(8 * M).expect("set_len");
        f.seek(SeekFrom::Start(123)).expect("seek");
        let (r, m) = map(&f, 0, 8 * M, 16);
        assert_eq!(r, 3);
        let want = [(M, M + 4096), (3 * M, 3 * M + 4096), (5 * M, 5 * M + 4096)];
        assert_eq!(m.segments, want, "ext4, XFS, btrfs and tmpfs map blocks");
        assert_eq!((m.mapped_to, m.size), (8 * M, 8 * M));
        assert_eq!(f.stream_position().expect("position"), 123);
        // Two segments at most: the window stops after the second.
        let (r, m) = map(&f, 0, 8 * M, 2);
        assert_eq!((r, m.segments.len(), m.mapped_to), (2, 2, 3 * M + 4096));
        // Clipped to the range; nothing but hole after the last data.
        let (_, m) = map(&f, M + 100, 3 * M + 10, 16);
        assert_eq!(m.segments, [(M + 100, M + 4096), (3 * M, 3 * M + 10)]);
        let (r, m) = map(&f, 6 * M, 8 * M, 16);
        assert_eq!((r, m.segments.len(), m.mapped_to), (0, 0, 8 * M));
    }
}
