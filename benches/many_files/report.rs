//! The tables: one per file system, tree and cache state, with the verdict
//! (ringxfer's speed over the faster of xcp and cpz, round by round), a
//! summary of the verdicts, and the JSON line.

use crate::lineup::{Contender, Sample, Who};
use crate::support::{fmt_list, median};
use crate::{Case, Settings};

/// ringxfer must be at least this many times as fast as the faster of xcp
/// and cpz (issue 17).
const TARGET: f64 = 1.2;

fn med(v: &[f64]) -> f64 {
    median(v.to_vec()).unwrap_or(f64::NAN)
}

/// "median [min-max]" to the millisecond: the small trees copy in tens of
/// milliseconds.
fn spread3(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.3} [{min:.3}-{max:.3}]", med(v))
}

fn spread2(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.2} [{min:.2}-{max:.2}]", med(v))
}

/// ringxfer's speed over the fastest of `peers` in each round (their best
/// time over its time), or None when ringxfer or all of them sat out.
fn ratios(contenders: &[Contender], case: &Case, peers: &[Who]) -> Option<Vec<f64>> {
    let find = |w: Who| contenders.iter().position(|c| c.who == w);
    let rx = &case.samples[find(Who::Ringxfer)?];
    let p: Vec<&Vec<Sample>> = peers
        .iter()
        .filter_map(|&w| find(w))
        .map(|i| &case.samples[i])
        .collect();
    if p.is_empty() {
        return None;
    }
    Some(
        (0..rx.len())
            .map(|r| p.iter().map(|s| s[r].wall).fold(f64::INFINITY, f64::min) / rx[r].wall)
            .collect(),
    )
}

/// The verdict's peers: xcp and cpz, those that ran.
fn peer_names(contenders: &[Contender]) -> String {
    let names: Vec<&str> = contenders
        .iter()
        .filter(|c| matches!(c.who, Who::Xcp | Who::Cpz))
        .map(|c| c.who.label())
        .collect();
    if names.is_empty() {
        "faster of xcp and cpz (neither ran)".into()
    } else {
        format!("faster of ({})", names.join(", "))
    }
}

fn col<T>(s: &[Sample], f: impl Fn(&Sample) -> T) -> Vec<T> {
    s.iter().map(f).collect()
}

/// Prints the table of one case.
pub fn case(contenders: &[Contender], case: &Case) {
    let rounds = case.samples.first().map_or(0, Vec::len);
    println!(
        "results {} / {} / {}: {rounds} round(s), median [min-max]",
        case.fs,
        case.shape.key(),
        case.cache.key()
    );
    println!(
        "  {:<17} {:>23} {:>9} {:>7} {:>15} {:>8} {:>10}",
        "contender", "wall s", "files/s", "CPU s", "(CLI + daemon)", "µs/file", "disk MiB"
    );
    for (c, s) in contenders.iter().zip(&case.samples) {
        let wall = col(s, |x| x.wall);
        let cpu = med(&col(s, Sample::total_cpu));
        let split = if c.who == Who::Ringxfer {
            format!(
                "{:.2} + {:.2}",
                med(&col(s, |x| x.cpu)),
                med(&col(s, |x| x.daemon_cpu))
            )
        } else {
            String::new()
        };
        println!(
            "  {:<17} {:>23} {:>9.0} {:>7.2} {:>15} {:>8.1} {:>10.1}",
            c.who.label(),
            spread3(&wall),
            case.files as f64 / med(&wall),
            cpu,
            split,
            cpu / case.files as f64 * 1e6,
            med(&col(s, |x| x.disk as f64)) / (1u64 << 20) as f64
        );
    }
    if let Some(r) = ratios(contenders, case, &[Who::Xcp, Who::Cpz]) {
        let m = med(&r);
        println!(
            "  ringxfer speed / {}: {}  target >= {TARGET}  {}  [rounds {}]",
            peer_names(contenders),
            spread2(&r),
            if m >= TARGET { "PASS" } else { "FAIL" },
            fmt_list(&r)
        );
    }
    if let Some(r) = ratios(contenders, case, &[Who::Cp]) {
        println!(
            "  ringxfer speed / cp -r: {}  (info)  [rounds {}]",
            spread2(&r),
            fmt_list(&r)
        );
    }
}

/// One line per case: the verdict.
pub fn summary(contenders: &[Contender], cases: &[Case]) {
    println!();
    println!(
        "summary: ringxfer speed / {}, median [min-max] of per-round ratios, target >= {TARGET}",
        peer_names(contenders)
    );
    for c in cases {
        let verdict = match ratios(contenders, c, &[Who::Xcp, Who::Cpz]) {
            Some(r) => format!(
                "{}  {}",
                spread2(&r),
                if med(&r) >= TARGET { "PASS" } else { "FAIL" }
            ),
            None => "n/a (ringxfer, or both xcp and cpz, did not run)".into(),
        };
        println!(
            "  {:<6} {:<6} {:<5} {verdict}",
            c.fs,
            c.shape.key(),
            c.cache.key()
        );
    }
}

fn case_json(contenders: &[Contender], case: &Case) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = contenders
        .iter()
        .zip(&case.samples)
        .map(|(c, s)| {
            let wall = col(s, |x| x.wall);
            let cpu = col(s, Sample::total_cpu);
            serde_json::json!({
                "name": c.who.key(),
                "version": c.version,
                "wall_s": med(&wall),
                "wall_s_rounds": wall,
                "files_per_s": case.files as f64 / med(&wall),
                "cpu_s": med(&cpu),
                "cpu_s_rounds": cpu,
                "daemon_cpu_s": med(&col(s, |x| x.daemon_cpu)),
                "cpu_us_per_file": med(&cpu) / case.files as f64 * 1e6,
                "disk_bytes": med(&col(s, |x| x.disk as f64)),
            })
        })
        .collect();
    let verdict = ratios(contenders, case, &[Who::Xcp, Who::Cpz]).map(|r| {
        serde_json::json!({
            "ratio": med(&r),
            "per_round": r,
            "target": format!(">= {TARGET}"),
            "pass": med(&r) >= TARGET,
        })
    });
    serde_json::json!({
        "fs": case.fs,
        "tree": case.shape.key(),
        "cache": case.cache.key(),
        "files": case.files,
        "dirs": case.dirs,
        "bytes": case.bytes,
        "contenders": rows,
        "ringxfer_vs_faster_of_xcp_cpz": verdict,
        "ringxfer_vs_cp": ratios(contenders, case, &[Who::Cp]),
    })
}

/// The figures as one line of JSON, for scripts.
pub fn json(contenders: &[Contender], cases: &[Case], s: &Settings, load: [&str; 2]) {
    let json = serde_json::json!({
        "scale": s.scale,
        "rounds": s.rounds,
        "daemon_args": s.daemon_args,
        "load_before": load[0],
        "load_after": load[1],
        "cases": cases.iter().map(|c| case_json(contenders, c)).collect::<Vec<_>>(),
    });
    println!("RESULT_JSON {json}");
}
