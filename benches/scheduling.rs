//! How the daemon shares itself among jobs: fairness between equal jobs,
//! the latency of small jobs behind a huge one, and rate-limit accuracy.
//!
//! ```text
//! cargo bench --bench scheduling
//! RINGXFER_BENCH_FAIR_SIZE=2GiB RINGXFER_BENCH_RATE_SECS=5 cargo bench --bench scheduling
//! RINGXFER_BENCH_DAEMON_ARGS="--max-inflight 8" cargo bench --bench scheduling
//! RINGXFER_BENCH_PARTS=E RINGXFER_BENCH_TREE_FILES=4000 cargo bench --bench scheduling
//! ```
//!
//! A. Fairness: four equal jobs at once, each from its own source, each
//!    from its own connection. Every second the bytes each job moved are
//!    read from the daemon's job listing (one snapshot, so the four counts
//!    are taken at the same instant), and Jain's index of the four shares is
//!    computed per 1-s window: 1 when equal, 0.25 when one job takes all.
//!    Workloads: zero pages (a sparse memfd) into /dev/null, where only the
//!    daemon limits the rate, with the default in-flight cap and with
//!    `--max-inflight 3` (three slots for four jobs, so the scheduler always
//!    chooses); and file-to-file copies with the page cache hot, which run
//!    at memory speed and are over in about a second, so their windows are
//!    100 ms. Windows count while all four jobs run.
//! B. Latency: 100 copies of 64 KiB files submitted at once, alone and then
//!    behind a huge job (zero pages into /dev/null, endless) submitted
//!    first. Per-job latency is from the submit to the completion event; the
//!    ratio busy/alone is the price the huge job makes small ones pay.
//! C. Rate-limit accuracy: one job (zero pages into a loopback TCP socket
//!    read by a thread) at 10, 20 and 50 MiB/s; the receiver's byte count
//!    over RINGXFER_BENCH_RATE_SECS (default 10 s), starting 1 s after the
//!    first byte, divided by the limit.
//!
//! D. Users (as root: clients connect under other uids, see `connect_as`).
//!    Fairness across users with equal demand: four users (uids 65531 to
//!    65534), each saturating (endless zero pages into /dev/null), either
//!    with two jobs each or with 1, 2, 3 and 4 jobs, every job on its own
//!    connection; Jain's index of the users' shares per 1-s window, with
//!    the default settings and with `--max-inflight 3`. Starvation: one
//!    user with 32 jobs over 4 connections into sockets nobody reads (every
//!    pipe held, all stalled), then another user's 1 MiB file copy, timed
//!    from submit to completion, on a fresh daemon per round.
//! E. Many files against one (as root). User A (uid 65531) runs the
//!    release CLI, `ringxfer --daemon-only copy -r`, on a tree of
//!    RINGXFER_BENCH_TREE_FILES (default 1,000) files of 1 MiB and 64 KiB
//!    in 20 directories: above the 1 MiB the CLI copies itself, so each is
//!    a daemon job. Once a job of A's moved bytes, user B (uid 65532) submits
//!    one 1 MiB file copy, timed from submit to completion, and again with
//!    no A, on the same daemon; each round copies A's tree afresh.
//!
//! RINGXFER_BENCH_PARTS picks parts by letter (say `E`; default `ABCDE`).
//!
//! Targets: Jain's index >= 0.9 in every window; rate within 5% of the
//! limit; the other user's copy under 1 s behind stalled jobs (D) and under
//! 100 ms beside another user's tree copy (E). The latency ratios are
//! reported without a target.

// This bench needs the daemon, the source files, the host and the
// statistics of the shared module, not its CPU clocks or its TCP receiver.
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, FromRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringxfer_ipc::{Client, JobHandle, JobInfo, JobState, Strategy, TransferOptions};

use support::{
    bench_dir, daemon_binary, env_daemon_args, env_rounds, env_size, fmt_list, median,
    mem_available, print_daemon, print_host, write_source, Daemon, Result, GIB,
};

const MIB: u64 = 1 << 20;
/// A source nothing here outlives: 1 PiB of zero pages.
const ENDLESS: u64 = 1 << 50;
const JOBS: usize = 4;
/// Fairness windows per workload, at most.
const WINDOWS: usize = 5;
const JAIN_TARGET: f64 = 0.9;
const SECOND: Duration = Duration::from_secs(1);
/// Hot file copies run at memory speed: a GiB each is over in about a
/// second, so their windows are shorter.
const FILE_WINDOW: Duration = Duration::from_millis(100);
const RATE_TOLERANCE: f64 = 0.05;
const SMALL: usize = 64 << 10;
const SMALL_JOBS: usize = 100;
const RATE_LIMITS_MIB: [u64; 3] = [10, 20, 50];
/// How long any job here may take to finish or to start moving.
const TIMEOUT: Duration = Duration::from_secs(600);

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter here.
    support::exit("scheduling", run());
}

struct Settings {
    fair_size: u64,
    rate_secs: u64,
    rounds: usize,
    daemon_args: Vec<String>,
    /// The parts to run, of "ABCDE".
    parts: String,
    tree_files: usize,
}

impl Settings {
    fn runs(&self, part: char) -> bool {
        self.parts.contains(part)
    }
}

/// RINGXFER_BENCH_PARTS: letters of the parts to run (default all).
fn env_parts() -> Result<String> {
    let Ok(s) = std::env::var("RINGXFER_BENCH_PARTS") else {
        return Ok("ABCDE".into());
    };
    let parts = s.trim().to_ascii_uppercase();
    if parts.is_empty() || !parts.chars().all(|c| "ABCDE".contains(c)) {
        return Err(format!(
            "RINGXFER_BENCH_PARTS={s:?}: want letters of ABCDE, say \"E\" or \"AD\""
        ));
    }
    Ok(parts)
}

fn env_count(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{name}={s:?}: want a count >= 1")),
        Err(_) => Ok(default),
    }
}

fn settings() -> Result<Settings> {
    let rate_secs = match std::env::var("RINGXFER_BENCH_RATE_SECS") {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("RINGXFER_BENCH_RATE_SECS={s:?}: want whole seconds >= 1"))?,
        Err(_) => 10,
    };
    Ok(Settings {
        fair_size: env_size("RINGXFER_BENCH_FAIR_SIZE", 1 << 30)?,
        rate_secs,
        rounds: env_rounds()?,
        daemon_args: env_daemon_args(),
        parts: env_parts()?,
        tree_files: env_count("RINGXFER_BENCH_TREE_FILES", TREE_FILES)?,
    })
}

