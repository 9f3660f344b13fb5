//! The figures: a row per contender, the ratios of ringxfer over TLS to
//! rsync over ssh (issue 18's targets), to its own plaintext push and to
//! openssl's bare TLS copy (its floor), round by round, and a JSON line per
//! contender.

use crate::lineup::{Entry, Sample};
use crate::support::peers::fmt_spread;
use crate::support::{fmt_list, median, GIB};

/// What a ratio must be to meet its target.
#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    Below(f64),
}

impl Target {
    fn passes(self, v: f64) -> bool {
        match self {
            Target::AtLeast(t) => v >= t,
            Target::Below(t) => v < t,
        }
    }

    fn describe(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {t:.1}"),
            Target::Below(t) => format!("< {t:.1}"),
        }
    }
}

/// Subject over peer, each round.
struct Check {
    key: String,
    label: String,
    per_round: Vec<f64>,
    target: Option<Target>,
}

fn med(v: &[f64]) -> f64 {
    median(v.to_vec()).unwrap_or(f64::NAN)
}

/// Throughput (the peer's time over the subject's) and CPU per GiB of
/// both ends (the subject's over the peer's) of `subject` against `peer`,
/// when both ran.
fn compare(
    entries: &[Entry],
    samples: &[Vec<Sample>],
    (subject, peer): (&str, &str),
    targets: [Option<Target>; 2],
) -> Vec<Check> {
    let find = |k: &str| entries.iter().position(|e| e.key == k);
    let (Some(s), Some(p)) = (find(subject), find(peer)) else {
        return Vec::new();
    };
    let pairs = || samples[s].iter().zip(&samples[p]);
    let (a, b) = (entries[s].label, entries[p].label);
    vec![
        Check {
            key: format!("{subject}_vs_{peer}"),
            label: format!("{a} / {b}, GiB/s"),
            per_round: pairs().map(|(x, y)| y.secs / x.secs).collect(),
            target: targets[0],
        },
        Check {
            key: format!("{subject}_vs_{peer}_cpu"),
            label: format!("{a} / {b}, CPU/GiB both ends"),
            per_round: pairs()
                .map(|(x, y)| x.total_cpu() / y.total_cpu())
                .collect(),
            target: targets[1],
        },
    ]
}

fn checks(entries: &[Entry], samples: &[Vec<Sample>]) -> Vec<Check> {
    let issue = [Some(Target::AtLeast(2.0)), Some(Target::Below(0.5))];
    let mut out = compare(entries, samples, ("ringxfer_tls", "rsync_ssh"), issue);
    for peer in [
        "ringxfer_tls_streams",
        "ringxfer_plain",
        "rsync_daemon",
        "openssl_tls",
    ] {
        out.extend(compare(
            entries,
            samples,
            ("ringxfer_tls", peer),
            [None, None],
        ));
    }
    out
}

/// A contender's figures per round: GiB/s, seconds, CPU s/GiB of each end.
struct Row {
    gibps: Vec<f64>,
    secs: Vec<f64>,
    send: Vec<f64>,
    recv: Vec<f64>,
    total: Vec<f64>,
}

fn row(samples: &[Sample], size: u64) -> Row {
    let gib = size as f64 / GIB;
    let per = |f: fn(&Sample) -> f64| samples.iter().map(f).map(|v| v / gib).collect();
    Row {
        gibps: samples.iter().map(|s| gib / s.secs).collect(),
        secs: samples.iter().map(|s| s.secs).collect(),
        send: per(|s| s.send_cpu),
        recv: per(|s| s.recv_cpu),
        total: per(Sample::total_cpu),
    }
}

/// Prints the table and the ratios, then a JSON line per contender and
/// one for the ratios.
pub fn report(entries: &[Entry], samples: &[Vec<Sample>], size: u64, rounds: usize) {
    println!();
    println!("results: {size} bytes, {rounds} round(s); median [min-max] over rounds");
    println!(
        "  {:<32} {:>18} {:>7} {:>18} {:>18} {:>9}",
        "contender", "GiB/s", "s", "send CPU s/GiB", "recv CPU s/GiB", "sum"
    );
    let rows: Vec<Row> = samples.iter().map(|s| row(s, size)).collect();
    for (e, r) in entries.iter().zip(&rows) {
        println!(
            "  {:<32} {:>18} {:>7.3} {:>18} {:>18} {:>9.3}",
            e.label,
            fmt_spread(&r.gibps),
            med(&r.secs),
            fmt_spread(&r.send),
            fmt_spread(&r.recv),
            med(&r.total)
        );
    }
    let checks = checks(entries, samples);
    println!("  ratios within each round, median [min-max]; issue 18's targets: ringxfer with TLS in user space");
    println!("  at least 2x rsync over ssh's throughput, at under half its CPU per GiB (both ends summed):");
    for k in &checks {
        let ratio = med(&k.per_round);
        let verdict = match k.target {
            Some(t) => format!(
                "target {} {}",
                t.describe(),
                if t.passes(ratio) { "PASS" } else { "FAIL" }
            ),
            None => "(info)".into(),
        };
        println!(
            "    {:<62} {:>17}  {verdict}  [rounds {}]",
            k.label,
            fmt_spread(&k.per_round),
            fmt_list(&k.per_round)
        );
    }
    println!();
    json(entries, &rows, &checks, size, rounds);
}

fn spread(v: &[f64]) -> serde_json::Value {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    serde_json::json!({ "median": med(v), "min": min, "max": max, "rounds": v })
}

fn json(entries: &[Entry], rows: &[Row], checks: &[Check], size: u64, rounds: usize) {
    let load = crate::support::loadavg();
    for (e, r) in entries.iter().zip(rows) {
        let line = serde_json::json!({
            "bench": "remote",
            "name": e.key,
            "label": e.label,
            "size_bytes": size,
            "rounds": rounds,
            "gib_per_s": spread(&r.gibps),
            "secs": spread(&r.secs),
            "cpu_s_per_gib_sender": spread(&r.send),
            "cpu_s_per_gib_receiver": spread(&r.recv),
            "cpu_s_per_gib_both": spread(&r.total),
            "load_at_end": load,
        });
        println!("RESULT_JSON {line}");
    }
    let checks: Vec<serde_json::Value> = checks
        .iter()
        .map(|k| {
            serde_json::json!({
                "name": k.key,
                "label": k.label,
                "ratio": spread(&k.per_round),
                "target": k.target.map(Target::describe),
                "pass": k.target.map(|t| t.passes(med(&k.per_round))),
            })
        })
        .collect();
    let line = serde_json::json!({ "bench": "remote", "checks": checks, "load_at_end": load });
    println!("RESULT_JSON {line}");
}
