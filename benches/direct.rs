//! Cold-cache transfers: the daemon's direct strategy against dd, cp, the
//! splice strategy and fio's ceiling on the same disk, measured in one run.
//!
//! ```text
//! cargo bench --bench direct
//! RINGXFER_BENCH_SIZE=512MiB RINGXFER_BENCH_ROUNDS=1 cargo bench --bench direct
//! RINGXFER_BENCH_SEND_SIZE=256MiB cargo bench --bench direct
//! RINGXFER_BENCH_DAEMON_ARGS="--buffers 32 --buffer-size 1MiB" cargo bench --bench direct
//! ```
//!
//! A. Copy of a cold file (default 4 GiB) on the disk that holds `target/`:
//!    the daemon with `Strategy::Direct`, `dd bs=4M iflag=direct oflag=direct`,
//!    `cp`, and the daemon with `Strategy::Splice`. Each contender's time ends
//!    when it returns; a `sync` then runs outside that time and is reported
//!    on its own, because cp's and splice's data is still dirty in the page
//!    cache when they return while direct's and dd's is on the disk: both
//!    "returned" and "returned+sync" throughputs are printed.
//! B. The ceiling: fio, io_uring engine, O_DIRECT, bs=1M, iodepth=16,
//!    sequential read of the source and sequential write of a new file of the
//!    same size, on the same disk; and, for reference, both jobs at once in
//!    one fio run, the traffic a copy makes.
//! C. A cold file (default 1 GiB: the first RINGXFER_BENCH_SEND_SIZE bytes of
//!    the source) to a loopback TCP socket: the daemon's direct strategy
//!    (READ_FIXED + SEND_ZC) against its splice strategy, throughput and CPU.
//!    On loopback the kernel copies zero-copy (MSG_ZEROCOPY / SEND_ZC) data
//!    when it reaches the local receiving socket, so that a receiver that
//!    never reads cannot hold the sender's buffers (the kernel's
//!    msg_zerocopy.rst, "Loopback"); spliced page-cache pages are not
//!    copied there. Loopback so charges direct sends a copy a NIC would not.
//!
//! The page cache is dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`)
//! before every timed run; without root that fails, and the bench says the
//! numbers are not cold and goes on. The contenders take turns round by round
//! (in a balanced order: `turn_order` in support/peers.rs), and the verdicts are medians of per-round ratios.
//! Every result is checked (size, and 4 KiB blocks at both ends and at six
//! pseudo-random offsets against the source), so a broken transfer cannot
//! look fast.
//!
//! CPU is user + system time per GiB moved. Daemon rows: the daemon's CPU
//! (clock_getcpuclockid, every thread, io_uring workers included) plus this
//! process's (the client stub); in group C the receiver thread's CPU, measured
//! with `RUSAGE_THREAD` inside it, is subtracted. dd and cp: the child's
//! `RUSAGE_CHILDREN` delta. Writeback done later by the kernel's flusher
//! threads (cp's and splice's dirty pages) is nobody's CPU here.
//!
//! Until the daemon has the direct strategy it refuses such a job; the direct
//! rows then say "unavailable" with the daemon's words and the rest runs.

#[path = "support/mod.rs"]
mod support;

use std::fs::{self, File};
use std::io;
use std::net::Shutdown;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringxfer_ipc::{Client, Completion, FailureKind, JobError, Strategy, TransferOptions};

use support::cache::{drop_caches, sync_all};
use support::{
    bench_dir, daemon_binary, disk_space, env_daemon_args, env_rounds, env_size, fmt_list, fs_type,
    mem_available, print_daemon, print_host, read_block, self_cpu, write_source, Daemon, DaemonCpu,
    Receiver, Result, Sink, BLOCK, GIB,
};

const MIB: u64 = 1 << 20;
/// Direct copy against dd: pass at this ratio or above.
const COPY_TARGET: f64 = 1.3;
/// Direct send CPU against splice send CPU: pass at this ratio or below.
const SEND_CPU_TARGET: f64 = 1.0;
/// Bytes of each daemon contender's unmeasured warm-up job.
const WARMUP_BYTES: u64 = 64 << 20;
/// The longest any one job or tool may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(1800);

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter here.
    support::exit("direct", run());
}

// ---------------------------------------------------------------------------
// Settings

struct Settings {
    size: u64,
    send_size: u64,
    rounds: usize,
    daemon_args: Vec<String>,
}

fn settings() -> Result<Settings> {
    let size = env_size("RINGXFER_BENCH_SIZE", 4 << 30)?;
    let send_size = env_size("RINGXFER_BENCH_SEND_SIZE", 1 << 30)?;
    Ok(Settings {
        size,
        // The send reads the first bytes of the source.
        send_size: send_size.min(size),
        rounds: env_rounds()?,
        daemon_args: env_daemon_args(),
    })
}

// ---------------------------------------------------------------------------
// CPU time

/// CPU seconds of this process's terminated and reaped children (dd, cp, fio).
fn children_cpu() -> f64 {
    support::rusage(libc::RUSAGE_CHILDREN)
}

// ---------------------------------------------------------------------------
// The page cache and the disk

/// The fraction of `path`'s pages in the page cache (support::cache).
fn cached_fraction(path: &Path) -> Option<f64> {
    let (resident, pages) = support::cache::resident_pages(path)?;
    Some(if pages == 0 {
        0.0
    } else {
        resident as f64 / pages as f64
    })
}

/// The block device under `dir` and a few of its queue settings, from sysfs.
fn block_device(dir: &Path) -> String {
    let Ok(meta) = fs::metadata(dir) else {
        return "unknown".into();
    };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let name = fs::canonicalize(&sys)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("{major}:{minor}"));
    // A partition's queue is its disk's.
    let queue = if sys.join("queue").is_dir() {
        sys.join("queue")
    } else {
        sys.join("../queue")
    };
    let attr = |a: &str| {
        fs::read_to_string(queue.join(a))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    format!(
        "{name} (logical block {} B, max_sectors_kb {}, nr_requests {}, scheduler {})",
        attr("logical_block_size"),
        attr("max_sectors_kb"),
        attr("nr_requests"),
        attr("scheduler"),
    )
}

