//! `ringxfer stats`: the daemon's counters, as a table for people or one
//! flat JSON object for scripts.

use std::io::Write;

use ringxfer_ipc::StatsReport;
use serde_json::{json, Value};

use crate::context::Context;
use crate::engine_handle::{EngineHandle, Fallback};
use crate::error::{CliError, Exit};
use crate::report::EngineUsed;
use crate::report::{json_line, Op};
use ringxfer::size::format_bytes;

/// Asks the daemon only: a fresh in-process engine would report nothing but
/// zeros, so no daemon is an error (exit 3) here.
pub fn run(ctx: &Context) -> Exit {
    let result = EngineHandle::connect(&ctx.socket, Fallback::Refuse).and_then(|engine| {
        let stats = engine
            .client()
            .stats()
            .map_err(|err| CliError::client(format!("daemon at {}", ctx.socket.display()), &err))?;
        Ok((stats, engine.kind()))
    });
    match result {
        Ok((stats, kind)) => {
            if ctx.out.json {
                json_line(&stats_json(&stats, kind));
            } else {
                // Stats are the result the user asked for, so they go to
                // stdout and are printed even with -q. A closed stdout
                // (`| head -1`) is not worth a second error.
                let _ = std::io::stdout()
                    .lock()
                    .write_all(stats_text(&stats).as_bytes());
            }
            Exit::Done
        }
        Err(err) => {
            ctx.out.failed(Op::Stats, None, &err);
            err.exit
        }
    }
}

/// `total / calls`, 0 when there were no calls.
fn per(total: u64, calls: u64) -> f64 {
    if calls == 0 {
        0.0
    } else {
        total as f64 / calls as f64
    }
}

/// The daemon's own field names, flat (`.jobs_running`), strategies named
/// as on the command line, plus the two ratios the counters imply.
fn stats_json(s: &StatsReport, engine: EngineUsed) -> Value {
    let strategies: Vec<Value> = s
        .strategies
        .iter()
        .map(|st| {
            json!({
                "strategy": st.strategy.map(|x| x.name()),
                "jobs_completed": st.jobs_completed,
                "jobs_failed": st.jobs_failed,
                "bytes": st.bytes,
                "ops": st.ops,
            })
        })
        .collect();
    let mut value = serde_json::to_value(s).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut value {
        map.insert("op".into(), json!(Op::Stats.name()));
        map.insert("engine".into(), json!(engine.name()));
        map.insert("strategies".into(), Value::Array(strategies));
        map.insert(
            "bytes_per_enter".into(),
            json!(per(s.bytes_moved, s.enter_calls)),
        );
        map.insert(
            "sqes_per_enter".into(),
            json!(per(s.sqes_submitted, s.enter_calls)),
        );
    }
    value
}

