//! Atomic publish: a destination is written under a temporary identity and
//! takes its final name only once the job completed.
//!
//! A [`StagedFile`] is where a job's bytes go. By default that is an unnamed
//! file (`O_TMPFILE`) in the destination's directory, or, where the file
//! system cannot make one, a hidden temporary name next to the destination.
//! [`StagedFile::publish`] then links or renames it to the final name in one
//! step, so a reader of the destination's path sees the old file or the new
//! one, never a half-written mix, and a crash, a kill or a failed job leaves
//! nothing under that name. [`PublishOptions::in_place`] writes straight into
//! the destination instead.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::{self, File, FileTimes, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{fchown, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::destination::{self, Destination, ResolveError};

/// Mode of a new destination when [`PublishOptions::mode`] is `None`, before the umask.
const DEFAULT_MODE: u32 = 0o666;

/// How many taken temporary names to step over before giving up: each try
/// uses a fresh counter value, so collisions mean leftovers of a process that
/// had our pid, and a handful is already unlikely.
const MAX_TEMP_TRIES: usize = 64;

/// Longest file name the kernel takes (NAME_MAX on every Linux file system we target).
const NAME_MAX: usize = 255;

/// Makes temporary names unique within this process; the pid makes them unique
/// between processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How a destination is staged and published.
///
/// ```
/// use ringxfer_ipc::publish::PublishOptions;
/// let opts = PublishOptions { preserve: true, fsync: true, ..Default::default() };
/// assert!(!opts.in_place);
/// assert_eq!(opts.mode, None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Write straight into the destination instead of staging. It is
    /// created if missing but never truncated here: a job that the daemon
    /// refuses must leave it as it was, so the daemon truncates it to the
    /// job's end once the job is done ([`StagedFile::wants_truncate`]).
    pub in_place: bool,
    /// After the job: copy mode, owner (where permitted: chown errors EPERM are ignored, like cp -p) and atime/mtime from the source's metadata.
    pub preserve: bool,
    /// Make the publish durable: fsync the staged file before linking it (cheap if the daemon already fdatasync'ed it) and fsync the directory after the rename/link.
    pub fsync: bool,
    /// Open with O_DIRECT (falls back to a plain open where the file system refuses it with EINVAL).
    pub direct: bool,
    /// Permission bits for a newly created destination (the umask applies); None = 0o666.
    pub mode: Option<u32>,
}

/// Where a staged file's bytes live until it is published.
#[derive(Debug)]
enum Identity {
    /// An `O_TMPFILE`: no name at all until it is linked.
    Unnamed,
    /// A hidden name in the destination's directory, renamed over the destination.
    Named(PathBuf),
    /// The destination itself: nothing to publish.
    InPlace,
    /// A file created under its own name in a directory nobody else sees
    /// yet: publishing only applies attributes; abandoning unlinks it.
    New,
}

