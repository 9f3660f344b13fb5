//! A sparse file: `ringxfer copy` against `cp --sparse=auto`, `xcp` and
//! `cpz`, in time and in the blocks each destination allocates.
//!
//! ```text
//! cargo bench --bench sparse
//! RINGXFER_BENCH_SIZE=4GiB RINGXFER_BENCH_SPARSE_DATA=4MiB RINGXFER_BENCH_ROUNDS=6 cargo bench --bench sparse
//! RINGXFER_BENCH_COPY_ARGS="--sparse=always" cargo bench --bench sparse   # flags after `ringxfer copy`
//! RINGXFER_BENCH_REPEAT=21 cargo bench --bench sparse                      # runs per turn (9)
//! ```
//!
//! The source is RINGXFER_BENCH_SIZE (1 GiB) long and holds
//! RINGXFER_BENCH_SPARSE_DATA (1 MiB) of data in 16 pieces spread from its
//! first byte to its last; the rest is holes. The target (issue 16): the
//! copy allocates under 2 MiB (st_blocks * 512) and is no slower than cp.
//!
//! The CLI is the release `ringxfer`, run as a user runs it, against a
//! `ringxferd` on a private socket; the others are found on PATH or in
//! ~/.cargo/bin, each skipped with a note where it is not installed. After
//! one unmeasured run of each, they take turns round by round, in a
//! balanced order (each first once and after every other equally often:
//! `turn_order` in support/peers.rs). A turn is RINGXFER_BENCH_REPEAT (9)
//! runs, whose medians are the turn's figures: a copy of 2 ms is about a
//! quarter process start-up, whose noise one run per turn measured more
//! than the copy. The time verdict is the median of the per-round ratios
//! to cp. Before each run the previous destination is deleted and the file
//! system synced. Every copy is checked: its size, every data piece, and a block in
//! the middle of every hole reads as zeros.
//!
//! CPU is user + system seconds of the program (rusage of reaped children),
//! plus, for ringxfer, the daemon's (its CPU-time clock).

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::peers::{find_program, fmt_spread, run_timed};
use support::{DaemonCpu, Result, GIB};

/// The pieces of data in the source.
const PIECES: u64 = 16;
/// At most this many bytes may a copy allocate (issue 16).
const ALLOC_TARGET: u64 = 2 << 20;

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter here.
    support::exit("sparse", run());
}

struct Settings {
    size: u64,
    data: u64,
    rounds: usize,
    /// Runs a turn (see the module's text).
    repeat: usize,
    daemon_args: Vec<String>,
    copy_args: Vec<String>,
}