/// What statx says about O_DIRECT alignment on this file, where the kernel
/// and file system report it.
fn dio_align(path: &Path) -> String {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: statx is plain data; statx(2) only writes into it.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `stx` is writable.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            0,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 {
        return format!("statx: {}", io::Error::last_os_error());
    }
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_offset_align == 0 {
        return "not reported by statx (STATX_DIOALIGN)".into();
    }
    format!(
        "memory {} B, offset/length {} B (statx STATX_DIOALIGN)",
        stx.stx_dio_mem_align, stx.stx_dio_offset_align
    )
}

/// The first three fields of /proc/loadavg: other work on the machine
/// shows here.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// The first line of `prog --version`, or None if it does not run.
fn tool_version(prog: &str) -> Option<String> {
    let out = Command::new(prog)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().next().unwrap_or("").trim().to_string())
}

// ---------------------------------------------------------------------------
// Files

/// Offsets of the blocks compared: the first, the last (the file's very end,
/// unaligned where the size is) and six pseudo-random 4 KiB-aligned ones.
fn sample_offsets(size: u64, seed: u64) -> Vec<u64> {
    let mut v = vec![0, size.saturating_sub(BLOCK as u64)];
    let blocks = size / BLOCK as u64;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..6 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if blocks > 0 {
            v.push((x % blocks) * BLOCK as u64);
        }
    }
    v
}

/// Checks the destination's size, and its sampled blocks against the source.
fn verify_copy(src: &File, dst: &Path, size: u64, seed: u64) -> Result<()> {
    let file = support::open_sized(dst, size)?;
    for off in sample_offsets(size, seed) {
        let want = read_block(src, off, size).map_err(|e| format!("read source: {e}"))?;
        let have =
            read_block(&file, off, size).map_err(|e| format!("read {}: {e}", dst.display()))?;
        if want != have {
            return Err(format!(
                "{}: the 4 KiB block at offset {off} differs from the source",
                dst.display()
            ));
        }
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", path.display())),
    }
}

// ---------------------------------------------------------------------------
// The TCP receiver

/// What the receiver keeps of a connection: the bytes at each sampled
/// offset, one block each at most.
struct Blocks {
    offsets: Vec<u64>,
    blocks: Vec<Vec<u8>>,
}

impl Blocks {
    fn new(offsets: Vec<u64>) -> Blocks {
        let blocks = vec![Vec::new(); offsets.len()];
        Blocks { offsets, blocks }
    }
}

impl Sink for Blocks {
    fn feed(&mut self, pos: u64, data: &[u8]) {
        let end = pos + data.len() as u64;
        for (block, &off) in self.blocks.iter_mut().zip(&self.offsets) {
            let lo = off.max(pos);
            let hi = (off + BLOCK as u64).min(end);
            if lo < hi {
                block.extend_from_slice(&data[(lo - pos) as usize..(hi - pos) as usize]);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Contenders

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    DirectCopy,
    Dd,
    Cp,
    SpliceCopy,
    FioRead,
    FioWrite,
    /// fio's read and write jobs at once, as a copy does.
    FioBoth,
    DirectSend,
    SpliceSend,
}

const COPIERS: [Contender; 4] = [
    Contender::DirectCopy,
    Contender::Dd,
    Contender::Cp,
    Contender::SpliceCopy,
];
const CEILINGS: [Contender; 3] = [Contender::FioRead, Contender::FioWrite, Contender::FioBoth];
const SENDERS: [Contender; 2] = [Contender::DirectSend, Contender::SpliceSend];

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::DirectCopy => "daemon copy, strategy direct",
            Contender::Dd => "dd bs=4M iflag=direct oflag=direct",
            Contender::Cp => "cp",
            Contender::SpliceCopy => "daemon copy, strategy splice",
            Contender::FioRead => "fio io_uring O_DIRECT seq read",
            Contender::FioWrite => "fio io_uring O_DIRECT seq write",
            Contender::FioBoth => "fio read + write at once",
            Contender::DirectSend => "daemon send, strategy direct",
            Contender::SpliceSend => "daemon send, strategy splice",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Contender::DirectCopy => "direct_copy",
            Contender::Dd => "dd",
            Contender::Cp => "cp",
            Contender::SpliceCopy => "splice_copy",
            Contender::FioRead => "fio_read",
            Contender::FioWrite => "fio_write",
            Contender::FioBoth => "fio_read_write",
            Contender::DirectSend => "direct_send",
            Contender::SpliceSend => "splice_send",
        }
    }

    fn group(self) -> &'static str {
        if COPIERS.contains(&self) {
            "copy"
        } else if CEILINGS.contains(&self) {
            "ceiling"
        } else {
            "send"
        }
    }

    /// The strategy a daemon contender asks for.
    fn strategy(self) -> Option<Strategy> {
        match self {
            Contender::DirectCopy | Contender::DirectSend => Some(Strategy::Direct),
            Contender::SpliceCopy | Contender::SpliceSend => Some(Strategy::Splice),
            _ => None,
        }
    }
}

/// One measured run.
#[derive(Clone)]
struct Sample {
    round: usize,
    bytes: u64,
    /// Until the contender returned.
    secs: f64,
    /// The `sync` right after (copies only).
    sync_secs: Option<f64>,
    cpu: Option<f64>,
    /// Fractions of the source's and destination's pages in the page cache
    /// after the run (and its sync).
    cached_src: Option<f64>,
    cached_dst: Option<f64>,
    /// What the daemon said it used, and why.
    used: Option<Strategy>,
    note: Option<String>,
}

impl Sample {
    fn gibps(&self) -> f64 {
        self.bytes as f64 / GIB / self.secs
    }

