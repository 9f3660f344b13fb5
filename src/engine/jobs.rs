//! Jobs: admission's engine side (it gathers what the pure steps of
//! admission/spec.rs decide on and starts the `JobSpec` they return), the
//! callbacks of their operations, their last steps (fdatasync,
//! verification) and their end.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Instant;

use io_uring::cqueue;
use ringxfer_ipc::{
    Checksums, Event, FailureKind, JobInfo, JobState, Priority, Strategy, SubmitRequest,
};
use slab::Slab;
use tracing::debug;

use super::admission::spec::{self, Context, JobSpec, Limits, Load, Submitter};
use super::admission::{Admissions, PushTarget, Stated, Submitted};
use super::counters::strategy_index;
use super::publish::Publisher;
use super::rate::{GroupKey, TokenBucket};
use super::shares::unqueue;
use super::{Engine, Resource, PROGRESS_INTERVAL, RECENT_JOBS, RESOURCES};
use crate::io::buffer_pool::BufRef;
use crate::io::ops::{Op, Owner};
use crate::tls::Session;
use crate::transfer::buffered::{BufferCopy, IoMode};
use crate::transfer::choose::{Choice, ChoiceInputs};
use crate::transfer::copy_range::{CopyRefusals, RangeCopy};
use crate::transfer::peer_link::PeerLink;
use crate::transfer::peer_pull::PeerPull;
use crate::transfer::peer_push::PeerPush;
use crate::transfer::redial::Redial;
use crate::transfer::reflink::{CloneRefusals, ReflinkCopy};
use crate::transfer::splice::{Returned, SpliceCopy};
use crate::transfer::step::CopyStep;
use crate::transfer::verify::{Verifier, VerifyRead};
use crate::transfer::{Endpoints, FdKind, Mover, Shape, TransferError};

/// The jobs: running ones by key, submits being admitted, and those that
/// ended lately.
pub(super) struct Jobs {
    pub slab: Slab<Job>,
    /// Running jobs' keys by job id.
    pub ids: HashMap<u64, usize>,
    /// Submits whose descriptors statx is asked about (admission.rs).
    pub admissions: Admissions,
    /// Finished jobs, oldest first, at most `RECENT_JOBS`.
    pub recent: VecDeque<Finished>,
    pub next_id: u64,
    /// File systems that refused a clone (reflink.rs).
    pub clone_refusals: CloneRefusals,
    /// Pairs of file systems copy_file_range refused (copy_range.rs).
    pub copy_refusals: CopyRefusals,
}

impl Jobs {
    pub(super) fn new() -> Jobs {
        Jobs {
            slab: Slab::with_capacity(256),
            ids: HashMap::with_capacity(256),
            admissions: Admissions::default(),
            recent: VecDeque::with_capacity(RECENT_JOBS),
            next_id: 1,
            clone_refusals: CloneRefusals::default(),
            copy_refusals: CopyRefusals::default(),
        }
    }
}

/// A connection following a job it did not submit (`Request::Wait`).
pub(super) struct Watcher {
    pub session: usize,
    pub req: u64,
    pub progress: bool,
}

/// The job's own operations, by the tag each carries (class 3 of a job's
/// tags; the copy's and verification's are theirs, transfer/step.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JobStep {
    /// fdatasync of the destination before the job completes.
    Fsync,
    /// Truncation of an in-place destination to where the job's writes
    /// ended, once they all did (`SubmitRequest::truncate`).
    EndTruncate,
    /// A step of publishing a detached job's destination (publish.rs).
    Publish,
}

impl JobStep {
    const CLASS: u32 = 3;
    const ALL: [JobStep; 3] = [JobStep::Fsync, JobStep::EndTruncate, JobStep::Publish];

    pub(super) fn tag(self) -> u32 {
        Self::CLASS << 24 | self as u32
    }

    pub(super) fn from_tag(tag: u32) -> Option<JobStep> {
        Self::ALL.into_iter().find(|s| s.tag() == tag)
    }
}

/// Whether a job's operation tagged `tag` carries a push's control frame
/// (its own buffer, not a pool buffer).
pub(super) fn is_control(tag: u32) -> bool {
    matches!(
        CopyStep::from_tag(tag),
        Some(
            CopyStep::PeerSend
                | CopyStep::PeerRecv
                | CopyStep::PeerWrite
                | CopyStep::PeerMeta
                | CopyStep::Redial
                | CopyStep::Connect
                | CopyStep::PeerSum
                | CopyStep::PeerCut
        )
    )
}

/// What a job does after its bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Copy,
    /// fdatasync of the destination in flight.
    Sync,
    /// Reading both ends back.
    Verify,
    /// Truncating an in-place destination to the job's end.
    Truncate,
    /// Giving a detached job's staged destination its name (or removing
    /// its hidden name after a failure): engine/publish.rs.
    Publish,
}

