//! Ctrl-C, SIGTERM and SIGHUP: the CLI removes what it staged, then exits
//! with status 128 + the signal's number (130, 143, 129), as a shell
//! reports a command the signal ended.
//!
//! [`start`] blocks the three signals in the calling thread before any
//! other is started (threads inherit the mask), and one thread takes them
//! with sigwait(2). So no handler ever runs in the middle of another
//! thread's work, and nothing has to restart a call cut short by EINTR.
//! That thread then does one of two things:
//! - While a tree copy [`watch`]es, it only records the signal. The copy
//!   checks [`received`] between steps (and its waits end every
//!   [`POLL`]), stops the walk, drops its jobs, removes its staged
//!   directories and files itself, and returns; `main` exits with the
//!   status. Only the copy knows when nothing more is being created in
//!   what it removes.
//! - Otherwise, and on a second signal, it removes this process's own
//!   staging names from the directories given to [`sweep_in`] (see
//!   [`crate::staging::remove_own`]) and exits at once.
//!
//!
//! A single file's copy has no thread for them: [`defer`] leaves the
//! signals their default action while nothing is staged (nothing is left
//! behind by dying then), and [`arm`], called once the engine answered and
//! before anything is staged (or before an in-process engine's thread
//! starts), blocks them and queues them on a signalfd. The copy's wait for
//! its job polls that descriptor ([`fd`]) with the daemon's socket, and
//! [`take`] then does what the thread would: removes the staging names and
//! exits; the copy looks once more when it has published. The thread cost
//! the copy of a 4 KiB file 0.1-0.23 ms (its start, and its end at exit),
//! up to a ninth of the command.
//!
//! A signal that was ignored when the CLI started (nohup, or a background
//! job of a shell without job control) stays ignored, as it did before.
//! SIGKILL cannot be caught: what it leaves, a later copy removes.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The signals that end the CLI with a cleanup.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// How long a waiting copy may go without looking at [`received`].
pub const POLL: Duration = Duration::from_millis(50);

/// The first signal received, 0 for none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// A tree copy handles the first signal itself.
static WATCHED: AtomicBool = AtomicBool::new(false);

/// Directories where this process may have staging names to remove.
static SWEEP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Whether `sig` is ignored (SIG_IGN) in this process.
fn ignored(sig: libc::c_int) -> bool {
    // SAFETY: an all-zero sigaction is a valid value to be overwritten.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    rc == 0 && old.sa_sigaction == libc::SIG_IGN
}

/// The signals of [`SIGNALS`] not ignored at start, or `None` if all are.
fn caught() -> Option<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a sigset_t we own.
    unsafe { libc::sigemptyset(&mut set) };
    let mut any = false;
    for sig in SIGNALS.into_iter().filter(|&s| !ignored(s)) {
        // SAFETY: as above; `sig` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, sig) };
        any = true;
    }
    any.then_some(set)
}

/// Blocks `set` in the calling thread (and the threads it starts from
/// now on); the mask before, or `None` if that failed.
fn block(set: &libc::sigset_t) -> Option<libc::sigset_t> {
    // SAFETY: sigset_t is plain data, overwritten by the call.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` and `old` are sigset_ts that live across the call.
    (unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set, &mut old) } == 0).then_some(old)
}

/// [`arm`] takes the signals on a descriptor: a single file's copy.
static DEFERRED: AtomicBool = AtomicBool::new(false);

/// The signalfd [`arm`] made.
static SIGNAL_FD: OnceLock<OwnedFd> = OnceLock::new();

/// For a single file's copy: the signals keep their default action until
/// [`arm`] (see the module comment).
pub fn defer() {
    DEFERRED.store(true, Ordering::SeqCst);
}

/// If [`defer`] asked, blocks the signals in the calling thread (call it
/// before any other thread starts) and queues them on a signalfd, which
/// the copy polls ([`fd`]); once. Without a signalfd they go to a thread,
/// as with [`start`].
pub fn arm() {
    if !DEFERRED.swap(false, Ordering::SeqCst) {
        return;
    }
    let Some(set) = caught() else {
        return;
    };
    let Some(old) = block(&set) else {
        return;
    };
    // SAFETY: `set` is an initialised sigset_t; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return spawn(set, old);
    }
    // SAFETY: signalfd returned a new descriptor that only this owns.
    let _ = SIGNAL_FD.set(unsafe { OwnedFd::from_raw_fd(fd) });
}

/// The descriptor the signals queue on after [`arm`], to poll for POLLIN
/// along with what the copy waits for; then call [`take`].
pub fn fd() -> Option<BorrowedFd<'static>> {
    SIGNAL_FD.get().map(AsFd::as_fd)
}

/// Acts on a signal queued on [`fd`], as the thread of [`start`] would
/// (the staging names removed, exit 128 + N); returns if none is.
pub fn take() {
    let Some(fd) = SIGNAL_FD.get() else {
        return;
    };
    // SAFETY: signalfd_siginfo is plain data, overwritten by the read.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is writable for `size` bytes; the descriptor is open.
    let n = unsafe {
        libc::read(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            std::ptr::addr_of_mut!(info).cast(),
            size,
        )
    };
    if n == size as isize {
        on_signal(info.ssi_signo as libc::c_int);
    }
}

/// Takes the signals on a thread of its own from now on. Call it before
/// any other thread exists. If no thread can be started the signals keep
/// their default action (they end the process, as before).
pub fn start() {
    let Some(set) = caught() else {
        return;
    };
    if let Some(old) = block(&set) {
        spawn(set, old);
    }
}

/// Starts the thread taking the signals of `set`, blocked already; if it
/// cannot start, the mask goes back to `old`.
fn spawn(set: libc::sigset_t, old: libc::sigset_t) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialised sigset_t owned by this
            // closure; sigwait writes one int into `sig`.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                on_signal(sig);
            }
        });
    if spawned.is_err() {
        // SAFETY: `old` holds the mask read above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    }
}

fn on_signal(sig: libc::c_int) {
    let first = RECEIVED
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if first && WATCHED.load(Ordering::SeqCst) {
        return;
    }
    let dirs = SWEEP
        .lock()
        .map(|d| d.clone())
        .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
    for dir in dirs {
        crate::staging::remove_own(&dir);
    }
    std::process::exit(128 + sig);
}

/// While the returned value lives, the first signal is only recorded (see
/// the module comment).
pub fn watch() -> Watch {
    WATCHED.store(true, Ordering::SeqCst);
    Watch(())
}

/// See [`watch`].
pub struct Watch(());

impl Drop for Watch {
    fn drop(&mut self) {
        WATCHED.store(false, Ordering::SeqCst);
    }
}

/// The signal received, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// The exit status for the signal received, if any.
pub fn exit_status() -> Option<u8> {
    received().and_then(|sig| u8::try_from(128 + sig).ok())
}

/// The signal's name, for messages.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Adds a directory where this process may stage names (a single file's
/// hidden temporary), removed if a signal ends the process.
pub fn sweep_in(dir: PathBuf) {
    let mut dirs = SWEEP.lock().unwrap_or_else(|p| p.into_inner());
    if !dirs.contains(&dir) {
        dirs.push(dir);
    }
}
