//! The many-files pipeline: one job per file, up to a window of them in
//! flight on one connection, each destination staged and published on its
//! completion.
//!
//! The main thread opens, stages and submits; each job's completion callback
//! (on the stub's event thread) publishes that file and tells the main
//! thread through a channel, which frees a place in the window. So the
//! daemon always has a window's worth of jobs to batch into its ring, nobody
//! waits for one file's round trip before starting the next, and the CLI's
//! system calls are split over two threads: open, stat, O_TMPFILE and
//! sendmsg on the main one; linkat and close on the event thread.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use ringxfer_ipc::{Client, ClientError, Completion, JobError, Strategy, TransferOptions};

use crate::commands::{Context, CopyArgs};
use crate::engine::Engine;
use crate::error::CliError;
use crate::fdlimit;
use crate::progress::TreeBar;
use crate::report::{Op, Output, Subject};
use crate::transfer::Plan;
use crate::tree::Item;
use ringxfer_ipc::publish::{PublishOptions, StagedFile};

/// Jobs in flight at most. On two cores, windows from 8 to 1000 copied
/// 10,000 files of 4 KiB in the same time (the work is bound by CPU, the
/// CLI's and the daemon's together, not by round trips); 256 keeps a
/// daemon with cores to spare fed, and costs 256 descriptors.
const WINDOW: usize = 256;

/// Descriptors kept for everything else (stdio, the socket, read_dir's
/// open directories, the engine thread when embedded).
const SPARE_FDS: u64 = 64;

/// What a multi-file copy did.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Things the copy was asked to copy: files, links, and everything that
    /// failed (unreadable directories and skipped special files included).
    pub items: u64,
    pub files: u64,
    pub links: u64,
    pub dirs: u64,
    pub failed: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// What a finished job's callback reports: its bytes once published, or
/// why it failed.
struct Settled {
    src: PathBuf,
    dst: PathBuf,
    result: Result<u64, CliError>,
}

pub struct Pipeline<'a> {
    client: &'a Client,
    out: Output,
    window: usize,
    /// Jobs submitted whose callback has not reported yet.
    in_flight: usize,
    done_tx: Sender<Settled>,
    done_rx: Receiver<Settled>,
    plan: Plan,
    publish: PublishOptions,
    preserve: bool,
    bar: TreeBar,
    tally: Tally,
}

/// The window: [`WINDOW`], or less where the daemon's per-connection or
/// per-user job cap, or this process's descriptors (one per job in flight,
/// its destination; the source is closed once submitted), are lower.
fn window(client: &Client) -> usize {
    let limits = client.limits();
    let nofile = fdlimit::raise_nofile();
    let by_fds = nofile.saturating_sub(SPARE_FDS).max(1);
    [
        WINDOW as u64,
        u64::from(limits.max_jobs_per_connection),
        u64::from(limits.max_jobs_per_user),
        by_fds,
    ]
    .into_iter()
    .filter(|&n| n > 0)
    .min()
    .unwrap_or(1) as usize
}

