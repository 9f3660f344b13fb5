//! Token buckets for rate limits: a job's own, a group's shared by several
//! jobs of one connection, and the daemon's.
//!
//! A bucket is charged with the bytes a job actually moved, after the fact,
//! and may go into debt by up to one piece per chunk in flight; a job whose
//! bucket (or the daemon's) is in debt gets no new I/O slot until the refill
//! has paid the debt back. Over any long window the bytes moved stay within
//! `rate × time + burst + one piece per chunk`, and pieces of rate-limited
//! jobs are cut to a twentieth of a second's worth, so that error stays small.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The smallest piece a rate-limited job moves at a time: below it the
/// per-operation cost dominates.
const MIN_PIECE: u64 = 16 * 1024;

/// A bucket of `rate` bytes per second holding at most a tenth of a second's
/// worth (and at least one minimal piece).
#[derive(Debug, Clone)]
pub(super) struct TokenBucket {
    rate: u64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket; `rate` must be at least 1.
    pub(super) fn new(rate: u64, now: Instant) -> TokenBucket {
        let rate = rate.max(1);
        let burst = (rate / 10).max(MIN_PIECE) as f64;
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Bytes per second.
    pub(super) fn rate(&self) -> u64 {
        self.rate
    }

    /// Changes the rate, keeping the debt (or what is left of the burst).
    fn set_rate(&mut self, rate: u64, now: Instant) {
        self.refill(now);
        let rate = rate.max(1);
        self.rate = rate;
        self.burst = (rate / 10).max(MIN_PIECE) as f64;
        self.tokens = self.tokens.min(self.burst);
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate as f64).min(self.burst);
    }

    /// Takes `bytes` that were moved; the bucket may go into debt.
    pub(super) fn charge(&mut self, bytes: u64, now: Instant) {
        self.refill(now);
        self.tokens -= bytes as f64;
    }

    /// Whether the bucket is out of debt, so the job may start another piece.
    pub(super) fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 0.0
    }

    /// How long until the debt is paid back (zero when ready).
    pub(super) fn wait(&self) -> Duration {
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / self.rate as f64)
    }

    /// The piece size that keeps a job within its limit: a twentieth of a
    /// second's worth, at least `MIN_PIECE`.
    pub(super) fn piece(&self) -> u64 {
        (self.rate / 20).max(MIN_PIECE)
    }

    /// The piece size for one of several jobs sharing the bucket, which
    /// hold at most `slots` I/O slots at once: each slot in flight when the
    /// bucket runs dry adds its piece to the debt, so the pieces are cut
    /// until all of them together are a twentieth of a second's worth.
    pub(super) fn shared_piece(&self, slots: usize) -> u64 {
        (self.rate / 20 / slots.max(1) as u64).max(MIN_PIECE)
    }
}

/// A shared limit's name: the connection that made it (its id, never
/// reused, so no later connection can join it) and the client's id for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct GroupKey {
    pub connection: u64,
    pub id: u64,
}

/// The limits shared by groups of jobs (`SubmitRequest::rate_group`): one
/// bucket per group, charged by all its jobs and checked before any of
/// them gets a slot, dropped with the group's last job.
#[derive(Debug, Default)]
pub(super) struct RateGroups {
    groups: HashMap<GroupKey, Shared>,
}

#[derive(Debug)]
struct Shared {
    bucket: TokenBucket,
    jobs: usize,
}

impl RateGroups {
    /// A job joins group `key` at `rate` (a new group starts with a full
    /// bucket; an existing one takes the newest job's rate). Returns the
    /// group's bucket.
    pub(super) fn join(&mut self, key: GroupKey, rate: u64, now: Instant) -> &TokenBucket {
        let shared = self.groups.entry(key).or_insert_with(|| Shared {
            bucket: TokenBucket::new(rate, now),
            jobs: 0,
        });
        if shared.bucket.rate() != rate.max(1) {
            shared.bucket.set_rate(rate, now);
        }
        shared.jobs += 1;
        &shared.bucket
    }

    /// A job of group `key` ended; the group goes with its last job.
    pub(super) fn leave(&mut self, key: GroupKey) {
        if let Some(shared) = self.groups.get_mut(&key) {
            shared.jobs -= 1.min(shared.jobs);
            if shared.jobs == 0 {
                self.groups.remove(&key);
            }
        }
    }

    pub(super) fn bucket(&mut self, key: GroupKey) -> Option<&mut TokenBucket> {
        self.groups.get_mut(&key).map(|s| &mut s.bucket)
    }

    /// Groups alive now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_is_paid_back_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000_000, t0);
        assert!(b.ready(t0));
        b.charge(100_000 + 500_000, t0);
        assert!(!b.ready(t0));
        let wait = b.wait();
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        assert!(!b.ready(t0 + Duration::from_millis(400)));
        assert!(b.ready(t0 + Duration::from_millis(501)));
    }

    #[test]
    fn a_group_is_one_bucket_for_its_jobs_and_goes_with_the_last() {
        let t0 = Instant::now();
        let mut groups = RateGroups::default();
        let a = GroupKey {
            connection: 1,
            id: 7,
        };
        let b = GroupKey {
            connection: 2,
            id: 7,
        };
        groups.join(a, 1_000_000, t0);
        groups.join(a, 1_000_000, t0);
        groups.join(b, 1_000_000, t0);
        assert_eq!(groups.len(), 2, "the same id on another connection");
        // What either job of `a` moves is charged to both; `b` is untouched.
        groups.bucket(a).unwrap().charge(600_000, t0);
        assert!(!groups.bucket(a).unwrap().ready(t0));
        assert!(groups.bucket(b).unwrap().ready(t0));
        // A newer job's rate is the group's, with the debt kept.
        assert_eq!(groups.join(a, 2_000_000, t0).rate(), 2_000_000);
        let wait = groups.bucket(a).unwrap().wait();
        assert!((wait.as_secs_f64() - 0.25).abs() < 0.01, "{wait:?}");
        for _ in 0..3 {
            groups.leave(a);
        }
        assert!(groups.bucket(a).is_none());
        assert_eq!(groups.len(), 1);
    }

    #[test]
    fn shared_pieces_keep_the_debt_of_all_slots_small() {
        let b = TokenBucket::new(40 << 20, Instant::now());
        assert_eq!(b.shared_piece(32) * 32, b.piece());
        assert_eq!(b.shared_piece(1 << 20), MIN_PIECE);
    }

    #[test]
    fn an_idle_bucket_holds_at_most_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10_000_000, t0);
        b.charge(0, t0 + Duration::from_secs(60));
        b.charge(1_000_001, t0 + Duration::from_secs(60));
        assert!(!b.ready(t0 + Duration::from_secs(60)));
        assert_eq!(b.piece(), 500_000);
    }
}