fn stats_text(s: &StatsReport) -> String {
    let mut rows: Vec<(String, String)> = vec![
        ("uptime".into(), format_uptime(s.uptime_ms)),
        ("connections".into(), s.connections.to_string()),
        (
            "jobs".into(),
            format!(
                "{} running ({} queued, {} throttled, {} detached), {} completed, {} failed",
                s.jobs_running,
                s.jobs_queued,
                s.jobs_throttled,
                s.jobs_detached,
                s.jobs_completed,
                s.jobs_failed
            ),
        ),
        (
            "bytes moved".into(),
            format!("{} ({} bytes)", format_bytes(s.bytes_moved), s.bytes_moved),
        ),
    ];
    for st in &s.strategies {
        let name = st.strategy.map_or("other", |x| x.name());
        rows.push((
            format!("  {name}"),
            format!(
                "{} completed, {} failed, {}, {} ops",
                st.jobs_completed,
                st.jobs_failed,
                format_bytes(st.bytes),
                st.ops
            ),
        ));
    }
    rows.extend([
        (
            "ring".into(),
            format!(
                "{} sqes submitted, {} enter calls ({:.1} sqes, {} per enter)",
                s.sqes_submitted,
                s.enter_calls,
                per(s.sqes_submitted, s.enter_calls),
                format_bytes(per(s.bytes_moved, s.enter_calls) as u64)
            ),
        ),
        (
            "events".into(),
            format!(
                "{} sent in {} sends ({:.1} per send), {} held back to go together",
                s.events_sent,
                s.event_sends,
                per(s.events_sent, s.event_sends),
                s.events_held
            ),
        ),
        (
            "ops in flight".into(),
            format!("{} (at most {})", s.ops_in_flight, s.max_ops_in_flight),
        ),
        (
            "pipes".into(),
            format!(
                "{} in use of {} ({} each)",
                s.pipes_in_use,
                s.pipes_total,
                format_bytes(s.pipe_capacity)
            ),
        ),
        (
            "buffers".into(),
            format!(
                "{} in use of {} ({} each, {})",
                s.buffers_in_use,
                s.buffers_total,
                format_bytes(s.buffer_size),
                if s.buffers_registered {
                    "registered"
                } else {
                    "not registered"
                }
            ),
        ),
        (
            "rate limit".into(),
            s.rate_limit
                .map_or("none".into(), |r| format!("{}/s", format_bytes(r))),
        ),
    ]);
    if s.peer_bytes_in_flight_max > 0 {
        rows.push((
            "from peers".into(),
            format!(
                "at most {} in flight from one other daemon",
                format_bytes(s.peer_bytes_in_flight_max)
            ),
        ));
    }
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
    use ringxfer_ipc::{Strategy, StrategyStats};

    #[test]
    fn stats_json_is_flat() {
        let stats = StatsReport {
            jobs_running: 2,
            pipe_capacity: 65536,
            bytes_moved: 1000,
            enter_calls: 4,
            strategies: vec![StrategyStats {
                strategy: Some(Strategy::Splice),
                jobs_completed: 3,
                ..StrategyStats::default()
            }],
            ..StatsReport::default()
        };
        let value = stats_json(&stats, EngineUsed::Daemon);
        assert_eq!(value["op"], "stats");
        assert_eq!(value["engine"], "daemon");
        assert_eq!(value["jobs_running"], 2);
        assert_eq!(value["pipe_capacity"], 65536);
        assert_eq!(value["uptime_ms"], 0);
        assert_eq!(value["bytes_per_enter"], 250.0);
        assert_eq!(value["strategies"][0]["strategy"], "splice");
        assert_eq!(value["strategies"][0]["jobs_completed"], 3);
    }

    #[test]
    fn stats_text_has_every_counter() {
        let text = stats_text(&StatsReport {
            uptime_ms: 3_723_000,
            bytes_moved: 1536,
            jobs_queued: 1,
            events_sent: 30,
            event_sends: 4,
            events_held: 25,
            strategies: vec![StrategyStats {
                strategy: Some(Strategy::Direct),
                ops: 9,
                ..StrategyStats::default()
            }],
            ..StatsReport::default()
        });
        assert_eq!(text.lines().count(), 11, "{text}");
        assert!(
            text.contains("events:         30 sent in 4 sends (7.5 per send), 25 held back"),
            "{text}"
        );
        assert!(text.starts_with("uptime:         1h 02m 03s\n"), "{text}");
        assert!(
            text.contains("bytes moved:    1.50 KiB (1536 bytes)\n"),
            "{text}"
        );
        assert!(text.contains("1 queued"), "{text}");
        assert!(text.contains("  direct:"), "{text}");
        assert!(text.contains("9 ops"), "{text}");
        assert!(text.contains("enter calls"), "{text}");
    }

    #[test]
    fn uptime() {
        assert_eq!(format_uptime(250), "0.25 s");
        assert_eq!(format_uptime(59_000), "59s");
        assert_eq!(format_uptime(61_000), "1m 01s");
        assert_eq!(format_uptime(90_061_000), "1d 1h 01m 01s");
    }
}