/// A destination file being written under a temporary identity until `publish`.
///
/// Dropping it without publishing is [`StagedFile::abandon`].
///
/// ```
/// use ringxfer_ipc::publish::{PublishOptions, StagedFile};
/// use std::io::Write;
///
/// let dir = std::env::temp_dir().join(format!("ringxfer-doc-staged-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let dst = dir.join("report.txt");
/// let staged = StagedFile::create(&dst, None, &PublishOptions::default())?;
/// staged.file().write_all(b"all or nothing")?;
/// assert!(!dst.exists(), "nothing under the final name before publish");
/// staged.publish(None)?;
/// assert_eq!(std::fs::read(&dst)?, b"all or nothing");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct StagedFile {
    file: File,
    /// The destination as the caller named it.
    path: PathBuf,
    /// The destination with symbolic links in its last component followed:
    /// publishing replaces the file a link points at, not the link.
    target: PathBuf,
    /// The directory the target is in, where temporary names are made.
    dir: PathBuf,
    identity: Identity,
    /// A name an unnamed file was linked to while replacing an existing
    /// destination, until the rename over it succeeds.
    linked_temp: Option<PathBuf>,
    fsync: bool,
    preserve: bool,
    /// Set once published, so that `Drop` leaves the result alone.
    published: bool,
    /// An in-place destination this created (it did not exist): removed
    /// again if the job is abandoned, so a refused job leaves no empty file.
    created_here: bool,
    /// The process whose pid the hidden names carry: the one that will
    /// publish or remove them (this one, or the daemon for detached jobs),
    /// so a later run can tell leftovers of a dead one ([`remove_stale`]).
    owner_pid: u32,
}

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

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PublishError + 'a {
    move |source| PublishError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl StagedFile {
    /// Opens where the bytes go for final path `dst`: an O_TMPFILE in dst's directory (O_RDWR, so the daemon can read it back for verification), falling back (EOPNOTSUPP/EISDIR/EINVAL from O_TMPFILE) to a hidden named temp `.<name>.ringxfer-<pid>-<counter>` created O_EXCL|O_RDWR in the same directory. With in_place: dst itself, O_RDWR|O_CREAT, truncated only if non-empty (do NOT O_TRUNC an empty file: ext4 then starts writeback on close).
    /// Errors if dst's directory does not exist, if dst is a directory, or if dst is the same file (dev, ino) as `source` when given (`same file` error naming both).
    ///
    /// A symbolic link at `dst` is followed as the kernel follows it for
    /// this user (so `fs.protected_symlinks` applies): the file it leads to
    /// is the one replaced, and the link stays; a dangling link is refused
    /// ([`PublishError::DanglingSymlink`]), as cp refuses it. A destination
    /// that exists and is not a regular file (a device, a FIFO) cannot be
    /// replaced by a rename and is written in place, as if `in_place` were
    /// set; one that is this process's own standard output or error (say
    /// `/dev/stdout` behind a shell's `>>`) is written through that very
    /// descriptor, which keeps its O_APPEND. An in-place destination that
    /// may be written but not read is opened write-only.
    ///
    /// # Errors
    ///
    /// [`PublishError::IsDirectory`], [`PublishError::SameFile`], or
    /// [`PublishError::Io`] naming the step and path that failed (e.g.
    /// `NotFound` from "opening a temporary file in" a missing directory).
    ///
    /// ```
    /// use ringxfer_ipc::publish::{PublishError, PublishOptions, StagedFile};
    ///
    /// let dir = std::env::temp_dir();
    /// let err = StagedFile::create(&dir, None, &PublishOptions::default()).unwrap_err();
    /// assert!(matches!(err, PublishError::IsDirectory { .. }));
    ///
    /// let src = std::env::current_exe()?;
    /// let meta = std::fs::metadata(&src)?;
    /// let err = StagedFile::create(&src, Some(&meta), &PublishOptions::default()).unwrap_err();
    /// assert!(matches!(err, PublishError::SameFile { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create(
        dst: &Path,
        source: Option<&Metadata>,
        opts: &PublishOptions,
    ) -> Result<StagedFile, PublishError> {
        StagedFile::create_as(dst, source, opts, false, std::process::id())
    }

    /// As [`StagedFile::create`], for a job the daemon with pid `daemon_pid`
    /// will publish ([`StagedFile::for_daemon`]): a hidden name made where
    /// the file system has no O_TMPFILE carries the daemon's pid, so that
    /// [`remove_stale`] removes it only once that daemon is gone.
    ///
    /// # Errors
    ///
    /// As [`StagedFile::create`].
    pub fn create_for_daemon(
        dst: &Path,
        source: Option<&Metadata>,
        opts: &PublishOptions,
        daemon_pid: u32,
    ) -> Result<StagedFile, PublishError> {
        StagedFile::create_as(dst, source, opts, false, daemon_pid)
    }

    /// As [`StagedFile::create`]; `named_only` skips O_TMPFILE, so tests can
    /// reach the fallback on a file system that has O_TMPFILE.
    fn create_as(
        dst: &Path,
        source: Option<&Metadata>,
        opts: &PublishOptions,
        named_only: bool,
        owner_pid: u32,
    ) -> Result<StagedFile, PublishError> {
        let Some(link_name) = dst.file_name() else {
            return Err(PublishError::IsDirectory {
                path: dst.to_path_buf(),
            });
        };
        let (target, existing, own) = match destination::resolve(dst) {
            Ok(Destination::Absent { target }) => (target, None, None),
            Ok(Destination::File { target, meta }) => (target, Some(meta), None),
            Ok(Destination::Direct { target, meta, own }) => (target, Some(meta), own),
            Ok(Destination::Directory) => {
                return Err(PublishError::IsDirectory {
                    path: dst.to_path_buf(),
                })
            }
            Err(ResolveError::Dangling) => {
                return Err(PublishError::DanglingSymlink {
                    path: dst.to_path_buf(),
                })
            }
            Err(ResolveError::Io(e)) => return Err(io_err("inspecting", dst)(e)),
        };
        // Temporary names are made next to the file being replaced, after it.
        let name = target.file_name().unwrap_or(link_name);
        let dir = match target.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let (Some(existing), Some(source)) = (&existing, source) {
            if (existing.dev(), existing.ino()) == (source.dev(), source.ino()) {
                return Err(PublishError::SameFile {
                    path: dst.to_path_buf(),
                    source_path: None,
                    dev: source.dev(),
                    ino: source.ino(),
                });
            }
        }
        let mode = opts.mode.unwrap_or(DEFAULT_MODE) & 0o7777;
        let special = existing.as_ref().is_some_and(|m| !m.is_file()) || own.is_some();

        let mut created_here = false;
        let (file, identity) = if let Some(own) = own {
            (own, Identity::InPlace)
        } else if opts.in_place || special {
            let (file, created) = open_in_place(&target, mode, opts.direct, existing.as_ref())
                .map_err(io_err("opening", dst))?;
            created_here = created;
            (file, Identity::InPlace)
        } else {
            let unnamed = if named_only {
                None
            } else {
                open_unnamed(&dir, mode, opts.direct)
                    .map_err(io_err("opening a temporary file in", &dir))?
            };
            match unnamed {
                Some(file) => (file, Identity::Unnamed),
                None => {
                    let (file, temp) = open_named_temp(&dir, name, mode, opts.direct, owner_pid)
                        .map_err(io_err("creating a temporary file in", &dir))?;
                    (file, Identity::Named(temp))
                }
            }
        };
        Ok(StagedFile {
            file,
            path: dst.to_path_buf(),
            target,
            dir,
            identity,
            linked_temp: None,
            fsync: opts.fsync,
            preserve: opts.preserve,
            published: false,
            created_here,
            owner_pid,
        })
    }

    /// Creates `dst` itself (O_CREAT|O_EXCL, O_RDWR so the daemon can read it
    /// back for verification), for a destination inside a directory that is
    /// itself staged under a hidden name (a tree copy into a new directory,
    /// renamed into place once everything in it is done). No temporary name,
    /// no link and no rename per file: the directory's one rename publishes
    /// them all. Abandoning (or dropping) the result unlinks `dst`.
    ///
    /// `opts.in_place` is ignored: the file is new either way.
    ///
    /// # Errors
    ///
    /// [`PublishError::Io`] from creating the file, `AlreadyExists` when
    /// something is already called `dst`.
    ///
    /// ```
    /// use ringxfer_ipc::publish::{PublishOptions, StagedFile};
    /// use std::io::Write;
    ///
    /// let dir = std::env::temp_dir().join(format!("ringxfer-doc-new-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let dst = dir.join("part-0001");
    /// let staged = StagedFile::create_new(&dst, &PublishOptions::default())?;
    /// staged.file().write_all(b"half")?;
    /// staged.abandon();
    /// assert!(!dst.exists(), "an abandoned new file is removed");
    /// let staged = StagedFile::create_new(&dst, &PublishOptions::default())?;
    /// staged.file().write_all(b"whole")?;
    /// staged.publish(None)?;
    /// assert_eq!(std::fs::read(&dst)?, b"whole");
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_new(dst: &Path, opts: &PublishOptions) -> Result<StagedFile, PublishError> {
        let mode = opts.mode.unwrap_or(DEFAULT_MODE) & 0o7777;
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true).mode(mode);
        let file =
            open_maybe_direct(&options, 0, dst, opts.direct).map_err(io_err("creating", dst))?;
        let dir = match dst.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(StagedFile {
            file,
            path: dst.to_path_buf(),
            target: dst.to_path_buf(),
            dir,
            identity: Identity::New,
            linked_temp: None,
            fsync: opts.fsync,
            preserve: opts.preserve,
            published: false,
            created_here: false,
            owner_pid: std::process::id(),
        })
    }

    /// The open file to hand to the daemon as the destination.
    ///
    /// ```no_run
    /// use ringxfer_ipc::publish::{PublishOptions, StagedFile};
    /// use std::path::Path;
    ///
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let src = std::fs::File::open("in.bin")?;
    /// let staged = StagedFile::create(Path::new("out.bin"), None, &PublishOptions::default())?;
    /// match client.submit(&src, staged.file(), &Default::default())?.wait() {
    ///     Ok(_) => staged.publish(None)?,
    ///     Err(_) => staged.abandon(),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The final path.
    ///
    /// ```
    /// use ringxfer_ipc::publish::{PublishOptions, StagedFile};
    /// let dst = std::env::temp_dir().join(format!("ringxfer-doc-path-{}", std::process::id()));
    /// let staged = StagedFile::create(&dst, None, &PublishOptions::default())?;
    /// assert_eq!(staged.path(), dst);
    /// staged.abandon();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the bytes go straight into the destination (asked for with
    /// [`PublishOptions::in_place`], or because the destination is a device
    /// or FIFO, which cannot be replaced by a rename).
    ///
    /// ```
    /// use ringxfer_ipc::publish::{PublishOptions, StagedFile};
    /// let staged = StagedFile::create("/dev/null".as_ref(), None, &PublishOptions::default())?;
    /// assert!(staged.is_in_place());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_in_place(&self) -> bool {
        matches!(self.identity, Identity::InPlace)
    }

    /// Call after the job completed: applies preserve (from `source`), fsyncs if asked, then gives the data the final name atomically: for O_TMPFILE, linkat("/proc/self/fd/N", AT_FDCWD, dst, AT_SYMLINK_FOLLOW) when dst does not exist, else link to a hidden temp name and renameat over dst; for a named temp, rename over dst. Then fsync the directory if asked. An existing destination is replaced atomically (readers see the old or the new file, never a mix).
    ///
    /// Without `preserve` (or without a `source`), a file that replaces an
    /// existing destination takes that destination's permission bits and,
    /// where permitted, its owner, as cp(1) keeps them when it overwrites.
    ///
    /// # Errors
    ///
    /// [`PublishError`] naming the step that failed; nothing has then
    /// appeared under the destination's name (a temporary name made on the
    /// way is removed), except where the directory sync failed after the
    /// rename.
    ///
    /// ```
    /// use ringxfer_ipc::publish::{PublishOptions, StagedFile};
    /// use std::io::Write;
    ///
    /// let dir = std::env::temp_dir().join(format!("ringxfer-doc-publish-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let dst = dir.join("config.toml");
    /// std::fs::write(&dst, "old = true\n")?;
    /// let staged = StagedFile::create(&dst, None, &PublishOptions { fsync: true, ..Default::default() })?;
    /// staged.file().write_all(b"new = true\n")?;
    /// assert_eq!(std::fs::read_to_string(&dst)?, "old = true\n");
    /// staged.publish(None)?;
    /// assert_eq!(std::fs::read_to_string(&dst)?, "new = true\n");
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish(mut self, source: Option<&Metadata>) -> Result<(), PublishError> {
        self.publish_inner(source)?;
        self.published = true;
        Ok(())
    }

    fn publish_inner(&mut self, source: Option<&Metadata>) -> Result<(), PublishError> {
        let replacing = match &self.identity {
            Identity::InPlace | Identity::New => None,
            Identity::Unnamed | Identity::Named(_) => match fs::symlink_metadata(&self.target) {
                Ok(meta) if meta.is_file() => Some(meta),
                _ => None,
            },
        };
        match (self.preserve, source, &replacing) {
            (true, Some(source), _) => apply_metadata(&self.file, source, 0o7777)
                .map_err(|(op, e)| io_err(op, &self.path)(e))?,
            (_, _, Some(existing)) => apply_metadata_keep_times(&self.file, existing)
                .map_err(|(op, e)| io_err(op, &self.path)(e))?,
            _ => {}
        }
        if self.fsync {
            self.file
                .sync_all()
                .map_err(io_err("syncing the staged file for", &self.path))?;
        }

        match &self.identity {
            Identity::InPlace | Identity::New => {}
            Identity::Named(temp) => {
                fs::rename(temp, &self.target).map_err(|source| PublishError::Rename {
                    from: temp.clone(),
                    to: self.target.clone(),
                    source,
                })?;
            }
            Identity::Unnamed => self.link_unnamed(replacing.is_some())?,
        }

        if self.fsync {
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(io_err("syncing the directory", &self.dir))?;
        }
        Ok(())
    }

    /// Gives an O_TMPFILE its final name: a plain link when the name is
    /// free, else a link to a hidden name and a rename over the destination,
    /// because link(2) never replaces and rename(2) needs a name to move.
    fn link_unnamed(&mut self, replacing: bool) -> Result<(), PublishError> {
        if !replacing {
            match link_fd(&self.file, &self.target) {
                Ok(()) => return Ok(()),
                // The destination appeared since it was looked at: replace it.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(source) => {
                    return Err(PublishError::Link {
                        dest: self.target.clone(),
                        to: self.target.clone(),
                        source,
                    })
                }
            }
        }
        let name = self.target.file_name().unwrap_or(OsStr::new("file"));
        let mut tries = 0;
        let temp = loop {
            let temp = self.dir.join(temp_name(name, self.owner_pid));
            match link_fd(&self.file, &temp) {
                Ok(()) => break temp,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && tries < MAX_TEMP_TRIES => {
                    tries += 1;
                }
                Err(source) => {
                    return Err(PublishError::Link {
                        dest: self.target.clone(),
                        to: temp,
                        source,
                    })
                }
            }
        };
        // Recorded before the rename so that a failure (and Drop) removes it.
        self.linked_temp = Some(temp.clone());
        fs::rename(&temp, &self.target).map_err(|source| PublishError::Rename {
            from: temp,
            to: self.target.clone(),
            source,
        })?;
        self.linked_temp = None;
        Ok(())
    }

    /// Call when the job failed: nothing appears under dst's name (a named temp is unlinked, so is a file made by [`StagedFile::create_new`]; in_place leaves dst as the daemon left it). Drop does the same.
    ///
    /// ```
    /// use ringxfer_ipc::publish::{PublishOptions, StagedFile};
    /// use std::io::Write;
    ///
    /// let dst = std::env::temp_dir().join(format!("ringxfer-doc-abandon-{}", std::process::id()));
    /// let staged = StagedFile::create(&dst, None, &PublishOptions::default())?;
    /// staged.file().write_all(b"half a fi")?;
    /// staged.abandon();
    /// assert!(!dst.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abandon(self) {
        drop(self);
    }

    /// Removes whatever name the staged data got on the way; the data of an
    /// unnamed file goes when its last descriptor closes.
    fn discard(&mut self) {
        // Removal failing (the directory became read-only, say) leaves a
        // hidden temporary name behind; there is no one left to tell, and the
        // destination's own name is untouched either way.
        if let Some(temp) = self.linked_temp.take() {
            let _ = fs::remove_file(temp);
        }
        match &self.identity {
            Identity::Named(temp) => {
                let _ = fs::remove_file(temp);
            }
            Identity::New => {
                let _ = fs::remove_file(&self.path);
            }
            Identity::InPlace if self.created_here => self.remove_if_ours(),
            Identity::Unnamed | Identity::InPlace => {}
        }
    }

    /// Removes an in-place destination this created, if its name still
    /// names the file this wrote (not one someone put there meanwhile).
    fn remove_if_ours(&self) {
        let ours = self.file.metadata().map(|m| (m.dev(), m.ino()));
        let named = fs::symlink_metadata(&self.target).map(|m| (m.dev(), m.ino()));
        if let (Ok(ours), Ok(named)) = (ours, named) {
            if ours == named {
                let _ = fs::remove_file(&self.target);
            }
        }
    }

    /// Whether the daemon should truncate the destination to where the
    /// job's writes end once they are done ([`crate::SubmitRequest::truncate`]):
    /// an in-place regular file, which this left untruncated so that a
    /// refused job changes nothing. A staged file starts empty.
    pub fn wants_truncate(&self) -> bool {
        matches!(self.identity, Identity::InPlace)
            && self.file.metadata().is_ok_and(|m| m.is_file())
    }

    /// What the daemon needs to publish this file itself, for a detached
    /// job that outlives this process: the destination's directory, opened
    /// here (O_RDONLY, so the daemon can also fsync it), and the names.
    /// A file that will replace an existing destination takes that file's
    /// permission bits and, where permitted, owner now, as
    /// [`StagedFile::publish`] would (times are the data's own). `None` for
    /// a destination written in place: there is nothing to publish.
    ///
    /// Call [`StagedFile::hand_over`] once the daemon accepted the job, and
    /// drop the staged file if it refused it.
    ///
    /// # Errors
    ///
    /// [`PublishError::Io`] naming the step: opening the directory, or
    /// giving the file the replaced one's owner and mode.
    pub fn for_daemon(&self) -> Result<Option<(File, crate::PublishTo)>, PublishError> {
        let staged_name = match &self.identity {
            Identity::InPlace | Identity::New => return Ok(None),
            Identity::Unnamed => None,
            Identity::Named(temp) => temp.file_name().map(|n| n.as_bytes().to_vec()),
        };
        if let Ok(existing) = fs::symlink_metadata(&self.target) {
            if existing.is_file() {
                apply_metadata_keep_times(&self.file, &existing)
                    .map_err(|(op, e)| io_err(op, &self.path)(e))?;
            }
        }
        let name = self
            .target
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .ok_or_else(|| PublishError::IsDirectory {
                path: self.path.clone(),
            })?;
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.dir)
            .map_err(io_err("opening the directory", &self.dir))?;
        Ok(Some((dir, crate::PublishTo { name, staged_name })))
    }

    /// Removes hidden staging files for this destination's name that a
    /// killed process left in its directory (see [`remove_stale`]).
    pub fn remove_stale(&self) -> Vec<PathBuf> {
        match self.target.file_name() {
            Some(name) => remove_stale(&self.dir, name),
            None => Vec::new(),
        }
    }

    /// Gives the staged file up to the daemon, which publishes it (or
    /// removes its hidden name) when the job ends: nothing is removed here.
    pub fn hand_over(mut self) {
        self.published = true;
    }
}

