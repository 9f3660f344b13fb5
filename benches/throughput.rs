//! Throughput of ringxfer against its peers, measured in one run.
//!
//! ```text
//! cargo bench --bench throughput
//! RINGXFER_BENCH_SIZE=256MiB RINGXFER_BENCH_ROUNDS=5 cargo bench --bench throughput
//! RINGXFER_BENCH_DAEMON_ARGS="--pipes 64 --chunks-per-job 8" cargo bench --bench throughput
//! ```
//!
//! A. File copy with the page cache hot: the daemon (`ringxferd`, spawned on a
//!    private socket; `auto`, and `--strategy splice` beside it), the engine
//!    embedded in this process, `std::io::copy` (copy_file_range(2) on
//!    Linux) and a read/write loop with a 1 MiB buffer.
//! B. File to a loopback TCP socket: the daemon (`auto`, splice, and
//!    sendfile on its workers) against a sendfile(2) loop.
//!
//! These machines are shared and noisy, and the VM charges a host fault on
//! the first touch of freshly allocated pages, so: every contender runs once
//! unmeasured first, then the contenders take turns round by round (the
//! order rotating), and the verdicts are ratios within a round. Before each
//! copy the previous destination is deleted (and the file system synced), so
//! every contender pays the same page-cache allocation for its destination.
//! Every result is checked (size, first and last 4 KiB), so a broken transfer
//! cannot look fast.
//!
//! CPU is user + system time per GiB moved: `getrusage(RUSAGE_SELF)` deltas
//! of this process for in-process contenders (the embedded engine's thread and
//! any io_uring workers included), and for the daemon its utime + stime from
//! `/proc/PID/stat` plus this process's own delta (the client stub). In the
//! TCP cases the receiver thread's CPU, measured with `RUSAGE_THREAD` inside
//! it, is subtracted, so only the sending side is counted.

#[path = "support/mod.rs"]
mod support;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringxfer::embedded::EmbeddedEngine;
use ringxfer_ipc::{Client, Strategy, TransferOptions};

use support::{
    bench_dir, daemon_binary, disk_space, env_daemon_args, env_rounds, env_size, fmt_list, fs_type,
    mem_available, print_daemon, print_host, read_block, self_cpu, write_source, Daemon, DaemonCpu,
    Receiver, Result, Sink, GEN_BLOCK, GIB,
};

/// Bytes compared at each end of every destination: one block.
const EDGE: usize = support::BLOCK;
/// The read/write loop's buffer.
const BUF_SIZE: usize = 1 << 20;
/// A verdict passes at this ratio or above.
const TARGET: f64 = 0.9;

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
}

fn settings() -> Result<Settings> {
    Ok(Settings {
        size: env_size("RINGXFER_BENCH_SIZE", 1 << 30)?,
        rounds: env_rounds()?,
        daemon_args: env_daemon_args(),
    })
}

// ---------------------------------------------------------------------------
// Files

/// What a destination must look like.
struct Expect {
    size: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// Writes and syncs the source (its pages stay in the page cache), reads it
/// once so the page cache is hot, and returns its first and last bytes.
fn make_source(path: &Path, size: u64) -> Result<Expect> {
    write_source(path, size)?;

    // Read once, so the page cache is hot and the edges are known.
    let mut file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut block = vec![0u8; GEN_BLOCK];
    let mut read = 0u64;
    loop {
        match file.read(&mut block) {
            Ok(0) => break,
            Ok(n) => read += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read {}: {e}", path.display())),
        }
    }
    if read != size {
        return Err(format!(
            "{} reads back {read} bytes, not {size}",
            path.display()
        ));
    }
    let (head, tail) = edges(&file, size).map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(Expect { size, head, tail })
}

/// The first and last `EDGE` bytes of a file of `size` bytes.
fn edges(file: &File, size: u64) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let n = EDGE.min(size as usize) as u64;
    Ok((
        read_block(file, 0, size)?,
        read_block(file, size - n, size)?,
    ))
}

/// Checks a destination file's size and both ends against the source.
fn verify_file(path: &Path, want: &Expect) -> Result<()> {
    let file = support::open_sized(path, want.size)?;
    let (head, tail) =
        edges(&file, want.size).map_err(|e| format!("read {}: {e}", path.display()))?;
    if head != want.head {
        return Err(format!("the first bytes of {} differ", path.display()));
    }
    if tail != want.tail {
        return Err(format!("the last bytes of {} differ", path.display()));
    }
    Ok(())
}

