//! Many files: `ringxfer copy -r` against `cp -r`, `xcp -r` and `cpz`, on
//! four trees, with the page cache hot and cold, each round on a fresh file
//! system.
//!
//! ```text
//! cargo bench --bench many_files                                     # all trees, hot and cold, ext4
//! RINGXFER_BENCH_SCALE=0.2 RINGXFER_BENCH_ROUNDS=3 cargo bench --bench many_files   # quick
//! RINGXFER_BENCH_TREES=flat,mixed RINGXFER_BENCH_CACHE=hot cargo bench --bench many_files
//! RINGXFER_BENCH_FS=ext4,btrfs cargo bench --bench many_files        # btrfs: copies may reflink
//! RINGXFER_BENCH_CONTENDERS=ringxfer,cpz cargo bench --bench many_files
//! RINGXFER_BENCH_DAEMON_ARGS="--chunks-per-job 8" cargo bench --bench many_files
//! ```
//!
//! The trees (RINGXFER_BENCH_TREES, default all; RINGXFER_BENCH_SCALE, default
//! 1.0, multiplies their file and directory counts):
//! - flat: 10,000 files of 4 KiB in one directory;
//! - deep: 100,000 empty files, ten to a directory, the directories four
//!   levels deep with ten to a level (11,110 of them): metadata only;
//! - large: 1,000 files of 1 MiB;
//! - mixed: a source checkout, 60,000 files in 4,000 directories of varying
//!   depth, sizes log-normal (median 3 KiB, mean about 11 KiB, up to a few
//!   MiB, one in 50 empty), from a fixed seed.
//!
//! The contenders: the release `ringxfer` CLI (`--daemon-only copy -r`)
//! against a release `ringxferd` on a private socket, run as a user runs
//! it, start-up and exit counted; `cp -r`; `xcp -r --no-progress`; `cpz`.
//! The peers are found on PATH or in ~/.cargo/bin; one not installed is
//! skipped with the command that installs it (measured with coreutils 9.1,
//! `cargo install xcp --version 0.24.9 --locked` and `cargo install cpz
//! --version 3.2.1 --locked`). RINGXFER_BENCH_CONTENDERS
//! (ringxfer,cp,xcp,cpz) limits the run to some of them.
//!
//! What is measured, for each file system (RINGXFER_BENCH_FS: ext4, the
//! default, and btrfs), tree and cache state (RINGXFER_BENCH_CACHE: hot,
//! cold; both by default): RINGXFER_BENCH_ROUNDS (5) rounds after one
//! unmeasured warm-up round, each contender copying the tree once a round,
//! in a balanced order (each first once and after every other equally
//! often: `turn_order` in support/peers.rs). Per contender: wall seconds,
//! files per second, CPU seconds (user + system of the program, from the
//! rusage of reaped children; for ringxfer plus the daemon's, from its
//! CPU-time clock, io_uring workers included) and CPU microseconds per file,
//! and the bytes the copy took on the file system. The verdict is
//! ringxfer's speed over the faster of xcp and cpz in the same round, the
//! median of the per-round ratios; the target is at least 1.2. Every copy
//! is checked, and a bad one fails the bench: the same directories and
//! files and nothing else, every size, and the bytes of every file (flat,
//! large) or of every 97th (deep, mixed).
//!
//! The traps:
//! - The file system's history. ext4 creates files many times slower for
//!   about a minute after many were deleted, and an image that took a
//!   million files is 2-3x slower, so every round (the warm-up too) gets a
//!   file system of its own: a sparse image file (16 GiB, more for a large
//!   scale) next to `target/` (or under RINGXFER_BENCH_DIR), made with mkfs's
//!   defaults (ext4 with its inode tables and journal written now, not
//!   lazily while a round runs), on a loop device with direct I/O, the
//!   source written and synced; the contenders copy into new directories
//!   beside it; it is unmounted and deleted when the round ends. Loop
//!   devices need root; without it the rounds use directories on the file
//!   system of the bench directory, with a warning.
//! - Writeback. The file system is synced before every run and after it
//!   (outside the time), so no run pays for another's dirty pages; a copy's
//!   time ends when the program exits, as a user sees it.
//! - Cache residency. Hot: the source is read once (every directory listed,
//!   every file read) after it was written, and before each run a sample
//!   of its files is checked to be in the page cache (mincore). Cold: `sync;
//!   echo 3 > /proc/sys/vm/drop_caches` before each run (so the programs'
//!   own pages go too, the daemon's included), and the sample is checked to
//!   be out; without root the cold rounds are skipped. A warning is printed
//!   when a check finds otherwise.
//! - btrfs clones: there cp (--reflink=auto), xcp and cpz (copy_file_range)
//!   and ringxfer may share the source's extents rather than copy its
//!   bytes (all four did, in these versions), which makes the large
//!   tree a metadata copy; the "disk MiB" column (what the file system had
//!   in use more after the copy and a sync) shows who cloned.
//!
//! - Memory. This VM hands pages that stayed free for a few seconds back to
//!   its host (support/peers.rs), and a copy into such pages pays to fault
//!   them back: the state a run meets is not controlled here (the
//!   throughput bench measures both), which shows as the odd slow run of
//!   the large tree.
//!
//! With the defaults (all trees, hot and cold, ext4, 5 rounds) the bench
//! took 11 minutes on a 2-core VM with a neighbour's load of 3 to 6.