    fn gibps_sync(&self) -> Option<f64> {
        self.sync_secs
            .map(|s| self.bytes as f64 / GIB / (self.secs + s))
    }

    fn cpu_per_gib(&self) -> Option<f64> {
        self.cpu.map(|c| c / (self.bytes as f64 / GIB))
    }
}

enum Outcome {
    Done(Sample),
    /// The contender cannot run here; the string says why.
    Unavailable(String),
}

/// A contender's samples, or why it has none.
struct Row {
    c: Contender,
    samples: Vec<Sample>,
    unavailable: Option<String>,
}

/// Everything the contenders need, made once.
struct Bench {
    dir: PathBuf,
    src: PathBuf,
    src_file: File,
    size: u64,
    send_size: u64,
    /// Whether dropping the page cache works (root).
    cold: bool,
    /// fio's version, None when it is not installed.
    fio: Option<String>,
    // The client before the daemon: fields drop in this order.
    client: Client,
    _daemon: Daemon,
    daemon_cpu: DaemonCpu,
    receiver: Receiver<Blocks>,
    send_samples: Vec<u64>,
    /// Bumped by every run: the seed of the sampled blocks.
    runs: u64,
}

impl Bench {
    fn cpu_now(&self, c: Contender) -> Result<f64> {
        Ok(match c {
            Contender::Dd | Contender::Cp => children_cpu(),
            _ => self_cpu() + self.daemon_cpu.secs()?,
        })
    }

    /// Empties the page cache and checks the source left it.
    fn make_cold(&self) -> Result<()> {
        if !self.cold {
            sync_all();
            return Ok(());
        }
        drop_caches().map_err(|e| format!("drop_caches: {e}"))?;
        if let Some(f) = cached_fraction(&self.src) {
            if f > 0.01 {
                println!(
                    "  WARNING: {:.1}% of the source is still cached after drop_caches",
                    f * 100.0
                );
            }
        }
        Ok(())
    }

    fn run(&mut self, c: Contender, round: usize) -> Result<Outcome> {
        self.runs += 1;
        match c {
            Contender::FioRead | Contender::FioWrite | Contender::FioBoth => self.run_fio(c, round),
            Contender::DirectSend | Contender::SpliceSend => self.run_send(c, round, None),
            _ => self.run_copy(c, round, None),
        }
    }

    /// Waits for a daemon job; a failure of a direct job is "unavailable",
    /// of any other an error.
    fn wait_job(
        &self,
        c: Contender,
        job: std::result::Result<ringxfer_ipc::JobHandle, ringxfer_ipc::ClientError>,
    ) -> Result<std::result::Result<Completion, String>> {
        let direct = c.strategy() == Some(Strategy::Direct);
        let job = match job {
            Ok(job) => job,
            Err(e) if direct => return Ok(Err(format!("the client stub failed: {e}"))),
            Err(e) => return Err(format!("{}: submit: {e}", c.name())),
        };
        match job.wait_timeout(RUN_TIMEOUT) {
            None => {
                if let Ok(id) = job.job_id() {
                    let _ = self.client.cancel(id);
                }
                let _ = job.wait_timeout(Duration::from_secs(10));
                Err(format!(
                    "{}: not done after {} s",
                    c.name(),
                    RUN_TIMEOUT.as_secs()
                ))
            }
            Some(Ok(done)) => Ok(Ok(done)),
            // A refusal (the strategy is not there yet, or does not take
            // this kind of job) is "unavailable"; anything else failed.
            Some(Err(e)) if direct => Ok(Err(match &e {
                JobError::Failed {
                    kind: FailureKind::InvalidRequest,
                    ..
                } => format!("the daemon refused it: {e}"),
                _ => format!("FAILED: {e}"),
            })),
            Some(Err(e)) => Err(format!("{}: {e}", c.name())),
        }
    }

