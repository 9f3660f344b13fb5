//! Many small files: `cp -r` against `ringxfer copy -r` through a daemon.
//!
//! ```text
//! cargo bench --bench many_files
//! RINGXFER_BENCH_FILES=2000 RINGXFER_BENCH_FILE_SIZE=64KiB RINGXFER_BENCH_ROUNDS=7 cargo bench --bench many_files
//! RINGXFER_BENCH_DIR=/mnt/scratch cargo bench --bench many_files   # another file system
//! ```
//!
//! The source is a tree of RINGXFER_BENCH_FILES (10,000) files of
//! RINGXFER_BENCH_FILE_SIZE (4 KiB) in directories of 100, written and synced
//! once. The daemon is the release `ringxferd`, started on a private socket;
//! the CLI is the release `ringxfer`, run as a separate process exactly as a
//! user would, so its start-up, connection and exit are counted.
//!
//! ext4 without a journal makes inode allocation many times slower for about
//! a minute after many files were deleted (it skips recently freed inodes),
//! so no copy is deleted while the bench runs: every run writes a new
//! directory, and they are all removed at the end. Before each run the file
//! system is synced, so neither contender pays for the other's writeback.
//! After one unmeasured run of each, the two take turns, the order swapping
//! every round, and the verdict is the median of the per-round ratios.
//! Every copy is checked: file count, and the bytes of every file.
//!
//! CPU is user + system seconds: the child's (rusage of reaped children) for
//! both, plus, for ringxfer, the daemon's (its CPU-time clock), which does
//! the other half of the work.

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use support::{DaemonCpu, Result};

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter here.
    support::exit("many_files", run());
}

struct Settings {
    files: u64,
    file_size: u64,
    rounds: usize,
    daemon_args: Vec<String>,
}

fn settings() -> Result<Settings> {
    let files = match std::env::var("RINGXFER_BENCH_FILES") {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("RINGXFER_BENCH_FILES={s:?}: want a whole number >= 1"))?,
        Err(_) => 10_000,
    };
    Ok(Settings {
        files,
        file_size: support::env_size("RINGXFER_BENCH_FILE_SIZE", 4096)?,
        rounds: support::env_rounds().map(|r| r.max(5))?,
        daemon_args: support::env_daemon_args(),
    })
}