// ---------------------------------------------------------------------------
// Sources, destinations and the daemon

/// A memfd of `len` bytes of hole: reading it splices the zero page, so it
/// costs neither memory nor disk.
fn zero_source(len: u64) -> Result<File> {
    // SAFETY: a NUL-terminated name and valid flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"ringxfer-bench-zero".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len)
        .map_err(|e| format!("ftruncate memfd: {e}"))?;
    Ok(file)
}

fn dev_null() -> Result<File> {
    OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))
}

/// A daemon on a socket of its own, and the directory holding it.
struct Running {
    /// Held for its Drop, which stops the daemon.
    _daemon: Daemon,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(bin: &Path, args: &[String]) -> Result<Running> {
        let dir = bench_dir("scheduling-daemon-")?;
        let socket = dir.path().join("ringxferd.sock");
        let daemon = Daemon::start(bin, &socket, args)?;
        Ok(Running {
            _daemon: daemon,
            socket,
            _dir: dir,
        })
    }

    fn client(&self) -> Result<Client> {
        Client::connect(&self.socket).map_err(|e| format!("connect: {e}"))
    }
}

fn splice() -> TransferOptions {
    TransferOptions {
        strategy: Strategy::Splice,
        tag: "bench".into(),
        ..TransferOptions::default()
    }
}

fn submit(c: &Client, src: &File, dst: &File, o: &TransferOptions) -> Result<JobHandle> {
    c.submit(src.as_fd(), dst.as_fd(), o)
        .map_err(|e| format!("submit: {e}"))
}

fn jobs(c: &Client) -> Result<Vec<JobInfo>> {
    c.jobs().map_err(|e| format!("jobs: {e}"))
}

fn cancel_all(c: &Client, handles: Vec<JobHandle>) -> Result<()> {
    for h in &handles {
        let id = h.job_id().map_err(|e| format!("job id: {e}"))?;
        // Refused only if it finished meanwhile, which is as good.
        let _ = c.cancel(id);
    }
    for h in handles {
        if h.wait_timeout(Duration::from_secs(30)).is_none() {
            return Err("a cancelled job did not end within 30 s".into());
        }
    }
    Ok(())
}

/// Waits until every job in `ids` has moved a byte.
fn wait_moving(c: &Client, ids: &[u64]) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let list = jobs(c)?;
        let moving = ids
            .iter()
            .all(|id| list.iter().any(|i| i.job == *id && i.bytes > 0));
        if moving {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("jobs {ids:?} did not all start"));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Jain's fairness index: (sum x)^2 / (n sum x^2).
fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if sq == 0.0 {
        return 0.0;
    }
    sum * sum / (xs.len() as f64 * sq)
}

/// Connects to `socket` as user `uid`: the daemon takes a connection's
/// owner from SO_PEERCRED, the credentials of whoever called connect(). A
/// thread of its own switches its effective uid with the raw system call,
/// which (unlike glibc's setresuid) changes that thread only, connects, and
/// ends; the rest of the bench stays root.
fn connect_as(socket: &Path, uid: u32) -> Result<Client> {
    let socket = socket.to_path_buf();
    thread::spawn(move || {
        // SAFETY: setresuid takes three integers; -1 (uid_t::MAX) leaves the
        // real and saved uids alone, so only this thread's effective uid
        // changes, and the thread ends right after connecting.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_setresuid,
                libc::uid_t::MAX,
                uid as libc::uid_t,
                libc::uid_t::MAX,
            )
        };
        if rc != 0 {
            return Err(format!(
                "setresuid to uid {uid}: {}",
                io::Error::last_os_error()
            ));
        }
        Client::connect(&socket).map_err(|e| format!("connect as uid {uid}: {e}"))
    })
    .join()
    .map_err(|_| "the connecting thread panicked".to_string())?
}

/// A daemon whose socket other users can reach: in a directory under /tmp
/// open to everyone (a checkout's target/ may not be), socket mode 0666.
fn shared_daemon(bin: &Path, args: &[String]) -> Result<(Daemon, PathBuf, tempfile::TempDir)> {
    let dir = tempfile::Builder::new()
        .prefix("ringxfer-bench-users-")
        .tempdir_in("/tmp")
        .map_err(|e| format!("tempdir in /tmp: {e}"))?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod: {e}"))?;
    let socket = dir.path().join("ringxferd.sock");
    let daemon = Daemon::start(bin, &socket, args)?;
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("chmod the socket: {e}"))?;
    Ok((daemon, socket, dir))
}

// ---------------------------------------------------------------------------
// A. Fairness

enum Workload<'a> {
    /// Zero pages into /dev/null, endless.
    Zero,
    /// These sources, copied into fresh files in `dir`.
    Files(&'a [PathBuf], &'a Path),
}

struct Fairness {
    name: String,
    window: Duration,
    windows: Vec<f64>,
    /// Per job, MiB/s over all windows.
    per_job: Vec<f64>,
}

