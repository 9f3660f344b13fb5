//! Weighted fair queueing of I/O slots (pipes and buffers) between jobs.
//!
//! Each job has a virtual time that advances by the bytes it moves divided by
//! its class's weight. Jobs waiting for a slot of one kind sit in a heap
//! ordered by virtual time (then class, then arrival), and a freed slot goes
//! to the first. A job joining the queue starts no earlier than the queue's
//! virtual time (the time of the last grant), so a newcomer moves its first
//! bytes before a job that has been running takes its next piece, and a job
//! that was idle banks no credit. A running job compares itself with the
//! first waiter at each piece boundary and gives its slot back if it is
//! ahead (`should_yield`), which is what makes the shares follow the weights.
//!
//! A waiter whose group (its user, or its connection) may not take more
//! slots right now is parked in that group's own heap rather than pushed
//! back into the shared one: otherwise every grant would pop and re-push all of a busy client's
//! waiters, which made the scheduler the daemon's largest cost with
//! thousands of small jobs queued. The group's owner unparks as many as it
//! has room for when its slots come back. A job queued while its group is
//! already at its limit is parked at once, which halves the heap work per
//! small job.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use ringxfer_ipc::Priority;

/// Virtual time units per byte at weight 1: weights are 1, 2 and 4, so every
/// class advances by a whole number per byte.
const SCALE: u64 = 4;

/// One waiting job. Entries are never removed from the middle of the heap:
/// one whose `seq` no longer matches the job's is stale and skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    vtime: u64,
    /// Higher classes first among equal virtual times.
    class: Reverse<Priority>,
    seq: u64,
    key: usize,
}

/// Who a parked waiter waits behind: its user (over its share of the pool
/// while another user waits) or its connection (at its quota). Both kinds
/// index one `Vec` of heaps, users on odd slots and connections on even
/// ones, so parking neither hashes nor allocates once a group has been used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Group {
    /// A session's slab key.
    Connection(usize),
    /// A user's small index (`Usage::group`), not the uid.
    User(usize),
}

impl Group {
    fn index(self) -> usize {
        match self {
            Group::Connection(k) => k * 2,
            Group::User(k) => k * 2 + 1,
        }
    }
}

/// A waiting job as `pop` hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Waiter {
    pub key: usize,
    pub seq: u64,
    pub vtime: u64,
    pub priority: Priority,
}

/// The queue of jobs waiting for one kind of slot.
pub(super) struct FairQueue {
    heap: BinaryHeap<Reverse<Entry>>,
    /// Waiters set aside per group (indexed by `Group::index`, small and
    /// reused), in the same order as `heap`. A group's
    /// heap keeps its memory when it empties: a busy client parks and
    /// unparks a job per small file.
    parked: Vec<BinaryHeap<Reverse<Entry>>>,
    /// The virtual time of the last grant: where newcomers start.
    now: u64,
    next_seq: u64,
    step: u64,
}

impl FairQueue {
    /// Room for `capacity` waiters without reallocating. Queue `index` of
    /// `count` numbers its entries `index + 1`, then by steps of `count`, so
    /// no two queues of an engine ever hand out the same sequence number: a
    /// job's stale entry in one queue cannot pass for its live one in another.
    pub(super) fn with_capacity(capacity: usize, index: u64, count: u64) -> FairQueue {
        FairQueue {
            heap: BinaryHeap::with_capacity(capacity),
            parked: Vec::new(),
            now: 0,
            next_seq: index + 1,
            step: count.max(1),
        }
    }

    /// Queues a job; returns the entry's sequence number, which the job keeps
    /// to tell its live entry from stale ones, and the virtual time it was
    /// queued at (the job's own, or the queue's if that is later).
    pub(super) fn push(&mut self, key: usize, vtime: u64, priority: Priority) -> (u64, u64) {
        let vtime = vtime.max(self.now);
        let seq = self.next_seq;
        self.next_seq += self.step;
        self.heap.push(Reverse(Entry {
            vtime,
            class: Reverse(priority),
            seq,
            key,
        }));
        (seq, vtime)
    }

