//! What the benches share: settings from the environment, CPU time, the
//! daemon they start, the loopback TCP receiver, the source file and the
//! checks of what was written, the machine they run on, and statistics.
//!
//! Each bench includes it with `#[path = "support/mod.rs"] mod support;`.
//! Cargo does not take a directory under `benches/` without a `main.rs` for
//! a bench of its own. Each bench is a crate of its own, so every item here
//! is used by every bench; what only one bench needs stays in that bench.
//! peers.rs is what the benches racing other programs (cp, xcp) share;
//! cache.rs drops the page cache and asks what of a file is in it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// Only the benches that race other programs use it.
#[allow(dead_code)]
pub mod peers;
// What some benches write and check, not all.
#[allow(dead_code)]
pub mod data;
// The benches that measure cold copies and watch the page cache.
#[allow(dead_code)]
pub mod cache;

pub const GIB: f64 = (1u64 << 30) as f64;
/// The size of each block of a destination compared against the source.
pub const BLOCK: usize = 4096;
/// Bytes the source is generated and written in.
pub const GEN_BLOCK: usize = 4 << 20;
/// The TCP receiver's buffer.
const RECV_BUF: usize = 1 << 20;

pub type Result<T> = std::result::Result<T, String>;

/// Ends the bench: exit status 0, or 1 after saying why `bench` failed.
pub fn exit(bench: &str, result: Result<()>) -> ! {
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{bench} bench failed: {e}");
            1
        }
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------
// Settings

/// A size from the environment variable `name` (see
/// [`ringxfer::size::parse_size`]), or `default`; never 0.
pub fn env_size(name: &str, default: u64) -> Result<u64> {
    let size = match std::env::var(name) {
        Ok(s) => ringxfer::size::parse_size(&s).map_err(|e| format!("{name}={s:?}: {e}"))?,
        Err(_) => default,
    };
    if size == 0 {
        return Err(format!("{name} must be more than 0 bytes"));
    }
    Ok(size)
}

/// RINGXFER_BENCH_ROUNDS, the measured rounds: 3 unless set.
pub fn env_rounds() -> Result<usize> {
    match std::env::var("RINGXFER_BENCH_ROUNDS") {
        Ok(s) => s
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("RINGXFER_BENCH_ROUNDS={s:?}: want a whole number >= 1")),
        Err(_) => Ok(3),
    }
}

