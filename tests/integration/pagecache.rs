//! Page-cache helpers for the direct-strategy tests: how much of a file is
//! resident, making a file cold (or hot), and large files written and checked
//! by streaming, without holding them in memory.

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::support::{assert_bytes_eq, pattern};

/// cachestat(2) (Linux 6.5). Every architecture got the same number from the
/// unified syscall table, and the libc crate does not name it yet.
const SYS_CACHESTAT: libc::c_long = 451;

/// `struct cachestat_range` of include/uapi/linux/mman.h.
#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

/// `struct cachestat` of include/uapi/linux/mman.h.
#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// How much of a file is in the page cache.
#[derive(Debug, Clone, Copy)]
pub struct Residency {
    /// Pages of the file in the page cache.
    pub resident: u64,
    /// Pages the file spans.
    pub pages: u64,
    /// Which system call measured it.
    pub how: &'static str,
}

impl Residency {
    /// The resident share, 0.0 to 1.0 (0.0 for an empty file).
    pub fn fraction(&self) -> f64 {
        if self.pages == 0 {
            0.0
        } else {
            self.resident as f64 / self.pages as f64
        }
    }
}

impl std::fmt::Display for Residency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2}% ({} of {} pages, {})",
            self.fraction() * 100.0,
            self.resident,
            self.pages,
            self.how
        )
    }
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert!(n > 0, "sysconf(_SC_PAGESIZE)");
    n as u64
}

/// How much of the file at `path` is in the page cache: cachestat(2) where
/// the kernel has it, mincore(2) on a read-only mapping otherwise.
pub fn residency(path: &Path) -> Residency {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let len = f.metadata().unwrap().len();
    let pages = len.div_ceil(page_size());
    match cachestat(&f) {
        Ok(resident) => Residency {
            resident,
            pages,
            how: "cachestat",
        },
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => Residency {
            resident: mincore_pages(&f, len)
                .unwrap_or_else(|e| panic!("mincore {}: {e}", path.display())),
            pages,
            how: "mincore",
        },
        Err(e) => panic!("cachestat {}: {e}", path.display()),
    }
}

/// As [`residency`], always by mincore(2), to cross-check cachestat.
pub fn residency_by_mincore(path: &Path) -> Residency {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let len = f.metadata().unwrap().len();
    Residency {
        resident: mincore_pages(&f, len)
            .unwrap_or_else(|e| panic!("mincore {}: {e}", path.display())),
        pages: len.div_ceil(page_size()),
        how: "mincore",
    }
}

/// The resident share of the file at `path`, 0.0 to 1.0.
pub fn resident_fraction(path: &Path) -> f64 {
    residency(path).fraction()
}

fn cachestat(f: &File) -> io::Result<u64> {
    // len 0: from `off` to the end of the file.
    let range = CachestatRange { off: 0, len: 0 };
    let mut cs = Cachestat::default();
    // SAFETY: both pointers are to live, correctly laid out structs; the
    // kernel writes only `cs`.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            f.as_raw_fd(),
            &range as *const CachestatRange,
            &mut cs as *mut Cachestat,
            0u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cs.nr_cache)
}

fn mincore_pages(f: &File, len: u64) -> io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    let len = len as usize;
    // SAFETY: a fresh shared read-only mapping of a file we hold open; no
    // page of it is touched, only its residency asked for.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut vec = vec![0u8; len.div_ceil(page_size() as usize)];
    // SAFETY: `addr..addr+len` is the mapping made above; `vec` has one byte
    // per page of it.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(addr, len) };
    if rc != 0 {
        return Err(err);
    }
    Ok(vec.iter().filter(|&&b| b & 1 != 0).count() as u64)
}

/// Writes the file's dirty pages back and asks the kernel to drop all its
/// pages (POSIX_FADV_DONTNEED), a few times if some stay. Returns the
/// residency left, which the caller asserts on.
pub fn make_cold(path: &Path) -> Residency {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut r = residency(path);
    for _ in 0..5 {
        f.sync_data()
            .unwrap_or_else(|e| panic!("fdatasync {}: {e}", path.display()));
        // SAFETY: posix_fadvise on a descriptor we hold; len 0 means to the end.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise(DONTNEED) {}", path.display());
        r = residency(path);
        if r.resident == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    r
}

/// Makes `path` cold and asserts that it is: at most 1% resident.
pub fn assert_cold(path: &Path, what: &str) {
    let r = make_cold(path);
    assert!(
        r.fraction() <= 0.01,
        "{what}: {} still resident after fdatasync + POSIX_FADV_DONTNEED",
        r
    );
}

/// Reads the whole file so its pages are cached; returns the residency after.
pub fn make_hot(path: &Path) -> Residency {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = vec![0u8; 4 << 20];
    while f.read(&mut buf).unwrap() > 0 {}
    residency(path)
}

// ---------------------------------------------------------------------------
// Large files, streamed

/// The chunk size large files are written and compared in.
pub const BIG_CHUNK: usize = 4 << 20;

/// The contents of a large test file: a 4 MiB pseudo-random block repeated,
/// with the first 8 bytes of every 4 KiB page replaced by that page's file
/// offset, so a block written to the wrong place does not compare equal.
pub struct BigPattern {
    base: Vec<u8>,
}

impl BigPattern {
    pub fn new(seed: u64) -> BigPattern {
        BigPattern {
            base: pattern(seed, BIG_CHUNK),
        }
    }

    /// Fills `buf` with the file's bytes at `offset` (a multiple of
    /// `BIG_CHUNK`), `len` of them (at most `BIG_CHUNK`).
    pub fn chunk(&self, offset: u64, len: usize, buf: &mut Vec<u8>) {
        assert_eq!(offset % BIG_CHUNK as u64, 0);
        assert!(len <= BIG_CHUNK);
        buf.clear();
        buf.extend_from_slice(&self.base[..len]);
        for p in (0..len).step_by(4096) {
            let stamp = (offset + p as u64).to_le_bytes();
            let n = stamp.len().min(len - p);
            buf[p..p + n].copy_from_slice(&stamp[..n]);
        }
    }

    /// Writes a file of `len` bytes of this pattern at `path`.
    pub fn write_file(&self, path: &Path, len: u64) {
        let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        let mut buf = Vec::with_capacity(BIG_CHUNK);
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(BIG_CHUNK as u64) as usize;
            self.chunk(off, n, &mut buf);
            f.write_all(&buf)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            off += n as u64;
        }
    }

    /// Asserts the file at `path` holds exactly `len` bytes of this pattern,
    /// reading it a chunk at a time.
    pub fn assert_file(&self, path: &Path, len: u64) {
        let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let got_len = f.metadata().unwrap().len();
        assert_eq!(got_len, len, "{}: file size", path.display());
        let mut want = Vec::with_capacity(BIG_CHUNK);
        let mut got = vec![0u8; BIG_CHUNK];
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(BIG_CHUNK as u64) as usize;
            self.chunk(off, n, &mut want);
            f.read_exact(&mut got[..n])
                .unwrap_or_else(|e| panic!("read {} at {off}: {e}", path.display()));
            if got[..n] != want[..] {
                assert_bytes_eq(
                    &got[..n],
                    &want,
                    &format!("{} (chunk at file offset {off})", path.display()),
                );
            }
            off += n as u64;
        }
    }
}