    /// One copy. `length` limits it (the unmeasured warm-up).
    fn run_copy(&mut self, c: Contender, round: usize, length: Option<u64>) -> Result<Outcome> {
        let dst = self.dir.join(format!("dst-{}.bin", c.key()));
        remove_if_exists(&dst)?;
        sync_all();
        let want = length.unwrap_or(self.size);
        self.make_cold()?;

        let cpu0 = self.cpu_now(c)?;
        let t0 = Instant::now();
        let mut used = None;
        let mut note = None;
        match c {
            Contender::DirectCopy | Contender::SpliceCopy => {
                let opts = TransferOptions {
                    tag: format!("bench {}", c.key()),
                    length,
                    strategy: c.strategy().expect("a daemon contender"),
                    ..Default::default()
                };
                let job = self.client.copy_file(&self.src, &dst, &opts);
                match self.wait_job(c, job)? {
                    Ok(done) => {
                        if done.bytes != want {
                            return Err(format!(
                                "{}: completed with {} bytes, want {want}",
                                c.name(),
                                done.bytes
                            ));
                        }
                        used = Some(done.strategy);
                        note = done.note;
                    }
                    Err(why) => {
                        remove_if_exists(&dst)?;
                        sync_all();
                        return Ok(Outcome::Unavailable(why));
                    }
                }
            }
            Contender::Dd => {
                let mut cmd = Command::new("dd");
                cmd.arg(format!("if={}", self.src.display()))
                    .arg(format!("of={}", dst.display()))
                    .args(["bs=4M", "iflag=direct", "oflag=direct"]);
                run_tool(cmd, "dd")?;
            }
            Contender::Cp => {
                let mut cmd = Command::new("cp");
                cmd.arg(&self.src).arg(&dst);
                run_tool(cmd, "cp")?;
            }
            _ => unreachable!(),
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu = self.cpu_now(c)? - cpu0;
        let t1 = Instant::now();
        sync_all();
        let sync_secs = t1.elapsed().as_secs_f64();

        let cached_src = cached_fraction(&self.src);
        let cached_dst = cached_fraction(&dst);
        if length.is_none() {
            verify_copy(&self.src_file, &dst, self.size, self.runs)
                .map_err(|e| format!("{}: {e}", c.name()))?;
        }
        remove_if_exists(&dst)?;
        sync_all();
        Ok(Outcome::Done(Sample {
            round,
            bytes: want,
            secs,
            sync_secs: Some(sync_secs),
            cpu: Some(cpu),
            cached_src,
            cached_dst,
            used,
            note,
        }))
    }

    /// One send of the first `send_size` bytes (or `length`) to loopback TCP.
    fn run_send(&mut self, c: Contender, round: usize, length: Option<u64>) -> Result<Outcome> {
        let want = length.unwrap_or(self.send_size);
        self.make_cold()?;
        let sock = self.receiver.connect()?;
        let cpu0 = self.cpu_now(c)?;
        let t0 = Instant::now();
        let opts = TransferOptions {
            tag: format!("bench {}", c.key()),
            length: Some(want),
            strategy: c.strategy().expect("a daemon contender"),
            ..Default::default()
        };
        let job = self.client.send_file(&self.src, &sock, &opts);
        let done = match self.wait_job(c, job)? {
            Ok(done) => done,
            Err(why) => {
                // The daemon may hold a duplicate: shut the connection down
                // so the receiver sees its end.
                let _ = sock.shutdown(Shutdown::Both);
                drop(sock);
                let _ = self.receiver.finish();
                return Ok(Outcome::Unavailable(why));
            }
        };
        let got = self.receiver.finish_send(&sock)?;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = self.cpu_now(c)? - cpu0 - got.cpu;
        drop(sock);
        if done.bytes != want || got.bytes != want {
            return Err(format!(
                "{}: the daemon reported {} bytes and the receiver got {}, want {want}",
                c.name(),
                done.bytes,
                got.bytes
            ));
        }
        if length.is_none() {
            for (block, &off) in got.kept.blocks.iter().zip(&self.send_samples) {
                let src = read_block(&self.src_file, off, want)
                    .map_err(|e| format!("read source: {e}"))?;
                if *block != src {
                    return Err(format!(
                        "{}: the 4 KiB block received at offset {off} differs from the source",
                        c.name()
                    ));
                }
            }
        }
        Ok(Outcome::Done(Sample {
            round,
            bytes: want,
            secs,
            sync_secs: None,
            cpu: Some(cpu),
            cached_src: cached_fraction(&self.src),
            cached_dst: None,
            used: Some(done.strategy),
            note: done.note,
        }))
    }

    /// fio's sequential read of the source, sequential write of a new file,
    /// or both at once (two jobs in one fio run): what a copy on this disk
    /// can do at best.
    fn run_fio(&mut self, c: Contender, round: usize) -> Result<Outcome> {
        if self.fio.is_none() {
            return Ok(Outcome::Unavailable(
                "fio is not installed (apt-get install -y fio)".into(),
            ));
        }
        // fio moves whole blocks of bs=1M.
        let size = self.size / MIB * MIB;
        if size == 0 {
            return Ok(Outcome::Unavailable(
                "the file is smaller than fio's 1 MiB block".into(),
            ));
        }
        let wfile = self.dir.join("fio-write.bin");
        remove_if_exists(&wfile)?;
        sync_all();
        self.make_cold()?;
        let mut cmd = Command::new("fio");
        // Global options first, then one --name per job.
        cmd.args([
            "--ioengine=io_uring",
            "--direct=1",
            "--bs=1M",
            "--iodepth=16",
        ])
        .arg(format!("--size={size}"))
        .arg("--output-format=json");
        let read_job = |cmd: &mut Command| {
            cmd.args(["--name=r", "--rw=read"])
                .arg(format!("--filename={}", self.src.display()));
        };
        let write_job = |cmd: &mut Command| {
            cmd.args(["--name=w", "--rw=write"])
                .arg(format!("--filename={}", wfile.display()));
        };
        match c {
            Contender::FioRead => {
                read_job(&mut cmd);
                cmd.arg("--readonly");
            }
            Contender::FioWrite => write_job(&mut cmd),
            _ => {
                read_job(&mut cmd);
                write_job(&mut cmd);
            }
        }
        let out = run_tool(cmd, "fio")?;
        remove_if_exists(&wfile)?;
        sync_all();
        let jobs = parse_fio(&out)?;
        let mut secs = 0.0f64;
        let mut cpu = Some(0.0);
        let mut sides = Vec::new();
        for job in &jobs {
            if job.io_bytes != size {
                return Err(format!(
                    "fio {}: moved {} bytes, want {size}",
                    job.rw, job.io_bytes
                ));
            }
            // The run lasts as long as its slowest job.
            secs = secs.max(job.io_bytes as f64 / job.bw as f64);
            cpu = cpu.zip(job.cpu).map(|(a, b)| a + b);
            sides.push(format!("{} {:.2} GiB/s", job.rw, job.bw as f64 / GIB));
        }
        Ok(Outcome::Done(Sample {
            round,
            bytes: size,
            secs,
            sync_secs: None,
            cpu,
            cached_src: None,
            cached_dst: None,
            used: None,
            note: (jobs.len() > 1).then(|| format!("at once: {}", sides.join(", "))),
        }))
    }
}

/// Runs a tool to completion; its stdout, or an error with its stderr.
fn run_tool(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One fio job's result.
struct FioJob {
    /// "read" or "write".
    rw: &'static str,
    /// Bytes per second.
    bw: u64,
    io_bytes: u64,
    cpu: Option<f64>,
}

/// The jobs in fio's JSON output, each with the side (read or write) that
/// moved bytes.
fn parse_fio(out: &str) -> Result<Vec<FioJob>> {
    // fio may print notes before the JSON.
    let start = out
        .find('{')
        .ok_or_else(|| format!("fio printed no JSON: {}", out.trim()))?;
    let json: serde_json::Value =
        serde_json::from_str(&out[start..]).map_err(|e| format!("fio's JSON: {e}"))?;
    let jobs = json["jobs"]
        .as_array()
        .filter(|j| !j.is_empty())
        .ok_or("fio's JSON has no jobs")?;
    let mut got = Vec::new();
    for job in jobs {
        let name = job["jobname"].as_str().unwrap_or("?");
        if job["error"].as_i64().unwrap_or(0) != 0 {
            return Err(format!("fio job {name}: error {}", job["error"]));
        }
        let rw = ["read", "write"]
            .into_iter()
            .find(|rw| job[*rw]["io_bytes"].as_u64().unwrap_or(0) > 0)
            .ok_or_else(|| format!("fio job {name} moved no bytes"))?;
        let side = &job[rw];
        let bw = side["bw_bytes"]
            .as_u64()
            .filter(|&b| b > 0)
            .ok_or_else(|| format!("fio job {name}: no bw_bytes in its JSON"))?;
        let io_bytes = side["io_bytes"].as_u64().unwrap_or(0);
        // usr_cpu and sys_cpu are percentages of the job's run time.
        let cpu = match (
            job["usr_cpu"].as_f64(),
            job["sys_cpu"].as_f64(),
            job["job_runtime"].as_f64(),
        ) {
            (Some(u), Some(s), Some(ms)) => Some((u + s) / 100.0 * ms / 1000.0),
            _ => None,
        };
        got.push(FioJob {
            rw,
            bw,
            io_bytes,
            cpu,
        });
    }
    Ok(got)
}

// ---------------------------------------------------------------------------
// Statistics and the report

/// The median of the finite values in `v`, None when there are none.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    support::median(v)
}

fn fmt_opt(v: Option<f64>, width: usize, prec: usize) -> String {
    match v {
        Some(x) => format!("{x:>width$.prec$}"),
        None => format!("{:>width$}", "-"),
    }
}

fn fmt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |f| format!("{:.1}%", f * 100.0))
}