fn syncfs(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    // SAFETY: `d` is an open descriptor for the whole call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(format!(
            "syncfs {}: {}",
            dir.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
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
// The TCP receiver

/// What the receiver keeps of a connection: its first and last `EDGE` bytes.
struct Edges {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Edges {
    fn new() -> Edges {
        Edges {
            head: Vec::with_capacity(EDGE),
            tail: Vec::with_capacity(EDGE),
        }
    }
}

impl Sink for Edges {
    fn feed(&mut self, _pos: u64, got: &[u8]) {
        let n = got.len();
        if self.head.len() < EDGE {
            let take = (EDGE - self.head.len()).min(n);
            self.head.extend_from_slice(&got[..take]);
        }
        if n >= EDGE {
            self.tail.clear();
            self.tail.extend_from_slice(&got[n - EDGE..]);
        } else {
            let drop_n = (self.tail.len() + n).saturating_sub(EDGE);
            self.tail.drain(..drop_n);
            self.tail.extend_from_slice(got);
        }
    }
}

// ---------------------------------------------------------------------------
// Contenders

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    DaemonCopy,
    /// The daemon with `--strategy splice`: what `auto` is weighed against.
    DaemonCopySplice,
    EmbeddedCopy,
    IoCopy,
    ReadWrite,
    /// splice(2) file -> pipe -> file on this thread, no io_uring: the
    /// ceiling of the splice path itself, to tell engine overhead from
    /// what splice costs in the kernel.
    SpliceLoop,
    DaemonSend,
    DaemonSendSplice,
    /// The daemon with `--strategy sendfile`: sendfile on its workers.
    DaemonSendfile,
    Sendfile,
}

const COPIERS: [Contender; 6] = [
    Contender::DaemonCopy,
    Contender::DaemonCopySplice,
    Contender::EmbeddedCopy,
    Contender::IoCopy,
    Contender::ReadWrite,
    Contender::SpliceLoop,
];
const SENDERS: [Contender; 4] = [
    Contender::DaemonSend,
    Contender::DaemonSendSplice,
    Contender::DaemonSendfile,
    Contender::Sendfile,
];

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::DaemonCopy => "daemon copy (ringxferd)",
            Contender::DaemonCopySplice => "daemon copy, splice",
            Contender::EmbeddedCopy => "embedded engine copy",
            Contender::IoCopy => "std::io::copy (copy_file_range)",
            Contender::ReadWrite => "read/write loop, 1 MiB buffer",
            Contender::SpliceLoop => "splice(2) loop, 1 MiB pipe",
            Contender::DaemonSend => "daemon send (ringxferd)",
            Contender::DaemonSendSplice => "daemon send, splice",
            Contender::DaemonSendfile => "daemon send, sendfile",
            Contender::Sendfile => "sendfile(2) loop",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Contender::DaemonCopy => "daemon_copy",
            Contender::DaemonCopySplice => "daemon_copy_splice",
            Contender::EmbeddedCopy => "embedded_copy",
            Contender::IoCopy => "io_copy",
            Contender::ReadWrite => "read_write",
            Contender::SpliceLoop => "splice_loop",
            Contender::DaemonSend => "daemon_send",
            Contender::DaemonSendSplice => "daemon_send_splice",
            Contender::DaemonSendfile => "daemon_sendfile",
            Contender::Sendfile => "sendfile",
        }
    }

    fn is_daemon(self) -> bool {
        matches!(
            self,
            Contender::DaemonCopy
                | Contender::DaemonCopySplice
                | Contender::DaemonSend
                | Contender::DaemonSendSplice
                | Contender::DaemonSendfile
        )
    }

    /// The options the daemon's job is submitted with.
    fn options(self) -> TransferOptions {
        match self {
            Contender::DaemonCopySplice | Contender::DaemonSendSplice => TransferOptions {
                strategy: Strategy::Splice,
                ..TransferOptions::default()
            },
            Contender::DaemonSendfile => TransferOptions {
                strategy: Strategy::Sendfile,
                ..TransferOptions::default()
            },
            _ => TransferOptions::default(),
        }
    }
}

/// One measured run.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    cpu: f64,
}

