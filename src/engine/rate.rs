//! Token buckets for rate limits: a job's own and the daemon's.
//!
//! A bucket is charged with the bytes a job actually moved, after the fact,
//! and may go into debt by up to one piece per chunk in flight; a job whose
//! bucket (or the daemon's) is in debt gets no new I/O slot until the refill
//! has paid the debt back. Over any long window the bytes moved stay within
//! `rate × time + burst + one piece per chunk`, and pieces of rate-limited
//! jobs are cut to a twentieth of a second's worth, so that error stays small.

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
    fn an_idle_bucket_holds_at_most_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10_000_000, t0);
        b.charge(0, t0 + Duration::from_secs(60));
        b.charge(1_000_001, t0 + Duration::from_secs(60));
        assert!(!b.ready(t0 + Duration::from_secs(60)));
        assert_eq!(b.piece(), 500_000);
    }
}