impl<'a> Pipeline<'a> {
    pub fn new(ctx: &Context, engine: &'a Engine, args: &CopyArgs<'_>) -> Pipeline<'a> {
        let client = engine.client();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut plan = ctx.plan(args.range, args.job, args.dest.fsync);
        // Per-job progress events would cost the engine work for files that
        // take microseconds; the bar counts finished files instead.
        plan.progress = false;
        Pipeline {
            client,
            out: ctx.out,
            window: window(client),
            in_flight: 0,
            done_tx,
            done_rx,
            plan,
            publish: PublishOptions {
                in_place: args.dest.in_place,
                preserve: args.dest.preserve,
                fsync: args.dest.fsync,
                direct: ctx.strategy == Strategy::Direct,
                mode: None,
            },
            preserve: args.dest.preserve,
            bar: TreeBar::new(ctx.progress),
            tally: Tally::default(),
        }
    }

    /// Handles one item of the walk. An error is fatal (the connection to
    /// the engine is gone); per-path failures are reported and counted.
    pub fn take(&mut self, item: Item) -> Result<(), CliError> {
        self.tally.items += 1;
        match item {
            Item::File { src, dst } => self.copy_file(src, dst)?,
            Item::Symlink { src, dst } => match copy_symlink(&src, &dst, self.preserve) {
                Ok(()) => self.tally.links += 1,
                Err(err) => self.fail(&src, Some(&dst), &err),
            },
            Item::Failed { src, dst, error } => self.fail(&src, dst.as_deref(), &error),
        }
        self.reap_ready();
        Ok(())
    }

    fn fail(&mut self, src: &Path, dst: Option<&Path>, err: &CliError) {
        self.tally.failed += 1;
        let subject = Subject {
            op: Op::Copy,
            src: src.display().to_string(),
            dst: dst.map(|d| d.display().to_string()).unwrap_or_default(),
        };
        self.bar
            .suspend(|| self.out.failed(Op::Copy, Some(&subject), err));
    }

    fn copy_file(&mut self, src: PathBuf, dst: PathBuf) -> Result<(), CliError> {
        let opened = File::open(&src).and_then(|f| {
            let meta = f.metadata()?;
            Ok((f, meta))
        });
        let (file, meta) = match opened {
            Ok(x) => x,
            Err(e) => {
                self.fail(&src, Some(&dst), &CliError::path("cannot open", &src, &e));
                return Ok(());
            }
        };
        let publish = PublishOptions {
            mode: Some(meta.mode() & 0o777),
            ..self.publish.clone()
        };
        // Also refuses a file copied onto itself (`copy a b .` in a's directory).
        let staged = match StagedFile::create(&dst, Some(&meta), &publish) {
            Ok(staged) => staged,
            Err(e) => {
                let e = e.with_source_path(&src);
                self.fail(&src, Some(&dst), &CliError::staging(&dst, &e));
                return Ok(());
            }
        };
        while self.in_flight >= self.window {
            self.reap_one();
        }
        let opts = TransferOptions {
            // What `ringxfer jobs` lists and the daemon logs.
            tag: src.display().to_string(),
            ..self.plan.options(String::new())
        };
        let len = meta.len();
        // The callback takes the staged file out of the slot; the main
        // thread borrows its descriptor for the submit under the same lock,
        // so a callback that fires before submit returns waits for it
        // (cheaper than a dup and close per file).
        let slot = Arc::new(Mutex::new(Some((src.clone(), staged, meta))));
        let for_callback = Arc::clone(&slot);
        let tx = self.done_tx.clone();
        let callback = move |result| {
            let taken = lock(&for_callback).take();
            if let Some((src, staged, meta)) = taken {
                // The receiver lives as long as the pipeline, which waits
                // for every job before it goes; a send cannot fail before.
                let _ = tx.send(settle(src, staged, &meta, result));
            }
        };
        let submitted = {
            let guard = lock(&slot);
            match guard.as_ref() {
                Some((_, staged, _)) => {
                    self.client
                        .submit_with_callback(&file, staged.file(), &opts, callback)
                }
                // Nothing has taken it: it was filled just above.
                None => return Ok(()),
            }
        };
        // The daemon has its own copy of the source now.
        drop(file);
        match submitted {
            Ok(_handle) => {
                self.in_flight += 1;
                self.bar.add_total(len);
                Ok(())
            }
            // The callback never runs; the staged file goes with the slot,
            // leaving nothing under the name.
            Err(err @ (ClientError::Disconnected | ClientError::Io { .. })) => {
                self.tally.failed += 1;
                Err(CliError::client("submitting copies to the engine", &err))
            }
            Err(err) => {
                self.fail(&src, Some(&dst), &CliError::client("", &err));
                Ok(())
            }
        }
    }

    /// Publishes whatever finished, without waiting.
    fn reap_ready(&mut self) {
        while let Ok(settled) = self.done_rx.try_recv() {
            self.count(settled);
        }
    }

    /// Waits for one job to finish and publishes it.
    fn reap_one(&mut self) {
        match self.done_rx.recv() {
            Ok(settled) => self.count(settled),
            // Cannot happen while we hold a sender; if it did, nothing more
            // would ever come back.
            Err(_) => self.in_flight = 0,
        }
    }

    fn count(&mut self, settled: Settled) {
        self.in_flight -= 1;
        match settled.result {
            Ok(bytes) => {
                self.tally.files += 1;
                self.tally.bytes += bytes;
                self.bar.file_done(bytes);
            }
            Err(err) => self.fail(&settled.src, Some(&settled.dst), &err),
        }
    }

    /// Waits for every job still in flight and returns the tally.
    pub fn finish(mut self) -> Tally {
        while self.in_flight > 0 {
            self.reap_one();
        }
        self.bar.finish();
        self.tally
    }
}

/// Locks a slot, ignoring poison: a panic elsewhere leaves the data whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Publishes a finished job's file, or drops it (leaving nothing under its
/// name) if the job failed. Runs on the stub's event thread.
fn settle(
    src: PathBuf,
    staged: StagedFile,
    meta: &Metadata,
    result: Result<Completion, JobError>,
) -> Settled {
    let dst = staged.path().to_path_buf();
    let result = match result {
        Ok(done) => staged
            .publish(Some(meta))
            .map(|()| done.bytes)
            .map_err(|e| CliError::publish(&e)),
        Err(err) => {
            staged.abandon();
            Err(CliError::job(
                format!("cannot copy '{}' to '{}'", src.display(), dst.display()),
                &err,
            ))
        }
    };
    Settled { src, dst, result }
}

/// Recreates the link `src` at `dst` (replacing a file or link there
/// atomically), with --preserve also its owner and times.
fn copy_symlink(src: &Path, dst: &Path, preserve: bool) -> Result<(), CliError> {
    let target = fs::read_link(src).map_err(|e| CliError::path("cannot read link", src, &e))?;
    let create_err = |e: &io::Error| CliError::path("cannot create symbolic link", dst, e);
    match std::os::unix::fs::symlink(&target, dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let name = dst.file_name().map(|n| n.to_string_lossy().into_owned());
            let temp = dst.with_file_name(format!(
                ".{}.ringxfer-link-{}",
                name.unwrap_or_default(),
                std::process::id()
            ));
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
        preserve_link(dst, &meta)
            .map_err(|e| CliError::path("cannot set attributes of", dst, &e))?;
    }
    Ok(())
}

/// Owner and times of a link itself (lchown, utimensat without following).
fn preserve_link(path: &Path, meta: &Metadata) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
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
