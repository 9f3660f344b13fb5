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
//! the order rotating from round to round. Per contender: wall seconds,
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
mod tree;

use std::path::{Path, PathBuf};
use std::time::Instant;

use fresh::{FsKind, Scratch};
use lineup::{Contender, Ringxfer, Sample};
use support::cache::{cached_fraction, drop_caches, sync_all};
use support::{DaemonCpu, Result};
use tree::{Pool, Shape, Tree};

/// Rounds unless RINGXFER_BENCH_ROUNDS says otherwise.
const DEFAULT_ROUNDS: usize = 5;
/// The smallest image: sparse, so only what is written takes room.
const MIN_IMAGE: u64 = 16 << 30;
/// Source files whose residency is checked before each run.
const RESIDENCY_SAMPLE: usize = 64;

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter here.
    support::exit("many_files", run());
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cache {
    Hot,
    Cold,
}

impl Cache {
    pub fn key(self) -> &'static str {
        match self {
            Cache::Hot => "hot",
            Cache::Cold => "cold",
        }
    }
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

/// What every round of every case uses.
struct Ctx {
    base: PathBuf,
    contenders: Vec<Contender>,
    rx: Ringxfer,
    pool: Pool,
    rounds: usize,
    /// Rounds made so far: names the images.
    made: usize,
}

/// The figures of one file system, tree and cache state.
pub struct Case {
    /// The file system's name, or "dir" for a directory without one.
    pub fs: &'static str,
    pub shape: Shape,
    pub cache: Cache,
    pub tree: String,
    pub files: usize,
    pub dirs: usize,
    pub bytes: u64,
    /// samples[contender][round]
    pub samples: Vec<Vec<Sample>>,
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

/// The image size for `tree`: room for the source and every copy, and
/// inodes for them at ext4's default of one per 16 KiB.
fn image_size(tree: &Tree, copies: usize) -> u64 {
    let entries = (tree.files.len() + tree.dirs.len() + 1) as u64;
    let copies = copies as u64 + 1;
    let data = copies * (tree.bytes + entries * 4096);
    let inodes = copies * entries * (16 << 10);
    (data.max(inodes) * 3 / 2).max(MIN_IMAGE)
}

/// Fails early when the disk under the images cannot hold a round.
fn check_room(base: &Path, tree: &Tree, copies: usize) -> Result<()> {
    let entries = (tree.files.len() + tree.dirs.len()) as u64;
    let need = (copies as u64 + 1) * (tree.bytes + entries * 4096) * 5 / 4 + (1 << 30);
    match support::disk_space(base) {
        Some((_, free)) if free < need => Err(format!(
            "{} has {} free; a round of the {} tree needs about {}",
            base.display(),
            ringxfer::size::format_bytes(free),
            tree.shape.key(),
            ringxfer::size::format_bytes(need)
        )),
        _ => Ok(()),
    }
}

/// The warm-up round and the measured ones of one case.
fn measure(ctx: &mut Ctx, fs: FsKind, tree: &Tree, cache: Cache) -> Result<Case> {
    check_room(&ctx.base, tree, ctx.contenders.len())?;
    let fs_name = if fresh::can_mount() { fs.key() } else { "dir" };
    println!();
    println!(
        "{fs_name} / {} ({}) / {}:",
        tree.shape.key(),
        tree.describe(),
        cache.key()
    );
    let mut samples = vec![Vec::new(); ctx.contenders.len()];
    for round in 0..=ctx.rounds {
        let got = one_round(ctx, fs, tree, cache, round)?;
        if round > 0 {
            for (s, g) in samples.iter_mut().zip(got) {
                s.push(g);
            }
        }
    }
    Ok(Case {
        fs: fs_name,
        shape: tree.shape,
        cache,
        tree: tree.describe(),
        files: tree.files.len(),
        dirs: tree.dirs.len() + 1,
        bytes: tree.bytes,
        samples,
    })
}

/// One round on a fresh file system: the source written, then every
/// contender's copy, timed and checked. Round 0 is the warm-up.
fn one_round(
    ctx: &mut Ctx,
    fs: FsKind,
    tree: &Tree,
    cache: Cache,
    round: usize,
) -> Result<Vec<Sample>> {
    let t = Instant::now();
    ctx.made += 1;
    let size = image_size(tree, ctx.contenders.len());
    let scratch = Scratch::new(&ctx.base, ctx.made, fs, size)?;
    let src = scratch.path().join("src");
    tree.write(&src, &ctx.pool)?;
    sync_all();
    if cache == Cache::Hot {
        tree.read_all(&src)?;
    }
    let setup = t.elapsed().as_secs_f64();
    let sample_files = tree.some_files(&src, RESIDENCY_SAMPLE);
    let n = ctx.contenders.len();
    let mut out = vec![None; n];
    let mut line = Vec::new();
    for k in 0..n {
        let i = (k + round) % n;
        let c = &ctx.contenders[i];
        let dst = scratch.path().join(c.who.key());
        prepare(cache, &sample_files)?;
        let used0 = scratch.used();
        let mut sample = c.run(&ctx.rx, &src, &dst)?;
        sync_all();
        if let (Some(a), Some(b)) = (used0, scratch.used()) {
            sample.disk = b.saturating_sub(a);
        }
        tree.check(&dst, &ctx.pool, c.who.label())?;
        line.push(format!("{} {:.3} s", c.who.key(), sample.wall));
        out[i] = Some(sample);
    }
    let label = match round {
        0 => "warm-up".to_string(),
        r => format!("round {r}/{}", ctx.rounds),
    };
    if round == 0 {
        println!("  round file system: {}", scratch.describe());
    }
    drop(scratch);
    println!(
        "  {label:<11} {}  (fs made, source written in {setup:.1} s; round {:.1} s)",
        line.join(", "),
        t.elapsed().as_secs_f64()
    );
    Ok(out.into_iter().flatten().collect())
}

/// Hot: the file system synced, the source checked to be cached. Cold:
/// the page cache dropped, the source checked to be out of it.
fn prepare(cache: Cache, sample_files: &[PathBuf]) -> Result<()> {
    match cache {
        Cache::Hot => sync_all(),
        Cache::Cold => drop_caches().map_err(|e| format!("drop_caches: {e}"))?,
    }
    let cached = cached_fraction(sample_files.iter().map(PathBuf::as_path));
    match (cache, cached) {
        (Cache::Hot, Some(f)) if f < 0.99 => println!(
            "  WARNING: only {:.1}% of a sample of the source is cached before a hot run",
            f * 100.0
        ),
        (Cache::Cold, Some(f)) if f > 0.01 => println!(
            "  WARNING: {:.1}% of a sample of the source is still cached after drop_caches",
            f * 100.0
        ),
        _ => {}
    }
    Ok(())
}
