//! Lending I/O slots (pooled pipes and buffers) to jobs: fair queueing,
//! per-connection quotas, the global cap on operations in flight, and rate
//! limits with the timer that wakes throttled jobs.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use ringxfer_ipc::FailureKind;
use tracing::error;

use super::ops::Owner;
use super::queue::IoQueue;
use super::scheduler::{should_yield, Waiter};
use super::{Engine, Resource};
use crate::transfer::TransferError;

/// Throttled jobs are woken no more often than this, so a tiny limit does
/// not turn into a timer storm.
const MIN_THROTTLE_WAIT: Duration = Duration::from_millis(2);

impl Engine {
    /// Puts a job that wants a slot in its fair queue.
    pub(super) fn enqueue(&mut self, k: usize) {
        let Some((r, session)) = self.jobs.get(k).map(|j| (j.resource(), j.session)) else {
            return;
        };
        // A connection at its quota would only have the job parked when it
        // reached the front: park it now.
        let at_quota = self.at_quota(session, r);
        let Some(job) = self.jobs.get_mut(k) else {
            return;
        };
        let q = &mut self.queues[r as usize];
        let (seq, vtime) = match at_quota {
            Some(sk) => q.push_parked(sk, k, job.vtime, job.priority),
            None => q.push(k, job.vtime, job.priority),
        };
        job.queue_seq = seq;
        job.vtime = vtime;
        job.queued = true;
    }

    fn first_waiter(&mut self, r: Resource) -> Option<Waiter> {
        let jobs = &self.jobs;
        self.queues[r as usize].peek(|key, seq| {
            jobs.get(key)
                .is_some_and(|j| j.queued && j.queue_seq == seq)
        })
    }

    /// Whether a running job should give back the slot of a chunk that just
    /// finished its piece: a job ahead of the first waiter yields, and so
    /// does one whose rate limit (or the daemon's) is spent.
    pub(super) fn should_yield(&mut self, k: usize) -> bool {
        let now = Instant::now();
        if self.global_bucket.as_mut().is_some_and(|b| !b.ready(now)) {
            return true;
        }
        let Some(job) = self.jobs.get_mut(k) else {
            return false;
        };
        if job.bucket.as_mut().is_some_and(|b| !b.ready(now)) {
            return true;
        }
        let (vtime, priority, r) = (job.vtime, job.priority, job.resource());
        if should_yield(vtime, priority, self.first_waiter(r).filter(|w| w.key != k)) {
            return true;
        }
        // When the global cap binds, the other pool's waiters compete for
        // the same operations in flight.
        if self.slots_lent() >= self.config.max_inflight {
            let other = match r {
                Resource::Pipe => Resource::Buffer,
                Resource::Buffer => Resource::Pipe,
            };
            return self.idle(other) > 0
                && should_yield(
                    vtime,
                    priority,
                    self.first_waiter(other).filter(|w| w.key != k),
                );
        }
        false
    }

    /// How long `k` must wait for its rate limits, if it must.
    fn throttle_wait(&mut self, k: usize, now: Instant) -> Option<Duration> {
        let mut wait = Duration::ZERO;
        if let Some(b) = self.global_bucket.as_mut() {
            if !b.ready(now) {
                wait = wait.max(b.wait());
            }
        }
        if let Some(b) = self.jobs.get_mut(k).and_then(|j| j.bucket.as_mut()) {
            if !b.ready(now) {
                wait = wait.max(b.wait());
            }
        }
        (wait > Duration::ZERO).then_some(wait)
    }