#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;

mod fresh;
mod lineup;
mod report;
mod rounds;
mod tree;

use std::path::{Path, PathBuf};
use std::time::Instant;

use fresh::FsKind;
use lineup::{Contender, Ringxfer};
use rounds::{measure, Cache, Case, Ctx};
use support::{DaemonCpu, Result};
use tree::{Pool, Shape};

/// Rounds unless RINGXFER_BENCH_ROUNDS says otherwise.
const DEFAULT_ROUNDS: usize = 5;

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter here.
    support::exit("many_files", run());
}

struct Settings {
    trees: Vec<Shape>,
    scale: f64,
    caches: Vec<Cache>,
    fss: Vec<FsKind>,
    rounds: usize,
    daemon_args: Vec<String>,
    only: Option<Vec<String>>,
}

/// The comma-separated keys of `name` (else `default`), each parsed by `parse`.
fn env_list<T>(name: &str, default: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>> {
    let s = std::env::var(name).unwrap_or_else(|_| default.into());
    let items: Vec<T> = s
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| parse(k).ok_or_else(|| format!("{name}={s:?}: {k:?} is not one of {default}")))
        .collect::<Result<_>>()?;
    if items.is_empty() {
        return Err(format!("{name}={s:?} names nothing"));
    }
    Ok(items)
}

fn settings() -> Result<Settings> {
    let scale = match std::env::var("RINGXFER_BENCH_SCALE") {
        Ok(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| format!("RINGXFER_BENCH_SCALE={s:?}: want a number above 0"))?,
        Err(_) => 1.0,
    };
    let rounds = match std::env::var("RINGXFER_BENCH_ROUNDS") {
        Ok(_) => support::env_rounds()?,
        Err(_) => DEFAULT_ROUNDS,
    };
    Ok(Settings {
        trees: env_list("RINGXFER_BENCH_TREES", "flat,deep,large,mixed", |k| {
            Shape::ALL.into_iter().find(|s| s.key() == k)
        })?,
        scale,
        caches: env_list("RINGXFER_BENCH_CACHE", "hot,cold", |k| {
            [Cache::Hot, Cache::Cold].into_iter().find(|c| c.key() == k)
        })?,
        fss: env_list("RINGXFER_BENCH_FS", "ext4", FsKind::parse)?,
        rounds,
        daemon_args: support::env_daemon_args(),
        only: std::env::var("RINGXFER_BENCH_CONTENDERS").ok().map(|s| {
            s.split(',')
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect()
        }),
    })
}

