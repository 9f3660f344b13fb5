//! `ringxfer copy -r HOST[:PORT]:EXPORT[/PATH] DST`: a tree pulled from
//! another daemon. Its listing comes first (`List`, served like a file and
//! checked by CRC-32C, into a memfd); then the directories are made here
//! and the regular files pulled, one connection each, a few at once, each
//! staged and named only once whole, with its mode and times. Into an
//! existing directory DST the tree keeps its own name, as with cp -r;
//! otherwise it takes DST's.
//!
//! Not carried yet: symbolic links and special files (each skipped with a
//! note), and modes and times of directories.

use std::collections::VecDeque;
use std::fs;
use std::io::{Read, Seek};
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ringxfer_ipc::proto::peer::{decode_listing, EntryKind, ListEntry, RemotePath};
use ringxfer_ipc::publish::{PublishOptions, StagedFile};
use ringxfer_ipc::{JobHandle, TransferOptions};

use crate::context::{Context, CopyArgs, Target};
use crate::engine_handle::EngineHandle;
use crate::error::{CliError, Exit};
use crate::remote::Remote;
use crate::report::{self, Op, Subject, Tally};

/// Pulls in flight at once, as for pushes (remote_tree.rs).
const WINDOW: usize = 4;
/// Mode of pulled files until their own is set, as `recv`'s.
const STAGED_MODE: u32 = 0o600;

pub fn pull_tree(ctx: &Context, args: &CopyArgs<'_>, remote: &Remote) -> Exit {
    let started = Instant::now();
    let result = list(ctx, args, remote);
    let (engine, entries, root) = match result {
        Ok(found) => found,
        Err(err) => {
            ctx.out.failed(Op::Copy, None, &err);
            return err.exit;
        }
    };
    let mut pulls = Pulls {
        ctx,
        engine: &engine,
        remote,
        opts: ctx
            .plan(args.range, args.job, args.dest.fsync)
            .options(String::new()),
        publish: PublishOptions {
            fsync: args.dest.fsync,
            mode: Some(STAGED_MODE),
            ..PublishOptions::default()
        },
        tally: Tally::default(),
        in_flight: VecDeque::with_capacity(WINDOW),
    };
    pulls.make_dir(&root);
    for entry in entries {
        pulls.take(&root, entry);
    }
    while !pulls.in_flight.is_empty() {
        pulls.wait_oldest();
    }
    let mut tally = pulls.tally;
    tally.elapsed = started.elapsed();
    ctx.out.tree_done(&tally, engine.kind());
    if tally.failed > 0 {
        Exit::Failed
    } else {
        Exit::Done
    }
}

/// The engine, the listing of the remote directory, and where it lands.
fn list(
    ctx: &Context,
    args: &CopyArgs<'_>,
    remote: &Remote,
) -> Result<(EngineHandle, Vec<ListEntry>, PathBuf), CliError> {
    crate::remote::check_pull_flags(args)?;
    let path = RemotePath::new(remote.path.trim_end_matches('/'))
        .map_err(|e| CliError::usage(format!("remote path {}: {e}", remote.path)))?;
    let name = path.components().last().unwrap_or_default().to_string();
    let root = match args.target {
        Target::AsName => args.dst.to_path_buf(),
        _ if args.dst.is_dir() => args.dst.join(&name),
        _ => args.dst.to_path_buf(),
    };
    let engine = ctx.engine(&args.job)?;
    let shown = format!("{}:{}", remote.address, remote.path);
    let mut listing = memfd().map_err(|e| CliError::io("memfd_create".to_string(), &e))?;
    let socket = TcpStream::connect(&remote.address)
        .map_err(|err| CliError::io(format!("connect to {}", remote.address), &err))?;
    let opts = TransferOptions {
        tag: ringxfer_ipc::fit_tag(&format!("list {shown}")),
        ..TransferOptions::default()
    };
    let what = format!("list {shown}");
    let handle = engine
        .client()
        .submit_list(&socket, &listing, &path, &opts)
        .map_err(|err| CliError::client(what.clone(), &err))?;
    handle.wait().map_err(|err| CliError::job(what, &err))?;
    let mut bytes = Vec::new();
    listing
        .rewind()
        .and_then(|()| listing.read_to_end(&mut bytes))
        .map_err(|e| CliError::io(format!("read the listing of {shown}"), &e))?;
    let entries = decode_listing(&bytes).map_err(|e| {
        CliError::io(
            format!("the listing of {shown}"),
            &std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        )
    })?;
    Ok((engine, entries, root))
}

