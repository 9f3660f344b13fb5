//! Directories held open while a tree copy is in them, and the calls that
//! name a file relative to one (openat, statx, mknodat, unlinkat), as cpz
//! does: a file named by its whole path makes the kernel walk every
//! component again, twice a file (source and destination); in a copy of
//! 100,000 empty files that path walking was 7% of the CPU (issue 17).

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;

use ringxfer::privileges::{has_effective, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH};

/// A source directory the walk is reading and, inside a staged directory
/// (new, ours), the destination directory it made for it.
#[derive(Debug)]
pub struct DirPair {
    pub src: OwnedFd,
    pub dst: Option<OwnedFd>,
    /// The source's file system is one whose size of 0 means no bytes
    /// though it has no block device (see [`sizes_are_honest`]).
    pub honest_sizes: bool,
    /// Both are on one btrfs, where copy_file_range clones: a copy reads
    /// no data, so a file out of the page cache costs no more than one in
    /// it (a cold tree of small files copied at 0.65-0.71 of cpz's speed
    /// through the daemon, issue 17).
    pub clones: bool,
}

/// btrfs's f_type (statfs).
pub const BTRFS: i64 = 0x9123_683e;
/// tmpfs's f_type.
const TMPFS: i64 = 0x0102_1994;

/// File systems whose writes land in this machine's page cache or disks,
/// by f_type: ext2/3/4, XFS, btrfs, tmpfs, f2fs, bcachefs, ZFS, and
/// overlayfs (a container's root, over one of those). A copy into one takes
/// the time its bytes take to move here, not a server's or a FUSE daemon's.
const LOCAL: [i64; 8] = [
    0xef53,
    0x5846_5342,
    BTRFS,
    TMPFS,
    0xf2f5_2010,
    0xca45_1a4e,
    0x2fc1_2fc1,
    0x794c_7630,
];

/// Whether `path` is (or would be made) on a file system of [`LOCAL`].
pub fn is_local(path: &Path) -> bool {
    fs_type(path).is_some_and(|t| LOCAL.contains(&t))
}

/// File systems without a block device (st_dev's major 0) whose files'
/// sizes are what a read finds. procfs and sysfs say 0 for files with
/// bytes; others unknown here are asked by a read.
const HONEST_WITHOUT_A_DEVICE: [i64; 2] = [BTRFS, TMPFS];

/// fstatfs of `dir` (which an O_PATH descriptor allows).
fn statfs_of(dir: BorrowedFd<'_>) -> Option<libc::statfs> {
    // SAFETY: statfs is plain old data; all zeroes is a valid value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is open for the call and `fs` this frame's, written by
    // the kernel only during it.
    let ok = unsafe { libc::fstatfs(dir.as_raw_fd(), &mut fs) } == 0;
    ok.then_some(fs)
}

/// The same file system and subvolume (statfs's f_fsid, which btrfs
/// makes differ between subvolumes: a copy across them is left to the
/// daemon, though it could clone).
fn same_fs(a: &libc::statfs, b: &libc::statfs) -> bool {
    fsid(a) == fsid(b)
}

fn fsid(fs: &libc::statfs) -> [libc::c_int; 2] {
    // SAFETY: fsid_t is the kernel's `struct { int val[2]; }` (its field is
    // private in libc): the same size and layout as the array.
    unsafe { std::mem::transmute::<libc::fsid_t, [libc::c_int; 2]>(fs.f_fsid) }
}

#[allow(clippy::unnecessary_cast)] // f_type's type differs by target.
fn f_type(fs: &libc::statfs) -> i64 {
    fs.f_type as i64
}

