//! `ringxferd --check`: what the daemon would use on this machine, and why.
//!
//! Every probe is the real call the daemon makes (io_uring_setup with the
//! configured entries and flags, IORING_REGISTER_PROBE, registering the
//! configured buffer pool, F_SETPIPE_SZ, connecting to the socket), so the
//! answer is the kernel's, not a guess from version numbers. Nothing is
//! served and nothing is left behind.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use io_uring::{opcode, IoUring, Probe};

use crate::engine::EngineKind;
use crate::io::buffer_pool::BufferPool;
use crate::io::pipe_pool::pipe_budget;
use crate::io::unavailable;
use crate::settings::keys::{self, show_size};
use crate::settings::{Origin, Settings};
use crate::transfer::dio;

/// How a fact bears on running the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Works as the daemon wants it.
    Ok,
    /// Worth knowing; changes nothing.
    Info,
    /// The daemon runs, with less (a fallback, a lowered limit).
    Warn,
    /// The daemon cannot run like this.
    Fail,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Fact {
    pub level: Level,
    pub topic: String,
    pub text: String,
}

/// Everything `--check` found.
#[derive(Debug, Default)]
pub struct Report {
    pub facts: Vec<Fact>,
    /// The back end the daemon would run (`Uring` or `Threads`); `None` if
    /// it would not start for want of one.
    pub engine: Option<EngineKind>,
}

impl Report {
    fn add(&mut self, level: Level, topic: impl Into<String>, text: impl Into<String>) {
        self.facts.push(Fact {
            level,
            topic: topic.into(),
            text: text.into(),
        });
    }

    /// Whether the daemon can run: no fact is a failure.
    pub fn ok(&self) -> bool {
        self.facts.iter().all(|f| f.level != Level::Fail)
    }

    fn count(&self, level: Level) -> usize {
        self.facts.iter().filter(|f| f.level == level).count()
    }

    /// The report as lines: the settings first (value and origin), then one
    /// line per fact, then the verdict.
    pub fn to_text(&self, settings: &Settings) -> String {
        let mut out = format!("config file: {}\n", settings.config_file);
        for (key, value, origin) in settings.describe() {
            out += &format!("setting {} = {value} ({origin})\n", key.name);
        }
        for f in &self.facts {
            out += &format!("{:<4} {}: {}\n", f.level.word(), f.topic, f.text);
        }
        let (fails, warns) = (self.count(Level::Fail), self.count(Level::Warn));
        out += &if fails == 0 {
            format!("result: ringxferd can run here ({warns} warnings)\n")
        } else {
            format!("result: ringxferd cannot run like this: {fails} problems, {warns} warnings\n")
        };
        out
    }

    /// The report as one JSON object.
    pub fn to_json(&self, settings: &Settings) -> serde_json::Value {
        let settings_json: Vec<_> = settings
            .describe()
            .into_iter()
            .map(|(key, value, origin)| {
                serde_json::json!({
                    "key": key.name,
                    "value": value,
                    "origin": origin.kind(),
                    "from": origin.to_string(),
                })
            })
            .collect();
        let facts: Vec<_> = self
            .facts
            .iter()
            .map(|f| serde_json::json!({"level": f.level.word().to_ascii_lowercase(), "topic": f.topic, "text": f.text}))
            .collect();
        serde_json::json!({
            "ok": self.ok(),
            "engine": self.engine.map(EngineKind::name),
            "config_file": settings.config_file.to_string(),
            "settings": settings_json,
            "facts": facts,
        })
    }
}

/// Runs every probe for `settings`, and the O_DIRECT probe for each of `paths`.
pub fn run(settings: &Settings, paths: &[PathBuf]) -> Report {
    let mut report = Report::default();
    kernel(&mut report);
    let ring = ring_setup(&mut report, settings);
    // The ring's opcodes, flags and registered buffers matter only to the
    // io_uring engine; under threads they would be warnings about nothing.
    if let (Some(ring), Some(EngineKind::Uring)) = (ring, report.engine) {
        opcodes(&mut report, &ring);
        setup_flags(&mut report, settings.ring_entries);
        drop(ring);
        registered_buffers(&mut report, settings);
    }
    pipes(&mut report, settings);
    open_files(&mut report, settings);
    socket(&mut report, &settings.socket);
    capabilities(&mut report);
    for path in paths {
        direct_io(&mut report, path);
    }
    report
}

