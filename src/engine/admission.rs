//! Admission off the loop thread.
//!
//! What a submitted job's descriptors are (type, size, O_DIRECT alignment)
//! used to come from fstat on the loop thread, and a FUSE or network file
//! system whose getattr stalls stalled every client with it. Now a submit
//! that passed the checks needing no file system (limits, draining, a
//! descriptor leading back to the daemon) becomes an `Admitting`: one
//! IORING_OP_STATX per descriptor goes to the ring (an io-wq worker runs it;
//! a worker thread on the threads back end), and admission carries on in
//! `Engine::admit_stated` (jobs.rs) when the last of them completes. A
//! stalled statx holds only its own submit.
//!
//! Ownership: each statx's op-table entry holds its buffer and an `Rc` of
//! the submitted descriptors until its completion, as every operation
//! holds what the kernel touches. The `Admitting` entry, with the request,
//! stays until its last statx is back, whatever happens meanwhile: if its
//! connection closes, it is abandoned (nobody to tell); a draining daemon
//! lets it in like a job admitted before the signal (within the grace
//! period); a daemon that stops (the grace ended, a second signal) tells
//! its client `ShuttingDown` at once. Either way the descriptors go to the
//! closing thread when the statx ops are back.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use ringxfer_ipc::proto::peer::{RemotePath, StripeId};
use ringxfer_ipc::proto::PeerConnection;
use ringxfer_ipc::{Event, SubmitRequest};
use slab::Slab;
use tracing::error;

use super::Engine;
use crate::io::fd::SharedFd;
use crate::io::op::AnyOp;
use crate::io::ops::{Op, Owner};
use crate::transfer::{FdStat, Stats, TransferError};

pub(super) mod spec;

/// The descriptors a client passed with a submit, while it is admitted.
pub(super) struct Submitted {
    pub src: OwnedFd,
    pub dst: OwnedFd,
    /// The directory to publish in, if the job asked for that.
    pub dir: Option<OwnedFd>,
    /// For a push to another daemon (`dst` is the socket to it): where
    /// the file lands there.
    pub remote: Option<PushTarget>,
}

/// Where a pushed file lands on the other daemon.
#[derive(Debug, Clone)]
pub(super) struct PushTarget {
    pub path: RemotePath,
    /// Make its missing directories there (a tree being pushed).
    pub mkdir: bool,
    /// The other way: pulled from there into the destination.
    pub pull: bool,
    /// Continue a part the other daemon kept (push only).
    pub resume: bool,
    /// Pull the listing of the directory at `path` (pull only).
    pub list: bool,
    /// Whether the conversation outlives the job, or continues a kept one.
    pub connection: PeerConnection,
    /// One stripe of the file among several pushed at once (push only).
    pub stripe: Option<StripeId>,
}

impl Submitted {
    /// All of them, to close.
    pub(super) fn into_fds(self) -> impl Iterator<Item = OwnedFd> {
        [self.src, self.dst].into_iter().chain(self.dir)
    }
}

/// A submit whose statx ops are all back, for `Engine::admit_stated`.
pub(super) struct Stated {
    pub uid: u32,
    pub id: u64,
    pub submit: SubmitRequest,
    pub fds: Submitted,
    /// What statx said about the source and the destination.
    pub stats: Stats,
    /// And about the directory to publish in, if one came.
    pub dir: spec::DirStat,
    pub acknowledge: bool,
}

/// Indexes of `Admitting::stats`, and the tags of their statx ops.
const SOURCE: u8 = 0;
const DESTINATION: u8 = 1;
const DIRECTORY: u8 = 2;

/// A submit waiting for its statx ops.
pub(super) struct Admitting {
    /// The connection it came on; `None` once that closed or the client was
    /// told it is refused: then it is only waiting to close its descriptors.
    pub session: Option<usize>,
    pub uid: u32,
    /// The job's id, given when the submit arrived: ids (and `Jobs`, which
    /// lists by id) follow the order of submission, not the order in which
    /// statx answered. A refused submit's id is never used.
    pub id: u64,
    pub submit: SubmitRequest,
    pub acknowledge: bool,
    fds: Rc<Submitted>,
    /// What each statx said, or its errno; `None` until it completes.
    pub stats: [Option<Result<FdStat, i32>>; 3],
    in_flight: u8,
}

