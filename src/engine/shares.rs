//! Fair shares between users: what each user's jobs hold and wait for, the
//! share of each pool a user may hold while another user waits, and taking
//! slots back from jobs that stalled holding more than their user's share.
//!
//! Shares are per user first: a user may hold at most `pool / users wanting`
//! (rounded up, at least one) slots of a pool, and of `--max-inflight`,
//! while another user has a job waiting for one. With nobody else waiting a
//! user may use everything (the shares are work-conserving). Within a user,
//! a connection holds at most half of a pool (slots.rs) and a job at most
//! `--chunks-per-job` pipes or `--buffers-per-job` buffers.
//!
//! A job that holds slots and has moved nothing for `STALL_AFTER` (a socket
//! peer that never reads) while its user is over its share and another user
//! waits gives its slots back (`Engine::reclaim_stalled`), so the waiting
//! user's jobs run. What is safe depends on the strategy: see
//! `Pipeline::reclaim` (transfer/ranges.rs), and ARCHITECTURE.md "Pipes and
//! scheduling".

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringxfer_ipc::FailureKind;
use tracing::{debug, error};

use super::jobs::Job;
use super::scheduler::Group;
use super::{Engine, Resource, RESOURCES};
use crate::io::ops::Owner;
use crate::transfer::{Mover, TransferError};

/// A job holding slots that moved nothing for this long, while its user is
/// over its share and another user waits, gives them back, when its bytes
/// in flight can be read again (a seekable source).
pub(super) const STALL_AFTER: Duration = Duration::from_millis(250);
/// A stalled job whose bytes in flight cannot be read again (a stream
/// source) or that moves them through buffers is failed instead, after this
/// long: long enough that only a peer that stopped reading gets there.
pub(super) const STALL_FAIL: Duration = Duration::from_secs(5);
/// How often stalls are looked for while some user waits behind another.
const STALL_CHECK: Duration = Duration::from_millis(100);
/// The most a user's job count speeds its jobs' virtual times up.
const MAX_SCALE: usize = 1 << 16;

/// A user's unfinished jobs and bytes still to move, the slots its jobs
/// hold, and its jobs waiting for one.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Usage {
    pub jobs: usize,
    pub bytes: u64,
    /// Pipes, buffers and pieces (by `Resource`) its jobs hold.
    pub held: [usize; RESOURCES],
    /// Its jobs with a live entry in each queue.
    pub queued: [usize; RESOURCES],
    /// Its parked waiters' group in the fair queues.
    pub group: usize,
    /// Its jobs holding or waiting for a slot: each advances its virtual
    /// time this many times faster, so users share by user, not by job.
    pub wanting_jobs: usize,
}

impl Usage {
    fn wants(&self, r: usize) -> bool {
        self.held[r] > 0 || self.queued[r] > 0
    }

    fn active(&self) -> bool {
        (0..RESOURCES).any(|r| self.wants(r))
    }

    fn waiting(&self) -> bool {
        self.queued.iter().any(|&q| q > 0)
    }
}

/// Every user with unfinished jobs, and how many of them want each pool.
#[derive(Default)]
pub(super) struct Users {
    map: HashMap<u32, Usage>,
    /// Users holding or waiting for a slot of each pool.
    wanting: [usize; RESOURCES],
    /// Users with a job waiting for a slot of each pool.
    waiting: [usize; RESOURCES],
    /// Users holding or waiting for any slot, and waiting for any.
    active: usize,
    waiting_any: usize,
    /// Group indexes of users that are gone, for the next ones.
    free_groups: Vec<usize>,
    next_group: usize,
}

impl Users {
    pub(super) fn get(&self, uid: &u32) -> Option<&Usage> {
        self.map.get(uid)
    }

    /// The job and byte counts only: slot counts go through `adjust`.
    pub(super) fn get_mut(&mut self, uid: &u32) -> Option<&mut Usage> {
        self.map.get_mut(uid)
    }

    /// `uid`'s usage, made (with a parking group of its own) if it had none.
    pub(super) fn entry(&mut self, uid: u32) -> &mut Usage {
        let (free, next) = (&mut self.free_groups, &mut self.next_group);
        self.map.entry(uid).or_insert_with(|| {
            let group = free.pop().unwrap_or_else(|| {
                *next += 1;
                *next - 1
            });
            Usage {
                group,
                ..Usage::default()
            }
        })
    }

    /// Forgets a user whose last job ended; its group index, to clear.
    pub(super) fn remove(&mut self, uid: &u32) -> Option<usize> {
        let u = self.map.remove(uid)?;
        // A job ends holding nothing and waiting for nothing; should one
        // not have, the counts of users wanting stay true anyway.
        self.count(&u, -1);
        self.free_groups.push(u.group);
        Some(u.group)
    }