/// Removes hidden staging files for `name` in `dir` that a killed process
/// left: `.NAME.ringxfer-PID-N` regular files (never directories: those are
/// a tree copy's, see the CLI) whose PID no longer runs. A live process's
/// files, this process's included, are left alone. Returns the paths removed.
///
/// Such a file exists only if its owner died between making it and renaming
/// it: a CLI or daemon killed while replacing a destination (between the
/// link to the hidden name and the rename over the old file), or, on a file
/// system without O_TMPFILE, at any moment of the job.
pub fn remove_stale(dir: &Path, name: &OsStr) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = stale_owner(&file_name, name) else {
            continue;
        };
        if process_alive(pid) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        if fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// The pid in `entry` if it is a hidden staging name made for `name`
/// (see [`hidden_name`]).
fn stale_owner(entry: &OsStr, name: &OsStr) -> Option<u32> {
    let bytes = entry.as_bytes();
    let rest = bytes.strip_prefix(b".")?;
    const TAG: &[u8] = b".ringxfer-";
    let at = rest.windows(TAG.len()).rposition(|w| w == TAG)?;
    let (stem, suffix) = (&rest[..at], &rest[at + TAG.len()..]);
    let suffix = std::str::from_utf8(suffix).ok()?;
    let (pid, n) = suffix.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    // A stem shorter than the name is ours only where hidden_name shortened it.
    let full = name.as_bytes();
    let ours = stem == full || (bytes.len() == NAME_MAX && full.starts_with(stem));
    ours.then(|| pid.parse().ok()).flatten()
}

