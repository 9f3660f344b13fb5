//! Lending I/O slots (pooled pipes and buffers) to jobs: fair queueing,
//! per-connection quotas, the global cap on operations in flight, and rate
//! limits with the timer that wakes throttled jobs.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use ringxfer_ipc::{FailureKind, RateGroup};
use tracing::error;

use super::jobs::Shared;
use super::rate::{GroupKey, RateGroups, TokenBucket};
use super::scheduler::{should_yield, FairQueue, Group, Waiter};
use super::shares::{unqueue, wanting, Users};
use super::{Engine, EngineConfig, Resource, RESOURCES};
use crate::io::buffer_pool::BufferPool;
use crate::io::ops::Owner;
use crate::io::piece_pool::PiecePool;
use crate::io::pipe_pool::PipePool;
use crate::transfer::splice::Returned;
use crate::transfer::TransferError;

/// Throttled jobs are woken no more often than this, so a tiny limit does
/// not turn into a timer storm.
const MIN_THROTTLE_WAIT: Duration = Duration::from_millis(2);

/// The pools jobs borrow from, the queues of jobs waiting for them, and
/// the rate limits that hold jobs back.
pub(super) struct Slots {
    pub pipes: PipePool,
    /// Declared after `Engine::io`, so the ring (which has the buffers
    /// registered) is closed before their memory is freed.
    pub buffers: BufferPool,
    /// Worker pieces (copy_file_range, sendfile in flight).
    pub pieces: PiecePool,
    /// Jobs waiting for a pipe, a buffer or a piece (by `Resource`).
    pub queues: [FairQueue; RESOURCES],
    /// Jobs parked until their rate limits allow more.
    pub throttled: Vec<usize>,
    /// The daemon-wide rate limit.
    pub global_bucket: Option<TokenBucket>,
    /// Limits shared by groups of one connection's jobs.
    pub rate_groups: RateGroups,
    /// Unfinished jobs, bytes still to move, slots held and jobs waiting,
    /// per user (shares.rs).
    pub users: Users,
    /// Pipes and buffers jobs gave up this step, on their way to the pools.
    pub returned: Vec<Returned>,
}

impl Slots {
    pub(super) fn new(
        config: &EngineConfig,
        pipes: PipePool,
        buffers: BufferPool,
        pieces: PiecePool,
    ) -> Slots {
        let n = RESOURCES as u64;
        Slots {
            pipes,
            buffers,
            pieces,
            queues: Resource::ALL
                .map(|r| FairQueue::with_capacity(config.max_jobs * 2, r as u64, n)),
            throttled: Vec::with_capacity(64),
            global_bucket: config
                .rate_limit
                .filter(|&r| r > 0)
                .map(|r| TokenBucket::new(r, Instant::now())),
            rate_groups: RateGroups::default(),
            users: Users::default(),
            returned: Vec::with_capacity(16),
        }
    }

    /// The most slots of `r` one connection's jobs may hold at once.
    fn quota(&self, r: Resource) -> usize {
        (self.pool_total(r) / 2).max(1)
    }

    /// The most slots one connection's jobs may hold at once, of both
    /// pools, within the cap on operations in flight: how many pieces a
    /// group of its jobs can have in flight when its bucket runs dry.
    pub(super) fn connection_slots(&self, max_inflight: usize) -> usize {
        (self.quota(Resource::Pipe) + self.quota(Resource::Buffer)).min(max_inflight)
    }

    pub(super) fn idle(&self, r: Resource) -> usize {
        match r {
            Resource::Pipe => self.pipes.idle(),
            Resource::Buffer => self.buffers.idle(),
            Resource::Piece => self.pieces.idle(),
        }
    }

    pub(super) fn pool_total(&self, r: Resource) -> usize {
        match r {
            Resource::Pipe => self.pipes.total(),
            Resource::Buffer => self.buffers.total(),
            Resource::Piece => self.pieces.total(),
        }
    }

    /// Slots lent now, each carrying one operation in flight.
    pub(super) fn lent(&self) -> usize {
        Resource::ALL
            .iter()
            .map(|&r| self.pool_total(r) - self.idle(r))
            .sum()
    }