    /// Moves `uid`'s count of held slots of `r` by `held` and of waiting
    /// jobs by `queued`, keeping the counts of users wanting in step.
    pub(super) fn adjust(&mut self, uid: u32, r: Resource, held: isize, queued: isize) {
        let Some(mut u) = self.map.get(&uid).copied() else {
            return;
        };
        self.count(&u, -1);
        let ri = r as usize;
        u.held[ri] = u.held[ri].saturating_add_signed(held);
        u.queued[ri] = u.queued[ri].saturating_add_signed(queued);
        self.count(&u, 1);
        self.map.insert(uid, u);
    }

    /// Adds (`sign` 1) or removes (-1) `u` from the counts of users wanting.
    fn count(&mut self, u: &Usage, sign: isize) {
        let step = |n: &mut usize, on: bool| {
            if on {
                *n = n.saturating_add_signed(sign);
            }
        };
        for r in 0..RESOURCES {
            step(&mut self.wanting[r], u.wants(r));
            step(&mut self.waiting[r], u.queued[r] > 0);
        }
        step(&mut self.active, u.active());
        step(&mut self.waiting_any, u.waiting());
    }

    /// One of `uid`'s jobs went from wanting slots (holding or waiting for
    /// one) or not, `before`, to `after`.
    pub(super) fn job_wanting(&mut self, uid: u32, before: bool, after: bool) {
        if let Some(u) = self.map.get_mut(&uid) {
            match (before, after) {
                (false, true) => u.wanting_jobs += 1,
                (true, false) => u.wanting_jobs = u.wanting_jobs.saturating_sub(1),
                _ => {}
            }
        }
    }

    /// How much faster than its own cost a job of `uid` advances its virtual
    /// time: by the number of the user's jobs wanting slots (at least one,
    /// at most `MAX_SCALE`), which makes each user's jobs together weigh
    /// what one job weighs: weighted fair queueing between users first,
    /// then between a user's jobs by their classes.
    pub(super) fn vtime_scale(&self, uid: u32) -> u64 {
        self.map
            .get(&uid)
            .map_or(1, |u| u.wanting_jobs.clamp(1, MAX_SCALE) as u64)
    }

    /// Whether a user other than `uid` has a job waiting for `r` (`None`:
    /// for either pool).
    pub(super) fn others_waiting(&self, uid: u32, r: Option<Resource>) -> bool {
        let mine = self.map.get(&uid);
        match r {
            Some(r) => {
                let ri = r as usize;
                self.waiting[ri] > usize::from(mine.is_some_and(|u| u.queued[ri] > 0))
            }
            None => self.waiting_any > usize::from(mine.is_some_and(Usage::waiting)),
        }
    }

    /// A user's share of `total` slots of `r` (`None`: of the in-flight cap,
    /// shared by users wanting either pool).
    pub(super) fn share(&self, total: usize, r: Option<Resource>) -> usize {
        let users = match r {
            Some(r) => self.wanting[r as usize],
            None => self.active,
        };
        share(total, users)
    }

    /// Whether some user waits while another holds or waits: only then can
    /// one user's stalled jobs hold another's back.
    pub(super) fn contended(&self) -> bool {
        self.waiting_any > 0 && self.active > 1
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &Usage)> + '_ {
        self.map.iter().map(|(&uid, u)| (uid, u))
    }
}

/// `total` slots shared by `users`: rounded up, so the shares cover the
/// pool, and at least one, so every user can move.
pub(super) fn share(total: usize, users: usize) -> usize {
    total.div_ceil(users.max(1)).max(1)
}

/// Marks a job no longer waiting in a queue, keeping its user's counts true.
pub(super) fn unqueue(job: &mut Job, users: &mut Users) {
    if std::mem::take(&mut job.queued) {
        users.adjust(job.uid, job.queued_for, 0, -1);
        users.job_wanting(job.uid, true, wanting(job));
    }
}

/// Whether a job holds or waits for a slot.
pub(super) fn wanting(job: &Job) -> bool {
    job.queued || job.held != [0; RESOURCES]
}

impl Engine {
    /// Whether job `k`'s user may not take another slot of `r` now: it holds
    /// its share of the pool (or of `--max-inflight`) and another user
    /// waits. Its waiter parks in the user's group until that changes.
    pub(super) fn over_user_share(&self, k: usize, r: Resource) -> Option<Group> {
        let uid = self.jobs.slab.get(k)?.uid;
        let u = self.slots.users.get(&uid)?;
        self.user_full(uid, u, r).then_some(Group::User(u.group))
    }

    /// Whether user `uid` holds its share of `r`, or of `--max-inflight`
    /// (when that cap is below the pools together, so it can bind), while
    /// another user waits.
    fn user_full(&self, uid: u32, u: &Usage, r: Resource) -> bool {
        self.user_beyond(uid, u, r, 0)
    }

