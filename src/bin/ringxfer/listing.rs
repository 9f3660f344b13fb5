//! How a job ([`JobInfo`]) is shown: a table row, a block of details, or a
//! JSON object with stable lower-case names.

use std::io::Write;
use std::time::Duration;

use ringxfer_ipc::{JobInfo, JobState};
use serde::Serialize;

use crate::report::Op;
use ringxfer::size::{format_bytes, format_rate};

#[derive(Serialize)]
pub struct JobJson<'a> {
    op: &'static str,
    job: u64,
    uid: u32,
    tag: &'a str,
    /// queued, running, throttled, completed or failed.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<JobErrorJson<'a>>,
    bytes: u64,
    total: Option<u64>,
    rate_bps: u64,
    strategy: &'static str,
    priority: &'static str,
    rate_limit: Option<u64>,
    detached: bool,
    elapsed_s: f64,
}

#[derive(Serialize)]
struct JobErrorJson<'a> {
    kind: &'static str,
    message: &'a str,
}

pub fn job_json(op: Op, info: &JobInfo) -> JobJson<'_> {
    JobJson {
        op: op.name(),
        job: info.job,
        uid: info.uid,
        tag: &info.tag,
        state: info.state.name(),
        error: match &info.state {
            JobState::Failed { kind, message } => Some(JobErrorJson {
                kind: kind.name(),
                message,
            }),
            _ => None,
        },
        bytes: info.bytes,
        total: info.total,
        rate_bps: info.rate,
        strategy: info.strategy.name(),
        priority: info.priority.name(),
        rate_limit: info.rate_limit,
        detached: info.detached,
        elapsed_s: Duration::from_micros(info.elapsed_us).as_secs_f64(),
    }
}

/// `1.00 MiB / 10.00 MiB (10%)`, or just the bytes when the total is unknown.
fn done_of_total(info: &JobInfo) -> String {
    match info.total {
        Some(total) if total > 0 => format!(
            "{} / {} ({}%)",
            format_bytes(info.bytes),
            format_bytes(total),
            info.bytes.saturating_mul(100) / total
        ),
        Some(_) => format!("{} / 0 B", format_bytes(info.bytes)),
        None => format_bytes(info.bytes),
    }
}

/// One line per job under a header: what `ringxfer jobs` prints.
pub fn table(jobs: &[JobInfo]) -> String {
    let mut out = format!(
        "{:>6} {:>6} {:<10} {:<30} {:>12} {:<9} {:<8} TAG\n",
        "ID", "UID", "STATE", "DONE / TOTAL", "RATE", "STRATEGY", "PRIORITY"
    );
    for j in jobs {
        out.push_str(&format!(
            "{:>6} {:>6} {:<10} {:<30} {:>12} {:<9} {:<8} {}\n",
            j.job,
            j.uid,
            j.state.name(),
            done_of_total(j),
            format_rate(j.rate as f64),
            j.strategy.name(),
            j.priority.name(),
            j.tag
        ));
    }
    out
}

/// One job, a field a line: what `ringxfer status ID` prints.
pub fn details(j: &JobInfo) -> String {
    let mut rows = vec![
        ("job", j.job.to_string()),
        ("owner uid", j.uid.to_string()),
        ("tag", j.tag.clone()),
        ("state", j.state.name().to_owned()),
    ];
    if let JobState::Failed { kind, message } = &j.state {
        rows.push(("error", format!("{kind}: {message}")));
    }
    rows.extend([
        ("done", done_of_total(j)),
        ("rate", format_rate(j.rate as f64)),
        (
            "rate limit",
            j.rate_limit
                .map_or("none".into(), |r| format!("{}/s", format_bytes(r))),
        ),
        ("strategy", j.strategy.name().to_owned()),
        ("priority", j.priority.name().to_owned()),
        ("detached", if j.detached { "yes" } else { "no" }.to_owned()),
        (
            "elapsed",
            format!("{:.2} s", Duration::from_micros(j.elapsed_us).as_secs_f64()),
        ),
    ]);
    rows.iter()
        .map(|(label, value)| format!("{:<12}{value}\n", format!("{label}:")))
        .collect()
}

/// Listings are results: stdout, even with -q.
pub fn print_stdout(text: &str) {
    // A closed stdout (`| head -1`) is not worth a second error.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringxfer_ipc::{FailureKind, Priority, Strategy};

    fn info() -> JobInfo {
        JobInfo {
            job: 7,
            uid: 1000,
            tag: "copy a -> b".into(),
            state: JobState::Throttled,
            bytes: 1 << 20,
            total: Some(4 << 20),
            rate: 1 << 20,
            strategy: Strategy::Splice,
            priority: Priority::Low,
            rate_limit: Some(1 << 20),
            detached: true,
            elapsed_us: 1_500_000,
        }
    }

    #[test]
    fn json_names_are_lower_case() {
        let v = serde_json::to_value(job_json(Op::Jobs, &info())).unwrap();
        assert_eq!(v["op"], "jobs");
        assert_eq!(v["job"], 7);
        assert_eq!(v["state"], "throttled");
        assert_eq!(v["priority"], "low");
        assert_eq!(v["strategy"], "splice");
        assert_eq!(v["rate_limit"], 1 << 20);
        assert_eq!(v["elapsed_s"], 1.5);
        assert!(v.get("error").is_none());

        let failed = JobInfo {
            state: JobState::Failed {
                kind: FailureKind::Cancelled,
                message: "cancelled by the client".into(),
            },
            ..info()
        };
        let v = serde_json::to_value(job_json(Op::Status, &failed)).unwrap();
        assert_eq!(v["state"], "failed");
        assert_eq!(v["error"]["kind"], "cancelled");
    }

    #[test]
    fn table_has_a_row_per_job() {
        let text = table(&[info(), JobInfo { job: 8, ..info() }]);
        assert_eq!(text.lines().count(), 3, "{text}");
        let row = text.lines().nth(1).unwrap();
        for part in [
            "7",
            "1000",
            "throttled",
            "1.00 MiB / 4.00 MiB (25%)",
            "1.00 MiB/s",
            "splice",
            "low",
            "copy a -> b",
        ] {
            assert!(row.contains(part), "{part:?} missing from {row:?}");
        }
    }

    #[test]
    fn details_show_the_failure() {
        let failed = JobInfo {
            state: JobState::Failed {
                kind: FailureKind::NoSpace,
                message: "disk full".into(),
            },
            total: None,
            ..info()
        };
        let text = details(&failed);
        assert!(text.contains("error:      no-space: disk full\n"), "{text}");
        assert!(text.contains("done:       1.00 MiB\n"), "{text}");
    }
}
