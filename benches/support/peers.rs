//! What the benches racing other programs share: finding those programs (cp,
//! xcp, cpz), timing one run of a program, and the two memory states of a VM
//! that hands freed pages back to its host.
//!
//! On such a VM (virtio-balloon free page reporting) a page freed and left
//! free for a few seconds goes back to the host, and the guest's next touch
//! of it faults to the host: the first copy into "fresh" memory pays for
//! every page of its destination's page cache, and pays more for the
//! high-order pages a large pipe load makes the page cache take (1 GiB: cp
//! 1.5 s fresh, 0.25 s with the pages a copy just freed). A bench that only
//! ever deletes one copy and starts the next measures only the "recycled"
//! state; both are real (a quiet machine meets the first, a busy one the
//! second), so the benches measure both, named explicitly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Result;

/// How long a freed page takes to go back to the host, unless
/// RINGXFER_BENCH_FRESH_WAIT (seconds) says otherwise: the kernel reports
/// free blocks of pageblock order 2 s after they were freed
/// (PAGE_REPORTING_DELAY), a part of each free list per pass, so a freed
/// GiB takes a few passes.
fn fresh_wait() -> Duration {
    std::env::var("RINGXFER_BENCH_FRESH_WAIT")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(6), Duration::from_secs_f64)
}

/// The memory a run's destination pages come from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Memory {
    /// Pages the host took back: the run starts `fresh_wait()` after the
    /// previous run's pages were freed.
    Fresh,
    /// Pages the previous run freed just before: the run starts at once.
    Recycled,
}

impl Memory {
    pub fn name(self) -> &'static str {
        match self {
            Memory::Fresh => "fresh",
            Memory::Recycled => "recycled",
        }
    }

    /// Called right after the previous run's pages were freed (its
    /// destination deleted), before the next run starts.
    pub fn settle(self) {
        if self == Memory::Fresh {
            std::thread::sleep(fresh_wait());
        }
    }
}

/// RINGXFER_BENCH_MEMORY: fresh, recycled or both (the default).
pub fn env_memory() -> Result<Vec<Memory>> {
    let s = std::env::var("RINGXFER_BENCH_MEMORY").unwrap_or_else(|_| "both".into());
    match s.trim() {
        "fresh" => Ok(vec![Memory::Fresh]),
        "recycled" => Ok(vec![Memory::Recycled]),
        "both" => Ok(vec![Memory::Fresh, Memory::Recycled]),
        _ => Err(format!(
            "RINGXFER_BENCH_MEMORY={s:?}: want fresh, recycled or both"
        )),
    }
}

/// Whether freed pages go back to the host (the virtio-balloon device offers
/// free page reporting, feature bit 5), or None where there is no balloon.
/// Without it both memory states are the same.
pub fn page_reporting() -> Option<bool> {
    let dir = Path::new("/sys/bus/virtio/drivers/virtio_balloon");
    let dev = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("virtio"))?;
    let features = std::fs::read_to_string(dev.path().join("features")).ok()?;
    Some(features.as_bytes().get(5) == Some(&b'1'))
}

/// Prints what the memory states mean on this machine.
pub fn print_memory(states: &[Memory]) {
    let names: Vec<&str> = states.iter().map(|m| m.name()).collect();
    let reporting = match page_reporting() {
        Some(true) => {
            "this VM gives freed pages back to its host (virtio-balloon free page reporting)"
        }
        Some(false) => "this VM's balloon does not report free pages: both states should match",
        None => "no virtio balloon: both states should match",
    };
    println!(
        "  memory: {} (fresh: start {:.1} s after the previous copy freed its pages; recycled: at once); {reporting}",
        names.join(" and "),
        fresh_wait().as_secs_f64()
    );
}

/// `name` on PATH, else in Cargo's bin directory ($CARGO_HOME/bin,
/// ~/.cargo/bin), where `cargo install` puts xcp and cpz.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(Path::new(&home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// CPU seconds of this process's reaped children.
pub fn children_cpu() -> f64 {
    super::rusage(libc::RUSAGE_CHILDREN)
}

/// Runs `cmd` to its end, which must be exit status 0: its wall and CPU
/// (user + system) seconds.
pub fn run_timed(mut cmd: Command) -> Result<(f64, f64)> {
    let desc = format!("{cmd:?}");
    let cpu0 = children_cpu();
    let t0 = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("run {desc}: {e}"))?;
    let wall = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "{desc} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((wall, children_cpu() - cpu0))
}

/// The median, least and greatest of `v` as "median [min-max]".
pub fn fmt_spread(v: &[f64]) -> String {
    let med = super::median(v.to_vec()).unwrap_or(f64::NAN);
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{med:.2} [{min:.2}-{max:.2}]")
}

/// The order the contenders of round `round` take their turns in: a
/// balanced Latin square (Williams' design). Over `n` rounds (2n where `n`
/// is odd) each contender goes first once and follows every other one
/// equally often. A plain rotation keeps the neighbours fixed, so one
/// contender always ran right after the same other, and paid for whatever
/// that one left behind (the sparse bench's ringxfer always followed cpz,
/// which writes 1 GiB of zeros, and measured 1.17x cp's time where an
/// interleaved loop with no such neighbour measured 0.92x). The balance
/// holds over a whole number of periods: choose rounds accordingly (a
/// multiple of n, of 2n for odd n).
pub fn turn_order(n: usize, round: usize) -> Vec<usize> {
    // 0, 1, n-1, 2, n-2, ...: the differences between neighbours are all
    // different mod n, so adding the round to each moves every pair.
    let first = (0..n).map(|j| {
        if j % 2 == 1 {
            j.div_ceil(2)
        } else {
            (n - j / 2) % n
        }
    });
    let period = if n.is_multiple_of(2) { n } else { 2 * n };
    let r = round % period.max(1);
    let mut order: Vec<usize> = first.map(|x| (x + r) % n).collect();
    if r >= n {
        // Odd n: the rows of the second half are the first half's reversed.
        order = order.into_iter().rev().collect();
    }
    debug_assert!({
        let mut seen = order.clone();
        seen.sort_unstable();
        seen == (0..n).collect::<Vec<_>>()
    });
    order
}