    /// Whether user `uid` holds more than its share of `r` or of
    /// `--max-inflight` plus `slack` while another user waits.
    fn user_beyond(&self, uid: u32, u: &Usage, r: Resource, slack: usize) -> bool {
        let pool = self.slots.users.share(self.slots.pool_total(r), Some(r)) + slack;
        if u.held[r as usize] >= pool && self.slots.users.others_waiting(uid, Some(r)) {
            return true;
        }
        let cap = self.config.max_inflight;
        cap < self.slots.all_slots()
            && u.held.iter().sum::<usize>() >= self.slots.users.share(cap, None) + slack
            && self.slots.users.others_waiting(uid, None)
    }

    /// Whether job `k`'s user holds more than its share of `r` while
    /// another user waits for one: its running jobs give slots back at
    /// their next piece boundary.
    pub(super) fn user_over_share(&self, k: usize, r: Resource) -> bool {
        let Some(uid) = self.jobs.slab.get(k).map(|j| j.uid) else {
            return false;
        };
        self.slots
            .users
            .get(&uid)
            .is_some_and(|u| self.user_beyond(uid, u, r, 1))
    }

    /// A user gave slots back: as many of its parked waiters as its share
    /// now has room for go back to the shared queues (all of them when
    /// nobody else waits).
    pub(super) fn unpark_user(&mut self, uid: u32) {
        let Some(u) = self.slots.users.get(&uid).copied() else {
            return;
        };
        for r in Resource::ALL {
            let ri = r as usize;
            let group = Group::User(u.group);
            if self.slots.queues[ri].parked(group) == 0 {
                continue;
            }
            let room = if self.user_full(uid, &u, r) {
                0
            } else if self.slots.users.others_waiting(uid, None) {
                // Room up to its share; the waiters put back beyond it
                // would only park again.
                let pool = self.slots.users.share(self.slots.pool_total(r), Some(r));
                pool.saturating_sub(u.held[ri]).max(1)
            } else {
                usize::MAX
            };
            let jobs = &self.jobs.slab;
            self.slots.queues[ri].unpark(group, room, |key, seq| {
                jobs.get(key)
                    .is_some_and(|j| j.queued && j.queue_seq == seq)
            });
        }
    }

    /// Slots of `r` lie idle and nobody waits for them in the shared queue:
    /// users parked over their share get them if their share no longer
    /// binds (nobody else waits, or more users want the pool less). True if
    /// any waiter came back.
    pub(super) fn unpark_idle_users(&mut self) -> bool {
        let mut moved = false;
        for r in Resource::ALL {
            let ri = r as usize;
            if self.slots.idle(r) == 0 || self.first_waiter(r).is_some() {
                continue;
            }
            let groups: Vec<usize> = self
                .slots
                .users
                .iter()
                .filter(|(uid, u)| {
                    self.slots.queues[ri].parked(Group::User(u.group)) > 0
                        && !self.user_full(*uid, u, r)
                })
                .map(|(_, u)| u.group)
                .collect();
            for g in groups {
                self.slots.queues[ri].unpark_all(Group::User(g));
                moved = true;
            }
        }
        moved
    }

    /// Looks for stalled jobs every `STALL_CHECK` while some user waits
    /// behind another.
    pub(super) fn arm_stall_timer(&mut self) {
        if self.timers.stall.is_some() || self.life.stopping || !self.slots.users.contended() {
            return;
        }
        match self.io.timeout(Owner::Stall, STALL_CHECK) {
            Ok(ud) => self.timers.stall = Some(ud),
            Err(e) => error!("cannot queue the stall timer: {e}"),
        }
    }

    pub(super) fn on_stall_timer(&mut self) {
        self.timers.stall = None;
        if !self.life.stopping && self.slots.users.contended() {
            self.reclaim_stalled(Instant::now());
        }
        // `lend` runs after this turn's completions and re-arms it if
        // someone still waits.
    }

