//! `ringxfer copy -r HOST[:PORT]:EXPORT[/PATH] DST`: a tree pulled from
//! another daemon. Its listing comes first (`List`, served like a file and
//! checked by CRC-32C, into a memfd); then the directories are made here
//! and the regular files pulled, a few at once over a few kept
//! connections, each written to `.NAME.ringxfer-part` (pull_part.rs) and
//! named only once whole, with its mode and times. Into an existing
//! directory DST the tree keeps its own name, as with cp -r; otherwise it
//! takes DST's.
//!
//! `--resume` goes on with a tree pull cut off: a file already here with
//! the listing's size and modification time is left alone (rsync's quick
//! check: a pulled file gets the other side's times to the nanosecond),
//! and a part kept beside a file is continued from its first block that
//! differs (a pull cut off keeps its part, as a single file's does).
//!
//! Once every file is in, the directories get the listing's permission
//! bits and modification times, deepest first and the pulled directory
//! itself last, so that nothing written later changes them (as `cp -a`
//! leaves them).
//!
//! Not carried yet: symbolic links and special files (each skipped with a
//! note).

use std::collections::VecDeque;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ringxfer_ipc::proto::peer::{EntryKind, ListEntry, Listing, RemotePath, Timestamp};
use ringxfer_ipc::proto::PeerConnection;
use ringxfer_ipc::{JobHandle, TransferOptions};

use crate::context::{Context, CopyArgs, Target};
use crate::engine_handle::EngineHandle;
use crate::error::{CliError, Exit};
use crate::pull_part::PullPart;
use crate::remote::Remote;
use crate::remote_listing::{fetch_listing, same_file};
use crate::report::{self, Op, Subject, Tally};

/// Pulls in flight at once, as for pushes (remote_tree.rs).
const WINDOW: usize = 8;

