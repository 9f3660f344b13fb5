//! `--json --progress`: while a transfer runs, one JSON object per line on
//! stdout every [`EVERY`], and one more when it ends, before the result
//! object (which is what it is without --progress):
//!
//! `{"event":"progress","op":"copy","bytes":1048576,"total_bytes":8388608,
//!   "total_known":true,"files_done":0,"files_total":1,"rate_bps":1048576.0,
//!   "eta_s":7.0,"elapsed_s":1.0,"current":"big.iso"}`
//!
//! Results never carry `event`, so a script tells the two apart by it.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How often a progress object is printed: as `dd status=progress` and
/// `pv -n` report, often enough to draw a bar, rarely enough to read.
pub const EVERY: Duration = Duration::from_secs(1);

/// The rate is the bytes moved over about this long before each object.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Where a transfer is, as the CLI counts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot<'a> {
    /// Bytes moved so far.
    pub bytes: u64,
    /// Bytes to move in all, when known (not for a socket source).
    pub total: Option<u64>,
    /// Whether `total` and `files_total` are final: a tree's grow while
    /// the walk finds files.
    pub total_known: bool,
    /// Files finished, copied or failed.
    pub files_done: u64,
    pub files_total: u64,
    /// The file being moved (of a tree: the oldest still in flight).
    pub current: Option<&'a str>,
}

/// Prints progress objects for one command.
pub struct JsonProgress {
    op: &'static str,
    started: Instant,
    next: Instant,
    /// When earlier objects were printed and the bytes they said.
    recent: VecDeque<(Instant, u64)>,
}

impl JsonProgress {
    /// For a command (`op`: copy, send, recv, wait) that starts now; the
    /// first object is due after [`EVERY`].
    pub fn new(op: &'static str) -> JsonProgress {
        let started = Instant::now();
        JsonProgress {
            op,
            started,
            next: started + EVERY,
            recent: VecDeque::from([(started, 0)]),
        }
    }

    /// Whether the next object is due.
    pub fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    /// Prints `now`'s object and schedules the next.
    pub fn print(&mut self, now: &Snapshot<'_>) {
        let line = self.object(now, Instant::now());
        // Serializing a plain struct cannot fail; a lost line is better
        // for a script than a panic, and so is a closed stdout.
        let text = serde_json::to_string(&line).unwrap_or_default();
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }

    fn object<'a>(&mut self, s: &Snapshot<'a>, at: Instant) -> ProgressJson<'a> {
        while self.recent.len() > 1
            && self
                .recent
                .front()
                .is_some_and(|&(t, _)| at.saturating_duration_since(t) > RATE_WINDOW)
        {
            self.recent.pop_front();
        }
        let (then, before) = self.recent.front().copied().unwrap_or((self.started, 0));
        let span = at.saturating_duration_since(then).as_secs_f64();
        let rate = if span > 0.0 {
            s.bytes.saturating_sub(before) as f64 / span
        } else {
            0.0
        };
        self.recent.push_back((at, s.bytes));
        self.next = at + EVERY;
        ProgressJson {
            event: "progress",
            op: self.op,
            bytes: s.bytes,
            total_bytes: s.total,
            total_known: s.total_known,
            files_done: s.files_done,
            files_total: s.files_total,
            rate_bps: rate,
            eta_s: s
                .total
                .filter(|_| rate > 0.0)
                .map(|t| t.saturating_sub(s.bytes) as f64 / rate),
            elapsed_s: at.saturating_duration_since(self.started).as_secs_f64(),
            current: s.current,
        }
    }
}

#[derive(Debug, Serialize)]
struct ProgressJson<'a> {
    event: &'static str,
    op: &'static str,
    bytes: u64,
    total_bytes: Option<u64>,
    total_known: bool,
    files_done: u64,
    files_total: u64,
    rate_bps: f64,
    /// Seconds left at `rate_bps`, for the total known so far.
    eta_s: Option<f64>,
    elapsed_s: f64,
    current: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_say_the_rate_over_the_last_seconds_and_the_time_left() {
        let mut p = JsonProgress::new("copy");
        let t0 = p.started;
        let snap = Snapshot {
            bytes: 2 << 20,
            total: Some(10 << 20),
            total_known: true,
            files_done: 1,
            files_total: 4,
            current: Some("a/b"),
        };
        let first = p.object(&snap, t0 + Duration::from_secs(2));
        assert_eq!(
            serde_json::to_value(&first).unwrap(),
            json!({
                "event": "progress", "op": "copy", "bytes": 2 << 20, "total_bytes": 10 << 20,
                "total_known": true, "files_done": 1, "files_total": 4,
                "rate_bps": f64::from(1 << 20), "eta_s": 8.0, "elapsed_s": 2.0, "current": "a/b",
            })
        );
        assert!(!p.due(), "the next is a second away");
        let later = Snapshot {
            bytes: 9 << 20,
            ..snap
        };
        let second = p.object(&later, t0 + Duration::from_secs(3));
        assert_eq!(second.rate_bps, f64::from(3 << 20));
        // Stopped: the rate says so once the fast seconds are out of the
        // window, and with no total there is no time left to say.
        let stream = Snapshot {
            total: None,
            current: None,
            ..later
        };
        let third = serde_json::to_value(p.object(&stream, t0 + Duration::from_secs(9))).unwrap();
        assert_eq!(third["rate_bps"], json!(0.0));
        assert_eq!(
            (&third["eta_s"], &third["current"]),
            (&json!(null), &json!(null))
        );
    }
}