/// The type (statfs's f_type) of the file system `path` is on, or would
/// be made on (its parent's) if it does not exist yet.
pub fn fs_type(path: &Path) -> Option<i64> {
    let existing = if path.exists() {
        path
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    };
    let c = CString::new(existing.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain old data; all zeroes is a valid value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `fs` this frame's, written by the
    // kernel only during the call.
    let ok = unsafe { libc::statfs(c.as_ptr(), &mut fs) } == 0;
    ok.then(|| f_type(&fs))
}

impl DirPair {
    /// Opens `src` and, if given, `dst` as directories (O_PATH: nothing
    /// read, no permission needed beyond the search of their parents).
    /// None where one cannot be opened: the files are then named by path.
    pub fn open(src: &Path, dst: Option<&Path>) -> Option<DirPair> {
        let src = open_dir(src).ok()?;
        let dst = match dst {
            Some(dst) => Some(open_dir(dst).ok()?),
            None => None,
        };
        let src_fs = statfs_of(src.as_fd());
        let honest_sizes = src_fs.is_some_and(|fs| HONEST_WITHOUT_A_DEVICE.contains(&f_type(&fs)));
        let dst_fs = dst.as_ref().and_then(|dst| statfs_of(dst.as_fd()));
        let clones = match (src_fs, dst_fs) {
            (Some(s), Some(d)) => f_type(&s) == BTRFS && same_fs(&s, &d),
            _ => false,
        };
        Some(DirPair {
            src,
            dst,
            honest_sizes,
            clones,
        })
    }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(path)?;
    Ok(OwnedFd::from(file))
}

/// Runs `f` with `name` as a C string, from a buffer on the stack (a
/// directory entry's name is at most NAME_MAX bytes): no allocation per
/// file.
fn with_c_name<R>(name: &OsStr, f: impl FnOnce(&CStr) -> io::Result<R>) -> io::Result<R> {
    let bytes = name.as_bytes();
    let mut buf = [0u8; 256];
    if bytes.len() < buf.len() {
        buf[..bytes.len()].copy_from_slice(bytes);
        let c = CStr::from_bytes_until_nul(&buf).map_err(|_| invalid())?;
        if c.to_bytes().len() != bytes.len() {
            return Err(invalid());
        }
        return f(c);
    }
    let c = CString::new(bytes).map_err(|_| invalid())?;
    f(&c)
}

fn invalid() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens `name` in `dir` with `flags` (O_CLOEXEC added) and, where it
/// creates, `mode`.
fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int, mode: u32) -> io::Result<File> {
    with_c_name(name, |c| {
        // SAFETY: `dir` is an open descriptor borrowed for the call and `c`
        // a NUL-terminated string that outlives it; a descriptor returned
        // is new and owned by nobody else, so the File takes it.
        let fd = check(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })?;
        // SAFETY: as above: `fd` was just returned to us and is open.
        Ok(unsafe { File::from_raw_fd(fd) })
    })
}

/// Opens `name` in `dir` for reading without updating its access time where
/// the kernel allows (see `walk_ahead::open_noatime`).
pub fn open_noatime_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    match open_at(dir, name, libc::O_RDONLY | libc::O_NOATIME, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open_at(dir, name, libc::O_RDONLY, 0),
        other => other,
    }
}

/// Creates `name` in `dir`, which must not exist, for writing, with the
/// permission bits `mode` (less the umask).
pub fn create_new_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<File> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    open_at(dir, name, flags, mode & 0o777)
}

/// Creates the empty regular file `name` in `dir` without opening it
/// (mknod of S_IFREG, which needs no privilege): no descriptor to make
/// and close.
pub fn make_empty_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    with_c_name(name, |c| {
        // SAFETY: `dir` is open for the call and `c` NUL-terminated; mknodat
        // reads nothing else.
        check(unsafe {
            libc::mknodat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::S_IFREG | (mode & 0o777),
                0,
            )
        })
        .map(drop)
    })
}

/// Removes the file `name` from `dir`.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    with_c_name(name, |c| {
        // SAFETY: `dir` is open for the call and `c` NUL-terminated.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
    })
}

/// What [`stat_at`] tells of a file.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub mode: u32,
    pub size: u64,
    /// Bytes allocated (blocks of 512).
    pub allocated: u64,
    pub uid: u32,
    /// The file system sits on a block device (see
    /// `walk_ahead::has_a_device`).
    pub on_a_device: bool,
}

