//! Throughput of ringxfer against its peers, measured in one run.
//!
//! ```text
//! cargo bench --bench throughput
//! RINGXFER_BENCH_SIZE=256MiB RINGXFER_BENCH_ROUNDS=5 cargo bench --bench throughput
//! RINGXFER_BENCH_DAEMON_ARGS="--pipes 64 --chunks-per-job 8" cargo bench --bench throughput
//! ```
//!
//! A. File copy with the page cache hot: the daemon (`ringxferd`, spawned on a
//!    private socket), the engine embedded in this process, `std::io::copy`
//!    (copy_file_range(2) on Linux) and a read/write loop with a 1 MiB buffer.
//! B. File to a loopback TCP socket: the daemon against a sendfile(2) loop.
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

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringxfer::embedded::EmbeddedEngine;
use ringxfer_ipc::{Client, TransferOptions};

const GIB: f64 = (1u64 << 30) as f64;
/// Bytes compared at each end of every destination.
const EDGE: usize = 4096;
/// The read/write loop's and the TCP receiver's buffer.
const BUF_SIZE: usize = 1 << 20;
/// Bytes the source is generated and written in.
const GEN_BLOCK: usize = 4 << 20;
/// A verdict passes at this ratio or above.
const TARGET: f64 = 0.9;

type Result<T> = std::result::Result<T, String>;

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter here.
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("throughput bench failed: {e}");
            1
        }
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------
// Settings

struct Settings {
    size: u64,
    rounds: usize,
    daemon_args: Vec<String>,
}

fn settings() -> Result<Settings> {
    let size = match std::env::var("RINGXFER_BENCH_SIZE") {
        Ok(s) => parse_size(&s).map_err(|e| format!("RINGXFER_BENCH_SIZE={s:?}: {e}"))?,
        Err(_) => 1 << 30,
    };
    if size == 0 {
        return Err("RINGXFER_BENCH_SIZE must be more than 0 bytes".into());
    }
    let rounds = match std::env::var("RINGXFER_BENCH_ROUNDS") {
        Ok(s) => s
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("RINGXFER_BENCH_ROUNDS={s:?}: want a whole number >= 1"))?,
        Err(_) => 3,
    };
    let daemon_args = std::env::var("RINGXFER_BENCH_DAEMON_ARGS")
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    Ok(Settings {
        size,
        rounds,
        daemon_args,
    })
}

/// "1GiB", "256MiB", "512M", "64k", "1000000", "1.5GiB". K, M, G, T and their
/// KiB forms are binary; kB, MB, GB, TB are decimal.
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| "want a number with an optional unit, e.g. 256MiB".to_string())?;
    let mult: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "K" | "k" | "KiB" | "kiB" => 1 << 10,
        "M" | "m" | "MiB" => 1 << 20,
        "G" | "g" | "GiB" => 1 << 30,
        "T" | "t" | "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => return Err(format!("unknown unit {other:?}")),
    };
    Ok((num * mult as f64).round() as u64)
}

// ---------------------------------------------------------------------------
// CPU time

fn rusage(who: libc::c_int) -> f64 {
    // SAFETY: rusage is plain data for which zeroed memory is valid, and
    // getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", io::Error::last_os_error());
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds of this whole process (every thread, io_uring workers included).
fn self_cpu() -> f64 {
    rusage(libc::RUSAGE_SELF)
}

/// CPU seconds of the calling thread.
fn thread_cpu() -> f64 {
    rusage(libc::RUSAGE_THREAD)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of process `pid` (all its threads, living and exited), in
/// seconds: fields 14 and 15 of /proc/PID/stat. These are in clock ticks
/// (10 ms at 100 Hz), too coarse for a run of a few tens of milliseconds, so
/// [`DaemonCpu`] prefers the process's CPU-time clock and keeps this as the
/// fallback and a cross-check.
fn proc_stat_cpu(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("read /proc/{pid}/stat: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').ok_or("no ')' in /proc/PID/stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field N is fields[N - 3].
    let field = |n: usize| -> Result<f64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|v| v as f64)
            .ok_or_else(|| format!("field {n} of /proc/{pid}/stat is missing"))
    };
    Ok((field(14)? + field(15)?) / clock_ticks())
}

/// Reads another process's CPU time: the same sum as utime + stime of
/// /proc/PID/stat (every thread, exited ones included), but in nanoseconds,
/// from the clock clock_getcpuclockid(3) names.
struct DaemonCpu {
    pid: u32,
    clock: Option<libc::clockid_t>,
}

impl DaemonCpu {
    fn new(pid: u32) -> DaemonCpu {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: `clock` is a valid, writable clockid_t.
        let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
        let clock = (rc == 0).then_some(clock);
        let cpu = DaemonCpu { pid, clock };
        // Use the clock only if it can be read and agrees with /proc.
        match (cpu.clock_secs(), proc_stat_cpu(pid)) {
            (Some(c), Ok(p)) if (c - p).abs() < 0.05 + 0.05 * p => cpu,
            _ => DaemonCpu { pid, clock: None },
        }
    }

    fn clock_secs(&self) -> Option<f64> {
        let clock = self.clock?;
        // SAFETY: timespec is plain data; clock_gettime only writes into it.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: `ts` is writable.
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            return None;
        }
        Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }

    fn secs(&self) -> Result<f64> {
        match self.clock_secs() {
            Some(s) => Ok(s),
            None => proc_stat_cpu(self.pid),
        }
    }

    fn source(&self) -> &'static str {
        if self.clock.is_some() {
            "clock_getcpuclockid(daemon pid), ns; = utime+stime of /proc/PID/stat"
        } else {
            "utime+stime of /proc/PID/stat (clock ticks)"
        }
    }
}

