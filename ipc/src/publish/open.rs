//! Opening what a job's bytes go into, and naming an unnamed file.

use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::names::{temp_name, MAX_TEMP_TRIES};

/// refuses O_DIRECT (EINVAL); the daemon then says why direct cannot run.
pub(super) fn open_maybe_direct(
    options: &OpenOptions,
    flags: i32,
    path: &Path,
    direct: bool,
) -> io::Result<File> {
    if direct {
        match options
            .clone()
            .custom_flags(flags | libc::O_DIRECT)
            .open(path)
        {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => return other,
        }
    }
    options.clone().custom_flags(flags).open(path)
}

/// An O_TMPFILE in `dir`, or `None` where the kernel or file system has no
/// O_TMPFILE (EOPNOTSUPP; EISDIR from kernels older than 3.11, which read the
/// flag as O_DIRECTORY; EINVAL from some file systems).
pub(super) fn open_unnamed(dir: &Path, mode: u32, direct: bool) -> io::Result<Option<File>> {
    // Without O_EXCL, so that the file may be linked into the directory later.
    let mut options = OpenOptions::new();
    options.read(true).write(true).mode(mode);
    match open_maybe_direct(&options, libc::O_TMPFILE, dir, direct) {
        Ok(file) => Ok(Some(file)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A new hidden file in `dir` named after `name`, and its path.
pub(super) fn open_named_temp(
    dir: &Path,
    name: &OsStr,
    mode: u32,
    direct: bool,
    owner_pid: u32,
) -> io::Result<(File, PathBuf)> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true).mode(mode);
    let mut tries = 0;
    loop {
        let temp = dir.join(temp_name(name, owner_pid));
        match open_maybe_direct(&options, 0, &temp, direct) {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < MAX_TEMP_TRIES => {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The destination itself, opened read-write (write-only where it may not be
/// read), and whether this created it. Never truncated here (no O_TRUNC
/// either): the job may yet be refused, and a refused job must leave the
/// destination byte for byte as it was. The daemon truncates it to the
/// job's end once the job is done (`SubmitRequest::truncate`).
pub(super) fn open_in_place(
    path: &Path,
    mode: u32,
    direct: bool,
    existing: Option<&Metadata>,
) -> io::Result<(File, bool)> {
    if existing.is_none() {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true).mode(mode);
        match open_maybe_direct(&options, 0, path, direct) {
            Ok(file) => return Ok((file, true)),
            // It appeared since it was looked at: open it as it is.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    let file = match open_maybe_direct(&options, 0, path, direct) {
        // A destination that may be written but not read (mode 0200) takes a
        // copy without verification, as it did before read-back existed.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            options.read(false);
            open_maybe_direct(&options, 0, path, direct)?
        }
        other => other?,
    };
    Ok((file, false))
}

pub(super) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))
}

/// Links the file open at `file` (an O_TMPFILE) to the name `to`.
pub(super) fn link_fd(file: &File, to: &Path) -> io::Result<()> {
    let to_c = cstring(to)?;
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let from = cstring(Path::new(&proc_path))?;
    // SAFETY: `from` and `to_c` are NUL-terminated strings that live until
    // the call returns; AT_FDCWD needs no descriptor; linkat reads only them.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOENT) || Path::new("/proc/self/fd").exists() {
        return Err(err);
    }
    // No /proc (a bare chroot or container): AT_EMPTY_PATH links the
    // descriptor itself, which the kernel allows with CAP_DAC_READ_SEARCH.
    // SAFETY: `file` is open for the duration of the call, the empty string
    // is NUL-terminated and static, `to_c` lives until the call returns.
    let rc = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
