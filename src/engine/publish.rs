//! Publishing a detached job's destination: the client staged it (an
//! unnamed O_TMPFILE, or a hidden name where the file system has none) and
//! passed the directory it is to be named in; once the job completed, the
//! daemon gives it its name, and if the job failed, it removes the hidden
//! name. The client may be long gone by then.
//!
//! Every step is a ring operation (IORING_OP_LINKAT, RENAMEAT, UNLINKAT,
//! FSYNC), run by io-wq (or a worker of the threads back end), never on the
//! loop thread: directory operations can block on NFS or FUSE. The daemon
//! opens no path of its own: it links its own `/proc/self/fd/N` (the staged
//! file it was given) into the directory descriptor it was given.

use std::ffi::{CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use ringxfer_ipc::{FailureKind, PublishTo};

use super::jobs::JobStep;
use super::EngineError;
use crate::io::fd::SharedFd;
use crate::io::op::{Fsync, LinkAt, RenameAt, UnlinkAt};
use crate::io::ops::Owner;
use crate::io::Io;
use crate::transfer::{Endpoints, FdKind, TransferError};

/// How many taken hidden names to step over before giving up.
const MAX_TEMP_TRIES: u32 = 64;

/// The step in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Not started.
    Idle,
    /// linkat of the unnamed file to the final name.
    LinkName,
    /// linkat of the unnamed file to a hidden name (the final one was taken).
    LinkTemp,
    /// renameat of the hidden link over the final name.
    RenameTemp,
    /// renameat of the client's hidden file over the final name.
    RenameStaged,
    /// fsync of the directory, once the name is in it.
    SyncDir,
    /// unlinkat of a hidden name, after a failure.
    Unlink,
    /// Nothing left to do.
    Done,
}

/// A job's publish: its directory, names and progress.
pub(super) struct Publisher {
    dir: Rc<OwnedFd>,
    name: CString,
    /// The client's hidden file, where there was no O_TMPFILE.
    staged: Option<CString>,
    /// The hidden link this made, while it exists.
    temp: Option<CString>,
    /// The job id, for hidden names.
    job: u64,
    tries: u32,
    step: Step,
    fsync: bool,
    /// Why publishing failed, if it did.
    pub failure: Option<TransferError>,
}

/// Checks what a client asked to publish: a directory (`dir_kind`, from
/// admission's statx of the descriptor, run off the loop thread), a regular
/// file, and names of one component each.
pub(super) fn check(
    to: &PublishTo,
    dir_kind: Option<FdKind>,
    dst_kind: FdKind,
) -> Result<(CString, Option<CString>), TransferError> {
    let refuse = |why: String| TransferError::new(FailureKind::InvalidRequest, why);
    if dst_kind != FdKind::File {
        return Err(refuse(format!(
            "only a regular file can be published under a name, not a {dst_kind}"
        )));
    }
    if dir_kind != Some(FdKind::Directory) {
        return Err(refuse(
            "the descriptor passed to publish in is not a directory".into(),
        ));
    }
    let name = component(&to.name).ok_or_else(|| {
        refuse(format!(
            "{:?} is not a file name (one path component) to publish under",
            String::from_utf8_lossy(&to.name)
        ))
    })?;
    let staged = match &to.staged_name {
        Some(s) => Some(component(s).ok_or_else(|| {
            refuse(format!(
                "{:?} is not a file name (one path component) of a staged file",
                String::from_utf8_lossy(s)
            ))
        })?),
        None => None,
    };
    Ok((name, staged))
}

/// A single, non-empty path component other than `.` and `..`.
fn component(name: &[u8]) -> Option<CString> {
    let ok = !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/');
    ok.then(|| CString::new(name).ok()).flatten()
}

impl Publisher {
    pub(super) fn new(
        dir: OwnedFd,
        name: CString,
        staged: Option<CString>,
        job: u64,
        fsync: bool,
    ) -> Publisher {
        Publisher {
            dir: Rc::new(dir),
            name,
            staged,
            temp: None,
            job,
            tries: 0,
            step: Step::Idle,
            fsync,
            failure: None,
        }
    }

    /// Whether nothing is in flight and nothing is left to do.
    pub(super) fn is_finished(&self) -> bool {
        self.step == Step::Done
    }

    /// Whether the job's end still needs a step here: a name to give (the
    /// job succeeded) or a hidden name to remove (it failed).
    pub(super) fn has_work(&self, success: bool) -> bool {
        self.step == Step::Idle && (success || self.staged.is_some())
    }

    /// Starts publishing a completed job (`success`), or removing the
    /// client's hidden file of a failed one.
    pub(super) fn start(&mut self, success: bool, owner: Owner, ends: &Rc<Endpoints>, io: &mut Io) {
        let next = match (&self.staged, success) {
            (Some(_), true) => Step::RenameStaged,
            (None, true) => Step::LinkName,
            (Some(_), false) => Step::Unlink,
            (None, false) => Step::Done,
        };
        self.go(next, owner, ends, io);
    }