fn fairness(
    bin: &Path,
    args: &[String],
    name: &str,
    window: Duration,
    work: Workload<'_>,
) -> Result<Fairness> {
    let running = Running::start(bin, args)?;
    let ctl = running.client()?;
    let clients: Vec<Client> = (0..JOBS).map(|_| running.client()).collect::<Result<_>>()?;
    let mut handles = Vec::new();
    let mut dsts = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let h = match &work {
            Workload::Zero => submit(c, &zero_source(ENDLESS)?, &dev_null()?, &splice())?,
            Workload::Files(srcs, dir) => {
                let src = File::open(&srcs[i]).map_err(|e| format!("open source: {e}"))?;
                let path = dir.join(format!("fair-{i}.dst"));
                let dst = File::create(&path).map_err(|e| format!("create: {e}"))?;
                dsts.push(path);
                submit(c, &src, &dst, &splice())?
            }
        };
        handles.push(h);
    }
    let ids: Vec<u64> = handles
        .iter()
        .map(|h| h.job_id().map_err(|e| format!("job id: {e}")))
        .collect::<Result<_>>()?;
    wait_moving(&ctl, &ids)?;

    let start = Instant::now();
    let mut last = jobs(&ctl)?;
    let mut windows = Vec::new();
    let mut moved = [0u64; JOBS];
    for w in 1..=WINDOWS {
        let tick = start + window * w as u32;
        thread::sleep(tick.saturating_duration_since(Instant::now()));
        let now = jobs(&ctl)?;
        // A window counts only while all four run.
        let deltas: Option<Vec<u64>> = ids
            .iter()
            .map(|id| {
                let a = last.iter().find(|i| i.job == *id)?.bytes;
                let b = now.iter().find(|i| i.job == *id)?.bytes;
                Some(b - a)
            })
            .collect();
        let Some(deltas) = deltas else { break };
        for (m, d) in moved.iter_mut().zip(&deltas) {
            *m += d;
        }
        windows.push(jain(&deltas.iter().map(|&d| d as f64).collect::<Vec<_>>()));
        last = now;
    }
    let secs = windows.len().max(1) as f64 * window.as_secs_f64();
    let per_job = moved
        .iter()
        .map(|&m| m as f64 / MIB as f64 / secs)
        .collect();

    match work {
        Workload::Zero => cancel_all(&ctl, handles)?,
        Workload::Files(srcs, _) => {
            for (h, (dst, src)) in handles.into_iter().zip(dsts.iter().zip(srcs.iter())) {
                let done = h.wait().map_err(|e| format!("fair copy: {e}"))?;
                let want = fs::metadata(src).map_err(|e| format!("stat: {e}"))?.len();
                let got = fs::metadata(dst).map_err(|e| format!("stat: {e}"))?.len();
                if done.bytes != want || got != want {
                    return Err(format!(
                        "fair copy moved {} bytes, destination {got}, source {want}",
                        done.bytes
                    ));
                }
                fs::remove_file(dst).map_err(|e| format!("remove: {e}"))?;
            }
        }
    }
    Ok(Fairness {
        name: name.into(),
        window,
        windows,
        per_job,
    })
}

// ---------------------------------------------------------------------------
// D. Users

const USERS: [u32; 4] = [65531, 65532, 65533, 65534];
const STALLED: usize = 32;
const STALLED_CONNECTIONS: usize = 4;
const VICTIM: u64 = 1 << 20;
const STARVE_TARGET_MS: f64 = 1000.0;
/// How long a starved copy is waited for; a round that gets there ends the
/// series (the daemon is left with its stalled jobs).
const STARVE_GIVE_UP: Duration = Duration::from_secs(30);

/// Fairness across `USERS`, user `i` running `jobs[i]` endless jobs.
fn user_fairness(
    bin: &Path,
    args: &[String],
    name: &str,
    jobs_per_user: [usize; 4],
) -> Result<Fairness> {
    let (_daemon, socket, _dir) = shared_daemon(bin, args)?;
    let ctl = Client::connect(&socket).map_err(|e| format!("connect: {e}"))?;
    let mut handles = Vec::new();
    let mut owners = Vec::new();
    let mut clients = Vec::new();
    for (u, &uid) in USERS.iter().enumerate() {
        for _ in 0..jobs_per_user[u] {
            let c = connect_as(&socket, uid)?;
            handles.push(submit(&c, &zero_source(ENDLESS)?, &dev_null()?, &splice())?);
            owners.push(u);
            clients.push(c);
        }
    }
    let ids: Vec<u64> = handles
        .iter()
        .map(|h| h.job_id().map_err(|e| format!("job id: {e}")))
        .collect::<Result<_>>()?;
    wait_moving(&ctl, &ids)?;
    let by_user = |list: &[JobInfo]| -> Option<[u64; 4]> {
        let mut by = [0u64; 4];
        for (id, &u) in ids.iter().zip(&owners) {
            by[u] += list.iter().find(|i| i.job == *id)?.bytes;
        }
        Some(by)
    };
    let start = Instant::now();
    let mut last = by_user(&jobs(&ctl)?).ok_or("a job is missing")?;
    let mut windows = Vec::new();
    let mut moved = [0u64; 4];
    for w in 1..=WINDOWS {
        thread::sleep((start + SECOND * w as u32).saturating_duration_since(Instant::now()));
        let Some(now) = by_user(&jobs(&ctl)?) else {
            break;
        };
        let deltas: Vec<f64> = (0..4).map(|u| (now[u] - last[u]) as f64).collect();
        for u in 0..4 {
            moved[u] += now[u] - last[u];
        }
        windows.push(jain(&deltas));
        last = now;
    }
    cancel_all(&ctl, handles)?;
    let secs = windows.len().max(1) as f64;
    Ok(Fairness {
        name: name.into(),
        window: SECOND,
        windows,
        per_job: moved
            .iter()
            .map(|&m| m as f64 / MIB as f64 / secs)
            .collect(),
    })
}

