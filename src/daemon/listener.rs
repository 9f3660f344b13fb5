//! The daemon's listening socket file.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("another ringxferd is already serving on {0}; stop it first or pick another --socket")]
    AlreadyServing(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The path of a bound listening socket, removed when this is dropped.
pub struct SocketFile {
    path: PathBuf,
}

impl SocketFile {
    /// Binds `path` with mode 0660 (owner and group may connect), creating the
    /// parent directory if needed. A live daemon already on `path` is an
    /// error; a stale socket file left by a crash is replaced.
    pub fn bind(path: &Path) -> Result<(SocketFile, UnixListener), ListenerError> {
        let io_err = |op: &'static str| {
            let path = path.to_path_buf();
            move |source| ListenerError::Io { op, path, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ListenerError::Io {
                op: "create the socket directory",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if still_served(path).map_err(io_err("check for a daemon already serving on"))? {
                    return Err(ListenerError::AlreadyServing(path.to_path_buf()));
                }
                // Nobody listens: a daemon died without removing it.
                std::fs::remove_file(path).map_err(io_err("remove the stale socket"))?
            }
            Ok(_) => return Err(ListenerError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect")(e)),
        }
        let listener = bind_with_mode(path, SOCKET_MODE).map_err(io_err("bind"))?;
        // Already at most SOCKET_MODE; this widens it to exactly that.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(io_err("chmod 0660"))?;
        Ok((
            SocketFile {
                path: path.to_path_buf(),
            },
            listener,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The socket's mode: owner and group may connect.
const SOCKET_MODE: u32 = 0o660;

/// Binds and listens on `path` with the process umask widened to leave at
/// most `mode`, so the socket file never exists with more permissions than
/// that, not even between bind(2) and the chmod after it: a daemon started
/// under umask 000 would otherwise be reachable by anyone for that moment.
/// bind(2) gives the file 0777 less the umask.
fn bind_with_mode(path: &Path, mode: u32) -> io::Result<UnixListener> {
    let strict = (!mode & 0o777) as libc::mode_t;
    // SAFETY: umask(2) only swaps the process's mask and cannot fail. It is
    // process-wide: reading it sets the strictest mask for an instant, and
    // the mask used for the bind is the old one plus `strict`, so a file
    // another thread creates meanwhile never gets a wider mode than it
    // would have (at this point of start-up the daemon has no other thread).
    let old = unsafe { libc::umask(0o777) };
    // SAFETY: as above.
    unsafe { libc::umask(old | strict) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above; this puts the caller's mask back.
    unsafe { libc::umask(old) };
    bound
}

/// How long a socket must keep taking connections before it counts as served.
///
/// A daemon killed by SIGKILL does not let go of its listener when it is
/// reaped: the listener stays referenced by the dying process's io_uring
/// (an accept in flight) until the kernel's ring teardown runs, a few
/// milliseconds later. Until then `connect` succeeds and the connection is
/// reset. A restart that came that quickly (a supervisor, a test) would be
/// refused as "already serving" if one connect decided.
const LIVENESS_WINDOW: Duration = Duration::from_secs(1);
const LIVENESS_PROBE_EVERY: Duration = Duration::from_millis(50);

/// Whether a daemon is serving on `path`: every connect for
/// [`LIVENESS_WINDOW`] succeeds. ECONNREFUSED means nobody listens. Any
/// other error (EACCES, EAGAIN for a full backlog) is returned, since a
/// daemon may well be there and replacing its socket would cut it off.
pub(crate) fn still_served(path: &Path) -> io::Result<bool> {
    let deadline = Instant::now() + LIVENESS_WINDOW;
    loop {
        match UnixStream::connect(path) {
            Ok(_) if Instant::now() >= deadline => return Ok(true),
            Ok(_) => std::thread::sleep(LIVENESS_PROBE_EVERY),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const PROBE_ENV: &str = "RINGXFER_TEST_BIND_PROBE";

    /// Not a test by itself: `a_socket_is_never_wider_than_its_mode` runs
    /// it alone in a child process, because the umask belongs to the whole
    /// process and other tests run on other threads of this one.
    #[test]
    fn bind_probe() {
        let Some(dir) = std::env::var_os(PROBE_ENV) else {
            return;
        };
        // SAFETY: umask(2) cannot fail; this child runs this test alone.
        unsafe { libc::umask(0) };
        let path = Path::new(&dir).join("probe.sock");
        let _listener = bind_with_mode(&path, SOCKET_MODE).expect("bind");
        let mode = std::fs::metadata(&path).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o660, "the socket as bound, before any chmod");
        // SAFETY: as above.
        let now = unsafe { libc::umask(0) };
        assert_eq!(now, 0, "the umask was not put back");
    }

    #[test]
    fn a_socket_is_never_wider_than_its_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(std::env::current_exe().expect("current_exe"))
            .args([
                "--exact",
                "daemon::listener::tests::bind_probe",
                "--test-threads",
                "1",
            ])
            .env(PROBE_ENV, dir.path())
            .output()
            .expect("run the probe");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
}