/// A transfer admitted from a client.
pub(super) struct Job {
    pub id: u64,
    /// The devices of its source and destination (a refused clone is
    /// remembered by them).
    pub devices: Option<(u64, u64)>,
    pub req: u64,
    pub tag: String,
    /// The user who submitted it (SO_PEERCRED).
    pub uid: u32,
    /// The session that submitted it, while that session exists.
    pub session: Option<usize>,
    pub copy: Mover,
    /// Why the strategy was chosen, for the Completed event.
    pub note: Option<String>,
    /// The client asked for `auto`: a source splice refuses moves the job to
    /// the read()+write() rung (see `fall_back`).
    pub auto: bool,
    pub started: Instant,
    pub progress: bool,
    pub last_progress: Instant,
    pub reported: u64,
    /// Whether the job has a live entry in a fair queue (`queue_seq`), and
    /// which: set through `enqueue` and `shares::unqueue`, which keep its
    /// user's count of waiting jobs.
    pub queued: bool,
    pub queued_for: Resource,
    pub queue_seq: u64,
    /// Pipes, buffers and pieces (by `Resource`) lent to it now.
    pub held: [usize; RESOURCES],
    /// When it last moved a byte or, holding nothing, got a slot: a job
    /// holding slots that has not moved for a while has stalled.
    pub moved_at: Instant,
    pub priority: Priority,
    pub detach: bool,
    /// Came in a batch without asking for `Accepted`: its final event may
    /// be held back to go out with others (see engine::coalesce).
    pub quiet: bool,
    pub fsync: bool,
    pub verify: bool,
    /// The job's own rate limit.
    pub bucket: Option<TokenBucket>,
    /// The limit it shares with its connection's jobs of the same group
    /// (`Slots::rate_groups`).
    pub rate_group: Option<GroupKey>,
    /// Connections following it besides its owner.
    pub watchers: Vec<Watcher>,
    /// Its virtual time in the fair queues.
    pub vtime: u64,
    /// Bytes moved already accounted for (queued bytes, progress), holes
    /// skipped included.
    pub charged: u64,
    /// Of those, the bytes read and written, which are what virtual time,
    /// rate limits and the per-strategy counters are charged (a hole
    /// skipped costs nothing: transfer/holes.rs).
    pub charged_data: u64,
    /// Waiting for a rate limit.
    pub throttled: bool,
    /// Has been lent a slot at least once.
    pub got_slot: bool,
    /// Bytes and time at the start of the current rate window.
    pub rate_mark: (Instant, u64),
    pub rate: u64,
    pub phase: Phase,
    pub side_op: Option<u64>,
    pub verifier: Option<Verifier>,
    pub synced: bool,
    pub checksums: Option<Checksums>,
    /// The part of the source and destination moved, for verification.
    pub range: (u64, u64),
    /// Set when fdatasync or verification failed after the copy succeeded.
    pub late_failure: Option<TransferError>,
    /// Where its conversation with another daemon is kept once it has
    /// landed (a push asking to keep or continue one; kept.rs).
    pub keep: Option<super::peers::kept::KeptKey>,
    /// Truncate the destination to the job's end once the bytes are in
    /// (`SubmitRequest::truncate`, for a regular file not open O_APPEND),
    /// and whether that was done.
    pub truncate: bool,
    pub truncated: bool,
    /// Where to publish the destination at the end, for a detached job.
    pub publish: Option<Publisher>,
    /// The client's RLIMIT_FSIZE, for a regular-file destination.
    pub fsize_limit: Option<u64>,
}

impl Job {
    /// The pool resource the job borrows now.
    pub(super) fn resource(&self) -> Resource {
        match (&self.copy, self.phase) {
            (_, Phase::Verify) => Resource::Buffer,
            (Mover::Splice(_), _) => Resource::Pipe,
            (Mover::Buffered(_) | Mover::Peer(_) | Mover::Pull(_) | Mover::Lease(_), _) => {
                Resource::Buffer
            }
            (Mover::CopyRange(_), _) => Resource::Piece,
            // A clone holds none; it never queues for one.
            (Mover::Reflink(_), _) => Resource::Pipe,
        }
    }

    /// Whether the job would use another slot now.
    pub(super) fn wants_slot(&self) -> bool {
        match self.phase {
            Phase::Copy => {
                self.copy.wants_pipe() || self.copy.wants_buffer() || self.copy.wants_piece()
            }
            Phase::Sync | Phase::Truncate | Phase::Publish => false,
            Phase::Verify => self.verifier.as_ref().is_some_and(Verifier::wants_buffer),
        }
    }

    pub(super) fn failure(&self) -> Option<&TransferError> {
        self.copy
            .failure()
            .or(self.late_failure.as_ref())
            .or(self.publish.as_ref().and_then(|p| p.failure.as_ref()))
    }

    /// Bytes still to move, as far as is known.
    pub(super) fn remaining(&self) -> u64 {
        self.copy
            .total()
            .map_or(0, |t| t.saturating_sub(self.charged))
    }

    pub(super) fn state(&self) -> JobState {
        if self.throttled {
            JobState::Throttled
        } else if !self.got_slot && self.copy.moved() == 0 {
            JobState::Queued
        } else {
            JobState::Running
        }
    }

    pub(super) fn info(&self, now: Instant) -> JobInfo {
        let (mark, at) = self.rate_mark;
        let since = now.saturating_duration_since(mark);
        // A job that stalled has not updated its rate; measure it afresh.
        let rate = if since.as_secs_f64() > 2.0 {
            ((self.copy.moved() - at) as f64 / since.as_secs_f64()) as u64
        } else {
            self.rate
        };
        JobInfo {
            job: self.id,
            uid: self.uid,
            tag: self.tag.clone(),
            state: self.state(),
            bytes: self.copy.moved(),
            total: self.copy.total(),
            rate,
            strategy: self.copy.strategy(),
            priority: self.priority,
            rate_limit: self.bucket.as_ref().map(TokenBucket::rate),
            detached: self.detach,
            elapsed_us: micros(now.saturating_duration_since(self.started)),
        }
    }
}

/// What a job's mover borrows from the daemon's pools.
#[derive(Debug, Clone, Copy)]
pub(super) struct MoverPools {
    /// The pool buffers are registered with the ring.
    pub fixed_buffers: bool,
    pub buffers_per_job: usize,
    pub chunks_per_job: usize,
}

/// The state machine moving `ends` as `choice` says.
fn mover(ends: Rc<Endpoints>, shape: Shape, choice: Choice, pools: MoverPools) -> Mover {
    let mode = match choice.strategy {
        Strategy::Direct => IoMode::Direct {
            align: choice.align,
        },
        Strategy::Uncached => IoMode::Uncached,
        Strategy::Buffered => IoMode::Buffered,
        Strategy::CopyRange | Strategy::Sendfile => {
            return Mover::CopyRange(RangeCopy::new(ends, shape))
        }
        // A push (`Strategy::Peer`) is made by `from_spec` from the job's
        // remote target, never chosen here.
        Strategy::Auto | Strategy::Splice | Strategy::Reflink | Strategy::Peer => {
            return Mover::Splice(SpliceCopy::new(ends, shape, pools.chunks_per_job))
        }
    };
    Mover::Buffered(BufferCopy::new(
        ends,
        shape,
        mode,
        pools.fixed_buffers,
        pools.buffers_per_job,
        choice.orig_dst_size,
        choice.saved,
    ))
}

/// What a job shares with others as it starts: the smallest piece the
/// daemon's limit and its group's want, and its group.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Shared {
    pub piece: Option<u64>,
    pub group: Option<GroupKey>,
}

