//! Handing two open descriptors to the engine and waiting for the outcome.
//!
//! Every command opens its own files and sockets before calling this, so that
//! an open error names the path or address, and so that copy can refuse to
//! truncate its own source before anything is submitted.

use std::os::fd::AsFd;

use ringxfer_ipc::proto::peer::RemotePath;
use ringxfer_ipc::publish::StagedFile;
use ringxfer_ipc::{
    Client, ClientError, JobHandle, Priority, RateGroup, Reflink, Sparse, Strategy, TransferOptions,
};

use crate::args::JobOpts;
use crate::engine_handle::EngineHandle;
use crate::error::CliError;
use crate::progress::{self, Moving, Show};
use crate::report::{Finished, Subject};

/// How to run one transfer, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct JobPlan {
    pub offset: u64,
    pub length: Option<u64>,
    pub strategy: Strategy,
    /// How to show progress: a bar, objects (--json --progress), or not.
    pub progress: Show,
    pub job: JobOpts,
    /// Ask the engine to fdatasync the destination before completing.
    pub fsync: bool,
    /// Ask the engine to truncate the destination to the job's end once
    /// every byte is in: an in-place destination, which is never truncated
    /// before the engine accepted the job.
    pub truncate: bool,
    /// --rate-limit caps all the command's jobs together (several files, a
    /// tree), as rsync --bwlimit does, rather than each job.
    pub whole_command: bool,
    /// Continue a push the other daemon kept a part of (--resume).
    pub resume: bool,
}

/// The command's group of jobs sharing its --rate-limit: the id is the
/// connection's own, and a command has one.
const COMMAND_GROUP: u64 = 1;

impl JobPlan {
    /// Whether the command asks nothing of the engine that a small file
    /// could use (a strategy, a rate limit, a priority, holes made or
    /// filled, a clone or nothing, a check, a detached job, a range): the
    /// CLI may then copy such a file itself (see [`crate::cheap_copy`]).
    pub fn asks_only_a_copy(&self) -> bool {
        let job = &self.job;
        self.strategy == Strategy::Auto
            && self.offset == 0
            && self.length.is_none()
            && job.rate_limit.is_none()
            && job.priority == Priority::Normal
            && job.sparse == Sparse::Auto
            && job.reflink != Reflink::Always
            && !job.verify
            && !job.detach
    }

    /// The job as the stub sends it; `tag` is what the daemon logs and lists.
    pub fn options(&self, tag: String) -> TransferOptions {
        TransferOptions {
            tag: ringxfer_ipc::fit_tag(&tag),
            offset: self.offset,
            length: self.length,
            dest_offset: 0,
            strategy: self.strategy,
            // Progress events cost the engine work; ask only when they are shown.
            progress: self.progress.any(),
            priority: self.job.priority,
            rate_limit: self.job.rate_limit.filter(|_| !self.whole_command),
            rate_group: self
                .job
                .rate_limit
                .filter(|_| self.whole_command)
                .map(|rate| RateGroup {
                    id: COMMAND_GROUP,
                    rate,
                }),
            detach: self.job.detach,
            fsync: self.fsync,
            verify: self.job.verify,
            truncate: self.truncate,
            reflink: self.job.reflink,
            sparse: self.job.sparse,
            resume: self.resume,
            ..TransferOptions::default()
        }
    }
}

/// Runs the job to its end, reading its events on this thread: the
/// client then starts no event thread, which would be woken for each
/// event only to wake this one, and be joined at the end.
pub fn run(
    engine: &EngineHandle,
    subject: &Subject,
    src: impl AsFd,
    dst: impl AsFd,
    plan: JobPlan,
) -> Result<Finished, CliError> {
    run_with(engine, subject, plan, |client, opts| {
        client.submit(src, dst, opts)
    })
}

/// As [`run`], a push of `src` to another daemon through `socket`, to land
/// as `path` there (making its missing directories with `mkdir`).
pub fn run_remote(
    engine: &EngineHandle,
    subject: &Subject,
    src: impl AsFd,
    socket: impl AsFd,
    path: &RemotePath,
    mkdir: bool,
    plan: JobPlan,
) -> Result<Finished, CliError> {
    run_with(engine, subject, plan, |client, opts| {
        client.submit_remote(src, socket, path, mkdir, opts)
    })
}

/// As [`run`], a pull of `path` from another daemon through `socket` into
/// `dst`.
pub fn run_pull(
    engine: &EngineHandle,
    subject: &Subject,
    socket: impl AsFd,
    dst: impl AsFd,
    path: &RemotePath,
    plan: JobPlan,
) -> Result<Finished, CliError> {
    run_with(engine, subject, plan, |client, opts| {
        client.submit_pull(socket, dst, path, opts)
    })
}