fn median_of(row: &Row, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    median(row.samples.iter().filter_map(f).collect())
}

/// Per-round ratios `f(a) / f(b)` for the rounds both rows have.
fn per_round(a: &Row, b: &Row, f: impl Fn(&Sample) -> Option<f64>) -> Vec<f64> {
    a.samples
        .iter()
        .filter_map(|s| {
            let t = b.samples.iter().find(|t| t.round == s.round)?;
            Some(f(s)? / f(t)?)
        })
        .filter(|x| x.is_finite())
        .collect()
}

/// The daemon's strategies that differ from the one asked for, with notes.
fn strategy_mismatch(row: &Row) -> Option<String> {
    let asked = row.c.strategy()?;
    let s = row
        .samples
        .iter()
        .find(|s| s.used.is_some_and(|u| u != asked))?;
    Some(format!(
        "the daemon used {} instead of {asked}{}",
        s.used.expect("checked"),
        s.note
            .as_ref()
            .map_or_else(String::new, |n| format!(": {n}"))
    ))
}

/// What the table says after a row's numbers: a strategy the daemon used
/// instead of the one asked for, a failure in a later round.
fn row_notes(row: &Row) -> String {
    let mut notes = Vec::new();
    if let Some(m) = strategy_mismatch(row) {
        notes.push(m);
    }
    if let (Some(why), false) = (&row.unavailable, row.samples.is_empty()) {
        notes.push(format!("later rounds: {why}"));
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("  ({})", notes.join("; "))
    }
}

fn print_run_line(label: &str, c: Contender, out: &Outcome) {
    match out {
        Outcome::Unavailable(why) => {
            println!("  {label:<11} {:<36} unavailable: {why}", c.name());
        }
        Outcome::Done(s) => {
            let mut line = format!(
                "  {label:<11} {:<36} {:>6.2} GiB/s {:>8.3} s",
                c.name(),
                s.gibps(),
                s.secs
            );
            if let (Some(sync), Some(g)) = (s.sync_secs, s.gibps_sync()) {
                line += &format!("  +sync {sync:>6.3} s = {g:>5.2} GiB/s");
            }
            if let Some(cpu) = s.cpu_per_gib() {
                line += &format!("  cpu {cpu:.3} s/GiB");
            }
            if s.cached_src.is_some() || s.cached_dst.is_some() {
                line += &format!(
                    "  cached src {} dst {}",
                    fmt_pct(s.cached_src),
                    fmt_pct(s.cached_dst)
                );
            }
            if let Some(u) = s.used {
                line += &format!("  [{u}]");
            }
            if let Some(n) = &s.note {
                line += &format!(" ({n})");
            }
            println!("{line}");
        }
    }
}

// ---------------------------------------------------------------------------

/// What the start of the run found out.
struct Intro {
    disk_total: u64,
    disk_free: u64,
    /// Whether the page cache can be dropped before each run.
    cold: bool,
    /// fio's version, if it is installed.
    fio: Option<String>,
}