fn run() -> Result<()> {
    let s = settings()?;
    let cli = support::bin_override("ringxfer")?
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ringxfer")));
    let daemon_bin = support::daemon_binary()?;
    let (contenders, notes) = lineup::lineup(&cli, s.only.as_deref());
    if contenders.is_empty() {
        return Err("no contender to run".into());
    }
    let dir = support::bench_dir("ringxfer-many-files-")?;
    let load_before = support::loadavg();
    let caches = intro(&s, &dir, &daemon_bin, &contenders, &notes);

    let socket = dir.path().join("ringxferd.sock");
    let daemon = support::Daemon::start(&daemon_bin, &socket, &s.daemon_args)?;
    let cpu = DaemonCpu::new(daemon.pid());
    cpu.print_source("");
    let mut ctx = Ctx {
        base: dir.path().to_path_buf(),
        contenders,
        rx: Ringxfer { socket, cpu },
        pool: Pool::new(),
        rounds: s.rounds,
        made: 0,
    };
    let started = Instant::now();
    let mut cases = Vec::new();
    // Without loop mounts there is one file system, whatever was asked.
    let fss = if fresh::can_mount() {
        &s.fss[..]
    } else {
        &s.fss[..1]
    };
    for &fs in fss {
        for &shape in &s.trees {
            let tree = tree::build(shape, s.scale);
            for &cache in &caches {
                let case = measure(&mut ctx, fs, &tree, cache)?;
                report::case(&ctx.contenders, &case);
                cases.push(case);
            }
        }
    }
    drop(daemon);
    let load_after = support::loadavg();
    report::summary(&ctx.contenders, &cases);
    println!();
    println!(
        "  took {:.0} s; load before {load_before}, after {load_after}",
        started.elapsed().as_secs_f64()
    );
    report::json(&ctx.contenders, &cases, &s, [&load_before, &load_after]);
    drop(dir);
    Ok(())
}

/// Says what runs where; returns the cache states this run can measure.
fn intro(
    s: &Settings,
    dir: &tempfile::TempDir,
    daemon_bin: &Path,
    contenders: &[Contender],
    notes: &[String],
) -> Vec<Cache> {
    println!("many files: ringxfer copy -r against cp -r, xcp -r and cpz");
    support::print_host(support::mem_available());
    println!(
        "  trees {} at scale {}, cache {}, file systems {}; {} round(s) after a warm-up round",
        keys(&s.trees, |t| t.key()),
        s.scale,
        keys(&s.caches, |c| c.key()),
        keys(&s.fss, |f| f.key()),
        s.rounds
    );
    for c in contenders {
        println!(
            "  {:<17} {} ({})",
            c.who.label(),
            c.program.display(),
            c.version
        );
    }
    support::print_daemon(daemon_bin, &s.daemon_args);
    if support::peers::page_reporting() == Some(true) {
        println!("  note: this VM gives freed pages back to its host: a run into pages it took back is slower (not controlled here)");
    }
    for n in notes {
        println!("  note: {n}");
    }
    if fresh::can_mount() {
        println!(
            "  each round on a fresh loop-mounted file system, its image under {} ({})",
            dir.path().display(),
            support::fs_type(dir.path())
        );
        return s.caches.clone();
    }
    println!("  WARNING: not root: no loop mounts, so every round copies on the file system of");
    println!(
        "  WARNING: {} ({}), whatever its history (RINGXFER_BENCH_FS is ignored);",
        dir.path().display(),
        support::fs_type(dir.path())
    );
    println!("  WARNING: and no drop_caches: the cold rounds are skipped. Run as root to measure.");
    s.caches
        .iter()
        .copied()
        .filter(|&c| c == Cache::Hot)
        .collect()
}

fn keys<T>(v: &[T], key: impl Fn(&T) -> &'static str) -> String {
    v.iter().map(key).collect::<Vec<_>>().join(",")
}