/// Whether this process holds CAP_IPC_LOCK, which lifts RLIMIT_MEMLOCK for
/// registered buffers (root has it unless a unit drops it).
fn has_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// The capabilities the daemon keeps once started (crate::privileges).
fn capabilities(report: &mut Report) {
    report.add(Level::Info, "capabilities", crate::privileges::check_line());
}

fn kernel(report: &mut Report) {
    // SAFETY: utsname is plain C data for which zeroed memory is valid.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname for uname to fill.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return;
    }
    // SAFETY: uname NUL-terminates each field within its array.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    report.add(
        Level::Info,
        "kernel",
        format!("Linux {}", release.to_string_lossy()),
    );
}

/// The back end that runs under `configured`, given whether
/// io_uring_setup worked: `None` if the daemon would not start.
fn engine_for(configured: EngineKind, io_uring_works: bool) -> Option<EngineKind> {
    match (configured, io_uring_works) {
        (EngineKind::Threads, _) | (EngineKind::Auto, false) => Some(EngineKind::Threads),
        (EngineKind::Uring | EngineKind::Auto, true) => Some(EngineKind::Uring),
        (EngineKind::Uring, false) => None,
    }
}

/// io_uring_setup with the configured entries, as the engine's fallback
/// (no flags) makes it: whether io_uring is there at all, and if not, why;
/// then which engine the daemon would run (`report.engine`) and why. Under
/// `threads` the probe is only information.
fn ring_setup(report: &mut Report, settings: &Settings) -> Option<IoUring> {
    let entries = settings.ring_entries;
    let configured = settings.engine;
    let chosen = match settings.origin(&keys::ENGINE) {
        Origin::Default => format!("engine = {} (the default)", configured.name()),
        origin => format!("engine = {} ({origin})", configured.name()),
    };
    let built = IoUring::builder()
        .setup_cqsize(entries.saturating_mul(4))
        .build(entries);
    report.engine = engine_for(configured, built.is_ok());
    let (ring, failure) = match built {
        Ok(ring) => (Some(ring), None),
        Err(e) => (None, Some(e)),
    };
    let setup = format!("io_uring_setup with {entries} entries");
    let (level, text) = match (&failure, report.engine) {
        (None, Some(EngineKind::Uring)) => (
            Level::Ok,
            format!("{setup} succeeded: the daemon will use io_uring"),
        ),
        (None, _) => (
            Level::Info,
            format!("{setup} succeeded, but the daemon will not use it: {chosen}"),
        ),
        (Some(e), engine) => {
            let failed = format!(
                "{setup} failed with {}: {}",
                unavailable::errno_name(e),
                unavailable::cause(e, entries)
            );
            match engine {
                None => (
                    Level::Fail,
                    format!(
                        "{failed}. With {chosen} the daemon will not start; engine = auto \
                         would run the threads engine instead"
                    ),
                ),
                Some(_) if configured == EngineKind::Threads => {
                    (Level::Info, format!("{failed}. Not needed: {chosen}"))
                }
                Some(_) => (
                    Level::Warn,
                    format!("{failed}. The daemon will run the threads engine: {chosen}"),
                ),
            }
        }
    };
    report.add(level, "io_uring", text);
    // One line that says what runs and why, whatever happened above.
    let why = match (&failure, configured) {
        (_, EngineKind::Threads) => format!("{chosen} asks for it"),
        (None, _) => format!("{chosen} and io_uring_setup works"),
        (Some(e), _) => format!(
            "{chosen} and io_uring_setup fails with {}",
            unavailable::errno_name(e)
        ),
    };
    let text = match report.engine {
        Some(EngineKind::Uring) => format!("the daemon will run the io_uring engine: {why}"),
        Some(_) => format!("the daemon will run the threads engine: {why}"),
        None => format!("none: {why}, so the daemon will not start"),
    };
    report.add(Level::Info, "engine", text);
    ring
}