    /// Queues a job straight into `group`'s parked waiters, for a group that
    /// may not take a slot now: what `push` then `pop` and `park` would do,
    /// without passing through the shared heap. Returns as `push` does.
    pub(super) fn push_parked(
        &mut self,
        group: Group,
        key: usize,
        vtime: u64,
        priority: Priority,
    ) -> (u64, u64) {
        let vtime = vtime.max(self.now);
        let seq = self.next_seq;
        self.next_seq += self.step;
        self.group(group).push(Reverse(Entry {
            vtime,
            class: Reverse(priority),
            seq,
            key,
        }));
        (seq, vtime)
    }

    /// Sets aside a waiter that `pop` handed out but whose group may not take
    /// a slot now, keeping its place among the group's other parked waiters.
    pub(super) fn park(&mut self, group: Group, w: Waiter) {
        self.group(group).push(Reverse(Entry {
            vtime: w.vtime,
            class: Reverse(w.priority),
            seq: w.seq,
            key: w.key,
        }));
    }

    /// Returns up to `n` of `group`'s live parked waiters, first first, to
    /// the shared queue; stale ones are dropped on the way and do not count.
    pub(super) fn unpark(&mut self, group: Group, n: usize, live: impl Fn(usize, u64) -> bool) {
        let floor = self.floor(group);
        let Some(parked) = self.parked.get_mut(group.index()) else {
            return;
        };
        let mut moved = 0;
        while moved < n {
            let Some(Reverse(mut e)) = parked.pop() else {
                break;
            };
            if live(e.key, e.seq) {
                e.vtime = e.vtime.max(floor);
                self.heap.push(Reverse(e));
                moved += 1;
            }
        }
    }

    /// The earliest virtual time `group`'s waiters come back at. A user's
    /// waiters come back no earlier than the last grant, as newcomers: the
    /// user was served meanwhile through its other jobs, so a parked job's
    /// wait is no credit (it would let a user with many jobs run ahead of
    /// one with few). A connection's keep theirs, as before.
    fn floor(&self, group: Group) -> u64 {
        match group {
            Group::User(_) => self.now,
            Group::Connection(_) => 0,
        }
    }

    /// Returns all of `group`'s parked waiters to the shared queue: a
    /// connection going away (its detached jobs wait on without it), or a
    /// user whose share no longer binds because nobody else waits.
    pub(super) fn unpark_all(&mut self, group: Group) {
        let floor = self.floor(group);
        if let Some(parked) = self.parked.get_mut(group.index()) {
            self.heap.extend(parked.drain().map(|Reverse(mut e)| {
                e.vtime = e.vtime.max(floor);
                Reverse(e)
            }));
        }
    }

    /// How many of `group`'s waiters are parked (stale ones included).
    pub(super) fn parked(&self, group: Group) -> usize {
        self.parked.get(group.index()).map_or(0, BinaryHeap::len)
    }

    /// Forgets `group`'s parked waiters (all stale: a user whose last job
    /// ended), so the index can go to another user.
    pub(super) fn clear(&mut self, group: Group) {
        if let Some(parked) = self.parked.get_mut(group.index()) {
            parked.clear();
        }
    }

    /// `group`'s parked waiters, made empty if it had none yet.
    fn group(&mut self, group: Group) -> &mut BinaryHeap<Reverse<Entry>> {
        let group = group.index();
        if group >= self.parked.len() {
            self.parked.resize_with(group + 1, BinaryHeap::new);
        }
        &mut self.parked[group]
    }

    /// Removes stale entries from the front and returns the first live one
    /// without removing it. `live(key, seq)` says whether an entry is current.
    pub(super) fn peek(&mut self, live: impl Fn(usize, u64) -> bool) -> Option<Waiter> {
        while let Some(Reverse(e)) = self.heap.peek().copied() {
            if live(e.key, e.seq) {
                return Some(Waiter {
                    key: e.key,
                    seq: e.seq,
                    vtime: e.vtime,
                    priority: e.class.0,
                });
            }
            self.heap.pop();
        }
        None
    }

