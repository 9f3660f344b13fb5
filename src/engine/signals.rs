//! The daemon's signals: read from a signalfd through the ring, so that they
//! reach the loop as completions, never as handlers interrupting it.
//!
//! As nginx does: SIGTERM, SIGINT and SIGQUIT stop gracefully (a second one
//! cancels at once), SIGHUP reloads the settings that can change while jobs
//! run, SIGUSR1 logs a status line. SIGUSR2 is logged and otherwise ignored,
//! and the other signals whose default action would kill the daemon for
//! nothing (timers, SIGIO, SIGPWR, SIGXFSZ, SIGXCPU, SIGPIPE) are ignored, so
//! no stray `kill -USR2` loses every running job.
//!
//! A reload reads the config file, which may sit on any file system, so it
//! runs on a short-lived thread; the thread hands its result over a channel
//! and wakes the loop with [`wake_signal`], one of the signals the signalfd
//! reports.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use tracing::{error, info, warn};

use super::rate::TokenBucket;
use super::{Engine, SHUTDOWN_NOW};
use crate::io::fd::SharedFd;
use crate::io::op::AnyOp;
use crate::io::ops::{Op, Owner};
use crate::io::Io;

/// The signal a finished reload wakes the loop with.
pub fn wake_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// Signals read from the signalfd (blocked in every thread).
fn handled() -> [libc::c_int; 7] {
    [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGQUIT,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        wake_signal(),
    ]
}

/// Signals whose default action is to end the process, and that mean
/// nothing to the daemon.
const IGNORED: [libc::c_int; 9] = [
    libc::SIGPIPE,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
    libc::SIGPWR,
    // A write past RLIMIT_FSIZE then fails with EFBIG, failing its job only.
    libc::SIGXFSZ,
    libc::SIGXCPU,
    libc::SIGSTKFLT,
];

/// Blocks the handled signals, ignores the others of [`IGNORED`] and
/// returns a signalfd that reports the handled ones. Call while the process
/// has one thread: the mask is per thread and inherited by threads made
/// later (io_uring's workers, the closing thread).
pub fn install() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is a plain bitmask for which zeroed memory is valid,
    // and sigemptyset/sigaddset only write into it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t, which these calls only write.
    unsafe { libc::sigemptyset(&mut set) };
    for sig in handled() {
        // SAFETY: as above.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    // SAFETY: `set` is a valid, initialised sigset_t; the old mask is not asked for.
    if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for sig in IGNORED {
        // SAFETY: SIG_IGN installs no handler code; these signals are valid.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    // SAFETY: `set` is valid; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The settings a reload may change while jobs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadableLimits {
    pub rate_limit: Option<u64>,
    pub max_jobs_per_connection: usize,
    pub max_jobs_per_user: usize,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub max_event_bytes: u64,
    pub max_queued_bytes_per_connection: u64,
    pub max_queued_bytes_per_user: u64,
    pub direct_threshold: u64,
    pub shutdown_grace: Duration,
}

/// What a reload read: the new limits, and what changed, as `key: old ->
/// new` lines, split by whether it took effect or needs a restart.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub limits: ReloadableLimits,
    pub applied: Vec<String>,
    pub needs_restart: Vec<String>,
}

/// Reads the settings again (the daemon's binary supplies it; it may also
/// apply what the engine does not own, such as the log filter).
pub type Reloader = Box<dyn FnMut() -> Result<Reloaded, String> + Send>;

/// The reload machinery's state in the engine.
pub(super) struct Reload {
    reloader: Option<Arc<Mutex<Reloader>>>,
    tx: Sender<Result<Reloaded, String>>,
    rx: Receiver<Result<Reloaded, String>>,
    /// A reload thread is running.
    running: bool,
    /// Another SIGHUP came meanwhile: reload again when it is done.
    again: bool,
}

impl Reload {
    pub(super) fn new() -> Reload {
        let (tx, rx) = crossbeam_channel::bounded(1);
        Reload {
            reloader: None,
            tx,
            rx,
            running: false,
            again: false,
        }
    }
}

/// The signalfd, its read in flight, and SIGHUP's reload.
pub(super) struct Signals {
    /// Shared with the read in flight, if any: the engine keeps it until
    /// it is dropped, after the loop waited for that read's completion.
    pub fd: Option<Rc<OwnedFd>>,
    pub op: Option<u64>,
    /// The read was taken back because nothing else was left in flight.
    pub cancelled: bool,
    /// SIGHUP's reload: the reader, and its result on the way back.
    pub reload: Reload,
}

impl Signals {
    pub(super) fn new() -> Signals {
        Signals {
            fd: None,
            op: None,
            cancelled: false,
            reload: Reload::new(),
        }
    }

    pub(super) fn arm(&mut self, io: &mut Io) {
        let Some(fd) = self.fd.as_ref().map(SharedFd::owned) else {
            return;
        };
        let len = std::mem::size_of::<libc::signalfd_siginfo>() as u32;
        match io.read_small(Owner::Signal, fd, len) {
            Ok(ud) => self.op = Some(ud),
            Err(e) => error!("cannot queue the signalfd read: {e}"),
        }
    }
}

impl Engine {
    /// Reads the daemon's signals from `signalfd` (made by
    /// [`install`]): the first stop signal drains, a second stops
    /// at once; SIGHUP reloads (see [`Engine::set_reloader`]).
    pub fn set_signalfd(&mut self, signalfd: OwnedFd) {
        self.signals.fd = Some(Rc::new(signalfd));
    }