// ---------------------------------------------------------------------------
// Files

/// What a destination must look like.
struct Expect {
    size: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// Writes `size` pseudo-random bytes (xorshift64 over u64 words) to `path`
/// with plain buffered writes, and returns the first and last bytes.
fn make_source(path: &Path, size: u64) -> Result<Expect> {
    let mut file = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut block = vec![0u8; GEN_BLOCK];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(GEN_BLOCK as u64) as usize;
        file.write_all(&block[..n])
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        left -= n as u64;
    }
    // Written back now, so the source's writeback does not run during the
    // measurements; its pages stay in the page cache.
    file.sync_all()
        .map_err(|e| format!("fsync {}: {e}", path.display()))?;
    drop(file);

    // Read once, so the page cache is hot and the edges are known.
    let mut file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
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
    let n = EDGE.min(size as usize);
    let mut head = vec![0u8; n];
    let mut tail = vec![0u8; n];
    file.read_exact_at(&mut head, 0)?;
    file.read_exact_at(&mut tail, size - n as u64)?;
    Ok((head, tail))
}

/// Checks a destination file's size and both ends against the source.
fn verify_file(path: &Path, want: &Expect) -> Result<()> {
    let file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len();
    if size != want.size {
        return Err(format!(
            "{} has {size} bytes, the source {}",
            path.display(),
            want.size
        ));
    }
    let (head, tail) = edges(&file, size).map_err(|e| format!("read {}: {e}", path.display()))?;
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

/// The file system type of `dir`, by name where known.
fn fs_type(dir: &Path) -> String {
    let Ok(d) = File::open(dir) else {
        return "unknown".into();
    };
    // SAFETY: statfs is plain data; fstatfs only writes into it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `d` is open and `st` writable.
    if unsafe { libc::fstatfs(d.as_raw_fd(), &mut st) } != 0 {
        return "unknown".into();
    }
    match st.f_type as i64 {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs (copy_file_range may reflink!)".into(),
        0x9123_683E => "btrfs (copy_file_range may reflink!)".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        t => format!("0x{t:x}"),
    }
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let d = File::open(dir).ok()?;
    // SAFETY: as in fs_type.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `d` is open and `st` writable.
    if unsafe { libc::fstatvfs(d.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

fn mem_available() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

// ---------------------------------------------------------------------------
// The daemon

/// A `ringxferd` this bench started; stopped (SIGTERM, then SIGKILL) on drop.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(bin: &Path, socket: &Path, extra: &[String]) -> Result<Daemon> {
        let child = Command::new(bin)
            .arg("--socket")
            .arg(socket)
            .args(extra)
            // Quiet unless something is wrong; --log-level in `extra` wins.
            .env("RINGXFER_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut daemon = Daemon { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!(
                    "{} {} exited at start-up with {status}",
                    bin.display(),
                    extra.join(" ")
                ));
            }
            if UnixStream::connect(socket).is_ok() {
                return Ok(daemon);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen on {} within 10 s",
                    bin.display(),
                    socket.display()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on the pid of our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/ringxferd`: from Cargo, or next to this bench's executable.
fn daemon_binary() -> Result<PathBuf> {
    if let Some(p) = option_env!("CARGO_BIN_EXE_ringxferd") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // target/release/deps/throughput-<hash> -> target/release/ringxferd
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("ringxferd"));
    match candidate {
        Some(p) if p.is_file() => Ok(p),
        other => Err(format!(
            "ringxferd not found (looked for {} and {}); build it first: cargo build --release --bin ringxferd",
            option_env!("CARGO_BIN_EXE_ringxferd").unwrap_or("<CARGO_BIN_EXE_ringxferd unset>"),
            other.map_or_else(|| "<none>".into(), |p| p.display().to_string())
        )),
    }
}

// ---------------------------------------------------------------------------
// The TCP receiver

/// What the receiver saw on one connection.
struct Received {
    bytes: u64,
    /// CPU seconds of the receiver thread for this connection.
    cpu: f64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// One thread accepting loopback connections one at a time, reading each to
/// EOF into one reused buffer and counting the bytes.
struct Receiver {
    addr: std::net::SocketAddr,
    accepted: mpsc::Receiver<()>,
    done: mpsc::Receiver<io::Result<Received>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Result<Receiver> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("local_addr: {e}"))?;
        let (acc_tx, accepted) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("bench-receiver".into())
            .spawn(move || {
                let mut buf = vec![0u8; BUF_SIZE];
                buf.fill(0x5A); // touch every page now, not while measuring
                let mut tail = Vec::with_capacity(EDGE);
                loop {
                    let Ok((mut conn, _)) = listener.accept() else {
                        return;
                    };
                    if stop2.load(Ordering::SeqCst) {
                        return;
                    }
                    let cpu0 = thread_cpu();
                    if acc_tx.send(()).is_err() {
                        return;
                    }
                    let mut bytes = 0u64;
                    let mut head = Vec::with_capacity(EDGE);
                    tail.clear();
                    let result = loop {
                        match conn.read(&mut buf) {
                            Ok(0) => break Ok(()),
                            Ok(n) => {
                                let got = &buf[..n];
                                if head.len() < EDGE {
                                    let take = (EDGE - head.len()).min(n);
                                    head.extend_from_slice(&got[..take]);
                                }
                                if n >= EDGE {
                                    tail.clear();
                                    tail.extend_from_slice(&got[n - EDGE..]);
                                } else {
                                    let drop_n = (tail.len() + n).saturating_sub(EDGE);
                                    tail.drain(..drop_n);
                                    tail.extend_from_slice(got);
                                }
                                bytes += n as u64;
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    let cpu = thread_cpu() - cpu0;
                    let report = result.map(|()| Received {
                        bytes,
                        cpu,
                        head,
                        tail: tail.clone(),
                    });
                    if done_tx.send(report).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("spawn receiver: {e}"))?;
        Ok(Receiver {
            addr,
            accepted,
            done,
            stop,
            thread: Some(thread),
        })
    }

    /// A new connection to the receiver, accepted and ready.
    fn connect(&self) -> Result<TcpStream> {
        let sock = TcpStream::connect(self.addr).map_err(|e| format!("connect: {e}"))?;
        self.accepted
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the receiver did not accept".to_string())?;
        Ok(sock)
    }

    /// Waits for the receiver to read the connection to EOF.
    fn finish(&self) -> Result<Received> {
        self.done
            .recv_timeout(Duration::from_secs(600))
            .map_err(|_| "the receiver did not finish".to_string())?
            .map_err(|e| format!("receiver read: {e}"))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Contenders

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    DaemonCopy,
    EmbeddedCopy,
    IoCopy,
    ReadWrite,
    /// splice(2) file -> pipe -> file on this thread, no io_uring: the
    /// ceiling of the splice path itself, to tell engine overhead from
    /// what splice costs in the kernel.
    SpliceLoop,
    DaemonSend,
    Sendfile,
}

const COPIERS: [Contender; 5] = [
    Contender::DaemonCopy,
    Contender::EmbeddedCopy,
    Contender::IoCopy,
    Contender::ReadWrite,
    Contender::SpliceLoop,
];
const SENDERS: [Contender; 2] = [Contender::DaemonSend, Contender::Sendfile];

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::DaemonCopy => "daemon copy (ringxferd)",
            Contender::EmbeddedCopy => "embedded engine copy",
            Contender::IoCopy => "std::io::copy (copy_file_range)",
            Contender::ReadWrite => "read/write loop, 1 MiB buffer",
            Contender::SpliceLoop => "splice(2) loop, 1 MiB pipe",
            Contender::DaemonSend => "daemon send (ringxferd)",
            Contender::Sendfile => "sendfile(2) loop",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Contender::DaemonCopy => "daemon_copy",
            Contender::EmbeddedCopy => "embedded_copy",
            Contender::IoCopy => "io_copy",
            Contender::ReadWrite => "read_write",
            Contender::SpliceLoop => "splice_loop",
            Contender::DaemonSend => "daemon_send",
            Contender::Sendfile => "sendfile",
        }
    }

    fn is_daemon(self) -> bool {
        matches!(self, Contender::DaemonCopy | Contender::DaemonSend)
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
    receiver: Receiver,
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
            Contender::DaemonSend | Contender::Sendfile => self.run_send(c),
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
            Contender::DaemonCopy | Contender::EmbeddedCopy => {
                let client = if c == Contender::DaemonCopy {
                    &self.daemon_client
                } else {
                    self.embedded_client.as_ref().expect("embedded client")
                };
                let done = client
                    .copy_file(&self.src, &dst, &TransferOptions::default())
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
            Contender::DaemonSend => {
                let done = self
                    .daemon_client
                    .send_file(&self.src, &sock, &TransferOptions::default())
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
                    // SAFETY: both descriptors are open for the call and
                    // `off` is a valid, writable off_t.
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
        // The daemon may still hold its duplicate of the socket: shut it down
        // rather than rely on closing ours to send the FIN.
        sock.shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        let got = self.receiver.finish()?;
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
        if got.head != self.want.head || got.tail != self.want.tail {
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

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
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

fn fmt_list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
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

fn uname() -> String {
    // SAFETY: utsname is plain data; uname only writes into it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is writable.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let s = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!("{} {} {}", s(&u.sysname), s(&u.release), s(&u.machine))
}

// ---------------------------------------------------------------------------

fn run() -> Result<()> {
    let cfg = settings()?;
    let gib = cfg.size as f64 / GIB;
    let bin = daemon_binary()?;

    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp"));
    fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("throughput-")
        .tempdir_in(&base)
        .map_err(|e| format!("tempdir in {}: {e}", base.display()))?;
    let dir = tmp.path().to_path_buf();

    if let Some(free) = free_bytes(&dir) {
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
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());

    println!("ringxfer throughput bench");
    println!(
        "  host: {}, {cpus} CPUs, {:.1} GiB MemAvailable",
        uname(),
        mem.map_or(f64::NAN, |m| m as f64 / GIB)
    );
    println!(
        "  size {} bytes ({gib:.3} GiB), {} measured round(s) after 1 warm-up round",
        cfg.size, cfg.rounds
    );
    println!("  dir {} ({})", dir.display(), fs_type(&dir));
    println!(
        "  daemon {} {}",
        bin.display(),
        if cfg.daemon_args.is_empty() {
            "(default settings)".to_string()
        } else {
            cfg.daemon_args.join(" ")
        }
    );
    println!("  note: std::io::copy between two Files uses copy_file_range(2) on Linux (an in-kernel copy)");
    println!("  note: CPU = user+sys; daemon rows = the daemon's CPU + this process's (client stub); TCP rows exclude the receiver thread");
    if let Some(m) = mem {
        if m < cfg.size.saturating_mul(3) {
            println!(
                "  WARNING: MemAvailable is below 3x the size: the page cache may not stay hot"
            );
        }
    }

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
    let receiver = Receiver::start()?;
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

    println!(
        "  daemon pid {}, CPU read with {}",
        bench.daemon_cpu.pid,
        bench.daemon_cpu.source()
    );

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
    println!(
        "(info) {} = {:.2}  [per-round {}]",
        splice_check.label,
        splice_check.ratio,
        fmt_list(&splice_check.per_round)
    );

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
            "daemon_copy_vs_best_peer": check_json(&copy_check),
            "daemon_send_vs_sendfile": check_json(&send_check),
            "daemon_copy_vs_embedded": check_json(&embedded_check),
            "daemon_copy_vs_splice_loop": check_json(&splice_check),
        },
    });
    println!("RESULT_JSON {json}");

    // Close the embedded engine's connection before joining its thread.
    bench.embedded_client = None;
    drop(engine);
    drop(bench);
    drop(tmp);
    Ok(())
}
