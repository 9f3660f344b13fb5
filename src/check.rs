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

use io_uring::IoUring;

use crate::io::buffer_pool::BufferPool;
use crate::io::opcodes::{Opcode, OPCODES};
use crate::io::pipe_pool::pipe_budget;
use crate::io::ring::setup_uring;
use crate::io::unavailable;
use crate::io::{EngineError, EngineKind};
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
    if settings.engine != EngineKind::Threads {
        opcodes(&mut report, &ring);
    }
    if let (Ok(ring), Some(EngineKind::Uring)) = (ring, report.engine) {
        setup_flags(&mut report, settings.ring_entries);
        registered_buffers(&mut report, settings, ring);
    }
    pipes(&mut report, settings);
    open_files(&mut report, settings);
    socket(&mut report, &settings.socket);
    capabilities(&mut report);
    kernel_tls(&mut report);
    host_to_host(&mut report, settings);
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

/// What talking to other daemons would be: the TCP listener (bound and let
/// go, as the daemon would bind it), the TLS identity and pins, the
/// exports (opened, their users found). A setting the daemon would refuse
/// to start with fails here with the same words.
fn host_to_host(report: &mut Report, settings: &Settings) {
    let (level, text) = match crate::daemon::peers::open(settings, None) {
        Ok(None) => (Level::Info, "off (no listen_tcp, no tls_cert)".to_string()),
        Ok(Some(setup)) => (Level::Ok, describe_peers(&setup, settings)),
        Err(e) => (Level::Fail, e),
    };
    report.add(level, "host to host", text);
}

fn describe_peers(setup: &crate::engine::PeerSetup, settings: &Settings) -> String {
    let listening = match (&setup.listener, settings.listen_tcp) {
        (Some(_), Some(address)) if setup.plaintext => {
            format!("listens on {address} in plaintext (loopback only)")
        }
        (Some(_), Some(address)) => format!("listens on {address} with TLS 1.3"),
        _ => "does not listen (pushes only)".to_string(),
    };
    let tls = match &setup.tls {
        Some(tls) => format!(
            "; identity {}, {} pinned peer(s)",
            tls.own,
            settings.peers.len()
        ),
        None => "; no TLS identity: pushes to loopback only".to_string(),
    };
    let exports: Vec<String> = setup
        .exports
        .iter()
        .map(|e| {
            format!(
                "{} -> {} (uid {})",
                e.name,
                e.path.display(),
                e.identity.uid
            )
        })
        .collect();
    let exports = if exports.is_empty() {
        String::new()
    } else {
        format!("; exports {}", exports.join(", "))
    };
    format!("{listening}{tls}{exports}")
}

/// Whether the kernel can take over TLS records (see crate::ktls): where it
/// cannot, encryption between hosts is done in user space, so this is
/// worth knowing and never a failure.
fn kernel_tls(report: &mut Report) {
    use crate::ktls::{probe, KernelTls};
    let (level, text) = match probe() {
        KernelTls::Unavailable { step, error } => {
            let why = match error.raw_os_error() {
                Some(libc::ENOENT) => ": the kernel has no tls module, or may not load it",
                _ => "",
            };
            (Level::Info, format!("not available: {step}: {error}{why}"))
        }
        KernelTls::Available { ciphers } => {
            let (yes, no): (Vec<_>, Vec<_>) = ciphers.iter().partition(|(_, r)| r.is_ok());
            let mut text = format!(
                "available: TLS 1.3 send and receive offload for {}",
                names(&yes)
            );
            for (cipher, err) in &no {
                if let Err(e) = err {
                    text += &format!("; {} not offloaded: {e}", cipher.name());
                }
            }
            let level = if yes.is_empty() {
                Level::Info
            } else {
                Level::Ok
            };
            (level, text)
        }
    };
    report.add(level, "kernel TLS", text);
}

