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
use std::path::Path;
use std::time::Duration;

use ringxfer_ipc::{Checksums, Completion, Strategy};
use serde::Serialize;

use crate::error::CliError;
use ringxfer::size::{format_bytes, format_rate, throughput};

/// Which engine moved the bytes; reported in JSON as `"engine"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineUsed {
    Daemon,
    Embedded,
    /// No engine: the CLI copied a small file itself, or every file of a
    /// tree (see [`crate::cheap_copy`]).
    Cli,
}

impl EngineUsed {
    pub fn name(self) -> &'static str {
        match self {
            EngineUsed::Daemon => "daemon",
            EngineUsed::Embedded => "embedded",
            EngineUsed::Cli => "cli",
        }
    }
}

/// What a multi-file copy did.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Things the copy was asked to copy: files, links, and everything that
    /// failed (unreadable directories and skipped special files included).
    pub items: u64,
    pub files: u64,
    pub links: u64,
    pub dirs: u64,
    pub failed: u64,
    /// Files -n or -u left alone.
    pub skipped: u64,
    /// The first [`NAMED_FAILURES`] that failed, by source path, for the
    /// summary.
    pub failed_paths: Vec<String>,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Failures the summary names (each is also reported as it happens).
pub const NAMED_FAILURES: usize = 10;

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
    Jobs,
    Status,
    Wait,
    Cancel,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Copy => "copy",
            Op::Send => "send",
            Op::Recv => "recv",
            Op::Stats => "stats",
            Op::Jobs => "jobs",
            Op::Status => "status",
            Op::Wait => "wait",
            Op::Cancel => "cancel",
        }
    }

    /// The past tense for the final text line.
    fn done_verb(self) -> &'static str {
        match self {
            Op::Copy => "copied",
            Op::Send => "sent",
            Op::Recv => "received",
            Op::Wait => "moved",
            Op::Stats | Op::Jobs | Op::Status | Op::Cancel => "reported",
        }
    }
}

/// A finished transfer, ready to print.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub bytes: u64,
    pub elapsed: Duration,
    pub strategy: Strategy,
    pub engine: EngineUsed,
    /// Why the engine used this strategy, when it chose or had to differ.
    pub note: Option<String>,
    /// The daemon's id for the job.
    pub job: Option<u64>,
    /// Whether the destination was made durable before completion.
    pub synced: bool,
    /// CRC-32C of what was read and what landed, with --verify.
    pub checksums: Option<Checksums>,
}

impl Finished {
    pub fn from_completion(done: Completion, engine: EngineUsed) -> Finished {
        Finished {
            bytes: done.bytes,
            elapsed: done.elapsed,
            strategy: done.strategy,
            engine,
            note: done.note,
            job: Some(done.job),
            synced: done.synced,
            checksums: done.checksums,
        }
    }
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

    /// Prints a detached job's id: the result scripts need to follow it.
    pub fn detached(self, subject: &Subject, job: u64) {
        if self.json {
            json_line(&DetachedJson {
                op: subject.op.name(),
                job,
                src: &subject.src,
                dst: &subject.dst,
                detached: true,
            });
        } else {
            // stdout, and even with -q: the id is the result, like `mktemp`.
            let _ = writeln!(std::io::stdout().lock(), "{job}");
        }
    }

    /// The end of a multi-file copy: a summary line (and the count of
    /// failures, which is an error and so shown even with -q), or one JSON
    /// object after the failures' own.
    pub fn tree_done(self, tally: &Tally, engine: EngineUsed) {
        if self.json {
            json_line(&TreeJson {
                op: Op::Copy.name(),
                items: tally.items,
                files: tally.files,
                links: tally.links,
                directories: tally.dirs,
                failed: tally.failed,
                skipped: tally.skipped,
                failed_paths: &tally.failed_paths,
                bytes: tally.bytes,
                elapsed_s: tally.elapsed.as_secs_f64(),
                throughput_bps: throughput(tally.bytes, tally.elapsed),
                engine: engine.name(),
            });
            return;
        }
        if !self.quiet {
            status(&tree_text(tally));
        }
        if tally.failed > 0 {
            note(&failed_text(tally));
        }
    }

