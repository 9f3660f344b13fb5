//! What a tree copy recreates rather than copies: symbolic links, and with
//! -a the special files (FIFOs, sockets, and as root device nodes), each
//! made under a temporary name and renamed over what is at the destination.

use std::ffi::CString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::CliError;
use crate::staging::link_temp;
use crate::xattrs::Xattrs;

/// Recreates the link `src` at `dst` (replacing a file or link there
/// atomically), with --preserve also its owner and times.
pub fn copy_symlink(src: &Path, dst: &Path, preserve: bool) -> Result<(), CliError> {
    let target = fs::read_link(src).map_err(|e| CliError::path("cannot read link", src, &e))?;
    let create_err = |e: &io::Error| CliError::path("cannot create symbolic link", dst, e);
    match std::os::unix::fs::symlink(&target, dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let temp = link_temp(dst);
            let _ = fs::remove_file(&temp);
            std::os::unix::fs::symlink(&target, &temp).map_err(|e| create_err(&e))?;
            if let Err(e) = fs::rename(&temp, dst) {
                let _ = fs::remove_file(&temp);
                return Err(create_err(&e));
            }
        }
        Err(e) => return Err(create_err(&e)),
    }
    if preserve {
        let meta = fs::symlink_metadata(src).map_err(|e| CliError::path("cannot stat", src, &e))?;
        link_xattrs(src).apply_to_link(dst, dst);
        preserve_link(dst, &meta)
            .map_err(|e| CliError::path("cannot set attributes of", dst, &e))?;
    }
    Ok(())
}

/// The extended attributes of the link or special file `src` itself
/// (cp -a keeps them too); none, said on stderr, where they cannot be read.
fn link_xattrs(src: &Path) -> Xattrs {
    Xattrs::read_link(src).unwrap_or_else(|e| {
        crate::report::note(&format!(
            "cannot read the extended attributes of '{}': {e}",
            src.display()
        ));
        Xattrs::default()
    })
}

/// Owner and times of a link itself (lchown, utimensat without following).
fn preserve_link(path: &Path, meta: &Metadata) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // Owner where permitted (root); a refusal keeps ours, as cp -p does.
    // SAFETY: a NUL-terminated path that outlives the call.
    let _ = unsafe { libc::lchown(c_path.as_ptr(), meta.uid(), meta.gid()) };
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: the path as above and an array of two timespecs, as utimensat(2) reads.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Recreates a special file `src` (its `meta`) at `dst` as cp -a does:
/// mknod of the same type, mode and device number, then its extended
/// attributes, owner (where permitted) and times. A device node needs root (CAP_MKNOD): elsewhere
/// the refusal is the item's error.
pub fn copy_special(src: &Path, dst: &Path, meta: &Metadata) -> Result<(), CliError> {
    let create_err = |e: &io::Error| CliError::path("cannot create special file", dst, e);
    let temp = link_temp(dst);
    let c_temp = CString::new(temp.as_os_str().as_bytes())
        .map_err(|_| create_err(&io::Error::from_raw_os_error(libc::EINVAL)))?;
    let _ = fs::remove_file(&temp);
    // SAFETY: a NUL-terminated path that outlives the call; mode and
    // device number are plain values from the source's stat.
    let rc = unsafe { libc::mknod(c_temp.as_ptr(), meta.mode(), meta.rdev()) };
    if rc != 0 {
        return Err(create_err(&io::Error::last_os_error()));
    }
    link_xattrs(src).apply_to_link(&temp, dst);
    let placed = preserve_link(&temp, meta)
        .and_then(|()| fs::set_permissions(&temp, fs::Permissions::from_mode(meta.mode() & 0o7777)))
        .and_then(|()| fs::rename(&temp, dst));
    placed.map_err(|e| {
        let _ = fs::remove_file(&temp);
        CliError::path("cannot create special file", dst, &e)
    })?;
    Ok(())
}
