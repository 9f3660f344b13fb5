//! The many-files pipeline: one job per file, up to a window of them in
//! flight on one connection, each destination staged and published on its
//! completion.
//!
//! The main thread gets sources opened (and, in a staged directory,
//! destinations created) by the walk's openers (see [`crate::walk_ahead`]),
//! stages the other destinations, and sends them to the daemon in batches
//! (one sendmsg for up to 32 jobs, see ringxfer_ipc::SubmitBatch), so the
//! daemon always has a window's worth of jobs to batch into its ring and
//! nobody waits for one file's round trip before starting the next. The
//! main thread also reads the daemon's events itself
//! (ringxfer_ipc::dispatch::Dispatcher): without waiting, after each batch
//! it sends, and waiting only when the window is full. The stub's event
//! thread, woken by every batch of completions, kept preempting it on two
//! cores. Each job's completion callback only passes the result back
//! through a channel; the main thread then publishes the file (which inside
//! a staged directory is just a close) and frees its place in the window.
//!
//! A signal (see [`crate::signals`]) stops the pipeline: its waits end every
//! [`crate::signals::POLL`] to look, nothing more is submitted, and the jobs
//! not settled are dropped unpublished (the engine, seeing the connection
//! close, cancels them).

use std::fs::{self, File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use ringxfer_ipc::dispatch::Dispatcher;
use ringxfer_ipc::{Client, Completion, JobError, JobHandle, Reflink, Strategy, TransferOptions};
use slab::Slab;

use crate::backup::Backup;
use crate::context::{Context, CopyArgs};
use crate::engine_handle::LazyEngine;
use crate::error::CliError;
use crate::fdlimit;
use crate::files::Replace;
use crate::hardlinks::HardLinks;
use crate::job_plan::JobPlan;
use crate::progress::{Show, TreeProgress};
use crate::report::{Op, Output, Subject, Tally, NAMED_FAILURES};
use crate::specials::{copy_special, copy_symlink};
use crate::staged_dirs::{StagedDirs, Within};
use crate::walk::Item;
use crate::walk_ahead::{
    chunks_out, fds_ahead, open_source, Found, Landed, SmallFiles, SourceFile, Staging,
    MAX_CHUNKS_OUT,
};
use crate::xattrs::Xattrs;
use ringxfer_ipc::publish::{PublishOptions, StagedFile};

/// Jobs in flight at most. On two cores, windows from 8 to 1000 copied
/// 10,000 files of 4 KiB in the same time (the work is bound by CPU, the
/// CLI's and the daemon's together, not by round trips); 256 keeps a
/// daemon with cores to spare fed, and costs 256 descriptors.
const WINDOW: usize = 256;

/// Descriptors kept for everything else (stdio, the socket, read_dir's
/// open directories, the engine thread when embedded).
const SPARE_FDS: u64 = 64;

/// Descriptors a copy holds at most: a destination per job in the window
/// and a source per job not yet sent (at most a window's worth), what the
/// walk opened ahead, and the spares.
pub const MAX_FDS: u64 = 2 * WINDOW as u64 + fds_ahead(MAX_CHUNKS_OUT) + SPARE_FDS;

/// A file on its way: opened, staged, and (once its batch is sent) a job.
struct Job {
    src: PathBuf,
    /// The open source until the batch carrying it is sent.
    source: Option<File>,
    staged: StagedFile,
    meta: Metadata,
    /// --preserve: the source's extended attributes, set before publishing.
    xattrs: Xattrs,
    within: Within,
    /// A large file's handle, whose progress events the progress counts.
    handle: Option<JobHandle>,
    /// When it was opened, among the copy's jobs: the oldest still in
    /// flight is the one a progress object names.
    seq: u64,
}

/// Files at least this large report their progress while progress is
/// shown, so the bar (or the objects) move during them; smaller ones finish
/// within a redraw or two, and progress events for each would cost the
/// engine work.
const MOVING_AT_LEAST: u64 = 8 << 20;

/// Whether a file of `len` bytes is worth following as it moves: a large
/// one, or one a rate limit of `rate` bytes per second makes take a tenth
/// of a second or more (the engine's interval between progress events).
fn worth_watching(len: u64, rate: Option<u64>) -> bool {
    len >= MOVING_AT_LEAST || rate.is_some_and(|r| len >= r / 10)
}

/// What a job's callback reports: the job's key in the table, and its result.
type Finished = (usize, Result<Completion, JobError>);

/// The connection to the engine, made when the first job needs it.
struct Link<'a> {
    client: &'a Client,
    /// The connection's events, read on this thread.
    events: Dispatcher<'a>,
    window: usize,
    /// Jobs per batch (the daemon's descriptors per message / 2).
    batch: usize,
}