/// Whether a process with this pid exists (a zombie counts; EPERM means
/// it exists and belongs to someone else).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.published {
            self.discard();
        }
    }
}

impl fmt::Debug for StagedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedFile")
            .field("path", &self.path)
            .field("target", &self.target)
            .field("identity", &self.identity)
            .field("fd", &self.file.as_raw_fd())
            .finish_non_exhaustive()
    }
}

/// Copies mode, owner (ignoring EPERM) and timestamps from `source` to `file`.
///
/// The owner goes first, because chown(2) clears set-user-ID and
/// set-group-ID bits; where the owner (or group) could not be given, those
/// bits are not copied either, as cp -p does. Access and modification times
/// are copied to the nanosecond.
///
/// # Errors
///
/// The OS error of fchown(2) (other than EPERM), fchmod(2) or futimens(2).
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
///
/// let dir = std::env::temp_dir();
/// let (a, b) = (dir.join(format!("ringxfer-doc-pa-{}", std::process::id())), dir.join(format!("ringxfer-doc-pb-{}", std::process::id())));
/// std::fs::write(&a, "a")?;
/// std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o640))?;
/// let copy = std::fs::File::create(&b)?;
/// ringxfer_ipc::publish::preserve_metadata(&copy, &std::fs::metadata(&a)?)?;
/// assert_eq!(std::fs::metadata(&b)?.permissions().mode() & 0o7777, 0o640);
/// assert_eq!(std::fs::metadata(&b)?.modified()?, std::fs::metadata(&a)?.modified()?);
/// # std::fs::remove_file(&a)?; std::fs::remove_file(&b)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn preserve_metadata(file: &File, source: &Metadata) -> io::Result<()> {
    apply_metadata(file, source, 0o7777).map_err(|(_, e)| e)
}