fn settings() -> Result<Settings> {
    let s = Settings {
        size: support::env_size("RINGXFER_BENCH_SIZE", 1 << 30)?,
        data: support::env_size("RINGXFER_BENCH_SPARSE_DATA", 1 << 20)?,
        rounds: support::env_rounds()?,
        repeat: match std::env::var("RINGXFER_BENCH_REPEAT") {
            Ok(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .ok_or_else(|| format!("RINGXFER_BENCH_REPEAT={v:?}: want a whole number >= 1"))?,
            Err(_) => 9,
        },
        daemon_args: support::env_daemon_args(),
        copy_args: std::env::var("RINGXFER_BENCH_COPY_ARGS")
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
    };
    let piece = s.data / PIECES;
    if piece == 0 || !piece.is_multiple_of(4096) || s.data > s.size / 4 {
        return Err(format!(
            "RINGXFER_BENCH_SPARSE_DATA must be {PIECES} pieces of whole 4 KiB blocks and at most a quarter of RINGXFER_BENCH_SIZE ({} bytes)",
            s.size
        ));
    }
    Ok(s)
}

// ---------------------------------------------------------------------------
// The source and the checks of a copy

/// Where the source's data is: (offset, length) of each piece, the first at
/// 0 and the last ending at the end of the file, 4 KiB aligned.
fn pieces(s: &Settings) -> Vec<(u64, u64)> {
    let len = s.data / PIECES;
    (0..PIECES)
        .map(|i| {
            let off = if i == PIECES - 1 {
                s.size - len
            } else {
                (i * (s.size - len) / (PIECES - 1)) & !4095
            };
            (off, len)
        })
        .collect()
}

/// Writes the pieces, extends the file to its size with a hole, and syncs.
fn make_source(path: &Path, s: &Settings) -> Result<()> {
    let f = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    for (i, &(off, len)) in pieces(s).iter().enumerate() {
        f.write_all_at(&support::data::seeded_bytes(i as u64 + 1, len), off)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    f.set_len(s.size)
        .map_err(|e| format!("truncate {}: {e}", path.display()))?;
    f.sync_all()
        .map_err(|e| format!("fsync {}: {e}", path.display()))
}

/// Bytes the file system allocated for `path`.
fn allocated(path: &Path) -> Result<u64> {
    let m = fs::metadata(path).map_err(|e| format!("stat {}: {e}", path.display()))?;
    Ok(m.blocks() * 512)
}

/// The copy has the source's size, every piece, and zeros in the middle of
/// every hole.
fn check_copy(path: &Path, s: &Settings, who: &str) -> Result<()> {
    let f = support::open_sized(path, s.size).map_err(|e| format!("{who}: {e}"))?;
    let read = |off: u64, len: u64| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, off)
            .map_err(|e| format!("{who}: read {}: {e}", path.display()))?;
        Ok(buf)
    };
    let p = pieces(s);
    for (i, &(off, len)) in p.iter().enumerate() {
        if read(off, len)? != support::data::seeded_bytes(i as u64 + 1, len) {
            return Err(format!("{who}: piece {i} at {off} differs from the source"));
        }
    }
    for w in p.windows(2) {
        let hole = w[0].0 + w[0].1;
        let mid = (hole + (w[1].0 - hole) / 2) & !4095;
        if read(mid, 4096)?.iter().any(|&b| b != 0) {
            return Err(format!("{who}: the hole at {mid} is not zeros"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The contenders

struct Contender {
    name: String,
    /// The program and its flags before SRC DST.
    argv: Vec<std::ffi::OsString>,
    /// The daemon's CPU counts too.
    daemon: bool,
}

/// ringxfer, then cp, xcp and cpz where installed (notes for those not).
fn contenders(s: &Settings, socket: &Path) -> Result<(Vec<Contender>, Vec<String>)> {
    let cli = support::bin_override("ringxfer")?
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ringxfer")));
    let mut argv: Vec<std::ffi::OsString> = vec![
        cli.into(),
        "--socket".into(),
        socket.into(),
        // No --daemon-only: that would insist on a job, where a user's
        // `ringxfer copy` of a file with little hot data has the CLI copy
        // it (the daemon runs, so nothing falls back to an engine here).
        "copy".into(),
    ];
    argv.extend(s.copy_args.iter().map(Into::into));
    let mut out = vec![Contender {
        name: format!("ringxfer copy {}", s.copy_args.join(" "))
            .trim_end()
            .to_string(),
        argv,
        daemon: true,
    }];
    let mut notes = Vec::new();
    for (prog, flags, hint) in [
        ("cp", &["--sparse=auto"][..], "coreutils"),
        ("xcp", &["--no-progress"][..], "cargo install xcp"),
        ("cpz", &[][..], "cargo install cpz"),
    ] {
        let Some(path) = find_program(prog) else {
            notes.push(format!("{prog} is not installed ({hint}): skipped"));
            continue;
        };
        let mut argv: Vec<std::ffi::OsString> = vec![path.into()];
        argv.extend(flags.iter().map(Into::into));
        let name = std::iter::once(prog).chain(flags.iter().copied());
        out.push(Contender {
            name: name.collect::<Vec<_>>().join(" "),
            argv,
            daemon: false,
        });
    }
    Ok((out, notes))
}

/// One run's figures.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    cpu: f64,
    alloc: u64,
}

/// What the runs share.
struct Bench {
    dir: PathBuf,
    src: PathBuf,
    daemon_cpu: DaemonCpu,
    prev: Option<PathBuf>,
    n: usize,
}

impl Bench {
    /// A turn: `s.repeat` runs of `c`; the medians of their time and CPU,
    /// and the most any of them allocated.
    fn turn(&mut self, c: &Contender, s: &Settings) -> Result<Sample> {
        let mut runs = Vec::with_capacity(s.repeat);
        for _ in 0..s.repeat {
            runs.push(self.run(c, s)?);
        }
        let med = |f: fn(&Sample) -> f64| support::median(runs.iter().map(f).collect());
        Ok(Sample {
            secs: med(|x| x.secs).unwrap_or(f64::NAN),
            cpu: med(|x| x.cpu).unwrap_or(f64::NAN),
            alloc: runs.iter().map(|x| x.alloc).max().unwrap_or(0),
        })
    }

    fn run(&mut self, c: &Contender, s: &Settings) -> Result<Sample> {
        if let Some(prev) = self.prev.take() {
            fs::remove_file(&prev).map_err(|e| format!("remove {}: {e}", prev.display()))?;
        }
        syncfs(&self.dir)?;
        self.n += 1;
        let dst = self.dir.join(format!("dst-{}", self.n));
        self.prev = Some(dst.clone());
        let mut cmd = Command::new(&c.argv[0]);
        cmd.args(&c.argv[1..]).arg(&self.src).arg(&dst);
        let d0 = self.daemon_cpu.secs()?;
        let (secs, cpu) = run_timed(cmd)?;
        let daemon = if c.daemon {
            self.daemon_cpu.secs()? - d0
        } else {
            0.0
        };
        check_copy(&dst, s, &c.name)?;
        Ok(Sample {
            secs,
            cpu: cpu + daemon,
            alloc: allocated(&dst)?,
        })
    }
}

fn syncfs(dir: &Path) -> Result<()> {
    let d = OpenOptions::new()
        .read(true)
        .open(dir)
        .map_err(|e| format!("open {}: {e}", dir.display()))?;
    // SAFETY: `d` is an open descriptor for the whole call.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) } != 0 {
        return Err(format!(
            "syncfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------

fn run() -> Result<()> {
    let s = settings()?;
    let daemon_bin = support::daemon_binary()?;
    let dir = support::bench_dir("sparse-")?;
    let src = dir.path().join("source.img");
    let socket = dir.path().join("ringxferd.sock");
    let (list, notes) = contenders(&s, &socket)?;

    println!("sparse copy bench");
    support::print_host(support::mem_available());
    println!(
        "  source {} bytes ({:.2} GiB) with {} bytes of data in {PIECES} pieces, on {} at {}",
        s.size,
        s.size as f64 / GIB,
        s.data,
        support::fs_type(dir.path()),
        dir.path().display()
    );
    support::print_daemon(&daemon_bin, &s.daemon_args);
    for n in &notes {
        println!("  note: {n}");
    }
    make_source(&src, &s)?;
    println!("  source allocates {} bytes", allocated(&src)?);

    let daemon = support::Daemon::start(&daemon_bin, &socket, &s.daemon_args)?;
    let mut bench = Bench {
        dir: dir.path().to_path_buf(),
        src,
        daemon_cpu: DaemonCpu::new(daemon.pid()),
        prev: None,
        n: 0,
    };
    let mut samples = vec![Vec::new(); list.len()];
    for round in 0..=s.rounds {
        for i in support::peers::turn_order(list.len(), round) {
            let got = bench.turn(&list[i], &s)?;
            println!(
                "  {:<11} {:<26} {:>8.4} s  cpu {:.4} s  allocated {} bytes",
                if round == 0 {
                    "warm-up".to_string()
                } else {
                    format!("round {round}/{}", s.rounds)
                },
                list[i].name,
                got.secs,
                got.cpu,
                got.alloc
            );
            if round > 0 {
                samples[i].push(got);
            }
        }
    }
    drop(daemon);
    report(&list, &samples, s.repeat);
    println!("  load at the end: {}", support::loadavg());
    Ok(())
}

fn report(list: &[Contender], samples: &[Vec<Sample>], repeat: usize) {
    let med = |v: Vec<f64>| support::median(v).unwrap_or(f64::NAN);
    println!();
    println!(
        "results: median [min-max] over {} round(s) of {} runs a turn",
        samples[0].len(),
        repeat
    );
    println!(
        "  {:<26} {:>22} {:>9} {:>16}",
        "contender", "wall s", "CPU s", "allocated MiB"
    );
    for (c, v) in list.iter().zip(samples) {
        let secs: Vec<f64> = v.iter().map(|x| x.secs).collect();
        let alloc: Vec<f64> = v.iter().map(|x| x.alloc as f64 / 1048576.0).collect();
        println!(
            "  {:<26} {:>22} {:>9.3} {:>16}",
            c.name,
            fmt_spread3(&secs),
            med(v.iter().map(|x| x.cpu).collect()),
            fmt_spread(&alloc)
        );
    }
    let rx = &samples[0];
    let worst = rx.iter().map(|x| x.alloc).max().unwrap_or(0);
    println!(
        "  {} allocated at most {worst} bytes (target < {ALLOC_TARGET}): {}",
        list[0].name,
        if worst < ALLOC_TARGET { "PASS" } else { "FAIL" }
    );
    if let Some(cp) = list.iter().position(|c| c.name.starts_with("cp ")) {
        let ratios: Vec<f64> = rx
            .iter()
            .zip(&samples[cp])
            .map(|(a, b)| a.secs / b.secs)
            .collect();
        let r = med(ratios.clone());
        println!(
            "  {} / {}, wall time per round: {} (target <= 1.0): {}  [rounds {}]",
            list[0].name,
            list[cp].name,
            fmt_spread(&ratios),
            if r <= 1.0 { "PASS" } else { "FAIL" },
            support::fmt_list(&ratios)
        );
    }
}

/// As `fmt_spread`, to a tenth of a millisecond: these runs may take a
/// few of them.
fn fmt_spread3(v: &[f64]) -> String {
    let med = support::median(v.to_vec()).unwrap_or(f64::NAN);
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{med:.4} [{min:.4}-{max:.4}]")
}