    /// The step in flight completed with `result`.
    pub(super) fn on_complete(
        &mut self,
        result: i32,
        owner: Owner,
        ends: &Rc<Endpoints>,
        io: &mut Io,
    ) {
        let err = (result < 0).then_some(-result);
        let next = match (self.step, err) {
            (Step::LinkName, None) | (Step::RenameTemp | Step::RenameStaged, None) => {
                self.temp = None;
                self.after_named()
            }
            (Step::LinkName, Some(libc::EEXIST)) => Step::LinkTemp,
            (Step::LinkTemp, None) => Step::RenameTemp,
            (Step::LinkTemp, Some(libc::EEXIST)) if self.tries < MAX_TEMP_TRIES => {
                self.tries += 1;
                Step::LinkTemp
            }
            (Step::SyncDir, Some(e)) => {
                self.fail("the copy is in place, but syncing its directory", e);
                Step::Done
            }
            (Step::SyncDir | Step::Unlink, _) => Step::Done,
            (step, Some(e)) => {
                self.fail(step_name(step), e);
                // A hidden name made on the way (or the client's) goes.
                if step == Step::LinkTemp {
                    self.temp = None;
                }
                if self.temp.is_some() || self.staged.is_some() {
                    Step::Unlink
                } else {
                    Step::Done
                }
            }
            (Step::Idle | Step::Done, None) => Step::Done,
        };
        self.go(next, owner, ends, io);
    }

    fn after_named(&mut self) -> Step {
        self.staged = None;
        if self.fsync {
            Step::SyncDir
        } else {
            Step::Done
        }
    }

    fn fail(&mut self, what: &str, errno: i32) {
        let name = String::from_utf8_lossy(self.name.as_bytes()).into_owned();
        self.failure.get_or_insert(TransferError::os(
            format!("the data was written, but {what} {name:?} in its directory failed"),
            errno,
        ));
    }

    /// Queues `step` (or ends, if it cannot be queued).
    fn go(&mut self, step: Step, owner: Owner, ends: &Rc<Endpoints>, io: &mut Io) {
        self.step = step;
        let queued = match step {
            Step::Idle | Step::Done => return,
            Step::LinkName => self.link(owner, ends, io, self.name.clone()),
            Step::LinkTemp => {
                let temp = self.temp_name();
                self.temp = Some(temp.clone());
                self.link(owner, ends, io, temp)
            }
            Step::RenameTemp | Step::RenameStaged => {
                let from = if step == Step::RenameTemp {
                    self.temp.clone()
                } else {
                    self.staged.clone()
                };
                match from {
                    Some(from) => self.rename(owner, io, from),
                    None => return self.go(Step::Done, owner, ends, io),
                }
            }
            Step::SyncDir => self.sync_dir(owner, io),
            Step::Unlink => match self.temp.take().or_else(|| self.staged.take()) {
                Some(path) => self.unlink(owner, io, path),
                None => return self.go(Step::Done, owner, ends, io),
            },
        };
        if let Err(e) = queued {
            self.failure.get_or_insert(TransferError::new(
                FailureKind::Io,
                format!("queueing the publish of the copy failed: {e}"),
            ));
            self.step = Step::Done;
        }
    }

    /// `.NAME.ringxfer-PID-N`, with this daemon's pid, so that a run after
    /// this daemon died can tell it is a leftover.
    fn temp_name(&self) -> CString {
        let n = self.job.wrapping_mul(MAX_TEMP_TRIES as u64 + 1) + u64::from(self.tries);
        let name = ringxfer_ipc::publish::hidden_name_for(
            OsStr::from_bytes(self.name.as_bytes()),
            std::process::id(),
            n,
        );
        // The name came from a CString and the suffix is digits: no NUL.
        CString::new(name.as_bytes()).unwrap_or_else(|_| self.name.clone())
    }

    /// The directory, for a step's operation (which shares it until its
    /// completion; `into_dir` finds it unshared after the last).
    fn dir(&self) -> SharedFd {
        SharedFd::owned(&self.dir)
    }

    /// Links the job's destination (the staged file, named by its number
    /// in `/proc/self/fd`, which the op's share keeps open) as `to`.
    fn link(
        &self,
        owner: Owner,
        ends: &Rc<Endpoints>,
        io: &mut Io,
        to: CString,
    ) -> Result<u64, EngineError> {
        let op = LinkAt::new(ends.shared_dst(), self.dir(), to);
        io.queue_op(owner, JobStep::Publish.tag(), op)
    }

    fn rename(&self, owner: Owner, io: &mut Io, from: CString) -> Result<u64, EngineError> {
        let op = RenameAt::new(self.dir(), from, self.name.clone());
        io.queue_op(owner, JobStep::Publish.tag(), op)
    }

    fn unlink(&self, owner: Owner, io: &mut Io, path: CString) -> Result<u64, EngineError> {
        let op = UnlinkAt::new(self.dir(), path);
        io.queue_op(owner, JobStep::Publish.tag(), op)
    }

    fn sync_dir(&self, owner: Owner, io: &mut Io) -> Result<u64, EngineError> {
        let op = Fsync::new(self.dir(), false);
        io.queue_op(owner, JobStep::Publish.tag(), op)
    }

    /// The directory descriptor, for the closing thread once the job ends.
    pub(super) fn into_dir(self) -> Option<OwnedFd> {
        Rc::into_inner(self.dir)
    }
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::LinkName | Step::LinkTemp => "linking it to its name",
        Step::RenameTemp | Step::RenameStaged => "renaming it to its name",
        _ => "publishing it as",
    }
}