/// Submits with `submit` and follows the job to its end.
fn run_with(
    engine: &EngineHandle,
    subject: &Subject,
    plan: JobPlan,
    submit: impl FnOnce(&Client, &TransferOptions) -> Result<JobHandle, ClientError>,
) -> Result<Finished, CliError> {
    let mut events = engine.client().dispatch_here();
    let handle = submit(engine.client(), &plan.options(subject.describe()))
        .map_err(|err| CliError::client(subject.describe(), &err))?;
    let moving = Moving {
        op: subject.op.name(),
        current: Some(&subject.src),
    };
    let signals = crate::signals::fd().map(|fd| progress::Also {
        fd,
        act: crate::signals::take,
    });
    let done = progress::wait(&mut events, signals, &handle, plan.progress, moving)
        .map_err(|err| CliError::job(subject.describe(), &err).on_engine(engine.kind().name()))?;
    Ok(Finished::from_completion(done, engine.kind()))
}

/// Submits a detached job into a staged destination, which the daemon
/// publishes when the job completes (this process is gone by then): it
/// gets the destination's directory and name with the job. Returns the id
/// once the daemon admitted the job; a refused job's staged file is dropped
/// (nothing appears, an existing destination is untouched).
pub fn detach_staged(
    engine: &EngineHandle,
    subject: &Subject,
    src: impl AsFd,
    staged: StagedFile,
    plan: JobPlan,
) -> Result<u64, CliError> {
    let opts = JobPlan {
        progress: Show::Off,
        ..plan
    }
    .options(subject.describe());
    let target = staged.for_daemon().map_err(|e| CliError::publish(&e))?;
    let handle = match &target {
        Some((dir, to)) => {
            engine
                .client()
                .submit_publish(src, staged.file(), dir, to.clone(), &opts)
        }
        // In place: nothing to publish.
        None => engine.client().submit(src, staged.file(), &opts),
    }
    .map_err(|err| CliError::client(subject.describe(), &err))?;
    match handle.job_id() {
        Ok(id) => {
            staged.hand_over();
            Ok(id)
        }
        Err(err) => {
            // Refused: nothing of it may stay (an in-place file this made
            // goes too).
            staged.abandon();
            Err(CliError::job(subject.describe(), &err).on_engine(engine.kind().name()))
        }
    }
}

/// Submits a detached job and returns its id once the daemon admitted it.
pub fn detach(
    engine: &EngineHandle,
    subject: &Subject,
    src: impl AsFd,
    dst: impl AsFd,
    plan: JobPlan,
) -> Result<u64, CliError> {
    detach_with(engine, subject, plan, |client, opts| {
        client.submit(src, dst, opts)
    })
}

/// As [`detach`], a push to another daemon (as [`run_remote`]): the
/// daemon dials it again by itself if the connection is lost.
pub fn detach_remote(
    engine: &EngineHandle,
    subject: &Subject,
    src: impl AsFd,
    socket: impl AsFd,
    path: &RemotePath,
    plan: JobPlan,
) -> Result<u64, CliError> {
    detach_with(engine, subject, plan, |client, opts| {
        client.submit_remote(src, socket, path, false, opts)
    })
}

fn detach_with(
    engine: &EngineHandle,
    subject: &Subject,
    plan: JobPlan,
    submit: impl FnOnce(&Client, &TransferOptions) -> Result<JobHandle, ClientError>,
) -> Result<u64, CliError> {
    let plan = JobPlan {
        progress: Show::Off,
        ..plan
    };
    let handle = submit(engine.client(), &plan.options(subject.describe()))
        .map_err(|err| CliError::client(subject.describe(), &err))?;
    // Waits for Accepted only: a refusal (a limit, a bad descriptor) comes
    // back here as the job's failure, anything later belongs to `wait ID`.
    handle
        .job_id()
        .map_err(|err| CliError::job(subject.describe(), &err).on_engine(engine.kind().name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_is_the_jobs_or_the_whole_commands() {
        let plan = JobPlan {
            offset: 0,
            length: None,
            strategy: Strategy::Auto,
            progress: Show::Off,
            job: JobOpts {
                rate_limit: Some(50 << 20),
                ..JobOpts::default()
            },
            fsync: false,
            truncate: false,
            whole_command: false,
            resume: false,
        };
        let one = plan.options("a".into());
        assert_eq!((one.rate_limit, one.rate_group), (Some(50 << 20), None));
        let all = JobPlan {
            whole_command: true,
            ..plan
        }
        .options("b".into());
        assert_eq!(all.rate_limit, None);
        assert_eq!(all.rate_group.map(|g| g.rate), Some(50 << 20));
    }
}