/// Everything the contenders need, made once.
struct Bench {
    dir: PathBuf,
    src: PathBuf,
    want: Expect,
    // Clients before the daemon: fields drop in this order.
    daemon_client: Client,
    embedded_client: Option<Client>,
    /// Kept for its Drop, which stops the daemon.
    _daemon: Daemon,
    daemon_cpu: DaemonCpu,
    receiver: Receiver<Edges>,
    buf: Vec<u8>,
    /// The destination of the previous copy, deleted before the next one.
    prev_dst: Option<PathBuf>,
    /// What the daemon said about its last job: strategy and its own elapsed.
    last_note: String,
}

impl Bench {
    /// Checks an engine's completion and notes what it reported.
    fn record(&mut self, c: Contender, done: &ringxfer_ipc::Completion) -> Result<()> {
        if done.bytes != self.want.size {
            return Err(format!(
                "{}: completed with {} bytes, want {}",
                c.name(),
                done.bytes,
                self.want.size
            ));
        }
        self.last_note = format!(
            "strategy {}, engine-reported {:.3} s",
            done.strategy,
            done.elapsed.as_secs_f64()
        );
        Ok(())
    }

    fn run(&mut self, c: Contender) -> Result<Sample> {
        match c {
            Contender::DaemonSend
            | Contender::DaemonSendSplice
            | Contender::DaemonSendfile
            | Contender::Sendfile => self.run_send(c),
            _ => self.run_copy(c),
        }
    }

    fn cpu_now(&self, c: Contender) -> Result<f64> {
        let own = self_cpu();
        Ok(if c.is_daemon() {
            own + self.daemon_cpu.secs()?
        } else {
            own
        })
    }

    fn run_copy(&mut self, c: Contender) -> Result<Sample> {
        if let Some(prev) = self.prev_dst.take() {
            fs::remove_file(&prev).map_err(|e| format!("remove {}: {e}", prev.display()))?;
        }
        syncfs(&self.dir)?;
        let dst = self.dir.join(format!("dst-{}.bin", c.key()));
        // A leftover from an earlier, failed run.
        let _ = fs::remove_file(&dst);
        self.prev_dst = Some(dst.clone());

        let cpu0 = self.cpu_now(c)?;
        let t0 = Instant::now();
        match c {
            Contender::DaemonCopy | Contender::DaemonCopySplice | Contender::EmbeddedCopy => {
                let client = if c == Contender::EmbeddedCopy {
                    self.embedded_client.as_ref().expect("embedded client")
                } else {
                    &self.daemon_client
                };
                let done = client
                    .copy_file(&self.src, &dst, &c.options())
                    .map_err(|e| format!("{}: submit: {e}", c.name()))?
                    .wait()
                    .map_err(|e| format!("{}: {e}", c.name()))?;
                self.record(c, &done)?;
            }
            Contender::IoCopy => {
                let mut from = File::open(&self.src).map_err(|e| format!("open src: {e}"))?;
                let mut to = File::create(&dst).map_err(|e| format!("create dst: {e}"))?;
                let n = io::copy(&mut from, &mut to).map_err(|e| format!("io::copy: {e}"))?;
                if n != self.want.size {
                    return Err(format!("io::copy copied {n} bytes"));
                }
                self.last_note.clear();
            }
            Contender::ReadWrite => {
                let mut from = File::open(&self.src).map_err(|e| format!("open src: {e}"))?;
                let mut to = File::create(&dst).map_err(|e| format!("create dst: {e}"))?;
                loop {
                    match from.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => to
                            .write_all(&self.buf[..n])
                            .map_err(|e| format!("write: {e}"))?,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("read: {e}")),
                    }
                }
                self.last_note.clear();
            }
            Contender::SpliceLoop => {
                let from = File::open(&self.src).map_err(|e| format!("open src: {e}"))?;
                let to = File::create(&dst).map_err(|e| format!("create dst: {e}"))?;
                splice_loop(&from, &to, self.want.size)?;
                self.last_note.clear();
            }
            _ => unreachable!(),
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu = self.cpu_now(c)? - cpu0;
        verify_file(&dst, &self.want).map_err(|e| format!("{}: {e}", c.name()))?;
        Ok(Sample { secs, cpu })
    }

    fn run_send(&mut self, c: Contender) -> Result<Sample> {
        let sock = self.receiver.connect()?;
        let cpu0 = self.cpu_now(c)?;
        let t0 = Instant::now();
        match c {
            Contender::DaemonSend | Contender::DaemonSendSplice | Contender::DaemonSendfile => {
                let done = self
                    .daemon_client
                    .send_file(&self.src, &sock, &c.options())
                    .map_err(|e| format!("{}: submit: {e}", c.name()))?
                    .wait()
                    .map_err(|e| format!("{}: {e}", c.name()))?;
                self.record(c, &done)?;
            }
            Contender::Sendfile => {
                let file = File::open(&self.src).map_err(|e| format!("open src: {e}"))?;
                let mut off: libc::off_t = 0;
                while (off as u64) < self.want.size {
                    let left = (self.want.size - off as u64).min(1 << 30) as usize;
                    // SAFETY: both descriptors are open for the call; `off` is a valid, writable off_t.
                    let n = unsafe {
                        libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, left)
                    };
                    if n < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        return Err(format!("sendfile: {e}"));
                    }
                    if n == 0 {
                        return Err(format!("sendfile: unexpected end of file at {off}"));
                    }
                }
                self.last_note.clear();
            }
            _ => unreachable!(),
        }
        let got = self.receiver.finish_send(&sock)?;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = self.cpu_now(c)? - cpu0 - got.cpu;
        drop(sock);
        if got.bytes != self.want.size {
            return Err(format!(
                "{}: the receiver got {} bytes, want {}",
                c.name(),
                got.bytes,
                self.want.size
            ));
        }
        if got.kept.head != self.want.head || got.kept.tail != self.want.tail {
            return Err(format!(
                "{}: the bytes received differ from the source",
                c.name()
            ));
        }
        Ok(Sample { secs, cpu })
    }
}