impl Job {
    /// The job an admitted `spec` runs as, started `now`, under the limits
    /// it `shared`.
    /// `tls`: the session of a push to another daemon, if it speaks TLS,
    /// how a detached one dials again when its connection is lost, and
    /// the conversation it continues, if one was kept (kept.rs).
    pub(super) fn from_spec(
        spec: JobSpec,
        pools: MoverPools,
        shared: Shared,
        now: Instant,
        (tls, redial, kept): (Option<Session>, Option<Redial>, Option<PeerLink>),
    ) -> Job {
        let JobSpec {
            ends,
            shape,
            mut choice,
            ..
        } = spec;
        let ends = Rc::new(ends);
        let (note, mut copy) = match (spec.reflink, spec.remote) {
            (_, Some((target, _))) if target.pull => {
                let pull = PeerPull::new(
                    ends,
                    shape,
                    (target.path, target.list, target.resume),
                    tls,
                    kept,
                );
                (None, Mover::Pull(pull))
            }
            (_, Some((target, meta))) => {
                let push = PeerPush::new(
                    ends,
                    shape,
                    (target.path, target.mkdir, target.resume, target.stripe),
                    meta,
                    spec.fsync,
                    (tls, redial),
                    kept,
                );
                (None, Mover::Peer(push))
            }
            (Some(required), None) => (
                Some(clone_note(required)),
                Mover::Reflink(ReflinkCopy::new(ends, shape, required, choice)),
            ),
            (None, None) => (choice.note.take(), mover(ends, shape, choice, pools)),
        };
        let bucket = spec
            .rate_limit
            .filter(|&r| r > 0)
            .map(|r| TokenBucket::new(r, now));
        // Rate-limited work moves in small pieces, so the limit holds over
        // short windows too.
        let piece = [bucket.as_ref().map(TokenBucket::piece), shared.piece]
            .into_iter()
            .flatten()
            .min();
        if let Some(piece) = piece {
            copy.set_piece_limit(piece);
        }
        if spec.verify {
            copy.checksum_source();
        }
        let publish = spec
            .publish
            .map(|p| Publisher::new(p.dir, p.name, p.staged, spec.id, spec.fsync));
        Job {
            devices: spec.devices,
            req: spec.req,
            session: Some(spec.submitter.session),
            note,
            auto: spec.auto,
            progress: spec.progress,
            detach: spec.detach,
            quiet: spec.quiet,
            fsync: spec.fsync,
            verify: spec.verify,
            bucket,
            rate_group: shared.group,
            range: (shape.src_start, shape.dst_start),
            truncate: spec.truncate,
            publish,
            fsize_limit: spec.fsize_limit,
            ..Job::bare(
                spec.id,
                spec.submitter.uid,
                spec.tag,
                copy,
                spec.priority,
                now,
            )
        }
    }

    /// A job `id` of user `uid` moving by `copy`, started `now`, with no
    /// session, limit or last step of its own: what a submit refines, and
    /// what another daemon's file is (peers/lease.rs).
    pub(super) fn bare(
        id: u64,
        uid: u32,
        tag: String,
        copy: Mover,
        priority: Priority,
        now: Instant,
    ) -> Job {
        Job {
            id,
            devices: None,
            req: 0,
            tag,
            uid,
            session: None,
            note: None,
            auto: false,
            copy,
            started: now,
            progress: false,
            last_progress: now,
            reported: 0,
            queued: false,
            queued_for: Resource::Pipe,
            queue_seq: 0,
            held: [0; RESOURCES],
            moved_at: now,
            priority,
            detach: false,
            quiet: false,
            fsync: false,
            verify: false,
            bucket: None,
            rate_group: None,
            watchers: Vec::new(),
            vtime: 0,
            charged: 0,
            charged_data: 0,
            throttled: false,
            got_slot: false,
            rate_mark: (now, 0),
            rate: 0,
            phase: Phase::Copy,
            side_op: None,
            verifier: None,
            synced: false,
            checksums: None,
            range: (0, 0),
            late_failure: None,
            keep: None,
            truncate: false,
            truncated: false,
            publish: None,
            fsize_limit: None,
        }
    }
}

/// The note of a job that fell back: what it said so far, then why it
/// went on with another rung, so the note tells the whole way down.
fn then(note: Option<String>, why: String) -> String {
    match note {
        Some(note) => format!("{note}; {why}"),
        None => format!("auto: {why}"),
    }
}

/// Why a job clones.
fn clone_note(required: bool) -> String {
    if required {
        "reflink: the destination was cloned from the source (FICLONE), as asked".into()
    } else {
        "auto: a whole regular file into an empty one, so the destination was cloned from the source (FICLONE), sharing its extents".into()
    }
}