/// The submits being admitted, and how many each connection and user has
/// (they count against the job limits like jobs: each holds descriptors).
#[derive(Default)]
pub(super) struct Admissions {
    pending: Slab<Admitting>,
    by_session: HashMap<usize, usize>,
    by_user: HashMap<u32, usize>,
}

impl Admissions {
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn of_session(&self, k: usize) -> usize {
        self.by_session.get(&k).copied().unwrap_or(0)
    }

    /// Submits being admitted whose client still waits for them.
    pub(super) fn live(&self) -> usize {
        self.by_session.values().sum()
    }

    pub(super) fn of_user(&self, uid: u32) -> usize {
        self.by_user.get(&uid).copied().unwrap_or(0)
    }

    fn forget_session(&mut self, k: usize) {
        if let Some(n) = self.by_session.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                self.by_session.remove(&k);
            }
        }
    }

    fn forget_user(&mut self, uid: u32) {
        if let Some(n) = self.by_user.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                self.by_user.remove(&uid);
            }
        }
    }
}

/// The flags of a statx at admission. A job's ends are asked as fstat
/// would (AT_STATX_SYNC_AS_STAT): the size decides what is read, whether an
/// offset is past the end and what a failed in-place job is truncated back
/// to, so a size cached by FUSE or NFS that another client has changed since
/// would be wrong, and waiting for the server is what the worker is for.
/// The directory to publish in is asked only its type, which no file system
/// changes under an open descriptor: AT_STATX_DONT_SYNC spares the server.
fn statx_flags(which: u8) -> (i32, u32) {
    if which == DIRECTORY {
        (libc::AT_STATX_DONT_SYNC, libc::STATX_TYPE)
    } else {
        (libc::AT_STATX_SYNC_AS_STAT, FdStat::MASK)
    }
}

impl Engine {
    /// Starts admitting a submit from session `k` (user `uid`): a statx of
    /// each descriptor through the ring. `admit_stated` takes it from there.
    pub(super) fn start_admission(
        &mut self,
        k: usize,
        uid: u32,
        submit: SubmitRequest,
        fds: Submitted,
        acknowledge: bool,
    ) {
        let fds = Rc::new(fds);
        let id = self.jobs.next_id;
        self.jobs.next_id += 1;
        let key = self.jobs.admissions.pending.insert(Admitting {
            session: Some(k),
            uid,
            id,
            submit,
            acknowledge,
            fds: Rc::clone(&fds),
            stats: [None, None, None],
            in_flight: 0,
        });
        *self.jobs.admissions.by_session.entry(k).or_default() += 1;
        *self.jobs.admissions.by_user.entry(uid).or_default() += 1;
        // Each statx shares the descriptors (`fds`) until its completion.
        let targets = [
            Some((SOURCE, SharedFd::of(&fds, |f| f.src.as_fd()))),
            Some((DESTINATION, SharedFd::of(&fds, |f| f.dst.as_fd()))),
            SharedFd::try_of(&fds, |f| f.dir.as_ref().map(AsFd::as_fd)).map(|d| (DIRECTORY, d)),
        ];
        for (which, fd) in targets.into_iter().flatten() {
            let (flags, mask) = statx_flags(which);
            let queued = self
                .io
                .statx(Owner::Admission(key), u32::from(which), fd, flags, mask);
            let Some(a) = self.jobs.admissions.pending.get_mut(key) else {
                return;
            };
            match queued {
                Ok(_) => a.in_flight += 1,
                Err(e) => {
                    error!("cannot queue a statx at admission: {e}");
                    a.stats[usize::from(which)] = Some(Err(libc::EAGAIN));
                }
            }
        }
        drop(fds);
        if self
            .jobs
            .admissions
            .pending
            .get(key)
            .is_some_and(|a| a.in_flight == 0)
        {
            self.end_admission(key);
        }
    }

