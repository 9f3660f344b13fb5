//! The ladder's first rung: the destination cloned from the source
//! (FICLONE), sharing its extents, when a job copies a whole regular file
//! into an empty one. One operation, run by a worker (io/op/ficlone.rs):
//! it either clones the file, is refused because the file systems cannot
//! (then `auto` goes on down the ladder with the choice it made at
//! admission, and the note says why), or fails the job.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ringxfer_ipc::{FailureKind, Reflink, Sparse, Strategy};

use super::choose::Choice;
use super::dio::restore_flags;
use super::step::CopyStep;
use super::{failure_kind, Endpoints, FdKind, Plan, Shape, TransferError};
use crate::io::op::Ficlone;
use crate::io::ops::Owner;
use crate::io::Io;

/// Whether a job tries to clone, and whether it must (`Some(true)`: the
/// `reflink` strategy or `Reflink::Always`). An explicit clone that cannot
/// be is refused here, naming why.
pub(crate) fn wanted(
    plan: &Plan,
    asked: Strategy,
    reflink: Reflink,
    truncate: bool,
    refused_before: bool,
) -> Result<Option<bool>, TransferError> {
    let refuse = |why: String| TransferError::new(FailureKind::InvalidRequest, why);
    let required = asked == Strategy::Reflink || reflink == Reflink::Always;
    if required && plan.sparse != Sparse::Auto {
        // As cp: a clone has the source's holes and zeros as they are.
        return Err(refuse(format!(
            "a clone keeps the source's holes and zeros as they are, so reflink \"always\" (or the reflink strategy) goes only with sparse \"auto\", not \"{}\"",
            plan.sparse.name()
        )));
    }
    match (asked, reflink) {
        (Strategy::Reflink, Reflink::Never) => {
            return Err(refuse(
                "the reflink strategy clones, and reflink \"never\" forbids it: ask for one or the other".into(),
            ))
        }
        (_, Reflink::Never) => return Ok(None),
        (Strategy::Auto | Strategy::Reflink, _) => {}
        (other, Reflink::Always) => {
            return Err(refuse(format!(
                "reflink \"always\" clones, and the {other} strategy copies: ask for one or the other"
            )))
        }
        _ => return Ok(None),
    }
    match eligible(plan, truncate) {
        // `auto` asks no file system twice; a required clone asks, so that
        // its refusal says what the kernel says now.
        Ok(()) if refused_before && !required => Ok(None),
        Ok(()) => Ok(Some(required)),
        Err(why) if required => Err(refuse(format!("reflink not supported for this job: {why}"))),
        Err(_) => Ok(None),
    }
}

/// FICLONE makes the destination the whole source: a job must copy all of
/// a regular file to the start of a regular file that holds nothing else.
fn eligible(plan: &Plan, truncate: bool) -> Result<(), String> {
    let (src, dst) = (plan.ends.src_kind, plan.ends.dst_kind);
    if src != FdKind::File || dst != FdKind::File {
        return Err(format!(
            "only a regular file clones into a regular file, and this job is {src} to {dst}"
        ));
    }
    if plan.src_start != 0 || plan.length_requested {
        return Err("a clone copies the whole source, and this job asks for part of it".into());
    }
    if plan.dst_start != 0 || plan.dst_append {
        return Err("a clone fills the destination from its start".into());
    }
    if plan.dst_size != 0 && !truncate {
        return Err(format!(
            "the destination already holds {} bytes, which a clone would not keep",
            plan.dst_size
        ));
    }
    Ok(())
}

/// Whether FICLONE's `errno` says the file systems cannot clone these two
/// files (different file systems, no reflink support, a file system or
/// descriptor that takes no such ioctl), rather than that cloning failed.
pub(crate) fn unsupported(errno: i32) -> bool {
    matches!(
        errno,
        libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOTTY | libc::EBADF | libc::ENOSYS
    )
}

/// File systems that refused to clone, so that `auto` does not ask again
/// for every file: a FICLONE refused costs a worker hand-off, which for
/// thousands of small files was a quarter more of the daemon's CPU time.
/// A file system that cannot share extents (EOPNOTSUPP, ENOTTY) is
/// remembered by the destination's device, two that are not one (EXDEV) as
/// the pair; the other refusals may be about the file, and are not kept.
#[derive(Debug, Default)]
pub(crate) struct CloneRefusals {
    devices: std::collections::HashSet<u64>,
    pairs: std::collections::HashSet<(u64, u64)>,
}

/// Devices and pairs remembered at most; past it, memory starts over.
const MAX_REMEMBERED: usize = 4096;

impl CloneRefusals {
    /// Whether a clone from device `src` to device `dst` was refused before.
    pub(crate) fn known(&self, src: u64, dst: u64) -> bool {
        self.devices.contains(&dst) || self.pairs.contains(&(src, dst))
    }

    /// Remembers what FICLONE's `errno` said about devices `src` and `dst`.
    pub(crate) fn learn(&mut self, errno: i32, src: u64, dst: u64) {
        if self.devices.len() + self.pairs.len() >= MAX_REMEMBERED {
            self.devices.clear();
            self.pairs.clear();
        }
        match errno {
            libc::EOPNOTSUPP | libc::ENOTTY => {
                self.devices.insert(dst);
            }
            libc::EXDEV => {
                self.pairs.insert((src, dst));
            }
            _ => {}
        }
    }
}