/// RINGXFER_BENCH_DAEMON_ARGS, split at white space: extra `ringxferd` flags.
pub fn env_daemon_args() -> Vec<String> {
    std::env::var("RINGXFER_BENCH_DAEMON_ARGS")
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// CPU time

pub fn rusage(who: libc::c_int) -> f64 {
    // SAFETY: rusage is plain data (all zeroes is valid); getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", io::Error::last_os_error());
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds of this whole process (every thread, io_uring workers included).
pub fn self_cpu() -> f64 {
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
/// from the clock clock_getcpuclockid(3) names, when that clock can be read
/// and agrees with /proc.
pub struct DaemonCpu {
    pid: u32,
    clock: Option<libc::clockid_t>,
}

impl DaemonCpu {
    pub fn new(pid: u32) -> DaemonCpu {
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

    pub fn secs(&self) -> Result<f64> {
        match self.clock_secs() {
            Some(s) => Ok(s),
            None => proc_stat_cpu(self.pid),
        }
    }

    /// Prints the daemon's pid and what its CPU is read with; `clock_note`
    /// follows the clock's name when the clock is used.
    pub fn print_source(&self, clock_note: &str) {
        let source = if self.clock.is_some() {
            format!("clock_getcpuclockid(daemon pid), ns{clock_note}")
        } else {
            "utime+stime of /proc/PID/stat (clock ticks)".to_string()
        };
        println!("  daemon pid {}, CPU read with {source}", self.pid);
    }
}

// ---------------------------------------------------------------------------
// The daemon

/// A `ringxferd` this bench started; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    child: Child,
}

impl Daemon {
    pub fn start(bin: &Path, socket: &Path, extra: &[String]) -> Result<Daemon> {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Stops a child this bench started: SIGTERM, up to 5 s to exit, then
/// SIGKILL; reaped either way.
pub fn stop_child(child: &mut std::process::Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on the pid of our own, not yet reaped, child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// RINGXFER_BENCH_BIN_DIR: a directory holding another build's `ringxferd`
/// and `ringxfer`, run instead of this build's (benches/before_after.sh uses
/// it to time an older commit with the same bench code, interleaved).
pub fn bin_override(name: &str) -> Result<Option<PathBuf>> {
    let Some(dir) = std::env::var_os("RINGXFER_BENCH_BIN_DIR") else {
        return Ok(None);
    };
    let p = Path::new(&dir).join(name);
    if p.is_file() {
        Ok(Some(p))
    } else {
        Err(format!(
            "RINGXFER_BENCH_BIN_DIR={}: no {name} there",
            Path::new(&dir).display()
        ))
    }
}

/// `target/<profile>/ringxferd`: RINGXFER_BENCH_BIN_DIR's, from Cargo, or
/// next to this bench's executable.
pub fn daemon_binary() -> Result<PathBuf> {
    if let Some(p) = bin_override("ringxferd")? {
        return Ok(p);
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_ringxferd") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // target/release/deps/<bench>-<hash> -> target/release/ringxferd
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

/// Prints the daemon's path and the flags it was started with.
pub fn print_daemon(bin: &Path, args: &[String]) {
    println!(
        "  daemon {} {}",
        bin.display(),
        if args.is_empty() {
            "(default settings)".to_string()
        } else {
            args.join(" ")
        }
    );
}

// ---------------------------------------------------------------------------
// The TCP receiver

/// What the receiver keeps of the bytes of one connection.
pub trait Sink: Send + 'static {
    /// `data` came next, at offset `pos` of the stream.
    fn feed(&mut self, pos: u64, data: &[u8]);
}

/// What the receiver saw on one connection.
pub struct Received<S> {
    pub bytes: u64,
    /// CPU seconds of the receiver thread for this connection.
    pub cpu: f64,
    pub kept: S,
}

/// One thread accepting loopback connections one at a time, reading each to
/// EOF into one reused buffer, counting the bytes and handing them to a new
/// [`Sink`] for each connection.
pub struct Receiver<S> {
    addr: std::net::SocketAddr,
    accepted: mpsc::Receiver<()>,
    done: mpsc::Receiver<io::Result<Received<S>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// How long [`Receiver::finish`] waits.
    timeout: Duration,
}

impl<S: Sink> Receiver<S> {
    /// `new_sink` makes the sink of each connection; `timeout` is how long a
    /// connection may take to reach its end.
    pub fn start(
        timeout: Duration,
        mut new_sink: impl FnMut() -> S + Send + 'static,
    ) -> Result<Receiver<S>> {
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
                let mut buf = vec![0u8; RECV_BUF];
                buf.fill(0x5A); // touch every page now, not while measuring
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
                    let mut pos = 0u64;
                    let mut kept = new_sink();
                    let result = loop {
                        match conn.read(&mut buf) {
                            Ok(0) => break Ok(()),
                            Ok(n) => {
                                kept.feed(pos, &buf[..n]);
                                pos += n as u64;
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    let cpu = thread_cpu() - cpu0;
                    let report = result.map(|()| Received {
                        bytes: pos,
                        cpu,
                        kept,
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
            timeout,
        })
    }

    /// A new connection to the receiver, accepted and ready.
    pub fn connect(&self) -> Result<TcpStream> {
        let sock = TcpStream::connect(self.addr).map_err(|e| format!("connect: {e}"))?;
        self.accepted
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the receiver did not accept".to_string())?;
        Ok(sock)
    }

    /// Waits for the receiver to read the connection to EOF.
    pub fn finish(&self) -> Result<Received<S>> {
        self.done
            .recv_timeout(self.timeout)
            .map_err(|_| "the receiver did not finish".to_string())?
            .map_err(|e| format!("receiver read: {e}"))
    }

    /// Ends a send on `sock` and waits for the receiver to read it to EOF.
    pub fn finish_send(&self, sock: &TcpStream) -> Result<Received<S>> {
        // The daemon may still hold its duplicate of the socket: shut it down
        // rather than rely on closing ours to send the FIN.
        sock.shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        self.finish()
    }
}

impl<S> Drop for Receiver<S> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Files

/// A new directory for one run's files, removed on drop: under
/// RINGXFER_BENCH_DIR when set (another file system, say, away from a
/// neighbour's deletions), else under `target/`, on the disk that holds it,
/// not /tmp (which may be tmpfs).
pub fn bench_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let base = std::env::var_os("RINGXFER_BENCH_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp"));
    fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .map_err(|e| format!("tempdir in {}: {e}", base.display()))
}

/// Writes `size` pseudo-random bytes (xorshift64 over u64 words) to `path`
/// with plain buffered writes and syncs them, so no writeback of the source
/// runs during the measurements.
pub fn write_source(path: &Path, size: u64) -> Result<()> {
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
    file.sync_all()
        .map_err(|e| format!("fsync {}: {e}", path.display()))
}

/// Opens a destination and checks that it has the source's `size` bytes.
pub fn open_sized(path: &Path, size: u64) -> Result<File> {
    let file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let got = file
        .metadata()
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len();
    if got != size {
        return Err(format!(
            "{} has {got} bytes, the source {size}",
            path.display()
        ));
    }
    Ok(file)
}

/// The bytes of `file` at `off`, at most one block, not past `end`.
pub fn read_block(file: &File, off: u64, end: u64) -> io::Result<Vec<u8>> {
    let n = (end - off).min(BLOCK as u64) as usize;
    let mut buf = vec![0u8; n];
    file.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

// ---------------------------------------------------------------------------
// The machine

/// The file system type of `dir`, by name where known.
pub fn fs_type(dir: &Path) -> String {
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
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        t => format!("0x{t:x}"),
    }
}

/// (total, available to this user) bytes of the file system holding `dir`.
pub fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    let d = File::open(dir).ok()?;
    // SAFETY: statvfs is plain data; fstatvfs only writes into it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `d` is open and `st` writable.
    if unsafe { libc::fstatvfs(d.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

pub fn mem_available() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
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

/// The load averages over 1, 5 and 15 minutes, as /proc/loadavg says them:
/// these machines are shared, and a figure means little without the load.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".into(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// Prints the kernel, the CPUs, `mem` (MemAvailable, where known) and the
/// load.
pub fn print_host(mem: Option<u64>) {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "  host: {}, {cpus} CPUs, {:.1} GiB MemAvailable, load {}",
        uname(),
        mem.map_or(f64::NAN, |m| m as f64 / GIB),
        loadavg()
    );
}

// ---------------------------------------------------------------------------
// Statistics

/// The median of `v`, None when it is empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

pub fn fmt_list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}