/// Gives `file` the owner (where permitted) and the mode bits in `keep` of
/// `from`, then its times; the error names the step.
fn apply_metadata(
    file: &File,
    from: &Metadata,
    keep: u32,
) -> Result<(), (&'static str, io::Error)> {
    apply_owner_and_mode(file, from, keep)?;
    let times = FileTimes::new()
        .set_accessed(
            from.accessed()
                .map_err(|e| ("reading the source's times for", e))?,
        )
        .set_modified(
            from.modified()
                .map_err(|e| ("reading the source's times for", e))?,
        );
    file.set_times(times)
        .map_err(|e| ("setting the times of", e))
}

/// What a replaced destination hands on to its replacement: owner where
/// permitted and permission bits, not times (the data is new).
fn apply_metadata_keep_times(
    file: &File,
    existing: &Metadata,
) -> Result<(), (&'static str, io::Error)> {
    apply_owner_and_mode(file, existing, 0o777)
}

fn apply_owner_and_mode(
    file: &File,
    from: &Metadata,
    keep: u32,
) -> Result<(), (&'static str, io::Error)> {
    let ours = file
        .metadata()
        .map_err(|e| ("inspecting the staged file for", e))?;
    let mut mode = from.mode() & keep;
    if (ours.uid(), ours.gid()) != (from.uid(), from.gid()) {
        let (uid_given, gid_given) = match fchown(file, Some(from.uid()), Some(from.gid())) {
            Ok(()) => (true, true),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                // Without CAP_CHOWN a user may still hand the file to a group
                // they belong to.
                match fchown(file, None, Some(from.gid())) {
                    Ok(()) => (ours.uid() == from.uid(), true),
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        (ours.uid() == from.uid(), ours.gid() == from.gid())
                    }
                    Err(e) => return Err(("setting the group of", e)),
                }
            }
            Err(e) => return Err(("setting the owner of", e)),
        };
        // A set-ID bit on a file someone else now owns would grant that
        // someone else's rights: drop it rather than copy it.
        if !uid_given {
            mode &= !libc::S_ISUID;
        }
        if !gid_given {
            mode &= !libc::S_ISGID;
        }
    }
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| ("setting the mode of", e))
}