    /// All slots of every pool.
    pub(super) fn all_slots(&self) -> usize {
        Resource::ALL.iter().map(|&r| self.pool_total(r)).sum()
    }

    /// The last job of `uid` ended: its parking group goes to the next user.
    pub(super) fn forget_user(&mut self, uid: u32) {
        if let Some(group) = self.users.remove(&uid) {
            for q in &mut self.queues {
                q.clear(Group::User(group));
            }
        }
    }

    /// Puts what jobs gave up back in the pools.
    pub(super) fn take_back(&mut self) {
        for returned in self.returned.drain(..) {
            match returned {
                Returned::Buffer(buf) => self.buffers.give_back(buf),
                Returned::Piece(piece) => self.pieces.give_back(piece),
                Returned::Clean(pipe) => self.pipes.give_back(pipe),
                Returned::Dirty(pipe) => {
                    if let Some(e) = self.pipes.discard(pipe) {
                        tracing::warn!(
                            "a pipe could not be replaced; the pool shrinks to {}: {e}",
                            self.pipes.total()
                        );
                    }
                }
            }
        }
    }
}

impl Engine {
    /// Puts a job that wants a slot in its fair queue.
    pub(super) fn enqueue(&mut self, k: usize) {
        let Some((r, session)) = self.jobs.slab.get(k).map(|j| (j.resource(), j.session)) else {
            return;
        };
        // A user over its share, or a connection at its quota, would only
        // have the job parked when it reached the front: park it now.
        let held_back = self
            .over_user_share(k, r)
            .or_else(|| self.at_quota(session, r).map(Group::Connection));
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        let q = &mut self.slots.queues[r as usize];
        let (seq, vtime) = match held_back {
            Some(g) => q.push_parked(g, k, job.vtime, job.priority),
            None => q.push(k, job.vtime, job.priority),
        };
        let before = wanting(job);
        job.queue_seq = seq;
        job.vtime = vtime;
        job.queued = true;
        job.queued_for = r;
        self.slots.users.adjust(job.uid, r, 0, 1);
        self.slots.users.job_wanting(job.uid, before, true);
    }

    pub(super) fn first_waiter(&mut self, r: Resource) -> Option<Waiter> {
        let jobs = &self.jobs.slab;
        self.slots.queues[r as usize].peek(|key, seq| {
            jobs.get(key)
                .is_some_and(|j| j.queued && j.queue_seq == seq)
        })
    }