// ---------------------------------------------------------------------------
// Statistics and the report

/// Copies `size` bytes with splice(2) through one pipe grown to 1 MiB,
/// blocking, on this thread: what the engine does, minus the ring.
fn splice_loop(from: &File, to: &File, size: u64) -> Result<()> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(format!("pipe2: {}", io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are new and ours alone.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ takes an int and touches no memory of ours.
    let cap = unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    if cap < 0 {
        return Err(format!("F_SETPIPE_SZ: {}", io::Error::last_os_error()));
    }
    let mut off: i64 = 0;
    while (off as u64) < size {
        let want = (size - off as u64).min(cap as u64) as usize;
        let mut in_off = off;
        // SAFETY: valid descriptors; the offset pointer refers to a live i64.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                &mut in_off,
                wr.as_raw_fd(),
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        if n <= 0 {
            return Err(format!("splice in: {n} {}", io::Error::last_os_error()));
        }
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above.
            let m = unsafe {
                libc::splice(
                    rd.as_raw_fd(),
                    std::ptr::null_mut(),
                    to.as_raw_fd(),
                    &mut off,
                    left,
                    0,
                )
            };
            if m <= 0 {
                return Err(format!("splice out: {m} {}", io::Error::last_os_error()));
            }
            left -= m as usize;
        }
    }
    Ok(())
}

/// The median of `v`, NaN when it is empty.
fn median(v: Vec<f64>) -> f64 {
    support::median(v).unwrap_or(f64::NAN)
}

struct Summary {
    c: Contender,
    gibps: Vec<f64>,
    cpu_per_gib: Vec<f64>,
    gibps_median: f64,
    cpu_median: f64,
    ratio_to_best: f64,
}

fn summarize(group: &[Contender], samples: &[Vec<Sample>], size: u64) -> Vec<Summary> {
    let gib = size as f64 / GIB;
    let mut out: Vec<Summary> = group
        .iter()
        .zip(samples)
        .map(|(&c, s)| {
            let gibps: Vec<f64> = s.iter().map(|s| gib / s.secs).collect();
            let cpu_per_gib: Vec<f64> = s.iter().map(|s| s.cpu / gib).collect();
            Summary {
                c,
                gibps_median: median(gibps.clone()),
                cpu_median: median(cpu_per_gib.clone()),
                gibps,
                cpu_per_gib,
                ratio_to_best: f64::NAN,
            }
        })
        .collect();
    let best = out.iter().map(|s| s.gibps_median).fold(0.0, f64::max);
    for s in &mut out {
        s.ratio_to_best = s.gibps_median / best;
    }
    out
}

/// A target check: `subject` against the best (by median) of `peers`,
/// as the median of the per-round throughput ratios.
struct Check {
    label: &'static str,
    peer: Contender,
    per_round: Vec<f64>,
    ratio: f64,
    ratio_of_medians: f64,
}

