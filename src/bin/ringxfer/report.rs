//! What the CLI prints when a command ends: a line on stderr for people, or
//! exactly one JSON object per result on stdout for scripts.
//!
//! Text (stderr, no prefix):  `copied 1.00 GiB in 0.52 s (1.92 GiB/s) via splice`
//! JSON (stdout):  `{"op":"copy","src":"a","dst":"b","bytes":1073741824,
//!                   "elapsed_s":0.52,"throughput_bps":2064888221.5,
//!                   "strategy":"splice","engine":"daemon"}`
//! Failure JSON:   `{"op":"copy","src":"a","dst":"b","error":{"kind":"no-space",
//!                   "os_error":28,"message":"copy a -> b: ..."}}`
//! Errors always also go to stderr as `ringxfer: <what>: <cause>`.

use std::io::Write;
use std::time::Duration;

use ringxfer_ipc::{StatsReport, Strategy};
use serde::Serialize;

use crate::engine::EngineKind;
use crate::error::CliError;
use ringxfer::size::{format_bytes, format_rate, throughput};

/// Which transfer a result is about, as the user named it (with copy's
/// destination already resolved to the file actually written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub op: Op,
    pub src: String,
    pub dst: String,
}

impl Subject {
    /// How errors about the transfer as a whole are introduced: `copy a -> b`.
    pub fn describe(&self) -> String {
        format!("{} {} -> {}", self.op.name(), self.src, self.dst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Copy,
    Send,
    Recv,
    Stats,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Copy => "copy",
            Op::Send => "send",
            Op::Recv => "recv",
            Op::Stats => "stats",
        }
    }

    /// The past tense for the final text line.
    fn done_verb(self) -> &'static str {
        match self {
            Op::Copy => "copied",
            Op::Send => "sent",
            Op::Recv => "received",
            Op::Stats => "reported",
        }
    }
}

/// A finished transfer, ready to print.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub bytes: u64,
    pub elapsed: Duration,
    pub strategy: Strategy,
    pub engine: EngineKind,
    /// Why the engine used this strategy, when it chose or had to differ.
    pub note: Option<String>,
}

/// How results are printed, from the global flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

impl Output {
    /// Whether to say things that are neither results nor errors (the
    /// in-process note, `listening on`, progress).
    pub fn chatty(self) -> bool {
        !self.quiet && !self.json
    }

    pub fn transfer_done(self, subject: &Subject, done: &Finished) {
        if self.json {
            json_line(&transfer_json(subject, done));
        } else if !self.quiet {
            status(&transfer_text(subject.op, done));
        }
    }

    pub fn stats(self, stats: &StatsReport, engine: EngineKind) {
        if self.json {
            json_line(&StatsJson {
                op: Op::Stats.name(),
                engine: engine.name(),
                stats,
            });
        } else {
            // Stats are the result the user asked for, so they go to stdout
            // and are printed even with -q.
            let mut out = std::io::stdout().lock();
            // A closed stdout (`| head -1`) is not worth a second error.
            let _ = out.write_all(stats_text(stats).as_bytes());
        }
    }

    /// Reports a failure: always on stderr, and as JSON on stdout with --json.
    pub fn failed(self, op: Op, subject: Option<&Subject>, err: &CliError) {
        note(&err.to_string());
        if self.json {
            json_line(&failure_json(op, subject, err));
        }
    }
}

/// A remark or error on stderr, with the program's name in front as every
/// tool does: `ringxfer: <line>`.
pub fn note(line: &str) {
    status(&format!("ringxfer: {line}"));
}

