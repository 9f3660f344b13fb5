//! Stand-in for `ringxfer_ipc::publish` (branch `publish`) until it lands on
//! main: the same types and signatures, so switching is one `use` line.
//!
//! A destination is written as an unnamed O_TMPFILE in its directory (a
//! hidden named file where the file system has no O_TMPFILE) and linked or
//! renamed to its name only once complete, so no reader ever sees a partial
//! file under the name, and a failed copy leaves the old file (or nothing).

use std::ffi::CString;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How a destination is staged and published.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Write the destination itself (no temporary, no atomic replace).
    pub in_place: bool,
    /// Apply the source's mode, owner (where permitted) and times on publish.
    pub preserve: bool,
    /// fsync the file, and the directory after the name is in place.
    pub fsync: bool,
    /// Open with O_DIRECT (where the file system allows it).
    pub direct: bool,
    /// Permission bits for a new file [default: the source's, else 0666], less the umask.
    pub mode: Option<u32>,
}

/// Why staging or publishing failed: the operation, the path, the OS error.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create '{}': {source}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot publish '{}': {source}", .path.display())]
    Link {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot sync '{}': {source}", .path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot preserve attributes of '{}': {source}", .path.display())]
    Preserve {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

enum Stage {
    /// O_TMPFILE: no name until linked.
    Unnamed,
    /// A hidden file beside the destination, renamed over it on publish.
    Named(PathBuf),
    /// The destination itself.
    InPlace,
}

/// A destination being written; see the module comment.
pub struct StagedFile {
    file: File,
    path: PathBuf,
    stage: Stage,
    opts: PublishOptions,
    done: bool,
}

/// Distinguishes this process's temporary names from each other.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A hidden name beside `dst`, unique within this process and across
/// processes (the pid).
fn temp_name(dst: &Path) -> PathBuf {
    let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let base = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(dst).join(format!(".{base}.ringxfer-{}-{n}", std::process::id()))
}

fn open_maybe_direct(options: &OpenOptions, path: &Path, direct: bool) -> io::Result<File> {
    if direct {
        match options.clone().custom_flags(libc::O_DIRECT).open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => return other,
        }
    }
    options.open(path)
}