/// Says what the bench runs on and with; refuses a disk without room.
fn intro(cfg: &Settings, bin: &Path, dir: &Path) -> Result<Intro> {
    let gib = cfg.size as f64 / GIB;
    println!("ringxfer direct bench (cold cache)");
    print_host(mem_available());
    println!("  load average at start: {}", loadavg());
    println!("  dir {} ({})", dir.display(), fs_type(dir));
    println!("  device {}", block_device(dir));
    let (disk_total, disk_free) =
        disk_space(dir).ok_or_else(|| format!("statvfs {} failed", dir.display()))?;
    println!(
        "  disk size {:.2} GiB, free {:.2} GiB",
        disk_total as f64 / GIB,
        disk_free as f64 / GIB
    );
    let need = cfg.size.saturating_mul(3);
    if disk_free < need {
        return Err(format!(
            "refusing to run: {} has {:.2} GiB free, and a {gib:.2} GiB file needs at least \
             3x that ({:.2} GiB: the source, one destination, headroom); \
             free some space or set RINGXFER_BENCH_SIZE lower",
            dir.display(),
            disk_free as f64 / GIB,
            need as f64 / GIB
        ));
    }
    println!(
        "  copy size {} bytes ({gib:.3} GiB), send size {} bytes ({:.3} GiB), {} round(s)",
        cfg.size,
        cfg.send_size,
        cfg.send_size as f64 / GIB,
        cfg.rounds
    );
    print_daemon(bin, &cfg.daemon_args);

    let cold = match drop_caches() {
        Ok(()) => {
            println!("  cold: sync + echo 3 > /proc/sys/vm/drop_caches before every timed run");
            true
        }
        Err(e) => {
            println!(
                "  WARNING: cannot drop the page cache ({e}; needs root): THE NUMBERS ARE NOT COLD"
            );
            false
        }
    };
    let fio = tool_version("fio");
    match &fio {
        Some(v) => println!("  fio: {v}"),
        None => println!(
            "  fio: NOT INSTALLED (apt-get install -y fio): the fio ceiling rows are skipped"
        ),
    }
    println!(
        "  dd: {}; cp: {}",
        tool_version("dd").unwrap_or_else(|| "?".into()),
        tool_version("cp").unwrap_or_else(|| "?".into())
    );
    println!("  note: cp copies with copy_file_range(2) where it can (coreutils >= 9): an in-kernel, page-cache copy on ext4");
    println!("  note: CPU = user+sys; daemon rows = the daemon's + this process's (client stub); dd/cp = the child's; send rows exclude the receiver thread; writeback by kernel flusher threads is not counted");

    Ok(Intro {
        disk_total,
        disk_free,
        cold,
        fio,
    })
}

/// The warm-up, then `cfg.rounds` rounds of every contender, in a balanced
/// order (`turn_order`).
fn measure(bench: &mut Bench, cfg: &Settings) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = COPIERS
        .iter()
        .chain(&CEILINGS)
        .chain(&SENDERS)
        .map(|&c| Row {
            c,
            samples: Vec::new(),
            unavailable: None,
        })
        .collect();

    // Warm-up, unmeasured: one short job of each daemon contender, which
    // also finds out at once whether the daemon has the direct strategy.
    let warm = WARMUP_BYTES.min(cfg.send_size);
    for row in rows.iter_mut() {
        let c = row.c;
        let out = match c {
            Contender::DirectCopy | Contender::SpliceCopy => bench.run_copy(c, 0, Some(warm))?,
            Contender::DirectSend | Contender::SpliceSend => bench.run_send(c, 0, Some(warm))?,
            _ => continue,
        };
        print_run_line("warm-up", c, &out);
        if let Outcome::Unavailable(why) = out {
            row.unavailable = Some(why);
        }
    }

    for round in 1..=cfg.rounds {
        let label = format!("round {round}/{}", cfg.rounds);
        for group in [&COPIERS[..], &CEILINGS[..], &SENDERS[..]] {
            // No contender always runs first, last or after the same other.
            for k in support::peers::turn_order(group.len(), round - 1) {
                let c = group[k];
                let row = rows.iter_mut().find(|r| r.c == c).expect("a row");
                if let Some(why) = &row.unavailable {
                    println!("  {label:<11} {:<36} skipped: {why}", c.name());
                    continue;
                }
                let out = bench.run(c, round)?;
                print_run_line(&label, c, &out);
                match out {
                    Outcome::Done(s) => row.samples.push(s),
                    Outcome::Unavailable(why) => row.unavailable = Some(why),
                }
            }
        }
    }

    Ok(rows)
}

fn run() -> Result<()> {
    let cfg = settings()?;
    let bin = daemon_binary()?;

    let tmp = bench_dir("direct-")?;
    let dir = tmp.path().to_path_buf();

    let Intro {
        disk_total,
        disk_free,
        cold,
        fio,
    } = intro(&cfg, &bin, &dir)?;
    let src = dir.join("source.bin");
    let t = Instant::now();
    write_source(&src, cfg.size)?;
    println!(
        "  source written and synced in {:.2} s; O_DIRECT alignment: {}",
        t.elapsed().as_secs_f64(),
        dio_align(&src)
    );
    let src_file = File::open(&src).map_err(|e| format!("open {}: {e}", src.display()))?;

    let socket = dir.join("d.sock");
    let daemon = Daemon::start(&bin, &socket, &cfg.daemon_args)?;
    let client = Client::connect(&socket).map_err(|e| format!("connect to the daemon: {e}"))?;
    let send_samples = sample_offsets(cfg.send_size, 0x5EED);
    let offsets = send_samples.clone();
    let receiver = Receiver::start(RUN_TIMEOUT, move || Blocks::new(offsets.clone()))?;
    let mut bench = Bench {
        dir: dir.clone(),
        src,
        src_file,
        size: cfg.size,
        send_size: cfg.send_size,
        cold,
        fio,
        client,
        daemon_cpu: DaemonCpu::new(daemon.pid()),
        _daemon: daemon,
        receiver,
        send_samples,
        runs: 0,
    };
    bench.daemon_cpu.print_source("");

    let rows = measure(&mut bench, &cfg)?;
    println!(
        "  load average at the end: {} (the bench keeps about one CPU busy; more means other work ran)",
        loadavg()
    );
    report(&cfg, &rows, cold, disk_total, disk_free, &dir);

    drop(bench);
    drop(tmp);
    Ok(())
}

fn row(rows: &[Row], c: Contender) -> &Row {
    rows.iter().find(|r| r.c == c).expect("a row")
}

fn gibps(s: &Sample) -> Option<f64> {
    Some(s.gibps())
}

fn gibps_sync(s: &Sample) -> Option<f64> {
    s.gibps_sync()
}

fn cpu(s: &Sample) -> Option<f64> {
    s.cpu_per_gib()
}

