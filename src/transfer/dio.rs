//! What the direct and uncached strategies need to know about a descriptor:
//! its O_DIRECT alignment, whether O_DIRECT can be switched on, and how much
//! of a file is already in the page cache.

use std::os::fd::{AsRawFd, RawFd};

/// The O_DIRECT offset and length alignment of the file behind `fd`:
/// `Ok(Some(n))`, or `Ok(None)` when the file system does not do direct I/O.
/// From statx STATX_DIOALIGN where the kernel reports it (6.1+); otherwise
/// the file's preferred I/O block size, which is the logical block size or a
/// multiple of it.
pub(crate) fn dio_alignment(fd: &impl AsRawFd) -> std::io::Result<Option<u32>> {
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
    Ok(alignment_of(&stx))
}

/// The O_DIRECT alignment a statx (asked for STATX_DIOALIGN) gives, as
/// [`dio_alignment`] says. The engine gets its statx from the ring at
/// admission (engine/admission.rs), never from a syscall on the loop thread.
pub(crate) fn alignment_of(stx: &libc::statx) -> Option<u32> {
    if stx.stx_mask & libc::STATX_DIOALIGN != 0 {
        // 0 means the file system does no direct I/O on this file.
        return (stx.stx_dio_offset_align != 0)
            .then_some(stx.stx_dio_offset_align.max(stx.stx_dio_mem_align));
    }
    Some(stx.stx_blksize.max(512))
}

/// The file status flags of `fd` before the engine switched O_DIRECT on, to
/// put back when the job ends: the open file description is shared with the
/// client, which should get it back as it gave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SavedFlags {
    pub fd: RawFd,
    pub flags: libc::c_int,
}

/// Switches O_DIRECT on for `fd` if it is not on already. `Err` with the OS
/// error when the file system refuses it (EINVAL).
///
/// Called on the loop thread at admission: F_GETFL reads the open file's
/// flags, and F_SETFL changes them under the file's spinlock after checks
/// that look only at the open file (FMODE_CAN_ODIRECT, and NFS's
/// `check_flags`, which tests flag bits); neither reaches a server or a
/// disk. The first O_DIRECT read or write does (it flushes cached pages),
/// and that runs in the ring's workers.
pub(crate) fn enable_direct(fd: &impl AsRawFd) -> std::io::Result<Option<SavedFlags>> {
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
pub(crate) fn set_direct(fd: RawFd, on: bool) -> std::io::Result<bool> {
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
pub(crate) fn restore_flags(saved: SavedFlags) {
    // SAFETY: F_SETFL takes an int argument; the caller keeps `fd` open.
    unsafe { libc::fcntl(saved.fd, libc::F_SETFL, saved.flags) };
}

/// Whether cachestat on a file owned by `owner`, through a descriptor open
/// for writing or not, can answer without calling into its file system.
/// Since Linux 6.14 (backported to stable), cachestat first checks that the
/// caller could write the file: an open for writing, ownership, CAP_FOWNER,
/// and last `file_permission(MAY_WRITE)`, which asks the file system (a
/// FUSE getattr with `default_permissions`, an NFS ACCESS call) and could
/// stall the loop. So the last is never reached from here.
pub(crate) fn may_ask_residency(owner: u32, writable: bool) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    writable || owner == unsafe { libc::geteuid() } || has_cap_fowner()
}

/// CAP_FOWNER in the effective set (capget: reads this task's credentials).
fn has_cap_fowner() -> bool {
    crate::privileges::has_effective(crate::privileges::CAP_FOWNER)
}

/// Residency by cachestat(2), shared with the CLI (see crate::residency).
pub(crate) use crate::residency::{cached_fraction, cached_fraction_whole};

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
