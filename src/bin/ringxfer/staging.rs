//! The hidden names the CLI stages things under, `.NAME.ringxfer-PID-N`
//! (see ringxfer_ipc::publish::hidden_name) and `.NAME.ringxfer-link-PID`
//! (a link being replaced), and what may be done with them: a process
//! removes its own when interrupted (see [`crate::signals`]), and a later
//! copy removes the directories and `link` names left by a copy that was
//! killed outright.
//!
//! The PID in the name says whose a name is. A directory is taken to be a
//! leftover only when all of these hold: its name has that shape, it is a
//! directory (not followed if a link) or has the `link` shape, it belongs
//! to this user, and no
//! process has that PID any more (kill(pid, 0) answers ESRCH). A PID in use
//! again by some other process keeps the leftover until that one ends too;
//! that errs on the side of keeping. Staged files are not swept by later
//! runs: they are unnamed (O_TMPFILE) wherever the file system allows it,
//! and a named one may be a detached job's, which the daemon still owns.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The PID in a staging name, or `None` if `name` is not one.
pub fn staging_pid(name: &OsStr) -> Option<u32> {
    let name = name.as_bytes();
    if name.first() != Some(&b'.') {
        return None;
    }
    let marker = b".ringxfer-";
    // The last occurrence: NAME itself may contain the marker.
    let at = name
        .windows(marker.len())
        .rposition(|w| w == marker)
        .filter(|&at| at > 0)?;
    let tail = &name[at + marker.len()..];
    let (pid, rest) = match tail.strip_prefix(b"link-") {
        Some(pid) => (pid, None),
        None => {
            let dash = tail.iter().position(|&b| b == b'-')?;
            (&tail[..dash], Some(&tail[dash + 1..]))
        }
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !digits(pid) || rest.is_some_and(|n| !digits(n)) {
        return None;
    }
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// A name for making `dst` anew beside it before renaming it into place (a
/// link, a special file, another name for a file): `.NAME.ringxfer-link-PID`,
/// which a later copy removes if this process dies before the rename.
pub fn link_temp(dst: &Path) -> PathBuf {
    let suffix = format!(".ringxfer-link-{}", std::process::id());
    let name = dst.file_name().map(OsStr::as_bytes).unwrap_or_default();
    // NAME_MAX (255) bounds a name: NAME is cut to leave room.
    let room = 255 - 1 - suffix.len();
    let mut out = vec![b'.'];
    out.extend_from_slice(&name[..name.len().min(room)]);
    out.extend_from_slice(suffix.as_bytes());
    dst.with_file_name(std::ffi::OsString::from_vec(out))
}

/// Whether a staging name is of the `.NAME.ringxfer-link-PID` shape.
fn is_link_temp(name: &OsStr) -> bool {
    let name = name.as_bytes();
    name.windows(b".ringxfer-link-".len())
        .rposition(|w| w == b".ringxfer-link-")
        .is_some_and(|at| {
            name[at + b".ringxfer-link-".len()..]
                .iter()
                .all(u8::is_ascii_digit)
        })
}

/// Whether a process with this PID exists (in this PID namespace). Only
/// ESRCH counts as gone: EPERM means it exists and is someone else's.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// This process's effective user.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A leftover removed, or found and not removable.
#[derive(Debug)]
pub struct Leftover {
    pub path: PathBuf,
    pub pid: u32,
    /// Why it could not be removed.
    pub error: Option<io::Error>,
}

impl Leftover {
    /// The line the CLI prints about it.
    pub fn describe(&self) -> String {
        match &self.error {
            None => format!(
                "removed '{}', left by a copy that was killed (process {} is gone)",
                self.path.display(),
                self.pid
            ),
            Some(e) => format!(
                "cannot remove '{}', left by a copy that was killed (process {} is gone): {e}",
                self.path.display(),
                self.pid
            ),
        }
    }
}

/// Removes the staging directories in `dir` left by copies of this user
/// whose process is gone; see the module comment for the checks. Each
/// directory is looked in once per copy (`seen`).
pub fn remove_leftovers(dir: &Path, seen: &mut HashSet<PathBuf>) -> Vec<Leftover> {
    if !seen.insert(dir.to_path_buf()) {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir(dir) else {
        // The copy itself reports a directory it cannot use.
        return Vec::new();
    };
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = staging_pid(&name).filter(|&pid| pid != me) else {
            continue;
        };
        // As the user named the directory: no `./` in front of a bare name.
        let path = if dir == Path::new(".") {
            PathBuf::from(&name)
        } else {
            entry.path()
        };
        // A directory staged under a hidden name, or a link, special file
        // or extra name made beside its destination (never a detached
        // job's staged file, which has the other shape).
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let ours = meta.uid() == euid() && (meta.is_dir() || is_link_temp(&name));
        if !ours || pid_alive(pid) {
            continue;
        }
        let error = if meta.is_dir() {
            fs::remove_dir_all(&path).err()
        } else {
            fs::remove_file(&path).err()
        };
        found.push(Leftover { path, pid, error });
    }
    found
}

/// Removes this process's own staging names in `dir` (files, links and
/// directories): what an interrupted command leaves. Errors are ignored:
/// the process is about to exit and the next copy sweeps directories.
pub fn remove_own(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        if staging_pid(&entry.file_name()) != Some(me) {
            continue;
        }
        let path = entry.path();
        let _ = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringxfer_ipc::publish::hidden_name;

    /// A copy killed between making a link (or special file, or extra
    /// name) beside its destination and renaming it leaves a `link` name:
    /// the next copy removes it, but not a staged file of the other shape,
    /// which may be a detached job's.
    #[test]
    fn a_dead_copys_link_names_are_swept_and_staged_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let dead = child.id();
        let link = dir.path().join(format!(".l.ringxfer-link-{dead}"));
        std::os::unix::fs::symlink("target", &link).unwrap();
        let extra = dir.path().join(format!(".f.ringxfer-link-{dead}"));
        fs::write(&extra, "another name for a copy").unwrap();
        let staged_file = dir.path().join(format!(".g.ringxfer-{dead}-0"));
        fs::write(&staged_file, "a detached job's").unwrap();
        let mut removed: Vec<_> = remove_leftovers(dir.path(), &mut HashSet::new())
            .into_iter()
            .map(|l| (l.path, l.error.is_none()))
            .collect();
        removed.sort();
        assert_eq!(removed, vec![(extra, true), (link.clone(), true)]);
        assert!(fs::symlink_metadata(&link).is_err());
        assert!(staged_file.exists());
        assert_eq!(
            link_temp(Path::new("d/x")),
            Path::new(&format!("d/.x.ringxfer-link-{}", std::process::id()))
        );
    }

    #[test]
    fn staging_names_are_recognised_with_their_pid() {
        let own = hidden_name(OsStr::new("photos"), 7);
        assert_eq!(staging_pid(&own), Some(std::process::id()));
        let long = hidden_name(OsStr::new(&"x".repeat(300)), 0);
        assert_eq!(staging_pid(&long), Some(std::process::id()));
        for (name, pid) in [
            (".a.ringxfer-12-0", Some(12)),
            (".a.ringxfer-b.ringxfer-34-5", Some(34)),
            (".a.ringxfer-link-56", Some(56)),
            ("a.ringxfer-12-0", None),
            (".ringxfer-12-0", None),
            (".a.ringxfer-12-", None),
            (".a.ringxfer-x-0", None),
            (".a.ringxfer-12", None),
            (".a.ringxfer-link-", None),
            (".a.ringxfer-12-0.bak", None),
        ] {
            assert_eq!(staging_pid(OsStr::new(name)), pid, "{name}");
        }
    }

    #[test]
    fn only_dead_processes_leftovers_of_this_user_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = std::process::id();
        let stale = dir.path().join(format!(".dst.ringxfer-{dead}-0"));
        fs::create_dir_all(stale.join("sub")).unwrap();
        fs::write(stale.join("sub/f"), b"x").unwrap();
        let mine = dir.path().join(format!(".dst.ringxfer-{live}-0"));
        fs::create_dir(&mine).unwrap();
        let file = dir.path().join(format!(".f.ringxfer-{dead}-1"));
        fs::write(&file, b"x").unwrap();
        let mut seen = HashSet::new();
        let removed = remove_leftovers(dir.path(), &mut seen);
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert_eq!(removed[0].path, stale);
        assert!(removed[0].error.is_none());
        assert!(removed[0].describe().contains(&stale.display().to_string()));
        assert!(!stale.exists());
        assert!(mine.is_dir(), "a live process's staging stays");
        assert!(file.exists(), "staged files are not swept");
        fs::create_dir(&stale).unwrap();
        assert!(remove_leftovers(dir.path(), &mut seen).is_empty(), "once");
        remove_own(dir.path());
        assert!(!mine.exists() && stale.exists());
    }
}