/// Sets some set-up flags on a ring builder.
type Flags = fn(&mut io_uring::Builder) -> &mut io_uring::Builder;

/// The set-up flags the engine asks for, each tried on its own so the
/// report says which one an older kernel lacks.
fn setup_flags(report: &mut Report, entries: u32) {
    let try_flags = |flags: Flags| {
        let mut builder = IoUring::builder();
        flags(&mut builder);
        builder.build(entries).map(drop)
    };
    let probes: [(&str, &str, Flags); 3] = [
        ("SUBMIT_ALL", "5.18", |b| b.setup_submit_all()),
        ("SINGLE_ISSUER", "6.0", |b| b.setup_single_issuer()),
        ("DEFER_TASKRUN", "6.1", |b| {
            b.setup_single_issuer().setup_defer_taskrun()
        }),
    ];
    let mut all = true;
    for (name, since, f) in probes {
        match try_flags(f) {
            Ok(()) => report.add(Level::Ok, format!("setup {name}"), "supported"),
            Err(e) => {
                all = false;
                report.add(
                    Level::Warn,
                    format!("setup {name}"),
                    format!(
                        "refused with {} (needs Linux {since})",
                        unavailable::errno_name(&e)
                    ),
                );
            }
        }
    }
    // The engine asks for all three at once and falls back to none.
    if all {
        report.add(
            Level::Ok,
            "ring",
            "the loop's ring will be single-issuer, defer-taskrun, submit-all: completions run \
             only when the loop enters the kernel, with no cross-thread locking",
        );
    } else {
        report.add(
            Level::Warn,
            "ring",
            "the loop's ring will be plain (the kernel refused a flag above): it works, with \
             task work run at interrupts and the locking a shared ring needs",
        );
    }
}

/// What each opcode the engine submits is for; required ones the daemon
/// cannot serve without.
const OPCODES: &[(&str, u8, bool, &str)] = &[
    (
        "accept",
        opcode::Accept::CODE,
        true,
        "accepts client connections",
    ),
    (
        "recvmsg",
        opcode::RecvMsg::CODE,
        true,
        "receives requests and their descriptors",
    ),
    (
        "send",
        opcode::Send::CODE,
        true,
        "sends events, and file-to-socket data",
    ),
    (
        "read",
        opcode::Read::CODE,
        true,
        "reads the signalfd; unregistered buffer reads",
    ),
    (
        "poll_add",
        opcode::PollAdd::CODE,
        true,
        "waits on stream sources and destinations",
    ),
    ("splice", opcode::Splice::CODE, true, "the splice strategy"),
    (
        "statx",
        opcode::Statx::CODE,
        true,
        "admission: what a job's descriptors are, off the loop thread (a stalled FUSE or NFS getattr holds only its job)",
    ),
    (
        "timeout",
        opcode::Timeout::CODE,
        true,
        "rate limits and accept back-off",
    ),
    (
        "async_cancel",
        opcode::AsyncCancel::CODE,
        true,
        "cancels jobs and sessions",
    ),
    (
        "close",
        opcode::Close::CODE,
        true,
        "closes client descriptors off the loop thread",
    ),
    (
        "read_fixed",
        opcode::ReadFixed::CODE,
        false,
        "direct/uncached reads into registered buffers",
    ),
    (
        "write_fixed",
        opcode::WriteFixed::CODE,
        false,
        "direct/uncached writes from registered buffers",
    ),
    (
        "write",
        opcode::Write::CODE,
        false,
        "uncached writes; unregistered buffer writes",
    ),
    (
        "send_zc",
        opcode::SendZc::CODE,
        false,
        "zero-copy sends from registered buffers; without it the engine sends with plain SEND",
    ),
    ("fsync", opcode::Fsync::CODE, false, "jobs with fsync"),
    (
        "fallocate",
        opcode::Fallocate::CODE,
        false,
        "direct: preallocates the destination",
    ),
    (
        "ftruncate",
        opcode::Ftruncate::CODE,
        false,
        "direct: trims the padded last block; in-place copies end at the copy's end",
    ),
    (
        "linkat",
        opcode::LinkAt::CODE,
        false,
        "detached copies: the daemon names the finished file",
    ),
    (
        "renameat",
        opcode::RenameAt::CODE,
        false,
        "detached copies: replacing an existing file",
    ),
    (
        "unlinkat",
        opcode::UnlinkAt::CODE,
        false,
        "detached copies: removing a hidden name after a failure",
    ),
];

