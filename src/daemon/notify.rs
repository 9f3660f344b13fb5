//! Telling systemd how the service is doing (sd_notify): READY=1 once it
//! serves, STOPPING=1 when it stops, STATUS= lines for `systemctl status`,
//! and WATCHDOG=1 keep-alives when the unit sets WatchdogSec=.
//!
//! Without NOTIFY_SOCKET (not run by systemd, or not Type=notify) every call
//! here does nothing. A failed notification is logged, never fatal: the
//! daemon serves its clients whether or not its manager hears about it.

use std::time::{Duration, Instant};

use ringxfer_ipc::StatsReport;
use sd_notify::NotifyState;

/// How often `Heartbeat` wants to be ticked when no watchdog is set: often
/// enough for `systemctl status` to show a current rate.
const STATUS_PERIOD: Duration = Duration::from_secs(10);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        let what: Vec<String> = states.iter().map(ToString::to_string).collect();
        tracing::warn!(
            "cannot notify the service manager ({}) on NOTIFY_SOCKET: {e}",
            what.join(", ")
        );
    }
}

/// READY=1 with the status line "serving on SOCKET, engine ENGINE": the
/// listener is set up and the engine made, so a client that connects now
/// is served (systemd starts units ordered after this one now).
pub fn ready(socket: &str, engine: &str) {
    let status = format!("serving on {socket}, engine {engine}");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// STOPPING=1: shutdown has begun.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// The periodic part: WATCHDOG=1 when the unit asks for it, and a STATUS=
/// line with jobs and throughput. It must be ticked from the loop itself
/// (every `period()`), so that a stuck loop stops the keep-alives and
/// systemd's watchdog restarts the daemon.
pub struct Heartbeat {
    enabled: bool,
    watchdog: Option<Duration>,
    last: Instant,
    last_bytes: u64,
}

impl Heartbeat {
    /// Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID.
    pub fn from_env() -> Heartbeat {
        Heartbeat {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
            last: Instant::now(),
            last_bytes: 0,
        }
    }

    /// Whether ticking does anything at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How often to tick: half the watchdog timeout, as sd_watchdog_enabled(3)
    /// recommends, so one late turn does not trip it; else `STATUS_PERIOD`.
    pub fn period(&self) -> Duration {
        match self.watchdog {
            Some(w) => (w / 2).min(STATUS_PERIOD),
            None => STATUS_PERIOD,
        }
    }

    /// Sends WATCHDOG=1 (if enabled) and the status line for `stats`.
    pub fn tick(&mut self, stats: &StatsReport) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let moved = stats.bytes_moved.saturating_sub(self.last_bytes);
        let rate = crate::size::throughput(moved, now.duration_since(self.last));
        self.last = now;
        self.last_bytes = stats.bytes_moved;
        let status = status_line(stats, rate);
        if self.watchdog.is_some() {
            send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
        } else {
            send(&[NotifyState::Status(&status)]);
        }
    }
}

/// The engine's observer under systemd: ticks feed the watchdog and the
/// status line; the first stop signal sends STOPPING=1 at once, while jobs
/// still drain, so `systemctl status` says "deactivating" for the grace period.
impl crate::engine::LoopObserver for Heartbeat {
    fn tick(&mut self, stats: &StatsReport) {
        Heartbeat::tick(self, stats);
    }

    fn stopping(&mut self) {
        if self.enabled {
            stopping("stopping: running jobs may finish within the shutdown grace period");
        }
    }
}

/// One line for `systemctl status`: what runs now, how fast, and totals.
pub fn status_line(stats: &StatsReport, bytes_per_sec: f64) -> String {
    let mut line = format!(
        "{} job{} running",
        stats.jobs_running,
        if stats.jobs_running == 1 { "" } else { "s" }
    );
    if stats.jobs_queued > 0 {
        line.push_str(&format!(" ({} queued)", stats.jobs_queued));
    }
    line.push_str(&format!(
        ", {}, {} connection{}; {} completed, {} failed, {} moved",
        crate::size::format_rate(bytes_per_sec),
        stats.connections,
        if stats.connections == 1 { "" } else { "s" },
        stats.jobs_completed,
        stats.jobs_failed,
        crate::size::format_bytes(stats.bytes_moved),
    ));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_reads_as_a_sentence() {
        let stats = StatsReport {
            jobs_running: 3,
            jobs_queued: 1,
            connections: 1,
            jobs_completed: 40,
            jobs_failed: 2,
            bytes_moved: 5 << 30,
            ..StatsReport::default()
        };
        assert_eq!(
            status_line(&stats, 1.5 * (1u64 << 30) as f64),
            "3 jobs running (1 queued), 1.50 GiB/s, 1 connection; 40 completed, 2 failed, 5.00 GiB moved"
        );
        let idle = StatsReport::default();
        assert_eq!(
            status_line(&idle, 0.0),
            "0 jobs running, 0 B/s, 0 connections; 0 completed, 0 failed, 0 B moved"
        );
    }
}