pub struct Pipeline<'a> {
    engine: &'a LazyEngine<'a>,
    /// None until a file needs a job.
    link: Option<Link<'a>>,
    out: Output,
    /// Jobs opened and not yet settled, sent or not.
    jobs: Slab<Job>,
    /// Keys of jobs not yet sent, in the order they were opened.
    unsent: Vec<usize>,
    done_tx: Sender<Finished>,
    done_rx: Receiver<Finished>,
    plan: JobPlan,
    publish: PublishOptions,
    preserve: bool,
    /// -n, -u: which existing destinations stay.
    replace: Replace,
    /// --backup: what to keep of the files replaced.
    backup: Option<Backup>,
    /// -a: the source's hard links, kept in the copy.
    links: Option<HardLinks>,
    verbose: bool,
    progress: TreeProgress,
    /// The order jobs were opened in: the next job's number.
    next_seq: u64,
    tally: Tally,
    /// New directories being built under hidden names.
    staged: StagedDirs,
    /// The walk's chunks out at most (see [`Pipeline::chunks_out`]).
    chunks_out: usize,
}

/// The walk's chunks out (see [`chunks_out`]): what the descriptors a
/// full window leaves allow.
fn walk_chunks() -> usize {
    let nofile = fdlimit::raise_nofile();
    chunks_out(nofile.saturating_sub(SPARE_FDS + 2 * WINDOW as u64))
}

