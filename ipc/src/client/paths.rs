//! The path helpers: files opened by path, and destinations staged so
//! that they take their name only once their job completed.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::publisher::{Publisher, Staged};
use super::requests::Extra;
use super::Client;
use crate::proto::Strategy;
use crate::publish::{PublishError, PublishOptions, StagedFile};
use crate::{ClientError, JobHandle, TransferOptions};
#[cfg(doc)]
use crate::{FailureKind, JobError};

impl Client {
    /// Copies the file at `src` to `dst`, like cp(1). The source is opened
    /// read-only. The bytes go into an unnamed temporary file in `dst`'s
    /// directory, which takes the name `dst` only once the job completed (see
    /// [`crate::publish`]): until then `dst` is absent or holds its old
    /// content, and a failed, cancelled or disconnected job leaves it so. A
    /// new `dst` gets the source's permission bits less the umask; an
    /// existing one is replaced atomically and its permission bits (and,
    /// where permitted, owner) carry over, as when cp(1) overwrites.
    ///
    /// The handle resolves after the publish: [`JobHandle::wait`] returning
    /// `Ok` means `dst` holds the copy. A publish that fails turns the job's
    /// result into [`JobError::Failed`] ([`FailureKind::Io`], or
    /// [`FailureKind::NoSpace`] / [`FailureKind::PermissionDenied`] /
    /// [`FailureKind::ReadOnly`] by its errno) whose message names `dst`.
    ///
    /// [`TransferOptions::in_place`] writes into `dst` itself (created, or
    /// emptied if it holds anything); so do a device or FIFO at `dst`.
    /// [`TransferOptions::preserve`] copies the source's mode, owner (where
    /// permitted) and times; [`TransferOptions::fsync`] also syncs the new
    /// name into the directory; [`Strategy::Direct`] opens both files with
    /// O_DIRECT. A symbolic link at `dst` is followed: its target is replaced.
    /// Staging needs write permission on `dst`'s directory, not on `dst`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Open`] naming the path that could not be opened or
    /// staged (its `source` wraps the [`PublishError`] for staging
    /// failures), also when `dst` is a directory or the same file as `src`;
    /// otherwise as [`Client::submit`].
    ///
    /// ```no_run
    /// use std::path::Path;
    /// use ringxfer_ipc::TransferOptions;
    ///
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let opts = TransferOptions { preserve: true, fsync: true, ..Default::default() };
    /// let job = client.copy_file(Path::new("a.iso"), Path::new("b.iso"), &opts)?;
    /// job.wait()?; // b.iso now holds all of a.iso, durably, with its mode and times
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn copy_file(
        &self,
        src: &Path,
        dst: &Path,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        let source = open_source(src, opts)?;
        let src_meta = source.metadata().map_err(|e| ClientError::Open {
            path: src.to_path_buf(),
            source: e,
        })?;
        let publish_opts = PublishOptions {
            mode: Some(src_meta.permissions().mode() & 0o777),
            ..publish_options(opts)
        };
        let staged = self
            .stage(dst, Some(&src_meta), &publish_opts, opts)
            .map_err(|e| staging_error(dst, e.with_source_path(src)))?;
        let preserve_from = opts.preserve.then_some(src_meta);
        self.submit_staged(source.as_fd(), staged, preserve_from, opts)
    }

