//! What a destination path names, resolved the way the kernel resolves it
//! for this user, never by reading links in user space.
//!
//! A symbolic link at the destination is followed by opening it with
//! `O_PATH`: the kernel applies `fs.protected_symlinks` (a link planted by
//! another user in a sticky world-writable directory is refused with EACCES,
//! as it would be for `cp`), follows "magic" links such as `/dev/stdout` →
//! `/proc/self/fd/1` → `pipe:[…]`, and says ENOENT for a dangling link, which
//! is refused as cp refuses it. Where the link leads to a regular file, the
//! file's real path (the kernel's own, read back from `/proc/self/fd`) is the
//! one replaced. Where the destination is one of this process's own standard
//! descriptors (`/dev/stdout` behind a shell's `>` or `>>`, a tty, a pipe),
//! that descriptor itself is written, so `>>` keeps appending and a pipe gets
//! the bytes, instead of a rename replacing the file behind the shell's back.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What writing to a destination path means.
#[derive(Debug)]
pub(crate) enum Destination {
    /// Nothing is there: a new file called `target`. A missing directory
    /// surfaces when a file is made in it.
    Absent { target: PathBuf },
    /// A regular file at `target`: the path itself, or the file that
    /// symbolic links at the path lead to.
    File { target: PathBuf, meta: Metadata },
    /// A directory, which the caller names a file inside of.
    Directory,
    /// Something a rename cannot replace (a device, a FIFO, a socket), or
    /// one of this process's standard descriptors: written directly.
    /// `own` is a duplicate of the standard descriptor it is, if it is one.
    Direct {
        target: PathBuf,
        meta: Metadata,
        own: Option<File>,
    },
}

/// Why a destination cannot be resolved.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// A symbolic link whose target does not exist: cp refuses to create
    /// a file through it, and so does ringxfer.
    Dangling,
    /// The OS error of looking at the path, or of following its link.
    Io(io::Error),
}

/// Resolves `dst` as described in the module documentation.
pub(crate) fn resolve(dst: &Path) -> Result<Destination, ResolveError> {
    let meta = match fs::symlink_metadata(dst) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Destination::Absent {
                target: dst.to_path_buf(),
            })
        }
        Err(e) => return Err(ResolveError::Io(e)),
    };
    if !meta.file_type().is_symlink() {
        return Ok(classify(dst.to_path_buf(), meta));
    }
    let path = open_path(dst).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => ResolveError::Dangling,
        _ => ResolveError::Io(e),
    })?;
    let file = File::from(path);
    let meta = file.metadata().map_err(ResolveError::Io)?;
    let own = own_standard_descriptor(&meta);
    if own.is_some() || meta.nlink() == 0 {
        // Ours (or unlinked, so it has no name to replace): written through
        // the descriptor, whatever it is.
        let own = match own {
            Some(fd) => Some(duplicate(fd).map_err(ResolveError::Io)?),
            None => None,
        };
        return Ok(Destination::Direct {
            target: dst.to_path_buf(),
            meta,
            own,
        });
    }
    let target = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
        .filter(|t| t.is_absolute() && t.file_name().is_some())
        .unwrap_or_else(|| dst.to_path_buf());
    Ok(classify(target, meta))
}

fn classify(target: PathBuf, meta: Metadata) -> Destination {
    if meta.is_dir() {
        Destination::Directory
    } else if meta.is_file() {
        Destination::File { target, meta }
    } else {
        Destination::Direct {
            target,
            meta,
            own: None,
        }
    }
}

/// `dst` opened with O_PATH, following links as open(2) does.
fn open_path(dst: &Path) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(dst.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    // SAFETY: `c` is a NUL-terminated string alive for the call; O_PATH
    // opens no file for I/O, so it neither blocks on a FIFO nor has side
    // effects on a device; the result is checked before use.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The standard descriptor (stdout, stderr, stdin) that is the same open
/// object as `meta`, if one is.
fn own_standard_descriptor(meta: &Metadata) -> Option<BorrowedFd<'static>> {
    [1, 2, 0].into_iter().find_map(|fd| {
        // SAFETY: 0, 1 and 2 are this process's standard descriptors, open
        // for its whole life (the runtime reopens closed ones on /dev/null);
        // the borrow is only used while they are.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let theirs = File::from(fd.try_clone_to_owned().ok()?).metadata().ok()?;
        (theirs.dev() == meta.dev() && theirs.ino() == meta.ino() && theirs.rdev() == meta.rdev())
            .then_some(fd)
    })
}

fn duplicate(fd: BorrowedFd<'_>) -> io::Result<File> {
    fd.as_fd().try_clone_to_owned().map(File::from)
}
