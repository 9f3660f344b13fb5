//! What every subcommand is handed: the global flags, and what `copy` was
//! asked to do. Below the commands that use it, so that the tree copy, its
//! pipeline and the job-control commands need not import `commands`.

use std::path::{Path, PathBuf};

use ringxfer_ipc::Strategy;

use crate::args::{DestOpts, JobOpts, RangeOpts};
use crate::backup::Backup;
use crate::engine_handle::{EngineHandle, Fallback, LazyEngine};
use crate::error::{CliError, Exit};
use crate::files::Replace;
use crate::job_plan::JobPlan;
use crate::progress::Show;
use crate::report::Output;

/// What every subcommand needs from the global flags.
pub struct Context {
    pub socket: PathBuf,
    pub strategy: Strategy,
    pub daemon_only: bool,
    pub out: Output,
    /// How to show progress: a bar (stderr is a terminal, output is
    /// chatty), objects (--json --progress), or not at all.
    pub progress: Show,
}

impl Context {
    /// The daemon, or the in-process engine where allowed. A detached job
    /// needs the daemon: the in-process engine dies with this process, so
    /// there would be nothing to detach from (exit 3, as for --daemon-only).
    pub fn engine(&self, job: &JobOpts) -> Result<EngineHandle, CliError> {
        let fallback = if self.daemon_only || job.detach {
            Fallback::Refuse
        } else {
            Fallback::Embedded {
                announce: self.out.chatty(),
            }
        };
        EngineHandle::connect(&self.socket, fallback).map_err(|err| {
            if job.detach && err.exit == Exit::Unreachable {
                CliError {
                    context: "--detach needs a running daemon".into(),
                    ..err
                }
            } else {
                err
            }
        })
    }

    /// [`Context::engine`], connected to when a job first needs it (see
    /// [`LazyEngine`]).
    pub fn lazy_engine(&self, job: &JobOpts) -> LazyEngine<'_> {
        let job = *job;
        LazyEngine::new(move || self.engine(&job))
    }

    pub fn plan(&self, range: RangeOpts, job: JobOpts, fsync: bool) -> JobPlan {
        JobPlan {
            offset: range.offset,
            length: range.length,
            strategy: self.strategy,
            progress: if job.detach { Show::Off } else { self.progress },
            job,
            fsync,
            truncate: false,
            whole_command: false,
            resume: false,
        }
    }
}

/// What `copy` was asked to do.
pub struct CopyArgs<'a> {
    pub sources: &'a [PathBuf],
    pub dst: &'a Path,
    pub target: Target,
    pub recursive: bool,
    /// -H, -L, -P.
    pub follow: Follow,
    pub verbose: bool,
    /// --backup, -b: what to keep of the files the copy replaces.
    pub backup: Option<Backup>,
    pub range: RangeOpts,
    pub job: JobOpts,
    pub dest: DestOpts,
}

impl CopyArgs<'_> {
    /// What -n and -u say about existing destinations.
    pub fn replace(&self) -> Replace {
        Replace::new(self.dest.no_clobber, self.dest.update)
    }
}

/// How `copy` reads its destination operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// As cp: into it when it is an existing directory, else as the name.
    IntoIfDirectory,
    /// `-t DIR`: into it, which must be a directory.
    Into,
    /// `-T`: as the name, even when it is a directory.
    AsName,
}

impl Target {
    /// Whether sources go into `dst` rather than become it.
    pub fn into_dir(self, dst: &Path) -> bool {
        match self {
            Target::IntoIfDirectory => std::fs::metadata(dst).is_ok_and(|m| m.is_dir()),
            Target::Into => true,
            Target::AsName => false,
        }
    }
}

/// Which symbolic links a copy follows, as cp's -H, -L and -P say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Follow {
    /// `-H` (the default here): the operands, not the links inside a tree.
    #[default]
    Operands,
    /// `-P`: none; a link is copied as a link, operands included.
    Never,
    /// `-L`: all; a link is copied as what it leads to.
    Always,
}