    /// Whether a running job should give back the slot of a chunk that just
    /// finished its piece: a job ahead of the first waiter yields, and so
    /// does one whose rate limit (its own, its group's or the daemon's) is
    /// spent.
    pub(super) fn should_yield(&mut self, k: usize) -> bool {
        let now = Instant::now();
        if self
            .slots
            .global_bucket
            .as_mut()
            .is_some_and(|b| !b.ready(now))
        {
            return true;
        }
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return false;
        };
        if job.bucket.as_mut().is_some_and(|b| !b.ready(now)) {
            return true;
        }
        let group = job
            .rate_group
            .and_then(|g| self.slots.rate_groups.bucket(g));
        if group.is_some_and(|b| !b.ready(now)) {
            return true;
        }
        let (vtime, priority, r) = (job.vtime, job.priority, job.resource());
        // A user over its share while another user waits gives slots back
        // whatever the virtual times say: shares are per user first.
        if self.user_over_share(k, r) {
            return true;
        }
        if should_yield(vtime, priority, self.first_waiter(r).filter(|w| w.key != k)) {
            return true;
        }
        // Waiters parked behind this job's own user or connection can only
        // get a slot that one of its jobs gives back: they take turns.
        if should_yield(vtime, priority, self.first_parked_sibling(k, r)) {
            return true;
        }
        // When the global cap binds, the other pools' waiters compete for
        // the same operations in flight.
        if self.slots.lent() >= self.config.max_inflight {
            for other in Resource::ALL.into_iter().filter(|&o| o != r) {
                if self.slots.idle(other) > 0
                    && should_yield(
                        vtime,
                        priority,
                        self.first_waiter(other).filter(|w| w.key != k),
                    )
                {
                    return true;
                }
            }
        }
        false
    }

    /// The first of the waiters parked behind job `k`'s user or connection
    /// (the one with the earlier virtual time), other than `k` itself.
    fn first_parked_sibling(&mut self, k: usize, r: Resource) -> Option<Waiter> {
        let job = self.jobs.slab.get(k)?;
        let user = self.slots.users.get(&job.uid).map(|u| Group::User(u.group));
        let groups = [user, job.session.map(Group::Connection)];
        let jobs = &self.jobs.slab;
        let live = |key: usize, seq: u64| {
            jobs.get(key)
                .is_some_and(|j| j.queued && j.queue_seq == seq)
        };
        groups
            .into_iter()
            .flatten()
            .filter_map(|g| self.slots.queues[r as usize].peek_parked(g, k, live))
            .min_by_key(|w| (w.vtime, Reverse(w.priority)))
    }

    /// How long `k` must wait for its rate limits (its own, its group's,
    /// the daemon's), if it must.
    fn throttle_wait(&mut self, k: usize, now: Instant) -> Option<Duration> {
        let mut wait = Duration::ZERO;
        if let Some(b) = self.slots.global_bucket.as_mut() {
            if !b.ready(now) {
                wait = wait.max(b.wait());
            }
        }
        if let Some(job) = self.jobs.slab.get_mut(k) {
            let group = job.rate_group;
            let buckets = [
                job.bucket.as_mut(),
                group.and_then(|g| self.slots.rate_groups.bucket(g)),
            ];
            for b in buckets.into_iter().flatten() {
                if !b.ready(now) {
                    wait = wait.max(b.wait());
                }
            }
        }
        (wait > Duration::ZERO).then_some(wait)
    }

    /// Lends idle pipes and buffers to queued jobs, first waiter first
    /// (across both pools, by virtual time then class), one slot per grant,
    /// within the global cap on operations in flight. A user holds at most
    /// its share of a pool while another user waits (shares.rs), and one
    /// connection's jobs at most half of a pool, so a client whose
    /// transfers stall (a peer that stopped reading) cannot hold up
    /// everyone else's.
    pub(super) fn lend(&mut self) {
        let now = Instant::now();
        self.lend_pass(now);
        // Shares bind only while another user waits: slots left idle go to
        // users parked over theirs. Once per turn, so waiters that park
        // again cannot make the loop spin.
        if self.unpark_idle_users() {
            self.lend_pass(now);
        }
        if self.slots.pipes.total() == 0 {
            // Every pipe failed to be replaced: nothing can move any more.
            let stuck: Vec<usize> = self
                .jobs
                .slab
                .iter()
                .filter(|(_, j)| j.queued && j.resource() == Resource::Pipe)
                .map(|(k, _)| k)
                .collect();
            for k in stuck {
                if let Some(job) = self.jobs.slab.get_mut(k) {
                    unqueue(job, &mut self.slots.users);
                }
                self.fail_job(
                    k,
                    TransferError::new(
                        FailureKind::Io,
                        "the pipe pool is empty: no pipe could be made",
                    ),
                );
            }
        }
        self.arm_stall_timer();
    }

    fn lend_pass(&mut self, now: Instant) {
        while self.slots.lent() < self.config.max_inflight {
            let mut pick: Option<(Resource, Waiter)> = None;
            for r in Resource::ALL {
                if self.slots.idle(r) == 0 {
                    continue;
                }
                if let Some(w) = self.first_waiter(r) {
                    if pick.is_none_or(|(_, p)| {
                        (w.vtime, Reverse(w.priority)) < (p.vtime, Reverse(p.priority))
                    }) {
                        pick = Some((r, w));
                    }
                }
            }
            let Some((r, w)) = pick else {
                break;
            };
            let ri = r as usize;
            // The waiter `first_waiter` just found is at the top.
            self.slots.queues[ri].pop(|_, _| true);
            let k = w.key;
            let Some(job) = self.jobs.slab.get_mut(k) else {
                continue;
            };
            if !job.wants_slot() {
                unqueue(job, &mut self.slots.users);
                continue;
            }
            if job.resource() != r {
                // It moved on (copy to verification) since it queued.
                unqueue(job, &mut self.slots.users);
                self.enqueue(k);
                continue;
            }
            let session = job.session;
            let held_back = self
                .over_user_share(k, r)
                .or_else(|| self.at_quota(session, r).map(Group::Connection));
            if let Some(g) = held_back {
                // It waits on, set aside until its user or connection gives
                // a slot back (or, for a user, until nobody else waits).
                self.slots.queues[ri].park(g, w);
                continue;
            }
            if let Some(job) = self.jobs.slab.get_mut(k) {
                unqueue(job, &mut self.slots.users);
                // An entry that came back from its user's parked heap may
                // have been moved up to the queue's virtual time.
                job.vtime = job.vtime.max(w.vtime);
            }
            if let Some(wait) = self.throttle_wait(k, now) {
                self.throttle(k, now + wait.max(MIN_THROTTLE_WAIT));
                continue;
            }
            self.grant(k, r, w.vtime);
        }
    }

    /// `session`, if it holds as many slots of `r` as it may.
    fn at_quota(&self, session: Option<usize>, r: Resource) -> Option<usize> {
        let quota = self.slots.quota(r);
        session.filter(|&sk| {
            self.sessions
                .slab
                .get(sk)
                .is_some_and(|s| s.held[r as usize] >= quota)
        })
    }

    /// Job `k` gave back `back` pipes, buffers and pieces: its, its
    /// connection's and its user's counts go down, and waiters parked
    /// behind them may go on.
    pub(super) fn slots_returned(&mut self, k: usize, back: [usize; RESOURCES]) {
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        let before = wanting(job);
        for (ri, n) in back.into_iter().enumerate() {
            let n = n.min(job.held[ri]);
            job.held[ri] -= n;
            if let Some(session) = job.session.and_then(|sk| self.sessions.slab.get_mut(sk)) {
                session.held[ri] -= n.min(session.held[ri]);
            }
            let r = Resource::ALL[ri];
            self.slots.users.adjust(job.uid, r, -(n as isize), 0);
        }
        self.slots.users.job_wanting(job.uid, before, wanting(job));
        let (session, uid) = (job.session, job.uid);
        if let Some(sk) = session {
            for r in Resource::ALL {
                if back[r as usize] > 0 {
                    self.unpark(sk, r);
                }
            }
        }
        self.unpark_user(uid);
    }

    /// Session `sk` gave back slots of `r`: as many of its parked waiters as
    /// it now has room for go back to the shared queue.
    pub(super) fn unpark(&mut self, sk: usize, r: Resource) {
        let ri = r as usize;
        let Some(held) = self.sessions.slab.get(sk).map(|s| s.held[ri]) else {
            return;
        };
        let room = self.slots.quota(r).saturating_sub(held);
        let group = Group::Connection(sk);
        if room == 0 || self.slots.queues[ri].parked(group) == 0 {
            return;
        }
        let jobs = &self.jobs.slab;
        self.slots.queues[ri].unpark(group, room, |key, seq| {
            jobs.get(key)
                .is_some_and(|j| j.queued && j.queue_seq == seq)
        });
    }

    /// Lends one slot of `r` to job `k`, queued at virtual time `vtime`.
    fn grant(&mut self, k: usize, r: Resource, vtime: u64) {
        let ri = r as usize;
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return;
        };
        self.slots.queues[ri].granted(vtime);
        if let Some(session) = job.session.and_then(|sk| self.sessions.slab.get_mut(sk)) {
            session.held[ri] += 1;
        }
        if job.held == [0; RESOURCES] {
            // A stall is measured from when it last moved or got a slot.
            job.moved_at = Instant::now();
        }
        let before = wanting(job);
        job.held[ri] += 1;
        self.slots.users.adjust(job.uid, r, 1, 0);
        self.slots.users.job_wanting(job.uid, before, true);
        job.got_slot = true;
        let io = &mut self.io;
        match r {
            Resource::Pipe => {
                if let Some(pipe) = self.slots.pipes.take() {
                    job.copy
                        .add_pipe(pipe, Owner::Job(k), io, &mut self.slots.returned);
                }
            }
            Resource::Buffer => {
                if let Some(buf) = self.slots.buffers.take() {
                    match job.verifier.as_mut() {
                        Some(v) => v.add_buffer(buf, Owner::Job(k), io, &mut self.slots.returned),
                        None => {
                            job.copy
                                .add_buffer(buf, Owner::Job(k), io, &mut self.slots.returned)
                        }
                    }
                }
            }
            Resource::Piece => {
                if let Some(piece) = self.slots.pieces.take() {
                    job.copy
                        .add_piece(piece, Owner::Job(k), io, &mut self.slots.returned);
                }
            }
        }
        self.after_job_step(k);
    }

    /// The limits a job of session `sk` starting `now` shares with others:
    /// the daemon's, and the group it names, which it joins. Its pieces are
    /// cut to the smallest either wants; a group's, to what keeps the debt
    /// of all the slots its connection can hold small.
    pub(super) fn shared_limits(
        &mut self,
        sk: usize,
        group: Option<RateGroup>,
        now: Instant,
    ) -> Shared {
        let global = self.slots.global_bucket.as_ref().map(TokenBucket::piece);
        let slots = self.slots.connection_slots(self.config.max_inflight);
        let joined = group.zip(self.sessions.slab.get(sk)).map(|(g, session)| {
            let key = GroupKey {
                connection: session.id,
                id: g.id,
            };
            let piece = self
                .slots
                .rate_groups
                .join(key, g.rate, now)
                .shared_piece(slots);
            (key, piece)
        });
        Shared {
            piece: [global, joined.map(|(_, piece)| piece)]
                .into_iter()
                .flatten()
                .min(),
            group: joined.map(|(key, _)| key),
        }
    }

    /// Parks a job until its rate limits allow more, and makes sure the
    /// throttle timer fires by `until`.
    fn throttle(&mut self, k: usize, until: Instant) {
        if let Some(job) = self.jobs.slab.get_mut(k) {
            job.throttled = true;
            self.slots.throttled.push(k);
        }
        self.arm_throttle_timer(until);
    }

    fn arm_throttle_timer(&mut self, until: Instant) {
        if self.timers.throttle.is_some_and(|(_, at)| at <= until) || self.life.stopping {
            return;
        }
        let delay = until.saturating_duration_since(Instant::now());
        if let Some((old, _)) = self.timers.throttle.take() {
            // One timer at a time, so stopping has only one to take back;
            // the old one completes with ECANCELED and finds nothing to do.
            let _ = self.io.cancel(old);
        }
        match self.io.timeout(Owner::Throttle, delay) {
            Ok(ud) => self.timers.throttle = Some((ud, until)),
            Err(e) => error!("cannot queue the rate-limit timer: {e}"),
        }
    }

    /// A rate-limit timer fired: jobs whose limits allow more go back in
    /// their queues; the rest wait for the next timer.
    pub(super) fn on_throttle_timer(&mut self, user_data: u64) {
        if self.timers.throttle.is_some_and(|(ud, _)| ud == user_data) {
            self.timers.throttle = None;
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let parked = std::mem::take(&mut self.slots.throttled);
        for k in parked {
            if !self.jobs.slab.get(k).is_some_and(|j| j.throttled) {
                continue;
            }
            match self.throttle_wait(k, now) {
                Some(wait) => {
                    let at = now + wait.max(MIN_THROTTLE_WAIT);
                    next = Some(next.map_or(at, |n| n.min(at)));
                    self.slots.throttled.push(k);
                }
                None => {
                    if let Some(job) = self.jobs.slab.get_mut(k) {
                        job.throttled = false;
                    }
                    // A job that failed meanwhile only needs its end.
                    self.after_job_step(k);
                }
            }
        }
        if let Some(at) = next {
            self.arm_throttle_timer(at);
        }
    }
}
