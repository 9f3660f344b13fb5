//! The page cache: writing back, dropping, and asking what is resident.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

pub fn sync_all() {
    // SAFETY: sync(2) takes nothing and cannot fail.
    unsafe { libc::sync() };
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: clean pages, dentries and
/// inodes go (root only).
pub fn drop_caches() -> io::Result<()> {
    sync_all();
    fs::write("/proc/sys/vm/drop_caches", "3")
}

/// (resident, total) pages of `path` in the page cache: mincore over a
/// read-only shared mapping, which faults nothing in.
pub fn resident_pages(path: &Path) -> Option<(usize, usize)> {
    let file = File::open(path).ok()?;
    let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
    if len == 0 {
        return Some((0, 0));
    }
    // SAFETY: sysconf has no memory effects.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    // SAFETY: a new read-only mapping of an open file, where the kernel chooses; nothing reads it.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return None;
    }
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `len` bytes; `vec` has one byte per page of it.
    let rc = unsafe { libc::mincore(map, len, vec.as_mut_ptr()) };
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(map, len) };
    if rc != 0 {
        return None;
    }
    Some((vec.iter().filter(|&&b| b & 1 != 0).count(), pages))
}

/// The fraction of the pages of `paths` in the page cache; None when they
/// hold no page (all empty) or one cannot be asked about.
pub fn cached_fraction<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Option<f64> {
    let (mut resident, mut total) = (0, 0);
    for p in paths {
        let (r, t) = resident_pages(p)?;
        resident += r;
        total += t;
    }
    (total > 0).then(|| resident as f64 / total as f64)
}
