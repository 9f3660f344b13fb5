//! How much of a file is in the page cache, by cachestat(2): the daemon's
//! choice of strategy (transfer/choose.rs) and the CLI's choice of copying
//! a small file itself or handing it to the daemon, whose io_uring reads
//! many cold files at once (src/bin/ringxfer/walk_ahead.rs).

use std::os::fd::AsRawFd;

/// cachestat(2)'s number: 451 on every architecture (it was added after the
/// syscall tables were unified); libc 0.2 does not name it for x86_64.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// The fraction (0.0 to 1.0) of `len` bytes from `off` that is in the page
/// cache, by the cachestat syscall (6.5+). `None` when it cannot tell (an
/// older kernel, hugetlbfs, no permission).
///
/// The daemon calls it on the loop thread at admission, and only where
/// `transfer::dio::may_ask_residency` says: cachestat then walks the file's page-cache
/// index under RCU and never calls into the file system (no getattr, no
/// revalidation, no read). The mincore fallback this had before mapped the
/// file, and mmap on NFS revalidates the mapping with the server
/// (`nfs_file_mmap`); without cachestat the residency is unknown.
pub fn cached_fraction(fd: &impl AsRawFd, off: u64, len: u64) -> Option<f64> {
    if len == 0 {
        return Some(0.0);
    }
    let pages = len.div_ceil(4096).max(1);
    let range = CachestatRange { off, len };
    let mut cs = Cachestat::default();
    // SAFETY: cachestat reads `range` and writes `cs`, both valid for their
    // sizes; it looks at the page cache and does not block.
    let ret = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            &range as *const CachestatRange,
            &mut cs as *mut Cachestat,
            0u32,
        )
    };
    (ret == 0).then(|| (cs.nr_cache as f64 / pages as f64).min(1.0))
}
