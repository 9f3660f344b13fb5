//! The figures of one memory state: a row per contender, and the targets of
//! issue 16 as ratios within each round (median, least, greatest).

use crate::bench::Sample;
use crate::lineup::{Contender, Entry, Group, Program as Prog};
use crate::support::peers::{fmt_spread, Memory};
use crate::support::{fmt_list, median, GIB};

/// What a check's ratio must be to pass.
#[derive(Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn passes(self, v: f64) -> bool {
        match self {
            Target::AtLeast(t) => v >= t,
            Target::AtMost(t) => v <= t,
        }
    }

    fn describe(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {t:.1}"),
            Target::AtMost(t) => format!("<= {t:.1}"),
        }
    }
}

/// What a check compares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Metric {
    /// Subject's GiB/s over the best peer's in the same round.
    Throughput,
    /// Subject's CPU per GiB over the thriftiest peer's in the same round.
    Cpu,
}

/// A ratio of a subject to the best of its peers, round by round.
pub struct Check {
    pub key: String,
    pub label: String,
    pub per_round: Vec<f64>,
    pub target: Option<Target>,
}

impl Check {
    fn ratio(&self) -> f64 {
        median(self.per_round.clone()).unwrap_or(f64::NAN)
    }
}

/// The ratio of `subject` to the best of `peers` in each round, or None when
/// either is not in this run.
fn compare(
    entries: &[Entry],
    samples: &[Vec<Sample>],
    subject: Contender,
    peers: &[Contender],
    metric: Metric,
    target: Option<Target>,
) -> Option<Check> {
    let find = |c: Contender| entries.iter().position(|e| e.c == c);
    let s = find(subject)?;
    let p: Vec<usize> = peers.iter().filter_map(|&c| find(c)).collect();
    if p.is_empty() {
        return None;
    }
    let per_round = (0..samples[s].len())
        .map(|r| {
            let best = p
                .iter()
                .map(|&i| match metric {
                    Metric::Throughput => samples[i][r].secs,
                    Metric::Cpu => samples[i][r].cpu,
                })
                .fold(f64::INFINITY, f64::min);
            match metric {
                // GiB/s over GiB/s: the best peer's time over the subject's.
                Metric::Throughput => best / samples[s][r].secs,
                Metric::Cpu => samples[s][r].cpu / best,
            }
        })
        .collect();
    let names: Vec<&str> = p.iter().map(|&i| entries[i].name.as_str()).collect();
    let keys: Vec<&str> = p.iter().map(|&i| entries[i].key.as_str()).collect();
    let (what, suffix) = match metric {
        Metric::Throughput => ("GiB/s", ""),
        Metric::Cpu => ("CPU/GiB", "_cpu"),
    };
    let peer = if names.len() > 1 {
        format!("best of ({})", names.join(", "))
    } else {
        names[0].to_string()
    };
    Some(Check {
        key: format!("{}_vs_{}{suffix}", entries[s].key, keys.join("_or_")),
        label: format!("{} / {peer}, {what}", entries[s].name),
        per_round,
        target,
    })
}

/// The targets of issue 16 this run can check, then comparisons for
/// information (no target).
pub fn checks(entries: &[Entry], samples: &[Vec<Sample>]) -> Vec<Check> {
    use Contender::*;
    let tput = Metric::Throughput;
    let one_up = Some(Target::AtLeast(1.0));
    let mut out = vec![compare(
        entries,
        samples,
        DaemonCopy,
        &[Program(Prog::Cp), Program(Prog::Xcp)],
        tput,
        one_up,
    )];
    for e in entries.iter().filter(|e| matches!(e.c, DaemonSend(_))) {
        out.push(compare(entries, samples, e.c, &[Sendfile], tput, one_up));
        out.push(compare(
            entries,
            samples,
            e.c,
            &[Sendfile],
            Metric::Cpu,
            Some(Target::AtMost(1.0)),
        ));
    }
    for peer in [
        Program(Prog::Cpz),
        EmbeddedCopy,
        SpliceLoop {
            pipe: 1 << 20,
            write: 1 << 20,
        },
        SpliceLoop {
            pipe: 1 << 20,
            write: 64 << 10,
        },
        SpliceLoop {
            pipe: 64 << 10,
            write: 64 << 10,
        },
        IoCopy,
    ] {
        out.push(compare(entries, samples, DaemonCopy, &[peer], tput, None));
    }
    out.into_iter().flatten().collect()
}

