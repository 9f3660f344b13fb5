//! Throughput of ringxfer against its peers, measured in one run.
//!
//! ```text
//! cargo bench --bench throughput
//! RINGXFER_BENCH_SIZE=256MiB RINGXFER_BENCH_ROUNDS=5 cargo bench --bench throughput
//! RINGXFER_BENCH_MEMORY=recycled cargo bench --bench throughput      # fresh, recycled, both (default)
//! RINGXFER_BENCH_DAEMON_ARGS="--pipes 64 --chunks-per-job 8" cargo bench --bench throughput
//! RINGXFER_BENCH_CONTENDERS=daemon_send,sendfile \
//!   RINGXFER_BENCH_SEND_DAEMONS="--pipe-size 64KiB; --pipe-size 256KiB --chunks-per-job 4" \
//!   cargo bench --bench throughput
//! ```
//!
//! A. File copy with the page cache hot: the daemon (`ringxferd`, spawned on a
//!    private socket), the engine embedded in this process, `std::io::copy`
//!    (copy_file_range(2) on Linux), a read/write loop with a 1 MiB buffer,
//!    bare splice(2) loops through a 1 MiB and a 64 KiB pipe, and `cp`, `xcp`
//!    and `cpz` run as users run them (each skipped, with a note, where it is
//!    not installed). The target: the daemon at least 1.0x the best of cp and
//!    xcp, in both memory states.
//! B. File to a loopback TCP socket: the daemon against a sendfile(2) loop;
//!    target: at least 1.0x its throughput at no more CPU per GiB.
//!    RINGXFER_BENCH_SEND_DAEMONS starts more daemons, one for each set of
//!    flags (sets separated by `;`, e.g. pipe sizes and chunks per job), that
//!    race in this group beside the first (which has
//!    RINGXFER_BENCH_DAEMON_ARGS).
//!
//! RINGXFER_BENCH_CONTENDERS (keys, comma-separated; a key also names those
//! it starts with followed by `_`: `daemon` is every daemon row) limits the
//! run to some contenders; the keys are those of the JSON line.
//!
//! Memory states (support/peers.rs): "fresh" starts each run 6 s
//! (RINGXFER_BENCH_FRESH_WAIT) after the previous copy's destination was
//! deleted, so this VM has given those pages back to its host and the run
//! pays to fault its destination's page cache back in; "recycled" starts at
//! once, on the pages just freed. A round runs every contender in each state
//! asked for. What a recycled copy meets depends on the copy before it (one
//! that wrote large folios leaves high-order blocks behind, cp's 64 KiB
//! pieces do not), which the balanced order spreads over the rounds: each
//! contender follows every other equally often (`turn_order`).
//!
//! These machines are shared and noisy, so: every contender runs once
//! unmeasured first, then the contenders take turns round by round (in a
//! balanced order), and the verdicts are ratios within a round. Before each
//! run the previous destination is deleted (and the file system synced), so
//! every contender pays the same page-cache allocation for its destination.
//! Every result is checked (size, first and last 4 KiB), so a broken transfer
//! cannot look fast.
//!
//! CPU is user + system time per GiB moved: `getrusage(RUSAGE_SELF)` deltas
//! of this process for in-process contenders (the embedded engine's thread and
//! any io_uring workers included), `RUSAGE_CHILDREN` deltas for the programs,
//! and for a daemon its utime + stime (its CPU-time clock) plus this
//! process's own delta (the client stub). In the TCP cases the receiver
//! thread's CPU, measured with `RUSAGE_THREAD` inside it, is subtracted, so
//! only the sending side is counted.

#[path = "../support/mod.rs"]
mod support;

mod bench;
mod lineup;
mod report;

use std::path::Path;
use std::time::{Duration, Instant};

use ringxfer::embedded::EmbeddedEngine;
use ringxfer_ipc::Client;

use bench::{make_source, Bench, DaemonConn, Edges, Sample};
use lineup::{Contender, Entry, Group};
use support::peers::{env_memory, print_memory, Memory};
use support::{
    bench_dir, daemon_binary, disk_space, env_daemon_args, env_rounds, env_size, fs_type,
    mem_available, print_daemon, print_host, Daemon, DaemonCpu, Receiver, Result, GIB,
};

/// The read/write loop's buffer.
const BUF_SIZE: usize = 1 << 20;

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter here.
    support::exit("throughput", run());
}

// ---------------------------------------------------------------------------
// Settings

