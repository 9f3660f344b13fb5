//! What the direct and uncached strategies need to know about a descriptor:
//! its O_DIRECT alignment, whether O_DIRECT can be switched on, and how much
//! of a file is already in the page cache.

use std::os::fd::{AsRawFd, RawFd};

/// The O_DIRECT offset and length alignment of the file behind `fd`:
/// `Ok(Some(n))`, or `Ok(None)` when the file system does not do direct I/O.
/// From statx STATX_DIOALIGN where the kernel reports it (6.1+); otherwise
/// the file's preferred I/O block size, which is the logical block size or a
/// multiple of it.
pub fn dio_alignment(fd: &impl AsRawFd) -> std::io::Result<Option<u32>> {
    // SAFETY: an all-zero statx is a valid value of a plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty path with AT_EMPTY_PATH names `fd` itself (no path is
    // opened); `stx` is a valid, writable statx buffer.
    let ret = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN | libc::STATX_BLOCKS,
            &mut stx,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if stx.stx_mask & libc::STATX_DIOALIGN != 0 {
        // 0 means the file system does no direct I/O on this file.
        return Ok((stx.stx_dio_offset_align != 0)
            .then_some(stx.stx_dio_offset_align.max(stx.stx_dio_mem_align)));
    }
    Ok(Some(stx.stx_blksize.max(512)))
}

/// The file status flags of `fd` before the engine switched O_DIRECT on, to
/// put back when the job ends: the open file description is shared with the
/// client, which should get it back as it gave it.
#[derive(Debug, Clone, Copy)]
pub struct SavedFlags {
    pub fd: RawFd,
    pub flags: libc::c_int,
}

/// Switches O_DIRECT on for `fd` if it is not on already. `Err` with the OS
/// error when the file system refuses it (EINVAL).
pub fn enable_direct(fd: &impl AsRawFd) -> std::io::Result<Option<SavedFlags>> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL takes no argument and touches no memory of ours.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if flags & libc::O_DIRECT != 0 {
        return Ok(None);
    }
    // SAFETY: F_SETFL takes an int argument and touches no memory of ours.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some(SavedFlags { fd, flags }))
}

/// Switches O_DIRECT on or off for `fd`, returning whether it was on.
pub fn set_direct(fd: RawFd, on: bool) -> std::io::Result<bool> {
    // SAFETY: F_GETFL takes no argument and touches no memory of ours.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: F_SETFL takes an int argument and touches no memory of ours.
    if new != flags && unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(flags & libc::O_DIRECT != 0)
}

/// Puts back flags saved by `enable_direct`. The descriptor must still be
/// open (the job's endpoints are, until after this is called).
pub fn restore_flags(saved: SavedFlags) {
    // SAFETY: F_SETFL takes an int argument; the caller keeps `fd` open.
    unsafe { libc::fcntl(saved.fd, libc::F_SETFL, saved.flags) };
}

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
/// cache, by the cachestat syscall (6.5+), else by mincore over a mapping of
/// at most the first GiB of the range. `None` when neither can tell.
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
    if ret == 0 {
        return Some((cs.nr_cache as f64 / pages as f64).min(1.0));
    }
    mincore_fraction(fd.as_raw_fd(), off, len)
}

fn mincore_fraction(fd: RawFd, off: u64, len: u64) -> Option<f64> {
    let start = off & !4095;
    let len = (len + (off - start)).min(1 << 30) as usize;
    // SAFETY: a shared read-only mapping of a file we hold open; it is only
    // passed to mincore and unmapped before returning, never read.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            start as libc::off_t,
        )
    };
    if map == libc::MAP_FAILED {
        return None;
    }
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a mapping of `len` bytes and `vec` has one byte per page.
    let ok = unsafe { libc::mincore(map, len, vec.as_mut_ptr()) } == 0;
    // SAFETY: unmapping exactly what was mapped above.
    unsafe { libc::munmap(map, len) };
    ok.then(|| vec.iter().filter(|&&b| b & 1 != 0).count() as f64 / pages as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_just_written_is_cached_and_has_an_alignment() {
        let dir =
            tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).expect("tempdir");
        let path = dir.path().join("f");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(&vec![7u8; 1 << 20]).expect("write");
        let frac = cached_fraction(&f, 0, 1 << 20).expect("residency");
        assert!(
            frac > 0.9,
            "a file just written should be in the page cache: {frac}"
        );
        let align = dio_alignment(&f)
            .expect("statx")
            .expect("ext4 does direct I/O");
        assert!(
            align.is_power_of_two() && (512..=65536).contains(&align),
            "{align}"
        );
    }

    #[test]
    fn enabling_direct_is_undone_by_restore() {
        let dir =
            tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).expect("tempdir");
        let f = std::fs::File::create(dir.path().join("g")).expect("create");
        let saved = enable_direct(&f)
            .expect("ext4 takes O_DIRECT")
            .expect("was off");
        // SAFETY: F_GETFL on an open descriptor.
        let on = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(on & libc::O_DIRECT, 0);
        restore_flags(saved);
        // SAFETY: as above.
        let off = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(off & libc::O_DIRECT, 0);
    }
}
