//! Everything beneath a directory: its entries, and theirs, with the kind,
//! size, mode and modification time of each (a host-to-host `List`).
//! io_uring has no getdents, and reading a directory can wait on its file
//! system (NFS asks the server, FUSE its daemon), so a worker runs it under
//! either back end, as FICLONE (ficlone.rs), under the personality of the
//! op (the export's user).
//!
//! Subdirectories are opened relative to their parent with O_NOFOLLOW and
//! O_DIRECTORY, one component at a time: a symbolic link is listed, never
//! followed. At most `limit` entries: more is EOVERFLOW.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use io_uring::{opcode, squeue};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// The code of this operation in the op table and the back ends, outside
/// io_uring's opcodes as FICLONE's is (ficlone::CODE).
pub(crate) const CODE: u8 = 0xF4;

/// Directories deeper than this are not entered (ELOOP).
const MAX_DEPTH: usize = 256;

/// One entry found: its path below the listed directory (bytes, `/`
/// between components; empty for the directory itself, which comes
/// first), and what fstatat said of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: Vec<u8>,
    /// st_mode, type bits included.
    pub mode: u32,
    pub size: u64,
    pub mtime: (i64, u32),
}

pub struct ListDir {
    dir: SharedFd,
    limit: usize,
    out: Arc<Mutex<Vec<Found>>>,
}

impl ListDir {
    /// What lies beneath `dir`, at most `limit` entries, into `out`.
    pub fn new(dir: SharedFd, limit: usize, out: Arc<Mutex<Vec<Found>>>) -> ListDir {
        ListDir { dir, limit, out }
    }
}

impl Operation for ListDir {
    fn code(&self) -> u8 {
        CODE
    }

    /// Never submitted to the kernel (the ring sends this code to its
    /// workers); a no-op entry that the restricted ring would refuse.
    fn entry(&mut self) -> squeue::Entry {
        opcode::Nop::new().build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::ListDir(Call {
            fd: self.dir.raw(),
            limit: self.limit,
            out: Arc::as_ptr(&self.out),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
    pub limit: usize,
    /// Where the entries go (the op's `out`).
    pub out: *const Mutex<Vec<Found>>,
}

impl Call {
    /// The entries found, or -1 with errno set.
    ///
    /// # Safety
    /// The descriptor and `out` are held by the op.
    pub unsafe fn run(self) -> isize {
        // SAFETY: the op holds the Arc `out` points into until its
        // completion is reaped, which is after this returns; a Mutex may be
        // locked from any thread.
        let out = unsafe { &*self.out };
        let Ok(mut found) = out.lock() else {
            return fail(libc::EIO);
        };
        // The walk reads its own descriptor: the op's keeps its position.
        // SAFETY: dup takes no pointers; the op keeps `fd` open.
        let own = unsafe { libc::fcntl(self.fd, libc::F_DUPFD_CLOEXEC, 0) };
        if own < 0 {
            return -1;
        }
        // The directory's own entry first, with an empty path.
        match stat_at(own, c"").map(|st| found.push(found_at(Vec::new(), &st))) {
            Ok(()) => {}
            Err(errno) => {
                // SAFETY: `own` is ours and nothing took it.
                unsafe { libc::close(own) };
                return fail(errno);
            }
        }
        match walk(own, Vec::new(), self.limit, 0, &mut found) {
            Ok(()) => isize::try_from(found.len()).unwrap_or(isize::MAX),
            Err(errno) => fail(errno),
        }
    }
}

fn fail(errno: i32) -> isize {
    // SAFETY: errno is this thread's.
    unsafe { *libc::__errno_location() = errno };
    -1
}

/// Lists the directory open as `fd` (which it closes), its entries' paths
/// starting with `prefix`, into `found`; then each subdirectory's, opened
/// relative to it.
fn walk(
    fd: RawFd,
    prefix: Vec<u8>,
    limit: usize,
    depth: usize,
    found: &mut Vec<Found>,
) -> Result<(), i32> {
    // SAFETY: fdopendir takes `fd` over (closedir closes it); a null
    // result leaves it ours to close.
    let dir = unsafe { libc::fdopendir(fd) };
    if dir.is_null() {
        let errno = last_errno();
        // SAFETY: `fd` is ours and no stream took it.
        unsafe { libc::close(fd) };
        return Err(errno);
    }
    let walked = read_entries(dir, fd, &prefix, limit, found)
        .and_then(|subdirs| walk_subdirs(fd, &subdirs, limit, depth, found));
    // SAFETY: `dir` came from fdopendir and is closed once, after the
    // subdirectories opened through `fd`.
    unsafe { libc::closedir(dir) };
    walked
}

/// Walks each subdirectory (its name in `fd`, and its path).
fn walk_subdirs(
    fd: RawFd,
    subdirs: &[(CString, Vec<u8>)],
    limit: usize,
    depth: usize,
    found: &mut Vec<Found>,
) -> Result<(), i32> {
    if depth >= MAX_DEPTH && !subdirs.is_empty() {
        return Err(libc::ELOOP);
    }
    for (name, path) in subdirs {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `name` is NUL-terminated and alive for the call.
        let sub = unsafe { libc::openat(fd, name.as_ptr(), flags) };
        if sub < 0 {
            return Err(last_errno());
        }
        walk(sub, path.clone(), limit, depth + 1, found)?;
    }
    Ok(())
}

/// Reads every entry of `dir` (the stream of `fd`); returns the names and
/// paths of the subdirectories found.
fn read_entries(
    dir: *mut libc::DIR,
    fd: RawFd,
    prefix: &[u8],
    limit: usize,
    found: &mut Vec<Found>,
) -> Result<Vec<(CString, Vec<u8>)>, i32> {
    let mut subdirs = Vec::new();
    loop {
        // SAFETY: errno is this thread's; readdir signals an error only
        // through it.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dir` is an open stream; the entry it returns stays
        // valid until the next readdir or closedir on it.
        let entry = unsafe { libc::readdir64(dir) };
        if entry.is_null() {
            return match last_errno() {
                0 => Ok(subdirs),
                errno => Err(errno),
            };
        }
        // SAFETY: d_name is a NUL-terminated name within the entry.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        if found.len() >= limit {
            return Err(libc::EOVERFLOW);
        }
        let st = stat_at(fd, name)?;
        let mut path = prefix.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.to_bytes());
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            subdirs.push((name.to_owned(), path.clone()));
        }
        found.push(found_at(path, &st));
    }
}

/// What `st` says of the entry at `path`.
fn found_at(path: Vec<u8>, st: &libc::stat) -> Found {
    Found {
        path,
        mode: st.st_mode,
        size: u64::try_from(st.st_size).unwrap_or(0),
        mtime: (st.st_mtime, u32::try_from(st.st_mtime_nsec).unwrap_or(0)),
    }
}

/// fstatat of `name` in `fd` (an empty name: `fd` itself), not following
/// a link.
fn stat_at(fd: RawFd, name: &CStr) -> Result<libc::stat, i32> {
    // SAFETY: a zeroed stat is valid; fstatat only writes into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH;
    // SAFETY: `name` is NUL-terminated and `st` writable, both alive for
    // the call.
    let rc = unsafe { libc::fstatat(fd, name.as_ptr(), &mut st, flags) };
    if rc < 0 {
        return Err(last_errno());
    }
    Ok(st)
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