    /// `-v`: a file copied, as cp -v says it, on stdout, with the backup
    /// the old file was kept as.
    pub fn copied(self, verbose: bool, src: &Path, dst: &Path, backup: Option<&Path>) {
        if verbose && !self.json && !self.quiet {
            let backup = backup
                .map(|b| format!(" (backup: '{}')", b.display()))
                .unwrap_or_default();
            let line = format!("'{}' -> '{}'{backup}", src.display(), dst.display());
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
    }

    /// A destination -n or -u left alone: with --json always (scripts
    /// must not take it for a copy), in text with -v.
    pub fn skipped(self, verbose: bool, subject: &Subject) {
        if self.json {
            json_line(&SkippedJson {
                op: subject.op.name(),
                src: &subject.src,
                dst: &subject.dst,
                skipped: true,
            });
        } else if verbose && !self.quiet {
            let _ = writeln!(std::io::stdout().lock(), "skipped '{}'", subject.dst);
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

pub fn json_line<T: Serialize>(value: &T) {
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
    let synced = if done.synced { ", synced" } else { "" };
    let verified = done
        .checksums
        .map(|c| {
            format!(
                ", verified crc32c {:08x} -> {:08x}",
                c.source, c.destination
            )
        })
        .unwrap_or_default();
    format!(
        "{} {} in {:.2} s ({}) via {}{why}{synced}{verified}",
        op.done_verb(),
        format_bytes(done.bytes),
        done.elapsed.as_secs_f64(),
        format_rate(throughput(done.bytes, done.elapsed)),
        done.strategy.name(),
    )
}

/// `3 files`, `1 file`.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `copied 10000 files (39.06 MiB), 2 links, 11 directories in 0.35 s (111.60 MiB/s)`,
/// with `, 3 skipped` when -n or -u left files alone.
pub fn tree_text(t: &Tally) -> String {
    let skipped = if t.skipped > 0 {
        format!(", {} skipped", t.skipped)
    } else {
        String::new()
    };
    format!(
        "copied {} ({}), {}, {}{skipped} in {:.2} s ({})",
        count(t.files, "file", "files"),
        format_bytes(t.bytes),
        count(t.links, "link", "links"),
        count(t.dirs, "directory", "directories"),
        t.elapsed.as_secs_f64(),
        format_rate(throughput(t.bytes, t.elapsed)),
    )
}

/// `2 of 10 files failed: 'a/x', 'a/y'`, naming at most the first
/// [`NAMED_FAILURES`] by source path.
pub fn failed_text(t: &Tally) -> String {
    let named: Vec<String> = t.failed_paths.iter().map(|p| format!("'{p}'")).collect();
    let more = t.failed.saturating_sub(named.len() as u64);
    let more = if more > 0 {
        format!(" and {more} more (each reported above)")
    } else {
        String::new()
    };
    format!(
        "{} of {} files failed: {}{more}",
        t.failed,
        t.items,
        named.join(", ")
    )
}

#[derive(Serialize)]
struct TreeJson<'a> {
    op: &'static str,
    items: u64,
    files: u64,
    links: u64,
    directories: u64,
    failed: u64,
    skipped: u64,
    /// The first failures' source paths (see [`failed_text`]).
    failed_paths: &'a [String],
    bytes: u64,
    elapsed_s: f64,
    throughput_bps: f64,
    engine: &'static str,
}

#[derive(Serialize)]
struct SkippedJson<'a> {
    op: &'static str,
    src: &'a str,
    dst: &'a str,
    skipped: bool,
}

#[derive(Serialize)]
struct DetachedJson<'a> {
    op: &'static str,
    job: u64,
    src: &'a str,
    dst: &'a str,
    detached: bool,
}

/// Checksums as JSON: numbers, which is what the protocol carries.
#[derive(Serialize)]
pub struct ChecksumsJson {
    pub algorithm: &'static str,
    pub source: u32,
    pub destination: u32,
}

impl From<Checksums> for ChecksumsJson {
    fn from(c: Checksums) -> ChecksumsJson {
        ChecksumsJson {
            algorithm: "crc32c",
            source: c.source,
            destination: c.destination,
        }
    }
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
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<u64>,
    synced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    checksums: Option<ChecksumsJson>,
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
        job: done.job,
        synced: done.synced,
        checksums: done.checksums.map(ChecksumsJson::from),
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
            engine: EngineUsed::Embedded,
            note: None,
            job: None,
            synced: false,
            checksums: None,
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
                "synced": false,
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
    fn tree_summary() {
        let t = Tally {
            files: 1,
            links: 2,
            dirs: 1,
            bytes: 2048,
            elapsed: Duration::from_secs(1),
            ..Tally::default()
        };
        assert_eq!(
            tree_text(&t),
            "copied 1 file (2.00 KiB), 2 links, 1 directory in 1.00 s (2.00 KiB/s)"
        );
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
        let checked = Finished {
            synced: true,
            checksums: Some(Checksums {
                source: 0xdead_beef,
                destination: 0xdead_beef,
            }),
            ..finished()
        };
        assert_eq!(
            transfer_text(Op::Copy, &checked),
            "copied 1.00 GiB in 0.50 s (2.00 GiB/s) via splice, synced, verified crc32c deadbeef -> deadbeef"
        );
        assert_eq!(
            transfer_text(Op::Recv, &small),
            "received 0 B in 0.00 s (0 B/s) via splice"
        );
        assert!(transfer_text(Op::Send, &small).starts_with("sent "));
    }
}
