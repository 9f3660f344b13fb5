//! Admission's decisions as a pipeline of pure steps: from a
//! `SubmitRequest`, its descriptors and what statx said about them to a
//! `JobSpec`, everything a job needs to start, or a refusal naming why.
//!
//! No step touches the ring or the engine: each takes what it decides on as
//! values (the daemon's `Limits`, the `Load` of the submit's connection,
//! user and daemon, the `Submitter`), so every refusal can be tested with
//! real descriptors and no ring (tests below). In order:
//!
//! 1. `precheck`, when the submit arrives (before any file system is
//!    asked): draining, the tag's size, the job limits. The engine adds
//!    the loopback check (engine/loopback.rs), then statxes the descriptors
//!    through the ring (admission.rs).
//! 2. `spec`, once statx answered: `transfer::plan` (descriptor kinds,
//!    access modes, offsets and length), the client's RLIMIT_FSIZE, the
//!    publish names, the queued-bytes limits, verification, and last the
//!    strategy (`choose`, which may switch O_DIRECT on, so nothing after it
//!    may refuse).
//!
//! The engine then builds the `Job` from the `JobSpec` (`Job::from_spec`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use ringxfer_ipc::proto::peer::FileMeta;
use ringxfer_ipc::{FailureKind, Priority, RateGroup, Strategy, SubmitRequest, MAX_TAG_BYTES};

use super::{PushTarget, Submitted};
use crate::engine::EngineConfig;
use crate::transfer::choose::{choose, Choice, ChoiceInputs};
use crate::transfer::{plan, Endpoints, FdKind, FdStat, Plan, Shape, Stats, TransferError};

/// The daemon's limits a submit is checked against.
#[derive(Debug, Clone, Copy)]
pub(in crate::engine) struct Limits {
    pub jobs_per_connection: usize,
    pub jobs: usize,
    /// `EngineConfig::user_job_cap`.
    pub jobs_per_user: usize,
    /// Bytes still to move (0: no limit).
    pub bytes_per_connection: u64,
    pub bytes_per_user: u64,
}

impl Limits {
    pub(crate) fn of(config: &EngineConfig) -> Limits {
        Limits {
            jobs_per_connection: config.max_jobs_per_connection,
            jobs: config.max_jobs,
            jobs_per_user: config.user_job_cap(),
            bytes_per_connection: config.max_queued_bytes_per_connection,
            bytes_per_user: config.max_queued_bytes_per_user,
        }
    }
}

/// What the submit's connection, its user and the whole daemon hold now.
/// Submits still being admitted count as jobs: each holds descriptors.
#[derive(Debug, Clone, Copy, Default)]
pub(in crate::engine) struct Load {
    pub connection_jobs: usize,
    pub jobs: usize,
    pub user_jobs: usize,
    /// Bytes their jobs still have to move (known lengths only).
    pub connection_bytes: u64,
    pub user_bytes: u64,
}

/// Who submitted a job, and what binds what the daemon does for them.
#[derive(Debug, Clone, Copy)]
pub(in crate::engine) struct Submitter {
    /// The connection it came on.
    pub session: usize,
    /// SO_PEERCRED's uid.
    pub uid: u32,
    /// The personality its operations run under (see `crate::privileges`).
    pub personality: u16,
    /// The client's RLIMIT_FSIZE, when known.
    pub fsize_limit: Option<u64>,
}

