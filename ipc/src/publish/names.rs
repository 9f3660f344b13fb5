//! The hidden names things are staged under, and the removal of those a
//! killed process left behind.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How many taken temporary names to step over before giving up: each try
/// uses a fresh counter value, so collisions mean leftovers of a process that
/// had our pid, and a handful is already unlikely.
pub(super) const MAX_TEMP_TRIES: usize = 64;

/// Longest file name the kernel takes (NAME_MAX on every Linux file system we target).
pub(super) const NAME_MAX: usize = 255;

/// Makes temporary names unique within this process; the pid makes them unique
/// between processes.
pub(super) static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes hidden staging files for `name` in `dir` that a killed process
/// left: `.NAME.ringxfer-PID-N` regular files (never directories: those are
/// a tree copy's, see the CLI) whose PID no longer runs. A live process's
/// files, this process's included, are left alone. Returns the paths removed.
///
/// Such a file exists only if its owner died between making it and renaming
/// it: a CLI or daemon killed while replacing a destination (between the
/// link to the hidden name and the rename over the old file), or, on a file
/// system without O_TMPFILE, at any moment of the job.
///
/// ```
/// use ringxfer_ipc::publish::{hidden_name_for, remove_stale};
/// use std::ffi::OsStr;
///
/// let dir = tempfile::tempdir()?;
/// let name = OsStr::new("out.bin");
/// // A process that has exited, and its leftover; and one of this live process.
/// let mut child = std::process::Command::new("true").spawn()?;
/// let dead = child.id();
/// child.wait()?;
/// let leftover = dir.path().join(hidden_name_for(name, dead, 0));
/// let ours = dir.path().join(hidden_name_for(name, std::process::id(), 0));
/// std::fs::write(&leftover, "half a copy")?;
/// std::fs::write(&ours, "in progress")?;
///
/// assert_eq!(remove_stale(dir.path(), name), [leftover.clone()]);
/// assert!(!leftover.exists() && ours.exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn remove_stale(dir: &Path, name: &OsStr) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = stale_owner(&file_name, name) else {
            continue;
        };
        if process_alive(pid) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        if fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// The pid in `entry` if it is a hidden staging name made for `name`
/// (see [`hidden_name`]).
pub(super) fn stale_owner(entry: &OsStr, name: &OsStr) -> Option<u32> {
    let bytes = entry.as_bytes();
    let rest = bytes.strip_prefix(b".")?;
    const TAG: &[u8] = b".ringxfer-";
    let at = rest.windows(TAG.len()).rposition(|w| w == TAG)?;
    let (stem, suffix) = (&rest[..at], &rest[at + TAG.len()..]);
    let suffix = std::str::from_utf8(suffix).ok()?;
    let (pid, n) = suffix.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    // A stem shorter than the name is ours only where hidden_name shortened it.
    let full = name.as_bytes();
    let ours = stem == full || (bytes.len() == NAME_MAX && full.starts_with(stem));
    ours.then(|| pid.parse().ok()).flatten()
}

/// Whether a process with this pid exists (a zombie counts; EPERM means
/// it exists and belongs to someone else).
pub(super) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// `.<name>.ringxfer-<pid>-<counter>`, a fresh counter each call.
pub(super) fn temp_name(name: &OsStr, pid: u32) -> OsString {
    hidden_name_for(name, pid, TEMP_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `.<name>.ringxfer-<pid>-<n>`: the hidden name ringxfer stages something
/// called `name` under, with `name` shortened (bytewise; Linux names are
/// bytes) so that the whole stays within NAME_MAX.
///
/// ```
/// use std::ffi::OsStr;
/// let hidden = ringxfer_ipc::publish::hidden_name(OsStr::new("photos"), 3);
/// assert_eq!(hidden, format!(".photos.ringxfer-{}-3", std::process::id()).as_str());
/// let long = ringxfer_ipc::publish::hidden_name(OsStr::new(&"x".repeat(300)), 0);
/// assert!(long.len() <= 255);
/// ```
pub fn hidden_name(name: &OsStr, n: u64) -> OsString {
    hidden_name_for(name, std::process::id(), n)
}

/// As [`hidden_name`], for the process `pid` (the daemon names its own
/// hidden links with its pid, so that [`remove_stale`] can tell them).
///
/// ```
/// use std::ffi::OsStr;
/// let hidden = ringxfer_ipc::publish::hidden_name_for(OsStr::new("a.iso"), 42, 7);
/// assert_eq!(hidden, ".a.iso.ringxfer-42-7");
/// ```
pub fn hidden_name_for(name: &OsStr, pid: u32, n: u64) -> OsString {
    let suffix = format!(".ringxfer-{pid}-{n}");
    let room = NAME_MAX - 1 - suffix.len();
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(NAME_MAX);
    out.push(b'.');
    out.extend_from_slice(&bytes[..bytes.len().min(room)]);
    out.extend_from_slice(suffix.as_bytes());
    OsString::from_vec(out)
}