/// What a refused FICLONE means, for the note of a job that fell back.
pub(crate) fn refusal(errno: i32) -> &'static str {
    match errno {
        libc::EXDEV => "EXDEV: the two files are on different file systems",
        libc::EOPNOTSUPP => "EOPNOTSUPP: the file system does not share extents",
        libc::EINVAL => "EINVAL: the file system cannot clone these files",
        libc::ENOTTY => "ENOTTY: the file system has no clone operation",
        libc::EBADF => "EBADF: a descriptor cannot be cloned from or into",
        libc::ENOSYS => "ENOSYS: the kernel has no FICLONE",
        _ => "FICLONE refused",
    }
}

/// The clone of one job.
pub(crate) struct ReflinkCopy {
    ends: Rc<Endpoints>,
    shape: Shape,
    /// Fail rather than fall back.
    required: bool,
    /// What the job does if the clone is refused (its flags are put back
    /// if it is not used).
    next: Option<Choice>,
    in_flight: Option<u64>,
    started: bool,
    cloned: bool,
    /// The errno a clone was refused with, for `auto` to fall back on.
    refused: Option<i32>,
    failure: Option<TransferError>,
    /// The destination's size once cloned (io/op/ficlone.rs).
    size: Arc<AtomicU64>,
    /// What the job asked of its mover, for the one it falls back to.
    piece_limit: Option<u64>,
    checksum_source: bool,
    pub moved: u64,
}

/// What an `auto` job whose clone was refused goes on with.
pub(crate) struct Fallback {
    pub errno: i32,
    pub ends: Rc<Endpoints>,
    pub shape: Shape,
    pub choice: Choice,
    pub piece_limit: Option<u64>,
    pub checksum_source: bool,
}

impl ReflinkCopy {
    pub(crate) fn new(ends: Rc<Endpoints>, shape: Shape, required: bool, next: Choice) -> Self {
        ReflinkCopy {
            ends,
            shape,
            required,
            next: Some(next),
            in_flight: None,
            started: false,
            cloned: false,
            refused: None,
            failure: None,
            size: Arc::new(AtomicU64::new(0)),
            piece_limit: None,
            checksum_source: false,
            moved: 0,
        }
    }

    pub(crate) fn start(&mut self, owner: Owner, io: &mut Io) {
        if self.started {
            return;
        }
        self.started = true;
        let op = Ficlone::new(
            self.ends.shared_src(),
            self.ends.shared_dst(),
            Arc::clone(&self.size),
        );
        match io.queue_op(owner, CopyStep::Clone.tag(), op) {
            Ok(ud) => self.in_flight = Some(ud),
            Err(e) => self.settle(Some(TransferError::new(
                FailureKind::Io,
                format!("queueing the clone of the source failed: {e}"),
            ))),
        }
    }

    pub(crate) fn on_complete(&mut self, result: i32) {
        self.in_flight = None;
        if self.failure.is_some() {
            return self.settle(None);
        }
        if result >= 0 {
            self.cloned = true;
            self.moved = self.size.load(Ordering::Acquire);
            return self.settle(None);
        }
        let errno = -result;
        if unsupported(errno) && !self.required {
            self.refused = Some(errno);
            return;
        }
        let err = std::io::Error::from_raw_os_error(errno);
        let message = if unsupported(errno) {
            format!("reflink not supported: the file systems cannot clone the source into the destination (FICLONE: {err})")
        } else {
            format!("cloning the source into the destination (FICLONE): {err}")
        };
        self.settle(Some(TransferError {
            kind: failure_kind(errno),
            os_error: Some(errno),
            message,
        }));
    }

    pub(crate) fn fail(&mut self, err: TransferError, io: &mut Io) {
        self.failure.get_or_insert(err);
        match self.in_flight {
            Some(ud) => {
                // A clone that already runs may finish anyway; the job ends
                // failed either way, and staging removes what it made.
                let _ = io.cancel(ud);
            }
            None => self.settle(None),
        }
    }

    /// The clone is over without falling back: the ladder's choice is not
    /// used, so the flags it changed go back.
    fn settle(&mut self, failure: Option<TransferError>) {
        if let Some(e) = failure {
            self.failure.get_or_insert(e);
        }
        if let Some(next) = self.next.take() {
            for s in next.saved {
                restore_flags(s);
            }
        }
    }

    /// Over: cloned or failed. A refused clone is not the end of the
    /// copy: the job falls back (`fall_back`) before anything else.
    pub(crate) fn is_finished(&self) -> bool {
        self.started && self.in_flight.is_none() && (self.cloned || self.failure.is_some())
    }

    /// Passed on to the mover a refused clone falls back to.
    pub(crate) fn set_piece_limit(&mut self, bytes: u64) {
        self.piece_limit = Some(bytes);
    }

    /// Passed on as `set_piece_limit`; a clone reads nothing.
    pub(crate) fn checksum_source(&mut self) {
        self.checksum_source = true;
    }

    pub(crate) fn failure(&self) -> Option<&TransferError> {
        self.failure.as_ref()
    }

    pub(crate) fn total(&self) -> Option<u64> {
        if self.cloned {
            return Some(self.moved);
        }
        self.shape.total
    }

    pub(crate) fn endpoints(&self) -> Rc<Endpoints> {
        Rc::clone(&self.ends)
    }

    pub(crate) fn into_endpoints(mut self) -> Option<Endpoints> {
        self.settle(None);
        Rc::try_unwrap(self.ends).ok()
    }

    /// A refused clone of an `auto` job, once its completion is in: why,
    /// and what to go on with.
    pub(crate) fn fall_back(&mut self) -> Option<Fallback> {
        if self.in_flight.is_some() || self.failure.is_some() {
            return None;
        }
        let errno = self.refused?;
        let choice = self.next.take()?;
        Some(Fallback {
            errno,
            ends: Rc::clone(&self.ends),
            shape: self.shape,
            choice,
            piece_limit: self.piece_limit,
            checksum_source: self.checksum_source,
        })
    }
}