    /// `group`'s first live parked waiter other than job `except`, without
    /// removing it; stale entries are dropped from the front on the way.
    /// (A job holding a slot may have its own entry parked for another; on
    /// top, it would hide the others behind it.)
    pub(super) fn peek_parked(
        &mut self,
        group: Group,
        except: usize,
        live: impl Fn(usize, u64) -> bool,
    ) -> Option<Waiter> {
        let parked = self.parked.get_mut(group.index())?;
        let mut own = None;
        let found = loop {
            let Some(Reverse(e)) = parked.peek().copied() else {
                break None;
            };
            if !live(e.key, e.seq) {
                parked.pop();
            } else if e.key == except && own.is_none() {
                own = parked.pop();
            } else {
                break Some(Waiter {
                    key: e.key,
                    seq: e.seq,
                    vtime: e.vtime,
                    priority: e.class.0,
                });
            }
        };
        parked.extend(own);
        found
    }

    /// Takes the first live waiter.
    pub(super) fn pop(&mut self, live: impl Fn(usize, u64) -> bool) -> Option<Waiter> {
        let w = self.peek(live)?;
        self.heap.pop();
        Some(w)
    }

    /// Records a grant at `vtime`: newcomers start from there on.
    pub(super) fn granted(&mut self, vtime: u64) {
        self.now = self.now.max(vtime);
    }
}

/// How far `bytes` moved by a job of `priority` advance its virtual time.
pub(super) fn cost(bytes: u64, priority: Priority) -> u64 {
    bytes.saturating_mul(SCALE) / u64::from(priority.weight())
}