    /// A completion of a statx of admission `key`.
    pub(super) fn on_admission_op(&mut self, op: Op, result: i32) {
        let Op { owner, tag, op } = op;
        match (owner, op) {
            (Owner::Admission(a), AnyOp::Statx(op)) => {
                // The op's share of the descriptors goes first, so the last
                // statx back leaves them to the admission alone.
                let buf = op.into_buf();
                let which = u8::try_from(tag).unwrap_or(u8::MAX);
                self.on_statx(a, which, result, &buf);
            }
            (owner, _) => error!(?owner, tag, "completion of an unexpected kind"),
        }
    }

    /// A statx of admission `key` completed into `buf`.
    fn on_statx(&mut self, key: usize, which: u8, result: i32, buf: &libc::statx) {
        let Some(a) = self.jobs.admissions.pending.get_mut(key) else {
            error!(key, "statx completion for an admission that is gone");
            return;
        };
        let stat = if result < 0 {
            Err(-result)
        } else {
            Ok(FdStat::from_statx(buf))
        };
        if let Some(slot) = a.stats.get_mut(usize::from(which)) {
            *slot = Some(stat);
        }
        a.in_flight -= 1;
        if a.in_flight == 0 {
            self.end_admission(key);
        }
    }

    /// Every statx of admission `key` is back: admit (or refuse) the job if
    /// its client is still there, else close its descriptors.
    fn end_admission(&mut self, key: usize) {
        let a = self.jobs.admissions.pending.remove(key);
        self.jobs.admissions.forget_user(a.uid);
        if let Some(k) = a.session {
            self.jobs.admissions.forget_session(k);
        }
        // No op holds the descriptors any more (each held them until its
        // completion, and this is after the last), so they are ours alone.
        let fds = match Rc::try_unwrap(a.fds) {
            Ok(fds) => fds,
            Err(_) => {
                // Cannot happen (see above); if it did, the last op to let
                // go would close them, which is safe, only on this thread.
                error!("an admission's descriptors are still shared at its end");
                return;
            }
        };
        let live = a
            .session
            .filter(|&k| self.sessions.slab.get(k).is_some_and(|s| !s.closing));
        let Some(k) = live else {
            self.closing.doomed.extend(fds.into_fds());
            return;
        };
        let [s, d, dir_stat] = a.stats;
        let missing = || Err(libc::EIO);
        let stated = Stated {
            uid: a.uid,
            id: a.id,
            submit: a.submit,
            stats: [s.unwrap_or_else(missing), d.unwrap_or_else(missing)],
            dir: fds.dir.as_ref().map(|_| dir_stat.unwrap_or_else(missing)),
            fds,
            acknowledge: a.acknowledge,
        };
        self.admit_stated(k, stated);
        self.close_if_idle_half_closed(k);
    }

    /// Connection `k` closed: its submits being admitted are abandoned;
    /// their descriptors close when their statx ops are back.
    pub(super) fn abandon_admissions(&mut self, k: usize) {
        if self.jobs.admissions.by_session.remove(&k).is_none() {
            return;
        }
        for (_, a) in self.jobs.admissions.pending.iter_mut() {
            if a.session == Some(k) {
                a.session = None;
            }
        }
    }

    /// The daemon stops: every submit being admitted is refused now (its
    /// statx ops may wait on a server for long), each client told why; the
    /// descriptors close when the statx ops are back.
    pub(super) fn refuse_admissions(&mut self, e: &TransferError) {
        let mut told = Vec::new();
        for (_, a) in self.jobs.admissions.pending.iter_mut() {
            if let Some(k) = a.session.take() {
                told.push((k, a.submit.req));
            }
        }
        for (k, req) in told {
            self.jobs.admissions.forget_session(k);
            let ev = Event::Failed {
                req,
                job: None,
                kind: e.kind,
                os_error: e.os_error,
                message: e.message.clone(),
                bytes: 0,
            };
            self.emit(k, &ev);
            self.close_if_idle_half_closed(k);
        }
    }
}