fn opcodes(report: &mut Report, ring: &IoUring) {
    let mut probe = Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        report.add(
            Level::Fail,
            "opcodes",
            format!(
                "IORING_REGISTER_PROBE failed with {} (Linux before 5.6): the engine needs newer",
                unavailable::errno_name(&e)
            ),
        );
        return;
    }
    for &(name, code, required, role) in OPCODES {
        let (level, text) = match (probe.is_supported(code), required) {
            (true, _) => (Level::Ok, format!("supported ({role})")),
            (false, true) => (
                Level::Fail,
                format!("NOT supported; the daemon needs it ({role})"),
            ),
            (false, false) => (
                Level::Warn,
                format!("not supported; jobs that need it fail or fall back ({role})"),
            ),
        };
        report.add(level, format!("opcode {name}"), text);
    }
}

/// Makes the configured buffer pool and registers it with a ring, as the
/// engine does at start-up.
fn registered_buffers(report: &mut Report, settings: &Settings) {
    const TOPIC: &str = "registered buffers";
    if settings.buffers == 0 {
        report.add(
            Level::Info,
            TOPIC,
            "buffers = 0: no pool; the direct and uncached strategies are off",
        );
        return;
    }
    let size = usize::try_from(settings.buffer_size).unwrap_or(usize::MAX);
    let pool = match BufferPool::new(settings.buffers, size) {
        Ok(pool) => pool,
        Err(e) => {
            report.add(Level::Fail, TOPIC, format!("cannot make the pool: {e}"));
            return;
        }
    };
    let total = settings.buffers.saturating_mul(size) as u64;
    let what = format!(
        "{} x {} = {}",
        settings.buffers,
        show_size(settings.buffer_size),
        show_size(total)
    );
    let ring = match IoUring::new(8) {
        Ok(ring) => ring,
        Err(e) => {
            report.add(Level::Fail, TOPIC, format!("no ring to try on: {e}"));
            return;
        }
    };
    let iovecs = pool.iovecs();
    // SAFETY: the pool's memory stays allocated and unmoved until after the
    // ring is closed: the ring is dropped explicitly below, before the pool.
    let result = unsafe { ring.submitter().register_buffers(&iovecs) };
    drop(ring);
    drop(pool);
    match result {
        Ok(()) => report.add(
            Level::Ok,
            TOPIC,
            format!(
                "{what}: registered ({}); direct I/O uses READ_FIXED/WRITE_FIXED",
                if has_ipc_lock() {
                    "CAP_IPC_LOCK: RLIMIT_MEMLOCK does not apply".to_string()
                } else {
                    format!("within RLIMIT_MEMLOCK, {}", unavailable::memlock_text())
                }
            ),
        ),
        Err(e) => report.add(
            Level::Warn,
            TOPIC,
            format!(
                "{what}: registration failed with {}; RLIMIT_MEMLOCK is {} and a user without \
                 CAP_IPC_LOCK needs at least {} bytes (LimitMEMLOCK= in the unit, ulimit -l). \
                 The daemon will run with unregistered buffers (plain READ/WRITE)",
                unavailable::errno_name(&e),
                unavailable::memlock_text(),
                total + (1 << 20)
            ),
        ),
    }
}