/// The window: [`WINDOW`], or less where the daemon's per-connection or
/// per-user job cap, or this process's descriptors (one per job in flight,
/// its destination, the source being closed once submitted; plus the
/// sources the walk's `chunks` opened ahead), are lower.
fn window(client: &Client, chunks: usize) -> usize {
    let limits = client.limits();
    let nofile = fdlimit::raise_nofile();
    let by_fds = nofile.saturating_sub(SPARE_FDS + fds_ahead(chunks)).max(1);
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
    pub fn new(ctx: &Context, engine: &'a LazyEngine<'a>, args: &CopyArgs<'_>) -> Pipeline<'a> {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut plan = ctx.plan(args.range, args.job, args.dest.fsync);
        // Per-job progress events would cost the engine work for files that
        // take microseconds; progress counts finished files instead.
        plan.progress = Show::Off;
        // --rate-limit is the whole copy's, not each file's.
        plan.whole_command = true;
        Pipeline {
            chunks_out: walk_chunks(),
            engine,
            link: None,
            out: ctx.out,
            jobs: Slab::new(),
            unsent: Vec::new(),
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
            replace: args.replace(),
            backup: args.backup.clone(),
            links: args.dest.preserve.then(HardLinks::default),
            verbose: args.verbose,
            progress: TreeProgress::new(ctx.progress),
            next_seq: 0,
            tally: Tally::default(),
            staged: StagedDirs::default(),
        }
    }

    /// How many chunks the walk may have out (see [`chunks_out`]), which
    /// the descriptors this pipeline leaves allow.
    pub fn chunks_out(&self) -> usize {
        self.chunks_out
    }

    /// What the walk's openers do inside staged directories: create the
    /// destinations as this pipeline would, and copy small files when the
    /// command asks nothing else of the engine (see
    /// [`JobPlan::asks_only_a_copy`]).
    pub fn staging(&self) -> Staging {
        Staging {
            publish: self.publish.clone(),
            small: self.plan.asks_only_a_copy().then_some(SmallFiles {
                no_clone: self.plan.job.reflink == Reflink::Never,
                finish_here: !self.publish.preserve && !self.publish.fsync,
            }),
        }
    }

    /// Handles one item of the walk. An error is fatal (the connection to
    /// the engine is gone); per-path failures are reported and counted.
    pub fn take(&mut self, found: Found) -> Result<(), CliError> {
        // The walk hands files out opened; one that was not is opened here.
        let found = match found {
            Found::Other(item @ Item::File { .. }) => open_source(item, None),
            found => found,
        };
        let found = match found {
            Found::Other(Item::Staged(dir)) => {
                self.staged.push(dir);
                return Ok(());
            }
            Found::Other(Item::Leftover(left)) => {
                let line = left.describe();
                self.progress.suspend(|| crate::report::note(&line));
                return Ok(());
            }
            found => found,
        };
        self.tally.items += 1;
        match found {
            Found::File(file) => self.copy_file(*file)?,
            Found::Landed(file) => {
                let Landed {
                    src,
                    dst,
                    within,
                    bytes,
                } = *file;
                self.progress.add_total(bytes);
                self.count_landed(&src, &dst, within, bytes, None);
            }
            Found::Other(Item::Symlink { src, dst, within }) => {
                match copy_symlink(&src, &dst, self.preserve) {
                    Ok(()) => {
                        self.tally.links += 1;
                        self.staged.landed(within, true, 0);
                    }
                    Err(err) => self.fail(&src, Some(&dst), within, &err),
                }
            }
            Found::Other(Item::Special { src, dst, within }) => {
                match fs::symlink_metadata(&src)
                    .map_err(|e| CliError::path("cannot stat", &src, &e))
                    .and_then(|meta| copy_special(&src, &dst, &meta))
                {
                    Ok(()) => {
                        self.tally.files += 1;
                        self.staged.landed(within, false, 0);
                    }
                    Err(err) => self.fail(&src, Some(&dst), within, &err),
                }
            }
            Found::Other(Item::Failed {
                src,
                dst,
                within,
                error,
            }) => self.fail(&src, dst.as_deref(), within, &error),
            Found::Other(Item::Staged(_) | Item::Leftover(_) | Item::File { .. }) => {}
        }
        self.reap_ready();
        self.tick();
        Ok(())
    }

    /// Reports a failure, naming paths inside staged directories by the
    /// names they will have, and keeps the staged directory it is in from
    /// its name.
    fn fail(&mut self, src: &Path, dst: Option<&Path>, within: Within, err: &CliError) {
        self.tally.failed += 1;
        if self.tally.failed_paths.len() < NAMED_FAILURES {
            self.tally.failed_paths.push(src.display().to_string());
        }
        self.staged.failed(within);
        let subject = Subject {
            op: Op::Copy,
            src: src.display().to_string(),
            dst: dst
                .map(|d| self.staged.shown(d).display().to_string())
                .unwrap_or_default(),
        };
        let err = self.staged.error(err.clone());
        self.progress
            .suspend(|| self.out.failed(Op::Copy, Some(&subject), &err));
    }

    fn copy_file(&mut self, found: SourceFile) -> Result<(), CliError> {
        let SourceFile {
            src,
            dst,
            within,
            opened,
            staged,
            empty,
            copied,
        } = found;
        let (file, meta) = match opened {
            Ok(x) => x,
            Err(e) => {
                let err = CliError::path("cannot open", &src, &e);
                self.fail(&src, Some(&dst), within, &err);
                return Ok(());
            }
        };
        if let Some(links) = &mut self.links {
            if links.defer(&meta, &src, &dst, within) {
                return Ok(());
            }
        }
        // A staged directory is new: nothing in it to keep.
        if within.is_none() && self.replace.skips(&meta, &dst) {
            self.tally.skipped += 1;
            let subject = Subject {
                op: Op::Copy,
                src: src.display().to_string(),
                dst: dst.display().to_string(),
            };
            let (out, verbose) = (self.out, self.verbose);
            self.progress.suspend(|| out.skipped(verbose, &subject));
            return Ok(());
        }
        let publish = PublishOptions {
            mode: Some(meta.mode() & 0o777),
            ..self.publish.clone()
        };
        // Also refuses a file copied onto itself (`copy a b .` in a's
        // directory); a new file in a staged directory cannot be the source.
        let staged = match staged {
            Some(staged) => staged,
            None if within.is_some() => StagedFile::create_new(&dst, &publish),
            None => StagedFile::create(&dst, Some(&meta), &publish),
        };
        let staged = match staged {
            Ok(staged) => staged,
            Err(e) => {
                let e = e.with_source_path(&src);
                self.fail(&src, Some(&dst), within, &CliError::staging(&dst, &e));
                return Ok(());
            }
        };
        let xattrs = if self.preserve {
            Xattrs::of_source(&file, &src)
        } else {
            Xattrs::default()
        };
        let job = Job {
            src,
            source: Some(file),
            staged,
            meta,
            xattrs,
            within,
            handle: None,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        if empty && self.nothing_to_move() {
            self.land(job, Ok(0));
            return Ok(());
        }
        if let Some(copied) = copied {
            self.progress.add_total(job.meta.len());
            match copied {
                Ok(bytes) => self.land(job, Ok(bytes)),
                Err(e) => {
                    let err = CliError::path("cannot copy", &job.src, &e);
                    self.progress.file_failed();
                    self.fail(&job.src.clone(), Some(&dst), within, &err);
                }
            }
            return Ok(());
        }
        let (window, batch) = self.connect()?;
        while self.jobs.len() >= window {
            self.send()?;
            if !self.reap_one() {
                // Interrupted: the staged file is dropped unpublished.
                return Ok(());
            }
        }
        let key = self.jobs.insert(job);
        self.unsent.push(key);
        if self.unsent.len() >= batch {
            self.send()?;
            // Whatever finished meanwhile, without waiting: a receive per
            // batch, not per file.
            if let Some(link) = &mut self.link {
                let _ = link.events.dispatch(Some(Duration::ZERO));
            }
        }
        Ok(())
    }

    /// The window and the batch size, connecting to the engine first if
    /// this is the first job. A failure is fatal, as a connection lost.
    fn connect(&mut self) -> Result<(usize, usize), CliError> {
        let link = match self.link.take() {
            Some(link) => link,
            None => {
                // Connecting may print a note (no daemon: the engine runs
                // in-process), which the bar must not draw over.
                let engine = self.engine;
                let client = self.progress.suspend(|| engine.get())?.client();
                let window = window(client, self.chunks_out);
                self.jobs.reserve(window);
                Link {
                    client,
                    events: client.dispatch_here(),
                    window,
                    batch: client.batch().capacity().min(window),
                }
            }
        };
        let sizes = (link.window, link.batch);
        self.link = Some(link);
        Ok(sizes)
    }

    /// Sends the jobs not yet sent, in one message. An error is fatal (the
    /// connection is gone); the batch's jobs then come back failed through
    /// their callbacks, which removes what was staged for them.
    fn send(&mut self) -> Result<(), CliError> {
        let client = match (&self.link, self.unsent.is_empty()) {
            (Some(link), false) => link.client,
            _ => return Ok(()),
        };
        let mut batch = client.batch();
        let mut refused = Vec::new();
        let mut watched = Vec::new();
        let mut sent = Ok(0);
        for &key in &self.unsent {
            let job = &self.jobs[key];
            let Some(source) = job.source.as_ref() else {
                continue;
            };
            let watch =
                self.progress.shown() && worth_watching(job.meta.len(), self.plan.job.rate_limit);
            let opts = TransferOptions {
                // What `ringxfer jobs` lists and the daemon logs.
                tag: ringxfer_ipc::fit_tag(&job.src.display().to_string()),
                progress: watch,
                ..self.plan.options(String::new())
            };
            for _ in 0..2 {
                let tx = self.done_tx.clone();
                let callback = Box::new(move |result| {
                    // The receiver lives as long as the pipeline, which waits
                    // for every job before it goes; a send cannot fail before.
                    let _ = tx.send((key, result));
                });
                match batch.submit(source, job.staged.file(), &opts, Some(callback)) {
                    Ok(handle) => {
                        self.progress.add_total(job.meta.len());
                        if watch {
                            watched.push((key, handle));
                        }
                        break;
                    }
                    // Long tags filled the frame: send what it has and put
                    // this job in the next.
                    Err(_) if batch.is_full() && !batch.is_empty() => {
                        let full = std::mem::replace(&mut batch, client.batch());
                        sent = sent.and(full.send());
                    }
                    // Its callback never runs.
                    Err(err) => {
                        refused.push((key, err));
                        break;
                    }
                }
            }
        }
        let sent = sent.and(batch.send());
        for (key, handle) in watched {
            if let Some(job) = self.jobs.get_mut(key) {
                job.handle = Some(handle);
            }
        }
        // The daemon has its own copies of the sources now (or never will).
        for key in self.unsent.drain(..) {
            if let Some(job) = self.jobs.get_mut(key) {
                job.source = None;
            }
        }
        for (key, err) in refused {
            let job = self.jobs.remove(key);
            // Dropping the staged file leaves nothing under the name.
            let dst = job.staged.path().to_path_buf();
            self.fail(
                &job.src,
                Some(&dst),
                job.within,
                &CliError::client("", &err),
            );
        }
        sent.map(|_| ())
            .map_err(|err| CliError::client("submitting copies to the engine", &err))
    }

    /// Publishes whatever finished, without waiting.
    fn reap_ready(&mut self) {
        while let Ok(finished) = self.done_rx.try_recv() {
            self.settle(finished);
        }
    }

    /// Waits for one job to finish and publishes it; false if a signal
    /// came first.
    fn reap_one(&mut self) -> bool {
        loop {
            if let Ok(finished) = self.done_rx.try_recv() {
                self.settle(finished);
                return true;
            }
            if crate::signals::received().is_some() {
                return false;
            }
            // Jobs are made only once connected.
            let Some(link) = &mut self.link else {
                debug_assert!(self.jobs.is_empty(), "jobs without a connection");
                self.jobs.clear();
                return true;
            };
            let dispatched = link.events.dispatch(Some(crate::signals::POLL));
            self.show_moving();
            self.tick();
            if dispatched.is_err() {
                // The connection ended: every outstanding job was resolved,
                // its callback run, before the error came back.
                while let Ok(finished) = self.done_rx.try_recv() {
                    self.settle(finished);
                }
                // Nothing more can come; jobs still listed never will.
                self.jobs.clear();
                return true;
            }
        }
    }

    /// Counts the bytes large files in flight have moved.
    fn show_moving(&mut self) {
        if !self.progress.shown() {
            return;
        }
        let moving = self
            .jobs
            .iter()
            .filter_map(|(_, job)| job.handle.as_ref())
            .map(JobHandle::bytes_so_far)
            .sum();
        self.progress.moving(moving);
    }

    /// Prints a progress object when one is due (--json --progress),
    /// naming the oldest file still in flight.
    fn tick(&mut self) {
        if !self.progress.json_due() {
            return;
        }
        let current = self
            .jobs
            .iter()
            .filter(|(_, job)| job.source.is_none())
            .min_by_key(|(_, job)| job.seq)
            .map(|(_, job)| job.src.display().to_string());
        self.progress.print_json(current.as_deref());
    }

    /// Publishes a finished job's file, or drops it (leaving nothing under
    /// its name) if the job failed.
    fn settle(&mut self, (key, result): Finished) {
        let Some(job) = self.jobs.try_remove(key) else {
            return;
        };
        self.land(job, result.map(|done| done.bytes));
    }

    /// Whether an empty source (see [`SourceFile::empty`]) needs no job:
    /// nothing asked of the engine could fail on it (`--reflink=always`
    /// fails where cloning is impossible, as cp's does) or print something
    /// (`--verify`). A tree of empty files (100,000 in a deep tree, issue
    /// 17) then costs a create each, not a round trip to the daemon and its
    /// work.
    fn nothing_to_move(&self) -> bool {
        let opts = &self.plan.job;
        let asked = opts.verify || opts.detach || opts.reflink == Reflink::Always;
        !asked && self.plan.offset == 0 && self.plan.length.is_none()
    }

    /// Publishes a file whose job moved `result` bytes, or drops it
    /// (leaving nothing under its name) if the job failed.
    fn land(&mut self, job: Job, result: Result<u64, JobError>) {
        let dst = job.staged.path().to_path_buf();
        let mut kept = None;
        let published = match result {
            // A staged directory is new: nothing in it to back up.
            Ok(bytes) => match (&self.backup, job.within) {
                (Some(backup), None) => backup
                    .keep(&dst)
                    .map_err(|e| CliError::path("cannot back up", &dst, &e)),
                _ => Ok(None),
            }
            .and_then(|backup| {
                kept = backup;
                job.xattrs
                    .apply_and_report(job.staged.file(), &self.staged.shown(&dst));
                job.staged
                    .publish(Some(&job.meta))
                    .map(|()| bytes)
                    .map_err(|e| CliError::publish(&e))
            }),
            Err(err) => {
                job.staged.abandon();
                Err(CliError::job(
                    format!(
                        "cannot copy '{}' to '{}'",
                        job.src.display(),
                        self.staged.shown(&dst).display()
                    ),
                    &err,
                ))
            }
        };
        match published {
            Ok(bytes) => self.count_landed(&job.src, &dst, job.within, bytes, kept.as_deref()),
            Err(err) => {
                self.progress.file_failed();
                self.fail(&job.src, Some(&dst), job.within, &err);
            }
        }
    }

    /// Reports and counts a file copied and published (`kept`: the backup
    /// of what it replaced).
    fn count_landed(
        &mut self,
        src: &Path,
        dst: &Path,
        within: Within,
        bytes: u64,
        kept: Option<&Path>,
    ) {
        if self.verbose {
            let out = self.out;
            let shown = self.staged.shown(dst);
            self.progress
                .suspend(|| out.copied(true, src, &shown, kept));
        }
        self.tally.files += 1;
        self.tally.bytes += bytes;
        self.staged.landed(within, false, bytes);
        self.progress.file_done(bytes);
    }

    /// Links the other names of files with several (-a), now that every
    /// copy has settled.
    fn make_links(&mut self) {
        let Some(links) = self.links.take() else {
            return;
        };
        for (p, made) in links.make() {
            match made {
                Ok(()) => {
                    let shown = self.staged.shown(&p.dst);
                    let (out, verbose) = (self.out, self.verbose);
                    self.progress
                        .suspend(|| out.copied(verbose, &p.src, &shown, None));
                    self.tally.files += 1;
                    self.staged.landed(p.within, false, 0);
                }
                Err(e) => {
                    let err =
                        CliError::path("cannot create hard link", &self.staged.shown(&p.dst), &e);
                    self.fail(&p.src, Some(&p.dst), p.within, &err);
                }
            }
        }
    }

    /// Sends what is left, waits for every job; returns the tally and the
    /// directories still to rename into place. After a signal nothing is
    /// sent or waited for: the jobs not settled are dropped, which removes
    /// whatever name their files had.
    pub fn finish(mut self) -> (Tally, StagedDirs) {
        self.progress.walk_done();
        if crate::signals::received().is_none() {
            if let Err(err) = self.send() {
                self.progress
                    .suspend(|| self.out.failed(Op::Copy, None, &err));
            }
        }
        // Jobs never sent (the batch failed) were refused and removed; what
        // is left has a callback to come.
        while !self.jobs.is_empty() {
            if !self.reap_one() {
                self.jobs.clear();
            }
        }
        if crate::signals::received().is_none() {
            self.make_links();
        }
        self.progress.finish();
        (self.tally, self.staged)
    }
}