impl Stat {
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// This process may surely read the file: it owns it and the owner may
    /// read, or it may read any file (CAP_DAC_OVERRIDE or
    /// CAP_DAC_READ_SEARCH, as root has). Anything else (group and other
    /// bits, ACLs) is for open to decide.
    pub fn readable(&self) -> bool {
        let rights = rights();
        rights.reads_anything || (self.uid == rights.euid && self.mode & 0o400 != 0)
    }
}

/// Who this process is, asked once.
struct Rights {
    euid: u32,
    reads_anything: bool,
}

fn rights() -> &'static Rights {
    static RIGHTS: OnceLock<Rights> = OnceLock::new();
    RIGHTS.get_or_init(|| Rights {
        // SAFETY: geteuid has no arguments and cannot fail.
        euid: unsafe { libc::geteuid() },
        reads_anything: has_effective(CAP_DAC_OVERRIDE) || has_effective(CAP_DAC_READ_SEARCH),
    })
}

/// statx of `name` in `dir`, following a symbolic link as open does.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    with_c_name(name, |c| {
        // SAFETY: statx is plain old data; all zeroes is a valid value.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        let mask = libc::STATX_TYPE
            | libc::STATX_MODE
            | libc::STATX_SIZE
            | libc::STATX_BLOCKS
            | libc::STATX_UID;
        // SAFETY: `dir` is open for the call, `c` NUL-terminated and `stx`
        // this frame's, written by the kernel only during the call.
        check(unsafe { libc::statx(dir.as_raw_fd(), c.as_ptr(), 0, mask, &mut stx) })?;
        if stx.stx_mask & mask != mask {
            // A file system that could not say: let open decide.
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        Ok(Stat {
            mode: u32::from(stx.stx_mode),
            size: stx.stx_size,
            allocated: stx.stx_blocks.saturating_mul(512),
            uid: stx.stx_uid,
            on_a_device: stx.stx_dev_major != 0,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn local_file_systems_are_told_from_others() {
        // The tests' own directory is on a disk or tmpfs; procfs and sysfs
        // stand for a file system whose time is not this machine's disks'.
        let here = tempfile::tempdir().unwrap();
        assert!(
            is_local(&here.path().join("new")),
            "{:?}",
            fs_type(here.path())
        );
        assert!(!is_local(Path::new("/proc/self/new")));
        assert!(!is_local(Path::new("/sys/kernel")));
        assert!(!is_local(Path::new("/no/such/dir/new")));
    }

    #[test]
    fn names_files_relative_to_their_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("a"), b"abc").unwrap();
        let pair = DirPair::open(&src, Some(&dst)).unwrap();
        assert!(
            !DirPair::open(Path::new("/proc/self"), None)
                .unwrap()
                .honest_sizes
        );
        let out = pair.dst.as_ref().unwrap().as_fd();
        let st = stat_at(pair.src.as_fd(), OsStr::new("a")).unwrap();
        assert!(st.is_file() && st.readable());
        assert_eq!((st.size, st.mode & 0o777), (3, 0o644));
        let mut read = String::new();
        let mut file = open_noatime_at(pair.src.as_fd(), OsStr::new("a")).unwrap();
        io::Read::read_to_string(&mut file, &mut read).unwrap();
        assert_eq!(read, "abc");
        create_new_at(out, OsStr::new("b"), 0o600).unwrap();
        let err = create_new_at(out, OsStr::new("b"), 0o600).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        make_empty_at(out, OsStr::new("e"), 0o640).unwrap();
        let e = std::fs::metadata(dst.join("e")).unwrap();
        assert!(e.is_file());
        assert_eq!(e.len(), 0);
        assert_eq!(e.mode() & 0o777 & !0o640, 0, "no bit beyond the mode given");
        assert_ne!(e.mode() & 0o400, 0);
        unlink_at(out, OsStr::new("b")).unwrap();
        assert!(!dst.join("b").exists());
        let missing = stat_at(pair.src.as_fd(), OsStr::new("x")).unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
        let nul = OsStr::from_bytes(b"a\0b");
        assert_eq!(
            stat_at(pair.src.as_fd(), nul).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
    }
}