    /// A completion of the signalfd read.
    pub(super) fn on_signal_op(&mut self, op: Op, result: i32) {
        match (op.owner, op.op) {
            (Owner::Signal, AnyOp::ReadSmall(op)) => self.on_signal(result, &op.buf),
            (Owner::Signal, _) => self.on_signal(result, &[0; 128]),
            (owner, _) => error!(?owner, tag = op.tag, "completion of an unexpected kind"),
        }
    }

    /// A stopping loop waiting for nothing but the signal read
    /// (`waiting_for`: operations in flight other than closes).
    pub(super) fn cancel_signal_read_if_last(&mut self, waiting_for: usize) {
        if self.life.stopping && waiting_for == 1 && !self.signals.cancelled {
            // Only the signal read is left: nothing else can finish now,
            // so take it back too, and exit once its completion is in.
            if let Some(ud) = self.signals.op {
                self.signals.cancelled = true;
                let _ = self.io.cancel(ud);
            }
        }
    }

    /// Lets SIGHUP reload settings through `reloader`.
    pub fn set_reloader(&mut self, reloader: Reloader) {
        self.signals.reload.reloader = Some(Arc::new(Mutex::new(reloader)));
    }

    /// A signalfd read completed with `result` bytes in `buf`.
    pub(super) fn on_signal(&mut self, result: i32, buf: &[u8; 128]) {
        self.signals.op = None;
        if result < 0 {
            if -result != libc::ECANCELED {
                warn!(
                    "reading the signalfd failed: {}",
                    io::Error::from_raw_os_error(-result)
                );
            }
            return;
        }
        // ssi_signo, the first field of struct signalfd_siginfo.
        let signo = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        match signo {
            libc::SIGINT | libc::SIGTERM | libc::SIGQUIT => {
                if self.on_stop_signal() {
                    return;
                }
            }
            libc::SIGHUP => self.start_reload(),
            libc::SIGUSR1 => self.log_status(),
            s if s == wake_signal() => self.finish_reload(),
            libc::SIGUSR2 => info!("SIGUSR2 ignored"),
            other => info!(signal = other, "signal ignored"),
        }
        // Stay armed, so that a second signal can stop at once.
        self.signals.arm(&mut self.io);
    }

    /// Returns whether the loop is ending now (no read re-armed).
    fn on_stop_signal(&mut self) -> bool {
        if self.life.stopping {
            warn!("another signal while jobs are being cancelled: exiting now");
            self.life.stop_now = true;
            return true;
        }
        if self.life.draining {
            warn!("second signal: cancelling every job now");
            self.stop_with(SHUTDOWN_NOW);
        } else {
            self.drain();
        }
        false
    }

    fn log_status(&self) {
        info!(
            jobs = self.jobs.slab.len(),
            connections = self.sessions.slab.len(),
            in_flight = self.io.ops.len(),
            jobs_completed = self.counters.jobs_completed,
            jobs_failed = self.counters.jobs_failed,
            bytes = self.counters.bytes_finished,
            draining = self.life.draining,
            "status (SIGUSR1)"
        );
    }

    fn start_reload(&mut self) {
        let Some(reloader) = self.signals.reload.reloader.clone() else {
            info!("SIGHUP: nothing to reload (no config to read)");
            return;
        };
        if self.signals.reload.running {
            self.signals.reload.again = true;
            return;
        }
        let tx = self.signals.reload.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("ringxfer-reload".into())
            .spawn(move || {
                let result = match reloader.lock() {
                    Ok(mut reload) => reload(),
                    Err(_) => Err("an earlier reload panicked".to_string()),
                };
                // The channel has room for one: the loop starts no second
                // reload before it has taken this one's result.
                let _ = tx.send(result);
                // SAFETY: kill(2) on our own pid with a valid signal number;
                // the signal is blocked everywhere and read by the signalfd.
                unsafe { libc::kill(libc::getpid(), wake_signal()) };
            });
        match spawned {
            Ok(_) => self.signals.reload.running = true,
            Err(e) => error!("SIGHUP: cannot start the reload thread: {e}"),
        }
    }

    fn finish_reload(&mut self) {
        let Ok(result) = self.signals.reload.rx.try_recv() else {
            return;
        };
        self.signals.reload.running = false;
        match result {
            Ok(reloaded) => self.apply_reload(reloaded),
            Err(e) => error!("SIGHUP: the settings were not reloaded, nothing changed: {e}"),
        }
        if std::mem::take(&mut self.signals.reload.again) {
            self.start_reload();
        }
    }

    fn apply_reload(&mut self, r: Reloaded) {
        let l = r.limits;
        if self.config.rate_limit != l.rate_limit {
            self.slots.global_bucket = l
                .rate_limit
                .map(|rate| TokenBucket::new(rate, std::time::Instant::now()));
        }
        let c = &mut self.config;
        c.rate_limit = l.rate_limit;
        c.max_jobs_per_connection = l.max_jobs_per_connection;
        c.max_jobs_per_user = l.max_jobs_per_user;
        c.max_connections = l.max_connections;
        c.max_connections_per_user = l.max_connections_per_user;
        c.max_event_bytes = l.max_event_bytes;
        c.max_queued_bytes_per_connection = l.max_queued_bytes_per_connection;
        c.max_queued_bytes_per_user = l.max_queued_bytes_per_user;
        c.direct_threshold = l.direct_threshold;
        c.shutdown_grace = l.shutdown_grace;
        let list = |v: &[String]| {
            if v.is_empty() {
                "nothing".to_string()
            } else {
                v.join(", ")
            }
        };
        info!(
            changed = %list(&r.applied),
            needs_restart = %list(&r.needs_restart),
            "SIGHUP: settings reloaded"
        );
    }
}