/// One round of the starvation target: milliseconds the other user's copy
/// took behind the first user's stalled jobs (`None`: not within
/// `STARVE_GIVE_UP`).
fn starvation_round(bin: &Path, args: &[String], dir: &Path, round: usize) -> Result<Option<f64>> {
    let (_daemon, socket, _shared) = shared_daemon(bin, args)?;
    let ctl = Client::connect(&socket).map_err(|e| format!("connect: {e}"))?;
    let conns: Vec<Client> = (0..STALLED_CONNECTIONS)
        .map(|_| connect_as(&socket, USERS[0]))
        .collect::<Result<_>>()?;
    let src = dir.join("stalled.src");
    if !src.exists() {
        write_source(&src, 8 * MIB)?;
    }
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let (into, peer) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let f = File::open(&src).map_err(|e| format!("open: {e}"))?;
        let into = File::from(std::os::fd::OwnedFd::from(into));
        stalled.push((
            submit(&conns[i % STALLED_CONNECTIONS], &f, &into, &splice())?,
            peer,
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = ctl.stats().map_err(|e| format!("stats: {e}"))?;
        if s.pipes_in_use == s.pipes_total {
            break;
        }
        if Instant::now() > deadline {
            return Err("the stalled jobs never held every pipe".into());
        }
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(500));
    let victim_src = dir.join("victim.src");
    if !victim_src.exists() {
        write_source(&victim_src, VICTIM)?;
    }
    let victim = connect_as(&socket, USERS[3])?;
    let f = File::open(&victim_src).map_err(|e| format!("open: {e}"))?;
    let out = dir.join(format!("victim-{round}.dst"));
    let d = File::create(&out).map_err(|e| format!("create: {e}"))?;
    let t0 = Instant::now();
    let h = submit(
        &victim,
        &f,
        &d,
        &TransferOptions {
            tag: "bench".into(),
            ..TransferOptions::default()
        },
    )?;
    let Some(done) = h.wait_timeout(STARVE_GIVE_UP) else {
        return Ok(None);
    };
    let done = done.map_err(|e| format!("the other user's copy: {e}"))?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    if done.bytes != VICTIM {
        return Err(format!("the other user's copy moved {} bytes", done.bytes));
    }
    let _ = fs::remove_file(&out);
    cancel_all(&ctl, stalled.into_iter().map(|(h, _peer)| h).collect())?;
    Ok(Some(ms))
}

// ---------------------------------------------------------------------------
// E. Many files against one

/// User A, whose CLI copies a tree, and user B, whose one file competes
/// with it.
const TREE_USER: u32 = USERS[0];
const SINGLE_USER: u32 = USERS[1];
/// Above the 1 MiB the CLI copies itself (src/bin/ringxfer/walk_ahead.rs,
/// SMALL_FILE), so every file is a daemon job.
const TREE_FILE: usize = (1 << 20) + (64 << 10);
const TREE_DIRS: usize = 20;
const TREE_FILES: usize = 1000;
const SINGLE_TARGET_MS: f64 = 100.0;

fn own(path: &Path, uid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
        .map_err(|e| format!("chown {} to {uid}: {e}", path.display()))
}

/// A directory of `uid`'s that others may read (mode 0755 by the umask).
fn user_dir(path: &Path, uid: u32) -> Result<()> {
    fs::create_dir(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
    own(path, uid)
}

/// A's tree: `files` files of TREE_FILE bytes over TREE_DIRS directories,
/// all A's, synced once so no writeback of it runs during the rounds.
fn write_tree(root: &Path, files: usize) -> Result<()> {
    user_dir(root, TREE_USER)?;
    for d in 0..TREE_DIRS {
        user_dir(&root.join(format!("d{d:02}")), TREE_USER)?;
    }
    let mut buf = vec![0u8; TREE_FILE];
    for i in 0..files {
        // Each block of each file differs, so a misplaced one shows.
        for (b, block) in buf.chunks_mut(4096).enumerate() {
            block[..8].copy_from_slice(&((i as u64) << 16 | b as u64).to_le_bytes());
        }
        let p = root.join(format!("d{:02}/f{i:05}", i % TREE_DIRS));
        fs::write(&p, &buf).map_err(|e| format!("write {}: {e}", p.display()))?;
        own(&p, TREE_USER)?;
    }
    support::cache::sync_all();
    Ok(())
}

/// Whether `dst` holds `files` files of TREE_FILE bytes.
fn check_tree(dst: &Path, files: usize) -> Result<()> {
    let read = |d: &Path| fs::read_dir(d).map_err(|e| format!("read {}: {e}", d.display()));
    let mut n = 0;
    for d in read(dst)? {
        let d = d.map_err(|e| format!("read {}: {e}", dst.display()))?;
        for f in read(&d.path())? {
            let f = f.map_err(|e| format!("read {}: {e}", d.path().display()))?;
            let len = f.metadata().map_err(|e| format!("stat: {e}"))?.len();
            n += usize::from(len == TREE_FILE as u64);
        }
    }
    if n != files {
        return Err(format!(
            "A's copy {} holds {n} whole files of {files}",
            dst.display()
        ));
    }
    Ok(())
}

/// A's `ringxfer copy -r`, run as A; killed if dropped while running (an
/// error elsewhere in the round).
struct TreeCopy {
    child: Child,
    started: Instant,
}

impl TreeCopy {
    fn start(e: &ManyEnv, dst: &Path) -> Result<TreeCopy> {
        let log =
            File::create(&e.log).map_err(|err| format!("create {}: {err}", e.log.display()))?;
        let started = Instant::now();
        let child = Command::new(&e.cli)
            .arg("--socket")
            .arg(&e.socket)
            .arg("--daemon-only")
            .args(["copy", "-r"])
            .arg(&e.src)
            .arg(dst)
            // std drops the supplementary groups when it sets the uid.
            .uid(TREE_USER)
            .gid(TREE_USER)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", e.cli.display()))?;
        Ok(TreeCopy { child, started })
    }

    fn running(&mut self) -> Result<bool> {
        let done = self.child.try_wait().map_err(|e| format!("wait: {e}"))?;
        Ok(done.is_none())
    }

    /// Waits for the copy to end well; its wall time in seconds.
    fn finish(&mut self, log: &Path) -> Result<f64> {
        while self.running()? {
            if self.started.elapsed() > TIMEOUT {
                return Err(format!("A's tree copy not done within {TIMEOUT:?}"));
            }
            thread::sleep(Duration::from_millis(2));
        }
        let secs = self.started.elapsed().as_secs_f64();
        let status = self.child.wait().map_err(|e| format!("wait: {e}"))?;
        if !status.success() {
            let err = fs::read_to_string(log).unwrap_or_default();
            return Err(format!("A's tree copy: {status}: {}", err.trim()));
        }
        Ok(secs)
    }
}

impl Drop for TreeCopy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What part E's rounds share: one daemon both users reach, A's tree, B's
/// file and where their copies go.
struct ManyEnv {
    cli: PathBuf,
    socket: PathBuf,
    ctl: Client,
    src: PathBuf,
    files: usize,
    a_out: PathBuf,
    b_dir: PathBuf,
    single: PathBuf,
    log: PathBuf,
}

/// Waits until a job of A's moved bytes; how many of A's jobs the daemon
/// then holds unfinished. `None`: A's copy ended first.
fn wait_tree_jobs(e: &ManyEnv, a: &mut TreeCopy) -> Result<Option<usize>> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let list = jobs(&e.ctl)?;
        let of_a = || list.iter().filter(|i| i.uid == TREE_USER);
        if of_a().any(|i| i.bytes > 0) {
            let open = of_a()
                .filter(|i| {
                    matches!(
                        i.state,
                        JobState::Queued | JobState::Running | JobState::Throttled
                    )
                })
                .count();
            return Ok(Some(open));
        }
        if !a.running()? {
            return Ok(None);
        }
        if Instant::now() > deadline {
            return Err("A's tree copy never showed a job in the daemon".into());
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// B's copy of its file into a new file of B's: ms from submit to
/// completion.
fn single_copy(e: &ManyEnv, b: &Client, name: &str) -> Result<f64> {
    let f = File::open(&e.single).map_err(|err| format!("open: {err}"))?;
    let dst = e.b_dir.join(name);
    let d = File::create(&dst).map_err(|err| format!("create {}: {err}", dst.display()))?;
    own(&dst, SINGLE_USER)?;
    let o = TransferOptions {
        tag: "bench".into(),
        ..TransferOptions::default()
    };
    let t0 = Instant::now();
    let h = submit(b, &f, &d, &o)?;
    let done = h
        .wait_timeout(STARVE_GIVE_UP)
        .ok_or_else(|| format!("B's copy not done within {STARVE_GIVE_UP:?}"))?
        .map_err(|err| format!("B's copy: {err}"))?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    if done.bytes != VICTIM {
        return Err(format!("B's copy moved {} bytes of {VICTIM}", done.bytes));
    }
    fs::remove_file(&dst).map_err(|err| format!("remove {}: {err}", dst.display()))?;
    Ok(ms)
}

struct ManyRound {
    alone_ms: f64,
    busy_ms: f64,
    tree_secs: f64,
    /// A's unfinished jobs in the daemon when B submitted.
    a_jobs: usize,
    /// Whether A still ran when B's copy completed.
    overlapped: bool,
}

/// B alone, then B while A copies its tree into a fresh destination.
fn many_round(e: &ManyEnv, b: &Client, round: usize) -> Result<ManyRound> {
    let alone_ms = single_copy(e, b, &format!("alone-{round}"))?;
    let dst = e.a_out.join(format!("round-{round}"));
    let mut a = TreeCopy::start(e, &dst)?;
    let Some(a_jobs) = wait_tree_jobs(e, &mut a)? else {
        a.finish(&e.log)?;
        return Err(format!(
            "A's copy of {} files ended before its jobs showed: raise RINGXFER_BENCH_TREE_FILES",
            e.files
        ));
    };
    let busy_ms = single_copy(e, b, &format!("busy-{round}"))?;
    let overlapped = a.running()?;
    let tree_secs = a.finish(&e.log)?;
    check_tree(&dst, e.files)?;
    fs::remove_dir_all(&dst).map_err(|err| format!("remove {}: {err}", dst.display()))?;
    Ok(ManyRound {
        alone_ms,
        busy_ms,
        tree_secs,
        a_jobs,
        overlapped,
    })
}

/// E: one user's tree of many files against another user's one file, on
/// one daemon (needs root, to act as both users).
fn measure_many(cfg: &Settings, bin: &Path) -> Result<Vec<ManyRound>> {
    let cli = support::bin_override("ringxfer")?
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ringxfer")));
    // The tree lives next to the socket, in /tmp where both users reach.
    let (_daemon, socket, shared) = shared_daemon(bin, &cfg.daemon_args)?;
    let dir = shared.path();
    let e = ManyEnv {
        cli,
        ctl: Client::connect(&socket).map_err(|e| format!("connect: {e}"))?,
        socket,
        src: dir.join("tree"),
        files: cfg.tree_files,
        a_out: dir.join("a-out"),
        b_dir: dir.join("b"),
        single: dir.join("b/single.src"),
        log: dir.join("a-stderr"),
    };
    let t = Instant::now();
    write_tree(&e.src, e.files)?;
    user_dir(&e.a_out, TREE_USER)?;
    user_dir(&e.b_dir, SINGLE_USER)?;
    write_source(&e.single, VICTIM)?;
    own(&e.single, SINGLE_USER)?;
    println!(
        "  wrote A's tree ({} x {} KiB in {TREE_DIRS} directories) in {:.1} s",
        e.files,
        TREE_FILE >> 10,
        t.elapsed().as_secs_f64()
    );
    let b = connect_as(&e.socket, SINGLE_USER)?;
    // Unmeasured: the daemon's first job.
    single_copy(&e, &b, "warm-up")?;
    println!("  A's tree and B's file on {}", support::fs_type(dir));
    // Five rounds unless asked: B's figures are small and vary.
    let rounds = std::env::var_os("RINGXFER_BENCH_ROUNDS").map_or(5, |_| cfg.rounds);
    (0..rounds).map(|round| many_round(&e, &b, round)).collect()
}

// ---------------------------------------------------------------------------
// B. Latency of small jobs

struct Round {
    total: f64,
    p50: f64,
    p99: f64,
}

/// Submits the 100 small copies at once; per-job latency from each submit
/// to its completion event, in milliseconds.
fn small_round(c: &Client, srcs: &[PathBuf], dir: &Path) -> Result<Round> {
    // Every descriptor is opened first, so the submits go out back to back
    // and the jobs really queue behind each other (and the huge one).
    let files: Vec<(File, File)> = srcs
        .iter()
        .enumerate()
        .map(|(i, src)| {
            let s = File::open(src).map_err(|e| format!("open: {e}"))?;
            let d = File::create(dir.join(format!("small-{i}.dst")))
                .map_err(|e| format!("create: {e}"))?;
            Ok((s, d))
        })
        .collect::<Result<_>>()?;
    let (tx, rx) = mpsc::channel();
    let t = Instant::now();
    let mut handles = Vec::with_capacity(srcs.len());
    for (s, d) in &files {
        let submitted = Instant::now();
        let tx = tx.clone();
        let h = c
            .submit_with_callback(s.as_fd(), d.as_fd(), &splice(), move |r| {
                let _ = tx.send((submitted.elapsed(), Instant::now(), r.map(|c| c.bytes)));
            })
            .map_err(|e| format!("submit: {e}"))?;
        handles.push(h);
    }
    drop(tx);
    let mut lat = Vec::with_capacity(srcs.len());
    let mut last = t;
    for _ in 0..srcs.len() {
        let (l, at, r) = rx
            .recv_timeout(TIMEOUT)
            .map_err(|_| "a small job did not finish".to_string())?;
        match r {
            Ok(b) if b == SMALL as u64 => {}
            other => return Err(format!("small job: {other:?}")),
        }
        lat.push(l.as_secs_f64() * 1e3);
        last = last.max(at);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    Ok(Round {
        total: (last - t).as_secs_f64() * 1e3,
        p50: pick(0.5),
        p99: pick(0.99),
    })
}

struct Latency {
    alone: Vec<Round>,
    busy: Vec<Round>,
    /// The huge job's rate while the small ones ran, GiB/s.
    huge_rate: Vec<f64>,
}

fn latency(bin: &Path, args: &[String], rounds: usize, dir: &Path) -> Result<Latency> {
    let srcs: Vec<PathBuf> = (0..SMALL_JOBS)
        .map(|i| {
            let p = dir.join(format!("small-{i}.src"));
            let bytes: Vec<u8> = (0..SMALL)
                .map(|b| (b as u64 * 31 + i as u64) as u8)
                .collect();
            fs::write(&p, bytes)
                .map(|()| p)
                .map_err(|e| format!("write: {e}"))
        })
        .collect::<Result<_>>()?;
    let running = Running::start(bin, args)?;
    let ctl = running.client()?;
    let small = running.client()?;
    let huge_client = running.client()?;
    // Unmeasured: first touches of the destinations and the daemon's pools.
    small_round(&small, &srcs, dir)?;
    let mut out = Latency {
        alone: Vec::new(),
        busy: Vec::new(),
        huge_rate: Vec::new(),
    };
    for _ in 0..rounds {
        out.alone.push(small_round(&small, &srcs, dir)?);
        let huge = submit(
            &huge_client,
            &zero_source(ENDLESS)?,
            &dev_null()?,
            &splice(),
        )?;
        let id = huge.job_id().map_err(|e| format!("job id: {e}"))?;
        wait_moving(&ctl, &[id])?;
        let b0 = ctl.status(id).map_err(|e| format!("status: {e}"))?.bytes;
        let t0 = Instant::now();
        out.busy.push(small_round(&small, &srcs, dir)?);
        let b1 = ctl.status(id).map_err(|e| format!("status: {e}"))?.bytes;
        out.huge_rate
            .push((b1 - b0) as f64 / GIB / t0.elapsed().as_secs_f64());
        cancel_all(&ctl, vec![huge])?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// C. Rate-limit accuracy

/// A loopback TCP receiver counting the bytes of one connection.
struct Counter {
    count: Arc<AtomicU64>,
    thread: JoinHandle<io::Result<u64>>,
}

impl Counter {
    /// Returns the counter and the connected sending end.
    fn start() -> Result<(Counter, TcpStream)> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("local_addr: {e}"))?;
        let send = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        let (mut conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let count = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&count);
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => return Ok(c.load(Ordering::SeqCst)),
                    Ok(n) => {
                        c.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        });
        Ok((Counter { count, thread }, send))
    }

    fn bytes(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

struct RateRow {
    limit_mib: u64,
    measured_mib: f64,
    /// The daemon's own idea of the job's rate at the end.
    reported_mib: f64,
}

fn rate_accuracy(bin: &Path, args: &[String], secs: u64) -> Result<Vec<RateRow>> {
    let running = Running::start(bin, args)?;
    let c = running.client()?;
    let mut rows = Vec::new();
    for limit_mib in RATE_LIMITS_MIB {
        let (counter, send) = Counter::start()?;
        let o = TransferOptions {
            rate_limit: Some(limit_mib * MIB),
            ..splice()
        };
        let src = zero_source(ENDLESS)?;
        let h = c
            .submit(src.as_fd(), send.as_fd(), &o)
            .map_err(|e| format!("submit: {e}"))?;
        let id = h.job_id().map_err(|e| format!("job id: {e}"))?;
        let deadline = Instant::now() + TIMEOUT;
        while counter.bytes() == 0 {
            if Instant::now() > deadline {
                return Err("the rate-limited job sent nothing".into());
            }
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_secs(1));
        let (t0, b0) = (Instant::now(), counter.bytes());
        thread::sleep(Duration::from_secs(secs));
        let (t1, b1) = (Instant::now(), counter.bytes());
        let reported = c.status(id).map_err(|e| format!("status: {e}"))?.rate;
        cancel_all(&c, vec![h])?;
        send.shutdown(Shutdown::Both)
            .map_err(|e| format!("shutdown: {e}"))?;
        drop(send);
        let _ = counter.thread.join();
        rows.push(RateRow {
            limit_mib,
            measured_mib: (b1 - b0) as f64 / MIB as f64 / (t1 - t0).as_secs_f64(),
            reported_mib: reported as f64 / MIB as f64,
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------

/// `extra` flags, then the bench's RINGXFER_BENCH_DAEMON_ARGS.
fn with_args(extra: &[&str], daemon_args: &[String]) -> Vec<String> {
    let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    v.extend(daemon_args.iter().cloned());
    v
}

/// A: fairness between jobs, under three workloads.
fn measure_fairness(cfg: &Settings, bin: &Path, dir: &Path) -> Result<Vec<Fairness>> {
    // A. Fairness.
    let t = Instant::now();
    let srcs: Vec<PathBuf> = (0..JOBS)
        .map(|i| {
            let p = dir.join(format!("fair-{i}.src"));
            write_source(&p, cfg.fair_size).map(|()| p)
        })
        .collect::<Result<_>>()?;
    println!(
        "  wrote {JOBS} sources in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let with = |extra: &[&str]| with_args(extra, &cfg.daemon_args);
    let fair = vec![
        fairness(bin, &with(&[]), "zero -> /dev/null", SECOND, Workload::Zero)?,
        fairness(
            bin,
            &with(&["--max-inflight", "3"]),
            "zero -> /dev/null, --max-inflight 3",
            SECOND,
            Workload::Zero,
        )?,
        fairness(
            bin,
            &with(&[]),
            "file -> file (hot)",
            FILE_WINDOW,
            Workload::Files(&srcs, dir),
        )?,
    ];
    for p in &srcs {
        let _ = fs::remove_file(p);
    }

    Ok(fair)
}

/// D: fairness between users, and one user's stalled jobs against
/// another's copy (needs root, to connect as other uids).
fn measure_users(cfg: &Settings, bin: &Path, dir: &Path) -> Result<(Vec<Fairness>, Vec<f64>)> {
    let with = |extra: &[&str]| with_args(extra, &cfg.daemon_args);
    // D. Users: needs root, to connect as other uids.
    let mut users = Vec::new();
    let mut starve = Vec::new();
    for (extra, inflight) in [
        (&[][..], ""),
        (&["--max-inflight", "3"][..], ", --max-inflight 3"),
    ] {
        for (jobs, what) in [
            ([2, 2, 2, 2], "2 jobs each"),
            ([1, 2, 3, 4], "1, 2, 3, 4 jobs"),
        ] {
            users.push(user_fairness(
                bin,
                &with(extra),
                &format!("4 users, {what}{inflight}"),
                jobs,
            )?);
        }
    }
    for round in 0..cfg.rounds.max(5) {
        let ms = starvation_round(bin, &cfg.daemon_args, dir, round)?;
        starve.push(ms.unwrap_or(f64::INFINITY));
        if ms.is_none() {
            break;
        }
    }
    Ok((users, starve))
}

/// One workload's row: its windows' Jain's indexes and per-job (or user)
/// rates; whether every window met the target.
fn print_fairness_row(f: &Fairness, note: &str) -> bool {
    let min = f.windows.iter().copied().fold(f64::INFINITY, f64::min);
    let med = median(f.windows.clone()).unwrap_or(f64::NAN);
    let pass = !f.windows.is_empty() && min >= JAIN_TARGET;
    println!(
        "  {:<38} {:>5}ms {:>7} {:>6.3} {:>6.3}  [{}] {}{note}",
        f.name,
        f.window.as_millis(),
        f.windows.len(),
        min,
        med,
        fmt_list(&f.per_job),
        if pass { "PASS" } else { "FAIL" },
    );
    pass
}

fn report_fairness(fair: &[Fairness]) -> Vec<serde_json::Value> {
    println!();
    println!("A. fairness (Jain's index per window; target >= {JAIN_TARGET})");
    println!(
        "  {:<38} {:>7} {:>7} {:>6} {:>6}  per-job MiB/s",
        "workload", "window", "windows", "min", "median"
    );
    let mut fair_json = Vec::new();
    for f in fair {
        let short = if f.windows.len() < 2 {
            "  (too short: raise RINGXFER_BENCH_FAIR_SIZE)"
        } else {
            ""
        };
        let pass = print_fairness_row(f, short);
        fair_json.push(serde_json::json!({
            "workload": f.name, "window_ms": f.window.as_millis() as u64, "windows": f.windows, "per_job_mib_s": f.per_job, "pass": pass,
        }));
    }

    fair_json
}

fn report_latency(lat: &Latency) -> serde_json::Value {
    println!();
    println!("B. latency of {SMALL_JOBS} small jobs (ms; medians of rounds)");
    let med =
        |v: &[Round], f: fn(&Round) -> f64| median(v.iter().map(f).collect()).unwrap_or(f64::NAN);
    let (at, ab) = (med(&lat.alone, |r| r.total), med(&lat.busy, |r| r.total));
    let (a50, b50) = (med(&lat.alone, |r| r.p50), med(&lat.busy, |r| r.p50));
    let (a99, b99) = (med(&lat.alone, |r| r.p99), med(&lat.busy, |r| r.p99));
    println!("  {:<26} {:>9} {:>9} {:>9}", "", "all done", "p50", "p99");
    println!("  {:<26} {at:>9.2} {a50:>9.2} {a99:>9.2}", "alone");
    println!(
        "  {:<26} {ab:>9.2} {b50:>9.2} {b99:>9.2}",
        "behind a huge job"
    );
    println!(
        "  {:<26} {:>9.2} {:>9.2} {:>9.2}",
        "ratio busy/alone",
        ab / at,
        b50 / a50,
        b99 / a99
    );
    println!(
        "  the huge job meanwhile: {} GiB/s",
        fmt_list(&lat.huge_rate)
    );

    serde_json::json!({
        "alone": {"all_done": at, "p50": a50, "p99": a99},
        "busy": {"all_done": ab, "p50": b50, "p99": b99},
        "ratio_all_done": ab / at,
    })
}

fn report_rates(cfg: &Settings, rates: &[RateRow]) -> Vec<serde_json::Value> {
    println!();
    println!(
        "C. rate-limit accuracy over {} s (target within {:.0}%)",
        cfg.rate_secs,
        RATE_TOLERANCE * 100.0
    );
    println!(
        "  {:>10} {:>12} {:>8} {:>8} {:>16}",
        "limit", "received", "ratio", "error", "daemon's rate"
    );
    let mut rate_json = Vec::new();
    for r in rates {
        let ratio = r.measured_mib / r.limit_mib as f64;
        let pass = (ratio - 1.0).abs() <= RATE_TOLERANCE;
        println!(
            "  {:>6} MiB/s {:>6.2} MiB/s {:>8.3} {:>7.1}% {:>10.2} MiB/s {}",
            r.limit_mib,
            r.measured_mib,
            ratio,
            (ratio - 1.0) * 100.0,
            r.reported_mib,
            if pass { "PASS" } else { "FAIL" }
        );
        rate_json.push(serde_json::json!({
            "limit_mib_s": r.limit_mib, "received_mib_s": r.measured_mib,
            "ratio": ratio, "daemon_rate_mib_s": r.reported_mib, "pass": pass,
        }));
    }
    rate_json
}

fn report_users(root: bool, users: &[Fairness], starve: &[f64]) -> Vec<serde_json::Value> {
    println!();
    let mut users_json = Vec::new();
    if root {
        println!("D. users (Jain's index across users per 1-s window; target >= {JAIN_TARGET})");
        println!(
            "  {:<38} {:>7} {:>7} {:>6} {:>6}  per-user MiB/s",
            "workload", "window", "windows", "min", "median"
        );
        for f in users {
            let pass = print_fairness_row(f, "");
            users_json.push(serde_json::json!({
                "workload": f.name, "windows": f.windows, "per_user_mib_s": f.per_job, "pass": pass,
            }));
        }
        let max = starve.iter().copied().fold(0.0, f64::max);
        if max.is_finite() {
            let min = starve.iter().copied().fold(f64::INFINITY, f64::min);
            let med = median(starve.to_vec()).unwrap_or(f64::NAN);
            println!(
                "  another user's 1 MiB copy behind {STALLED} stalled jobs of one user: median {med:.1} ms, \
                 min {min:.1}, max {max:.1} over {} rounds (target < {STARVE_TARGET_MS} ms) {}",
                starve.len(),
                if max < STARVE_TARGET_MS { "PASS" } else { "FAIL" }
            );
        } else {
            println!(
                "  another user's 1 MiB copy behind {STALLED} stalled jobs of one user: not done after {:?} \
                 (round {}) FAIL",
                STARVE_GIVE_UP,
                starve.len()
            );
        }
        let finite: Vec<f64> = starve.iter().copied().filter(|m| m.is_finite()).collect();
        users_json.push(serde_json::json!({
            "starvation_ms": finite, "rounds": starve.len(), "pass": max < STARVE_TARGET_MS,
        }));
    } else {
        println!("D. users: skipped (needs root to connect as other users)");
    }
    users_json
}

/// "median [min-max]" of `v`, with `unit`.
fn spread(v: &[f64], unit: &str) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let med = median(v.to_vec()).unwrap_or(f64::NAN);
    format!("{med:.1} [{min:.1}-{max:.1}] {unit}")
}

fn report_many(cfg: &Settings, rounds: &[ManyRound]) -> serde_json::Value {
    println!();
    println!(
        "E. user {TREE_USER}'s {}-file tree (ringxfer copy -r) against user {SINGLE_USER}'s 1 MiB copy \
         (submit to completion; target < {SINGLE_TARGET_MS} ms while the tree copies)",
        cfg.tree_files
    );
    let alone: Vec<f64> = rounds.iter().map(|r| r.alone_ms).collect();
    let busy: Vec<f64> = rounds.iter().map(|r| r.busy_ms).collect();
    let tree: Vec<f64> = rounds.iter().map(|r| r.tree_secs).collect();
    let a_jobs: Vec<usize> = rounds.iter().map(|r| r.a_jobs).collect();
    let overlapped = rounds.iter().filter(|r| r.overlapped).count();
    let ratio =
        median(busy.clone()).unwrap_or(f64::NAN) / median(alone.clone()).unwrap_or(f64::NAN);
    let max = busy.iter().copied().fold(0.0, f64::max);
    let pass = !busy.is_empty() && max < SINGLE_TARGET_MS;
    println!("  {:<34} {}", "B's copy alone", spread(&alone, "ms"));
    println!(
        "  {:<34} {}",
        "B's copy while A copies",
        spread(&busy, "ms")
    );
    println!("  {:<34} {ratio:.2}", "ratio busy/alone (medians)");
    println!("  {:<34} {}", "A's tree copy, wall", spread(&tree, "s"));
    println!("  {:<34} {a_jobs:?}", "A's open jobs at B's submit");
    println!(
        "  {:<34} {overlapped} of {} rounds",
        "A still copying when B was done",
        rounds.len()
    );
    println!(
        "  B's slowest copy while A copies: {max:.1} ms (target < {SINGLE_TARGET_MS} ms) {}",
        if pass { "PASS" } else { "FAIL" }
    );
    serde_json::json!({
        "tree_files": cfg.tree_files, "file_kib": TREE_FILE >> 10,
        "alone_ms": alone, "busy_ms": busy, "ratio_medians": ratio, "tree_s": tree,
        "a_open_jobs": a_jobs, "overlapped_rounds": overlapped,
        "target_ms": SINGLE_TARGET_MS, "pass": pass,
    })
}

fn skipped(part: &str) -> serde_json::Value {
    println!();
    println!("{part}: skipped (not in RINGXFER_BENCH_PARTS)");
    serde_json::Value::Null
}

fn print_settings(cfg: &Settings, bin: &Path) {
    println!("ringxfer scheduling bench (parts {})", cfg.parts);
    print_host(mem_available());
    print_daemon(bin, &cfg.daemon_args);
    if cfg.runs('A') {
        println!(
            "  fairness: {JOBS} jobs, {WINDOWS} windows of 1 s at most; file copies of {:.2} GiB each",
            cfg.fair_size as f64 / GIB
        );
    }
    if cfg.runs('B') || cfg.runs('C') {
        println!(
            "  latency: {SMALL_JOBS} x {} KiB copies, {} round(s) after a warm-up; rate limits over {} s",
            SMALL >> 10,
            cfg.rounds,
            cfg.rate_secs
        );
    }
}

fn run() -> Result<()> {
    let cfg = settings()?;
    let bin = daemon_binary()?;
    let tmp = bench_dir("scheduling-")?;
    let dir = tmp.path();
    print_settings(&cfg, &bin);

    let fair = cfg
        .runs('A')
        .then(|| measure_fairness(&cfg, &bin, dir))
        .transpose()?;
    let lat = cfg
        .runs('B')
        .then(|| latency(&bin, &cfg.daemon_args, cfg.rounds, dir))
        .transpose()?;
    let rates = cfg
        .runs('C')
        .then(|| rate_accuracy(&bin, &cfg.daemon_args, cfg.rate_secs))
        .transpose()?;
    // D and E need root, to connect as other uids.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let users = (root && cfg.runs('D'))
        .then(|| measure_users(&cfg, &bin, dir))
        .transpose()?;
    let many = (root && cfg.runs('E'))
        .then(|| measure_many(&cfg, &bin))
        .transpose()?;

    let json = serde_json::json!({
        "bench": "scheduling",
        "fairness": fair.map_or_else(|| skipped("A. fairness"), |f| report_fairness(&f).into()),
        "latency_ms": lat.map_or_else(|| skipped("B. latency"), |l| report_latency(&l)),
        "rate_limits": rates.map_or_else(|| skipped("C. rate limits"), |r| report_rates(&cfg, &r).into()),
        "users": match users {
            Some((u, s)) => report_users(true, &u, &s).into(),
            None if cfg.runs('D') => report_users(false, &[], &[]).into(),
            None => skipped("D. users"),
        },
        "many_against_one": match many {
            Some(m) => report_many(&cfg, &m),
            None if cfg.runs('E') => {
                println!();
                println!("E. many files against one: skipped (needs root to act as two users)");
                serde_json::Value::Null
            }
            None => skipped("E. many files against one"),
        },
    });
    println!("RESULT_JSON {json}");
    Ok(())
}
