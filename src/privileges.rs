//! Least privilege: a client never gets more from the daemon than from
//! writing the file itself.
//!
//! A daemon started as root would otherwise lend each client its own rights
//! on every write: CAP_FSETID keeps a setuid/setgid bit the client's write
//! would clear, fsuid 0 and CAP_SYS_RESOURCE fill ext4's root-reserved
//! blocks and pass disk quotas, CAP_DAC_OVERRIDE publishes into directories
//! the client may not write, and the daemon's RLIMIT_FSIZE is not the
//! client's. So, once start-up is done (socket bound, descriptor table
//! grown, pipes sized, buffers registered), [`drop_after_startup`] leaves
//! every thread with CAP_SETUID and CAP_SETGID only (nothing at all for a
//! daemon that cannot use them), an empty bounding and ambient set,
//! no_new_privs and locked securebits; and every operation of a job runs
//! under its client's uid, gid and groups, with no capabilities: an io_uring
//! personality registered per identity (the loop thread takes the identity
//! for the moment of `IORING_REGISTER_PERSONALITY`, see [`with_identity`]), or
//! for the threads engine the worker thread takes it around the syscall.
//! The kernel then applies to each write exactly the rules it applies to the
//! client's own. RLIMIT_FSIZE is per process, not per credential, so the
//! client's limit is read at connect time ([`peer_fsize_limit`]) and enforced
//! by the engine (`crate::transfer::fsize`).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SETPCAP: u32 = 8;
/// _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

// securebits (linux/securebits.h).
const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

/// The daemon's securebits after the drop: an exec as root gains nothing,
/// no ambient capability can be raised, and keep-caps (off) cannot be
/// turned on. Not SECBIT_NO_SETUID_FIXUP: the fix-up is what empties the
/// effective set while the loop thread wears a client's uid.
const SECUREBITS: libc::c_ulong = SECBIT_NOROOT
    | SECBIT_NOROOT_LOCKED
    | SECBIT_KEEP_CAPS_LOCKED
    | SECBIT_NO_CAP_AMBIENT_RAISE
    | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Who a client is, as the kernel checks a write: effective uid and gid,
/// and supplementary groups (SO_PEERCRED, SO_PEERGROUPS).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The calling thread's effective and permitted capabilities (first word:
/// every capability the daemon cares about is below 32).
fn capget() -> io::Result<CapData> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData (version 3) into `data`; both
    // structures have the kernel's layout.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data[0])
}

fn has(caps: u32, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Reads any file, whatever its mode says.
pub const CAP_DAC_OVERRIDE: u32 = 1;
/// Reads any file and searches any directory.
pub const CAP_DAC_READ_SEARCH: u32 = 2;
/// Acts as the owner of any file (O_NOATIME, a file's attributes).
pub const CAP_FOWNER: u32 = 3;

/// Whether the calling thread has `cap` in its effective set (false where
/// the kernel will not say).
pub fn has_effective(cap: u32) -> bool {
    capget().is_ok_and(|caps| has(caps.effective, cap))
}

/// Whether this thread can take a client's identity: effective uid 0 with
/// CAP_SETUID and CAP_SETGID (the emptying of the effective set on leaving
/// uid 0 is what leaves the client's identity without capabilities; a
/// non-root daemon holding those capabilities would keep them).
pub fn can_assume() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    root && capget().is_ok_and(|c| has(c.effective, CAP_SETUID) && has(c.effective, CAP_SETGID))
}

/// The capabilities the daemon keeps: CAP_SETUID and CAP_SETGID when it can
/// take its clients' identities, none otherwise. (Its own pipes need none:
/// a pipe that may hold a failed chunk's bytes is drained and lent again,
/// not replaced by a new one that F_SETPIPE_SZ would have to grow past
/// pipe-user-pages-soft, counted over every process of uid 0.)
fn target() -> u32 {
    if can_assume() {
        (1 << CAP_SETUID) | (1 << CAP_SETGID)
    } else {
        0
    }
}

