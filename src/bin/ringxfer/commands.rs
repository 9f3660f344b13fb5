//! The transfer subcommands: each opens what it needs, finds an engine, runs
//! one transfer (or, for `copy` of several files or a tree, hands over to
//! [`tree`]) and reports it.
//!
//! Order matters in each: the source is opened first (harmless, and a typo is
//! the commonest error), then the engine is found, and only then is anything
//! created, truncated or connected, so that a missing daemon under
//! --daemon-only leaves no empty destination file or half-open peer behind.

use std::fs;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ringxfer_ipc::{Reflink, Sparse, Strategy};

use crate::args::{JobOpts, RangeOpts};
use crate::cheap_copy;
use crate::context::{Context, CopyArgs, Follow, Target};
use crate::dir_fds;
use crate::engine_handle::EngineHandle;
use crate::error::{CliError, Exit};
use crate::files::{open_source, resolve_destination};
use crate::job_plan::{self, JobPlan};
use crate::pull_part::PullPart;
use crate::report::{self, EngineUsed, Finished, Op, Subject};
use crate::tree;
use crate::xattrs::Xattrs;
use ringxfer_ipc::publish::{PublishOptions, StagedFile};

/// Prints the outcome of a transfer and picks the exit status.
fn finish(
    ctx: &Context,
    subject: &Subject,
    verbose: bool,
    result: Result<Outcome, CliError>,
) -> Exit {
    match result {
        Ok(Outcome::Done(done)) => {
            ctx.out.transfer_done(subject, &done);
            Exit::Done
        }
        Ok(Outcome::Detached(job)) => {
            ctx.out.detached(subject, job);
            Exit::Done
        }
        Ok(Outcome::Skipped) => {
            ctx.out.skipped(verbose, subject);
            Exit::Done
        }
        Err(err) => {
            ctx.out.failed(subject.op, Some(subject), &err);
            err.exit
        }
    }
}