pub(super) fn micros(d: std::time::Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// A job that ended, remembered for `Status` and `Wait`.
pub(super) struct Finished {
    pub info: JobInfo,
    /// Its final event, as sent to its owner.
    pub event: Event,
}

impl Engine {
    /// Refuses a submit before admission: no job id, descriptors closed.
    fn refuse(
        &mut self,
        k: usize,
        req: u64,
        e: TransferError,
        fds: impl IntoIterator<Item = OwnedFd>,
    ) {
        self.closing.doomed.extend(fds);
        let ev = Event::Failed {
            req,
            job: None,
            kind: e.kind,
            os_error: e.os_error,
            message: e.message,
            bytes: 0,
        };
        self.emit(k, &ev);
    }

    /// Admits a job (or refuses it with `Failed`). `acknowledge`: send
    /// `Accepted`; jobs of a `SubmitBatch` that asked for neither progress
    /// nor detach go without, their id coming with their final event.
    ///
    /// The pipeline (admission/spec.rs): the checks needing no file system
    /// here, then statx through the ring (admission.rs), then
    /// `admit_stated`.
    /// `fds`: source, destination and the directory to publish in;
    /// `remote`: for a push to another daemon, where the file lands there.
    pub(super) fn admit(
        &mut self,
        k: usize,
        submit: SubmitRequest,
        fds: (OwnedFd, OwnedFd, Option<OwnedFd>),
        remote: Option<PushTarget>,
        acknowledge: bool,
    ) {
        let Some(session) = self.sessions.slab.get(k) else {
            return;
        };
        let uid = session.peer.1;
        let (src, dst, dir) = fds;
        let fds = Submitted {
            src,
            dst,
            dir,
            remote,
        };
        let limits = Limits::of(&self.config);
        let checked = spec::precheck(
            &submit,
            uid,
            self.draining_refusal(),
            &self.load(k, uid),
            &limits,
        )
        .and_then(|()| self.loopback_refusal(&fds));
        match checked {
            Ok(()) => self.start_admission(k, uid, submit, fds, acknowledge),
            Err(e) => self.refuse(k, submit.req, e, fds.into_fds()),
        }
    }

    /// What session `k`, user `uid` and the daemon hold now, submits being
    /// admitted counted as jobs.
    fn load(&self, k: usize, uid: u32) -> Load {
        let user = self.slots.users.get(&uid).copied().unwrap_or_default();
        let session = self.sessions.slab.get(k);
        Load {
            connection_jobs: session.map_or(0, |s| s.jobs.len())
                + self.jobs.admissions.of_session(k),
            jobs: self.jobs.slab.len() + self.jobs.admissions.len(),
            user_jobs: user.jobs + self.jobs.admissions.of_user(uid),
            connection_bytes: session.map_or(0, |s| s.queued_bytes),
            user_bytes: user.bytes,
        }
    }

    /// A descriptor leading back to this daemon (see engine/loopback.rs).
    fn loopback_refusal(&self, fds: &Submitted) -> Result<(), TransferError> {
        let ours = self.listener.address.as_ref();
        match ours.and_then(|ours| super::loopback::refuse_loopback(ours, &fds.src, &fds.dst)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Goes on admitting a submit of session `k` once statx said what its
    /// descriptors are: decides its `JobSpec` and starts it, or refuses it
    /// with `Failed`.
    pub(super) fn admit_stated(&mut self, k: usize, stated: Stated) {
        let Some(mut cx) = self.admission_context(k, stated.uid, stated.acknowledge) else {
            self.closing.doomed.extend(stated.fds.into_fds());
            return;
        };
        if let [Ok(src), Ok(dst)] = &stated.stats {
            cx.clone_refused = self.jobs.clone_refusals.known(src.dev, dst.dev);
            cx.choice.copy_refused = self.jobs.copy_refusals.known(src.dev, dst.dev);
        }
        let req = stated.submit.req;
        let decided = spec::spec(
            stated.id,
            stated.submit,
            stated.fds,
            stated.stats,
            stated.dir,
            &cx,
        );
        match decided {
            Ok(spec) => self.start_job(spec),
            Err(refused) => {
                let session = self.sessions.slab.get(k).map_or(0, |s| s.id);
                debug!(session, req, "refused: {}", refused.error);
                self.refuse(k, req, refused.error, refused.fds.into_fds());
            }
        }
    }

    /// What the stated steps check a submit of session `k` (user `uid`)
    /// against; `None` when the session is gone.
    fn admission_context(&self, k: usize, uid: u32, acknowledge: bool) -> Option<Context> {
        let session = self.sessions.slab.get(k)?;
        Some(Context {
            submitter: Submitter {
                session: k,
                uid,
                personality: session.personality,
                fsize_limit: session.fsize_limit,
            },
            load: self.load(k, uid),
            limits: Limits::of(&self.config),
            choice: ChoiceInputs {
                direct_threshold: self.config.direct_threshold,
                have_buffers: self.slots.buffers.total() > 0,
                buffer_size: self.slots.buffers.buffer_size() as u64,
                copy_refused: None,
            },
            acknowledge,
            clone_refused: false,
        })
    }

    /// Starts an admitted job: its `Job`, the counts it is charged to,
    /// `Accepted`, and its first operations.
    fn start_job(&mut self, spec: JobSpec) {
        let (k, uid) = (spec.submitter.session, spec.submitter.uid);
        let (id, req, bytes, quiet) = (spec.id, spec.req, spec.bytes, spec.quiet);
        debug!(
            session = self.sessions.slab.get(k).map_or(0, |s| s.id),
            job = id,
            uid,
            tag = %spec.tag,
            src = %spec.ends.src_kind,
            dst = %spec.ends.dst_kind,
            total = ?spec.shape.total,
            priority = %spec.priority,
            rate_limit = ?spec.rate_limit,
            detach = spec.detach,
            "job admitted"
        );
        let keep = self.kept_key(k, &spec);
        let kept = self.continued_link(&spec, keep);
        let tls = match kept {
            Ok(Some(_)) => Ok(None),
            Ok(None) => self.push_session(&spec),
            Err(ref e) => Err(e.clone()),
        };
        let (tls, kept) = match (tls, kept) {
            (Ok(tls), Ok(kept)) => (tls, kept),
            (Err(e), _) | (_, Err(e)) => {
                let Endpoints { src, dst, .. } = spec.ends;
                return self.refuse(k, req, e, [src, dst]);
            }
        };
        let personality = spec.submitter.personality;
        let pools = MoverPools {
            fixed_buffers: self.slots.buffers.registered(),
            buffers_per_job: self.config.buffers_per_job,
            chunks_per_job: self.config.chunks_per_job,
        };
        let now = Instant::now();
        let shared = self.shared_limits(k, spec.rate_group, now);
        let secure = tls.is_some() || (kept.is_some() && self.peers.tls.is_some());
        let note = spec.remote.as_ref().map(|_| match kept {
            Some(_) => then(
                Some(self.push_note(secure)),
                "on the connection an earlier file kept".into(),
            ),
            None => self.push_note(secure),
        });
        let redial = self.redial_for(&spec, secure);
        let mut job = Job::from_spec(spec, pools, shared, now, (tls, redial, kept));
        job.note = note.or(job.note.take());
        job.keep = keep;
        let key = self.jobs.slab.insert(job);
        self.io.ops.set_personality(Owner::Job(key), personality);
        self.jobs.ids.insert(id, key);
        let usage = self.slots.users.entry(uid);
        usage.jobs += 1;
        usage.bytes += bytes;
        if let Some(session) = self.sessions.slab.get_mut(k) {
            session.jobs.push(key);
            session.queued_bytes += bytes;
        }
        if !quiet {
            self.emit(k, &Event::Accepted { req, job: id });
        }
        if let Some(job) = self.jobs.slab.get_mut(key) {
            let io = &mut self.io;
            job.copy.start(Owner::Job(key), io);
        }
        self.after_job_step(key);
    }

    /// A SEND_ZC completion of a job: the first of its two, or the
    /// notification that the kernel is done with the buffer.
    pub(super) fn on_zero_copy(&mut self, user_data: u64, result: i32, flags: u32) {
        if cqueue::more(flags) {
            // The first of a SEND_ZC's two completions: the entry (and the
            // buffer it holds) stays until the notification.
            if let Some(&Op {
                owner: Owner::Job(k),
                tag,
                ..
            }) = self.io.ops.peek(user_data)
            {
                if let Some(CopyStep::Out(slot)) = CopyStep::from_tag(tag) {
                    self.on_job(k, CopyStep::ZcSent(slot).tag(), result, None);
                }
            }
            return;
        }
        if cqueue::notif(flags) {
            if let Some(Op {
                owner: Owner::Job(k),
                tag,
                op,
            }) = self.io.ops.complete(user_data)
            {
                if let Some(CopyStep::Out(slot)) = CopyStep::from_tag(tag) {
                    // The kernel is done with the buffer: it goes back to the job.
                    self.on_job(k, CopyStep::ZcNotif(slot).tag(), result, op.into_buffer());
                }
            }
        }
    }

    /// A completion for job `k`; `buf` is the pool buffer its operation
    /// held, handed back (a buffer operation's last completion).
    pub(super) fn on_job(&mut self, k: usize, tag: u32, result: i32, buf: Option<BufRef>) {
        let Some(job) = self.jobs.slab.get(k) else {
            tracing::error!(key = k, "completion for a job that is gone");
            if let Some(buf) = buf {
                self.slots.buffers.give_back(buf);
            }
            return;
        };
        self.counters.by_strategy[strategy_index(job.copy.strategy())].ops += 1;
        if let Some(step) = JobStep::from_tag(tag) {
            // None of these holds a pool buffer; one handed back anyway goes home.
            self.slots.returned.extend(buf.map(Returned::Buffer));
            return match step {
                JobStep::Fsync => self.on_synced(k, result),
                JobStep::EndTruncate => self.on_end_truncated(k, result),
                JobStep::Publish => self.on_publish_step(k, result),
            };
        }
        if VerifyRead::from_tag(tag).is_some() {
            match self.jobs.slab.get_mut(k).and_then(|j| j.verifier.as_mut()) {
                Some(v) => {
                    let io = &mut self.io;
                    v.on_complete(
                        tag,
                        result,
                        buf,
                        Owner::Job(k),
                        io,
                        &mut self.slots.returned,
                    );
                }
                None => self.slots.returned.extend(buf.map(Returned::Buffer)),
            }
            return self.after_job_step(k);
        }
        if CopyStep::from_tag(tag).is_none() {
            tracing::error!(
                key = k,
                tag,
                "completion of an operation the job did not queue"
            );
            self.slots.returned.extend(buf.map(Returned::Buffer));
            return;
        }
        let yield_slots = self.should_yield(k);
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        let io = &mut self.io;
        job.copy.on_complete(
            tag,
            result,
            buf,
            Owner::Job(k),
            io,
            yield_slots,
            &mut self.slots.returned,
        );
        self.after_job_step(k);
    }

    /// A completion of a push's control frame (peer_push.rs), with the op
    /// that holds its buffer.
    pub(super) fn on_job_control(&mut self, k: usize, op: Op, result: i32) {
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        let io = &mut self.io;
        let out = &mut self.slots.returned;
        job.copy
            .on_control(op.tag, result, op.op, Owner::Job(k), io, out);
        self.after_job_step(k);
    }

    pub(super) fn fail_job(&mut self, k: usize, err: TransferError) {
        // Another daemon's file fails on its connection too, unless the
        // daemon is stopping (its connections are lost then), and not
        // once it is being published or wholly sent: as for a publish, a
        // cancel then comes too late.
        let lease = match self.jobs.slab.get(k).map(|j| &j.copy) {
            Some(Mover::Lease(l)) if !self.life.stopping => Some((l.serves, err.clone())),
            _ => None,
        };
        if lease
            .as_ref()
            .is_some_and(|(serves, _)| !self.lease_cancellable(*serves))
        {
            return;
        }
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        let io = &mut self.io;
        match job.phase {
            Phase::Copy => job
                .copy
                .fail(err, Owner::Job(k), io, &mut self.slots.returned),
            // The bytes are all in: a publish under way finishes (a cancel
            // arriving now is too late), and its own failure is its own.
            Phase::Publish => {}
            // An fdatasync cannot be taken back; the job ends when it does.
            Phase::Sync | Phase::Truncate => {
                job.late_failure.get_or_insert(err);
            }
            Phase::Verify => {
                job.late_failure.get_or_insert(err.clone());
                if let Some(v) = job.verifier.as_mut() {
                    v.fail(err, io, &mut self.slots.returned);
                }
            }
        }
        self.after_job_step(k);
        if let Some((serves, err)) = lease {
            self.lease_cancelled(serves, &err);
        }
    }

    /// After a job moved: takes back the pipes and buffers it gave up,
    /// charges what it moved, reports progress, queues it for more, starts
    /// its last steps or finishes it.
    pub(super) fn after_job_step(&mut self, k: usize) {
        if !self.slots.returned.is_empty() {
            // Counted by what came back, not by what the job uses now: a job
            // that just moved on to verification returns pipes but uses buffers.
            let mut back = [0usize; RESOURCES];
            for r in &self.slots.returned {
                let r = match r {
                    Returned::Buffer(_) => Resource::Buffer,
                    Returned::Clean(_) | Returned::Dirty(_) => Resource::Pipe,
                    Returned::Piece(_) => Resource::Piece,
                };
                back[r as usize] += 1;
            }
            self.slots_returned(k, back);
        }
        self.slots.take_back();
        self.charge(k);
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        if job.phase == Phase::Copy && job.failure().is_none() {
            let past = crate::transfer::fsize::fsize_exceeded(
                job.fsize_limit,
                job.range.1,
                job.copy.moved(),
            );
            if let Some(e) = past {
                return self.fail_job(k, e);
            }
        }
        if job.phase == Phase::Copy && job.copy.is_finished() && job.failure().is_none() {
            self.start_last_steps(k);
        }
        self.fall_back(k);
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        let done = match job.phase {
            Phase::Copy => job.copy.is_finished(),
            Phase::Sync | Phase::Truncate => job.side_op.is_none(),
            Phase::Verify => job.verifier.as_ref().is_none_or(Verifier::is_finished),
            Phase::Publish => job.publish.as_ref().is_none_or(Publisher::is_finished),
        };
        if done {
            if self.start_publish(k) {
                return;
            }
            return self.finish_job(k);
        }
        if job.wants_slot() && !job.queued && !job.throttled {
            self.enqueue(k);
        }
        self.report_progress(k);
        self.lease_granted(k);
    }

    /// A job whose strategy refused its files before any byte moved goes
    /// on with the ladder's next rung, and the note says so: a refused
    /// clone with the choice admission made, a refused copy_file_range or
    /// sendfile with splice, a source that refuses splice with buffered.
    fn fall_back(&mut self, k: usize) {
        match self.jobs.slab.get(k).map(|j| (&j.copy, j.phase)) {
            Some((Mover::Reflink(_), Phase::Copy)) => self.fall_back_from_clone(k),
            Some((Mover::CopyRange(_), Phase::Copy)) => self.fall_back_from_copy_range(k),
            Some((Mover::Splice(_), Phase::Copy)) => self.fall_back_from_splice(k),
            _ => {}
        }
    }

    fn mover_pools(&self) -> MoverPools {
        MoverPools {
            fixed_buffers: self.slots.buffers.registered(),
            buffers_per_job: self.config.buffers_per_job,
            chunks_per_job: self.config.chunks_per_job,
        }
    }

    /// An `auto` job whose clone was refused goes on with the choice
    /// admission made for it.
    fn fall_back_from_clone(&mut self, k: usize) {
        let pools = self.mover_pools();
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        let Mover::Reflink(c) = &mut job.copy else {
            return;
        };
        let Some(back) = c.fall_back() else {
            return;
        };
        if let Some((src, dst)) = job.devices {
            self.jobs.clone_refusals.learn(back.errno, src, dst);
        }
        let mut choice = back.choice;
        let then = choice
            .note
            .take()
            .unwrap_or_else(|| format!("the {} strategy", choice.strategy));
        let why = format!(
            "auto: no clone ({}), so {}",
            crate::transfer::reflink::refusal(back.errno),
            then.strip_prefix("auto: ").unwrap_or(&then)
        );
        job.copy = mover(back.ends, back.shape, choice, pools);
        if let Some(piece) = back.piece_limit {
            job.copy.set_piece_limit(piece);
        }
        if back.checksum_source {
            job.copy.checksum_source();
        }
        debug!(job = job.id, "{why}");
        job.note = Some(why);
        let io = &mut self.io;
        job.copy.start(Owner::Job(k), io);
    }

    /// An `auto` job whose files copy_file_range (or sendfile) refused
    /// before any byte moved (different file systems: EXDEV; EOPNOTSUPP,
    /// EINVAL, ENOSYS, EBADF) goes on with splice; the pair of file systems
    /// is remembered, so later jobs between them splice at once.
    fn fall_back_from_copy_range(&mut self, k: usize) {
        let chunks = self.config.chunks_per_job;
        let global = self.slots.global_bucket.as_ref().map(TokenBucket::piece);
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        let Mover::CopyRange(c) = &job.copy else {
            return;
        };
        let errno = match c.refused() {
            Some(errno) if job.auto && c.is_finished() => errno,
            _ => return,
        };
        let syscall = if c.sends() {
            "sendfile"
        } else {
            if let Some((src, dst)) = job.devices {
                self.jobs.copy_refusals.learn(errno, src, dst);
            }
            "copy_file_range"
        };
        let why = then(
            job.note.take(),
            format!(
                "{syscall} refused ({}), so splice",
                crate::transfer::copy_range::refusal_reason(errno)
            ),
        );
        job.copy = Mover::Splice(SpliceCopy::new(c.endpoints(), c.shape(), chunks));
        let piece = job.bucket.as_ref().map(TokenBucket::piece).into_iter();
        if let Some(piece) = piece.chain(global).min() {
            job.copy.set_piece_limit(piece);
        }
        debug!(job = job.id, "{why}");
        job.note = Some(why);
        // An entry left in the piece queue is stale: the job queues again,
        // for a pipe.
        unqueue(job, &mut self.slots.users);
        let io = &mut self.io;
        job.copy.start(Owner::Job(k), io);
    }

    /// An `auto` job whose source refused splice (EINVAL: procfs files
    /// without splice_read, /dev/null) before any byte moved goes on with
    /// buffered read() and write().
    fn fall_back_from_splice(&mut self, k: usize) {
        let have_buffers = self.slots.buffers.total() > 0;
        let pools = self.mover_pools();
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        let Mover::Splice(c) = &job.copy else {
            return;
        };
        if !job.auto || job.phase != Phase::Copy || !c.is_finished() || !c.source_refused() {
            return;
        }
        let ends = c.endpoints();
        if !have_buffers || ends.dst_kind != FdKind::File {
            return;
        }
        let why = then(
            job.note.take(),
            format!(
                "the source {} refuses splice (EINVAL), so read() and write() through a buffer (buffered)",
                ends.src_kind
            ),
        );
        let shape = c.shape();
        let orig = shape.dst_size;
        job.copy = Mover::Buffered(BufferCopy::new(
            ends,
            shape,
            IoMode::Buffered,
            pools.fixed_buffers,
            pools.buffers_per_job,
            orig,
            Vec::new(),
        ));
        debug!(job = job.id, "{why}");
        job.note = Some(why);
        // An entry left in the pipe queue is stale: the job queues again,
        // for a buffer.
        unqueue(job, &mut self.slots.users);
        let io = &mut self.io;
        job.copy.start(Owner::Job(k), io);
    }

    /// Charges the bytes moved since the last step to the job's virtual
    /// time, its rate limits (its own, its group's, the daemon's), and the
    /// counters.
    fn charge(&mut self, k: usize) {
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        let moved = job.copy.taken();
        let delta = moved.saturating_sub(job.charged);
        if delta == 0 {
            return;
        }
        let now = Instant::now();
        job.charged = moved;
        job.moved_at = now;
        let data = moved.saturating_sub(job.copy.hole_bytes());
        let data_delta = data.saturating_sub(job.charged_data);
        job.charged_data = job.charged_data.max(data);
        // The job went on with this piece without queueing: it was served
        // at its virtual time, which newcomers must not start behind.
        self.slots.queues[job.resource() as usize].granted(job.vtime);
        // Scaled by the user's jobs wanting slots: users share first.
        let scale = self.slots.users.vtime_scale(job.uid);
        job.vtime = job
            .vtime
            .saturating_add(super::scheduler::cost(data_delta, job.priority).saturating_mul(scale));
        if let Some(b) = job.bucket.as_mut() {
            b.charge(data_delta, now);
        }
        if let Some(b) = self.slots.global_bucket.as_mut() {
            b.charge(data_delta, now);
        }
        if let Some(b) = job
            .rate_group
            .and_then(|g| self.slots.rate_groups.bucket(g))
        {
            b.charge(delta, now);
        }
        let (mark, at) = job.rate_mark;
        let window = now.saturating_duration_since(mark).as_secs_f64();
        if window >= 1.0 {
            job.rate = ((moved - at) as f64 / window) as u64;
            job.rate_mark = (now, moved);
        } else if job.rate == 0 && window > 0.05 {
            job.rate = ((moved - at) as f64 / window) as u64;
        }
        self.counters.by_strategy[strategy_index(job.copy.strategy())].bytes += data_delta;
        let known = job.copy.total().is_some();
        let (uid, session) = (job.uid, job.session);
        if known {
            if let Some(u) = self.slots.users.get_mut(&uid) {
                u.bytes = u.bytes.saturating_sub(delta);
            }
            if let Some(s) = session.and_then(|sk| self.sessions.slab.get_mut(sk)) {
                s.queued_bytes = s.queued_bytes.saturating_sub(delta);
            }
        }
    }

    fn report_progress(&mut self, k: usize) {
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        let listeners = job.progress || job.watchers.iter().any(|w| w.progress);
        if !listeners || job.copy.moved() == job.reported {
            return;
        }
        let now = Instant::now();
        if now.duration_since(job.last_progress) < PROGRESS_INTERVAL {
            return;
        }
        job.last_progress = now;
        job.reported = job.copy.moved();
        let (id, bytes, total) = (job.id, job.copy.moved(), job.copy.total());
        let owner = job.session.filter(|_| job.progress).map(|sk| (sk, job.req));
        let watchers: Vec<(usize, u64)> = job
            .watchers
            .iter()
            .filter(|w| w.progress)
            .map(|w| (w.session, w.req))
            .collect();
        for (sk, req) in owner.into_iter().chain(watchers) {
            let reading = self
                .sessions
                .slab
                .get(sk)
                .is_some_and(|s| s.wire.keeps_up());
            if reading {
                self.emit(
                    sk,
                    &Event::Progress {
                        req,
                        job: id,
                        bytes,
                        total,
                    },
                );
            }
        }
    }

    /// The bytes are in place: truncation to the job's end, fdatasync and
    /// verification, as asked, one after the other.
    fn start_last_steps(&mut self, k: usize) {
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        let Some(ends) = job.copy.endpoints() else {
            return;
        };
        if job.truncate && !job.truncated {
            let end = job.range.1.saturating_add(job.copy.moved());
            let io = &mut self.io;
            match io.ftruncate(
                Owner::Job(k),
                JobStep::EndTruncate.tag(),
                ends.shared_dst(),
                end,
            ) {
                Ok(ud) => {
                    job.phase = Phase::Truncate;
                    job.side_op = Some(ud);
                }
                Err(e) => {
                    job.late_failure = Some(TransferError::new(
                        FailureKind::Io,
                        format!("queueing the truncation of the destination failed: {e}"),
                    ))
                }
            }
            return;
        }
        if job.fsync && !job.synced && ends.dst_kind == FdKind::File {
            let io = &mut self.io;
            match io.fdatasync(Owner::Job(k), JobStep::Fsync.tag(), ends.shared_dst()) {
                Ok(ud) => {
                    job.phase = Phase::Sync;
                    job.side_op = Some(ud);
                }
                Err(e) => {
                    job.late_failure = Some(TransferError::new(
                        FailureKind::Io,
                        format!("queueing fdatasync of the destination failed: {e}"),
                    ))
                }
            }
            return;
        }
        if job.verify && job.verifier.is_none() {
            let total = job.copy.moved();
            let (src_start, dst_start) = job.range;
            let known = job.copy.source_checksum();
            debug!(
                job = job.id,
                source_read_again = known.is_none(),
                "verifying"
            );
            job.verifier = Some(Verifier::new(ends, (src_start, dst_start), total, known));
            job.phase = Phase::Verify;
            // An entry left in the pipe queue from the copy is stale now: the
            // job queues again, for a buffer.
            unqueue(job, &mut self.slots.users);
            if self.slots.buffers.total() == 0 {
                job.late_failure = Some(TransferError::new(
                    FailureKind::InvalidRequest,
                    "verification needs I/O buffers, and this daemon has none (--buffers 0)",
                ));
                if let Some(v) = job.verifier.as_mut() {
                    let io = &mut self.io;
                    v.fail(
                        TransferError::new(FailureKind::InvalidRequest, "no buffers"),
                        io,
                        &mut self.slots.returned,
                    );
                }
            }
        }
    }

    fn on_synced(&mut self, k: usize, result: i32) {
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        job.side_op = None;
        if result < 0 && !crate::transfer::errno::interrupted(-result) {
            job.late_failure.get_or_insert(TransferError::os(
                format!("fdatasync of the destination {}", FdKind::File),
                -result,
            ));
        } else if result < 0 {
            // Interrupted: sync again.
            job.phase = Phase::Copy;
        } else {
            job.synced = true;
            job.phase = Phase::Copy;
        }
        if job.late_failure.is_none() {
            self.start_last_steps(k);
        }
        self.after_job_step(k);
    }

    /// The in-place destination was truncated to the job's end.
    fn on_end_truncated(&mut self, k: usize, result: i32) {
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        job.side_op = None;
        job.phase = Phase::Copy;
        if result < 0 && -result != libc::EINTR {
            job.late_failure.get_or_insert(TransferError::os(
                format!(
                    "truncating the destination to the copy's end ({} bytes)",
                    job.range.1.saturating_add(job.copy.moved())
                ),
                -result,
            ));
        } else if result >= 0 {
            job.truncated = true;
        }
        if job.late_failure.is_none() {
            self.start_last_steps(k);
        }
        self.after_job_step(k);
    }

    /// Starts the publish of a job whose other steps are done: its name if
    /// it succeeded, the removal of a hidden name if not. False when there
    /// is nothing (more) to do and the job can end.
    fn start_publish(&mut self, k: usize) -> bool {
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return false;
        };
        if job.phase == Phase::Publish {
            return false;
        }
        // Verification's verdict decides whether the copy gets its name.
        if let Some(v) = job.verifier.as_ref().filter(|v| v.is_finished()) {
            match v.outcome() {
                Ok(sums) => job.checksums = Some(sums),
                Err(e) => {
                    job.late_failure.get_or_insert(e);
                }
            }
        }
        let success = job.failure().is_none();
        let (Some(p), Some(ends)) = (job.publish.as_mut(), job.copy.endpoints()) else {
            return false;
        };
        if !p.has_work(success) {
            return false;
        }
        let io = &mut self.io;
        p.start(success, Owner::Job(k), &ends, io);
        job.phase = Phase::Publish;
        !p.is_finished()
    }

    fn on_publish_step(&mut self, k: usize, result: i32) {
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        if let (Some(p), Some(ends)) = (job.publish.as_mut(), job.copy.endpoints()) {
            let io = &mut self.io;
            p.on_complete(result, Owner::Job(k), &ends, io);
        }
        self.after_job_step(k);
    }

    /// Job `k` has ended: its final event to its owner and watchers, its
    /// charges taken back, its descriptors to the closing thread.
    pub(super) fn finish_job(&mut self, k: usize) {
        let mut job = self.jobs.slab.remove(k);
        self.jobs.ids.remove(&job.id);
        self.counters.bytes_finished += job.copy.moved();
        let now = Instant::now();
        if let Some(v) = job.verifier.as_ref() {
            match v.outcome() {
                Ok(sums) => job.checksums = Some(sums),
                Err(e) => {
                    job.late_failure.get_or_insert(e);
                }
            }
        }
        if let Mover::Peer(push) = &job.copy {
            // The other daemon checked what landed against the CRC sent,
            // and synced it if asked, before it said Done.
            if let Some((source, destination)) = push.checksums() {
                job.checksums = Some(Checksums {
                    source,
                    destination,
                });
                job.synced = job.fsync;
            }
            if let Some(dials) = push.redials() {
                let why = format!(
                    "the connection was lost; the daemon dialled the other daemon again {dials} time(s)"
                );
                job.note = Some(then(job.note.take(), why));
            }
            if let Some(kept) = push.resumed_from().filter(|&kept| kept > 0) {
                let why = format!(
                    "resumed: the first {kept} bytes the other daemon kept matched, by CRC-32C"
                );
                job.note = Some(then(job.note.take(), why));
            }
        }
        if let Mover::Pull(pull) = &job.copy {
            let kept = pull.resumed_from();
            if kept > 0 && pull.checksums().is_some() {
                let why = format!(
                    "resumed: the first {kept} bytes of the part kept matched the other daemon's file, by CRC-32C"
                );
                job.note = Some(then(job.note.take(), why));
            }
        }
        if let Some((source, destination)) = match &job.copy {
            Mover::Pull(pull) => pull.checksums(),
            _ => None,
        } {
            job.checksums = Some(Checksums {
                source,
                destination,
            });
        }
        let (event, state) = self.final_event(&job, now);
        let remaining = job.remaining();
        self.release_user(&mut job, remaining);
        if let Some(group) = job.rate_group {
            self.slots.rate_groups.leave(group);
        }
        self.remember(&job, now, state, &event);
        for w in std::mem::take(&mut job.watchers) {
            self.emit(w.session, &with_req(&event, w.req));
        }
        let keep = job
            .keep
            .filter(|_| job.failure().is_none() && job.session.is_some());
        let fds = match (keep, job.copy) {
            (Some(key), Mover::Peer(push)) => {
                let (fds, kept) = push.into_kept();
                self.keep_link(key, kept);
                fds
            }
            (Some(key), Mover::Pull(pull)) => {
                let (fds, kept) = pull.into_kept();
                self.keep_link(key, kept);
                fds
            }
            (_, copy) => copy.into_descriptors(),
        };
        self.closing.doomed.extend(fds);
        if let Some(dir) = job.publish.take().and_then(Publisher::into_dir) {
            self.closing.doomed.push(dir);
        }
        if let Some(sk) = job.session {
            if let Some(session) = self.sessions.slab.get_mut(sk) {
                if let Some(pos) = session.jobs.iter().position(|&j| j == k) {
                    session.jobs.swap_remove(pos);
                }
                session.queued_bytes = session.queued_bytes.saturating_sub(remaining);
            }
            self.emit_final(sk, &event, job.quiet);
            self.close_if_idle_half_closed(sk);
            self.free_if_done(sk);
        }
    }

    /// The final event of a job that ended (and its state for `Status`),
    /// counted as completed or failed.
    fn final_event(&mut self, job: &Job, now: Instant) -> (Event, JobState) {
        let moved = job.copy.moved();
        let elapsed = now.saturating_duration_since(job.started);
        let stats = &mut self.counters.by_strategy[strategy_index(job.copy.strategy())];
        match job.failure() {
            None => {
                self.counters.jobs_completed += 1;
                stats.jobs_completed += 1;
                debug!(job = job.id, tag = %job.tag, bytes = moved, strategy = %job.copy.strategy(), ?elapsed, "job completed");
                let event = Event::Completed {
                    req: job.req,
                    job: job.id,
                    bytes: moved,
                    strategy: job.copy.strategy(),
                    elapsed_us: micros(elapsed),
                    note: job.note.clone(),
                    synced: job.synced,
                    checksums: job.checksums,
                };
                (event, JobState::Completed)
            }
            Some(e) => {
                self.counters.jobs_failed += 1;
                stats.jobs_failed += 1;
                debug!(job = job.id, tag = %job.tag, bytes = moved, "job failed: {e}");
                let event = Event::Failed {
                    req: job.req,
                    job: Some(job.id),
                    kind: e.kind,
                    os_error: e.os_error,
                    message: e.message.clone(),
                    bytes: moved,
                };
                let state = JobState::Failed {
                    kind: e.kind,
                    message: e.message.clone(),
                };
                (event, state)
            }
        }
    }

    /// Takes an ended job off its user's counts (its `remaining` bytes
    /// included), and forgets a user left with no job.
    fn release_user(&mut self, job: &mut Job, remaining: u64) {
        unqueue(job, &mut self.slots.users);
        let last = self.slots.users.get_mut(&job.uid).is_some_and(|u| {
            u.jobs -= 1.min(u.jobs);
            u.bytes = u.bytes.saturating_sub(remaining);
            u.jobs == 0
        });
        if last {
            self.slots.forget_user(job.uid);
        }
    }

    /// Keeps an ended job for `Status` and `Wait`, the oldest making room.
    fn remember(&mut self, job: &Job, now: Instant, state: JobState, event: &Event) {
        let mut info = job.info(now);
        info.state = state;
        info.rate = 0;
        if self.jobs.recent.len() >= RECENT_JOBS {
            self.jobs.recent.pop_front();
        }
        self.jobs.recent.push_back(Finished {
            info,
            event: event.clone(),
        });
    }
}

impl Engine {
    /// Closes session `k` if its client shut down its sending side and
    /// nothing it submitted is left: no job, no submit being admitted.
    pub(super) fn close_if_idle_half_closed(&mut self, k: usize) {
        let idle_half_closed = self.sessions.slab.get(k).is_some_and(|s| {
            s.half_closed
                && !s.closing
                && s.jobs.is_empty()
                && self.jobs.admissions.of_session(k) == 0
        });
        if idle_half_closed {
            self.close_session(k, "the client half-closed the connection");
        }
    }
}

/// A job's event as sent to a watcher: the same, with the watcher's `req`.
pub(super) fn with_req(event: &Event, req: u64) -> Event {
    let mut event = event.clone();
    match &mut event {
        Event::Accepted { req: r, .. }
        | Event::Progress { req: r, .. }
        | Event::Completed { req: r, .. }
        | Event::Failed { req: r, .. } => *r = req,
        _ => {}
    }
    event
}