/// A contender's figures over the rounds of one memory state.
struct Row<'a> {
    e: &'a Entry,
    gibps: Vec<f64>,
    secs: Vec<f64>,
    cpu_per_gib: Vec<f64>,
}

fn rows<'a>(entries: &'a [Entry], samples: &[Vec<Sample>], size: u64) -> Vec<Row<'a>> {
    let gib = size as f64 / GIB;
    entries
        .iter()
        .zip(samples)
        .map(|(e, s)| Row {
            e,
            gibps: s.iter().map(|s| gib / s.secs).collect(),
            secs: s.iter().map(|s| s.secs).collect(),
            cpu_per_gib: s.iter().map(|s| s.cpu / gib).collect(),
        })
        .collect()
}

fn med(v: &[f64]) -> f64 {
    median(v.to_vec()).unwrap_or(f64::NAN)
}

/// Prints one memory state's table and checks; returns them as JSON.
pub fn report(
    memory: Memory,
    entries: &[Entry],
    samples: &[Vec<Sample>],
    size: u64,
) -> serde_json::Value {
    let rounds = samples.first().map_or(0, Vec::len);
    println!();
    println!(
        "results, {} memory: {size} bytes, {rounds} round(s); median [min-max] over rounds",
        memory.name()
    );
    println!(
        "  {:<46} {:>18} {:>8} {:>10}",
        "contender", "GiB/s", "s", "CPU s/GiB"
    );
    let rows = rows(entries, samples, size);
    for (group, title) in [
        (Group::Copy, "A. file copy, page cache hot"),
        (Group::Send, "B. file -> loopback TCP"),
    ] {
        let group: Vec<&Row<'_>> = rows.iter().filter(|r| r.e.group == group).collect();
        if group.is_empty() {
            continue;
        }
        println!("  {title}");
        for r in group {
            println!(
                "    {:<44} {:>18} {:>8.3} {:>10.3}",
                r.e.name,
                fmt_spread(&r.gibps),
                med(&r.secs),
                med(&r.cpu_per_gib)
            );
        }
    }
    let checks = checks(entries, samples);
    println!("  ratios within each round, median [min-max]:");
    for k in &checks {
        let verdict = match k.target {
            Some(t) => format!(
                "target {} {}",
                t.describe(),
                if t.passes(k.ratio()) { "PASS" } else { "FAIL" }
            ),
            None => "(info)".to_string(),
        };
        println!(
            "    {:<66} {:>17}  {verdict}  [rounds {}]",
            k.label,
            fmt_spread(&k.per_round),
            fmt_list(&k.per_round)
        );
    }
    json(memory, &rows, &checks)
}

fn json(memory: Memory, rows: &[Row<'_>], checks: &[Check]) -> serde_json::Value {
    let contenders: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.e.key,
                "label": r.e.name,
                "group": match r.e.group { Group::Copy => "copy", Group::Send => "send" },
                "gib_per_s": med(&r.gibps),
                "gib_per_s_rounds": r.gibps,
                "cpu_s_per_gib": med(&r.cpu_per_gib),
                "cpu_s_per_gib_rounds": r.cpu_per_gib,
            })
        })
        .collect();
    let checks: Vec<serde_json::Value> = checks
        .iter()
        .map(|k| {
            serde_json::json!({
                "name": k.key,
                "label": k.label,
                "ratio": k.ratio(),
                "per_round": k.per_round,
                "target": k.target.map(Target::describe),
                "pass": k.target.map(|t| t.passes(k.ratio())),
            })
        })
        .collect();
    serde_json::json!({
        "memory": memory.name(),
        "contenders": contenders,
        "checks": checks,
    })
}

/// Each copier's median time in fresh memory over its median in recycled
/// memory: how much this run met the VM's fresh-memory charge (near 1.0
/// for all: the host was not taking freed pages back while it ran).
pub fn memory_charge(entries: &[Entry], fresh: &[Vec<Sample>], recycled: &[Vec<Sample>]) {
    let secs = |v: &[Sample]| med(&v.iter().map(|s| s.secs).collect::<Vec<_>>());
    let parts: Vec<String> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.group == Group::Copy)
        .map(|(i, e)| format!("{} {:.2}", e.key, secs(&fresh[i]) / secs(&recycled[i])))
        .collect();
    if !parts.is_empty() {
        println!();
        println!(
            "fresh / recycled median time, each copier: {}",
            parts.join(", ")
        );
    }
}