pub fn pull_tree(ctx: &Context, args: &CopyArgs<'_>, remote: &Remote) -> Exit {
    let started = Instant::now();
    let result = list(ctx, args, remote);
    let (engine, listing, root, socket) = match result {
        Ok(found) => found,
        Err(err) => {
            ctx.out.failed(Op::Copy, None, &err);
            return err.exit;
        }
    };
    let mut plan = ctx.plan(args.range, args.job, args.dest.fsync);
    plan.resume = args.dest.resume;
    // --rate-limit caps the whole tree, its files together, as for a
    // local tree (rsync --bwlimit).
    plan.whole_command = true;
    let mut pulls = Pulls {
        ctx,
        engine: &engine,
        remote,
        opts: plan.options(String::new()),
        fsync: args.dest.fsync,
        tally: Tally::default(),
        in_flight: VecDeque::with_capacity(WINDOW),
        idle: vec![socket],
        unchanged: 0,
        dirs: Vec::new(),
    };
    if pulls.make_dir(&root) {
        // The pulled directory's own mode and time too, as `cp -a` gives
        // them; last, as it is the shallowest.
        pulls.dirs.push((root.clone(), listing.mode, listing.mtime));
    }
    for entry in listing.entries {
        pulls.take(&root, entry);
    }
    while !pulls.in_flight.is_empty() {
        pulls.wait_oldest();
    }
    pulls.give_dirs_their_times();
    if pulls.unchanged > 0 {
        report::note(&format!(
            "left alone {} file(s) already here with the same size and modification time (--resume)",
            pulls.unchanged
        ));
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

/// The engine, the listing of the remote directory, where it lands, and
/// the connection it came on (kept for the files).
fn list(
    ctx: &Context,
    args: &CopyArgs<'_>,
    remote: &Remote,
) -> Result<(EngineHandle, Listing, PathBuf, TcpStream), CliError> {
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
    let (listing, socket) = fetch_listing(&engine, remote, &path)?;
    Ok((engine, listing, root, socket))
}

/// A pull in flight.
struct Pending {
    subject: Subject,
    handle: JobHandle,
    part: PullPart,
    socket: TcpStream,
    /// Its path in the listing, and here.
    file: (String, PathBuf),
    /// It went on with a kept connection.
    continued: bool,
}

/// The pulls of one command, a few in flight.
struct Pulls<'a> {
    ctx: &'a Context,
    engine: &'a EngineHandle,
    remote: &'a Remote,
    /// Each file's options: `opts.resume` is `--resume`.
    opts: TransferOptions,
    fsync: bool,
    tally: Tally,
    in_flight: VecDeque<Pending>,
    /// Connections whose last file came whole: the daemon kept their
    /// conversations for the next file.
    idle: Vec<TcpStream>,
    /// Files `--resume` found here already.
    unchanged: u64,
    /// The directories made here, with the listing's mode and time.
    dirs: Vec<(PathBuf, u32, Timestamp)>,
}

impl Pulls<'_> {
    /// One entry of the listing: a directory made, a file pulled, anything
    /// else skipped with a note.
    fn take(&mut self, root: &Path, entry: ListEntry) {
        let local = root.join(&entry.path);
        match entry.kind {
            EntryKind::Dir => {
                if self.make_dir(&local) {
                    self.dirs.push((local, entry.mode, entry.mtime));
                }
            }
            EntryKind::File if self.opts.resume && up_to_date(&local, &entry) => {
                self.tally.items += 1;
                self.tally.skipped += 1;
                self.unchanged += 1;
            }
            EntryKind::File => {
                if self.in_flight.len() == WINDOW {
                    self.wait_oldest();
                }
                self.start(&entry.path, &local, false);
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

    /// Each directory gets its mode and modification time, deepest first
    /// (a child's times would change its parent's).
    fn give_dirs_their_times(&mut self) {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(path, ..)| std::cmp::Reverse(path.components().count()));
        for (dir, mode, mtime) in dirs {
            if let Err(e) = set_dir_meta(&dir, mode, mtime) {
                let what = format!("set the mode and times of {}", dir.display());
                self.dir_failed(&dir, CliError::io(what, &e));
            }
        }
    }

    /// Makes `dir` unless it is a directory already; whether it is one now
    /// (a symbolic link to one is not).
    fn make_dir(&mut self, dir: &Path) -> bool {
        let real_dir = |dir: &Path| fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
        match fs::create_dir(dir) {
            Ok(()) => {
                self.tally.dirs += 1;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && real_dir(dir) => true,
            Err(e) => {
                self.dir_failed(dir, CliError::io(format!("mkdir {}", dir.display()), &e));
                false
            }
        }
    }

    /// Counts and reports a failure about directory `dir` here.
    fn dir_failed(&mut self, dir: &Path, err: CliError) {
        let subject = Subject {
            op: Op::Copy,
            src: format!("{}:{}", self.remote.address, self.remote.path),
            dst: dir.display().to_string(),
        };
        self.count_failure(&subject, &err);
    }

    /// Stages, connects and submits one file (on a kept connection if one
    /// is idle, unless `fresh`); a failure is counted.
    fn start(&mut self, rel: &str, local: &Path, fresh: bool) {
        let from = format!("{}/{rel}", self.remote.path.trim_end_matches('/'));
        let subject = Subject {
            op: Op::Copy,
            src: format!("{}:{from}", self.remote.address),
            dst: local.display().to_string(),
        };
        match self.submit(&from, local, &subject, fresh) {
            Ok((handle, part, socket, continued)) => self.in_flight.push_back(Pending {
                subject,
                handle,
                part,
                socket,
                file: (rel.to_string(), local.to_path_buf()),
                continued,
            }),
            Err(err) => self.count_failure(&subject, &err),
        }
    }

    /// The job, its part, its socket, and whether it continues a kept
    /// connection.
    fn submit(
        &mut self,
        from: &str,
        local: &Path,
        subject: &Subject,
        fresh: bool,
    ) -> Result<(JobHandle, PullPart, TcpStream, bool), CliError> {
        let path = RemotePath::new(from)
            .map_err(|e| CliError::usage(format!("remote path {from}: {e}")))?;
        let part = PullPart::open(local, self.opts.resume)?;
        let (socket, connection) = match self.idle.pop().filter(|_| !fresh) {
            Some(socket) => (socket, PeerConnection::Continue),
            None => match TcpStream::connect(&self.remote.address) {
                Ok(socket) => (socket, PeerConnection::Keep),
                Err(err) => {
                    part.give_up(true);
                    let what = format!("connect to {}", self.remote.address);
                    return Err(CliError::io(what, &err));
                }
            },
        };
        let opts = TransferOptions {
            tag: ringxfer_ipc::fit_tag(&subject.describe()),
            connection,
            ..self.opts.clone()
        };
        let continued = connection == PeerConnection::Continue;
        match self
            .engine
            .client()
            .submit_pull(&socket, part.file(), &path, &opts)
        {
            Ok(handle) => Ok((handle, part, socket, continued)),
            Err(err) => {
                part.give_up(true);
                Err(CliError::client(subject.describe(), &err))
            }
        }
    }

    /// Waits for the oldest pull, and names its file if it came whole;
    /// one whose kept connection was gone goes once more on a new one.
    fn wait_oldest(&mut self) {
        let Some(p) = self.in_flight.pop_front() else {
            return;
        };
        let done = p.handle.wait();
        match done {
            Ok(done) => {
                // The job succeeded, so its conversation is kept.
                self.idle.push(p.socket);
                match p.part.publish(self.fsync) {
                    Ok(()) => {
                        self.tally.items += 1;
                        self.tally.files += 1;
                        self.tally.bytes += done.bytes;
                    }
                    Err(err) => self.count_failure(&p.subject, &err),
                }
            }
            Err(err) if p.continued && crate::remote::kept_connection_lost(&err) => {
                p.part.give_up(true);
                let (rel, local) = p.file;
                self.start(&rel, &local, true);
            }
            Err(err) => {
                // Cut off: what came stays for `copy -r --resume`.
                let err = CliError::job(p.subject.describe(), &err);
                if let Some(kept) = p.part.give_up(err.kind == "peer-gone") {
                    report::note(&format!(
                        "kept {} for `ringxfer copy -r --resume`",
                        kept.display()
                    ));
                }
                self.count_failure(&p.subject, &err);
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

/// `local` is a regular file of `entry`'s size and modification time.
fn up_to_date(local: &Path, entry: &ListEntry) -> bool {
    fs::symlink_metadata(local).is_ok_and(|m| m.is_file() && same_file(&m, entry.size, entry.mtime))
}

/// What of a directory's mode comes along: permission bits, setgid (new
/// files take its group) and sticky; never setuid.
const DIR_MODE_BITS: u32 = 0o3777;

/// Gives directory `dir` permission bits `mode` and modification time
/// `mtime` (its access time is left alone: the listing has none).
fn set_dir_meta(dir: &Path, mode: u32, mtime: Timestamp) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // The directory made here, never what a link there leads to.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)?;
    file.set_permissions(fs::Permissions::from_mode(mode & DIR_MODE_BITS))?;
    let secs = u64::try_from(mtime.secs).unwrap_or(0);
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(secs, mtime.nanos.min(999_999_999));
    file.set_times(fs::FileTimes::new().set_modified(when))
}