/// Everything a job needs to start, decided at admission.
pub(in crate::engine) struct JobSpec {
    pub id: u64,
    pub req: u64,
    pub tag: String,
    pub submitter: Submitter,
    pub ends: Endpoints,
    /// Where it starts in both ends and how much it moves.
    pub shape: Shape,
    /// The strategy, why, and what it switched on (O_DIRECT) to put back.
    pub choice: Choice,
    /// The client asked for `auto` (run-time fall back allowed).
    pub auto: bool,
    /// Clone first (`Some`), and whether the clone is required: then a
    /// refused one fails the job instead of going on with `choice`.
    pub reflink: Option<bool>,
    /// The devices of the source and the destination, for remembering a
    /// refused clone.
    pub devices: Option<(u64, u64)>,
    /// The directory and names to publish the destination under.
    pub publish: Option<PublishPlan>,
    /// Truncate the destination to the job's end once the bytes are in.
    pub truncate: bool,
    /// The client's RLIMIT_FSIZE, for a regular-file destination only.
    pub fsize_limit: Option<u64>,
    /// Bytes counted against the queued-bytes limits (0 for a stream).
    pub bytes: u64,
    pub priority: Priority,
    pub rate_limit: Option<u64>,
    /// The limit it shares with its connection's jobs of the same group.
    pub rate_group: Option<RateGroup>,
    pub progress: bool,
    pub detach: bool,
    /// Send no `Accepted`; the final event may be held back (coalesce.rs).
    pub quiet: bool,
    pub fsync: bool,
    pub verify: bool,
    /// A push to another daemon: where the file lands there, and what it
    /// is told of the file.
    pub remote: Option<(PushTarget, FileMeta)>,
}

/// Where a detached job's destination gets its name.
pub(in crate::engine) struct PublishPlan {
    pub dir: OwnedFd,
    pub name: CString,
    pub staged: Option<CString>,
}

/// A refused submit: why, and its descriptors, for the caller to close.
pub(in crate::engine) struct Refused {
    pub error: TransferError,
    pub fds: Submitted,
}

fn limit(message: String) -> TransferError {
    TransferError::new(FailureKind::LimitExceeded, message)
}

/// Step 1, when a submit arrives: what needs no file system. `draining` is
/// the refusal of a daemon that takes no new jobs, if it is draining.
pub(in crate::engine) fn precheck(
    submit: &SubmitRequest,
    uid: u32,
    draining: Option<TransferError>,
    load: &Load,
    limits: &Limits,
) -> Result<(), TransferError> {
    if let Some(e) = draining {
        return Err(e);
    }
    if submit.tag.len() > MAX_TAG_BYTES {
        return Err(TransferError::new(
            FailureKind::InvalidRequest,
            format!(
                "the job's tag is {} bytes; a tag is at most {MAX_TAG_BYTES}",
                submit.tag.len()
            ),
        ));
    }
    if load.connection_jobs >= limits.jobs_per_connection {
        return Err(limit(format!(
            "this connection already has {} unfinished jobs, the most allowed (--max-jobs-per-connection)",
            limits.jobs_per_connection
        )));
    }
    if load.jobs >= limits.jobs {
        return Err(limit(format!(
            "the daemon already runs {} jobs, the most allowed (--max-jobs)",
            limits.jobs
        )));
    }
    if load.user_jobs >= limits.jobs_per_user {
        return Err(limit(format!(
            "user {uid} already has {} unfinished jobs, the most allowed (--max-jobs-per-user, at \
             most a quarter of --max-jobs)",
            limits.jobs_per_user
        )));
    }
    Ok(())
}

/// What step 2 checks a stated submit against besides the submit itself.
#[derive(Debug, Clone, Copy)]
pub(in crate::engine) struct Context {
    pub submitter: Submitter,
    pub load: Load,
    pub limits: Limits,
    pub choice: ChoiceInputs,
    /// Send `Accepted` (a `SubmitBatch` job asking for neither progress
    /// nor detach goes without).
    pub acknowledge: bool,
    /// The two ends' file systems refused a clone before (`auto` does not
    /// ask again; see `reflink::CloneRefusals`).
    pub clone_refused: bool,
}

/// What statx said about the directory to publish in, if one came.
pub(in crate::engine) type DirStat = Option<Result<FdStat, i32>>;