    /// Sends the file at `src` into a connected socket (or pipe) the caller
    /// owns.
    ///
    /// # Errors
    ///
    /// [`ClientError::Open`] if `src` cannot be opened; otherwise as
    /// [`Client::submit`].
    ///
    /// ```no_run
    /// use std::net::TcpStream;
    /// use std::path::Path;
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let peer = TcpStream::connect("192.0.2.1:9000")?;
    /// client.send_file(Path::new("a.iso"), &peer, &Default::default())?.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_file(
        &self,
        src: &Path,
        socket: impl AsFd,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        let source = open_source(src, opts)?;
        self.submit(&source, socket, opts)
    }

    /// Receives from a connected socket (or pipe) the caller owns into the
    /// file at `dst`. Without [`TransferOptions::length`] the job runs until
    /// the peer closes.
    ///
    /// The destination is staged and published as by [`Client::copy_file`]:
    /// `dst` appears (or is replaced) only once the whole stream has landed,
    /// a new `dst` gets mode 0644 less the umask, and the handle resolves
    /// after the publish. [`TransferOptions::in_place`] writes into `dst`
    /// itself; [`TransferOptions::preserve`] has no source to copy from
    /// and is ignored.
    ///
    /// # Errors
    ///
    /// [`ClientError::Open`] if `dst` cannot be opened or staged; otherwise
    /// as [`Client::submit`].
    ///
    /// ```no_run
    /// use std::net::TcpListener;
    /// use std::path::Path;
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let (peer, _) = TcpListener::bind("0.0.0.0:9000")?.accept()?;
    /// client.recv_to_file(&peer, Path::new("incoming.iso"), &Default::default())?.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_to_file(
        &self,
        socket: impl AsFd,
        dst: &Path,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        let publish_opts = PublishOptions {
            mode: Some(0o644),
            ..publish_options(opts)
        };
        let staged = self
            .stage(dst, None, &publish_opts, opts)
            .map_err(|e| staging_error(dst, e))?;
        self.submit_staged(socket.as_fd(), staged, None, opts)
    }

    /// Stages `dst`; for a detached job, with hidden names (where there is
    /// no O_TMPFILE) that carry the daemon's pid, since it publishes them.
    fn stage(
        &self,
        dst: &Path,
        source: Option<&Metadata>,
        publish_opts: &PublishOptions,
        opts: &TransferOptions,
    ) -> Result<StagedFile, PublishError> {
        match self.daemon_pid().filter(|_| opts.detach) {
            Some(pid) => StagedFile::create_for_daemon(dst, source, publish_opts, pid),
            None => StagedFile::create(dst, source, publish_opts),
        }
    }

    /// Submits a job into a staged destination, which the publisher
    /// publishes when the job completes and abandons otherwise.
    fn submit_staged(
        &self,
        source: BorrowedFd<'_>,
        staged: StagedFile,
        preserve_from: Option<Metadata>,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        // A duplicate to send, because the staged file moves into the job's
        // slot before the Submit goes out (the answer may beat sendmsg's
        // return) and must not be dropped under a borrowed descriptor.
        // Closing the duplicate is never the last close of the file.
        let dest = staged
            .file()
            .try_clone()
            .map_err(|source| ClientError::Io {
                op: "duplicating the destination's descriptor",
                source,
            })?;
        let opts = TransferOptions {
            truncate: opts.truncate || staged.wants_truncate(),
            ..opts.clone()
        };
        // A detached job's destination is published by the daemon: this
        // process may be gone when the job ends.
        let by_daemon = if opts.detach {
            staged
                .for_daemon()
                .map_err(|e| staging_error(staged.path(), e))?
        } else {
            None
        };
        let hand_over = by_daemon.is_some();
        Publisher::start(&self.inner).map_err(|source| ClientError::Io {
            op: "starting the thread that publishes destinations",
            source,
        })?;
        let staged = Staged {
            file: staged,
            preserve_from,
            hand_over,
        };
        let extra = match by_daemon.as_ref() {
            Some((dir, to)) => Extra::Publish(dir.as_fd(), to.clone()),
            None => Extra::None,
        };
        self.submit_inner(source, dest.as_fd(), extra, &opts, None, Some(staged))
    }
}

/// The staging choices a path helper's [`TransferOptions`] make.
fn publish_options(opts: &TransferOptions) -> PublishOptions {
    PublishOptions {
        in_place: opts.in_place,
        preserve: opts.preserve,
        fsync: opts.fsync,
        direct: opts.strategy == Strategy::Direct,
        mode: None,
    }
}

/// A staging failure as the path helpers report it: an open error on `dst`,
/// whose source carries the [`PublishError`] (its kind the OS error's kind).
fn staging_error(dst: &Path, err: PublishError) -> ClientError {
    let kind = match &err {
        PublishError::IsDirectory { .. } => io::ErrorKind::IsADirectory,
        PublishError::SameFile { .. } => io::ErrorKind::InvalidInput,
        other => other
            .io_error()
            .map_or(io::ErrorKind::Other, io::Error::kind),
    };
    ClientError::Open {
        path: dst.to_path_buf(),
        source: io::Error::new(kind, err),
    }
}

fn open_source(path: &Path, opts: &TransferOptions) -> Result<File, ClientError> {
    open_direct_or_not(OpenOptions::new().read(true), path, opts).map_err(|source| {
        ClientError::Open {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Opens with O_DIRECT when the direct strategy is asked for, so the daemon
/// need not switch it on in a file description this process shares. A file
/// system that refuses O_DIRECT (EINVAL) gets a plain open, and the daemon
/// then says why direct cannot take the job.
fn open_direct_or_not(
    options: &mut OpenOptions,
    path: &Path,
    opts: &TransferOptions,
) -> io::Result<File> {
    if opts.strategy == Strategy::Direct {
        match options.clone().custom_flags(libc::O_DIRECT).open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => return other,
        }
    }
    options.open(path)
}
