//! The daemon's listening socket file.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

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
            Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
                Ok(_) => return Err(ListenerError::AlreadyServing(path.to_path_buf())),
                // Nobody listens: a daemon died without removing it.
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    std::fs::remove_file(path).map_err(io_err("remove the stale socket"))?
                }
                // EACCES, EAGAIN (a full backlog): a daemon may well be
                // there; replacing its socket would cut it off.
                Err(e) => return Err(io_err("check for a daemon already serving on")(e)),
            },
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

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