/// Step 2, once statx said what the descriptors are (`stats`, `dir` the
/// publish directory's): the job `id` as it will run, or why not.
pub(in crate::engine) fn spec(
    id: u64,
    submit: SubmitRequest,
    fds: Submitted,
    stats: Stats,
    dir: DirStat,
    cx: &Context,
) -> Result<JobSpec, Refused> {
    let Submitted {
        src,
        dst,
        dir: dir_fd,
        remote,
    } = fds;
    let src_meta = match &stats[0] {
        Ok(s) => Some((s.perm, s.atime, s.mtime, s.size)),
        Err(_) => None,
    };
    let devices = match &stats {
        [Ok(s), Ok(d)] => Some((s.dev, d.dev)),
        _ => None,
    };
    // A push may send a directory (its mode and times, for a tree).
    let dir_source = remote.as_ref().is_some_and(|t| !t.pull);
    let plan = match plan(src, dst, &submit, (stats, dir_source)) {
        Ok(plan) => plan,
        Err(refused) => {
            let [src, dst] = refused.fds;
            let fds = Submitted {
                src,
                dst,
                dir: dir_fd,
                remote: None,
            };
            return Err(Refused {
                error: refused.error,
                fds,
            });
        }
    };
    let dir_kind = dir.and_then(|s| s.ok()).map(|s| s.kind);
    let decided = match (&remote, src_meta) {
        (Some(target), Some(meta)) => remote::decide(&plan, &submit, cx, meta, target),
        _ => decide(&plan, &submit, dir_fd.is_some(), dir_kind, cx),
    };
    match decided {
        Ok(decided) => {
            let remote = remote.zip(decided.push);
            // A push is checked end to end by the other daemon: there is
            // nothing here to read back.
            let verify = submit.verify && remote.is_none();
            Ok(JobSpec {
                devices,
                remote,
                verify,
                ..assemble(id, submit, plan, dir_fd, decided, cx)
            })
        }
        Err(error) => {
            let Endpoints { src, dst, .. } = plan.ends;
            let fds = Submitted {
                src,
                dst,
                dir: dir_fd,
                remote: None,
            };
            Err(Refused { error, fds })
        }
    }
}

/// What `decide` settled besides the plan.
struct Decided {
    fsize_limit: Option<u64>,
    publish: Option<(CString, Option<CString>)>,
    bytes: u64,
    choice: Choice,
    reflink: Option<bool>,
    /// For a push: what the other daemon is told of the file.
    push: Option<FileMeta>,
}

/// The checks of a planned job, in the order the client hears of them.
fn decide(
    plan: &Plan,
    submit: &SubmitRequest,
    has_dir: bool,
    dir_kind: Option<FdKind>,
    cx: &Context,
) -> Result<Decided, TransferError> {
    let fsize_limit = fsize(cx.submitter.fsize_limit, plan)?;
    let publish = match submit.publish.as_ref().filter(|_| has_dir) {
        Some(to) => Some(crate::engine::publish::check(
            to,
            dir_kind,
            plan.ends.dst_kind,
        )?),
        None => None,
    };
    let bytes = plan.total.unwrap_or(0);
    byte_limits(bytes, cx.submitter.uid, &cx.load, &cx.limits)?;
    if submit.verify {
        verifiable(plan)?;
    }
    let reflink = crate::transfer::reflink::wanted(
        plan,
        submit.strategy,
        submit.reflink,
        submit.truncate,
        cx.clone_refused,
    )?;
    // A required clone has no rung after it.
    let ladder = match reflink {
        Some(true) => Strategy::Reflink,
        _ => submit.strategy,
    };
    // Last: a direct choice switches O_DIRECT on, to be put back by the job.
    let choice = choose(plan, ladder, cx.choice)?;
    Ok(Decided {
        fsize_limit,
        publish,
        bytes,
        choice,
        reflink,
        push: None,
    })
}

