//! Why staging or publishing failed, naming the path and the step.

use std::io;
use std::path::{Path, PathBuf};

#[cfg(doc)]
use super::StagedFile;

/// Why staging or publishing a destination failed.
///
/// ```
/// use ringxfer_ipc::publish::{PublishError, PublishOptions, StagedFile};
/// use std::path::Path;
///
/// let err = StagedFile::create(Path::new("/nonexistent/dir/out.bin"), None, &PublishOptions::default())
///     .unwrap_err();
/// assert_eq!(err.path(), Path::new("/nonexistent/dir"));
/// assert_eq!(err.io_error().map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));
/// assert!(err.to_string().starts_with("opening a temporary file in /nonexistent/dir"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The destination is a directory (or a path that cannot name a file,
    /// like `/`); the caller decides what name to give the file inside it.
    #[error("{} is a directory", .path.display())]
    IsDirectory {
        /// The destination.
        path: PathBuf,
    },
    /// The destination is the source itself, which staging would not
    /// destroy but publishing would replace with a copy of itself.
    #[error("{} is the same file as {}", .path.display(), same_file_source(.source_path.as_deref(), *.dev, *.ino))]
    SameFile {
        /// The destination.
        path: PathBuf,
        /// The source's path, when the caller knows it (see
        /// [`PublishError::with_source_path`]).
        source_path: Option<PathBuf>,
        /// The device both live on.
        dev: u64,
        /// Their inode.
        ino: u64,
    },
    /// A system call on one path failed; `op` says which step it was
    /// ("opening a temporary file in", "setting the mode of", "syncing the directory", …).
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// The step that failed.
        op: &'static str,
        /// The path it was about.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Giving the staged file a name with link(2) failed.
    #[error("linking the staged file for {} to {}: {source}", .dest.display(), .to.display())]
    Link {
        /// The final destination.
        dest: PathBuf,
        /// The name being made (the destination, or a hidden temporary name).
        to: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The destination is a symbolic link to nothing: as cp does, ringxfer
    /// does not create a file through it.
    #[error("not writing through dangling symlink {}", .path.display())]
    DanglingSymlink {
        /// The destination (the link).
        path: PathBuf,
    },
    /// Renaming the staged file over the destination failed.
    #[error("renaming {} to {}: {source}", .from.display(), .to.display())]
    Rename {
        /// The temporary name.
        from: PathBuf,
        /// The destination.
        to: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn same_file_source(path: Option<&Path>, dev: u64, ino: u64) -> String {
    match path {
        Some(path) => path.display().to_string(),
        None => format!(
            "the source (device {}:{}, inode {ino})",
            libc::major(dev),
            libc::minor(dev)
        ),
    }
}

impl PublishError {
    /// The path the error is about: the destination, or the directory or
    /// temporary name a step failed on.
    ///
    /// ```
    /// use ringxfer_ipc::publish::PublishError;
    /// use std::path::{Path, PathBuf};
    /// let err = PublishError::IsDirectory { path: PathBuf::from("/tmp") };
    /// assert_eq!(err.path(), Path::new("/tmp"));
    /// ```
    pub fn path(&self) -> &Path {
        match self {
            PublishError::IsDirectory { path }
            | PublishError::DanglingSymlink { path }
            | PublishError::SameFile { path, .. }
            | PublishError::Io { path, .. } => path,
            PublishError::Link { to, .. } | PublishError::Rename { to, .. } => to,
        }
    }

    /// The OS error behind the failure, if a system call failed.
    ///
    /// ```
    /// use ringxfer_ipc::publish::PublishError;
    /// let err = PublishError::IsDirectory { path: "/tmp".into() };
    /// assert!(err.io_error().is_none());
    /// ```
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            PublishError::IsDirectory { .. }
            | PublishError::DanglingSymlink { .. }
            | PublishError::SameFile { .. } => None,
            PublishError::Io { source, .. }
            | PublishError::Link { source, .. }
            | PublishError::Rename { source, .. } => Some(source),
        }
    }

    /// Names the source in a [`PublishError::SameFile`] error (which
    /// [`StagedFile::create`] only knows by its metadata); other errors are
    /// returned unchanged.
    ///
    /// ```
    /// use ringxfer_ipc::publish::PublishError;
    /// let err = PublishError::SameFile { path: "b".into(), source_path: None, dev: 1, ino: 2 };
    /// assert_eq!(err.with_source_path("a".as_ref()).to_string(), "b is the same file as a");
    /// ```
    pub fn with_source_path(self, source: &Path) -> PublishError {
        match self {
            PublishError::SameFile { path, dev, ino, .. } => PublishError::SameFile {
                path,
                source_path: Some(source.to_path_buf()),
                dev,
                ino,
            },
            other => other,
        }
    }
}

pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> PublishError + 'a {
    move |source| PublishError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