/// A plain status line on stderr (`listening on ...`, the final line).
pub fn status(line: &str) {
    // If stderr itself is gone there is nowhere left to complain to.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn json_line<T: Serialize>(value: &T) {
    // Serializing these plain structs cannot fail; if it somehow did, an empty
    // line is better for a script than a panic.
    let text = serde_json::to_string(value).unwrap_or_default();
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// `copied 1.00 GiB in 0.52 s (1.92 GiB/s) via splice`.
pub fn transfer_text(op: Op, done: &Finished) -> String {
    let why = done
        .note
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    format!(
        "{} {} in {:.2} s ({}) via {}{why}",
        op.done_verb(),
        format_bytes(done.bytes),
        done.elapsed.as_secs_f64(),
        format_rate(throughput(done.bytes, done.elapsed)),
        done.strategy.name(),
    )
}

#[derive(Serialize)]
struct TransferJson<'a> {
    op: &'static str,
    src: &'a str,
    dst: &'a str,
    bytes: u64,
    elapsed_s: f64,
    throughput_bps: f64,
    strategy: &'static str,
    engine: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
}

fn transfer_json<'a>(subject: &'a Subject, done: &'a Finished) -> TransferJson<'a> {
    TransferJson {
        op: subject.op.name(),
        src: &subject.src,
        dst: &subject.dst,
        bytes: done.bytes,
        elapsed_s: done.elapsed.as_secs_f64(),
        throughput_bps: throughput(done.bytes, done.elapsed),
        strategy: done.strategy.name(),
        engine: done.engine.name(),
        note: done.note.as_deref(),
    }
}

#[derive(Serialize)]
struct FailureJson<'a> {
    op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    src: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<&'static str>,
    error: ErrorJson<'a>,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    kind: &'a str,
    os_error: Option<i32>,
    message: String,
}

fn failure_json<'a>(op: Op, subject: Option<&'a Subject>, err: &'a CliError) -> FailureJson<'a> {
    FailureJson {
        op: op.name(),
        src: subject.map(|s| s.src.as_str()),
        dst: subject.map(|s| s.dst.as_str()),
        bytes: err.bytes,
        engine: err.engine,
        error: ErrorJson {
            kind: &err.kind,
            os_error: err.os_error,
            message: err.to_string(),
        },
    }
}

#[derive(Serialize)]
struct StatsJson<'a> {
    op: &'static str,
    engine: &'static str,
    // Flattened so scripts read `.jobs_running`, with the daemon's own names.
    #[serde(flatten)]
    stats: &'a StatsReport,
}

fn stats_text(s: &StatsReport) -> String {
    let rows: [(&str, String); 10] = [
        ("uptime", format_uptime(s.uptime_ms)),
        ("connections", s.connections.to_string()),
        ("jobs running", s.jobs_running.to_string()),
        ("jobs completed", s.jobs_completed.to_string()),
        ("jobs failed", s.jobs_failed.to_string()),
        (
            "bytes moved",
            format!("{} ({} bytes)", format_bytes(s.bytes_moved), s.bytes_moved),
        ),
        ("sqes submitted", s.sqes_submitted.to_string()),
        ("enter calls", s.enter_calls.to_string()),
        (
            "pipes",
            format!("{} in use of {}", s.pipes_in_use, s.pipes_total),
        ),
        ("pipe capacity", format_bytes(s.pipe_capacity)),
    ];
    rows.iter()
        .map(|(label, value)| format!("{:<16}{value}\n", format!("{label}:")))
        .collect()
}