fn check(label: &'static str, all: &[&Summary], subject: Contender, peers: &[Contender]) -> Check {
    let find = |c: Contender| *all.iter().find(|s| s.c == c).expect("summary");
    let s = find(subject);
    let peer = peers
        .iter()
        .map(|&p| find(p))
        .max_by(|a, b| a.gibps_median.total_cmp(&b.gibps_median))
        .expect("a peer");
    let per_round: Vec<f64> = s
        .gibps
        .iter()
        .zip(&peer.gibps)
        .map(|(a, b)| a / b)
        .collect();
    Check {
        label,
        peer: peer.c,
        ratio: median(per_round.clone()),
        per_round,
        ratio_of_medians: s.gibps_median / peer.gibps_median,
    }
}

fn print_group(title: &str, rows: &[Summary]) {
    println!("{title}");
    for s in rows {
        println!(
            "  {:<34} {:>7.2} {:>15.2} {:>11.3}",
            s.c.name(),
            s.gibps_median,
            s.ratio_to_best,
            s.cpu_median
        );
    }
}

// ---------------------------------------------------------------------------

/// Checks there is room for the bench, and says what it will measure on
/// which machine.
fn intro(cfg: &Settings, bin: &Path, dir: &Path) -> Result<()> {
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
        "  size {} bytes ({gib:.3} GiB), {} measured round(s) after 1 warm-up round",
        cfg.size, cfg.rounds
    );
    println!("  dir {} ({})", dir.display(), fs_type_note(dir));
    print_daemon(bin, &cfg.daemon_args);
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

/// The warm-up round, then `cfg.rounds` measured ones; each group's
/// contenders take turns, in an order that rotates every round.
fn measure(bench: &mut Bench, cfg: &Settings) -> Result<[Vec<Vec<Sample>>; 2]> {
    let gib = cfg.size as f64 / GIB;
    let copiers = COPIERS.to_vec();
    let groups: [&[Contender]; 2] = [&copiers, &SENDERS];
    let mut samples: [Vec<Vec<Sample>>; 2] = [
        vec![Vec::new(); copiers.len()],
        vec![Vec::new(); SENDERS.len()],
    ];
    for round in 0..=cfg.rounds {
        let label = if round == 0 {
            "warm-up".to_string()
        } else {
            format!("round {round}/{}", cfg.rounds)
        };
        // Rotate the order so no contender always runs first or last.
        for (g, group) in groups.iter().enumerate() {
            let n = group.len();
            for k in 0..n {
                let i = (k + round) % n;
                let c = group[i];
                let s = bench.run(c)?;
                println!(
                    "  {label:<11} {:<34} {:>6.2} GiB/s {:>7.3} s  cpu {:.3} s/GiB{}",
                    c.name(),
                    gib / s.secs,
                    s.secs,
                    s.cpu / gib,
                    if bench.last_note.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", bench.last_note)
                    }
                );
                if round > 0 {
                    samples[g][i].push(s);
                }
            }
        }
    }
    if let Some(prev) = bench.prev_dst.take() {
        let _ = fs::remove_file(prev);
    }

    Ok(samples)
}

fn report(cfg: &Settings, samples: &[Vec<Vec<Sample>>; 2]) {
    let copiers = COPIERS.to_vec();
    let copy = summarize(&copiers, &samples[0], cfg.size);
    let send = summarize(&SENDERS, &samples[1], cfg.size);
    let all: Vec<&Summary> = copy.iter().chain(send.iter()).collect();
    let copy_check = check(
        "daemon copy / best peer",
        &all,
        Contender::DaemonCopy,
        &[Contender::IoCopy, Contender::ReadWrite],
    );
    let embedded_check = check(
        "daemon copy / embedded engine",
        &all,
        Contender::DaemonCopy,
        &[Contender::EmbeddedCopy],
    );
    let splice_check = check(
        "daemon copy / splice(2) loop",
        &all,
        Contender::DaemonCopy,
        &[Contender::SpliceLoop],
    );
    let auto_copy_check = check(
        "daemon copy, auto / splice",
        &all,
        Contender::DaemonCopy,
        &[Contender::DaemonCopySplice],
    );
    let auto_send_check = check(
        "daemon send, sendfile / splice",
        &all,
        Contender::DaemonSendfile,
        &[Contender::DaemonSendSplice],
    );
    let send_check = check(
        "daemon send / sendfile",
        &all,
        Contender::DaemonSend,
        &[Contender::Sendfile],
    );

    println!();
    println!(
        "results: {} bytes, median of {} round(s)",
        cfg.size, cfg.rounds
    );
    println!(
        "  {:<34} {:>7} {:>15} {:>11}",
        "contender", "GiB/s", "ratio-to-best", "CPU s/GiB"
    );
    print_group("A. file copy, page cache hot", &copy);
    print_group("B. file -> loopback TCP", &send);
    println!();
    for k in [&copy_check, &send_check] {
        println!(
            "{} = {:.2} (target >= {TARGET})  [{}: {}; per-round {}; ratio of medians {:.2}]",
            k.label,
            k.ratio,
            if k.peer == Contender::Sendfile {
                "peer"
            } else {
                "best peer"
            },
            k.peer.name(),
            fmt_list(&k.per_round),
            k.ratio_of_medians
        );
    }
    println!(
        "(info) {} = {:.2}  [per-round {}]",
        embedded_check.label,
        embedded_check.ratio,
        fmt_list(&embedded_check.per_round)
    );
    for k in [&splice_check, &auto_copy_check, &auto_send_check] {
        println!(
            "(info) {} = {:.2}  [per-round {}]",
            k.label,
            k.ratio,
            fmt_list(&k.per_round)
        );
    }

    print_json(
        cfg,
        &all,
        [&copy_check, &send_check, &embedded_check, &splice_check],
    );
}

