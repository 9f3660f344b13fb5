//! What `Request::Stats` reports: the engine's counters, and the report
//! built from them and from the other parts.

use std::time::Instant;

use ringxfer_ipc::{StatsReport, Strategy, StrategyStats};

use super::jobs::Job;
use super::rate::TokenBucket;
use super::Engine;

/// Counters kept as the engine runs.
pub(super) struct Counters {
    pub started: Instant,
    /// Counters by strategy: splice, direct, uncached, buffered, reflink,
    /// copy-range, sendfile.
    pub by_strategy: [StrategyStats; 8],
    /// Events encoded for clients, and the sends that carried them.
    pub events_sent: u64,
    pub event_sends: u64,
    pub events_held: u64,
    pub jobs_completed: u64,
    pub jobs_failed: u64,
    /// Bytes moved by jobs that have ended.
    pub bytes_finished: u64,
}

impl Counters {
    pub(super) fn new() -> Counters {
        Counters {
            started: Instant::now(),
            by_strategy: [
                Strategy::Splice,
                Strategy::Direct,
                Strategy::Uncached,
                Strategy::Buffered,
                Strategy::Reflink,
                Strategy::CopyRange,
                Strategy::Sendfile,
                Strategy::Peer,
            ]
            .map(|s| StrategyStats {
                strategy: Some(s),
                ..StrategyStats::default()
            }),
            events_sent: 0,
            event_sends: 0,
            events_held: 0,
            jobs_completed: 0,
            jobs_failed: 0,
            bytes_finished: 0,
        }
    }
}

/// The index of a strategy's counters in `Counters::by_strategy`.
pub(super) fn strategy_index(s: Strategy) -> usize {
    match s {
        Strategy::Auto | Strategy::Splice => 0,
        Strategy::Direct => 1,
        Strategy::Uncached => 2,
        Strategy::Buffered => 3,
        Strategy::Reflink => 4,
        Strategy::CopyRange => 5,
        Strategy::Sendfile => 6,
        Strategy::Peer => 7,
    }
}

impl Engine {
    /// The counters `Request::Stats` answers with.
    pub fn stats(&self) -> StatsReport {
        let running: u64 = self.jobs.slab.iter().map(|(_, j)| j.copy.moved()).sum();
        let count =
            |f: fn(&Job) -> bool| self.jobs.slab.iter().filter(|(_, j)| f(j)).count() as u64;
        StatsReport {
            uptime_ms: self
                .counters
                .started
                .elapsed()
                .as_millis()
                .min(u64::MAX as u128) as u64,
            connections: self.sessions.slab.len() as u64,
            jobs_running: self.jobs.slab.len() as u64,
            jobs_queued: count(|j| j.state() == ringxfer_ipc::JobState::Queued),
            jobs_throttled: count(|j| j.throttled),
            jobs_detached: count(|j| j.detach),
            jobs_completed: self.counters.jobs_completed,
            jobs_failed: self.counters.jobs_failed,
            bytes_moved: self.counters.bytes_finished + running,
            sqes_submitted: self.io.ring.sqes_submitted,
            enter_calls: self.io.ring.enter_calls,
            events_sent: self.counters.events_sent,
            event_sends: self.counters.event_sends,
            events_held: self.counters.events_held,
            pipes_total: self.slots.pipes.total() as u64,
            pipes_in_use: (self.slots.pipes.total() - self.slots.pipes.idle()) as u64,
            pipe_capacity: u64::from(self.slots.pipes.pipe_capacity()),
            buffers_total: self.slots.buffers.total() as u64,
            buffers_in_use: (self.slots.buffers.total() - self.slots.buffers.idle()) as u64,
            buffer_size: self.slots.buffers.buffer_size() as u64,
            buffers_registered: self.slots.buffers.registered(),
            ops_in_flight: self.slots.lent() as u64,
            max_ops_in_flight: self.config.max_inflight as u64,
            rate_limit: self.slots.global_bucket.as_ref().map(TokenBucket::rate),
            strategies: self.counters.by_strategy.to_vec(),
            peer_bytes_in_flight_max: self.peers.bytes_in_flight_max,
        }
    }
}