/// A file in memory, for the listing.
fn memfd() -> std::io::Result<fs::File> {
    // SAFETY: the name is a NUL-terminated literal; memfd_create takes no
    // other pointer.
    let fd = unsafe { libc::memfd_create(c"ringxfer-listing".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The pulls of one command, a few in flight.
struct Pulls<'a> {
    ctx: &'a Context,
    engine: &'a EngineHandle,
    remote: &'a Remote,
    opts: TransferOptions,
    publish: PublishOptions,
    tally: Tally,
    in_flight: VecDeque<(Subject, JobHandle, StagedFile)>,
}

impl Pulls<'_> {
    /// One entry of the listing: a directory made, a file pulled, anything
    /// else skipped with a note.
    fn take(&mut self, root: &Path, entry: ListEntry) {
        let local = root.join(&entry.path);
        match entry.kind {
            EntryKind::Dir => self.make_dir(&local),
            EntryKind::File => {
                if self.in_flight.len() == WINDOW {
                    self.wait_oldest();
                }
                self.start(&entry.path, &local);
            }
            EntryKind::Symlink | EntryKind::Other => {
                self.tally.items += 1;
                self.tally.skipped += 1;
                report::note(&format!(
                    "skipped {}: only regular files and directories come from another host for now",
                    local.display()
                ));
            }
        }
    }

    fn make_dir(&mut self, dir: &Path) {
        match fs::create_dir(dir) {
            Ok(()) => self.tally.dirs += 1,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => {
                let err = CliError::io(format!("mkdir {}", dir.display()), &e);
                let subject = Subject {
                    op: Op::Copy,
                    src: format!("{}:{}", self.remote.address, self.remote.path),
                    dst: dir.display().to_string(),
                };
                self.count_failure(&subject, &err);
            }
        }
    }

    /// Stages, connects and submits one file; a failure is counted.
    fn start(&mut self, rel: &str, local: &Path) {
        let from = format!("{}/{rel}", self.remote.path.trim_end_matches('/'));
        let subject = Subject {
            op: Op::Copy,
            src: format!("{}:{from}", self.remote.address),
            dst: local.display().to_string(),
        };
        match self.submit(&from, local, &subject) {
            Ok((handle, staged)) => self.in_flight.push_back((subject, handle, staged)),
            Err(err) => self.count_failure(&subject, &err),
        }
    }

    fn submit(
        &self,
        from: &str,
        local: &Path,
        subject: &Subject,
    ) -> Result<(JobHandle, StagedFile), CliError> {
        let path = RemotePath::new(from)
            .map_err(|e| CliError::usage(format!("remote path {from}: {e}")))?;
        let staged = StagedFile::create(local, None, &self.publish)
            .map_err(|e| CliError::staging(local, &e))?;
        let socket = TcpStream::connect(&self.remote.address)
            .map_err(|err| CliError::io(format!("connect to {}", self.remote.address), &err))?;
        let opts = TransferOptions {
            tag: ringxfer_ipc::fit_tag(&subject.describe()),
            ..self.opts.clone()
        };
        match self
            .engine
            .client()
            .submit_pull(&socket, staged.file(), &path, &opts)
        {
            Ok(handle) => Ok((handle, staged)),
            Err(err) => {
                staged.abandon();
                Err(CliError::client(subject.describe(), &err))
            }
        }
    }

    /// Waits for the oldest pull, and names its file if it came whole.
    fn wait_oldest(&mut self) {
        let Some((subject, handle, staged)) = self.in_flight.pop_front() else {
            return;
        };
        match handle.wait() {
            Ok(done) => match staged.publish(None) {
                Ok(()) => {
                    self.tally.items += 1;
                    self.tally.files += 1;
                    self.tally.bytes += done.bytes;
                }
                Err(e) => self.count_failure(&subject, &CliError::publish(&e)),
            },
            Err(err) => {
                staged.abandon();
                self.count_failure(&subject, &CliError::job(subject.describe(), &err));
            }
        }
    }

    fn count_failure(&mut self, subject: &Subject, err: &CliError) {
        self.ctx.out.failed(Op::Copy, Some(subject), err);
        self.tally.items += 1;
        self.tally.failed += 1;
        if self.tally.failed_paths.len() < report::NAMED_FAILURES {
            self.tally.failed_paths.push(subject.src.clone());
        }
    }
}
