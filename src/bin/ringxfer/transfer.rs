//! Handing two open descriptors to the engine and waiting for the outcome.
//!
//! Every command opens its own files and sockets before calling this, so that
//! an open error names the path or address, and so that copy can refuse to
//! truncate its own source before anything is submitted.

use std::os::fd::AsFd;

use ringxfer_ipc::{Strategy, TransferOptions};

use crate::engine::Engine;
use crate::error::CliError;
use crate::progress;
use crate::report::{Finished, Subject};

/// How to run one transfer, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub offset: u64,
    pub length: Option<u64>,
    pub strategy: Strategy,
    /// Draw a progress bar (stderr is a terminal, no -q, no --json).
    pub progress: bool,
}

pub fn run(
    engine: &Engine,
    subject: &Subject,
    src: impl AsFd,
    dst: impl AsFd,
    plan: Plan,
) -> Result<Finished, CliError> {
    let opts = TransferOptions {
        // The daemon logs the tag with the job, so make it say what this is.
        tag: subject.describe(),
        offset: plan.offset,
        length: plan.length,
        dest_offset: 0,
        strategy: plan.strategy,
        // Progress events cost the engine work; ask only when they are shown.
        progress: plan.progress,
        ..TransferOptions::default()
    };
    let handle = engine
        .client()
        .submit(src, dst, &opts)
        .map_err(|err| CliError::client(subject.describe(), &err))?;
    let done = progress::wait(handle, plan.progress)
        .map_err(|err| CliError::job(subject.describe(), &err).on_engine(engine.kind().name()))?;
    Ok(Finished {
        bytes: done.bytes,
        elapsed: done.elapsed,
        strategy: done.strategy,
        engine: engine.kind(),
        note: done.note,
    })
}