/// The figures as one line of JSON, for scripts.
fn print_json(cfg: &Settings, all: &[&Summary], checks: [&Check; 4]) {
    let copiers = COPIERS.to_vec();
    let [copy_check, send_check, embedded_check, splice_check] = checks;
    let contenders: Vec<serde_json::Value> = all
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.c.key(),
                "label": s.c.name(),
                "group": if copiers.contains(&s.c) { "copy" } else { "send" },
                "gib_per_s": s.gibps_median,
                "gib_per_s_rounds": s.gibps,
                "ratio_to_best": s.ratio_to_best,
                "cpu_s_per_gib": s.cpu_median,
                "cpu_s_per_gib_rounds": s.cpu_per_gib,
            })
        })
        .collect();
    let check_json = |k: &Check| {
        serde_json::json!({
            "ratio": k.ratio,
            "per_round": k.per_round,
            "ratio_of_medians": k.ratio_of_medians,
            "peer": k.peer.key(),
            "target": TARGET,
            "pass": k.ratio >= TARGET,
        })
    };
    let json = serde_json::json!({
        "size_bytes": cfg.size,
        "rounds": cfg.rounds,
        "daemon_args": cfg.daemon_args,
        "contenders": contenders,
        "checks": {
            "daemon_copy_vs_best_peer": check_json(copy_check),
            "daemon_send_vs_sendfile": check_json(send_check),
            "daemon_copy_vs_embedded": check_json(embedded_check),
            "daemon_copy_vs_splice_loop": check_json(splice_check),
        },
    });
    println!("RESULT_JSON {json}");
}

fn run() -> Result<()> {
    let cfg = settings()?;
    let bin = daemon_binary()?;

    let tmp = bench_dir("throughput-")?;
    let dir = tmp.path().to_path_buf();

    intro(&cfg, &bin, &dir)?;
    let src = dir.join("source.bin");
    let t = Instant::now();
    let want = make_source(&src, cfg.size)?;
    println!(
        "  source written, synced and read once in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let socket = dir.join("d.sock");
    let daemon = Daemon::start(&bin, &socket, &cfg.daemon_args)?;
    let daemon_client =
        Client::connect(&socket).map_err(|e| format!("connect to the daemon: {e}"))?;
    let (engine, stream) =
        EmbeddedEngine::start().map_err(|e| format!("start the embedded engine: {e}"))?;
    let embedded_client =
        Client::from_stream(stream).map_err(|e| format!("embedded engine handshake: {e}"))?;
    let receiver = Receiver::start(Duration::from_secs(600), Edges::new)?;
    let mut buf = vec![0u8; BUF_SIZE];
    buf.fill(0xA5); // touch every page now, not while measuring

    let mut bench = Bench {
        dir: dir.clone(),
        src,
        want,
        daemon_client,
        embedded_client: Some(embedded_client),
        daemon_cpu: DaemonCpu::new(daemon.pid()),
        _daemon: daemon,
        receiver,
        buf,
        prev_dst: None,
        last_note: String::new(),
    };

    bench
        .daemon_cpu
        .print_source("; = utime+stime of /proc/PID/stat");

    let samples = measure(&mut bench, &cfg)?;
    report(&cfg, &samples);

    // Close the embedded engine's connection before joining its thread.
    bench.embedded_client = None;
    drop(engine);
    drop(bench);
    drop(tmp);
    Ok(())
}
