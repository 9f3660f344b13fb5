//! `cancel`, `jobs`, `status` and `wait`: commands about jobs by id.
//!
//! They talk to the daemon only: an in-process engine knows no job but its
//! own, so no daemon is exit 3 here, whatever --daemon-only says.

use std::time::Duration;

use ringxfer_ipc::{FailureKind, JobError};
use serde::Serialize;

use crate::context::Context;
use crate::engine_handle::{EngineHandle, Fallback};
use crate::error::{CliError, Exit};
use crate::listing;
use crate::progress::{self, Moving};
use crate::report::{self, json_line, ChecksumsJson, Finished, Op};
use ringxfer::size::{format_bytes, throughput};

/// How long `cancel` waits to say how the job ended before saying only that
/// the daemon took the request.
const CANCEL_SETTLE: Duration = Duration::from_secs(5);

/// Connects to the daemon, or says that this command needs one.
fn daemon(ctx: &Context, op: Op) -> Result<EngineHandle, CliError> {
    EngineHandle::connect(&ctx.socket, Fallback::Refuse).map_err(|err| {
        if err.exit == Exit::Unreachable {
            CliError {
                context: format!("`ringxfer {}` needs a running daemon", op.name()),
                ..err
            }
        } else {
            err
        }
    })
}

fn finish(ctx: &Context, op: Op, result: Result<Exit, CliError>) -> Exit {
    match result {
        Ok(exit) => exit,
        Err(err) => {
            ctx.out.failed(op, None, &err);
            err.exit
        }
    }
}

pub fn jobs(ctx: &Context) -> Exit {
    let result = daemon(ctx, Op::Jobs).and_then(|engine| {
        let jobs = engine
            .client()
            .jobs()
            .map_err(|err| CliError::client("listing jobs", &err))?;
        if ctx.out.json {
            // One object per line, like every other --json result, so that
            // `jq`/`grep` take the listing a job at a time; no jobs, no lines.
            for info in &jobs {
                json_line(&listing::job_json(Op::Jobs, info));
            }
        } else if jobs.is_empty() {
            if ctx.out.chatty() {
                report::status("no jobs");
            }
        } else {
            listing::print_stdout(&listing::table(&jobs));
        }
        Ok(Exit::Done)
    });
    finish(ctx, Op::Jobs, result)
}

pub fn status(ctx: &Context, job: u64) -> Exit {
    let result = daemon(ctx, Op::Status).and_then(|engine| {
        let info = engine
            .client()
            .status(job)
            .map_err(|err| CliError::client(format!("job {job}"), &err))?;
        if ctx.out.json {
            json_line(&listing::job_json(Op::Status, &info));
        } else {
            listing::print_stdout(&listing::details(&info));
        }
        Ok(Exit::Done)
    });
    finish(ctx, Op::Status, result)
}

#[derive(Serialize)]
struct WaitJson<'a> {
    op: &'static str,
    job: u64,
    bytes: u64,
    elapsed_s: f64,
    throughput_bps: f64,
    strategy: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
    synced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    checksums: Option<ChecksumsJson>,
}

/// Follows a job to its end; exit 0 if it completed, 1 if it failed (or
/// there is no such job), as `copy` would have.
pub fn wait(ctx: &Context, job: u64) -> Exit {
    let result = daemon(ctx, Op::Wait).and_then(|engine| {
        let mut events = engine.client().dispatch_here();
        let handle = engine
            .client()
            .wait_job(job, ctx.progress.any())
            .map_err(|err| CliError::client(format!("job {job}"), &err))?;
        let moving = Moving {
            op: Op::Wait.name(),
            current: None,
        };
        let done = progress::wait(&mut events, None, &handle, ctx.progress, moving)
            .map_err(|err| CliError::job(format!("job {job}"), &err))?;
        let done = Finished::from_completion(done, engine.kind());
        if ctx.out.json {
            json_line(&WaitJson {
                op: Op::Wait.name(),
                job,
                bytes: done.bytes,
                elapsed_s: done.elapsed.as_secs_f64(),
                throughput_bps: throughput(done.bytes, done.elapsed),
                strategy: done.strategy.name(),
                note: done.note.as_deref(),
                synced: done.synced,
                checksums: done.checksums.map(ChecksumsJson::from),
            });
        } else if !ctx.out.quiet {
            report::status(&format!(
                "job {job}: {}",
                report::transfer_text(Op::Wait, &done)
            ));
        }
        Ok(Exit::Done)
    });
    finish(ctx, Op::Wait, result)
}

#[derive(Serialize)]
struct CancelJson<'a> {
    op: &'static str,
    job: u64,
    /// `cancelled`, `completed` (it finished first), `failed`, or
    /// `cancelling` (still winding down when we stopped waiting).
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
}

/// Asks the daemon to cancel the job, then waits a little to say how it
/// ended: a job cancelled mid-write ends once its in-flight I/O is back.
pub fn cancel(ctx: &Context, job: u64) -> Exit {
    let result = daemon(ctx, Op::Cancel).and_then(|engine| {
        let client = engine.client();
        client
            .cancel(job)
            .map_err(|err| CliError::client(format!("job {job}"), &err))?;
        let ended = client
            .wait_job(job, false)
            .ok()
            .and_then(|h| h.wait_timeout(CANCEL_SETTLE));
        let (outcome, bytes, line) = match &ended {
            Some(Err(JobError::Failed {
                kind: FailureKind::Cancelled,
                bytes,
                ..
            })) => (
                "cancelled",
                Some(*bytes),
                format!("job {job} cancelled after {}", format_bytes(*bytes)),
            ),
            Some(Ok(done)) => (
                "completed",
                Some(done.bytes),
                format!(
                    "job {job} completed ({}) before the cancel took effect",
                    format_bytes(done.bytes)
                ),
            ),
            Some(Err(err)) => ("failed", None, format!("job {job} ended: {err}")),
            None => ("cancelling", None, format!("job {job} is being cancelled")),
        };
        if ctx.out.json {
            json_line(&CancelJson {
                op: Op::Cancel.name(),
                job,
                outcome,
                bytes,
            });
        } else if !ctx.out.quiet {
            report::status(&line);
        }
        Ok(Exit::Done)
    });
    finish(ctx, Op::Cancel, result)
}
