//! RINGXFER_BENCH_PROBE=1: does a push from another daemon disturb the
//! receiving daemon's local users? While each TLS push runs, a local
//! client of the receiving daemon copies a 1 MiB file through it, timed
//! from submit to completion; after the push, the same copy again with
//! nothing else running. Target, as the scheduling bench's part E sets for
//! one user's tree against another's file: under 100 ms while the push
//! runs.

use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringxfer_ipc::{Client, TransferOptions};

use crate::support::{median, Result};

/// The local copy starts this long after the push, so that it lands in the
/// middle of it (a 512 MiB push takes about 0.6 s, 1,000 files 0.1 s).
const DELAY: Duration = Duration::from_millis(30);
const SIZE: u64 = 1 << 20;
const TARGET_MS: f64 = 100.0;

pub struct Probe {
    socket: PathBuf,
    src: PathBuf,
    dst: PathBuf,
    busy: RefCell<Vec<f64>>,
    alone: RefCell<Vec<f64>>,
}

impl Probe {
    /// A probe of the daemon listening on `socket`, its files in `dir`.
    pub fn new(socket: &Path, dir: &Path) -> Result<Probe> {
        let src = dir.join("probe.src");
        crate::support::write_source(&src, SIZE)?;
        Ok(Probe {
            socket: socket.to_path_buf(),
            src,
            dst: dir.join("probe.dst"),
            busy: RefCell::default(),
            alone: RefCell::default(),
        })
    }

    /// One local copy: milliseconds from submit to completion.
    fn copy_ms(socket: &Path, src: &Path, dst: &Path) -> Result<f64> {
        let client = Client::connect(socket).map_err(|e| format!("connect the probe: {e}"))?;
        let from = File::open(src).map_err(|e| format!("open {}: {e}", src.display()))?;
        let to = File::create(dst).map_err(|e| format!("create {}: {e}", dst.display()))?;
        let t = Instant::now();
        let done = client
            .submit(&from, &to, &TransferOptions::default())
            .map_err(|e| format!("the probe's submit: {e}"))?
            .wait()
            .map_err(|e| format!("the probe's copy: {e}"))?;
        if done.bytes != SIZE {
            return Err(format!("the probe's copy moved {} bytes", done.bytes));
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }

    /// Runs `push` with a local copy in its middle, then the copy alone.
    pub fn around<T>(&self, push: impl FnOnce() -> Result<T>) -> Result<T> {
        let (socket, src, dst) = (&self.socket, &self.src, &self.dst);
        let (pushed, busy) = std::thread::scope(|s| {
            let copy = s.spawn(move || {
                std::thread::sleep(DELAY);
                Probe::copy_ms(socket, src, dst)
            });
            let pushed = push();
            let busy = copy
                .join()
                .unwrap_or_else(|_| Err("the probe's thread panicked".into()));
            (pushed, busy)
        });
        let pushed = pushed?;
        let busy = busy?;
        let alone = Probe::copy_ms(socket, src, dst)?;
        self.busy.borrow_mut().push(busy);
        self.alone.borrow_mut().push(alone);
        Ok(pushed)
    }

    /// The figures, for `label`'s pushes (the warm-up round's left out).
    pub fn report(&self, label: &str) -> serde_json::Value {
        let measured =
            |v: &RefCell<Vec<f64>>| v.borrow().iter().skip(1).copied().collect::<Vec<_>>();
        let (busy, alone) = (measured(&self.busy), measured(&self.alone));
        let max = busy.iter().copied().fold(0.0, f64::max);
        let pass = !busy.is_empty() && max < TARGET_MS;
        let show = |v: &[f64]| {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let med = median(v.to_vec()).unwrap_or(f64::NAN);
            let max = v.iter().copied().fold(0.0, f64::max);
            format!("{med:.1} [{min:.1}-{max:.1}] ms")
        };
        println!("  a local 1 MiB copy on the receiving daemon, submit to completion:");
        println!("    while {label} runs: {}", show(&busy));
        println!("    alone, after it:     {}", show(&alone));
        println!(
            "    slowest while it runs: {max:.1} ms (target < {TARGET_MS} ms) {}",
            if pass { "PASS" } else { "FAIL" }
        );
        serde_json::json!({
            "bench": "remote", "probe": label, "busy_ms": busy, "alone_ms": alone,
            "target_ms": TARGET_MS, "pass": pass,
        })
    }
}