/// What the drop left, for the start-up log and `--check`.
pub fn describe(kept: u32) -> String {
    if kept == 0 {
        "no capabilities; jobs run with the daemon's own uid and gid".into()
    } else {
        "CAP_SETUID and CAP_SETGID only (to take each client's uid, gid and groups for its jobs' \
         operations); bounding and ambient sets empty, no_new_privs"
            .into()
    }
}

/// The drop's target, read by every thread's signal handler.
static TARGET: AtomicU64 = AtomicU64::new(0);
/// Threads that applied the drop, and the first error one met.
static APPLIED: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicI32 = AtomicI32::new(0);
static DROPPED: AtomicBool = AtomicBool::new(false);

fn drop_signal() -> libc::c_int {
    libc::SIGRTMIN() + 6
}

/// Applies the drop to the calling thread: securebits and bounding set
/// first (they need CAP_SETPCAP), then no_new_privs, ambient, and the
/// capability sets. Only raw syscalls: this also runs in a signal handler.
/// Returns 0 or an errno.
fn apply_here(keep: u32) -> i32 {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EPERM)
    };
    // SAFETY: (every call) prctl and capset with integer arguments or, for
    // capset, pointers to live structures of the kernel's layout.
    unsafe {
        let caps = match capget() {
            Ok(c) => c,
            Err(_) => return errno(),
        };
        if has(caps.effective, CAP_SETPCAP) {
            if libc::prctl(libc::PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0) != 0 {
                return errno();
            }
            let mut cap = 0;
            // Up to the first the kernel does not know (EINVAL).
            while libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) >= 0 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    return errno();
                }
                cap += 1;
            }
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return errno();
        }
        // EINVAL on kernels without ambient capabilities: nothing to clear.
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let keep = keep & caps.permitted;
        if caps.effective == keep && caps.permitted == keep && caps.inheritable == 0 {
            // Nothing to drop (a daemon started without capabilities); a
            // unit's SystemCallFilter=~@privileged refuses capset itself.
            return 0;
        }
        let mut header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let data = [
            CapData {
                effective: keep,
                permitted: keep,
                inheritable: 0,
            },
            CapData::default(),
        ];
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            return errno();
        }
    }
    0
}

extern "C" fn on_drop_signal(_: libc::c_int) {
    let saved = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let result = apply_here(TARGET.load(Ordering::SeqCst) as u32);
    if result != 0 {
        let _ = FAILED.compare_exchange(0, result, Ordering::SeqCst, Ordering::SeqCst);
    }
    APPLIED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: restores this thread's errno, which the handler must not change.
    unsafe { *libc::__errno_location() = saved };
}

/// The threads of this process that run user code: io_uring's own workers
/// (`iou-wrk-*`, `iou-sqp-*`) take no signals, and run each request with
/// the credentials captured when it was submitted, so they are left out.
fn other_threads() -> io::Result<Vec<libc::pid_t>> {
    // SAFETY: gettid has no arguments.
    let me = unsafe { libc::gettid() };
    let mut tids = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if tid != me && !comm.starts_with("iou-") {
            tids.push(tid);
        }
    }
    Ok(tids)
}