struct Settings {
    size: u64,
    rounds: usize,
    daemon_args: Vec<String>,
    /// The flags of each further daemon racing in the send group.
    send_daemons: Vec<Vec<String>>,
    memory: Vec<Memory>,
    only: Option<Vec<String>>,
}

fn settings() -> Result<Settings> {
    let send_daemons = std::env::var("RINGXFER_BENCH_SEND_DAEMONS")
        .map(|s| {
            s.split(';')
                .map(|set| set.split_whitespace().map(String::from).collect::<Vec<_>>())
                .filter(|set| !set.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let only = std::env::var("RINGXFER_BENCH_CONTENDERS").ok().map(|s| {
        s.split(',')
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect()
    });
    Ok(Settings {
        size: env_size("RINGXFER_BENCH_SIZE", 1 << 30)?,
        rounds: env_rounds()?,
        daemon_args: env_daemon_args(),
        send_daemons,
        memory: env_memory()?,
        only,
    })
}

/// The file system type of `dir`, with a warning where copy_file_range may
/// reflink rather than copy.
fn fs_type_note(dir: &Path) -> String {
    let t = fs_type(dir);
    match t.as_str() {
        "xfs" | "btrfs" => format!("{t} (copy_file_range may reflink!)"),
        _ => t,
    }
}

// ---------------------------------------------------------------------------

/// Checks there is room for the bench, and says what it will measure on
/// which machine.
fn intro(cfg: &Settings, bin: &Path, dir: &Path, notes: &[String]) -> Result<()> {
    let gib = cfg.size as f64 / GIB;
    if let Some((_, free)) = disk_space(dir) {
        if free < cfg.size.saturating_mul(3) {
            return Err(format!(
                "{} has {:.2} GiB free; this size needs about {:.2} GiB",
                dir.display(),
                free as f64 / GIB,
                3.0 * gib
            ));
        }
    }
    let mem = mem_available();

    println!("ringxfer throughput bench");
    print_host(mem);
    println!(
        "  size {} bytes ({gib:.3} GiB), {} measured round(s) after 1 warm-up round (recycled memory)",
        cfg.size, cfg.rounds
    );
    print_memory(&cfg.memory);
    println!("  dir {} ({})", dir.display(), fs_type_note(dir));
    print_daemon(bin, &cfg.daemon_args);
    for (i, flags) in cfg.send_daemons.iter().enumerate() {
        println!("  send daemon {}: {}", i + 1, flags.join(" "));
    }
    for n in notes {
        println!("  note: {n}");
    }
    println!("  note: std::io::copy between two Files uses copy_file_range(2) on Linux (an in-kernel copy)");
    println!("  note: CPU = user+sys; daemon rows = the daemon's CPU + this process's (client stub); TCP rows exclude the receiver thread");
    if let Some(m) = mem {
        if m < cfg.size.saturating_mul(3) {
            println!(
                "  WARNING: MemAvailable is below 3x the size: the page cache may not stay hot"
            );
        }
    }

    Ok(())
}

/// Runs each contender once, group by group, in round `round`'s balanced
/// order (`turn_order`); keeps the samples in `out` unless this is the warm-up.
fn pass(
    bench: &mut Bench,
    entries: &[Entry],
    label: &str,
    memory: Memory,
    round: usize,
    mut out: Option<&mut Vec<Vec<Sample>>>,
) -> Result<()> {
    for group in [Group::Copy, Group::Send] {
        let idx: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].group == group)
            .collect();
        for k in support::peers::turn_order(idx.len(), round) {
            let i = idx[k];
            let e = &entries[i];
            bench.prepare(group, memory)?;
            let s = bench.run(e)?;
            let gib = bench.want.size as f64 / GIB;
            println!(
                "  {label:<11} {:<8} {:<44} {:>6.2} GiB/s {:>7.3} s  cpu {:.3} s/GiB{}",
                memory.name(),
                e.name,
                gib / s.secs,
                s.secs,
                s.cpu / gib,
                if bench.last_note.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", bench.last_note)
                }
            );
            if let Some(out) = out.as_deref_mut() {
                out[i].push(s);
            }
        }
    }
    Ok(())
}

