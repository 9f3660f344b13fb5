//! Handing two open descriptors to the engine and waiting for the outcome.
//!
//! Every command opens its own files and sockets before calling this, so that
//! an open error names the path or address, and so that copy can refuse to
//! truncate its own source before anything is submitted.

use std::os::fd::AsFd;

use ringxfer_ipc::publish::StagedFile;
use ringxfer_ipc::{Strategy, TransferOptions};

use crate::args::JobOpts;
use crate::engine_handle::EngineHandle;
use crate::error::CliError;
use crate::progress;
use crate::report::{Finished, Subject};

/// How to run one transfer, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct JobPlan {
    pub offset: u64,
    pub length: Option<u64>,
    pub strategy: Strategy,
    /// Draw a progress bar (stderr is a terminal, no -q, no --json).
    pub progress: bool,
    pub job: JobOpts,
    /// Ask the engine to fdatasync the destination before completing.
    pub fsync: bool,
    /// Ask the engine to truncate the destination to the job's end once
    /// every byte is in: an in-place destination, which is never truncated
    /// before the engine accepted the job.
    pub truncate: bool,
}

impl JobPlan {
    /// The job as the stub sends it; `tag` is what the daemon logs and lists.
    pub fn options(&self, tag: String) -> TransferOptions {
        TransferOptions {
            tag: ringxfer_ipc::fit_tag(&tag),
            offset: self.offset,
            length: self.length,
            dest_offset: 0,
            strategy: self.strategy,
            // Progress events cost the engine work; ask only when they are shown.
            progress: self.progress,
            priority: self.job.priority,
            rate_limit: self.job.rate_limit,
            detach: self.job.detach,
            fsync: self.fsync,
            verify: self.job.verify,
            truncate: self.truncate,
            reflink: self.job.reflink,
            sparse: self.job.sparse,
            ..TransferOptions::default()
        }
    }
}

/// Runs the job to its end.
pub fn run(
    engine: &EngineHandle,
    subject: &Subject,
    src: impl AsFd,
    dst: impl AsFd,
    plan: JobPlan,
) -> Result<Finished, CliError> {
    let handle = engine
        .client()
        .submit(src, dst, &plan.options(subject.describe()))
        .map_err(|err| CliError::client(subject.describe(), &err))?;
    let done = progress::wait(handle, plan.progress)
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
        progress: false,
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
    let plan = JobPlan {
        progress: false,
        ..plan
    };
    let handle = engine
        .client()
        .submit(src, dst, &plan.options(subject.describe()))
        .map_err(|err| CliError::client(subject.describe(), &err))?;
    // Waits for Accepted only: a refusal (a limit, a bad descriptor) comes
    // back here as the job's failure, anything later belongs to `wait ID`.
    handle
        .job_id()
        .map_err(|err| CliError::job(subject.describe(), &err).on_engine(engine.kind().name()))
}