fn names(ciphers: &[&(crate::ktls::Cipher, io::Result<()>)]) -> String {
    if ciphers.is_empty() {
        return "no cipher".into();
    }
    let names: Vec<_> = ciphers.iter().map(|(c, _)| c.name()).collect();
    names.join(", ")
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

/// The engine's own io_uring set-up (io::ring::setup_uring: the configured
/// entries, its flags, its opcode check and restrictions): whether io_uring
/// is there at all, and if not, why; then which engine the daemon would run
/// (`report.engine`) and why. Under `threads` the probe is only information.
fn ring_setup(report: &mut Report, settings: &Settings) -> Result<IoUring, EngineError> {
    let entries = settings.ring_entries;
    let configured = settings.engine;
    let chosen = match settings.origin(&keys::ENGINE) {
        Origin::Default => format!("engine = {} (the default)", configured.name()),
        origin => format!("engine = {} ({origin})", configured.name()),
    };
    let built = setup_uring(entries).map(|(ring, _)| ring);
    report.engine = engine_for(configured, built.is_ok());
    let setup = format!("io_uring_setup with {entries} entries");
    let (level, text) = match (&built, report.engine) {
        (Ok(_), Some(EngineKind::Uring)) => (
            Level::Ok,
            format!("{setup} succeeded: the daemon will use io_uring"),
        ),
        (Ok(_), _) => (
            Level::Info,
            format!("{setup} succeeded, but the daemon will not use it: {chosen}"),
        ),
        (Err(e), engine) => {
            let failed = setup_failure(&setup, e);
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
    let why = match (&built, configured) {
        (_, EngineKind::Threads) => format!("{chosen} asks for it"),
        (Ok(_), _) => format!("{chosen} and io_uring_setup works"),
        (Err(EngineError::MissingOpcodes(missing)), _) => {
            format!("{chosen} and io_uring lacks {}", opcode_list(missing))
        }
        (Err(e), _) => format!("{chosen} and io_uring_setup fails with {}", short_cause(e)),
    };
    let text = match report.engine {
        Some(EngineKind::Uring) => format!("the daemon will run the io_uring engine: {why}"),
        Some(_) => format!("the daemon will run the threads engine: {why}"),
        None => format!("none: {why}, so the daemon will not start"),
    };
    report.add(Level::Info, "engine", text);
    built
}

/// Why the engine's ring set-up failed, after "io_uring_setup with N entries".
fn setup_failure(setup: &str, e: &EngineError) -> String {
    match e {
        EngineError::RingSetup { cause, source, .. } => format!(
            "{setup} failed with {}: {cause}",
            unavailable::errno_name(source)
        ),
        EngineError::MissingOpcodes(missing) => format!(
            "{setup} succeeded, but the kernel lacks operations the engine needs: {}",
            opcode_list(missing)
        ),
        other => format!("{setup} failed: {other}"),
    }
}

/// The errno of a failed set-up by name, or the whole error.
fn short_cause(e: &EngineError) -> String {
    match e {
        EngineError::RingSetup { source, .. } => unavailable::errno_name(source),
        other => other.to_string(),
    }
}

/// "ftruncate, send_zc".
fn opcode_list(ops: &[&Opcode]) -> String {
    let names: Vec<&str> = ops.iter().map(|o| o.name).collect();
    names.join(", ")
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

/// One line per opcode of the engine's list (io/opcodes.rs), from what the
/// engine's own ring set-up found: all there if it succeeded, the ones it
/// named missing if it refused. Nothing when it failed before asking.
fn opcodes(report: &mut Report, setup: &Result<IoUring, EngineError>) {
    let missing: &[&Opcode] = match setup {
        Ok(_) => &[],
        Err(EngineError::MissingOpcodes(missing)) => missing,
        Err(_) => return,
    };
    for op in OPCODES {
        let there = !missing.iter().any(|m| m.code == op.code);
        let (level, text) = opcode_line(op, there, report.engine);
        report.add(level, format!("opcode {}", op.name), text);
    }
}

/// The level and text of one opcode's line, given whether the kernel has
/// it and the engine the daemon would run (`None`: it would not start).
fn opcode_line(op: &Opcode, there: bool, engine: Option<EngineKind>) -> (Level, String) {
    let role = op.role;
    match (there, op.required, engine) {
        (true, _, _) => (Level::Ok, format!("supported ({role})")),
        (false, true, None) => (
            Level::Fail,
            format!("NOT supported; the daemon needs it ({role})"),
        ),
        (false, true, Some(_)) => (
            Level::Warn,
            format!(
                "NOT supported; the io_uring engine needs it, so the daemon runs threads ({role})"
            ),
        ),
        (false, false, _) => (
            Level::Warn,
            format!("not supported; jobs that need it fail or fall back ({role})"),
        ),
    }
}

/// Makes the configured buffer pool and registers it with the engine's
/// ring, as the engine does at start-up.
fn registered_buffers(report: &mut Report, settings: &Settings, ring: IoUring) {
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
            match crate::daemon::listener::still_served(path) {
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
        // --check reports on the engine's own set-up, over the one list.
        let mut report = Report {
            engine: Some(EngineKind::Uring),
            ..Report::default()
        };
        let setup = setup_uring(8).map(|(ring, _)| ring);
        if let Err(e) = &setup {
            panic!("this kernel runs the engine's io_uring: {e}");
        }
        opcodes(&mut report, &setup);
        let lines: Vec<&String> = report.facts.iter().map(|f| &f.topic).collect();
        let listed: Vec<String> = OPCODES
            .iter()
            .map(|o| format!("opcode {}", o.name))
            .collect();
        assert_eq!(lines, listed.iter().collect::<Vec<_>>());
    }

    #[test]
    fn a_missing_opcode_is_reported_as_the_engine_treats_it() {
        let Some(ftruncate) = crate::io::opcodes::find(io_uring::opcode::Ftruncate::CODE) else {
            panic!("ftruncate is on the list");
        };
        // The engine refuses io_uring without it: with engine = uring the
        // daemon would not start, with auto it runs threads.
        assert!(ftruncate.required);
        let missing: Result<IoUring, EngineError> =
            Err(EngineError::MissingOpcodes(vec![ftruncate]));
        for (engine, level) in [
            (None, Level::Fail),
            (Some(EngineKind::Threads), Level::Warn),
        ] {
            let mut report = Report {
                engine,
                ..Report::default()
            };
            opcodes(&mut report, &missing);
            let line = report
                .facts
                .iter()
                .find(|f| f.topic == "opcode ftruncate")
                .expect("a line for ftruncate");
            assert_eq!(line.level, level, "{engine:?}: {}", line.text);
            let others = report.facts.iter().filter(|f| f.level != Level::Ok).count();
            assert_eq!(others, 1, "only ftruncate is missing");
        }
    }
}