/// The warm-up round, then `cfg.rounds` measured ones, each running every
/// contender in each memory state: samples[state][entry][round].
fn measure(bench: &mut Bench, cfg: &Settings, entries: &[Entry]) -> Result<Vec<Vec<Vec<Sample>>>> {
    let mut samples = vec![vec![Vec::new(); entries.len()]; cfg.memory.len()];
    pass(bench, entries, "warm-up", Memory::Recycled, 0, None)?;
    for round in 1..=cfg.rounds {
        let label = format!("round {round}/{}", cfg.rounds);
        for (s, &memory) in cfg.memory.iter().enumerate() {
            pass(bench, entries, &label, memory, round, Some(&mut samples[s]))?;
        }
    }
    bench.remove_prev()?;
    Ok(samples)
}

/// The daemons: the first with RINGXFER_BENCH_DAEMON_ARGS, then one for each
/// set of RINGXFER_BENCH_SEND_DAEMONS, each on its own socket.
fn start_daemons(cfg: &Settings, bin: &Path, dir: &Path) -> Result<Vec<DaemonConn>> {
    let mut out = Vec::new();
    for (i, flags) in std::iter::once(&cfg.daemon_args)
        .chain(&cfg.send_daemons)
        .enumerate()
    {
        let socket = dir.join(format!("d{i}.sock"));
        let daemon = Daemon::start(bin, &socket, flags)?;
        let client = Client::connect(&socket).map_err(|e| format!("connect to daemon {i}: {e}"))?;
        let cpu = DaemonCpu::new(daemon.pid());
        out.push(DaemonConn {
            client,
            cpu,
            _daemon: daemon,
        });
    }
    Ok(out)
}

fn run() -> Result<()> {
    let cfg = settings()?;
    let bin = daemon_binary()?;
    let (entries, notes) = lineup::lineup(&cfg.send_daemons, cfg.only.as_deref());
    if entries.is_empty() {
        return Err("RINGXFER_BENCH_CONTENDERS names no contender".into());
    }

    let tmp = bench_dir("throughput-")?;
    let dir = tmp.path().to_path_buf();

    intro(&cfg, &bin, &dir, &notes)?;
    let src = dir.join("source.bin");
    let t = Instant::now();
    let want = make_source(&src, cfg.size)?;
    println!(
        "  source written, synced and read once in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let daemons = start_daemons(&cfg, &bin, &dir)?;
    // The embedded engine runs only when it races: its thread would be idle.
    let embedded = if entries.iter().any(|e| e.c == Contender::EmbeddedCopy) {
        let (engine, stream) =
            EmbeddedEngine::start().map_err(|e| format!("start the embedded engine: {e}"))?;
        let client =
            Client::from_stream(stream).map_err(|e| format!("embedded engine handshake: {e}"))?;
        Some((engine, client))
    } else {
        None
    };
    let (engine, embedded_client) = embedded.unzip();
    let receiver = Receiver::start(Duration::from_secs(600), Edges::new)?;
    let mut buf = vec![0u8; BUF_SIZE];
    buf.fill(0xA5); // touch every page now, not while measuring

    let mut bench = Bench {
        dir: dir.clone(),
        src,
        want,
        daemons,
        embedded_client,
        receiver,
        buf,
        prev_dst: None,
        last_note: String::new(),
    };
    for (i, d) in bench.daemons.iter().enumerate() {
        print!("  daemon {i}: ");
        d.cpu.print_source("; = utime+stime of /proc/PID/stat");
    }

    let samples = measure(&mut bench, &cfg, &entries)?;
    let states: Vec<serde_json::Value> = cfg
        .memory
        .iter()
        .zip(&samples)
        .map(|(&m, s)| report::report(m, &entries, s, cfg.size))
        .collect();
    if let [fresh, recycled] = &samples[..] {
        if cfg.memory == [Memory::Fresh, Memory::Recycled] {
            report::memory_charge(&entries, fresh, recycled);
        }
    }
    println!();
    println!("  load at the end: {}", support::loadavg());
    print_json(&cfg, states);

    // Close the embedded engine's connection before joining its thread.
    bench.embedded_client = None;
    drop(engine);
    drop(bench);
    drop(tmp);
    Ok(())
}

/// The figures as one line of JSON, for scripts.
fn print_json(cfg: &Settings, states: Vec<serde_json::Value>) {
    let json = serde_json::json!({
        "size_bytes": cfg.size,
        "rounds": cfg.rounds,
        "daemon_args": cfg.daemon_args,
        "send_daemons": cfg.send_daemons,
        "load_at_end": support::loadavg(),
        "states": states,
    });
    println!("RESULT_JSON {json}");
}