/// `3d 4h 05m 06s`, dropping leading zero units; `0.25 s` under a second.
fn format_uptime(ms: u64) -> String {
    if ms < 1000 {
        return format!("{:.2} s", ms as f64 / 1000.0);
    }
    let secs = ms / 1000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m:02}m {s:02}s")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn subject() -> Subject {
        Subject {
            op: Op::Copy,
            src: "a.bin".into(),
            dst: "dir/a.bin".into(),
        }
    }

    fn finished() -> Finished {
        Finished {
            bytes: 1 << 30,
            elapsed: Duration::from_millis(500),
            strategy: Strategy::Splice,
            engine: EngineKind::Embedded,
            note: None,
        }
    }

    #[test]
    fn transfer_json_shape() {
        let value = serde_json::to_value(transfer_json(&subject(), &finished())).unwrap();
        assert_eq!(
            value,
            json!({
                "op": "copy",
                "src": "a.bin",
                "dst": "dir/a.bin",
                "bytes": 1u64 << 30,
                "elapsed_s": 0.5,
                "throughput_bps": 2.0 * (1u64 << 30) as f64,
                "strategy": "splice",
                "engine": "embedded",
            })
        );
    }

    #[test]
    fn transfer_json_is_one_line() {
        let text = serde_json::to_string(&transfer_json(&subject(), &finished())).unwrap();
        assert!(!text.contains('\n'));
    }

    #[test]
    fn failure_json_shape() {
        let err = CliError {
            os_error: Some(28),
            ..CliError::new("copy a.bin -> dir/a.bin", "no-space", "disk full")
        };
        let value = serde_json::to_value(failure_json(Op::Copy, Some(&subject()), &err)).unwrap();
        assert_eq!(
            value,
            json!({
                "op": "copy",
                "src": "a.bin",
                "dst": "dir/a.bin",
                "error": {
                    "kind": "no-space",
                    "os_error": 28,
                    "message": "copy a.bin -> dir/a.bin: disk full",
                },
            })
        );

        // Without a subject (stats) and without an errno: no src/dst, null errno.
        let err = CliError::new("no daemon at /s", "daemon-unreachable", "refused");
        let value = serde_json::to_value(failure_json(Op::Stats, None, &err)).unwrap();
        assert_eq!(value["op"], "stats");
        assert_eq!(value["error"]["os_error"], Value::Null);
        assert!(value.get("src").is_none());
    }

    #[test]
    fn stats_json_is_flat() {
        let stats = StatsReport {
            jobs_running: 2,
            pipe_capacity: 65536,
            ..StatsReport::default()
        };
        let value = serde_json::to_value(StatsJson {
            op: "stats",
            engine: "daemon",
            stats: &stats,
        })
        .unwrap();
        assert_eq!(value["op"], "stats");
        assert_eq!(value["engine"], "daemon");
        assert_eq!(value["jobs_running"], 2);
        assert_eq!(value["pipe_capacity"], 65536);
        assert_eq!(value["uptime_ms"], 0);
    }

    #[test]
    fn final_text_lines() {
        assert_eq!(
            transfer_text(Op::Copy, &finished()),
            "copied 1.00 GiB in 0.50 s (2.00 GiB/s) via splice"
        );
        let small = Finished {
            bytes: 0,
            elapsed: Duration::ZERO,
            ..finished()
        };
        let chosen = Finished {
            strategy: Strategy::Direct,
            note: Some("auto: the source is cold".into()),
            ..finished()
        };
        assert_eq!(
            transfer_text(Op::Copy, &chosen),
            "copied 1.00 GiB in 0.50 s (2.00 GiB/s) via direct (auto: the source is cold)"
        );
        assert_eq!(
            transfer_text(Op::Recv, &small),
            "received 0 B in 0.00 s (0 B/s) via splice"
        );
        assert!(transfer_text(Op::Send, &small).starts_with("sent "));
    }

    #[test]
    fn stats_text_has_every_counter() {
        let text = stats_text(&StatsReport {
            uptime_ms: 3_723_000,
            bytes_moved: 1536,
            ..StatsReport::default()
        });
        assert_eq!(text.lines().count(), 10);
        assert!(text.starts_with("uptime:         1h 02m 03s\n"), "{text}");
        assert!(
            text.contains("bytes moved:    1.50 KiB (1536 bytes)\n"),
            "{text}"
        );
    }

    #[test]
    fn uptime() {
        assert_eq!(format_uptime(250), "0.25 s");
        assert_eq!(format_uptime(59_000), "59s");
        assert_eq!(format_uptime(61_000), "1m 01s");
        assert_eq!(format_uptime(90_061_000), "1d 1h 01m 01s");
    }
}