/// Seconds to the millisecond: these runs take tens of milliseconds.
fn fmt3(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn sync_all() {
    // SAFETY: sync(2) takes nothing and cannot fail.
    unsafe { libc::sync() };
}

fn children_cpu() -> f64 {
    support::rusage(libc::RUSAGE_CHILDREN)
}

fn file_path(root: &Path, i: u64) -> PathBuf {
    root.join(format!("d{:03}", i / 100))
        .join(format!("f{i:05}"))
}

fn make_tree(root: &Path, s: &Settings) -> Result<()> {
    for i in 0..s.files {
        let path = file_path(root, i);
        if i % 100 == 0 {
            let dir = path.parent().ok_or("no parent")?;
            fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        }
        fs::write(&path, support::data::seeded_bytes(i, s.file_size))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    sync_all();
    Ok(())
}

/// Every file is there with the right bytes, and nothing else.
fn check_tree(root: &Path, s: &Settings, who: &str) -> Result<()> {
    let mut count = 0;
    for dir in fs::read_dir(root).map_err(|e| format!("{who}: read {}: {e}", root.display()))? {
        let dir = dir.map_err(|e| format!("{who}: {e}"))?.path();
        count += fs::read_dir(&dir)
            .map_err(|e| format!("{who}: read {}: {e}", dir.display()))?
            .count() as u64;
    }
    if count != s.files {
        return Err(format!(
            "{who}: {count} files in the copy, want {}",
            s.files
        ));
    }
    for i in 0..s.files {
        let path = file_path(root, i);
        let got = fs::read(&path).map_err(|e| format!("{who}: read {}: {e}", path.display()))?;
        if got != support::data::seeded_bytes(i, s.file_size) {
            return Err(format!("{who}: {} differs from its source", path.display()));
        }
    }
    Ok(())
}

/// One timed run of `cmd` (which must exit 0): wall seconds, and CPU seconds
/// of the command and of the daemon.
fn timed(mut cmd: Command, daemon: Option<&DaemonCpu>) -> Result<(f64, f64, f64)> {
    sync_all();
    let desc = format!("{cmd:?}");
    let cpu0 = children_cpu();
    let daemon0 = daemon.map(DaemonCpu::secs).transpose()?.unwrap_or(0.0);
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("run {desc}: {e}"))?;
    let wall = start.elapsed().as_secs_f64();
    let daemon1 = daemon.map(DaemonCpu::secs).transpose()?.unwrap_or(0.0);
    if !out.status.success() {
        return Err(format!(
            "{desc} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((wall, children_cpu() - cpu0, daemon1 - daemon0))
}

fn run() -> Result<()> {
    let s = settings()?;
    let cli = support::bin_override("ringxfer")?
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ringxfer")));
    let daemon_bin = support::daemon_binary()?;
    let dir = support::bench_dir("ringxfer-many-files-")?;
    let src = dir.path().join("src");

    println!("many files: cp -r vs ringxfer copy -r");
    support::print_host(support::mem_available());
    println!(
        "  {} files of {} in directories of 100, on {} at {}",
        s.files,
        ringxfer::size::format_bytes(s.file_size),
        support::fs_type(dir.path()),
        dir.path().display()
    );
    support::print_daemon(&daemon_bin, &s.daemon_args);
    make_tree(&src, &s)?;

    let socket = dir.path().join("ringxferd.sock");
    let daemon = support::Daemon::start(&daemon_bin, &socket, &s.daemon_args)?;
    let daemon_cpu = DaemonCpu::new(daemon.pid());

    let mut n = 0;
    let mut next_dst = |who: &str| {
        n += 1;
        dir.path().join(format!("{who}-{n}"))
    };
    let cp = |dst: &Path| {
        let mut c = Command::new("cp");
        c.arg("-r").arg(&src).arg(dst);
        c
    };
    let rx = |dst: &Path| {
        let mut c = Command::new(&cli);
        c.arg("--socket")
            .arg(&socket)
            .arg("--daemon-only")
            .arg("copy")
            .arg("-r")
            .arg(&src)
            .arg(dst);
        c
    };

    // Unmeasured: warms the page cache, the daemon, the binaries; checked.
    let warm_cp = next_dst("cp");
    timed(cp(&warm_cp), None)?;
    check_tree(&warm_cp, &s, "cp -r")?;
    let warm_rx = next_dst("rx");
    timed(rx(&warm_rx), Some(&daemon_cpu))?;
    check_tree(&warm_rx, &s, "ringxfer copy -r")?;

    let (mut cp_wall, mut rx_wall, mut cp_cpu, mut rx_cpu, mut rxd_cpu, mut ratios) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for round in 0..s.rounds {
        let mut one = |is_rx: bool| -> Result<()> {
            let dst = next_dst(if is_rx { "rx" } else { "cp" });
            if is_rx {
                let (w, c, d) = timed(rx(&dst), Some(&daemon_cpu))?;
                rx_wall.push(w);
                rx_cpu.push(c);
                rxd_cpu.push(d);
                check_tree(&dst, &s, "ringxfer copy -r")
            } else {
                let (w, c, _) = timed(cp(&dst), None)?;
                cp_wall.push(w);
                cp_cpu.push(c);
                check_tree(&dst, &s, "cp -r")
            }
        };
        let rx_first = round % 2 == 0;
        one(rx_first)?;
        one(!rx_first)?;
        ratios.push(rx_wall[round] / cp_wall[round]);
    }
    drop(daemon);

    report(
        &s,
        &Figures {
            cp_wall,
            rx_wall,
            cp_cpu,
            rx_cpu,
            rxd_cpu,
            ratios,
        },
    );
    // Removing every copy is what makes the next minute's inode allocation
    // slow on this file system; it is the last thing the bench does.
    drop(dir);
    Ok(())
}

/// What the measured rounds gave, one entry per round.
struct Figures {
    cp_wall: Vec<f64>,
    rx_wall: Vec<f64>,
    cp_cpu: Vec<f64>,
    rx_cpu: Vec<f64>,
    rxd_cpu: Vec<f64>,
    ratios: Vec<f64>,
}

fn report(s: &Settings, f: &Figures) {
    let Figures {
        cp_wall,
        rx_wall,
        cp_cpu,
        rx_cpu,
        rxd_cpu,
        ratios,
    } = f;
    let med = |v: &[f64]| support::median(v.to_vec()).unwrap_or(f64::NAN);
    println!("  rounds: {} (order swaps each round)", s.rounds);
    println!(
        "  cp -r            wall s: {}  median {:.3}  CPU s median {:.3}",
        fmt3(cp_wall),
        med(cp_wall),
        med(cp_cpu)
    );
    println!(
        "  ringxfer copy -r wall s: {}  median {:.3}  CPU s median {:.3} CLI + {:.3} daemon",
        fmt3(rx_wall),
        med(rx_wall),
        med(rx_cpu),
        med(rxd_cpu)
    );
    println!(
        "  ringxfer / cp wall time per round: {}  median {:.2} ({})",
        support::fmt_list(ratios),
        med(ratios),
        if med(ratios) <= 1.0 {
            "ringxfer at least as fast"
        } else {
            "ringxfer slower"
        }
    );
    // Rounds where the file system itself was slow (cp well above its best,
    // as after someone deleted many files: see the top of this file) say
    // little about either contender; the verdict over the others is shown
    // apart.
    let best_cp = cp_wall.iter().copied().fold(f64::INFINITY, f64::min);
    let clean: Vec<f64> = ratios
        .iter()
        .zip(cp_wall.iter())
        .filter(|(_, &cp)| cp <= 1.5 * best_cp)
        .map(|(&r, _)| r)
        .collect();
    if clean.len() < ratios.len() {
        println!(
            "  rounds with cp within 1.5x of its best ({:.3} s): {} of {}, ratio median {:.2}; \
             the others ran while the file system was slow to allocate inodes",
            best_cp,
            clean.len(),
            ratios.len(),
            med(&clean)
        );
    }
    println!(
        "  files per second (median): cp {:.0}, ringxfer {:.0}",
        s.files as f64 / med(cp_wall),
        s.files as f64 / med(rx_wall)
    );
}