/// Opens with O_DIRECT first when asked, and plainly where the file system
/// refuses O_DIRECT (EINVAL); the daemon then says why direct cannot run.
fn open_maybe_direct(
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
fn open_unnamed(dir: &Path, mode: u32, direct: bool) -> io::Result<Option<File>> {
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
fn open_named_temp(
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
fn open_in_place(
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

/// `.<name>.ringxfer-<pid>-<counter>`, a fresh counter each call.
fn temp_name(name: &OsStr, pid: u32) -> OsString {
    hidden_name_for(name, pid, TEMP_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `.<name>.ringxfer-<pid>-<n>`: the hidden name ringxfer stages something
/// called `name` under, with `name` shortened (bytewise; Linux names are
/// bytes) so that the whole stays within NAME_MAX.
///
/// ```
/// use std::ffi::OsStr;
/// let hidden = ringxfer_ipc::publish::hidden_name(OsStr::new("photos"), 3);
/// assert_eq!(hidden, format!(".photos.ringxfer-{}-3", std::process::id()).as_str());
/// let long = ringxfer_ipc::publish::hidden_name(OsStr::new(&"x".repeat(300)), 0);
/// assert!(long.len() <= 255);
/// ```
pub fn hidden_name(name: &OsStr, n: u64) -> OsString {
    hidden_name_for(name, std::process::id(), n)
}

/// As [`hidden_name`], for the process `pid` (the daemon names its own
/// hidden links with its pid, so that [`remove_stale`] can tell them).
///
/// ```
/// use std::ffi::OsStr;
/// let hidden = ringxfer_ipc::publish::hidden_name_for(OsStr::new("a.iso"), 42, 7);
/// assert_eq!(hidden, ".a.iso.ringxfer-42-7");
/// ```
pub fn hidden_name_for(name: &OsStr, pid: u32, n: u64) -> OsString {
    let suffix = format!(".ringxfer-{pid}-{n}");
    let room = NAME_MAX - 1 - suffix.len();
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(NAME_MAX);
    out.push(b'.');
    out.extend_from_slice(&bytes[..bytes.len().min(room)]);
    out.extend_from_slice(suffix.as_bytes());
    OsString::from_vec(out)
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))
}

/// Links the file open at `file` (an O_TMPFILE) to the name `to`.
fn link_fd(file: &File, to: &Path) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::{symlink, FileTypeExt};

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    fn umask() -> u32 {
        let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .expect("Umask line");
        u32::from_str_radix(line.trim(), 8).expect("octal umask")
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn stage(dst: &Path, opts: &PublishOptions, named: bool) -> StagedFile {
        StagedFile::create_as(dst, None, opts, named, std::process::id()).expect("stage")
    }

    #[test]
    fn unnamed_file_publishes_to_a_new_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dst = dir.path().join("new");
        let opts = PublishOptions {
            mode: Some(0o640),
            ..Default::default()
        };
        let staged = stage(&dst, &opts, false);
        assert!(matches!(staged.identity, Identity::Unnamed), "{staged:?}");
        staged.file().write_all(b"fresh bytes").expect("write");
        assert!(names(dir.path()).is_empty(), "nothing named before publish");
        staged.publish(None).expect("publish");
        assert_eq!(fs::read(&dst).expect("read"), b"fresh bytes");
        assert_eq!(mode_of(&dst), 0o640 & !umask());
        assert_eq!(names(dir.path()), ["new"]);
    }

    /// Replacing: the old content stays visible until publish, then the new
    /// file (another inode) takes the name and the old permission bits.
    fn replaces_an_existing_file(named: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let dst = dir.path().join("existing");
        fs::write(&dst, b"the old content, longer than the new").expect("write old");
        chmod(&dst, 0o604);
        let old_ino = fs::metadata(&dst).expect("stat").ino();

        let staged = stage(&dst, &PublishOptions::default(), named);
        assert_eq!(
            matches!(staged.identity, Identity::Named(_)),
            named,
            "{staged:?}"
        );
        staged.file().write_all(b"new content").expect("write");
        assert_eq!(
            fs::read(&dst).expect("read"),
            b"the old content, longer than the new"
        );
        staged.publish(None).expect("publish");

        assert_eq!(fs::read(&dst).expect("read"), b"new content");
        assert_ne!(fs::metadata(&dst).expect("stat").ino(), old_ino);
        assert_eq!(mode_of(&dst), 0o604, "the replaced file's mode is kept");
        assert_eq!(names(dir.path()), ["existing"], "no temporary name left");
    }

    #[test]
    fn unnamed_file_replaces_an_existing_file() {
        replaces_an_existing_file(false);
    }

    #[test]
    fn named_temp_replaces_an_existing_file() {
        replaces_an_existing_file(true);
    }

    #[test]
    fn named_temp_is_hidden_next_to_the_destination_until_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dst = dir.path().join("out.bin");
        let staged = stage(&dst, &PublishOptions::default(), true);
        let listed = names(dir.path());
        assert_eq!(listed.len(), 1, "{listed:?}");
        let prefix = format!(".out.bin.ringxfer-{}-", std::process::id());
        assert!(listed[0].starts_with(&prefix), "{listed:?}");
        staged.file().write_all(b"named").expect("write");
        staged.publish(None).expect("publish");
        assert_eq!(fs::read(&dst).expect("read"), b"named");
        assert_eq!(names(dir.path()), ["out.bin"]);
    }

    #[test]
    fn abandon_and_drop_leave_nothing() {
        for named in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let fresh = dir.path().join("fresh");
            let staged = stage(&fresh, &PublishOptions::default(), named);
            staged.file().write_all(b"half").expect("write");
            staged.abandon();
            assert!(names(dir.path()).is_empty(), "named: {named}");

            let existing = dir.path().join("existing");
            fs::write(&existing, b"keep me").expect("write");
            let staged = stage(&existing, &PublishOptions::default(), named);
            staged.file().write_all(b"half").expect("write");
            drop(staged);
            assert_eq!(fs::read(&existing).expect("read"), b"keep me");
            assert_eq!(names(dir.path()), ["existing"], "named: {named}");
        }
    }

    #[test]
    fn in_place_writes_into_the_destination() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dst = dir.path().join("dst");
        fs::write(&dst, b"previous content").expect("write");
        let ino = fs::metadata(&dst).expect("stat").ino();
        let opts = PublishOptions {
            in_place: true,
            ..Default::default()
        };
        let staged = stage(&dst, &opts, false);
        assert!(staged.is_in_place());
        assert!(staged.wants_truncate());
        assert_eq!(
            fs::read(&dst).expect("read"),
            b"previous content",
            "not truncated before the daemon took the job"
        );
        drop(staged);
        assert_eq!(fs::read(&dst).expect("read"), b"previous content");
        let staged = stage(&dst, &opts, false);
        staged.file().write_all(b"direct").expect("write");
        assert_eq!(
            fs::read(&dst).expect("read"),
            b"directus content",
            "visible at once"
        );
        staged
            .file()
            .set_len(6)
            .expect("truncate, as the daemon does");
        staged.publish(None).expect("publish");
        assert_eq!(fs::read(&dst).expect("read"), b"direct");
        assert_eq!(fs::metadata(&dst).expect("stat").ino(), ino);

        // Read-write, so that a verifying daemon can read it back.
        let staged = stage(&dst, &opts, false);
        staged.file().write_all(b"readable").expect("write");
        let mut back = String::new();
        let mut file = staged.file();
        file.rewind().expect("rewind");
        file.read_to_string(&mut back).expect("read back");
        assert_eq!(back, "readable");

        // Abandoning leaves what was written: there is nothing to undo.
        staged.abandon();
        assert_eq!(fs::read(&dst).expect("read"), b"readable");

        let fresh = dir.path().join("fresh");
        let staged = stage(&fresh, &opts, false);
        assert!(fresh.exists(), "created at once");
        drop(staged);
        assert!(!fresh.exists(), "an abandoned file it created is removed");
        let staged = stage(&fresh, &opts, false);
        staged.publish(None).expect("publish");
        assert_eq!(mode_of(&fresh), 0o666 & !umask());
    }

    #[test]
    fn a_device_destination_is_written_in_place() {
        let staged = stage(Path::new("/dev/null"), &PublishOptions::default(), false);
        assert!(staged.is_in_place());
        staged.file().write_all(b"gone").expect("write");
        staged.publish(None).expect("publish");
        assert!(fs::metadata("/dev/null")
            .expect("stat")
            .file_type()
            .is_char_device());
    }

    #[test]
    fn the_source_itself_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        fs::write(&src, b"precious").expect("write");
        let link = dir.path().join("link");
        symlink("src", &link).expect("symlink");
        let meta = fs::metadata(&src).expect("stat");
        for dst in [&src, &link] {
            for in_place in [false, true] {
                let opts = PublishOptions {
                    in_place,
                    ..Default::default()
                };
                let err = StagedFile::create(dst, Some(&meta), &opts).expect_err("same file");
                assert!(
                    matches!(&err, PublishError::SameFile { path, .. } if path == dst),
                    "{err:?}"
                );
                let named = err.with_source_path(&src).to_string();
                assert!(named.contains("is the same file as"), "{named}");
                assert!(named.contains(&*src.to_string_lossy()), "{named}");
            }
        }
        assert_eq!(fs::read(&src).expect("read"), b"precious");
        assert_eq!(names(dir.path()), ["link", "src"]);
    }

    #[test]
    fn directories_and_missing_directories_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = StagedFile::create(dir.path(), None, &PublishOptions::default())
            .expect_err("a directory");
        assert!(matches!(err, PublishError::IsDirectory { .. }), "{err:?}");
        let err = StagedFile::create(Path::new("/"), None, &PublishOptions::default())
            .expect_err("the root");
        assert!(matches!(err, PublishError::IsDirectory { .. }), "{err:?}");

        let missing = dir.path().join("no-such-dir");
        for in_place in [false, true] {
            let opts = PublishOptions {
                in_place,
                ..Default::default()
            };
            let err =
                StagedFile::create(&missing.join("f"), None, &opts).expect_err("no directory");
            assert_eq!(
                err.io_error().map(io::Error::kind),
                Some(io::ErrorKind::NotFound),
                "{err:?}"
            );
            assert!(
                err.to_string().contains(&*missing.to_string_lossy()),
                "{err}"
            );
        }
    }

    #[test]
    fn a_symlink_destination_has_its_target_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        fs::write(&real, b"old").expect("write");
        let link = dir.path().join("link");
        symlink("real", &link).expect("symlink");
        let staged = stage(&link, &PublishOptions::default(), false);
        assert_eq!(staged.path(), link);
        staged.file().write_all(b"new").expect("write");
        staged.publish(None).expect("publish");
        assert!(fs::symlink_metadata(&link)
            .expect("lstat")
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).expect("read"), b"new");

        // Not through a dangling link: cp refuses, and so does staging.
        let dangling = dir.path().join("dangling");
        symlink("made", &dangling).expect("symlink");
        let err = StagedFile::create(&dangling, None, &PublishOptions::default()).unwrap_err();
        assert!(
            matches!(err, PublishError::DanglingSymlink { ref path } if *path == dangling),
            "{err}"
        );
        assert_eq!(names(dir.path()), ["dangling", "link", "real"]);
    }

    /// Sets distinct access and modification times on `file` through
    /// futimens(2), independently of how the code under test sets them.
    fn set_times(file: &File, atime: (i64, i64), mtime: (i64, i64)) {
        let times = [
            libc::timespec {
                tv_sec: atime.0,
                tv_nsec: atime.1,
            },
            libc::timespec {
                tv_sec: mtime.0,
                tv_nsec: mtime.1,
            },
        ];
        // SAFETY: `file` is open for the call; `times` is an array of two
        // initialised timespecs, as futimens reads, alive until it returns.
        let rc = unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
        assert_eq!(rc, 0, "futimens: {}", io::Error::last_os_error());
    }

    #[test]
    fn preserve_copies_mode_and_times() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        fs::write(&src, b"source").expect("write");
        chmod(&src, 0o751);
        set_times(
            &File::open(&src).expect("open"),
            (1_200_000_000, 111_111_111),
            (1_000_000_000, 123_456_789),
        );
        let meta = fs::metadata(&src).expect("stat");

        for (name, in_place, named, existing) in [
            ("unnamed", false, false, false),
            ("unnamed-over", false, false, true),
            ("named", false, true, false),
            ("named-over", false, true, true),
            ("in-place", true, false, true),
        ] {
            let dst = dir.path().join(name);
            if existing {
                fs::write(&dst, b"older").expect("write");
                chmod(&dst, 0o600);
            }
            let opts = PublishOptions {
                preserve: true,
                in_place,
                ..Default::default()
            };
            let staged = StagedFile::create_as(&dst, Some(&meta), &opts, named, std::process::id())
                .expect("stage");
            staged.file().write_all(b"source").expect("write");
            staged.publish(Some(&meta)).expect("publish");
            let got = fs::metadata(&dst).expect("stat");
            assert_eq!(got.mode() & 0o7777, 0o751, "{name}");
            assert_eq!(
                (got.mtime(), got.mtime_nsec()),
                (1_000_000_000, 123_456_789),
                "{name}"
            );
            assert_eq!(
                (got.atime(), got.atime_nsec()),
                (1_200_000_000, 111_111_111),
                "{name}"
            );
            assert_eq!((got.uid(), got.gid()), (meta.uid(), meta.gid()), "{name}");
        }
    }

    #[test]
    fn preserve_metadata_copies_the_owner_where_permitted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        fs::write(&src, b"s").expect("write");
        fs::write(&dst, b"d").expect("write");
        let file = File::open(&dst).expect("open");
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            fchown(File::open(&src).expect("open"), Some(4242), Some(4343)).expect("chown");
            chmod(&src, 0o4755);
        } else {
            chmod(&src, 0o755);
        }
        preserve_metadata(&file, &fs::metadata(&src).expect("stat")).expect("preserve");
        let got = fs::metadata(&dst).expect("stat");
        if root {
            assert_eq!((got.uid(), got.gid()), (4242, 4343));
            assert_eq!(got.mode() & 0o7777, 0o4755, "set-ID kept with the owner");
        } else {
            assert_eq!(got.mode() & 0o7777, 0o755);
        }
    }

    #[test]
    fn fsync_variants_publish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PublishOptions {
            fsync: true,
            ..Default::default()
        };
        for (name, named, in_place) in [
            ("unnamed", false, false),
            ("named", true, false),
            ("in-place", false, true),
        ] {
            let dst = dir.path().join(name);
            for round in 0..2 {
                let opts = PublishOptions {
                    in_place,
                    ..opts.clone()
                };
                let staged = stage(&dst, &opts, named);
                write!(staged.file(), "{name} {round}").expect("write");
                staged.publish(None).expect("publish");
                assert_eq!(
                    fs::read_to_string(&dst).expect("read"),
                    format!("{name} {round}")
                );
            }
        }
        assert_eq!(names(dir.path()), ["in-place", "named", "unnamed"]);
    }

    #[test]
    fn direct_opens_with_o_direct_where_the_file_system_allows() {
        let dir = tempfile::tempdir().expect("tempdir");
        for named in [false, true] {
            let dst = dir.path().join(format!("direct-{named}"));
            let opts = PublishOptions {
                direct: true,
                ..Default::default()
            };
            let staged = stage(&dst, &opts, named);
            // SAFETY: the descriptor is open for the call; F_GETFL takes no argument.
            let flags = unsafe { libc::fcntl(staged.file().as_raw_fd(), libc::F_GETFL) };
            assert!(flags >= 0, "F_GETFL: {}", io::Error::last_os_error());
            // tmpfs refuses O_DIRECT; the fallback is a plain open then.
            let fs_type = {
                // SAFETY: statfs is plain data, all-zero is a valid value.
                let mut st: libc::statfs = unsafe { std::mem::zeroed() };
                let path = cstring(dir.path()).expect("path");
                // SAFETY: `path` is NUL-terminated and `st` writable, both alive for the call.
                assert_eq!(unsafe { libc::statfs(path.as_ptr(), &mut st) }, 0);
                st.f_type
            };
            if fs_type != libc::TMPFS_MAGIC {
                assert_ne!(flags & libc::O_DIRECT, 0, "named: {named}");
            }
            assert_eq!(flags & libc::O_ACCMODE, libc::O_RDWR, "named: {named}");
            staged.publish(None).expect("publish");
            assert!(dst.exists());
        }
    }

    #[test]
    fn long_names_still_get_a_temporary_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = "n".repeat(NAME_MAX);
        let dst = dir.path().join(&name);
        fs::write(&dst, b"old").expect("write");
        for named in [false, true] {
            let staged = stage(&dst, &PublishOptions::default(), named);
            staged.file().write_all(b"new").expect("write");
            staged.publish(None).expect("publish");
            assert_eq!(fs::read(&dst).expect("read"), b"new");
        }
        assert_eq!(names(dir.path()), [name]);
    }
}