    /// Lends idle pipes and buffers to queued jobs, first waiter first
    /// (across both pools, by virtual time then class), one slot per grant,
    /// within the global cap on operations in flight. One connection's jobs
    /// hold at most half of a pool, so a client whose transfers stall (a
    /// peer that stopped reading) cannot hold up everyone else's.
    pub(super) fn lend(&mut self) {
        let now = Instant::now();
        while self.slots_lent() < self.config.max_inflight {
            let mut pick: Option<(Resource, Waiter)> = None;
            for r in [Resource::Pipe, Resource::Buffer] {
                if self.idle(r) == 0 {
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
            self.queues[ri].pop(|_, _| true);
            let k = w.key;
            let Some(job) = self.jobs.get_mut(k) else {
                continue;
            };
            job.queued = false;
            if !job.wants_slot() {
                continue;
            }
            if job.resource() != r {
                // It moved on (copy to verification) since it queued.
                self.enqueue(k);
                continue;
            }
            let session = job.session;
            if let Some(sk) = self.at_quota(session, r) {
                // It waits on, set aside until its connection gives a slot back.
                if let Some(job) = self.jobs.get_mut(k) {
                    job.queued = true;
                }
                self.queues[ri].park(sk, w);
                continue;
            }
            if let Some(wait) = self.throttle_wait(k, now) {
                self.throttle(k, now + wait.max(MIN_THROTTLE_WAIT));
                continue;
            }
            self.grant(k, r, w.vtime);
        }
        if self.pipes.total() == 0 {
            // Every pipe failed to be replaced: nothing can move any more.
            let stuck: Vec<usize> = self
                .jobs
                .iter()
                .filter(|(_, j)| j.queued && j.resource() == Resource::Pipe)
                .map(|(k, _)| k)
                .collect();
            for k in stuck {
                if let Some(job) = self.jobs.get_mut(k) {
                    job.queued = false;
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
    }

    /// `session`, if it holds as many slots of `r` as it may.
    fn at_quota(&self, session: Option<usize>, r: Resource) -> Option<usize> {
        let quota = self.quota(r);
        session.filter(|&sk| {
            self.sessions
                .get(sk)
                .is_some_and(|s| s.held[r as usize] >= quota)
        })
    }

    /// The most slots of `r` one connection's jobs may hold at once.
    fn quota(&self, r: Resource) -> usize {
        (self.pool_total(r) / 2).max(1)
    }

    /// Session `sk` gave back slots of `r`: as many of its parked waiters as
    /// it now has room for go back to the shared queue.
    pub(super) fn unpark(&mut self, sk: usize, r: Resource) {
        let ri = r as usize;
        let Some(held) = self.sessions.get(sk).map(|s| s.held[ri]) else {
            return;
        };
        let room = self.quota(r).saturating_sub(held);
        if room == 0 || self.queues[ri].parked(sk) == 0 {
            return;
        }
        let jobs = &self.jobs;
        self.queues[ri].unpark(sk, room, |key, seq| {
            jobs.get(key)
                .is_some_and(|j| j.queued && j.queue_seq == seq)
        });
    }

    fn idle(&self, r: Resource) -> usize {
        match r {
            Resource::Pipe => self.pipes.idle(),
            Resource::Buffer => self.buffers.idle(),
        }
    }

    fn pool_total(&self, r: Resource) -> usize {
        match r {
            Resource::Pipe => self.pipes.total(),
            Resource::Buffer => self.buffers.total(),
        }
    }

    pub(super) fn slots_lent(&self) -> usize {
        (self.pipes.total() - self.pipes.idle()) + (self.buffers.total() - self.buffers.idle())
    }

    /// Lends one slot of `r` to job `k`, queued at virtual time `vtime`.
    fn grant(&mut self, k: usize, r: Resource, vtime: u64) {
        let ri = r as usize;
        let Some(job) = self.jobs.get_mut(k) else {
            return;
        };
        self.queues[ri].granted(vtime);
        if let Some(session) = job.session.and_then(|sk| self.sessions.get_mut(sk)) {
            session.held[ri] += 1;
        }
        job.held[ri] += 1;
        job.got_slot = true;
        let mut io = IoQueue {
            ring: &mut self.ring,
            ops: &mut self.ops,
        };
        match r {
            Resource::Pipe => {
                if let Some(pipe) = self.pipes.take() {
                    job.copy
                        .add_pipe(pipe, Owner::Job(k), &mut io, &mut self.returned);
                }
            }
            Resource::Buffer => {
                if let Some(buf) = self.buffers.take() {
                    match job.verifier.as_mut() {
                        Some(v) => v.add_buffer(buf, Owner::Job(k), &mut io, &mut self.returned),
                        None => {
                            job.copy
                                .add_buffer(buf, Owner::Job(k), &mut io, &mut self.returned)
                        }
                    }
                }
            }
        }
        self.after_job_step(k);
    }

    /// Parks a job until its rate limits allow more, and makes sure the
    /// throttle timer fires by `until`.
    fn throttle(&mut self, k: usize, until: Instant) {
        if let Some(job) = self.jobs.get_mut(k) {
            job.throttled = true;
            self.throttled.push(k);
        }
        self.arm_throttle_timer(until);
    }

    fn arm_throttle_timer(&mut self, until: Instant) {
        if self.throttle_timer.is_some_and(|(_, at)| at <= until) || self.stopping {
            return;
        }
        let delay = until.saturating_duration_since(Instant::now());
        if let Some((old, _)) = self.throttle_timer.take() {
            // One timer at a time, so stopping has only one to take back;
            // the old one completes with ECANCELED and finds nothing to do.
            let _ = self.io().cancel(old);
        }
        match self.io().timeout(Owner::Throttle, delay) {
            Ok(ud) => self.throttle_timer = Some((ud, until)),
            Err(e) => error!("cannot queue the rate-limit timer: {e}"),
        }
    }

    /// A rate-limit timer fired: jobs whose limits allow more go back in
    /// their queues; the rest wait for the next timer.
    pub(super) fn on_throttle_timer(&mut self, user_data: u64) {
        if self.throttle_timer.is_some_and(|(ud, _)| ud == user_data) {
            self.throttle_timer = None;
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let parked = std::mem::take(&mut self.throttled);
        for k in parked {
            if !self.jobs.get(k).is_some_and(|j| j.throttled) {
                continue;
            }
            match self.throttle_wait(k, now) {
                Some(wait) => {
                    let at = now + wait.max(MIN_THROTTLE_WAIT);
                    next = Some(next.map_or(at, |n| n.min(at)));
                    self.throttled.push(k);
                }
                None => {
                    if let Some(job) = self.jobs.get_mut(k) {
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