/// The pipe pool: the per-user pipe budget, and one pipe grown to pipe_size.
fn pipes(report: &mut Report, settings: &Settings) {
    const TOPIC: &str = "pipes";
    let size = u32::try_from(settings.pipe_size).unwrap_or(u32::MAX);
    if let Some((budget, soft)) = pipe_budget(size) {
        if budget < settings.pipes {
            report.add(
                Level::Warn,
                TOPIC,
                format!(
                    "{} pipes of {} exceed this user's budget (/proc/sys/fs/pipe-user-pages-soft \
                     = {soft} pages): the pool will be {budget} pipes; run as root, raise the \
                     sysctl or lower pipe_size",
                    settings.pipes,
                    show_size(settings.pipe_size)
                ),
            );
        }
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        let e = io::Error::last_os_error();
        report.add(Level::Fail, TOPIC, format!("pipe2 failed: {e}"));
        return;
    }
    // SAFETY: pipe2 succeeded, so this is a new descriptor owned by nobody
    // else; OwnedFd closes it when this function returns.
    let read_end = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above, for the other end.
    let _write_end = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    let want = i32::try_from(size).unwrap_or(i32::MAX);
    // SAFETY: F_SETPIPE_SZ takes an int argument; the descriptor is open.
    let got = unsafe { libc::fcntl(read_end.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
    if got < 0 {
        let e = io::Error::last_os_error();
        let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .map_or("unknown".into(), |v| v.trim().to_string());
        report.add(
            Level::Fail,
            TOPIC,
            format!(
                "growing a pipe to {} failed with {} (fs.pipe-max-size = {max} for users without \
                 CAP_SYS_RESOURCE); lower pipe_size",
                show_size(settings.pipe_size),
                unavailable::errno_name(&e)
            ),
        );
    } else {
        report.add(
            Level::Ok,
            TOPIC,
            format!(
                "{} pipes, each grown to {} (the kernel gave {})",
                settings.pipes,
                show_size(settings.pipe_size),
                show_size(got as u64)
            ),
        );
    }
}

/// RLIMIT_NOFILE against max_jobs, as the daemon fits one to the other.
fn open_files(report: &mut Report, settings: &Settings) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    // The daemon raises the soft limit to the hard one, keeps 256 for itself
    // and two per pipe, and gives each job two (see ringxferd's
    // fit_jobs_to_fd_limit).
    let fit = lim.rlim_max.saturating_sub(256 + 2 * settings.pipes as u64) / 2;
    if settings.max_jobs as u64 > fit {
        report.add(
            Level::Warn,
            "open files",
            format!(
                "RLIMIT_NOFILE hard limit {} admits {fit} jobs at two descriptors each: max_jobs \
                 will be lowered from {}; raise LimitNOFILE= / ulimit -Hn",
                lim.rlim_max, settings.max_jobs
            ),
        );
    } else {
        report.add(
            Level::Ok,
            "open files",
            format!(
                "RLIMIT_NOFILE hard limit {} admits max_jobs = {}",
                lim.rlim_max, settings.max_jobs
            ),
        );
    }
}

fn writable(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; access only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The socket: whether a daemon already answers there, and whether its
/// directory can be made and written.
fn socket(report: &mut Report, path: &Path) {
    let topic = format!("socket {}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match crate::server::listener::still_served(path) {
                Ok(true) => {
                    report.add(
                        Level::Fail,
                        topic,
                        "a daemon already answers there: ringxferd would refuse to start; stop it \
                     or choose another socket",
                    );
                    return;
                }
                Ok(false) => report.add(
                    Level::Ok,
                    topic.clone(),
                    "a stale socket file nobody answers on: the daemon will replace it",
                ),
                Err(e) => {
                    report.add(
                    Level::Fail,
                    topic,
                    format!("exists, and connecting to it fails with {e}: the daemon would refuse to replace it"),
                );
                    return;
                }
            }
        }
        Ok(_) => {
            report.add(
                Level::Fail,
                topic,
                "exists and is not a socket: the daemon refuses to replace it",
            );
            return;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            report.add(Level::Ok, topic.clone(), "free: no daemon serves there")
        }
        Err(e) => {
            report.add(Level::Fail, topic, format!("cannot inspect it: {e}"));
            return;
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The nearest directory that exists: the daemon creates the rest.
    let existing = dir.ancestors().find(|d| d.is_dir()).map(Path::to_path_buf);
    match existing {
        Some(d) if d == dir && writable(&d) => report.add(
            Level::Ok,
            topic,
            format!("directory {} exists and is writable", d.display()),
        ),
        Some(d) if writable(&d) => report.add(
            Level::Ok,
            topic,
            format!(
                "directory {} will be created (in {}, writable)",
                dir.display(),
                d.display()
            ),
        ),
        Some(d) => report.add(
            Level::Fail,
            topic,
            format!(
                "directory {} is not writable by uid {}: the daemon cannot bind there",
                d.display(),
                // SAFETY: geteuid has no preconditions and cannot fail.
                unsafe { libc::geteuid() }
            ),
        ),
        None => report.add(
            Level::Fail,
            topic,
            format!("no existing directory above {}", dir.display()),
        ),
    }
}

/// The O_DIRECT alignment of `path`: what statx STATX_DIOALIGN says, what
/// the engine will use, and whether the file system takes O_DIRECT at all.
fn direct_io(report: &mut Report, path: &Path) {
    let topic = format!("direct I/O {}", path.display());
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            report.add(Level::Warn, topic, format!("cannot open it: {e}"));
            return;
        }
    };
    // SAFETY: an all-zero statx is a valid value of a plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty path with AT_EMPTY_PATH names the open descriptor
    // itself; `stx` is a valid, writable statx buffer.
    let ret = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if ret != 0 {
        let e = io::Error::last_os_error();
        report.add(Level::Warn, topic.clone(), format!("statx failed: {e}"));
    } else if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        report.add(
            Level::Info,
            topic.clone(),
            format!(
                "statx gives no STATX_DIOALIGN (Linux before 6.1, or the file system does not \
                 report it); block size {}",
                stx.stx_blksize
            ),
        );
    } else if stx.stx_dio_offset_align == 0 {
        report.add(
            Level::Info,
            topic.clone(),
            "statx STATX_DIOALIGN: the file system does no direct I/O on this file",
        );
    } else {
        report.add(
            Level::Info,
            topic.clone(),
            format!(
                "statx STATX_DIOALIGN: offsets and lengths aligned to {} bytes, memory to {}",
                stx.stx_dio_offset_align, stx.stx_dio_mem_align
            ),
        );
    }
    match dio::dio_alignment(&file) {
        Ok(Some(align)) => report.add(
            Level::Info,
            topic.clone(),
            format!("the direct strategy will align offsets, lengths and memory to {align} bytes"),
        ),
        Ok(None) => report.add(
            Level::Info,
            topic.clone(),
            "the direct strategy is refused here; auto splices or goes uncached",
        ),
        Err(e) => report.add(
            Level::Warn,
            topic.clone(),
            format!("alignment unknown: {e}"),
        ),
    }
    // Opening with O_DIRECT is where file systems without it say EINVAL.
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(_) => report.add(Level::Ok, topic, "opens with O_DIRECT"),
        Err(e) => report.add(
            Level::Info,
            topic,
            format!(
                "opening with O_DIRECT fails with {}: no direct I/O here",
                unavailable::errno_name(&e)
            ),
        ),
    }
}

#[cfg(test)]
mod engine_tests {
    use super::*;

    #[test]
    fn auto_falls_back_uring_insists_threads_is_threads() {
        use EngineKind::{Auto, Threads, Uring};
        assert_eq!(engine_for(Auto, true), Some(Uring));
        assert_eq!(engine_for(Auto, false), Some(Threads));
        assert_eq!(engine_for(Uring, true), Some(Uring));
        assert_eq!(engine_for(Uring, false), None);
        assert_eq!(engine_for(Threads, true), Some(Threads));
        assert_eq!(engine_for(Threads, false), Some(Threads));
    }
}

#[cfg(test)]
mod opcode_list_tests {
    use super::*;

    #[test]
    fn the_probe_checks_exactly_the_opcodes_the_ring_allows() {
        let mut probed: Vec<u8> = OPCODES.iter().map(|&(_, code, _, _)| code).collect();
        let mut allowed = crate::io::ring::ALLOWED_OPCODES.to_vec();
        probed.sort_unstable();
        allowed.sort_unstable();
        assert_eq!(
            probed, allowed,
            "--check's OPCODES and ring::ALLOWED_OPCODES differ"
        );
    }
}