/// Drops every capability but those [`target`] keeps, on every thread of
/// the process (capabilities are per thread; the threads made before, the
/// closing thread and the threads engine's first workers, are signalled to
/// do the same, as libpsx does). Threads made later inherit the result.
/// Returns the capabilities kept; an error means some thread could not be
/// made to drop them, and the daemon must not serve.
pub fn drop_after_startup() -> Result<u32, String> {
    let keep = target();
    TARGET.store(u64::from(keep), Ordering::SeqCst);
    // SAFETY: a zeroed sigaction is valid; the handler only makes raw
    // syscalls and touches atomics (async-signal-safe). SA_RESTART: a
    // thread blocked in a syscall resumes it.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_drop_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(drop_signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(format!(
                "cannot install the signal handler that drops capabilities: {}",
                io::Error::last_os_error()
            ));
        }
    }
    let threads = other_threads().map_err(|e| format!("cannot list /proc/self/task: {e}"))?;
    APPLIED.store(0, Ordering::SeqCst);
    // SAFETY: getpid has no arguments.
    let pid = unsafe { libc::getpid() };
    for &tid in &threads {
        // SAFETY: tgkill with this process's id and one of its threads; the
        // handler is installed above.
        if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, drop_signal()) } != 0 {
            // A thread that ended meanwhile has nothing to drop.
            APPLIED.fetch_add(1, Ordering::SeqCst);
        }
    }
    let mine = apply_here(keep);
    if mine != 0 {
        return Err(format!(
            "cannot drop capabilities: {}",
            io::Error::from_raw_os_error(mine)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while APPLIED.load(Ordering::SeqCst) < threads.len() {
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {} threads did not drop their capabilities within 5 s",
                threads.len() - APPLIED.load(Ordering::SeqCst),
                threads.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    match FAILED.load(Ordering::SeqCst) {
        0 => {
            DROPPED.store(true, Ordering::SeqCst);
            Ok(keep)
        }
        e => Err(format!(
            "a thread could not drop its capabilities: {}",
            io::Error::from_raw_os_error(e)
        )),
    }
}

/// Whether [`drop_after_startup`] ran: an engine embedded in another
/// program (the CLI) keeps its host's credentials, and takes no identities.
pub fn dropped() -> bool {
    DROPPED.load(Ordering::SeqCst)
}

/// This thread's own identity, to come back to.
fn own_identity() -> Identity {
    // SAFETY: geteuid/getegid have no arguments and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let groups = current_groups();
    Identity { uid, gid, groups }
}

fn current_groups() -> Vec<u32> {
    // SAFETY: getgroups(0, NULL) only returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let mut groups = vec![0u32; n.max(0) as usize];
    // SAFETY: `groups` has room for `n` entries.
    let got = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    groups.truncate(got.max(0) as usize);
    groups
}

/// Sets the calling thread's (only its: raw syscalls, not glibc's wrappers,
/// which change every thread) effective ids and groups. Groups and gid
/// first, while CAP_SETGID is still effective; the uid last, which empties
/// the effective capabilities when it leaves 0.
fn set_thread_identity(id: &Identity) -> io::Result<()> {
    let check = |r: libc::c_long| {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: raw setgroups/setresgid/setresuid with a pointer to `groups`
    // of the stated length and integer ids.
    unsafe {
        check(libc::syscall(
            libc::SYS_setgroups,
            id.groups.len(),
            id.groups.as_ptr(),
        ))?;
        check(libc::syscall(libc::SYS_setresgid, -1, id.gid, -1))?;
        check(libc::syscall(libc::SYS_setresuid, -1, id.uid, -1))
    }
}

/// Back to `own` from a client's identity: the uid first (back to 0, which
/// restores the effective capabilities from the permitted ones), then gid
/// and groups.
fn restore_thread_identity(own: &Identity) -> io::Result<()> {
    let check = |r: libc::c_long| {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: as in set_thread_identity.
    unsafe {
        check(libc::syscall(libc::SYS_setresuid, -1, own.uid, -1))?;
        check(libc::syscall(libc::SYS_setresgid, -1, own.gid, -1))?;
        check(libc::syscall(
            libc::SYS_setgroups,
            own.groups.len(),
            own.groups.as_ptr(),
        ))
    }
}

/// Runs `f` on this thread under `id` (no capabilities), then comes back.
/// A failure to come back aborts: the thread would go on with a client's
/// identity, or a daemon's with a client's groups.
pub fn with_identity<T>(id: &Identity, f: impl FnOnce() -> T) -> io::Result<T> {
    let own = own_identity();
    if let Err(e) = set_thread_identity(id) {
        if restore_thread_identity(&own).is_err() {
            std::process::abort();
        }
        return Err(e);
    }
    let out = f();
    if restore_thread_identity(&own).is_err() {
        std::process::abort();
    }
    Ok(out)
}

/// A worker thread of the threads engine: the personality it wears now,
/// so that a run of operations of one client switches once.
#[derive(Default)]
pub struct WorkerIdentity {
    own: Option<Identity>,
    wearing: u16,
}

impl WorkerIdentity {
    /// Makes the thread wear `id`, registered as `personality` (0 and None:
    /// its own), switching only when that differs from what it wears. An
    /// error leaves it with its own.
    pub fn wear(&mut self, personality: u16, id: Option<&Identity>) -> io::Result<()> {
        if self.wearing == personality {
            return Ok(());
        }
        let own = self.own.get_or_insert_with(own_identity);
        if self.wearing != 0 && restore_thread_identity(own).is_err() {
            std::process::abort();
        }
        self.wearing = 0;
        if let Some(id) = id {
            if let Err(e) = set_thread_identity(id) {
                if restore_thread_identity(own).is_err() {
                    std::process::abort();
                }
                return Err(e);
            }
            self.wearing = personality;
        }
        Ok(())
    }
}

/// A connected client's identity: SO_PEERCRED's uid and gid, and its
/// supplementary groups (SO_PEERGROUPS, Linux 4.13); None if they cannot
/// be read (then the daemon cannot act as that client, and refuses it).
pub fn peer_identity(fd: RawFd, uid: u32, gid: u32) -> Option<Identity> {
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * 4) as libc::socklen_t;
        // SAFETY: SO_PEERGROUPS writes at most `len` bytes into `groups`.
        let ret = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if ret == 0 {
            groups.truncate(len as usize / 4);
            return Some(Identity { uid, gid, groups });
        }
        let errno = io::Error::last_os_error().raw_os_error();
        if errno == Some(libc::ERANGE) && (len as usize / 4) > groups.len() {
            groups.resize(len as usize / 4, 0);
            continue;
        }
        return None;
    }
}

/// SO_PEERPIDFD (Linux 6.5): a pidfd of the connecting process.
const SO_PEERPIDFD: libc::c_int = 77;

/// What is known of a client's RLIMIT_FSIZE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsizeLimit {
    /// Its soft limit in bytes, or None for unlimited.
    Known(Option<u64>),
    /// Its /proc entry is hidden from the daemon (ProtectProc=invisible,
    /// hidepid): its own user's limit cannot be read.
    Hidden,
    /// The connecting process is gone: whatever holds the connection now,
    /// its limit cannot be told.
    Gone,
}

/// The connecting process's RLIMIT_FSIZE, read from its /proc/PID/limits
/// (world-readable, unlike prlimit(2) on another user's process, which
/// needs CAP_SYS_RESOURCE). With SO_PEERPIDFD the process is checked to be
/// alive after the read, so a reused pid cannot lend its limit. procfs
/// reads do not block.
pub fn peer_fsize_limit(fd: RawFd, pid: i32) -> FsizeLimit {
    let pidfd = peer_pidfd(fd);
    let read = read_small(&format!("/proc/{pid}/limits"));
    let alive = match &pidfd {
        Some(p) => {
            // SAFETY: signal 0 to a pidfd we own only checks the process exists.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    std::os::fd::AsRawFd::as_raw_fd(p),
                    0,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }
        None => true,
    };
    if !alive {
        return FsizeLimit::Gone;
    }
    match read {
        Ok(text) => parse_fsize(&text).map_or(FsizeLimit::Hidden, FsizeLimit::Known),
        Err(_) => FsizeLimit::Hidden,
    }
}

fn peer_pidfd(fd: RawFd) -> Option<std::os::fd::OwnedFd> {
    let mut pidfd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_PEERPIDFD writes one int into `pidfd`.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut pidfd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    // SAFETY: on success `pidfd` is a new descriptor only we hold.
    (ret == 0 && pidfd >= 0).then(|| unsafe { std::os::fd::FromRawFd::from_raw_fd(pidfd) })
}

/// "Max file size  <soft>  <hard>  bytes": the soft limit (None: unlimited).
/// A small procfs file, in one read when it fits in 4 KiB (/proc/PID/limits
/// is about 1.4 KiB): `read_to_string` stats it (procfs says 0 bytes) and
/// grows its buffer from 32 bytes, eleven syscalls on every connection's
/// way to its Welcome instead of four.
fn read_small(path: &str) -> io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(2 * len, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn parse_fsize(limits: &str) -> Option<Option<u64>> {
    let line = limits.lines().find(|l| l.starts_with("Max file size"))?;
    let soft = line["Max file size".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(None);
    }
    soft.parse().ok().map(Some)
}

/// `--check`'s line: what a daemon started now would keep.
pub fn check_line() -> String {
    format!("after start-up: {}", describe(target()))
}

/// The identity of the user `name` (a user name, or a numeric uid with an
/// entry in the user database): uid, primary gid and every group the
/// database gives it, as a login would have them. At start-up only: NSS
/// may read files or ask a directory service.
pub fn lookup_user(name: &str) -> Result<Identity, String> {
    let (uid, gid, login) = passwd_entry(name)?;
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `login` is NUL-terminated; getgrouplist writes at most
        // `n` entries into `groups` and the count into `n`.
        let ret = unsafe { libc::getgrouplist(login.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if ret >= 0 {
            groups.truncate(n.max(0) as usize);
            return Ok(Identity { uid, gid, groups });
        }
        if n as usize <= groups.len() || groups.len() >= 65536 {
            return Err(format!("user {name}: cannot list its groups"));
        }
        groups.resize(n as usize, 0);
    }
}

/// uid, gid and login name of `name` (or of the uid it is, if numeric).
fn passwd_entry(name: &str) -> Result<(u32, u32, std::ffi::CString), String> {
    // SAFETY: a zeroed passwd is a valid out-parameter for getpw*_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let mut text = vec![0 as libc::c_char; 16384];
    let cname =
        std::ffi::CString::new(name).map_err(|_| format!("user {name:?}: holds a NUL byte"))?;
    let ret = match name.parse::<u32>() {
        // SAFETY: every pointer is to a live local of the stated size.
        Ok(uid) => unsafe {
            libc::getpwuid_r(uid, &mut pw, text.as_mut_ptr(), text.len(), &mut found)
        },
        // SAFETY: as above; `cname` is NUL-terminated.
        Err(_) => unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pw,
                text.as_mut_ptr(),
                text.len(),
                &mut found,
            )
        },
    };
    if found.is_null() {
        let why = if ret == 0 {
            "no such user".to_string()
        } else {
            io::Error::from_raw_os_error(ret).to_string()
        };
        return Err(format!("user {name}: {why}"));
    }
    // SAFETY: getpw*_r succeeded, so pw_name points at a NUL-terminated
    // string inside `text`, which is still alive.
    let login = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }.to_owned();
    Ok((pw.pw_uid, pw.pw_gid, login))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_file_is_read_whole_however_large() {
        let limits = read_small("/proc/self/limits").expect("read limits");
        assert_eq!(
            limits,
            std::fs::read_to_string("/proc/self/limits").expect("read")
        );
        assert!(parse_fsize(&limits).is_some(), "{limits}");
        let dir = tempfile::tempdir().expect("tempdir");
        let big: String = (0..3000).map(|i| format!("{i}\n")).collect();
        let path = dir.path().join("big");
        std::fs::write(&path, &big).expect("write");
        assert_eq!(
            read_small(path.to_str().expect("utf-8")).expect("read"),
            big
        );
    }

    #[test]
    fn the_soft_file_size_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max file size             1048576              unlimited            bytes     \n";
        assert_eq!(parse_fsize(text), Some(Some(1_048_576)));
        let unlimited = text.replace("1048576  ", "unlimited");
        assert_eq!(parse_fsize(&unlimited), Some(None));
        assert_eq!(parse_fsize("nothing"), None);
    }
}