/// The client's RLIMIT_FSIZE binds what the daemon writes for it into a
/// regular file: a job whose end is known and past it is refused. The
/// limit the job runs under (for a stream of unknown length) is returned.
fn fsize(limit: Option<u64>, plan: &Plan) -> Result<Option<u64>, TransferError> {
    let limit = limit.filter(|_| plan.ends.dst_kind == FdKind::File);
    match crate::transfer::fsize::fsize_refusal(limit, plan.dst_start, plan.total) {
        Some(e) => Err(e),
        None => Ok(limit),
    }
}

/// The queued-bytes limits (0: none) of the connection, then of the user.
fn byte_limits(bytes: u64, uid: u32, load: &Load, limits: &Limits) -> Result<(), TransferError> {
    let over = |limit: u64, queued: u64| limit > 0 && queued.saturating_add(bytes) > limit;
    if over(limits.bytes_per_connection, load.connection_bytes) {
        return Err(limit(format!(
            "this connection's jobs already have {} bytes to move; {bytes} more would pass \
             the limit of {} (--max-queued-bytes-per-connection)",
            load.connection_bytes, limits.bytes_per_connection
        )));
    }
    if over(limits.bytes_per_user, load.user_bytes) {
        return Err(limit(format!(
            "user {uid}'s jobs already have {} bytes to move; {bytes} more would pass the limit of {} \
             (--max-queued-bytes-per-user)",
            load.user_bytes, limits.bytes_per_user
        )));
    }
    Ok(())
}

/// Why a job asking for verification cannot have it, if it cannot.
fn verifiable(plan: &Plan) -> Result<(), TransferError> {
    let refuse = |why: &str| Err(TransferError::new(FailureKind::InvalidRequest, why));
    if plan.ends.dst_kind != FdKind::File {
        return refuse(&format!(
            "cannot verify a transfer into a {}: what landed cannot be read back",
            plan.ends.dst_kind
        ));
    }
    if plan.ends.src_kind != FdKind::File {
        return refuse(&format!(
            "cannot verify a transfer from a {}: its bytes cannot be read again",
            plan.ends.src_kind
        ));
    }
    if plan.dst_append {
        return refuse("cannot verify a transfer into an O_APPEND file: where its bytes land is not known in advance");
    }
    // SAFETY: F_GETFL only reads the descriptor's flags; the descriptor is
    // open (the plan owns it).
    let flags = unsafe { libc::fcntl(plan.ends.dst.as_raw_fd(), libc::F_GETFL) };
    if flags >= 0 && flags & libc::O_ACCMODE == libc::O_WRONLY {
        return refuse(
            "verification reads the destination back, but it was opened write-only: open it read-write",
        );
    }
    Ok(())
}

/// The spec of an admitted job: nothing can refuse it any more.
fn assemble(
    id: u64,
    submit: SubmitRequest,
    plan: Plan,
    dir: Option<OwnedFd>,
    decided: Decided,
    cx: &Context,
) -> JobSpec {
    let truncate = submit.truncate && plan.ends.dst_kind == FdKind::File && !plan.dst_append;
    let publish = decided
        .publish
        .zip(dir)
        .map(|((name, staged), dir)| PublishPlan { dir, name, staged });
    let (ends, shape) = plan.into_parts();
    JobSpec {
        id,
        req: submit.req,
        tag: submit.tag,
        submitter: cx.submitter,
        ends,
        shape,
        choice: decided.choice,
        auto: submit.strategy == Strategy::Auto,
        reflink: decided.reflink,
        devices: None,
        publish,
        truncate,
        fsize_limit: decided.fsize_limit,
        bytes: decided.bytes,
        priority: submit.priority,
        rate_limit: submit.rate_limit,
        rate_group: submit.rate_group.filter(|g| g.rate > 0),
        progress: submit.progress,
        detach: submit.detach,
        quiet: !cx.acknowledge,
        fsync: submit.fsync,
        verify: submit.verify,
        remote: None,
    }
}

mod remote;

#[cfg(test)]
mod tests;