/// Whether a job at `vtime` of `priority` should give its slot to `first`,
/// the first waiter of the same queue: it should when the waiter is behind it.
pub(super) fn should_yield(vtime: u64, priority: Priority, first: Option<Waiter>) -> bool {
    first.is_some_and(|w| (w.vtime, Reverse(w.priority)) < (vtime, Reverse(priority)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Group = Group::Connection(7);

    #[test]
    fn earliest_virtual_time_first_then_higher_class() {
        let mut q = FairQueue::with_capacity(8, 0, 1);
        q.push(1, 100, Priority::Low);
        q.push(2, 50, Priority::Low);
        q.push(3, 50, Priority::High);
        let order: Vec<usize> = std::iter::from_fn(|| q.pop(|_, _| true).map(|w| w.key)).collect();
        assert_eq!(order, [3, 2, 1]);
    }

    #[test]
    fn stale_entries_are_skipped_and_newcomers_start_at_the_last_grant() {
        let mut q = FairQueue::with_capacity(8, 0, 1);
        let (stale, _) = q.push(1, 0, Priority::Normal);
        q.push(2, 10, Priority::Normal);
        let w = q.pop(|_, seq| seq != stale).expect("a live waiter");
        assert_eq!(w.key, 2);
        q.granted(w.vtime);
        let (_, at) = q.push(3, 0, Priority::Normal);
        assert_eq!(at, 10);
    }

    #[test]
    fn parked_waiters_come_back_first_first_and_stale_ones_do_not_count() {
        let mut q = FairQueue::with_capacity(8, 0, 1);
        let (s1, _) = q.push(1, 30, Priority::Normal);
        let (s2, _) = q.push(2, 10, Priority::Normal);
        let (s3, _) = q.push(3, 20, Priority::Normal);
        q.push(4, 40, Priority::Normal);
        for _ in 0..3 {
            let w = q.pop(|_, _| true).expect("a waiter");
            q.park(G, w);
        }
        assert_eq!(q.parked(G), 3);
        // Only 4 is left in the shared queue.
        assert_eq!(q.peek(|_, _| true).map(|w| w.key), Some(4));
        // Job 2's entry went stale while parked: unparking one skips it.
        q.unpark(G, 1, |_, seq| seq != s2);
        assert_eq!(q.parked(G), 1);
        assert_eq!(q.pop(|_, _| true).map(|w| (w.key, w.seq)), Some((3, s3)));
        q.unpark_all(G);
        assert_eq!(q.parked(G), 0);
        assert_eq!(q.pop(|_, _| true).map(|w| (w.key, w.seq)), Some((1, s1)));
        assert_eq!(q.pop(|_, _| true).map(|w| w.key), Some(4));
        assert_eq!(q.pop(|_, _| true), None);
    }

    #[test]
    fn a_waiter_parked_at_once_comes_back_in_order_with_the_others() {
        let mut q = FairQueue::with_capacity(8, 0, 1);
        q.push(1, 30, Priority::Normal);
        let w = q.pop(|_, _| true).expect("a waiter");
        q.park(G, w);
        let (_, at) = q.push_parked(G, 2, 10, Priority::Normal);
        assert_eq!(at, 10);
        assert_eq!(q.parked(G), 2);
        assert_eq!(q.peek(|_, _| true), None, "nothing in the shared queue");
        q.unpark(G, 1, |_, _| true);
        assert_eq!(q.pop(|_, _| true).map(|w| w.key), Some(2));
        q.unpark(G, 1, |_, _| true);
        assert_eq!(q.pop(|_, _| true).map(|w| w.key), Some(1));
    }

    #[test]
    fn a_jobs_own_parked_entry_does_not_hide_the_others() {
        let mut q = FairQueue::with_capacity(8, 0, 1);
        q.push_parked(G, 1, 10, Priority::Normal);
        q.push_parked(G, 2, 20, Priority::Normal);
        assert_eq!(q.peek_parked(G, 1, |_, _| true).map(|w| w.key), Some(2));
        assert_eq!(q.peek_parked(G, 2, |_, _| true).map(|w| w.key), Some(1));
        assert_eq!(q.parked(G), 2, "the own entry is put back");
        assert_eq!(q.peek_parked(G, 9, |k, _| k != 1).map(|w| w.key), Some(2));
        assert_eq!(q.parked(G), 1, "a stale entry is dropped");
    }

    #[test]
    fn a_users_waiters_come_back_no_earlier_than_the_last_grant() {
        let mut q = FairQueue::with_capacity(8, 0, 1);
        let user = Group::User(3);
        q.push_parked(user, 1, 10, Priority::Normal);
        q.push_parked(G, 2, 10, Priority::Normal);
        q.granted(100);
        q.unpark(user, 1, |_, _| true);
        q.unpark_all(G);
        let order: Vec<(usize, u64)> =
            std::iter::from_fn(|| q.pop(|_, _| true).map(|w| (w.key, w.vtime))).collect();
        assert_eq!(order, [(2, 10), (1, 100)]);
    }

    #[test]
    fn weights_set_the_shares() {
        // Two jobs alternate grants of equal pieces by virtual time: the
        // high one gets four pieces for each of the low one's.
        let (mut high, mut low) = (0u64, 0u64);
        let (mut got_high, mut got_low) = (0, 0);
        for _ in 0..500 {
            if (high, Reverse(Priority::High)) <= (low, Reverse(Priority::Low)) {
                high += cost(1 << 20, Priority::High);
                got_high += 1;
            } else {
                low += cost(1 << 20, Priority::Low);
                got_low += 1;
            }
        }
        assert_eq!(got_high, 400);
        assert_eq!(got_low, 100);
    }

    #[test]
    fn a_job_ahead_of_the_first_waiter_yields() {
        let w = Waiter {
            key: 9,
            seq: 1,
            vtime: 100,
            priority: Priority::Normal,
        };
        assert!(should_yield(200, Priority::Normal, Some(w)));
        assert!(!should_yield(50, Priority::Normal, Some(w)));
        assert!(!should_yield(100, Priority::High, Some(w)));
        assert!(should_yield(100, Priority::Low, Some(w)));
        assert!(!should_yield(100, Priority::Normal, None));
    }
}