/// How a transfer command ended, when it did not fail.
enum Outcome {
    Done(Finished),
    /// Submitted detached, with this id.
    Detached(u64),
    /// Left alone, as -n or -u asked.
    Skipped,
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Runs the job, or submits it detached.
fn run_or_detach(
    engine: &EngineHandle,
    subject: &Subject,
    src: impl AsFd,
    dst: impl AsFd,
    plan: JobPlan,
) -> Result<Outcome, CliError> {
    if plan.job.detach {
        job_plan::detach(engine, subject, src, dst, plan).map(Outcome::Detached)
    } else {
        job_plan::run(engine, subject, src, dst, plan).map(Outcome::Done)
    }
}

pub fn copy(ctx: &Context, args: &CopyArgs<'_>) -> Exit {
    let (dst, sources) = (args.dst, args.sources);
    if let Some(remote) = sources
        .first()
        .and_then(|s| crate::remote::Remote::parse(s))
    {
        return if args.recursive {
            crate::remote_pull_tree::pull_tree(ctx, args, &remote)
        } else {
            pull(ctx, args, &remote)
        };
    }
    if let Some(remote) = crate::remote::Remote::parse(dst) {
        return if args.recursive {
            crate::remote_tree::push_tree(ctx, args, &remote)
        } else {
            crate::remote::push(ctx, args, &remote)
        };
    }
    // -P: a link named on the command line is copied as a link, which the
    // tree copy does.
    let link_as_link = args.follow == Follow::Never
        && fs::symlink_metadata(&sources[0]).is_ok_and(|m| m.is_symlink());
    let single = sources.len() == 1 && !args.recursive && !link_as_link;
    if let Err(err) = check_copy_flags(args, single) {
        ctx.out.failed(Op::Copy, None, &err);
        return err.exit;
    }
    if !single {
        return tree::copy(ctx, sources, dst, args);
    }
    let src = &sources[0];
    let mut subject = Subject {
        op: Op::Copy,
        src: shown(src),
        dst: shown(dst),
    };
    let result = copy_one(ctx, src, dst, args, &mut subject);
    // A signal that came while the copy published (or failed) ends it here.
    crate::signals::take();
    finish(ctx, &subject, args.verbose, result)
}

/// `ringxfer copy HOST:EXPORT/PATH DST`: a pull from another daemon into a
/// staged DST (or DST/NAME when DST is a directory), named only once the
/// whole file came and its CRC matched.
fn pull(ctx: &Context, args: &CopyArgs<'_>, remote: &crate::remote::Remote) -> Exit {
    let mut subject = Subject {
        op: Op::Copy,
        src: format!("{}:{}", remote.address, remote.path),
        dst: shown(args.dst),
    };
    let result = run_pull(ctx, args, remote, &mut subject);
    crate::signals::take();
    finish(ctx, &subject, args.verbose, result)
}

fn run_pull(
    ctx: &Context,
    args: &CopyArgs<'_>,
    remote: &crate::remote::Remote,
    subject: &mut Subject,
) -> Result<Outcome, CliError> {
    crate::remote::check_pull_flags(args)?;
    let path = ringxfer_ipc::proto::peer::RemotePath::new(&remote.path)
        .map_err(|e| CliError::usage(format!("remote path {}: {e}", remote.path)))?;
    let name = path.components().last().unwrap_or_default();
    let dst_path = match args.target {
        Target::AsName => args.dst.to_path_buf(),
        _ if args.dst.is_dir() => args.dst.join(name),
        _ => args.dst.to_path_buf(),
    };
    subject.dst = shown(&dst_path);
    let engine = ctx.engine(&args.job)?;
    crate::signals::arm();
    let part = PullPart::open(&dst_path, args.dest.resume)?;
    let socket = TcpStream::connect(&remote.address)
        .map_err(|err| CliError::io(format!("connect to {}", remote.address), &err));
    let socket = match socket {
        Ok(socket) => socket,
        Err(err) => {
            part.give_up(true);
            return Err(err);
        }
    };
    let mut plan = ctx.plan(RangeOpts::default(), args.job, args.dest.fsync);
    plan.resume = args.dest.resume;
    match job_plan::run_pull(&engine, subject, &socket, part.file(), &path, plan) {
        Ok(done) => {
            part.publish(args.dest.fsync)?;
            Ok(Outcome::Done(done))
        }
        Err(err) => {
            // Cut off: what came stays for `copy --resume`.
            if let Some(kept) = part.give_up(err.kind == "peer-gone") {
                report::note(&format!(
                    "kept {} for `ringxfer copy --resume`",
                    kept.display()
                ));
            }
            Err(err)
        }
    }
}

/// Refuses what the flags cannot mean together, before touching anything.
fn check_copy_flags(args: &CopyArgs<'_>, single: bool) -> Result<(), CliError> {
    if args.dest.resume {
        return Err(CliError::usage(
            "--resume continues a copy to or from another host (HOST:PATH); a local copy \
             starts over, and publishes only a whole file",
        ));
    }
    if args.dest.streams > 1 {
        return Err(CliError::usage(
            "--streams pushes a file to another host (HOST:PATH) over several connections; \
             a local copy needs none",
        ));
    }
    if !single && args.range.is_partial() {
        return Err(CliError::usage(
            "--offset and --length take one source file, not several or -r",
        ));
    }
    if !single && args.job.detach {
        return Err(CliError::usage(
            "--detach takes one source file, not several or -r",
        ));
    }
    if args.backup.is_some() {
        let with = if args.dest.no_clobber {
            Some("--no-clobber")
        } else if args.dest.in_place {
            Some("--in-place (a backup keeps the old file, which --in-place overwrites)")
        } else if args.job.detach {
            Some("--detach (the daemon publishes a detached copy, and makes no backups)")
        } else {
            None
        };
        if let Some(with) = with {
            return Err(CliError::usage(format!(
                "--backup cannot be combined with {with}"
            )));
        }
    }
    if args.job.reflink == Reflink::Always && args.job.sparse != Sparse::Auto {
        // As cp: a clone has the source's holes and its zeros as they are.
        return Err(CliError::usage(
            "--reflink=always can be used only with --sparse=auto",
        ));
    }
    if args.job.detach && args.dest.preserve {
        return Err(CliError::usage(
            "--preserve cannot be applied to a detached copy: no one is left to apply it once the data is written",
        ));
    }
    Ok(())
}

fn copy_one(
    ctx: &Context,
    src: &Path,
    dst: &Path,
    args: &CopyArgs<'_>,
    subject: &mut Subject,
) -> Result<Outcome, CliError> {
    let (src_file, src_meta) = open_source(src, "-r not specified; omitting directory")?;
    let dst_path = if args.target == Target::AsName {
        dst.to_path_buf()
    } else {
        resolve_destination(src, dst)?
    };
    // Report the file actually written, which scripts cannot otherwise know
    // when DST was a directory.
    subject.dst = shown(&dst_path);
    if args.replace().skips(&src_meta, &dst_path) {
        return Ok(Outcome::Skipped);
    }
    let plan = ctx.plan(args.range, args.job, args.dest.fsync);
    let cheap = cheap_single(ctx, args, &plan, (&src_file, &src_meta), &dst_path);
    // A file the CLI copies itself needs no engine (nor a daemon's answer).
    let engine = match cheap {
        Some(_) => None,
        None => Some(ctx.engine(&args.job)?),
    };
    // From here on something may be staged: a signal is taken, not fatal.
    crate::signals::arm();
    let publish = PublishOptions {
        in_place: args.dest.in_place,
        preserve: args.dest.preserve,
        fsync: args.dest.fsync,
        direct: ctx.strategy == Strategy::Direct,
        // Like cp without -p: a new file gets the source's permission bits,
        // less the umask (a replaced one keeps its own: see publish()).
        mode: Some(src_meta.mode() & 0o777),
    };
    // Refuses DST when it is SRC itself, by inode, before anything is written.
    let staged = stage(
        ctx,
        engine.as_ref(),
        &dst_path,
        Some(&src_meta),
        &publish,
        args.job,
    )
    .map_err(|e| CliError::staging(&dst_path, &e.with_source_path(src)))?;
    let plan = JobPlan {
        truncate: staged.wants_truncate(),
        ..plan
    };
    let xattrs = if args.dest.preserve {
        Xattrs::of_source(&src_file, src)
    } else {
        Xattrs::default()
    };
    let mut kept = None;
    let before_publish = |staged: &StagedFile| -> Result<(), CliError> {
        xattrs.apply_and_report(staged.file(), staged.path());
        if let Some(backup) = &args.backup {
            let dst = staged.path();
            kept = backup
                .keep(dst)
                .map_err(|e| CliError::path("cannot back up", dst, &e))?;
        }
        Ok(())
    };
    let cheap = cheap.filter(|_| cheap_copy::is_new_file(&staged));
    let outcome = match (cheap, engine) {
        (Some(data), _) => {
            let no_clone = args.job.reflink == Reflink::Never;
            let moved = copy_here(subject, &src_file, &staged, &data, no_clone);
            // A signal that came during the copy ends the command here,
            // before anything takes the name, as it cancels a job.
            crate::signals::take();
            publish_staged(staged, Some(&src_meta), moved, before_publish)?
        }
        (None, engine) => {
            let engine = match engine {
                Some(engine) => engine,
                None => ctx.engine(&args.job)?,
            };
            let src_meta = Some(&src_meta);
            run_staged(
                &engine,
                subject,
                &src_file,
                staged,
                src_meta,
                plan,
                before_publish,
            )?
        }
    };
    if matches!(outcome, Outcome::Done(_)) {
        ctx.out
            .copied(args.verbose, src, &dst_path, kept.as_deref());
    }
    Ok(outcome)
}

/// The data of a single file the CLI copies itself (see
/// [`cheap_copy`]): a regular file of little data, all in the page cache,
/// when the command asks nothing else of the engine, does not insist on
/// the daemon (--daemon-only), wants no progress objects (--json
/// --progress: the engine's events make them), and wants a new file
/// published as usual (not --in-place, whose truncation is the engine's,
/// nor --fsync).
fn cheap_single(
    ctx: &Context,
    args: &CopyArgs<'_>,
    plan: &JobPlan,
    (src, meta): (&fs::File, &fs::Metadata),
    dst: &Path,
) -> Option<cheap_copy::Data> {
    let asked = ctx.daemon_only
        || args.dest.in_place
        || args.dest.fsync
        || ctx.progress == crate::progress::Show::Json;
    if asked || !plan.asks_only_a_copy() || !meta.is_file() {
        return None;
    }
    // Past a tree's limit only onto a local file system (see SINGLE_FILE).
    let most = if meta.len() > cheap_copy::SMALL_FILE && dir_fds::is_local(dst) {
        cheap_copy::SINGLE_FILE
    } else {
        cheap_copy::SMALL_FILE
    };
    cheap_copy::cheap_data(src, meta.len(), meta.blocks() * 512, most, false)
}

/// Copies `data` of `src` into `staged` here (see [`cheap_copy`]), and
/// says how, as the engine would.
fn copy_here(
    subject: &Subject,
    src: &fs::File,
    staged: &StagedFile,
    data: &cheap_copy::Data,
    no_clone: bool,
) -> Result<Finished, CliError> {
    let start = std::time::Instant::now();
    let copied = cheap_copy::copy(src, staged.file(), data, no_clone).map_err(|err| {
        // The copy writes in order from the start: the staged file's size
        // is what reached it.
        let written = staged.file().metadata().map_or(0, |m| m.len());
        CliError::copy_written(subject.describe(), &err, written).on_engine(EngineUsed::Cli.name())
    })?;
    let (strategy, how) = if copied.read_write {
        (Strategy::Buffered, "read and written")
    } else {
        (Strategy::CopyRange, "copied with copy_file_range")
    };
    let holes = if data.runs() > 1 || data.bytes() < data.len {
        format!(" in {} runs (the rest is holes)", data.runs())
    } else {
        String::new()
    };
    Ok(Finished {
        bytes: copied.bytes,
        elapsed: start.elapsed(),
        strategy,
        engine: EngineUsed::Cli,
        note: Some(format!(
            "auto: {} bytes of data{holes}, all in the page cache, are {how} by the CLI, which costs less than a job",
            data.bytes()
        )),
        job: None,
        synced: false,
        checksums: None,
    })
}

/// Stages a destination: for a detached job, so that the daemon can
/// publish it (hidden names, where needed, carry the daemon's pid). Hidden
/// staging files for the same name that a killed run left behind are
/// removed first, and said so.
fn stage(
    ctx: &Context,
    engine: Option<&EngineHandle>,
    dst: &Path,
    source: Option<&std::fs::Metadata>,
    publish: &PublishOptions,
    job: JobOpts,
) -> Result<StagedFile, ringxfer_ipc::PublishError> {
    let daemon_pid = engine
        .and_then(|engine| engine.client().daemon_pid())
        .filter(|_| job.detach);
    let staged = match daemon_pid {
        Some(pid) => StagedFile::create_for_daemon(dst, source, publish, pid)?,
        None => StagedFile::create(dst, source, publish)?,
    };
    for stale in staged.remove_stale() {
        if !ctx.out.quiet {
            report::status(&format!(
                "removed {}, left by a ringxfer process that was killed while writing {}",
                stale.display(),
                dst.display()
            ));
        }
    }
    Ok(staged)
}

/// Runs a job into a staged destination and publishes it when it
/// completed; a failed job leaves nothing under the name (or the old file,
/// untouched). A detached job is published by the daemon instead.
fn run_staged(
    engine: &EngineHandle,
    subject: &Subject,
    src: impl AsFd,
    staged: StagedFile,
    preserve_from: Option<&std::fs::Metadata>,
    plan: JobPlan,
    before_publish: impl FnOnce(&StagedFile) -> Result<(), CliError>,
) -> Result<Outcome, CliError> {
    if plan.job.detach {
        return job_plan::detach_staged(engine, subject, src, staged, plan).map(Outcome::Detached);
    }
    let moved = job_plan::run(engine, subject, src, staged.file(), plan);
    publish_staged(staged, preserve_from, moved, before_publish)
}

/// Publishes `staged` once what `moved` into it completed; a failure leaves
/// nothing under DST's name (with --in-place: a file this made goes again;
/// an existing one keeps what was written).
fn publish_staged(
    staged: StagedFile,
    preserve_from: Option<&std::fs::Metadata>,
    moved: Result<Finished, CliError>,
    before_publish: impl FnOnce(&StagedFile) -> Result<(), CliError>,
) -> Result<Outcome, CliError> {
    match moved {
        Ok(done) => {
            if let Err(err) = before_publish(&staged) {
                staged.abandon();
                return Err(err);
            }
            staged
                .publish(preserve_from)
                .map_err(|e| CliError::publish(&e))?;
            Ok(Outcome::Done(done))
        }
        Err(err) => {
            staged.abandon();
            Err(err)
        }
    }
}

pub fn send(ctx: &Context, src: &Path, addr: &str, range: RangeOpts, job: JobOpts) -> Exit {
    let subject = Subject {
        op: Op::Send,
        src: shown(src),
        dst: addr.to_owned(),
    };
    let result = run_send(ctx, src, addr, range, job, &subject);
    finish(ctx, &subject, false, result)
}

fn run_send(
    ctx: &Context,
    src: &Path,
    addr: &str,
    range: RangeOpts,
    job: JobOpts,
    subject: &Subject,
) -> Result<Outcome, CliError> {
    holes_need_two_files(&job, "send writes to a socket")?;
    let (src_file, _) = open_source(src, "sending a directory is not supported")?;
    let engine = ctx.engine(&job)?;
    let socket =
        TcpStream::connect(addr).map_err(|err| CliError::io(format!("connect to {addr}"), &err))?;
    let outcome = run_or_detach(
        &engine,
        subject,
        &src_file,
        &socket,
        ctx.plan(range, job, false),
    )?;
    if matches!(outcome, Outcome::Done(_)) {
        // The engine holds its own copy of the descriptor and may close it
        // later than we exit; shutting down our side tells the peer at once
        // that the stream is complete. It may already be closed, which is
        // fine. (Not when detached: the job is still sending.)
        let _ = socket.shutdown(Shutdown::Write);
    }
    Ok(outcome)
}

/// `--sparse` is about a file copied into a file; a send or a receive has
/// a socket at one end, where it could mean nothing, so asking for it is a
/// mistake to say rather than ignore.
fn holes_need_two_files(job: &JobOpts, why: &str) -> Result<(), CliError> {
    if job.sparse == Sparse::Auto {
        return Ok(());
    }
    Err(CliError::usage(format!(
        "--sparse={} applies to copies into a file, and {why}",
        job.sparse.name()
    )))
}

pub fn recv(
    ctx: &Context,
    bind: &str,
    dst: &Path,
    length: Option<u64>,
    job: JobOpts,
    fsync: bool,
) -> Exit {
    let mut subject = Subject {
        op: Op::Recv,
        src: bind.to_owned(),
        dst: shown(dst),
    };
    let result = run_recv(ctx, bind, dst, length, job, fsync, &mut subject);
    finish(ctx, &subject, false, result)
}

fn run_recv(
    ctx: &Context,
    bind: &str,
    dst: &Path,
    length: Option<u64>,
    job: JobOpts,
    fsync: bool,
    subject: &mut Subject,
) -> Result<Outcome, CliError> {
    holes_need_two_files(&job, "recv reads from a socket")?;
    let engine = ctx.engine(&job)?;
    // Before listening, so a bad destination fails before a peer sends a
    // byte. Staged like copy's: the old file stays until the stream is whole.
    let publish = PublishOptions {
        fsync,
        direct: ctx.strategy == Strategy::Direct,
        mode: Some(RECV_MODE),
        ..PublishOptions::default()
    };
    let staged = stage(ctx, Some(&engine), dst, None, &publish, job)
        .map_err(|e| CliError::staging(dst, &e))?;
    let listener =
        TcpListener::bind(bind).map_err(|err| CliError::io(format!("bind {bind}"), &err))?;
    let local = listener
        .local_addr()
        .map_err(|err| CliError::io(format!("bind {bind}"), &err))?;
    // Printed even with --json (it is on stderr, not a result): with port 0
    // this line is the only way to learn the port.
    if !ctx.out.quiet {
        report::status(&format!("listening on {local}"));
    }
    let (socket, peer) = listener
        .accept()
        .map_err(|err| CliError::io(format!("accept on {local}"), &err))?;
    // Accept only one connection: stop listening before the transfer.
    drop(listener);
    subject.src = peer.to_string();
    let range = RangeOpts { offset: 0, length };
    let outcome = run_staged(
        &engine,
        subject,
        &socket,
        staged,
        None,
        ctx.plan(range, job, fsync),
        |_| Ok(()),
    )?;
    Ok(match outcome {
        // Without a length nothing says how much the peer meant to send:
        // say that the stream simply ended, and where.
        Outcome::Done(mut done) if length.is_none() => {
            let ended = format!("stream ended after {} bytes", done.bytes);
            done.note = Some(match done.note.take() {
                Some(note) => format!("{note}; {ended}"),
                None => ended,
            });
            Outcome::Done(done)
        }
        other => other,
    })
}

/// Mode of a file `recv` creates, before the umask (as the client stub's
/// recv_to_file).
const RECV_MODE: u32 = 0o644;