    /// Takes slots back from stalled jobs of users over their share while
    /// another user waits, until each such user is down to its share.
    fn reclaim_stalled(&mut self, now: Instant) {
        // What each user holds, less what this pass already took back (a
        // failed job gives some back at once, a reclaimed one later: counted
        // here when asked for, so neither is counted twice).
        let mut left: HashMap<u32, [usize; RESOURCES]> = HashMap::new();
        let stalled: Vec<usize> = self
            .jobs
            .slab
            .iter()
            .filter(|(_, j)| {
                j.held != [0; RESOURCES]
                    && j.phase == super::jobs::Phase::Copy
                    && now.saturating_duration_since(j.moved_at) >= STALL_AFTER
            })
            .map(|(k, _)| k)
            .collect();
        for k in stalled {
            let Some(job) = self.jobs.slab.get(k) else {
                continue;
            };
            let (uid, held) = (job.uid, job.held);
            let Some(u) = self.slots.users.get(&uid).copied() else {
                continue;
            };
            let user_left = *left.entry(uid).or_insert(u.held);
            let over = Resource::ALL.into_iter().any(|r| {
                let ri = r as usize;
                let share = self.slots.users.share(self.slots.pool_total(r), Some(r));
                held[ri] > 0
                    && self.slots.users.others_waiting(uid, Some(r))
                    && user_left[ri] > share
            });
            if !over {
                continue;
            }
            let stalled_for = now.saturating_duration_since(job.moved_at);
            if self.reclaim_job(k, stalled_for) {
                if let Some(l) = left.get_mut(&uid) {
                    for (l, h) in l.iter_mut().zip(held) {
                        *l = l.saturating_sub(h);
                    }
                }
            }
        }
    }

    /// Takes job `k`'s slots back, if that is safe now: true if they are on
    /// their way back (or the job was failed, which gives them back too).
    fn reclaim_job(&mut self, k: usize, stalled_for: Duration) -> bool {
        let Some(job) = self.jobs.slab.get_mut(k) else {
            return false;
        };
        let (id, uid) = (job.id, job.uid);
        let io = &mut self.io;
        let taken = match &mut job.copy {
            Mover::Splice(c) => c.reclaim(Owner::Job(k), io, &mut self.slots.returned),
            Mover::CopyRange(c) => c.reclaim(Owner::Job(k), io, &mut self.slots.returned),
            // A lease's permits are never read: they go back at once, and
            // its connection's operations go on without them.
            Mover::Lease(c) => c.give_all(&mut self.slots.returned),
            Mover::Buffered(_) | Mover::Reflink(_) | Mover::Peer(_) | Mover::Pull(_) => false,
        };
        if taken {
            debug!(
                job = id,
                uid,
                ?stalled_for,
                "stalled while another user waits: its pipes or pieces go back and its bytes in flight will be read again"
            );
            self.after_job_step(k);
            return true;
        }
        if stalled_for < STALL_FAIL {
            return false;
        }
        debug!(
            job = id,
            uid,
            ?stalled_for,
            "stalled while another user waits: failed"
        );
        let what = match &job.copy {
            Mover::Splice(_) => "its bytes in the pipe cannot be read again from the source",
            Mover::Buffered(_) | Mover::Peer(_) | Mover::Pull(_) | Mover::Lease(_) => {
                "a job moving bytes through buffers cannot hand them back"
            }
            Mover::Reflink(_) => "a clone cannot be taken back",
            // Its pieces came back only if none was in flight to cancel.
            Mover::CopyRange(_) => "its copies in flight did not come back",
        };
        let dst = job.copy.endpoints().map_or_else(
            || "destination".to_string(),
            |e| format!("destination {}", e.dst_kind),
        );
        self.fail_job(
            k,
            TransferError::new(
                FailureKind::Io,
                format!(
                    "the {dst} accepted no bytes for {} s while other users waited for the daemon's \
                     pipes and buffers, and {what}: the job gave them back by failing",
                    stalled_for.as_secs()
                ),
            ),
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_pool_and_never_reach_zero() {
        assert_eq!(share(32, 1), 32);
        assert_eq!(share(32, 2), 16);
        assert_eq!(share(31, 2), 16);
        assert_eq!(share(32, 0), 32);
        assert_eq!(share(4, 100), 1);
    }

    #[test]
    fn counts_of_users_wanting_follow_held_and_queued() {
        let mut u = Users::default();
        u.entry(1).jobs += 1;
        u.entry(2).jobs += 1;
        assert!(!u.contended());
        u.adjust(1, Resource::Pipe, 3, 0);
        u.adjust(2, Resource::Pipe, 0, 1);
        assert_eq!(u.share(32, Some(Resource::Pipe)), 16);
        assert!(u.contended());
        assert!(u.others_waiting(1, Some(Resource::Pipe)));
        assert!(!u.others_waiting(2, Some(Resource::Pipe)));
        assert!(!u.others_waiting(1, Some(Resource::Buffer)));
        u.adjust(2, Resource::Pipe, 1, -1);
        assert!(!u.contended());
        assert_eq!(u.share(32, Some(Resource::Pipe)), 16);
        u.adjust(2, Resource::Pipe, -1, 0);
        assert_eq!(u.share(32, Some(Resource::Pipe)), 32);
        let g2 = u.entry(2).group;
        assert_eq!(u.remove(&2), Some(g2));
        assert_eq!(u.entry(3).group, g2, "a gone user's group is reused");
    }
}
