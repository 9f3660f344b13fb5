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
        let listener = UnixListener::bind(path).map_err(io_err("bind"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
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
