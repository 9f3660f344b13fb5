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

//!
//! Split by concern: this module stages and publishes ([`StagedFile`]);
//! `open` opens what the bytes go into and links an unnamed file to a
//! name; `names` makes the hidden temporary names and removes those a
//! killed process left ([`remove_stale`]); `metadata` hands mode, owner
//! and times on ([`preserve_metadata`]); `error` is [`PublishError`].

mod error;
mod metadata;
mod names;
mod open;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::destination::{self, Destination, ResolveError};

use error::io_err;
pub use error::PublishError;
pub use metadata::preserve_metadata;
use metadata::{apply_metadata, apply_metadata_keep_times};
pub use names::{hidden_name, hidden_name_for, remove_stale};
use names::{temp_name, MAX_TEMP_TRIES};
use open::{link_fd, open_in_place, open_maybe_direct, open_named_temp, open_unnamed};

/// Mode of a new destination when [`PublishOptions::mode`] is `None`, before the umask.
const DEFAULT_MODE: u32 = 0o666;

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

/// The largest directory, by its size as the file system reports it, that
/// [`StagedFile::remove_stale`] lists whatever the staging: 64 KiB is about
/// 2,700 entries on ext4 and 3,300 on tmpfs, listed in under a millisecond.
///
/// ```
/// assert_eq!(ringxfer_ipc::publish::CHEAP_LISTING, 64 * 1024);
/// ```
pub const CHEAP_LISTING: u64 = 64 << 10;

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
    ///
    /// ```
    /// use ringxfer_ipc::publish::{PublishOptions, StagedFile};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let dst = dir.path().join("out.bin");
    /// // Client::daemon_pid() in a real program; this process stands in.
    /// let daemon_pid = std::process::id();
    /// let opts = PublishOptions::default();
    /// let staged = StagedFile::create_for_daemon(&dst, None, &opts, daemon_pid)?;
    /// let (_dir, to) = staged.for_daemon()?.expect("staged, not in place");
    /// if let Some(hidden) = &to.staged_name {
    ///     // No O_TMPFILE here: a hidden name that carries the daemon's pid.
    ///     let prefix = format!(".out.bin.ringxfer-{daemon_pid}-");
    ///     assert!(hidden.starts_with(prefix.as_bytes()));
    /// }
    /// staged.abandon();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    ///
    /// ```
    /// use ringxfer_ipc::publish::{PublishOptions, StagedFile};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let dst = dir.path().join("disk.img");
    /// std::fs::write(&dst, vec![7u8; 4096])?;
    /// let in_place = PublishOptions { in_place: true, ..Default::default() };
    /// let staged = StagedFile::create(&dst, None, &in_place)?;
    /// assert!(staged.wants_truncate(), "a shorter copy must not keep the old tail");
    /// assert_eq!(std::fs::metadata(&dst)?.len(), 4096, "untouched until the job is done");
    /// staged.abandon();
    ///
    /// let staged = StagedFile::create(&dst, None, &PublishOptions::default())?;
    /// assert!(!staged.wants_truncate(), "a staged file starts empty");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    ///
    /// ```
    /// use ringxfer_ipc::publish::{PublishOptions, StagedFile};
    /// use std::os::unix::fs::PermissionsExt;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let dst = dir.path().join("report.txt");
    /// std::fs::write(&dst, "old")?;
    /// std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o640))?;
    ///
    /// let staged = StagedFile::create(&dst, None, &PublishOptions::default())?;
    /// let (dir_fd, to) = staged.for_daemon()?.expect("staged, not in place");
    /// assert_eq!(to.name, b"report.txt");
    /// assert!(dir_fd.metadata()?.is_dir());
    /// assert_eq!(staged.file().metadata()?.permissions().mode() & 0o777, 0o640);
    /// // Then Client::submit_publish(&src, staged.file(), &dir_fd, to, ..),
    /// // and staged.hand_over() once the job is accepted.
    ///
    /// let in_place = PublishOptions { in_place: true, ..Default::default() };
    /// assert!(StagedFile::create(&dst, None, &in_place)?.for_daemon()?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    /// killed process left in its directory (see [`remove_stale`]); call
    /// it once staged, and tell the user what was removed.
    ///
    /// That means listing the directory. One holding more than a few
    /// thousand entries (over [`CHEAP_LISTING`] bytes) is listed only where
    /// this copy itself stages under a hidden name (a detached job's, or
    /// any on a file system without O_TMPFILE), as the runs that leave such
    /// files do: a copy of 4 KiB into a directory of 100,000 files took
    /// 36 ms listing it, against cp's 1.
    ///
    /// ```
    /// use ringxfer_ipc::publish::{hidden_name_for, PublishOptions, StagedFile};
    /// use std::ffi::OsStr;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let dst = dir.path().join("out.bin");
    /// let mut killed = std::process::Command::new("true").spawn()?;
    /// let pid = killed.id();
    /// killed.wait()?;
    /// let leftover = dir.path().join(hidden_name_for(OsStr::new("out.bin"), pid, 0));
    /// std::fs::write(&leftover, "half a copy")?;
    ///
    /// let staged = StagedFile::create(&dst, None, &PublishOptions::default())?;
    /// for stale in staged.remove_stale() {
    ///     eprintln!("removed {}, left by a killed copy to {}", stale.display(), dst.display());
    /// }
    /// assert!(!leftover.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove_stale(&self) -> Vec<PathBuf> {
        let named = matches!(self.identity, Identity::Named(_));
        let cheap = || fs::metadata(&self.dir).is_ok_and(|m| m.len() <= CHEAP_LISTING);
        match self.target.file_name() {
            Some(name) if named || cheap() => remove_stale(&self.dir, name),
            _ => Vec::new(),
        }
    }

    /// Gives the staged file up to the daemon, which publishes it (or
    /// removes its hidden name) when the job ends: nothing is removed here.
    /// Only once the daemon accepted the job
    /// ([`Client::submit_publish`](crate::Client::submit_publish), with what
    /// [`StagedFile::for_daemon`] gave); a staged file the daemon refused is
    /// dropped instead, which removes it.
    ///
    /// ```
    /// use ringxfer_ipc::publish::{PublishOptions, StagedFile};
    /// use std::ffi::OsStr;
    /// use std::os::unix::ffi::OsStrExt;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let dst = dir.path().join("out.bin");
    /// let staged = StagedFile::create(&dst, None, &PublishOptions::default())?;
    /// let (_dir_fd, to) = staged.for_daemon()?.expect("staged, not in place");
    /// // ... the daemon accepted the job ...
    /// staged.hand_over();
    /// if let Some(hidden) = to.staged_name {
    ///     // The daemon's to rename or remove now.
    ///     assert!(dir.path().join(OsStr::from_bytes(&hidden)).exists());
    /// }
    /// assert!(!dst.exists(), "named only when the job completes");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hand_over(mut self) {
        self.published = true;
    }
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