impl StagedFile {
    /// Opens where `dst`'s bytes will be written (see [`PublishOptions`]).
    pub fn create(
        dst: &Path,
        source: Option<&Metadata>,
        opts: &PublishOptions,
    ) -> Result<StagedFile, PublishError> {
        let mode = opts
            .mode
            .or(source.map(|m| m.permissions().mode() & 0o7777))
            .unwrap_or(0o666);
        let create_err = |source| PublishError::Create {
            path: dst.to_path_buf(),
            source,
        };
        let staged = |file, stage| StagedFile {
            file,
            path: dst.to_path_buf(),
            stage,
            opts: opts.clone(),
            done: false,
        };
        if opts.in_place {
            // Read-write so that verification can read the bytes back.
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).mode(mode);
            let file = match open_maybe_direct(&options, dst, opts.direct) {
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                    options.read(false);
                    open_maybe_direct(&options, dst, opts.direct)
                }
                other => other,
            }
            .map_err(create_err)?;
            let meta = file.metadata().map_err(create_err)?;
            if source.is_some_and(|s| (s.dev(), s.ino()) == (meta.dev(), meta.ino())) {
                return Err(create_err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is the source itself",
                )));
            }
            if meta.is_file() && meta.len() > 0 {
                file.set_len(0).map_err(create_err)?;
            }
            return Ok(staged(file, Stage::InPlace));
        }
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .mode(mode)
            .custom_flags(libc::O_TMPFILE);
        match open_maybe_direct(&options, parent_of(dst), opts.direct) {
            Ok(file) => return Ok(staged(file, Stage::Unnamed)),
            // The file system has no O_TMPFILE: fall back to a named temporary.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {}
            Err(e) => return Err(create_err(e)),
        }
        let temp = temp_name(dst);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true).mode(mode);
        let file = open_maybe_direct(&options, &temp, opts.direct).map_err(create_err)?;
        Ok(staged(file, Stage::Named(temp)))
    }

    /// Where the engine writes.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The final name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the finished file its name, atomically replacing what was there.
    pub fn publish(mut self, source: Option<&Metadata>) -> Result<(), PublishError> {
        self.done = true;
        let path = self.path.clone();
        if self.opts.preserve {
            if let Some(meta) = source {
                preserve_metadata(&self.file, meta).map_err(|source| PublishError::Preserve {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        let sync_err = |source| PublishError::Sync {
            path: path.clone(),
            source,
        };
        if self.opts.fsync {
            self.file.sync_all().map_err(sync_err)?;
        }
        let link_err = |source| PublishError::Link {
            path: path.clone(),
            source,
        };
        match std::mem::replace(&mut self.stage, Stage::InPlace) {
            Stage::InPlace => {}
            Stage::Named(temp) => {
                if let Err(e) = std::fs::rename(&temp, &path) {
                    let _ = std::fs::remove_file(&temp);
                    return Err(link_err(e));
                }
            }
            Stage::Unnamed => match link_unnamed(&self.file, &path) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    // Replacing: link under a hidden name, then rename over,
                    // which is atomic where linkat is not.
                    let temp = temp_name(&path);
                    link_unnamed(&self.file, &temp).map_err(link_err)?;
                    if let Err(e) = std::fs::rename(&temp, &path) {
                        let _ = std::fs::remove_file(&temp);
                        return Err(link_err(e));
                    }
                }
                Err(e) => return Err(link_err(e)),
            },
        }
        if self.opts.fsync {
            File::open(parent_of(&path))
                .and_then(|dir| dir.sync_all())
                .map_err(sync_err)?;
        }
        Ok(())
    }

    /// Drops the staged file; nothing appears under the name.
    pub fn abandon(mut self) {
        self.discard();
    }

    fn discard(&mut self) {
        self.done = true;
        if let Stage::Named(temp) = &self.stage {
            let _ = std::fs::remove_file(temp);
        }
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.done {
            self.discard();
        }
    }
}

/// linkat(2) of an O_TMPFILE to `to`: by descriptor (AT_EMPTY_PATH, which
/// needs CAP_DAC_READ_SEARCH on older kernels), else through /proc/self/fd.
fn link_unnamed(file: &File, to: &Path) -> io::Result<()> {
    let to = cstring(to)?;
    let fd = file.as_raw_fd();
    // SAFETY: both strings are NUL-terminated and outlive the call; fd is open.
    let rc = unsafe {
        libc::linkat(
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::ENOENT | libc::EPERM)) {
        return Err(err);
    }
    let proc_path = cstring(Path::new(&format!("/proc/self/fd/{fd}")))?;
    // SAFETY: as above.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives `file` the mode, owner and access/modification times of `source`.
/// The owner only where permitted: a failed chown (EPERM for non-root) keeps
/// the caller's, as `cp -p` does, and the set-id bits are then dropped.
pub fn preserve_metadata(file: &File, source: &Metadata) -> io::Result<()> {
    let mut mode = source.mode() & 0o7777;
    if file
        .metadata()
        .map(|m| (m.uid(), m.gid()) != (source.uid(), source.gid()))?
    {
        // SAFETY: fchown on an open descriptor we own.
        let rc = unsafe { libc::fchown(file.as_raw_fd(), source.uid(), source.gid()) };
        if rc != 0 {
            mode &= !0o6000;
        }
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    let times = [
        libc::timespec {
            tv_sec: source.atime(),
            tv_nsec: source.atime_nsec(),
        },
        libc::timespec {
            tv_sec: source.mtime(),
            tv_nsec: source.mtime_nsec(),
        },
    ];
    // SAFETY: `times` is an array of two timespecs, as futimens(2) reads.
    let rc = unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