/// Why a contender has no figures, if it has none.
fn unavailable(r: &Row) -> Option<String> {
    r.unavailable
        .as_ref()
        .filter(|_| r.samples.is_empty())
        .cloned()
}

/// fio's medians: reading, writing, both at once.
type Fio = (Option<f64>, Option<f64>, Option<f64>);

/// The two targets' ratios, per round and overall, and verdicts.
struct Targets {
    copy_ratio: Option<f64>,
    copy_rounds: Vec<f64>,
    copy_sync_rounds: Vec<f64>,
    copy_verdict: Option<bool>,
    send_ratio: Option<f64>,
    send_rounds: Vec<f64>,
    send_verdict: Option<bool>,
}

fn report(cfg: &Settings, rows: &[Row], cold: bool, disk_total: u64, disk_free: u64, dir: &Path) {
    println!();
    println!(
        "results: median of {} round(s){}",
        cfg.rounds,
        if cold {
            ", page cache dropped before every run"
        } else {
            ", NOT COLD (the page cache could not be dropped)"
        }
    );

    report_copies(cfg, rows, dir);
    let fio = report_ceiling(rows);
    report_sends(cfg, rows);
    println!();
    let targets = report_targets(rows);
    report_bounds(rows, fio);
    let disk = serde_json::json!({
        "fs": fs_type(dir),
        "total_bytes": disk_total,
        "free_bytes": disk_free,
    });
    print_json(cfg, rows, cold, disk, &targets, fio);
}

/// A. Copies.
fn report_copies(cfg: &Settings, rows: &[Row], dir: &Path) {
    let dd = row(rows, Contender::Dd);
    println!(
        "A. cold copy, {} bytes ({:.3} GiB), {} on the same disk",
        cfg.size,
        cfg.size as f64 / GIB,
        fs_type(dir)
    );
    println!(
        "  {:<36} {:>9} {:>11} {:>8} {:>7} {:>10} {:>9} {:>9}",
        "contender", "returned", "+sync", "sync s", "vs dd", "CPU s/GiB", "src cache", "dst cache"
    );
    println!(
        "  {:<36} {:>9} {:>11} {:>8} {:>7} {:>10} {:>9} {:>9}",
        "", "GiB/s", "GiB/s", "", "", "", "after", "after"
    );
    for &c in &COPIERS {
        let r = row(rows, c);
        if let Some(why) = unavailable(r) {
            println!("  {:<36} unavailable: {why}", c.name());
            continue;
        }
        println!(
            "  {:<36} {} {} {} {} {} {:>9} {:>9}{}",
            c.name(),
            fmt_opt(median_of(r, gibps), 9, 2),
            fmt_opt(median_of(r, gibps_sync), 11, 2),
            fmt_opt(median_of(r, |s| s.sync_secs), 8, 3),
            fmt_opt(median(per_round(r, dd, gibps)), 7, 2),
            fmt_opt(median_of(r, cpu), 10, 3),
            fmt_pct(median_of(r, |s| s.cached_src)),
            fmt_pct(median_of(r, |s| s.cached_dst)),
            row_notes(r)
        );
    }
}

/// B. The ceiling: fio's figures.
fn report_ceiling(rows: &[Row]) -> Fio {
    println!(
        "B. ceiling: fio --ioengine=io_uring --direct=1 --bs=1M --iodepth=16, same size, same disk"
    );
    let fio_read = median_of(row(rows, Contender::FioRead), gibps);
    let fio_write = median_of(row(rows, Contender::FioWrite), gibps);
    let fio_both = median_of(row(rows, Contender::FioBoth), gibps);
    for c in CEILINGS {
        let r = row(rows, c);
        if let Some(why) = unavailable(r) {
            println!("  {:<36} unavailable: {why}", c.name());
            continue;
        }
        println!(
            "  {:<36} {} GiB/s  CPU {} s/GiB{}",
            c.name(),
            fmt_opt(median_of(r, gibps), 9, 2),
            fmt_opt(median_of(r, cpu), 6, 3),
            r.samples
                .last()
                .and_then(|s| s.note.as_ref())
                .map_or_else(String::new, |n| format!("  (last round {n})"))
        );
    }

    (fio_read, fio_write, fio_both)
}

/// C. Sends.
fn report_sends(cfg: &Settings, rows: &[Row]) {
    let splice_send = row(rows, Contender::SpliceSend);
    println!(
        "C. cold file -> loopback TCP, {} bytes ({:.3} GiB)",
        cfg.send_size,
        cfg.send_size as f64 / GIB
    );
    println!(
        "  {:<36} {:>9} {:>10} {:>10} {:>9}",
        "contender", "GiB/s", "vs splice", "CPU s/GiB", "src cache"
    );
    for c in SENDERS {
        let r = row(rows, c);
        if let Some(why) = unavailable(r) {
            println!("  {:<36} unavailable: {why}", c.name());
            continue;
        }
        println!(
            "  {:<36} {} {} {} {:>9}{}",
            c.name(),
            fmt_opt(median_of(r, gibps), 9, 2),
            fmt_opt(median(per_round(r, splice_send, gibps)), 10, 2),
            fmt_opt(median_of(r, cpu), 10, 3),
            fmt_pct(median_of(r, |s| s.cached_src)),
            row_notes(r)
        );
    }
}

/// The targets: direct copy against dd, direct send's CPU against splice's.
fn report_targets(rows: &[Row]) -> Targets {
    let dd = row(rows, Contender::Dd);
    let splice_send = row(rows, Contender::SpliceSend);
    let direct_copy = row(rows, Contender::DirectCopy);
    let copy_rounds = per_round(direct_copy, dd, gibps);
    let copy_ratio = median(copy_rounds.clone());
    let copy_sync_rounds = per_round(direct_copy, dd, gibps_sync);
    let copy_verdict = match (copy_ratio, unavailable(direct_copy)) {
        (Some(x), _) => {
            println!(
                "direct copy / dd = {x:.2} (target >= {COPY_TARGET}) {}  [per-round {}; returned+sync: {}]{}",
                if x >= COPY_TARGET { "PASS" } else { "FAIL" },
                fmt_list(&copy_rounds),
                fmt_list(&copy_sync_rounds),
                row_notes(direct_copy)
            );
            Some(x >= COPY_TARGET)
        }
        (None, why) => {
            println!(
                "direct copy / dd = n/a (target >= {COPY_TARGET})  [{}]",
                why.unwrap_or_else(|| "no round with both".into())
            );
            None
        }
    };
    let direct_send = row(rows, Contender::DirectSend);
    let send_rounds = per_round(direct_send, splice_send, cpu);
    let send_ratio = median(send_rounds.clone());
    let send_verdict = match (send_ratio, unavailable(direct_send)) {
        (Some(y), _) => {
            println!(
                "direct send CPU/GiB / splice send CPU/GiB = {y:.2} (target <= {SEND_CPU_TARGET}) {}  [per-round {}]{}",
                if y <= SEND_CPU_TARGET { "PASS" } else { "FAIL" },
                fmt_list(&send_rounds),
                row_notes(direct_send)
            );
            Some(y <= SEND_CPU_TARGET)
        }
        (None, why) => {
            println!(
                "direct send CPU/GiB / splice send CPU/GiB = n/a (target <= {SEND_CPU_TARGET})  [{}]",
                why.unwrap_or_else(|| "no round with both".into())
            );
            None
        }
    };
    Targets {
        copy_ratio,
        copy_rounds,
        copy_sync_rounds,
        copy_verdict,
        send_ratio,
        send_rounds,
        send_verdict,
    }
}

/// How close direct copy and dd come to what fio says the disk can do.
fn report_bounds(rows: &[Row], (fio_read, fio_write, fio_both): Fio) {
    // A copy reads every byte and writes it once, so it cannot beat the
    // slower of fio's read and write alone. fio doing both at once (as a
    // copy does) is a reference, not a bound: how well the disk takes mixed
    // traffic depends on the depth and size of what is in flight.
    println!("  note: on loopback the kernel copies SEND_ZC data when it reaches the local socket (msg_zerocopy.rst, \"Loopback\"), mostly on the sending side's CPU (loopback delivers in the sender's softirq); spliced pages pass uncopied: over a NIC direct would not pay that copy");
    match (fio_read, fio_write) {
        (Some(r), Some(w)) => println!(
            "fio ceilings: read {r:.2} GiB/s, write {w:.2} GiB/s (a copy cannot beat min = {:.2} GiB/s); fio reading and writing at once: {}",
            r.min(w),
            fio_both.map_or_else(|| "not measured".into(), |b| format!("{b:.2} GiB/s"))
        ),
        _ => println!("fio ceilings: n/a (fio rows unavailable)"),
    }
    let bound = fio_read.zip(fio_write).map(|(r, w)| r.min(w));
    for c in [Contender::DirectCopy, Contender::Dd] {
        if let Some(g) = median_of(row(rows, c), gibps) {
            let mut parts = Vec::new();
            if let Some(m) = bound {
                parts.push(format!("{:.0}% of min(read, write)", 100.0 * g / m));
            }
            if let Some(b) = fio_both {
                parts.push(format!(
                    "{:.0}% of fio reading and writing at once",
                    100.0 * g / b
                ));
            }
            if !parts.is_empty() {
                println!("  {} = {}", c.name(), parts.join(", "));
            }
        }
    }
}

/// The figures as one line of JSON, for scripts.
fn print_json(
    cfg: &Settings,
    rows: &[Row],
    cold: bool,
    disk: serde_json::Value,
    t: &Targets,
    fio: Fio,
) {
    let (fio_read, fio_write, fio_both) = fio;
    let contenders: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.c.key(),
                "label": r.c.name(),
                "group": r.c.group(),
                "available": unavailable(r).is_none(),
                "unavailable_reason": unavailable(r),
                "rounds": r.samples.iter().map(|s| s.round).collect::<Vec<_>>(),
                "gib_per_s": median_of(r, gibps),
                "gib_per_s_rounds": r.samples.iter().map(Sample::gibps).collect::<Vec<_>>(),
                "gib_per_s_with_sync": median_of(r, gibps_sync),
                "sync_s": median_of(r, |s| s.sync_secs),
                "cpu_s_per_gib": median_of(r, cpu),
                "cpu_s_per_gib_rounds": r.samples.iter().map(Sample::cpu_per_gib).collect::<Vec<_>>(),
                "cached_src_after": median_of(r, |s| s.cached_src),
                "cached_dst_after": median_of(r, |s| s.cached_dst),
                "strategy_used": r.samples.first().and_then(|s| s.used).map(Strategy::name),
                "strategy_mismatch": strategy_mismatch(r),
            })
        })
        .collect();
    let json = serde_json::json!({
        "size_bytes": cfg.size,
        "send_size_bytes": cfg.send_size,
        "rounds": cfg.rounds,
        "cold": cold,
        "daemon_args": cfg.daemon_args,
        "disk": disk,
        "contenders": contenders,
        "checks": {
            "direct_copy_vs_dd": {
                "ratio": t.copy_ratio,
                "per_round": t.copy_rounds,
                "per_round_with_sync": t.copy_sync_rounds,
                "target": COPY_TARGET,
                "pass": t.copy_verdict,
            },
            "direct_send_cpu_vs_splice_send_cpu": {
                "ratio": t.send_ratio,
                "per_round": t.send_rounds,
                "target": SEND_CPU_TARGET,
                "pass": t.send_verdict,
            },
        },
        "fio": {
            "read_gib_per_s": fio_read,
            "write_gib_per_s": fio_write,
            "read_and_write_at_once_gib_per_s": fio_both,
        },
    });
    println!("RESULT_JSON {json}");
}
